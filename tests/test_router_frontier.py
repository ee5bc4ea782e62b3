"""bench.router_frontier: its optima against brute force, its regrets against bench.router's, and its
output on a small labelled file (the real labels are the bench's own run)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from bench.router import _tables, metrics
from bench.router_frontier import (
    best_choice,
    breakpoints,
    cascade_points,
    hindsight,
    learnt,
    main,
    pareto,
    perfect_check_cascade,
    regret_tables,
)

from ruvllm.router.oracle import LabelledRecord, load_labelled, relabel, save_labelled

MODELS, BINS = ["small", "mid", "large"], [256, 1024]


def _rec(rid: str, split: str, qtype: str, rng: np.random.Generator) -> LabelledRecord:
    lat = np.array([[400.0, 600.0], [900.0, 1300.0], [2500.0, 3500.0]]) * rng.uniform(0.8, 1.2)
    rec = LabelledRecord(id=rid, session="s", split=split, query=rid, query_type=qtype, gold="", models=MODELS,
                         context_bins=BINS, quality=rng.uniform(0, 1, (3, 2)).round(3).tolist(),
                         latency_ms=lat.round(1).tolist(), cost=[[0.05, 0.1], [0.2, 0.4], [1.0, 2.0]],
                         utility=[[0.0] * 2] * 3, best_model=0, best_context=0, temperature=0.0, top_p=1.0,
                         label_source="synthetic")
    return relabel(rec, 0.02, 0.02)


def _records(seed: int = 0) -> list[LabelledRecord]:
    """4 symbols × 2 types; each pattern has two training wordings and one seen test wording, and one
    more symbol is held out."""
    rng = np.random.default_rng(seed)
    out = []
    for sym, t in itertools.product(["a.f", "a.g", "b.h", "b.k"], ["code", "definition"]):
        out += [_rec(f"{sym}:{t}:{k}", split, t, rng) for k, split in enumerate(["train", "train", "test_seen"])]
    out += [_rec(f"c.z:{t}:0", "test_unseen", t, rng) for t in ["code", "definition"]]
    return out


def test_regrets_are_bench_routers() -> None:
    recs = _records()
    ref = (2, 1)
    dq, dl = regret_tables(recs, ref)
    rng = np.random.default_rng(1)
    m, c = rng.integers(0, 3, len(recs)), rng.integers(0, 2, len(recs))
    got = metrics(m, c, _tables(recs), ref)
    choice = m * 2 + c  # options flatten (model, context) row-major
    rows = np.arange(len(recs))
    assert dq[rows, choice].mean() == pytest.approx(got["quality_regret_vs_large_1to5"])
    assert dl[rows, choice].mean() == pytest.approx(got["latency_regret_vs_oracle_ms"])


def test_best_choice_is_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(2)
    cost, weight = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    budget = float(np.median([weight[range(4), ch].sum() for ch in itertools.product(range(3), repeat=4)]))
    brute = min((cost[range(4), ch].sum(), ch) for ch in itertools.product(range(3), repeat=4)
                if weight[range(4), ch].sum() <= budget)
    got = best_choice(cost, weight, budget)
    assert got is not None
    assert cost[range(4), got].sum() == pytest.approx(brute[0])
    assert weight[range(4), got].sum() <= budget + 1e-9
    assert best_choice(cost, weight, float(weight.min(1).sum()) - 1.0) is None  # no choice is that light


def test_breakpoints_visit_every_table_a_nu_makes() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 1000, (6, 5)), rng.uniform(0, 2, (6, 5))
    swept = {tuple((a + nu * b).argmin(1)) for nu in breakpoints(a, b)}
    dense = {tuple((a + nu * b).argmin(1)) for nu in np.concatenate([[0.0], np.geomspace(1e-3, 1e7, 20000)])}
    assert dense <= swept
    assert len(swept) > 3  # the case is not trivial


def test_finer_groups_never_do_worse_with_hindsight() -> None:
    recs = _records(4)
    dq, dl = regret_tables(recs, (2, 1))
    keys = {"question": [r.id for r in recs], "pattern": [r.id.rsplit(":", 1)[0] for r in recs],
            "type": [r.query_type for r in recs], "constant": [""] * len(recs)}
    res = {k: hindsight(dq, dl, v, points=5) for k, v in keys.items()}
    assert [res[k]["groups"] for k in keys] == [len(recs), 10, 2, 1]
    order = list(keys)
    for fine, coarse in itertools.pairwise(order):
        a, b = res[fine]["least_latency_at_quality_target"], res[coarse]["least_latency_at_quality_target"]
        if b is not None:
            assert a is not None and a["latency_regret_ms"] <= b["latency_regret_ms"] + 1e-9
    # per question with hindsight, the oracle's own choices are among the policies: its latency regret is 0
    # at the oracle's quality regret, so the least quality regret within 50 ms is at most that
    oracle = np.array([np.argmax(np.asarray(r.utility).ravel()) for r in recs])
    best = res["question"]["least_quality_at_latency_target"]["quality_regret"]
    assert best <= dq[np.arange(len(recs)), oracle].mean() + 1e-9


def test_a_learnt_table_is_scored_only_where_it_has_the_key() -> None:
    # two options; key "x": option 0 is fast and poor, option 1 slow and good; key "y" has no training question
    dq_tr, dl_tr = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 500.0], [0.0, 500.0]])
    dq_te, dl_te = np.array([[0.8, 0.1], [9.0, 9.0]]), np.array([[-100.0, 300.0], [9.0, 9.0]])
    res = learnt((dq_tr, dl_tr, ["x", "x"]), (dq_te, dl_te, ["x", "y"]))
    assert res is not None and res["questions"] == 1
    pts = {(p["quality_regret"], p["latency_regret_ms"]) for p in res["frontier"]}
    assert pts == {(0.8, -100.0), (0.1, 300.0)}  # ν below 500 picks option 0, above it option 1
    assert res["least_latency_at_quality_target"] is None  # 0.1 is not below 0.1
    assert res["least_quality_at_latency_target"]["quality_regret"] == 0.8
    assert learnt((dq_tr, dl_tr, ["x", "x"]), (dq_te, dl_te, ["y", "y"])) is None


def test_a_perfect_check_cascade_escalates_below_tau_and_pays_both_answers() -> None:
    recs = _records(6)[:5]
    ref = (2, 1)
    pts = cascade_points(recs, ref)
    t = _tables(recs)
    n = len(recs)
    q1, lat1 = t["quality"][:, 0, 0], t["latency_ms"][:, 0, 0]
    q_large, lat_large = t["quality"][:, 2, 1], t["latency_ms"][:, 2, 1]
    lat_oracle = t["latency_ms"].reshape(n, -1)[np.arange(n), t["utility"].reshape(n, -1).argmax(1)]
    # 2 smaller models × 2 contexts, each with τ at every distinct first Q and at ∞
    assert len(pts) == sum(len(np.unique(t["quality"][:, m, c])) + 1 for m in range(2) for c in range(2))
    by = {(tuple(p["first"]), p["tau"]): p for p in pts}
    tau = float(np.sort(q1)[2])  # escalates the two worst first answers
    p = by[((0, 0), tau)]
    assert p["escalated"] == pytest.approx(2 / n)
    esc = q1 < tau
    assert p["quality_regret"] == pytest.approx(4 * (q_large - np.where(esc, q_large, q1)).mean())
    assert p["latency_regret_ms"] == pytest.approx((np.where(esc, lat1 + lat_large, lat1) - lat_oracle).mean())
    every = by[((0, 0), float("inf"))]  # always-large's quality, plus every first answer's latency
    assert every["quality_regret"] == pytest.approx(0.0, abs=1e-12)
    assert every["latency_regret_ms"] == pytest.approx((lat1 + lat_large - lat_oracle).mean())
    assert perfect_check_cascade(recs, ref)["frontier"] == pareto(pts)


def test_main_writes_and_refuses(tmp_path: Path) -> None:
    labelled = save_labelled(_records(5), tmp_path / "l.jsonl")
    bench = tmp_path / "router_bench.json"
    bench.write_text(json.dumps({"labels": {"lambda_per_s": 0.02, "mu_per_cost_unit": 0.02}, "results": {
        "test_seen": {"FastGRNN compressed (sparse+int8)": {"quality_regret_vs_large_1to5": 0.2,
                                                             "latency_regret_vs_oracle_ms": 100.0}}}}))
    out = tmp_path / "out"
    assert main(["--labelled", str(labelled), "--router-bench", str(bench), "--out", str(out), "--points", "4"]) == 0
    doc = json.loads((out / "router_frontier.json").read_text())
    assert doc["hindsight"]["questions"] == len(load_labelled(labelled)) - 2  # held-out patterns have one wording
    assert set(doc["learnt"]) == {"test_seen", "test_unseen"}
    assert "per pattern" not in doc["learnt"]["test_unseen"]["tables"]  # held-out symbols have no pattern row
    assert doc["routers"]["test_seen"]["FastGRNN compressed (sparse+int8)"]["latency_regret_ms"] == 100.0
    assert "| FastGRNN compressed (sparse+int8) | +0.200 | +100 ms | no |" in (out / "router_frontier.md").read_text()
    assert (out / "router_frontier.png").stat().st_size > 0
    assert "| cascade with a perfect check |" in (out / "router_frontier.md").read_text()
    with pytest.raises(SystemExit, match="λ = 0.02"):
        main(["--labelled", str(labelled), "--router-bench", str(bench), "--out", str(out), "--lam", "0"])
    with pytest.raises(SystemExit, match="--points"):
        main(["--labelled", str(labelled), "--out", str(out), "--points", "1"])
