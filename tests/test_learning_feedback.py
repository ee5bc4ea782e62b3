"""User feedback reaches the online router: a bad score pushes it away from the model it used,
a good one pulls it closer, exploratory decisions weigh more (1 / propensity), and the user's
verdict replaces the judge's on the same request."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ruvllm.learning.learner import Experience
from ruvllm.learning.router_online import RouterOnline, RouterOnlineConfig, feedback_loss
from ruvllm.router.base import RouteInput
from ruvllm.router.fastgrnn import FastGRNNConfig, FastGRNNParams
from ruvllm.router.fastgrnn_router import FastGRNNRouter

torch.set_num_threads(1)
MODELS = ["small", "large"]


def _params() -> FastGRNNParams:
    return FastGRNNParams.init(FastGRNNConfig(models=MODELS, input_dim=8, hidden=8, w_rank=4, u_rank=2), seed=0)


def _online(published: list[FastGRNNParams]) -> RouterOnline:
    return RouterOnline(_params(), RouterOnlineConfig(batch_size=16, lr=1e-2), on_publish=published.append)


def _p(params: FastGRNNParams, x: np.ndarray, model: str) -> float:
    return float(params.step(x)[0].model_probs[MODELS.index(model)])


def test_negative_feedback_moves_the_router_away_from_the_model_it_used() -> None:
    x = np.random.default_rng(0).normal(size=8).astype(np.float32)
    published: list[FastGRNNParams] = []
    online = _online(published)
    before = _p(_params(), x, "large")
    for _ in range(3):
        assert online.feedback(x, "large", 0.0, request_id="r1")
    assert len(published) == 3  # each feedback is trained on and published at once
    after = [_p(p, x, "large") for p in published]
    assert after[0] < before and after[-1] < after[0]
    assert online.stats()["feedbacks"] == 3
    # a good score pulls the other way
    up: list[FastGRNNParams] = []
    online2 = _online(up)
    online2.feedback(x, "large", 1.0)
    assert _p(up[-1], x, "large") > before
    assert not online2.feedback(x, "unknown-model", 0.0)


def test_feedback_replaces_the_pending_judged_experience_of_the_same_request() -> None:
    x = np.ones(8, np.float32)
    online = _online([])
    online.observe(online.experience(x, "large", 0.9, request_id="r1"))  # the judge liked it
    online.observe(online.experience(x, "small", 0.9, request_id="r2"))
    assert [e.meta["request_id"] for e in online.learner.pending] == ["r1", "r2"]
    online.feedback(x, "large", 0.0, request_id="r1")  # the user did not
    assert online.learner.pending == []  # r2 was trained on with the feedback; r1's judge verdict is gone
    replayed = [e.meta.get("request_id") for e in online.learner.plugins[2].buffer.items()]
    assert "r1" in replayed and "r2" in replayed and replayed.count("r1") == 1


def test_importance_weight_scales_the_push_from_an_exploratory_decision() -> None:
    model = _online([]).model
    x = np.random.default_rng(1).normal(size=8).astype(np.float32)

    def grad_norm(propensity: float) -> float:
        model.zero_grad()
        iw = min(1 / propensity, 10.0)
        e = Experience(x, action=1, reward=0.0, propensity=propensity, meta={"push": 1.0 * iw})
        feedback_loss(model, [e]).backward()
        return float(sum(p.grad.norm() ** 2 for p in model.parameters() if p.grad is not None) ** 0.5)

    assert np.isclose(grad_norm(0.25), 4 * grad_norm(1.0), rtol=1e-4)


def test_epsilon_greedy_routing_records_the_propensity() -> None:
    params = FastGRNNParams.init(FastGRNNConfig(models=MODELS, hidden=8, w_rank=4, u_rank=2), seed=0)  # D = 128
    router = FastGRNNRouter(params, epsilon=0.5, seed=3)
    greedy = FastGRNNRouter(params).route(RouteInput("q", 1, 0.0, 0, features=np.zeros(128)))
    assert greedy.propensity == 1.0
    seen = {}
    for _ in range(200):
        d = router.route(RouteInput("q", 1, 0.0, 0, features=np.zeros(128)))
        seen[d.model] = d.propensity
    # ε = 0.5 over two models: the greedy one 0.5 + 0.25, the other 0.25
    assert seen == {greedy.model: 0.75, next(m for m in MODELS if m != greedy.model): 0.25}


def _anchor_rows(seed: int = 0) -> tuple[np.ndarray, list[Any]]:
    """48 training rows near one point that want "small" (utility 1 against 0), and one held-out row."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    base = rng.normal(size=8).astype(np.float32)
    rows = [SimpleNamespace(split="train", best_model=0, query=f"q{i}", query_type="definition",
                            utility=[[1.0] * 5, [0.0] * 5], x=(base + 0.3 * rng.normal(size=8)).astype(np.float32))
            for i in range(48)]
    rows.append(SimpleNamespace(split="test_seen", best_model=1, query="held out", query_type="code",
                                utility=[[0.0] * 5, [1.0] * 5], x=base))
    return base, rows


def _pull_elsewhere(online: RouterOnline, base: np.ndarray, n: int = 400) -> None:
    """A stream of another kind of query on which "large" always answers well."""
    stream = np.random.default_rng(1)
    for _ in range(n):
        x = (base + 1.5 + 0.3 * stream.normal(size=8)).astype(np.float32)
        online.observe(online.experience(x, "large", 1.0))
    online.close()


def test_an_anchored_learner_keeps_its_training_decisions_while_use_pulls_elsewhere() -> None:
    """``RouterOnline(anchor=...)``: the training rows consolidate EWC before the first update and
    seed the replay buffer. A stream that rewards "large" on one kind of query drags the unanchored
    router's decisions on the training rows (which want "small") along; the anchored one keeps them."""
    from ruvllm.learning.router_online import anchor_experiences

    base, rows = _anchor_rows()
    anchor = anchor_experiences(lambda r: r.x, rows)
    assert len(anchor) == 48 and all(e.target == 0 and e.meta["source"] == "anchor" for e in anchor)
    cfg = RouterOnlineConfig(batch_size=8, lr=1e-2, probe_every=0, curriculum_warmup=0, gate_tolerance=1.0)

    def kept(anchored: bool) -> float:
        online = RouterOnline(_params(), cfg, anchor=anchor if anchored else ())
        if anchored:  # consolidated on the trained weights before any update; the buffer holds the rows
            assert online.learner.plugins[1].ewc.consolidations == 1
            assert len(online.learner.plugins[2].buffer) == 48 and online.stats()["anchored"] == 48
        _pull_elsewhere(online, base)
        p = online.params()
        return float(np.mean([_p(p, r.x, "small") for r in rows[:48]]))

    with_anchor, without = kept(anchored=True), kept(anchored=False)
    assert with_anchor > without + 0.2  # measured 0.48 against 0.05


def test_the_gate_refuses_weights_that_route_the_training_rows_worse() -> None:
    """With anchor rows that carry utility tables, a publish whose weights have a higher utility
    regret on them than the served weights is refused: ``on_publish`` never sees them and the
    learner goes back to the served weights. Weights that route them no worse are published."""
    from ruvllm.learning.router_online import anchor_experiences

    base, rows = _anchor_rows()
    anchor = anchor_experiences(lambda r: r.x, rows)
    published: list[FastGRNNParams] = []
    # no EWC, no rehearsal of its own: only the gate stands between the stream and the served router
    cfg = RouterOnlineConfig(batch_size=8, lr=5e-2, probe_every=0, curriculum_warmup=0, ewc_lambda=0.0,
                             replay_size=1, publish_every=10)
    online = RouterOnline(_params(), cfg, on_publish=published.append, anchor=anchor)
    served = online.gate_regret(_params())
    _pull_elsewhere(online, base)
    assert online.gate_rejections >= 1
    assert all(online.gate_regret(p) <= served for p in published)  # nothing worse ever reached the router
    assert online.gate_regret(online.params()) <= served  # the learner is back at the served weights
    # the same stream with the gate off (anchor rows without utility tables) publishes the drift
    ungated = anchor_experiences(lambda r: r.x, rows)
    for e in ungated:
        e.meta.pop("utility")
    drifting: list[FastGRNNParams] = []
    free = RouterOnline(_params(), cfg, on_publish=drifting.append, anchor=ungated)
    _pull_elsewhere(free, base)
    assert free.gate_rejections == 0 and max(online.gate_regret(p) for p in drifting) > served


def test_an_anchor_must_fit_the_router_and_come_before_any_update() -> None:
    import pytest

    from ruvllm.errors import InvalidInputError
    from ruvllm.learning.router_online import anchor_experiences

    base, rows = _anchor_rows()
    wrong = anchor_experiences(lambda r: r.x, rows)
    wrong[0].meta["utility"] = np.zeros((2, 3), np.float32)  # 3 context bins; the router has 5
    with pytest.raises(InvalidInputError, match="shape"):
        RouterOnline(_params(), anchor=wrong)
    online = RouterOnline(_params(), RouterOnlineConfig(batch_size=8, probe_every=0, curriculum_warmup=0))
    _pull_elsewhere(online, base, n=16)
    with pytest.raises(InvalidInputError, match="already been updated"):
        online.add_anchor(anchor_experiences(lambda r: r.x, rows))
