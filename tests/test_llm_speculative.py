"""Speculative decoding gives the target's own greedy output, with prompt-lookup or a draft model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ruvllm.errors import ModelLoadError
from ruvllm.llm.base import ChatMessage, SamplingParams
from ruvllm.llm.speculative import LlamaModelDraft, make_draft

CONTEXT = (
    "json.dumps(obj, *, skipkeys=False, ensure_ascii=True, check_circular=True, allow_nan=True, "
    "cls=None, indent=None, separators=None, default=None, sort_keys=False, **kw)\n"
    "Serialize obj to a JSON formatted str using this conversion table."
)
MSGS = [ChatMessage("user", f"{CONTEXT}\n\nQuote the signature of json.dumps exactly.")]
PARAMS = SamplingParams(max_tokens=16, temperature=0.0)


def test_make_draft_choices(tmp_path: Path) -> None:
    assert make_draft("") is None
    assert make_draft("prompt-lookup") is not None
    with pytest.raises(ModelLoadError, match="unknown draft"):
        make_draft("telepathy")
    with pytest.raises(ModelLoadError, match="num_pred_tokens"):
        LlamaModelDraft(tmp_path / "x.gguf", num_pred_tokens=0)


@pytest.mark.model
def test_prompt_lookup_matches_plain_decoding(qwen: Any, registry: Any) -> None:
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    plain = qwen.chat(MSGS, PARAMS)
    spec = LlamaCppGenerator("qwen-pld", registry.path("qwen2.5-coder-0.5b"), n_ctx=512, draft="prompt-lookup")
    try:
        out = spec.chat(MSGS, PARAMS)
    finally:
        spec.close()
    assert out.text == plain.text
    assert out.completion_tokens == plain.completion_tokens > 0


@pytest.mark.model
def test_draft_model_matches_plain_decoding(qwen: Any, registry: Any) -> None:
    """The 0.5B drafting for itself keeps CI fast; bench/llm.py runs 0.5B → 1.5B."""
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    path = registry.path("qwen2.5-coder-0.5b")
    plain = qwen.chat(MSGS, PARAMS)
    draft = LlamaModelDraft(path, num_pred_tokens=4, n_ctx=512)
    spec = LlamaCppGenerator("qwen-spec", path, n_ctx=512, draft=draft)
    try:
        out = spec.chat(MSGS, PARAMS)
        assert out.text == plain.text
        assert draft.drafted > 0  # the draft model really proposed tokens
        # a second, different request reuses the draft's KV prefix and still matches
        msgs2 = [ChatMessage("user", "Write a Python function that returns the square of x.")]
        assert spec.chat(msgs2, PARAMS).text == qwen.chat(msgs2, PARAMS).text
    finally:
        spec.close()
    assert draft.llm is None  # closed with its target


@pytest.mark.model
def test_draft_drafts_greedy_tokens(registry: Any) -> None:
    draft = LlamaModelDraft(registry.path("qwen2.5-coder-0.5b"), num_pred_tokens=3, n_ctx=256)
    try:
        ids = np.asarray(draft.llm.tokenize(b"def add(a, b):\n    return", add_bos=False), dtype=np.intc)
        first = draft(ids)
        assert 0 < len(first) <= 3 and first.dtype == np.intc
        assert np.array_equal(draft(ids), first)  # same input, same draft (cache rolled back)
    finally:
        draft.close()


@pytest.mark.model
def test_speculation_handles_prompts_longer_than_a_batch(qwen: Any, registry: Any) -> None:
    """A regression: llama-cpp-python sized its score buffer for one batch when a draft model was
    set, so any prompt over n_batch tokens failed. Grounded prompts are that long."""
    from ruvllm.llm.base import ChatMessage
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    context = "\n".join(f"Line {i}: json.dumps serializes obj to a JSON formatted str." for i in range(40))
    msgs = [ChatMessage("user", f"Context:\n{context}\n\nWhat does json.dumps do? One sentence.")]
    spec = LlamaCppGenerator("qwen-pld-long", registry.path("qwen2.5-coder-0.5b"), n_ctx=1024, n_batch=64,
                             draft="prompt-lookup")
    try:
        assert spec.count_tokens(msgs[0].content) > 64
        out = spec.chat(msgs, PARAMS)
    finally:
        spec.close()
    assert out.completion_tokens > 0 and out.text == qwen.chat(msgs, PARAMS).text
