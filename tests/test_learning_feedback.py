"""User feedback reaches the online router: a bad score pushes it away from the model it used,
a good one pulls it closer, exploratory decisions weigh more (1 / propensity), and the user's
verdict replaces the judge's on the same request."""

from __future__ import annotations

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
