"""Confidence fallback and cascade escalation are pure decisions, each switchable."""

from __future__ import annotations

from ruvllm.router.base import Decision
from ruvllm.router.cascade import CascadePolicy, answer_fails, escalate, fallback

SIZES = {"small": 270.0, "mid": 350.0, "large": 500.0}
ALL = ["large", "small", "mid"]


def d(model: str, conf: float = 0.9) -> Decision:
    return Decision(model, 512, 0.0, 1.0, conf, reason="r")


def test_fallback_on_low_confidence_only() -> None:
    p = CascadePolicy(confidence_threshold=0.6)
    assert fallback(d("small", 0.9), ALL, SIZES, p).model == "small"
    low = fallback(d("small", 0.4), ALL, SIZES, p)
    assert low.model == "large" and "fallback" in low.reason and low.context_tokens == 512
    assert fallback(d("small", 0.4), ["small"], SIZES, p).model == "small"  # nothing to fall back to
    assert fallback(d("small", 0.4), ALL, SIZES, CascadePolicy(confidence_threshold=0.0)).model == "small"


def test_cascade_escalates_one_size_up_on_a_failed_check() -> None:
    on = CascadePolicy(cascade=True, quality_threshold=0.4, max_steps=2)
    assert escalate(d("small"), "json.dumps serialises an object.", 0.8, ALL, SIZES, on) is None
    nxt = escalate(d("small"), "json.dumps serialises an object.", 0.1, ALL, SIZES, on)
    assert nxt is not None and nxt.model == "mid" and "cascade" in nxt.reason
    again = escalate(nxt, "I don't know.", None, ALL, SIZES, on, step=1)
    assert again is not None and again.model == "large"
    assert escalate(again, "I don't know.", None, ALL, SIZES, on, step=1) is None  # already the largest
    assert escalate(d("small"), "I don't know.", None, ALL, SIZES, on, step=2) is None  # out of steps
    assert escalate(d("small"), "", 0.0, ALL, SIZES, CascadePolicy(cascade=False)) is None  # switched off


def test_answer_checks() -> None:
    p = CascadePolicy(quality_threshold=0.3)
    assert answer_fails("", 0.9, p) == "empty answer"
    assert "quality" in answer_fails("text", 0.1, p)
    assert "does not know" in answer_fails("Sorry, I'm not sure about that.", None, p)
    assert answer_fails("Sorry, I'm not sure.", None, CascadePolicy(self_check=False)) == ""
    assert answer_fails("Use json.dumps(obj).", 0.9, p) == ""


DOC = ("json.dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None) Serialize obj to a JSON formatted "
       "str. If skipkeys is true then dict keys that are not of a basic type are skipped.")
SNIPPET = "```python\nimport json\nprint(json.dumps({'name': 'Ada', 'age': 36}))\n```"
RECITAL = ("json.dumps serializes obj to a JSON formatted str; if skipkeys is true then dict keys that are not "
           "of a basic type are skipped.")


def test_a_code_request_is_checked_on_its_code_not_its_grounding() -> None:
    from ruvllm import judge
    from ruvllm.router.cascade import check_quality

    ask = "Show a code snippet calling json.dumps."
    policy = CascadePolicy.from_router_config(type("RC", (), {"confidence_threshold": 0.5, "cascade": True})())
    # grounding in the docs gets both wrong: the runnable snippet fails, the recital passes
    assert judge.grounding(SNIPPET, [DOC]) < policy.quality_threshold <= judge.grounding(RECITAL, [DOC])
    assert check_quality(ask, SNIPPET, [DOC]) == 1.0
    assert check_quality(ask, RECITAL, [DOC]) == 0.0
    assert check_quality(ask, "```python\nfrom json import dumps as d\nprint(d([1]))\n```", [DOC]) == 1.0
    assert check_quality(ask, "```python\nimport json\nf = json.dumps\n```", [DOC]) == 0.25  # named, not called
    assert escalate(d("small"), SNIPPET, check_quality(ask, SNIPPET, [DOC]), ALL, SIZES, policy) is None
    nxt = escalate(d("small"), RECITAL, check_quality(ask, RECITAL, [DOC]), ALL, SIZES, policy)
    assert nxt is not None and nxt.model == "mid"


def test_other_requests_keep_the_grounding_check() -> None:
    from ruvllm import judge
    from ruvllm.router.cascade import check_quality

    for ask in ("What does json.dumps do?", "Show a code snippet that writes JSON."):  # no symbol named
        for answer in (SNIPPET, RECITAL):
            assert check_quality(ask, answer, [DOC]) == judge.grounding(answer, [DOC])


def test_a_signature_question_is_checked_against_the_signature_its_docs_write() -> None:
    """"What arguments does json.dumps take?" with a doc that writes ``json.dumps(obj, *, …)``: the
    answer's parameter names against that signature (the oracle's measure), not its grounding."""
    from ruvllm.router.cascade import check_quality, doc_signature, exact_check

    ask = "What arguments does json.dumps take?"
    assert exact_check(ask, [DOC]) == "signature"
    assert doc_signature(frozenset({"json.dumps"}), [DOC]) == (
        "json.dumps", "dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None)")
    right = "json.dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None)"
    wrong = "It takes two arguments: data and stream."
    assert check_quality(ask, right, [DOC]) == 1.0
    assert check_quality(ask, wrong, [DOC]) == 0.0
    assert 0.0 < check_quality(ask, "It takes obj and an optional indent.", [DOC]) < 1.0  # 2 of 4 names
    # the ingested docs' own layout: a "Signature:" line after the prose
    ingested = "Function json.dumps. Serialize obj to a JSON formatted str.\nSignature: json.dumps(obj, *, indent=None)"
    assert check_quality(ask, "json.dumps(obj, *, indent=None)", [ingested]) == 1.0


def test_a_signature_question_without_a_written_signature_keeps_grounding() -> None:
    from ruvllm import judge
    from ruvllm.router.cascade import check_quality, exact_check

    ask = "What arguments does json.dumps take?"
    for docs in (["json.dumps serializes obj to a JSON formatted str."],  # no signature in the docs
                 ["Example: json.dumps([1, 2]) gives '[1, 2]'."],  # a call with values is not a signature
                 ["json.dumps(...) Serialize obj."],  # a builtin without one
                 ["json.loads(s) Deserialize s."]):  # another symbol's
        assert exact_check(ask, docs) == "grounding"
        assert check_quality(ask, RECITAL, docs) == judge.grounding(RECITAL, docs)
    assert exact_check("What does json.dumps do?", [DOC]) == "grounding"  # not a signature question


def test_the_reference_docs_are_the_ones_the_question_names() -> None:
    from ruvllm.router.cascade import reference_docs

    loads = "json.loads(s) Deserialize s to a Python object."
    dump = "json.dump(obj, fp) Serialize obj as a JSON formatted stream to fp."
    docs = [loads, dump, DOC]
    assert reference_docs("What does json.dumps do?", docs) == DOC  # not json.dump's, though it comes first
    both = reference_docs("What is the difference between json.dumps and json.loads?", docs)
    assert both == f"{DOC}\n{loads}"
    assert reference_docs("How do I serialize an object?", docs) == loads  # no symbol named: the best hit
    assert reference_docs("What does os.walk do?", docs) == loads  # named, but in no doc
    assert reference_docs("What does json.dumps do?", []) == ""
    assert len(reference_docs("Compare json.dumps with json.loads.", docs, limit=40)) <= 41
