"""bench/router.py's label-ceiling helpers (the pattern lookup, paraphrase agreement, near ties, the
"within δ of the oracle" decision metric) and its replay of the safety functions on stored answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from bench.router import (
    NEAR_DELTA,
    lookup_by_wordings,
    metrics,
    near_ties,
    paraphrase_agreement,
    pattern_ceiling,
    pattern_lookup,
    regret_by_type,
    replay_safety,
    restrict_training,
)

from ruvllm.config import RouterConfig
from ruvllm.router.cascade import CascadePolicy


def rec(id_: str, qtype: str, best: int, utility: list[list[float]], split: str = "train") -> SimpleNamespace:
    return SimpleNamespace(id=id_, query_type=qtype, best_model=best, utility=utility, split=split)


def test_pattern_lookup_takes_the_best_mean_utility_of_the_training_paraphrases() -> None:
    train = [
        rec("json.dumps:code:0", "code", 1, [[0.1, 0.0], [0.9, 0.2], [0.6, 0.1]]),
        rec("json.dumps:code:1", "code", 2, [[0.1, 0.0], [0.5, 0.2], [0.6, 0.7]]),
        rec("json.loads:howto:0", "howto", 0, [[0.9, 0.0], [0.1, 0.2], [0.3, 0.1]]),
    ]
    seen = [rec("json.dumps:code:2", "code", 0, [[1, 0], [0, 0], [0, 0]], "test_seen"),
            rec("json.loads:howto:1", "howto", 0, [[1, 0], [0, 0], [0, 0]], "test_seen"),
            rec("json.loads:code:0", "code", 0, [[1, 0], [0, 0], [0, 0]], "test_seen")]
    m, c, ok = pattern_lookup(train, seen)
    # json.dumps/code: the mean table's best is (model 1, ctx 0) = 0.7, ahead of (2, 0) = 0.6 and (2, 1) = 0.4,
    # though the two training labels (1 and 2) tie
    assert (m[0], c[0]) == (1, 0)
    assert (m[1], c[1]) == (0, 0)
    assert ok.tolist() == [True, True, False]  # json.loads/code has no training paraphrase


def test_paraphrase_agreement_counts_pairs_within_a_pattern() -> None:
    u = {0: [[0.9, 0.0], [0.1, 0.0], [0.1, 0.0]], 1: [[0.5, 0.0], [0.6, 0.0], [0.1, 0.0]],
         2: [[0.1, 0.0], [0.1, 0.0], [0.9, 0.0]]}
    # a.f:code:1's model 1 wins by 0.005 over model 0 (a near tie); a.f:code:2's model 2 by 0.5
    near = [[0.595, 0.0], [0.6, 0.1], [0.1, 0.0]]
    recs = [rec("a.f:code:0", "code", 1, u[1]), rec("a.f:code:1", "code", 1, near), rec("a.f:code:2", "code", 2, u[2]),
            rec("a.g:code:0", "code", 0, u[0])]
    got = paraphrase_agreement(recs, delta=0.02)
    assert got["pairs"] == 3  # a.f has three questions, a.g one
    assert np.isclose(got["same_model"], 1 / 3)
    # near ties go to the smaller model: a.f:code:1 becomes model 0, a.f:code:0 stays 1 (0.1 ahead)
    assert np.isclose(got["same_model_ties_to_cheaper"], 0.0)
    assert np.isclose(paraphrase_agreement(recs, delta=0.2)["same_model_ties_to_cheaper"], 1 / 3)  # both 0
    assert np.isnan(paraphrase_agreement(recs[3:])["same_model"])


def test_pattern_ceiling_is_the_modal_share_per_pattern_beside_independent_labels() -> None:
    u = [[0.0, 0.0], [0.0, 0.0]]  # two models; only the labels matter here
    recs = [rec("a.f:code:0", "code", 0, u), rec("a.f:code:1", "code", 0, u), rec("a.f:code:2", "code", 1, u),
            rec("a.g:code:0", "code", 1, u), rec("a.g:code:1", "code", 1, u), rec("a.g:code:2", "code", 1, u),
            rec("a.h:howto:0", "howto", 0, u), rec("a.h:howto:1", "howto", 1, u), rec("a.i:howto:0", "howto", 1, u)]
    got = pattern_ceiling(recs)
    assert set(got) == {"2", "3"}  # a.i has one wording: no pattern ceiling to speak of
    assert got["3"]["patterns"] == 2 and np.isclose(got["3"]["share"], (2 + 3) / 6)
    assert got["2"]["patterns"] == 1 and np.isclose(got["2"]["share"], 1 / 2)
    # pooled shares: 3 of 9 model 0. Independent k = 2: modal share 1 when both agree, else 1/2
    p0 = 3 / 9
    agree = p0**2 + (1 - p0) ** 2
    assert np.isclose(got["2"]["if_independent"], agree + (1 - agree) / 2)
    assert pattern_ceiling([]) == {}


def test_lookup_by_wordings_compares_both_training_wordings_with_each_alone() -> None:
    # pattern a.f: wording 0 says model 0 (by a hair), wording 1 says model 1 by a lot; their mean says model 1
    train = [rec("a.f:code:0", "code", 0, [[0.52, 0.0], [0.5, 0.0]]),
             rec("a.f:code:1", "code", 1, [[0.1, 0.0], [0.9, 0.0]]),
             rec("a.g:code:0", "code", 0, [[0.9, 0.0], [0.1, 0.0]])]
    seen = [rec("a.f:code:2", "code", 1, [[0.3, 0.0], [0.8, 0.0]], "test_seen"),
            rec("a.g:code:1", "code", 1, [[0.2, 0.0], [0.7, 0.0]], "test_seen")]
    got = lookup_by_wordings(train, seen)
    assert got["two_wordings_both"] == {"n": 1, "model_accuracy": 1.0, "utility_regret": 0.0}
    # alone: wording 0 picks model 0 (wrong, regret 0.5), wording 1 picks model 1 (right)
    assert got["two_wordings_each_alone"]["model_accuracy"] == 0.5
    assert np.isclose(got["two_wordings_each_alone"]["utility_regret"], 0.25)
    assert got["one_wording"]["n"] == 1 and got["one_wording"]["model_accuracy"] == 0.0
    assert np.isclose(got["one_wording"]["utility_regret"], 0.5)


def test_restrict_training_drops_only_training_rows_outside_the_ids() -> None:
    u = [[0.0, 0.0]]
    recs = [rec("a.f:code:0", "code", 0, u), rec("a.f:code:1", "code", 0, u),
            rec("a.f:code:2", "code", 0, u, "test_seen"), rec("a.g:code:0", "code", 0, u, "test_unseen")]
    got = restrict_training(recs, {"a.f:code:1"})
    assert [r.id for r in got] == ["a.f:code:1", "a.f:code:2", "a.g:code:0"]


def test_regret_by_type_splits_the_regret_and_the_choices_by_query_type() -> None:
    recs = [rec("a.f:code:0", "code", 1, [[0.2, 0.0], [0.9, 0.5]]),
            rec("a.g:code:0", "code", 0, [[0.6, 0.1], [0.4, 0.0]]),
            rec("a.f:howto:0", "howto", 0, [[0.7, 0.0], [0.5, 0.0]])]
    got = regret_by_type(np.array([1, 1, 0]), np.array([1, 0, 0]), recs)
    assert set(got) == {"code", "howto"}
    assert got["code"]["n"] == 2 and got["code"]["model_counts"] == [0, 2]
    assert np.isclose(got["code"]["utility_regret"], ((0.9 - 0.5) + (0.6 - 0.4)) / 2)
    assert got["howto"] == {"n": 1, "utility_regret": 0.0, "model_counts": [1, 0]}


def test_near_ties_compare_each_models_best_decision() -> None:
    recs = [rec("a:code:0", "code", 1, [[0.50, 0.0], [0.51, 0.2], [0.1, 0.1]]),  # gap 0.01: a near tie
            rec("a:code:1", "code", 2, [[0.10, 0.0], [0.20, 0.2], [0.9, 0.8]]),  # gap 0.70
            rec("a:code:2", "code", 0, [[0.60, 0.7], [0.10, 0.65], [0.0, 0.0]])]  # the runner-up's best ctx: 0.05
    got = near_ties(recs, delta=0.02)
    assert got["share"] == 1 / 3 and np.isclose(got["median_gap"], 0.05)


def test_near_optimal_counts_decisions_worth_the_oracles_utility_minus_delta() -> None:
    u = np.array([[[0.50, 0.0], [0.51, 0.2]],
                  [[0.10, 0.0], [0.90, 0.2]],
                  [[0.30, 0.0], [0.30 + NEAR_DELTA / 2, 0.2]]])
    t = {"utility": u, "quality": np.zeros_like(u), "latency_ms": np.zeros_like(u), "cost": np.ones_like(u)}
    m, c = np.array([0, 0, 1]), np.array([0, 0, 1])  # 0.01 short: near; 0.8 short: not; wrong context: 0.1 short
    got = metrics(m, c, t, (1, 0))
    assert got["model_accuracy"] == 1 / 3  # only row 2's model is the oracle's
    assert np.isclose(got["near_optimal"], 1 / 3)  # only row 0's decision is within δ


def test_a_cascade_pays_for_the_failed_first_answer() -> None:
    q = np.array([[[0.2], [0.9]]])
    lat = np.array([[[100.0], [400.0]]])
    cost = np.array([[[1.0], [3.0]]])
    u = q - 0.02 * lat / 1000 - 0.1 * cost
    t = {"utility": u, "quality": q, "latency_ms": lat, "cost": cost}
    m, c = np.array([1]), np.array([0])
    plain = metrics(m, c, t, (1, 0))
    cascaded = metrics(m, c, t, (1, 0), first=np.array([0]))
    assert plain["latency_ms"] == 400 and cascaded["latency_ms"] == 500
    assert plain["cost_reduction_vs_large"] == 0 and np.isclose(cascaded["cost_reduction_vs_large"], -1 / 3)
    assert plain["quality_1to5"] == cascaded["quality_1to5"]  # the served answer is the second one
    # the first answer costs its own latency and cost weights in utility: 0.02·0.1 s + 0.1·1
    assert np.isclose(cascaded["utility_regret"] - plain["utility_regret"], 0.102)
    assert metrics(m, c, t, (1, 0), first=np.array([-1])) == plain


def test_replay_safety_runs_the_orchestrators_fallback_and_cascade() -> None:
    models = ["tiny", "mid", "large"]
    docs = "json.dumps serializes an object to a JSON formatted string"

    def rec(id_: str, answer: str) -> SimpleNamespace:
        return SimpleNamespace(id=id_, query="What does json.dumps do?", models=models, context_bins=[256, 1024],
                               answers=[[answer, answer], ["a mid answer", ""], ["a large answer", ""]])

    recs = [rec("sure", "json.dumps serializes an object to a JSON string"),
            rec("unsure", "json.dumps serializes an object to a JSON string"),
            rec("empty", "   "),
            rec("dont-know", "I don't know."),
            rec("ungrounded", "It launches rockets towards distant planets quickly"),
            rec("at-1024", "json.dumps serializes an object to a JSON string")]
    pm, pc = np.zeros(6, dtype=int), np.array([0, 0, 0, 0, 0, 1])
    conf = np.array([0.9, 0.2, 0.9, 0.9, 0.9, 0.9])
    contexts = {r.id: [[[docs], [docs]]] * 3 for r in recs}

    deployed = CascadePolicy.from_router_config(RouterConfig())
    final, first, fell = replay_safety(pm, pc, conf, recs, deployed, contexts)
    assert fell.tolist() == [False, True, False, False, False, False]  # confidence 0.2 < 0.5 → largest
    assert final.tolist() == [0, 2, 1, 0, 0, 0]  # an empty answer goes one step up even without cascade
    assert first.tolist() == [-1, -1, 0, -1, -1, -1]

    cascade = CascadePolicy.from_router_config(RouterConfig(cascade=True, confidence_threshold=0.0))
    final, first, fell = replay_safety(pm, pc, conf, recs, cascade, contexts)
    assert not fell.any()
    assert final.tolist() == [0, 0, 1, 1, 1, 0]  # "I don't know" and an answer not in the docs escalate too
    assert first.tolist() == [-1, -1, 0, 0, 0, -1]
    with pytest.raises(ValueError, match="contexts"):
        replay_safety(pm, pc, conf, recs, cascade, None)


def test_the_benchs_shadow_label_is_the_orchestrators_exact_check_only() -> None:
    """bench.router_online.check_label: without an LLM judge only a question the cascade checks
    exactly is labelled: a request for code, by whether each model's answer calls the symbol, and a
    question for a signature its docs write, by the parameter names (latency and cost as stored)."""
    from bench.router_online import check_label

    doc = "json.dumps(obj, *, indent=None) serializes an object to a JSON formatted string"
    recital = "json.dumps serializes an object to a JSON formatted string."
    snippet = "```python\nimport json\nprint(json.dumps({'name': 'Ada'}))\n```"
    sig = "json.dumps(obj, *, indent=None)"

    def rec(query: str, answers: list[str]) -> SimpleNamespace:
        return SimpleNamespace(id=query, query=query, models=["small", "large"], context_bins=[256],
                               answers=[[a] for a in answers], latency_ms=[[100.0], [900.0]], cost=[[0.01], [0.1]])

    asks = ("Show a code snippet calling json.dumps.", "What does json.dumps do?",
            "What arguments does json.dumps take?")
    contexts = {q: [[[doc]], [[doc]]] for q in asks}
    assert check_label(rec(asks[0], [recital, snippet]), 0, 0, contexts) == 1  # only the snippet calls it
    assert check_label(rec(asks[1], [recital, snippet]), 0, 0, contexts) is None  # not labelled without a judge
    assert check_label(rec(asks[1], [recital, snippet]), 0, 0, contexts, exact_only=False) == 0  # grounding
    assert check_label(rec(asks[2], [recital, sig]), 0, 0, contexts) == 1  # only the large one names indent
    assert check_label(rec(asks[2], [sig, sig]), 0, 0, contexts) == 0  # a tie goes to the cheaper
    no_sig = {asks[2]: [[["json.dumps serializes an object."]], [[doc]]]}
    assert check_label(rec(asks[2], [recital, sig]), 0, 0, no_sig) is None  # the served docs write no signature
    assert check_label(rec(asks[2], [recital, sig]), 0, 1, no_sig) == 1


def test_the_forward_baseline_is_the_same_router_without_its_type_prior() -> None:
    from bench.router import without_prior

    from ruvllm.router.fastgrnn import FastGRNNConfig, FastGRNNParams

    params = FastGRNNParams.init(FastGRNNConfig(models=["a", "b"], prior_slice=(26, 32), prior_kind="table"), seed=1)
    params.arrays["prior_w"][:] = np.arange(params.arrays["prior_w"].size).reshape(params.arrays["prior_w"].shape)
    plain = without_prior(params)
    assert "prior_w" not in plain.arrays and plain.config.prior_slice == (0, 0)
    x = np.zeros(128, np.float32)
    x[28] = 1.0  # type 2
    h = params.cell(x, params.hidden0())
    assert np.allclose(params.heads(h, x) - plain.heads(h, x), params.arrays["prior_w"][:, 2])
