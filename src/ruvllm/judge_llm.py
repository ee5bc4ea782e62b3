"""LLM-as-judge: the spec's rubric, scored 1–5 by a configurable model, parsed robustly.

Rubric (each 1–5):
  accuracy      every claim is correct AND supported by the given context (grounded)
  completeness  the answer addresses all of the question
  coherence     well-formed, logically ordered, no contradictions
  conciseness   no padding, repetition or off-topic text

The judge is any ``ruvllm.llm.Generator`` (the largest installed model by default; the caller
picks it). Chat models get a system + user message; completion models get the same text as one
prompt that ends inside the JSON object, so even a base model continues it.

The rubric's integer scores barely discriminate with the small models here (qwen2.5-coder-1.5b
gave a wrong fact's sentence the same 5/5 as the right one, bench/selflearn.py). ``verdict``
asks a reference-based yes/no question instead and reads P(yes) from the judge's next-token
distribution (a backend with ``choice_probs``, i.e. llama.cpp in-process): one forward pass, no
sampling, a continuous score; the same 1.5B model then puts 0.82 on a right paraphrase and 0.06
on a wrong one (tests/test_judge_llm.py pins the ordering with the real model).

Parsing never raises: a JSON object anywhere in the reply; else "Accuracy: 4"-style lines; else a
single "score: N" applied to every criterion. Scores outside 1–5 are clamped; a reply with no
usable score is *malformed*: ``score`` returns ``None``, and the judge counts it (``stats()``), so
the caller can fall back to a cheap metric (e.g. ``judge.grounding``). Backend errors are counted
the same way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from ruvllm.llm.base import ChatMessage, Generator, SamplingParams, ScoresChoices

log = logging.getLogger(__name__)

CRITERIA: tuple[str, ...] = ("accuracy", "completeness", "coherence", "conciseness")
DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 0.4, "completeness": 0.3, "coherence": 0.15, "conciseness": 0.15}

SYSTEM = (
    "You are a strict grader of answers to questions about software documentation. "
    "Grade only from the CONTEXT given; do not use outside knowledge to excuse unsupported claims."
)
RUBRIC = """Score the ANSWER on four criteria, each an integer from 1 (bad) to 5 (excellent):
- accuracy: every claim is correct and supported by the CONTEXT (unsupported or invented claims score low)
- completeness: the answer addresses everything the QUESTION asks
- coherence: the answer is well-formed, logically ordered and free of contradictions
- conciseness: no padding, repetition or off-topic text
Reply with one JSON object and nothing else:
{"accuracy": <1-5>, "completeness": <1-5>, "coherence": <1-5>, "conciseness": <1-5>, "reason": "<one sentence>"}"""

VERDICT_SYSTEM = "You check answers against a reference. Reply with yes or no."
VERDICT_QUESTION = ("Does the ANSWER say what the REFERENCE says, correctly answering the QUESTION? "
                    "Reply yes or no.")
# Below this much probability on "yes" + "no" the judge wanted to say something else: malformed.
MIN_VERDICT_MASS = 0.5

_JSON_OBJ = re.compile(r"\{[^{}]*\}", re.S)
_LINE = re.compile(r"\b(accuracy|completeness|coherence|conciseness)\b\W{0,6}(\d+(?:\.\d+)?)", re.I)
_SINGLE = re.compile(r"\b(?:score|overall|rating)\b\W{0,6}(\d+(?:\.\d+)?)", re.I)
_FRACTION = re.compile(r"\b(\d(?:\.\d+)?)\s*/\s*5\b")


@dataclass
class JudgeScore:
    accuracy: float
    completeness: float
    coherence: float
    conciseness: float
    overall: float  # weighted mean, 1–5
    quality: float  # overall mapped to [0, 1]
    reason: str = ""
    how: str = "json"  # which parser read it: json | lines | single
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clamp(v: float) -> float:
    return float(min(5.0, max(1.0, v)))


def parse_scores(reply: str, weights: dict[str, float] | None = None) -> JudgeScore | None:
    """Read the four scores from a judge reply; ``None`` when nothing usable is there. Never raises."""
    w = weights or DEFAULT_WEIGHTS
    text = reply if isinstance(reply, str) else str(reply)
    found: dict[str, float] = {}
    reason, how = "", ""
    for m in _JSON_OBJ.finditer(text):  # 1. a JSON object (the last complete one wins)
        try:
            obj = json.loads(m.group(0))
        except (json.JSONDecodeError, ValueError):
            continue
        if not isinstance(obj, dict):
            continue
        vals = {}
        for k, v in obj.items():
            key = str(k).strip().lower()
            if key in CRITERIA:
                try:
                    vals[key] = float(v)
                except (TypeError, ValueError):
                    continue
        if vals:
            found, how = vals, "json"
            reason = str(obj.get("reason", obj.get("rationale", "")))[:300]
    if len(found) < len(CRITERIA):  # 2. "Accuracy: 4" lines (fill what JSON missed)
        for m in _LINE.finditer(text):
            found.setdefault(m.group(1).lower(), float(m.group(2)))
            how = how or "lines"
    if not found:  # 3. one overall score
        one = _SINGLE.search(text) or _FRACTION.search(text)
        if one:
            v = float(one.group(1))
            found = dict.fromkeys(CRITERIA, v)
            how = "single"
    if not found or any(v != v for v in found.values()):  # nothing, or NaN
        return None
    if len(found) < 2 and how != "single":
        return None  # one criterion out of four is not a judgement
    mean = sum(found.values()) / len(found)
    s = {c: _clamp(found.get(c, mean)) for c in CRITERIA}
    overall = sum(w[c] * s[c] for c in CRITERIA) / sum(w[c] for c in CRITERIA)
    return JudgeScore(**s, overall=overall, quality=(overall - 1.0) / 4.0, reason=reason, how=how, raw=text[:500])


@dataclass
class JudgeStats:
    calls: int = 0
    ok: int = 0
    malformed: int = 0
    errors: int = 0
    by_parser: dict[str, int] = field(default_factory=dict)


class LLMJudge:
    """Scores (question, answer, contexts) with a ``Generator``; thread-safe counters."""

    def __init__(self, generator: Generator, *, params: SamplingParams | None = None,
                 weights: dict[str, float] | None = None, max_context_chars: int = 3000, retries: int = 1):
        self.gen = generator
        self.params = params or SamplingParams(max_tokens=160, temperature=0.0)
        self.weights = weights or DEFAULT_WEIGHTS
        self.max_context_chars = max_context_chars
        self.retries = retries
        self._stats = JudgeStats()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(getattr(self.gen, "name", "judge"))

    def user_text(self, question: str, answer: str, contexts: list[str], reference: str | None = None) -> str:
        ctx, used = [], 0
        for i, c in enumerate(contexts):
            piece = c.strip()[: max(self.max_context_chars - used, 0)]
            if not piece:
                break
            ctx.append(f"[{i + 1}] {piece}")
            used += len(piece)
        ref = f"\nREFERENCE ANSWER (for orientation): {reference.strip()}" if reference else ""
        return (f"CONTEXT:\n{chr(10).join(ctx) or '(none)'}\n\nQUESTION: {question.strip()}{ref}\n\n"
                f"ANSWER: {answer.strip() or '(empty)'}\n\n{RUBRIC}")

    def _ask(self, user: str) -> str:
        if getattr(self.gen, "prompt_style", "chat") == "chat":
            msgs = [ChatMessage("system", SYSTEM), ChatMessage("user", user)]
            return self.gen.chat(msgs, self.params).text
        prefix = '{"accuracy":'
        prompt = f"{SYSTEM}\n\n{user}\n\nJSON: {prefix}"
        p = SamplingParams(self.params.max_tokens, self.params.temperature, self.params.top_p,
                           (*self.params.stop, "\n\n"), self.params.seed)
        return prefix + self.gen.complete(prompt, p).text

    def score(self, question: str, answer: str, contexts: list[str], reference: str | None = None
              ) -> JudgeScore | None:
        """The rubric scores, or ``None`` when the judge's reply was malformed or the backend failed."""
        user = self.user_text(question, answer, contexts, reference)
        for _attempt in range(1 + max(self.retries, 0)):
            with self._lock:
                self._stats.calls += 1
            try:
                reply = self._ask(user)
            except Exception as exc:  # a judge failure must never fail the request
                log.warning("judge %s failed: %s", self.name, exc)
                with self._lock:
                    self._stats.errors += 1
                return None
            res = parse_scores(reply, self.weights)
            with self._lock:
                if res is None:
                    self._stats.malformed += 1
                else:
                    self._stats.ok += 1
                    self._stats.by_parser[res.how] = self._stats.by_parser.get(res.how, 0) + 1
            if res is not None:
                return res
            log.info("judge %s: malformed reply %r", self.name, reply[:200])
        return None

    def verdict(self, question: str, answer: str, reference: str) -> float | None:
        """P(the judge says the answer agrees with ``reference``) = P(yes) / (P(yes) + P(no)).

        ``None`` (counted as malformed) when the judge puts under ``MIN_VERDICT_MASS`` on the two
        words; counted as an error when the backend fails or cannot read probabilities. An
        empty answer is 0 without a model call."""
        if not answer.strip():
            return 0.0
        with self._lock:
            self._stats.calls += 1
        if not isinstance(self.gen, ScoresChoices):
            with self._lock:
                self._stats.errors += 1
            log.warning("judge %s cannot read next-token probabilities; verdict unavailable", self.name)
            return None
        user = (f"QUESTION: {question.strip()}\nREFERENCE: {reference.strip()}\nANSWER: {answer.strip()}\n\n"
                f"{VERDICT_QUESTION}")
        prompt: str | list[ChatMessage]
        if getattr(self.gen, "prompt_style", "chat") == "chat":
            prompt = [ChatMessage("system", VERDICT_SYSTEM), ChatMessage("user", user)]
        else:
            prompt = f"{VERDICT_SYSTEM}\n\n{user}\nReply:"
        try:
            p = self.gen.choice_probs(prompt, ("yes", "no"))
        except Exception as exc:  # a judge failure must never fail the caller
            log.warning("judge %s failed: %s", self.name, exc)
            with self._lock:
                self._stats.errors += 1
            return None
        mass = p["yes"] + p["no"]
        with self._lock:
            if mass < MIN_VERDICT_MASS:
                self._stats.malformed += 1
            else:
                self._stats.ok += 1
                self._stats.by_parser["verdict"] = self._stats.by_parser.get("verdict", 0) + 1
        return p["yes"] / mass if mass >= MIN_VERDICT_MASS else None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = asdict(self._stats)
        s["malformed_rate"] = s["malformed"] / s["calls"] if s["calls"] else 0.0
        s["model"] = self.name
        return s
