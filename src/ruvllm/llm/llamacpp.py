"""The llama.cpp backend: one GGUF model loaded in-process through ``llama-cpp-python``.

* Prompt style follows the model: base models get completion prompts, instruct models are
  driven through ``create_chat_completion`` with the chat template stored in the GGUF.
* KV reuse: llama.cpp keeps the last sequence's KV cache and re-evaluates only the tokens after
  the longest common prefix, so a repeated system prompt + context is not recomputed. An
  optional RAM prefix cache (``prefix_cache_mb``) also keeps the KV state of earlier prompts.
  Reused KV was computed in another batch split than a fresh evaluation would use, and llama.cpp's
  kernels are not bit-identical across batch shapes, so a greedy answer can depend on the request
  before it (as llama.cpp's server says of ``cache_prompt``). ``exact_reuse=True`` keeps only whole
  ``n_batch`` chunks of an earlier prompt (``ExactReuseLlama``): then a temperature-0 answer is a
  function of the prompt, at the cost of re-evaluating up to ``n_batch`` − 1 shared tokens.
* Speculative decoding: ``draft="prompt-lookup"`` uses llama.cpp's prompt-lookup decoding
  (drafts copied from the prompt — effective for answers grounded in retrieved context); a
  draft GGUF path or a ``LlamaModelDraft`` drafts with a smaller model (see ``speculative.py``).
* One ``Llama`` is not thread-safe: calls are serialised by a per-model lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from ruvllm.errors import ContextOverflowError, InvalidInputError, ModelLoadError
from ruvllm.llm.base import ChatMessage, Generation, PromptStyle, SamplingParams
from ruvllm.llm.registry import check_gguf
from ruvllm.llm.speculative import LlamaDraftModel, LlamaModelDraft, make_draft

SUPPORTED_ARCHITECTURES_HINT = "llama, qwen2, gemma3, lfm2, ..."


class ExactReuseLlama(llama_cpp.Llama):
    """``llama_cpp.Llama`` whose KV reuse, when ``exact_reuse`` is set, gives the same logits as a
    fresh evaluation.

    A fresh evaluation splits the prompt into chunks of ``n_batch`` tokens starting at position 0.
    Reused KV is bit-identical to it only where it was itself computed as such a whole chunk, with
    the same tokens: so before each generation the cached prefix is cut back to the last ``n_batch``
    boundary within both the common prefix and the part of the cache that a prompt evaluation
    starting on that grid produced (``grid_end``; tokens decoded one at a time, as generated ones
    are, do not count). The rest is evaluated from that boundary, in the same chunks a fresh
    evaluation uses. With ``exact_reuse`` off it is ``llama_cpp.Llama``."""

    exact_reuse = False
    grid_end = 0  # positions [0, grid_end) were evaluated in chunks starting on the n_batch grid
    reused = 0  # KV positions the last generation kept (exact_reuse only)

    def eval(self, tokens: Sequence[int]) -> None:
        start = self.n_tokens
        super().eval(tokens)
        if start % self.n_batch == 0 and start <= self.grid_end:
            self.grid_end = self.n_tokens

    # llama_cpp calls generate(prompt_tokens, **sampling) with keywords only; reset=False keeps its meaning
    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
        if self.exact_reuse and kwargs.get("reset", True):
            self._keep_whole_chunks(list(tokens))
        yield from super().generate(tokens, *args, **kwargs)

    def _keep_whole_chunks(self, tokens: list[int]) -> None:
        cached = self.input_ids[: min(self.n_tokens, self.grid_end)]
        common = 0
        for a, b in zip(cached, tokens[:-1], strict=False):  # the last prompt token is always evaluated
            if a != b:
                break
            common += 1
        keep = common // self.n_batch * self.n_batch
        if keep < self.n_tokens and not (keep > 0 and self._ctx.kv_cache_seq_rm(-1, keep, -1)):
            keep = 0
            self.reset()
        self.n_tokens = min(self.n_tokens, keep)
        self.reused = self.n_tokens


class PrefixCache(llama_cpp.LlamaRAMCache):
    """llama-cpp-python's RAM prefix cache, with its memory actually bounded.

    Each state it saves (``Llama.save_state``) carries a copy of the logits buffer, up to n_batch x
    n_vocab floats (512 MB for Gemma 3's 262K vocabulary at n_batch 512; n_ctx rows with
    ``logits_all``), while the cache counts only the KV bytes against its capacity. A few cached
    prompts then took gigabytes: bench/selflearn.py's two-arm run reached 12.6 GB of RSS.
    After a restore llama.cpp re-evaluates at least the last prompt token before sampling, so
    the saved logits are never read; we keep one row (``load_state`` broadcasts it) and count it."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if getattr(value, "scores", None) is not None and len(value.scores) > 1:
            value.scores = value.scores[-1:].copy()  # (1, n_vocab)
        super().__setitem__(key, value)

    @property
    def cache_size(self) -> int:
        return sum(int(s.llama_state_size) + int(s.scores.nbytes) for s in self.cache_state.values())


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from the GGUF header ('' if it cannot be read)."""
    try:
        from gguf import GGUFReader  # the reference GGUF reader from llama.cpp

        reader = GGUFReader(str(path), "r")
        field = reader.get_field("general.architecture")
        return str(field.contents()) if field is not None else ""
    except Exception:  # a corrupt header is reported by the load error itself
        return ""


class LlamaCppGenerator:
    """A loaded GGUF model behind the ``Generator`` protocol."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 256,
        use_mmap: bool = True,
        seed: int = 0,
        prompt_style: PromptStyle | None = None,
        prefix_cache_mb: int = 0,
        draft: str | LlamaDraftModel = "",
        draft_tokens: int = 10,
        exact_reuse: bool = False,
    ):
        self.name = name
        self.path = Path(path)
        if exact_reuse and prefix_cache_mb > 0:  # a state restored from RAM has no known chunk grid
            raise InvalidInputError("exact_reuse and a RAM prefix cache (prefix_cache_mb > 0) exclude each other")
        check_gguf(self.path)
        kwargs: dict[str, Any] = {}
        draft_model = make_draft(draft, num_pred_tokens=draft_tokens, n_ctx=n_ctx, n_threads=n_threads)
        if draft_model is not None:
            kwargs["draft_model"] = draft_model
            # llama-cpp-python 0.3.36 turns logits_all on for a draft model but sizes its score buffer
            # from the logits_all *argument*: without this, any prompt longer than n_batch fails with
            # "could not broadcast input array ... into shape (0,)". The cost: n_ctx x n_vocab floats.
            kwargs["logits_all"] = True
        self.draft = draft_model
        t0 = time.perf_counter()
        try:
            self.llm: Any = ExactReuseLlama(
                model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                n_batch=n_batch, use_mmap=use_mmap, seed=seed, verbose=False, **kwargs,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            arch = gguf_architecture(self.path)
            what = f"architecture {arch!r}" if arch else "an unreadable header"
            raise ModelLoadError(
                f"llama.cpp could not load {self.path} ({what}: {exc}); use a valid GGUF of a supported "
                f"architecture ({SUPPORTED_ARCHITECTURES_HINT})"
            ) from None
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        if isinstance(draft_model, LlamaModelDraft):
            draft_model.check_compatible(self.llm)
        self.n_ctx = int(self.llm.n_ctx())
        self.architecture = str(self.llm.metadata.get("general.architecture", ""))
        has_template = "tokenizer.chat_template" in self.llm.metadata
        self.prompt_style: PromptStyle = prompt_style or ("chat" if has_template else "completion")
        self.llm.exact_reuse = exact_reuse
        if prefix_cache_mb > 0:
            self.llm.set_cache(PrefixCache(capacity_bytes=prefix_cache_mb << 20))
        self._lock = threading.Lock()
        self._formatter: Jinja2ChatFormatter | None = None  # built by chat_prompt on first use

    # ---- tokens --------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _check_fits(self, n_prompt: int, params: SamplingParams) -> None:
        if n_prompt + params.max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"prompt of {n_prompt} tokens + {params.max_tokens} for the answer exceeds model {self.name}'s "
                f"context window of {self.n_ctx} tokens; shorten the prompt, lower max_tokens or raise llm.n_ctx"
            )

    # ---- generation ------------------------------------------------------------------
    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        params.validate()
        n_prompt = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        self._check_fits(n_prompt, params)
        with self._lock:
            t0 = time.perf_counter()
            out = self.llm.create_completion(prompt, **_sampling(params))
            total = (time.perf_counter() - t0) * 1000.0
        choice = out["choices"][0]
        usage = out["usage"]
        return Generation(choice["text"], usage["prompt_tokens"], usage["completion_tokens"],
                          choice.get("finish_reason") or "stop", total_ms=total, model=self.name)

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Generation:
        params.validate()
        with self._lock:
            t0 = time.perf_counter()
            out = self._chat_call(messages, params, stream=False)
            total = (time.perf_counter() - t0) * 1000.0
        choice = out["choices"][0]
        usage = out["usage"]
        return Generation(choice["message"].get("content") or "", usage["prompt_tokens"], usage["completion_tokens"],
                          choice.get("finish_reason") or "stop", total_ms=total, model=self.name)

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        params.validate()
        n_prompt = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        self._check_fits(n_prompt, params)
        with self._lock:
            for chunk in self.llm.create_completion(prompt, stream=True, **_sampling(params)):
                text = chunk["choices"][0]["text"]
                if text:
                    yield text

    def stream_chat(self, messages: list[ChatMessage], params: SamplingParams) -> Iterator[str]:
        params.validate()
        with self._lock:
            for chunk in self._chat_call(messages, params, stream=True):
                delta = chunk["choices"][0].get("delta", {})
                text = delta.get("content")
                if text:
                    yield text

    # ---- next-token probabilities ---------------------------------------------------
    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        """``messages`` as the GGUF's chat template writes them, ending where the reply begins."""
        if self._formatter is None:  # the template is compiled once, not per judged answer
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise InvalidInputError(f"model {self.name} has no chat template; give it a completion prompt")
            model = self.llm._model

            def text(tok: int) -> str:
                return str(model.token_get_text(tok)) if tok != -1 else ""

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=text(self.llm.token_eos()),
                                                  bos_token=text(self.llm.token_bos()))
        msgs: list[Any] = [m.to_dict() for m in messages]
        return str(self._formatter(messages=msgs).prompt)

    def choice_probs(self, prompt: str | list[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """P(the next token begins each of ``choices``), read from the logits after ``prompt``.

        A choice's probability sums its first-token spellings ("yes", " yes", "Yes", " Yes"; a
        token shared by two choices counts for neither). The values are not renormalised: their
        sum is the mass the model puts on the choices at all. Only the prompt is evaluated (one
        forward pass, no sampling), always from an empty KV cache: a prefix reused from an earlier
        call is numerically different (llama.cpp evaluates the rest in another batch shape) and
        moved P(yes) by 0.02 in tests/test_llm_llamacpp.py, so a judge's score would depend on
        what it judged before."""
        if not choices or len(set(choices)) != len(choices) or not all(isinstance(c, str) and c.strip()
                                                                        for c in choices):
            raise InvalidInputError(f"choices must be distinct non-empty strings, got {choices!r}")
        chat = not isinstance(prompt, str)
        text = prompt if isinstance(prompt, str) else self.chat_prompt(prompt)
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=not chat, special=True)  # a template adds its own
        self._check_fits(len(tokens), SamplingParams(max_tokens=1))
        first: dict[int, set[str]] = {}
        for c in choices:
            for spelling in {c.strip(), " " + c.strip(), c.strip().capitalize(), " " + c.strip().capitalize()}:
                ids = self.llm.tokenize(spelling.encode("utf-8"), add_bos=False, special=False)
                if ids:
                    first.setdefault(ids[0], set()).add(c)
        with self._lock:
            llm = self.llm
            llm.reset()  # no KV reuse: see the docstring
            llm.eval(tokens)
            if llm._logits_all:  # a draft model's setting: every position's row is kept in scores
                logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            else:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        out = dict.fromkeys(choices, 0.0)
        for tok, owners in first.items():
            if len(owners) == 1:
                out[next(iter(owners))] += float(probs[tok])
        return out

    def _chat_call(self, messages: list[ChatMessage], params: SamplingParams, *, stream: bool) -> Any:
        msgs = [m.to_dict() for m in messages]
        try:
            return self.llm.create_chat_completion(messages=msgs, stream=stream, **_sampling(params))
        except ValueError as exc:
            if "context window" in str(exc) or "exceed" in str(exc):
                raise ContextOverflowError(f"model {self.name}: {exc}; shorten the prompt or raise llm.n_ctx") from None
            raise

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None
        draft = getattr(self, "draft", None)
        if isinstance(draft, LlamaModelDraft):
            draft.close()


def _sampling(params: SamplingParams) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "seed": params.seed,
    }
