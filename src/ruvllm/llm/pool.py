"""Models are loaded once and shared: the router may switch models per query without reloading."""

from __future__ import annotations

import threading
from typing import Any

from ruvllm.config import LLMConfig
from ruvllm.llm.base import Generator
from ruvllm.llm.registry import Registry


class ModelPool:
    """Loads each model on first use and keeps it; ``close()`` frees them all."""

    def __init__(self, registry: Registry, cfg: LLMConfig):
        self.registry = registry
        self.cfg = cfg
        self._models: dict[str, Generator] = {}
        self._lock = threading.Lock()
        self.load_ms: dict[str, float] = {}

    def get(self, name: str) -> Generator:
        with self._lock:
            gen = self._models.get(name)
            if gen is None:
                gen = self._load(name)
                self._models[name] = gen
            return gen

    def _load(self, name: str) -> Generator:
        from ruvllm.llm.llamacpp import LlamaCppGenerator

        cfg = self.cfg
        if cfg.backend == "openai":  # a model served elsewhere (vLLM, llama.cpp server)
            from ruvllm.llm.openai_compat import OpenAIGenerator

            return OpenAIGenerator(
                name, base_url=cfg.base_url, model=cfg.model or name, api_key=cfg.api_key, timeout=cfg.timeout,
                max_retries=cfg.max_retries, n_ctx=cfg.n_ctx,
            )
        spec = self.registry.spec(name)
        path = self.registry.path(name)  # raises with what to install
        draft: Any = cfg.draft
        if draft and draft != "prompt-lookup":  # a draft model by registry name, e.g. qwen2.5-coder-0.5b
            from ruvllm.llm.speculative import LlamaModelDraft

            # drafts only for larger models of the draft's own family (same tokenizer); others decode plainly
            dspec = self.registry.spec(draft)
            if draft == name or dspec.family != spec.family or dspec.params_m >= spec.params_m:
                draft = ""
            else:
                draft = LlamaModelDraft(self.registry.path(draft), num_pred_tokens=4, n_ctx=cfg.n_ctx,
                                        n_threads=cfg.n_threads)
        gen = LlamaCppGenerator(
            name, path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, n_batch=cfg.n_batch,
            use_mmap=cfg.use_mmap, seed=cfg.seed,
            prompt_style=spec.prompt_style if spec.family != "custom" else None,
            prefix_cache_mb=cfg.prefix_cache_mb, draft=draft, exact_reuse=cfg.deterministic,
        )
        self.load_ms[name] = gen.load_ms
        return gen

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def close(self) -> None:
        with self._lock:
            for gen in self._models.values():
                gen.close()
            self._models.clear()
