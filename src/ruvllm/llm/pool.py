"""Models are loaded once and shared: the router may switch models per query without reloading."""

from __future__ import annotations

import threading

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

        spec = self.registry.spec(name)
        path = self.registry.path(name)  # raises with what to install
        gen = LlamaCppGenerator(
            name, path, n_ctx=self.cfg.n_ctx, n_threads=self.cfg.n_threads, n_batch=self.cfg.n_batch,
            use_mmap=self.cfg.use_mmap, seed=self.cfg.seed,
            prompt_style=spec.prompt_style if spec.family != "custom" else None,
            prefix_cache_mb=self.cfg.prefix_cache_mb, draft=self.cfg.draft,
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
