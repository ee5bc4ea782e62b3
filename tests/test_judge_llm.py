"""LLM-as-judge: robust parsing, malformed replies counted (never raised), both prompt styles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ruvllm.judge_llm import CRITERIA, LLMJudge, parse_scores
from ruvllm.llm.base import ChatMessage, Generation, SamplingParams


class FakeGen:
    def __init__(self, replies: list[str] | None = None, style: str = "chat", fail: bool = False):
        self.name, self.n_ctx, self.prompt_style = "fake", 2048, style
        self.replies = list(replies or [])
        self.fail = fail
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _next(self, prompt: str) -> Generation:
        if self.fail:
            raise RuntimeError("backend down")
        self.prompts.append(prompt)
        return Generation(self.replies.pop(0) if self.replies else "", 1, 1, "stop")

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        return self._next(prompt)

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Generation:
        return self._next("\n".join(m.content for m in messages))

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        yield self._next(prompt).text

    def stream_chat(self, messages: list[ChatMessage], params: SamplingParams) -> Iterator[str]:
        yield self.chat(messages, params).text

    def close(self) -> None: ...


@pytest.mark.parametrize("reply, expect", [
    ('{"accuracy": 5, "completeness": 4, "coherence": 5, "conciseness": 3, "reason": "ok"}', (5, 4, 5, 3)),
    ('Sure! ```json\n{"Accuracy": "4", "completeness": 4, "coherence": 4, "conciseness": 4}\n``` hope it helps',
     (4, 4, 4, 4)),
    ("Accuracy: 2\nCompleteness - 3\ncoherence=4\nConciseness: 5/5", (2, 3, 4, 5)),
    ("**Accuracy**: 9, completeness: 0, coherence: 3, conciseness: 3", (5, 1, 3, 3)),  # clamped
    ("Overall score: 4", (4, 4, 4, 4)),
    ("I would rate this 3/5.", (3, 3, 3, 3)),
    ('{"accuracy": 4, "completeness": 2}', (4, 2, 3, 3)),  # missing → mean of the found ones
])
def test_parse_variants(reply: str, expect: tuple[int, int, int, int]) -> None:
    s = parse_scores(reply)
    assert s is not None
    assert tuple(getattr(s, c) for c in CRITERIA) == expect
    assert 1 <= s.overall <= 5 and 0 <= s.quality <= 1


@pytest.mark.parametrize("reply", ["", "I cannot grade this.", "{not json", '{"accuracy": "high"}',
                                   "accuracy: 4", '{"accuracy": NaN, "coherence": NaN}', "null", "[1, 2]"])
def test_malformed_returns_none(reply: str) -> None:
    assert parse_scores(reply) is None


def test_quality_scale_and_weights() -> None:
    best = parse_scores('{"accuracy": 5, "completeness": 5, "coherence": 5, "conciseness": 5}')
    worst = parse_scores('{"accuracy": 1, "completeness": 1, "coherence": 1, "conciseness": 1}')
    assert best is not None and worst is not None and best.quality == 1.0 and worst.quality == 0.0
    acc_only = parse_scores('{"accuracy": 5, "completeness": 1, "coherence": 1, "conciseness": 1}')
    assert acc_only is not None and acc_only.overall == pytest.approx(1 + 4 * 0.4)


def test_judge_counts_malformed_and_errors_never_raises() -> None:
    gen = FakeGen(["garbage", "still garbage", '{"accuracy": 4, "completeness": 4, "coherence": 4, '
                                               '"conciseness": 4}'])
    j = LLMJudge(gen, retries=1)
    assert j.score("q?", "a", ["ctx"]) is None  # 2 malformed attempts
    res = j.score("q?", "a", ["ctx"])
    assert res is not None and res.accuracy == 4
    s = j.stats()
    assert s["calls"] == 3 and s["malformed"] == 2 and s["ok"] == 1 and s["errors"] == 0
    bad = LLMJudge(FakeGen(fail=True))
    assert bad.score("q", "a", []) is None and bad.stats()["errors"] == 1


def test_prompt_has_rubric_context_and_completion_prefix() -> None:
    gen = FakeGen([' 3, "completeness": 4, "coherence": 5, "conciseness": 5}'], style="completion")
    j = LLMJudge(gen, max_context_chars=50)
    res = j.score("What does json.dumps do?", "Serialises obj to JSON.", ["x" * 200, "never shown"],
                  reference="Serialize obj to a JSON formatted str.")
    assert res is not None and (res.accuracy, res.completeness) == (3, 4)
    p = gen.prompts[0]
    assert "CONTEXT" in p and "accuracy" in p and "REFERENCE" in p and p.rstrip().endswith('{"accuracy":')
    assert "never shown" not in p and "x" * 51 not in p


@pytest.mark.model
def test_real_model_rubric_judge_parses(qwen: Any) -> None:
    """The real chat model as a rubric judge (the session's shared Qwen 0.5B): its replies parse into
    scores on the 1–5 scale, and the counters add up.

    Not asserted: that it rates a grounded answer above an invented one. Until 2026-12-03 it did; with
    llama-cpp-python built afresh on that day's machine it gave "deletes files from the disk and
    reboots" accuracy 5 and the right answer 4. A 0.5B rubric judge does not order answers reliably, which is
    why labels and the learning loop use the yes/no verdict (next test), whose ordering is asserted."""
    j = LLMJudge(qwen)
    ctx = ["Function json.dumps (module json).\nSerialize obj to a JSON formatted str."]
    good = j.score("What does json.dumps do?", "It serializes a Python object to a JSON formatted string.", ctx)
    bad = j.score("What does json.dumps do?", "It deletes files from the disk and reboots the computer.", ctx)
    s = j.stats()
    assert s["calls"] >= 2 and s["ok"] + s["malformed"] + s["errors"] == s["calls"]
    assert s["errors"] == 0
    scored = [r for r in (good, bad) if r is not None]
    assert scored, f"neither reply parsed: {s}"
    for r in scored:
        assert all(1.0 <= v <= 5.0 for v in (r.accuracy, r.completeness, r.coherence, r.conciseness))
        assert r.quality == pytest.approx((r.overall - 1.0) / 4.0)


class FakeProbs(FakeGen):
    """A backend that exposes next-token probabilities (what LlamaCppGenerator.choice_probs returns)."""

    def __init__(self, probs: dict[str, float] | Exception, style: str = "chat"):
        super().__init__(style=style)
        self.probs = probs
        self.seen: list[Any] = []

    def choice_probs(self, prompt: Any, choices: tuple[str, ...]) -> dict[str, float]:
        self.seen.append(prompt)
        if isinstance(self.probs, Exception):
            raise self.probs
        return {c: self.probs.get(c, 0.0) for c in choices}


def test_verdict_normalises_yes_over_yes_and_no_and_counts_what_it_cannot_read() -> None:
    j = LLMJudge(FakeProbs({"yes": 0.6, "no": 0.2}))
    assert j.verdict("What does f do?", "It does x.", "f does x.") == pytest.approx(0.75)
    user = j.gen.seen[0][1].content  # type: ignore[attr-defined]
    assert "REFERENCE: f does x." in user and "ANSWER: It does x." in user
    assert j.verdict("q", "   ", "ref") == 0.0  # empty: no call
    assert LLMJudge(FakeProbs({"yes": 0.2, "no": 0.1})).verdict("q", "a", "r") is None  # the judge meant neither
    assert LLMJudge(FakeProbs(RuntimeError("down"))).verdict("q", "a", "r") is None
    assert LLMJudge(FakeGen()).verdict("q", "a", "r") is None  # no probabilities to read
    base = LLMJudge(FakeProbs({"yes": 0.1, "no": 0.9}, style="completion"))
    assert base.verdict("q", "a", "r") == pytest.approx(0.1) and isinstance(base.gen.seen[0], str)  # type: ignore[attr-defined]
    s = j.stats()
    assert s["calls"] == 1 and s["ok"] == 1 and s["by_parser"] == {"verdict": 1}


@pytest.mark.model
def test_real_model_verdict_puts_the_right_answer_first(qwen: Any) -> None:
    """Even the 0.5B orders a right paraphrase above a wrong answer and an unrelated one (the 1.5B,
    the default judge, separates them by 0.78 vs 0.06; bench/selflearn.py reports it)."""
    j = LLMJudge(qwen)
    ref = "Serialize obj to a JSON formatted str."
    right = j.verdict("What does json.dumps do?", "It converts a Python object to a JSON string.", ref)
    wrong = j.verdict("What does json.dumps do?", "It parses a JSON string into a Python object.", ref)
    unrelated = j.verdict("What does json.dumps do?", "It deletes files from the disk and reboots.", ref)
    assert right is not None and wrong is not None and unrelated is not None
    assert right > wrong and right > unrelated, (right, wrong, unrelated)
