"""EWC: the Fisher comes from gradients, and the penalty reduces forgetting on a toy two-task problem."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from ruvllm.errors import InvalidInputError
from ruvllm.learning import (
    EWC,
    EWCConfig,
    EWCPlugin,
    Experience,
    LearnerConfig,
    OnlineLearner,
    ReplayPlugin,
    diag_fisher,
    router_loss,
    router_predict,
)
from ruvllm.router.fastgrnn import FastGRNNConfig
from ruvllm.router.training import FastGRNNTorch

torch.set_num_threads(1)  # tiny models: threads only add contention


def _task(seed: int, n: int, d: int = 16, m: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A domain: inputs around a domain centre, the best of m models given by a linear rule."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1.0, d)
    w = rng.normal(0, 1, (m, d))
    x = (mu + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, (x @ w.T).argmax(1)


def _two_tasks(lam: float, replay: int = 0) -> tuple[float, float, float]:
    """(acc on A after A, acc on A after B, acc on B after B)."""
    cfg = FastGRNNConfig(models=["a", "b", "c"], input_dim=16, hidden=16, w_rank=8, u_rank=4)
    model = FastGRNNTorch(cfg, seed=0)
    plugins: list = []
    if lam:
        plugins.append(EWCPlugin(EWCConfig(lam=lam, fisher_samples=200), every=0))
    if replay:
        plugins.append(ReplayPlugin(500, replay))
    learner = OnlineLearner(model, router_loss, plugins, LearnerConfig(batch_size=16, lr=1e-2))
    (xa, ya), (xb, yb) = _task(1, 4800), _task(2, 4800)
    (ta, tya), (tb, tyb) = _task(1, 1000), _task(2, 1000)  # same domains, fresh samples
    for x, y in zip(xa, ya, strict=True):
        learner.observe(Experience(x, target=int(y)))
    a0 = float((router_predict(model, ta) == tya).mean())
    if lam:
        learner.plugin(EWCPlugin).consolidate(learner)  # the task boundary
    for x, y in zip(xb, yb, strict=True):
        learner.observe(Experience(x, target=int(y)))
    return a0, float((router_predict(model, ta) == tya).mean()), float((router_predict(model, tb) == tyb).mean())


def test_ewc_reduces_forgetting_vs_naive() -> None:
    a0_naive, a_naive, b_naive = _two_tasks(0.0)
    a0_ewc, a_ewc, b_ewc = _two_tasks(1.0)
    assert a0_naive > 0.9 and a0_ewc > 0.9  # task A was learnt
    forget_naive, forget_ewc = a0_naive - a_naive, a0_ewc - a_ewc
    assert forget_naive > 0.15  # naive fine-tuning forgets A
    assert forget_ewc < forget_naive - 0.15, (forget_naive, forget_ewc)  # the margin
    assert b_ewc > 0.6  # and still learns B
    assert (a_ewc + b_ewc) / 2 > (a_naive + b_naive) / 2


def test_fisher_is_mean_squared_per_example_gradient() -> None:
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0]]))
    xs = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])]

    def loss(m: nn.Module, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum((m(x) ** 2).sum() for x in items) / len(items)  # type: ignore[return-value]

    f = diag_fisher(lin, xs, loss, normalize=False)["weight"]
    # d/dw (w·x)² = 2(w·x)x: [1, 0] for x1 (w·x1 = .5), [0, -8] for x2 (w·x2 = -2) → mean of squares
    assert torch.allclose(f, torch.tensor([[0.5, 32.0]]))


def test_online_ewc_keeps_one_decayed_term_and_penalty_is_zero_at_anchor() -> None:
    lin = nn.Linear(3, 1)
    ewc = EWC(EWCConfig(lam=2.0, gamma=0.5))

    def loss(m: nn.Module, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([m(x).sum() ** 2 for x in items]).mean()

    data = [torch.randn(3) for _ in range(8)]
    assert float(ewc.penalty(lin)) == 0.0
    ewc.consolidate(lin, data, loss)
    ewc.consolidate(lin, data, loss)
    assert len(ewc.terms) == 1 and ewc.consolidations == 2
    assert float(ewc.penalty(lin).detach()) == pytest.approx(0.0)
    with torch.no_grad():
        lin.weight.add_(1.0)
    assert float(ewc.penalty(lin).detach()) > 0
    classic = EWC(EWCConfig(online=False))
    classic.consolidate(lin, data, loss)
    classic.consolidate(lin, data, loss)
    assert len(classic.terms) == 2
    with pytest.raises(InvalidInputError):
        EWCConfig(lam=-1).validate()
