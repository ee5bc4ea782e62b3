"""Safety around any router: confidence fallback and cascade escalation, as pure decisions.

Two switches (``RouterConfig.confidence_threshold`` and ``RouterConfig.cascade``):

- **fallback**: a decision whose confidence is below the threshold goes to the largest installed
  model before anything runs (``fallback``);
- **cascade**: answer with the routed (small) model first; if the answer's check fails — the
  judge's quality below ``quality_threshold``, or a self-check says it is unsure — answer again
  with the next larger model, up to ``max_steps`` escalations (``escalate``).

The quality checked (``check_quality``) is the answer's grounding in its prompt's docs, except for
two requests that name their symbol, where grounding passes a recital of the docs:

- a request for code ("Show a code snippet calling json.dumps."): a snippet's identifiers are not
  doc words, so grounding failed good snippets too. The answer's code is read, never run: 1.0 when
  it parses and calls the symbol, 0.25 when it only mentions it, 0 without code
  (``router/quality.py``'s static part);
- a question for a signature ("What arguments does json.dumps take?") whose prompt holds a doc
  that writes the symbol's signature (``json.dumps(obj, *, skipkeys=False, …)``): the F1 of the
  parameter names the answer gives against that signature's (``quality.signature_quality``, the
  measure the oracle's labels use against ``inspect.signature``).

``exact_check`` says when one of these applies: only then does the orchestrator trust the check
enough to label a request's best model from it (shadow labels).

The orchestrator owns the calls to the models and the judge; this module only decides, so it
can be tested alone and the rules read in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ruvllm.router.base import Decision

if TYPE_CHECKING:
    from ruvllm.config import RouterConfig

# Phrases with which small models say they do not know; a self-check that needs no extra call.
UNSURE = re.compile(
    r"\b(i (do not|don't) know|i'?m not sure|i am not sure|cannot (answer|determine)|no information|"
    r"not (mentioned|provided) in the context|unable to (answer|find))\b", re.I)


@dataclass(frozen=True)
class CascadePolicy:
    confidence_threshold: float = 0.5  # below: fall back to the largest model up front
    cascade: bool = False  # answer small first, escalate on a failed check
    quality_threshold: float = 0.35  # judged quality in [0, 1] below which the answer fails
    max_steps: int = 1  # escalations per query
    self_check: bool = True  # an answer that says it does not know fails too

    @classmethod
    def from_router_config(cls, rc: RouterConfig) -> CascadePolicy:
        """The policy the orchestrator runs for a ``config.RouterConfig``: an empty answer always
        escalates one step; with ``cascade = true`` a weakly grounded answer, or one that says it does
        not know, escalates too."""
        return cls(confidence_threshold=rc.confidence_threshold, cascade=True, self_check=rc.cascade,
                   quality_threshold=cls.quality_threshold if rc.cascade else 0.0)


def _naming(question: str, query_type: str) -> frozenset[str]:
    """The symbols ``question`` names when it is a question of ``query_type``; empty otherwise."""
    from ruvllm.memory.writeback import named_symbols
    from ruvllm.router.features import query_type_of

    symbols = named_symbols(question)
    return symbols if symbols and query_type_of(question) == query_type else frozenset()


def code_request(question: str) -> frozenset[str]:
    """The symbols a request for code names ("Show a code snippet calling json.dumps."); empty for
    any other question."""
    return _naming(question, "code")


def doc_signature(symbols: frozenset[str], contexts: Sequence[str]) -> tuple[str, str] | None:
    """(symbol, its signature as ``short(params)``) from the first doc, best first, that writes one of
    ``symbols`` followed by a parameter list (``json.dumps(obj, *, skipkeys=False)``, or the ingested
    docs' ``Signature: json.dumps(…)`` line); an example call with values (``json.dumps([1])``) is not
    one. None when no doc does, or the signature is ``(...)`` (builtins without one)."""
    from ruvllm.router.quality import param_names, paren_after

    for text in contexts:
        for sym in sorted(symbols):
            for m in re.finditer(rf"(?<![\w.]){re.escape(sym)}\(", text):
                inner = paren_after(text, m.end() - 1)
                if inner is not None and inner.strip() != "..." and param_names(inner) is not None:
                    return sym, f"{sym.rpartition('.')[2]}({inner})"
    return None


def signature_request(question: str) -> frozenset[str]:
    """The symbols a question for a signature names ("What arguments does json.dumps take?"); empty
    for any other question."""
    return _naming(question, "signature")


def exact_check(question: str, contexts: Sequence[str]) -> str:
    """Which check ``check_quality`` makes of an answer to ``question`` with these prompt docs:
    "code", "signature" (the two that read what the answer claims) or "grounding"."""
    if code_request(question):
        return "code"
    sig = signature_request(question)
    return "signature" if sig and doc_signature(sig, contexts) is not None else "grounding"


def reference_docs(question: str, contexts: Sequence[str], limit: int = 1500) -> str:
    """The docs an answer to ``question`` should agree with, for a reference-based judge
    (``LLMJudge.verdict``): for each symbol the question names, the first doc that names it (best
    first); without one, the first doc. At most ``limit`` characters, shared between the docs."""
    from ruvllm.memory.writeback import named_symbols

    picked: list[str] = []
    for sym in sorted(named_symbols(question)):
        pat = re.compile(rf"(?<![\w.]){re.escape(sym)}(?!\w)")
        found = next((t for t in contexts if pat.search(t)), None)
        if found is not None and found not in picked:
            picked.append(found)
    if not picked and contexts:
        picked = [contexts[0]]
    each = limit // max(1, len(picked))
    return "\n".join(t[:each] for t in picked)


def check_quality(question: str, answer: str, contexts: Sequence[str]) -> float:
    """The quality in [0, 1] the cascade compares with ``quality_threshold`` (module docstring)."""
    from ruvllm import judge
    from ruvllm.router.quality import extract_code, signature_quality, symbol_use

    symbols = code_request(question)
    if not symbols:
        found = doc_signature(signature_request(question), contexts)
        if found is not None:
            score = signature_quality(answer, found[1], found[0])
            if score is not None:
                return score
        return judge.grounding(answer, list(contexts))
    code = extract_code(answer)
    if code is None:
        return 0.0
    uses = [symbol_use(code, sym) for sym in sorted(symbols)]
    return 1.0 if any(called for called, _ in uses) else 0.25 if any(m for _, m in uses) else 0.0


def by_size(models: Sequence[str], sizes: Mapping[str, float]) -> list[str]:
    return sorted(models, key=lambda m: (sizes.get(m, 0.0), m))


def fallback(decision: Decision, installed: Sequence[str], sizes: Mapping[str, float],
             policy: CascadePolicy) -> Decision:
    """Low confidence → the largest installed model (the decision's other fields are kept)."""
    if len(installed) < 2 or decision.confidence >= policy.confidence_threshold:
        return decision
    largest = by_size(installed, sizes)[-1]
    if largest == decision.model:
        return decision
    return replace(decision, model=largest, propensity=1.0,
                   reason=f"low confidence {decision.confidence:.2f} → fallback to {largest} ({decision.reason})")


def answer_fails(answer: str, quality: float | None, policy: CascadePolicy) -> str:
    """Why the answer fails its check ('' when it passes)."""
    if not answer.strip():
        return "empty answer"
    if quality is not None and quality < policy.quality_threshold:
        return f"judged quality {quality:.2f} < {policy.quality_threshold}"
    if policy.self_check and UNSURE.search(answer):
        return "the answer says it does not know"
    return ""


def escalate(decision: Decision, answer: str, quality: float | None, installed: Sequence[str],
             sizes: Mapping[str, float], policy: CascadePolicy, step: int = 0) -> Decision | None:
    """With cascade on: the next larger model's decision when the answer fails, else None."""
    if not policy.cascade or step >= policy.max_steps:
        return None
    why = answer_fails(answer, quality, policy)
    if not why:
        return None
    order = by_size(installed, sizes)
    if decision.model not in order or order.index(decision.model) == len(order) - 1:
        return None
    nxt = order[order.index(decision.model) + 1]
    return replace(decision, model=nxt, propensity=1.0, reason=f"cascade: {why} → {nxt} ({decision.reason})")
