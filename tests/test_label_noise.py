"""bench.label_noise's measures, on utilities built by hand (the real runs are the bench itself)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bench.label_noise import analyse, markdown, plot, select_patterns

from ruvllm.router.oracle import utilities


def _flip_each_wording_once() -> np.ndarray:
    """One pattern, three wordings, three draws: model 1 is best, except that in draw s wording s
    goes to model 0 (a draw-level accident, not the wording's)."""
    U = np.tile(np.array([0.0, 1.0, 0.0]), (3, 3, 1))
    for s in range(3):
        U[s, s, 0] = 1.5
    return U


def test_labels_that_are_the_draw_become_stable_when_averaged() -> None:
    r = analyse(_flip_each_wording_once(), [[0, 1, 2]])
    assert r["draw_agreement"] == pytest.approx(1 / 3)  # each wording: labels (0, 1, 1) in some order
    assert r["wording_agreement"] == pytest.approx(1 / 3)  # within a draw one wording of three is off
    assert r["mean_wording_agreement"] == 1.0  # mean U: model 0 at 0.5, model 1 at 2/3, for every wording
    assert r["ceiling_by_draws"]["1"] == pytest.approx(2 / 3)
    assert r["ceiling_by_draws"]["3"] == 1.0
    assert r["draw_vs_mean"] == pytest.approx(2 / 3)
    assert r["lookup"]["mean_of_draws"]["accuracy"] == 1.0
    assert r["lookup"]["mean_of_draws"]["utility_regret"] == 0.0


def test_labels_that_are_the_wording_do_not_move_with_more_draws() -> None:
    one = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0],  # pattern A: wording 0 differs
                    [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # pattern B: stable
    U = np.stack([one, one, one, one])  # every draw the same: the wording decides
    r = analyse(U, [[0, 1, 2], [3, 4, 5]], U_greedy=one)
    assert r["draw_agreement"] == 1.0
    assert all(v == pytest.approx(5 / 6) for v in r["ceiling_by_draws"].values())
    assert r["wording_agreement"] == r["mean_wording_agreement"] == pytest.approx(4 / 6)
    assert r["greedy"]["ceiling"] == pytest.approx(5 / 6)
    assert r["greedy"]["agrees_with_mean_of_draws"] == 1.0
    # pattern A's wording 0 is predicted as model 1 (regret 1), its others from {0, 1}: a mean of
    # (1, 0, 0) and (0, 1, 0) ties, argmax takes model 0 (regret 1); pattern B is right throughout
    assert r["lookup"]["mean_of_draws"]["accuracy"] == pytest.approx(3 / 6)
    assert r["lookup"]["mean_of_draws"]["utility_regret"] == pytest.approx(3 / 6)


def test_near_ties_and_label_shares() -> None:
    U = np.array([[[0.50, 0.51, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]])
    r = analyse(U, [[0, 1, 2]])
    assert r["near_tie"] == pytest.approx(1 / 3)
    assert r["label_shares"]["mean_of_draws"] == [1, 1, 1]
    assert r["draw_agreement"] is None  # one draw has no pair


def test_utilities_follow_the_oracle_definition() -> None:
    u = utilities(np.array([1.0]), np.array([2000.0]), np.array([0.5]), lam=0.02, mu=0.1)
    assert u[0] == pytest.approx(1.0 - 0.04 - 0.05)


def test_select_patterns_takes_three_wording_patterns_of_each_type() -> None:
    def rec(sym: str, t: str, k: int) -> SimpleNamespace:
        return SimpleNamespace(id=f"{sym}:{t}:{k}", query_type=t)

    recs = [rec(f"m.f{i}", "code", k) for i in range(5) for k in range(3)]
    recs += [rec("m.two", "code", k) for k in range(2)]  # two wordings: never chosen
    recs += [rec(f"m.g{i}", "howto", k) for i in range(2) for k in range(3)]
    got = select_patterns(recs, ["code", "howto"], per_type=3, seed=1)
    assert [g[0].query_type for g in got] == ["code"] * 3 + ["howto"] * 2
    assert all(len(g) == 3 and len({r.id.split(":")[0] for r in g}) == 1 for g in got)
    assert all(g[0].id.split(":")[0] != "m.two" for g in got)
    assert got == select_patterns(recs, ["code", "howto"], per_type=3, seed=1)  # seeded


def test_the_report_and_plot_are_written_from_an_analysis(tmp_path: Path) -> None:
    U = _flip_each_wording_once()
    r = analyse(U, [[0, 1, 2]], U_greedy=U[0])
    meta = {"command": "python -m bench.label_noise", "date": "d", "machine": "m", "patterns": 1, "questions": 3,
            "types": ["code"], "models": ["a", "b", "c"], "context": 256, "draws": 3, "temperature": 0.7,
            "top_p": 0.95, "mu": 0.02, "lams": [0.02, 0.0], "seconds": 1.0, "greedy_reproduced": 9,
            "greedy_labels_reproduced": 1.0}
    res = {"meta": meta, "by_lambda": {"0.02": r, "0": r}, "by_type": {"code": r}}
    md = markdown(res)
    assert "| pattern ceiling" in md and "| 66.7% | 66.7% | 100.0% |" in md  # greedy, one draw, mean of 3
    plot(res, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
