"""The llama.cpp backend with real GGUF models: generation, streaming, chat templates, bad input."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ruvllm.errors import ContextOverflowError, InvalidInputError, ModelLoadError
from ruvllm.llm.base import ChatMessage, SamplingParams
from ruvllm.llm.llamacpp import LlamaCppGenerator, gguf_architecture

pytestmark = pytest.mark.model

PROMPT = (
    "Context:\n[1] json.dumps(obj): Serialize obj to a JSON formatted str.\n\n"
    "Question: What does json.dumps do?\nAnswer:"
)


def test_completion_is_deterministic_at_temperature_zero(gemma: Any) -> None:
    """From the same KV state (here: an empty one) the same prompt gets the same greedy answer. A
    repeat that reuses the previous request's KV need not (llama.cpp re-evaluates the last prompt
    token alone, in another batch shape): ``exact_reuse`` is for that (test below)."""
    p = SamplingParams(max_tokens=24, stop=("\n\n",))
    gemma.llm.reset()
    a = gemma.complete(PROMPT, p)
    gemma.llm.reset()
    b = gemma.complete(PROMPT, p)
    assert a.text.strip() and a.text == b.text
    assert a.completion_tokens > 0 and a.prompt_tokens == gemma.count_tokens(PROMPT) + 1  # + BOS
    assert "json" in a.text.lower() or "serial" in a.text.lower(), a.text


def test_streaming_yields_the_same_text_token_by_token(gemma: Any) -> None:
    p = SamplingParams(max_tokens=16)
    pieces = list(gemma.stream_complete(PROMPT, p))
    assert len(pieces) > 1
    assert "".join(pieces) == gemma.complete(PROMPT, p).text


def test_chat_uses_the_template_inside_the_gguf(qwen: Any) -> None:
    assert qwen.prompt_style == "chat" and qwen.architecture == "qwen2"
    msgs = [ChatMessage("system", "Answer in one sentence."), ChatMessage("user", "What does json.dumps do?")]
    out = qwen.chat(msgs, SamplingParams(max_tokens=40))
    assert "json" in out.text.lower() or "string" in out.text.lower(), out.text
    assert "<|im_start|>" not in out.text  # the template's markers are not leaked
    streamed = "".join(qwen.stream_chat(msgs, SamplingParams(max_tokens=40)))
    assert streamed == out.text


def test_sampling_changes_output_with_temperature_and_seed(qwen: Any) -> None:
    msgs = [ChatMessage("user", "Name a random Python module.")]
    outs = {qwen.chat(msgs, SamplingParams(max_tokens=12, temperature=1.5, seed=s)).text for s in range(4)}
    assert len(outs) > 1


def test_prompt_over_the_context_window_is_refused(gemma: Any) -> None:
    with pytest.raises(ContextOverflowError, match="context window"):
        gemma.complete("word " * 2000, SamplingParams(max_tokens=8))


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=-1), SamplingParams(temperature=3.0), SamplingParams(top_p=1.5),
     SamplingParams(max_tokens=0), SamplingParams(temperature=float("nan"))],
)
def test_invalid_sampling_values(gemma: Any, params: SamplingParams) -> None:
    with pytest.raises(InvalidInputError):
        gemma.complete(PROMPT, params)


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 4096)
    with pytest.raises(ModelLoadError, match="broken.gguf"):
        LlamaCppGenerator("broken", bad)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        LlamaCppGenerator("text", tmp_path.joinpath("t.gguf").write_text("x") and tmp_path / "t.gguf")


def test_unsupported_architecture_is_named_in_the_error(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "alien.gguf"
    w = gguf.GGUFWriter(str(path), "alien-arch")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert gguf_architecture(path) == "alien-arch"
    with pytest.raises(ModelLoadError, match="alien-arch"):
        LlamaCppGenerator("alien", path)


def test_prefix_cache_memory_is_bounded_and_restores_give_the_same_answer(registry: Any) -> None:
    """A cached state keeps one logits row, not n_batch x n_vocab floats (512 MB for Gemma), and
    an answer generated after restoring a cached prefix equals the uncached one."""
    path = registry.path("gemma3-270m")
    cached = LlamaCppGenerator("gemma3-270m", path, n_ctx=1024, prompt_style="completion", prefix_cache_mb=64)
    plain = LlamaCppGenerator("gemma3-270m", path, n_ctx=1024, prompt_style="completion")
    try:
        p = SamplingParams(max_tokens=12, stop=("\n\n",))
        other = PROMPT.replace("json.dumps", "json.loads")
        first = cached.complete(PROMPT, p).text
        cached.complete(other, p)  # evicts PROMPT's KV from the context: the next PROMPT restores it
        again = cached.complete(PROMPT, p).text
        assert first == again == plain.complete(PROMPT, p).text
        cache = cached.llm.cache
        states = list(cache.cache_state.values())
        assert states and all(s.scores.shape == (1, cached.llm.n_vocab()) for s in states)
        assert cache.cache_size == sum(s.llama_state_size + s.scores.nbytes for s in states) <= 64 << 20
    finally:
        cached.close()
        plain.close()


def _long_prompt(question: str) -> str:
    """About 450 tokens of docstrings, then ``question``: several 64-token chunks are shared."""
    import json
    import shutil
    import textwrap

    funcs = (json.dumps, json.loads, shutil.rmtree, textwrap.fill)
    docs = [textwrap.dedent(f.__doc__ or "").strip()[:500] for f in funcs]
    return "Context:\n" + "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs)) + f"\n\nQuestion: {question}\nAnswer:"


def test_exact_reuse_answers_as_a_fresh_evaluation_and_still_reuses(registry: Any) -> None:
    """With ``exact_reuse`` the KV kept from earlier requests is whole n_batch chunks of an earlier
    prompt, so every answer equals the one from an empty KV cache, whether the request before shared a
    prefix or was the same prompt; and the shared chunks are still reused, not evaluated again."""
    gen = LlamaCppGenerator("gemma3-270m", registry.path("gemma3-270m"), n_ctx=2048, n_batch=64,
                            prompt_style="completion", exact_reuse=True)
    try:
        p = SamplingParams(max_tokens=24, stop=("\n\n",))
        questions = ["What does json.dumps do?", "What does shutil.rmtree do?", "How do I wrap text?"]
        fresh = {}
        for q in questions:
            gen.llm.reset()
            fresh[q] = gen.complete(_long_prompt(q), p).text
        n_prompt = gen.count_tokens(_long_prompt(questions[0]))
        assert n_prompt > 4 * 64
        for before, q in [*itertools.pairwise(questions), (questions[2], questions[2])]:
            gen.complete(_long_prompt(before), p)
            assert gen.complete(_long_prompt(q), p).text == fresh[q], (before, q)
            reused = gen.llm.reused
            assert reused > 0 and reused % 64 == 0 and reused < n_prompt, reused
        # a short prompt asked twice: no whole chunk to keep, so it is evaluated afresh (on the build
        # of 2026-12-03, plain reuse answered this repeat differently from the first answer)
        first = gen.complete(PROMPT, p).text
        assert gen.complete(PROMPT, p).text == first and gen.llm.reused == 0
    finally:
        gen.close()


def test_exact_reuse_keeps_whole_chunks_of_an_earlier_prompt() -> None:
    """``ExactReuseLlama._keep_whole_chunks`` on a stand-in for llama.cpp's context: it keeps the last
    n_batch boundary within both the common prefix and the prompt-evaluated part of the cache."""
    from ruvllm.llm.llamacpp import ExactReuseLlama

    class Ctx:
        def __init__(self, ok: bool = True) -> None:
            self.ok, self.removed_from = ok, None

        def kv_cache_seq_rm(self, seq: int, p0: int, p1: int) -> bool:
            self.removed_from = p0
            return self.ok

    def llm(cached: list[int], grid_end: int, ok: bool = True) -> Any:
        m = object.__new__(ExactReuseLlama)
        m.n_batch, m.input_ids, m.n_tokens, m.grid_end, m._ctx = 64, np.array(cached), len(cached), grid_end, Ctx(ok)
        m.reset = lambda: setattr(m, "n_tokens", 0)  # llama_cpp.Llama.reset forgets the cached tokens
        m._stack = contextlib.ExitStack()  # what Llama.close (from __del__) releases: nothing here
        return m

    prompt = list(range(300))
    m = llm(prompt, 300)
    m._keep_whole_chunks(prompt[:250] + [-1] * 40)  # 250 shared → chunks up to 192
    assert (m.n_tokens, m.reused, m._ctx.removed_from) == (192, 192, 192)
    m = llm(prompt, 130)  # only 130 came from a prompt evaluation; the rest was decoded token by token
    m._keep_whole_chunks([*prompt, 7])
    assert m.n_tokens == 128
    m = llm(prompt[:128], 128)
    m._keep_whole_chunks(prompt[:128])  # the same prompt again: its last token is evaluated, so 127 shared
    assert m.n_tokens == 64
    m = llm(prompt, 300, ok=False)  # a model that cannot drop a KV suffix starts from an empty cache
    m._keep_whole_chunks([*prompt[:250], -1])
    assert m.n_tokens == m.reused == 0
    m = llm(prompt, 300)
    m._keep_whole_chunks([-1, *prompt])  # nothing shared
    assert m.n_tokens == 0 and m._ctx.removed_from is None


def test_choice_probs_read_the_next_token_distribution(gemma: Any, qwen: Any) -> None:
    """The probabilities come from the logits after *this* prompt: they agree with greedy
    decoding, they follow the prompt, and a KV-cache prefix reused from an earlier call changes
    nothing: every call starts from an empty KV cache, so the same prompt gets the same numbers
    whatever was evaluated before."""
    fact = gemma.choice_probs("The capital of France is the city of", ("Paris", "London"))
    assert fact["Paris"] > 5 * fact["London"] and 0 < sum(fact.values()) <= 1.0 + 1e-6
    yes = [ChatMessage("system", "Reply with yes or no."), ChatMessage("user", "Is Python a programming language?")]
    no = [ChatMessage("system", "Reply with yes or no."), ChatMessage("user", "Is Python a kind of cheese?")]
    p_yes = qwen.choice_probs(yes, ("yes", "no"))
    greedy = qwen.chat(yes, SamplingParams(max_tokens=2)).text.strip().lower()
    assert greedy.startswith(max(p_yes, key=p_yes.__getitem__)), (greedy, p_yes)
    p_no = qwen.choice_probs(no, ("yes", "no"))
    assert p_yes["yes"] > p_yes["no"] and p_no["no"] > p_no["yes"], (p_yes, p_no)
    assert qwen.choice_probs(yes, ("yes", "no")) == pytest.approx(p_yes, abs=1e-6)
    for bad in ((), ("yes", "yes"), ("yes", " ")):
        with pytest.raises(InvalidInputError):
            qwen.choice_probs(yes, bad)
    with pytest.raises(InvalidInputError, match="chat template"):
        gemma.choice_probs(yes, ("yes", "no"))
