"""Speculative decoding: a small draft model proposes tokens, the target model verifies them.

llama-cpp-python's ``Llama(draft_model=...)`` calls the draft with every token so far and
evaluates the proposed continuation in one batch; tokens the target would not have chosen
are dropped, so at temperature 0 the output is exactly the target's own greedy output —
only faster when the drafts are often right.

Two drafts:

* ``"prompt-lookup"`` — llama.cpp's ``LlamaPromptLookupDecoding``: copy the continuation of
  the last n-gram's earlier occurrence in the prompt (free; good when the answer quotes the
  retrieved context);
* ``LlamaModelDraft`` — a smaller model of the same tokenizer (Qwen2.5-Coder-0.5B for the
  1.5B) that greedily drafts ``num_pred_tokens`` tokens. It keeps its own KV cache and only
  evaluates what changed since its last call: the common prefix with the target's sequence is
  kept, rejected draft tokens are cut off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

from ruvllm.errors import ModelLoadError


class LlamaModelDraft(LlamaDraftModel):
    """Greedy drafts from a small ``llama_cpp.Llama`` sharing the target's vocabulary."""

    def __init__(self, model_path: str | Path, *, num_pred_tokens: int = 4, n_ctx: int = 2048, n_threads: int = 2,
                 n_batch: int = 256, llm: Any = None):
        import llama_cpp

        if num_pred_tokens < 1:
            raise ModelLoadError(f"num_pred_tokens must be >= 1, got {num_pred_tokens}")
        self.model_path = Path(model_path)
        self.num_pred_tokens = num_pred_tokens
        try:
            self.llm: Any = llm or llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                n_batch=n_batch, verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"could not load the draft model {self.model_path}: {exc}") from None
        self.n_vocab = int(self.llm.n_vocab())
        self._eos = int(self.llm.token_eos())
        self.drafted = 0  # tokens proposed, over the draft's life (for acceptance statistics)

    def check_compatible(self, target: Any) -> None:
        """The draft must share the target's vocabulary: token ids are compared one for one."""
        if int(target.n_vocab()) != self.n_vocab:
            raise ModelLoadError(
                f"draft model {self.model_path.name} has a vocabulary of {self.n_vocab} tokens but the target has "
                f"{target.n_vocab()}; use a draft of the same family and tokenizer (e.g. Qwen2.5-Coder-0.5B for 1.5B)"
            )

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        llm = self.llm
        ids = input_ids.tolist()  # (n,) the target's tokens so far
        k = min(self.num_pred_tokens, llm.n_ctx() - len(ids) - 1)
        if k < 1 or not ids:
            return np.zeros(0, dtype=np.intc)
        cached = llm.input_ids[: llm.n_tokens].tolist()
        keep = 0
        for a, b in zip(cached, ids, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # re-evaluate at least one token: its logits start the draft
        llm.n_tokens = keep  # eval() removes the KV cells from here on
        llm.eval(ids[keep:])
        out: list[int] = []
        for _ in range(k):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(self.n_vocab,))  # (n_vocab,) last token
            tok = int(np.argmax(logits))
            if tok == self._eos:
                break
            out.append(tok)
            if len(out) < k:
                llm.eval([tok])
        self.drafted += len(out)
        return np.asarray(out, dtype=np.intc)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None


def make_draft(draft: str | LlamaDraftModel, *, num_pred_tokens: int = 10, n_ctx: int = 2048,
               n_threads: int = 2) -> LlamaDraftModel | None:
    """``""`` → None; ``"prompt-lookup"``; a GGUF path → ``LlamaModelDraft``; an instance as is."""
    if isinstance(draft, LlamaDraftModel):
        return draft
    if not draft:
        return None
    if draft == "prompt-lookup":
        return LlamaPromptLookupDecoding(num_pred_tokens=num_pred_tokens)
    path = Path(draft)
    if path.suffix == ".gguf" and path.is_file():
        return LlamaModelDraft(path, num_pred_tokens=min(num_pred_tokens, 4), n_ctx=n_ctx, n_threads=n_threads)
    raise ModelLoadError(
        f"unknown draft {draft!r}; use '' (off), 'prompt-lookup', or a draft model (a registry name or GGUF path)"
    )
