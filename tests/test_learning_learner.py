"""The learner loop: plugins, checkpoint rollback, curriculum pacing, the bounded background queue."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ruvllm.errors import InvalidInputError
from ruvllm.learning import (
    BackgroundWorker,
    CheckpointPlugin,
    Curriculum,
    CurriculumPlugin,
    Experience,
    LearnerConfig,
    OnlineLearner,
    ReplayPlugin,
    background_learner,
    competence,
    difficulty,
    router_loss,
    router_predict,
)
from ruvllm.router.fastgrnn import FastGRNNConfig
from ruvllm.router.training import FastGRNNTorch

torch.set_num_threads(1)


def _router(d: int = 8) -> FastGRNNTorch:
    return FastGRNNTorch(FastGRNNConfig(models=["s", "l"], input_dim=d, hidden=8, w_rank=4, u_rank=2), seed=0)


def _exp(rng: np.random.Generator, flip: bool = False) -> Experience:
    x = rng.normal(size=8).astype(np.float32)
    y = int(x[0] > 0) ^ int(flip)
    return Experience(x, target=y)


def test_learner_learns_and_batches() -> None:
    model = _router()
    learner = OnlineLearner(model, router_loss, [ReplayPlugin(64, 8)], LearnerConfig(batch_size=8, lr=2e-2))
    rng = np.random.default_rng(0)
    outs = [learner.observe(_exp(rng)) for _ in range(8 * 150 + 3)]
    assert learner.step == 150 and sum(o is not None for o in outs) == 150
    assert len(learner.pending) == 3
    assert learner.flush() is not None and learner.step == 151 and not learner.pending
    xs = rng.normal(size=(400, 8)).astype(np.float32)
    assert (router_predict(model, xs) == (xs[:, 0] > 0)).mean() > 0.9


def test_reward_only_experiences_train_towards_good_actions() -> None:
    model = _router()
    learner = OnlineLearner(model, router_loss, cfg=LearnerConfig(batch_size=8, lr=2e-2))
    rng = np.random.default_rng(1)
    for _ in range(1200):
        x = rng.normal(size=8).astype(np.float32)
        a = int(rng.integers(2))
        good = a == int(x[0] > 0)
        learner.observe(Experience(x, action=a, reward=1.0 if good else 0.0, propensity=0.5))
    xs = rng.normal(size=(400, 8)).astype(np.float32)
    assert (router_predict(model, xs) == (xs[:, 0] > 0)).mean() > 0.85
    # nothing to learn from: zero loss, no crash
    assert learner.update([Experience(np.zeros(8, np.float32))])["loss"] == 0.0


def test_rollback_when_periodic_eval_drops(tmp_path: Path) -> None:
    """Train on the rule, then on its flipped (corrupted) version: the probe-set accuracy drops,
    the checkpoint plugin restores the best weights, and the restored model still scores well."""
    rng = np.random.default_rng(2)
    probe = [_exp(rng) for _ in range(300)]
    px = np.stack([e.x for e in probe])
    py = np.array([e.target for e in probe])

    def acc(m: nn.Module) -> float:
        return float((router_predict(m, px) == py).mean())

    model = _router()
    ck = CheckpointPlugin(acc, every=25, tolerance=0.05, directory=tmp_path / "ck")
    learner = OnlineLearner(model, router_loss, [ck], LearnerConfig(batch_size=8, lr=2e-2))
    for _ in range(8 * 150):
        learner.observe(_exp(rng))
    good = acc(model)
    assert good > 0.9 and ck.rollbacks == 0 and (tmp_path / "ck" / "best.pt").exists()
    for _ in range(8 * 100):  # poisoned feedback
        learner.observe(_exp(rng, flip=True))
    assert ck.rollbacks >= 1
    assert any(h["action"] == "rollback" for h in ck.history)
    ck.check(learner)  # the current weights are the restored ones, or no worse than tolerance
    assert acc(model) >= (ck.best or 0) - 0.05
    # saved checkpoint loads back
    learner.load(tmp_path / "ck" / "best.pt")
    assert acc(model) == pytest.approx(ck.best)


def test_curriculum_orders_and_paces() -> None:
    easy = "What does json.dumps do?"
    hard = "Compare json.dumps and pickle.dumps, explain why one is safer, then write an example."
    assert difficulty(easy) < 0.2 < 0.5 < difficulty(hard)
    assert [competence(t, 100) for t in (0, 50, 100, 1000)] == sorted(competence(t, 100) for t in (0, 50, 100, 1000))
    assert competence(0, 100) == pytest.approx(0.2) and competence(100, 100) == 1.0
    cur = Curriculum(key=difficulty, warmup_steps=100)
    items = [hard, easy, "Explain how heapq works and why it is fast", "What is os.sep?"]
    assert cur.order(items)[-1] == hard
    assert set(cur.admissible(items, 0)) == {easy, "What is os.sep?"}
    assert len(cur.admissible(items, 100)) == 4
    # in the loop: hard items wait while competence is low, and are all trained on later
    model = _router()
    plug = CurriculumPlugin(Curriculum(key=Experience.level, warmup_steps=20), max_held=1000)
    learner = OnlineLearner(model, router_loss, [plug], LearnerConfig(batch_size=4))
    rng = np.random.default_rng(3)
    for i in range(4):
        learner.observe(Experience(rng.normal(size=8).astype(np.float32), target=0, text=[easy, hard][i % 2]))
    assert len(plug.held) >= 1 and all(e.text == hard for e in plug.held)
    for _ in range(40 * 4):
        learner.observe(Experience(rng.normal(size=8).astype(np.float32), target=0, text=easy))
    assert not plug.held


def test_background_worker_bounded_drop_oldest_and_flush_on_close() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def slow(i: int) -> None:
        gate.wait(5)
        seen.append(i)

    w = BackgroundWorker(slow, maxsize=4)
    t0 = time.perf_counter()
    for i in range(20):
        assert w.submit(i)
    assert time.perf_counter() - t0 < 0.5  # never blocks the caller
    assert w.q.qsize() <= 4 and w.dropped >= 15
    gate.set()
    w.close()
    assert not w.submit(99)
    assert seen[-4:] == [16, 17, 18, 19]  # the newest survive, processed in order
    s = w.stats()
    assert s["processed"] == len(seen) and s["processed"] + s["dropped"] == 20 and s["queued"] == 0


def test_background_learner_flushes_pending_on_close_and_survives_errors() -> None:
    learner = OnlineLearner(_router(), router_loss, cfg=LearnerConfig(batch_size=16))
    w = background_learner(learner, maxsize=1000)
    rng = np.random.default_rng(4)
    for _ in range(40):
        w.submit(_exp(rng))
    w.submit("not an experience")  # handler error (typed, raised by observe): counted, the worker lives on
    w.submit(_exp(rng))
    w.close()
    assert learner.observed == 41 and w.errors == 1
    assert not learner.pending and learner.step == 3  # 2 full batches + the flushed remainder (9)
    with pytest.raises(InvalidInputError):
        learner.observe(Experience(np.array([np.nan], np.float32)))
    w.close()  # idempotent
    with pytest.raises(InvalidInputError):
        BackgroundWorker(print, maxsize=0)


def test_router_online_learns_from_judged_answers_and_publishes() -> None:
    from ruvllm.learning.router_online import RouterOnline, RouterOnlineConfig
    from ruvllm.router.fastgrnn import FastGRNNParams

    params = FastGRNNParams.init(FastGRNNConfig(models=["small", "large"], input_dim=8, hidden=8, w_rank=4,
                                                u_rank=2), seed=0)
    published: list[FastGRNNParams] = []
    online = RouterOnline(params, RouterOnlineConfig(batch_size=8, lr=1e-2, publish_every=20, eval_every=20,
                                                     consolidate_every=50), on_publish=published.append)
    rng = np.random.default_rng(6)
    for _ in range(1600):  # the large model is good on hard queries (x0 > 0), the small one on the rest
        x = rng.normal(size=8).astype(np.float32)
        m = ["small", "large"][int(rng.integers(2))]
        good = (m == "large") == (x[0] > 0)
        online.observe(online.experience(x, m, 0.9 if good else 0.1, propensity=0.5, text="What is x?"))
    online.close()
    s = online.stats()
    assert s["updates"] > 100 and s["publishes"] >= 5 and s["probe"] > 100
    final = published[-1]
    xs = rng.normal(size=(300, 8)).astype(np.float32)
    pred = np.array([final.step(x)[0].model_probs.argmax() for x in xs])
    assert (pred == (xs[:, 0] > 0)).mean() > 0.85
    assert online.probe_score(online.model) > 0.85
