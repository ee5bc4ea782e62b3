"""Shadow labels (router/shadow.py): the best utility among the answers, as the oracle labels."""

from __future__ import annotations

import pytest

from ruvllm.config import Config
from ruvllm.errors import ConfigError, InvalidInputError
from ruvllm.router.shadow import LAMBDA, MU, ShadowRun, label_runs


def test_the_label_trades_quality_against_latency_and_cost() -> None:
    small = ShadowRun("small", quality=0.70, latency_ms=500.0, cost=0.05)
    large = ShadowRun("large", quality=0.80, latency_ms=3000.0, cost=0.9)
    label = label_runs([small, large])
    u_small = 0.70 - LAMBDA * 0.5 - MU * 0.05
    u_large = 0.80 - LAMBDA * 3.0 - MU * 0.9
    assert label.utilities == pytest.approx((u_small, u_large))
    assert label.best == ("small" if u_small > u_large else "large")
    # a large enough quality gap pays for the latency and the cost
    assert label_runs([small, ShadowRun("large", 0.95, 3000.0, 0.9)]).best == "large"
    # heavier weights on latency and cost flip it back
    assert label_runs([small, ShadowRun("large", 0.95, 3000.0, 0.9)], lam=0.2, mu=0.2).best == "small"


def test_a_tie_keeps_the_served_answer() -> None:
    served, other = ShadowRun("a", 0.5, 100.0, 0.1), ShadowRun("b", 0.5, 100.0, 0.1)
    assert label_runs([served, other]).best == "a" and label_runs([other, served]).best == "b"


def test_the_record_names_every_run_with_its_utility() -> None:
    d = label_runs([ShadowRun("a", 0.2, 10.0, 0.01), ShadowRun("b", 0.9, 20.0, 0.02)]).to_dict()
    assert d["best"] == "b" and [r["model"] for r in d["runs"]] == ["a", "b"]
    assert d["runs"][1]["utility"] > d["runs"][0]["utility"]


@pytest.mark.parametrize("runs", [
    [ShadowRun("a", 0.5, 1.0, 0.1)],  # nothing to compare
    [ShadowRun("a", 0.5, 1.0, 0.1), ShadowRun("a", 0.6, 1.0, 0.1)],  # one model twice
    [ShadowRun("a", 1.5, 1.0, 0.1), ShadowRun("b", 0.6, 1.0, 0.1)],  # quality out of range
    [ShadowRun("a", 0.5, -1.0, 0.1), ShadowRun("b", 0.6, 1.0, 0.1)],  # negative latency
])
def test_bad_runs_are_refused(runs: list[ShadowRun]) -> None:
    with pytest.raises(InvalidInputError):
        label_runs(runs)


@pytest.mark.parametrize(("key", "value"), [("router.shadow", -0.1), ("router.shadow", 1.5),
                                            ("router.shadow_per_pattern", -1)])
def test_the_shadow_settings_are_checked(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        Config.load(**{key: value})
