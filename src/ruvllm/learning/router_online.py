"""The router's online learner: what the orchestrator calls after each answer.

    online = RouterOnline(router.params, on_publish=lambda p: setattr(router, "params", p))
    ...after judge + write-back, on the background worker:
    online.observe(online.experience(x, decision.model, quality, propensity=..., text=question))

``x`` is the normalised 128-d vector the router routed on (``FastGRNNRouter.featurize``);
``quality`` the judge's score in [0, 1]. Every ``publish_every`` updates the trained weights are
handed to ``on_publish`` as ``FastGRNNParams`` (float32; the sparse support of a compressed router
is kept). One in ``probe_every`` experiences is held out into a probe set, never trained on;
the checkpoint plugin evaluates on it (reward-weighted agreement with good decisions) and rolls
back when it drops, so a burst of bad feedback cannot wreck the router.

User feedback (``RuvLLM.feedback`` → ``online.feedback(x, model, score, propensity=...)``) is the
explicit outcome of a decision: a good score pulls the router towards the model it used (as a good
judge score does), a bad one pushes it away (an unlikelihood term, −w·log(1 − p(model | x)), with
w = (good_quality − score) / good_quality · min(1 / propensity, 10): the same importance weight as
the rewards, so an exploratory decision's outcome counts for the policy's rarer choices). Feedback
is trained on at once (the pending batch is flushed) and the weights published, so the next query
already routes with them; EWC and replay keep one complaint from undoing phase 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ruvllm.errors import InvalidInputError
from ruvllm.learning.curriculum import Curriculum
from ruvllm.learning.ewc import EWCConfig
from ruvllm.learning.learner import (
    CheckpointPlugin,
    CurriculumPlugin,
    EWCPlugin,
    Experience,
    LearnerConfig,
    OnlineLearner,
    Plugin,
    ReplayPlugin,
    _n_models,
    _stack,
    router_loss,
    router_predict,
)
from ruvllm.learning.replay import ReservoirBuffer
from ruvllm.router.fastgrnn import SPARSE_PARAMS, FastGRNNParams
from ruvllm.router.training import FastGRNNTorch


@dataclass
class RouterOnlineConfig:
    batch_size: int = 16
    lr: float = 1e-3
    ewc_lambda: float = 10.0
    consolidate_every: int = 200  # updates
    replay_capacity: int = 2000
    replay_size: int = 16
    curriculum_warmup: int = 500  # updates until every difficulty is admitted
    probe_every: int = 10  # 1 in N experiences goes to the probe set
    probe_capacity: int = 500
    eval_every: int = 100  # updates
    rollback_tolerance: float = 0.05
    publish_every: int = 50  # updates
    # with an anchor that carries utility tables: weights whose utility regret on the anchor rows is
    # more than this above the served weights' are not published, and the learner goes back to the served
    gate_tolerance: float = 0.0
    good_quality: float = 0.5  # rewards below it do not pull the router towards the action
    seed: int = 0


log = logging.getLogger(__name__)
MAX_IMPORTANCE_WEIGHT = 10.0


def feedback_loss(model: nn.Module, batch: Sequence[Experience]) -> torch.Tensor:
    """``router_loss`` (supervised targets + reward-weighted pull towards good actions) plus an
    unlikelihood push away from actions a user marked bad (``meta["push"]`` = its weight > 0)."""
    loss = router_loss(model, batch)
    bad = [e for e in batch if e.action is not None and e.meta.get("push", 0.0) > 0]
    if not bad:
        return loss
    xs, last = _stack(bad)
    out = model(xs)[torch.arange(len(bad)), last]  # (B, n_out)
    M = _n_models(model)
    p = F.softmax(out[:, :M], dim=1)[torch.arange(len(bad)), torch.tensor([int(e.action or 0) for e in bad])]  # (B,)
    w = torch.tensor([float(e.meta["push"]) for e in bad])
    return loss - (w * torch.log1p(-p.clamp(max=1 - 1e-4))).sum() / max(len(batch), 1)


class RouterOnline:
    """``anchor``: the trained router's own training rows as experiences (features, oracle target
    and utility table; ``anchor_experiences``). With them:

    - **EWC** is consolidated on the trained weights before the first update, with its Fisher
      estimated on those rows (without, nothing holds the trained weights until the first
      consolidation, ``consolidate_every`` updates in), and the rows seed the replay buffer;
    - **a utility gate** guards every publish: weights whose utility regret on the anchor rows is
      above the served weights' (by more than ``gate_tolerance``) are not published, and the
      learner goes back to the served weights (``gate_rejections``). The online learner trains on
      rewards and labels that CV never saw: on the real labels, 70 updates on shadow labels of code
      and signature questions moved how-to decisions (never labelled) to a worse model through
      the shared cell (served utility regret 0.082 → 0.102, ``bench/router_learner.py``). The gate makes
      "refined online" mean "never worse than the served router on the rows it was trained on".
    """

    def __init__(self, params: FastGRNNParams, cfg: RouterOnlineConfig | None = None,
                 on_publish: Callable[[FastGRNNParams], Any] | None = None,
                 anchor: Sequence[Experience] = ()):
        self.cfg = c = cfg or RouterOnlineConfig()
        self.models = list(params.config.models)
        self.normalizer = params.normalizer
        self.model = FastGRNNTorch.from_params(params)
        for name in SPARSE_PARAMS:  # keep a compressed router's support
            p = getattr(self.model, name)
            if bool((p == 0).any()):
                self.model.masks[name] = (p != 0).float()
        self.probe: ReservoirBuffer[Experience] = ReservoirBuffer(c.probe_capacity, seed=c.seed + 11)
        self.checkpoints = CheckpointPlugin(self.probe_score, every=c.eval_every, tolerance=c.rollback_tolerance)
        ewc = EWCPlugin(EWCConfig(lam=c.ewc_lambda), every=c.consolidate_every)
        replay = ReplayPlugin(c.replay_capacity, c.replay_size, seed=c.seed)
        plugins: list[Plugin] = [
            CurriculumPlugin(Curriculum(key=Experience.level, warmup_steps=c.curriculum_warmup)),
            ewc,
            replay,
            self.checkpoints,
        ]
        self.learner = OnlineLearner(self.model, feedback_loss, plugins,
                                     LearnerConfig(batch_size=c.batch_size, lr=c.lr, seed=c.seed),
                                     after_step=lambda m: m.apply_masks())  # type: ignore[operator]
        self._ewc, self._replay = ewc, replay
        self.anchored = 0
        self._gate: list[Experience] = []  # anchor rows with a utility table
        self._served_regret = 0.0
        self._served_state: dict[str, Any] | None = None
        self.gate_rejections = 0
        self.add_anchor(anchor)
        self.on_publish = on_publish
        self.published_at = 0
        self.publishes = 0
        self.feedbacks = 0
        self._n = 0

    def add_anchor(self, anchor: Sequence[Experience]) -> None:
        """Anchor the weights as they are now (the trained router's) on ``anchor`` (see the class
        docstring); only before the first update, since later the weights are no longer the trained ones."""
        if not anchor:
            return
        if self.learner.step > 0:
            raise InvalidInputError("RouterOnline.add_anchor: the router has already been updated online")
        shape = (len(self.models), len(self.model.cfg.context_bins))
        bad = [np.shape(e.meta["utility"]) for e in anchor
               if "utility" in e.meta and np.shape(e.meta["utility"]) != shape]
        if bad:
            raise InvalidInputError(f"RouterOnline.add_anchor: a utility table has shape {bad[0]}; the router "
                                    f"decides over {shape} (models, context bins)")
        with self.learner._lock:
            self._ewc.ewc.consolidate(self.model, list(anchor), feedback_loss)
            for e in anchor:
                self._replay.buffer.add(e)
        self.anchored += len(anchor)
        self._gate += [e for e in anchor if "utility" in e.meta]
        if self._gate:
            self._served_regret = self.gate_regret(self.params())
            self._served_state = self.learner.state_dict()

    def gate_regret(self, params: FastGRNNParams) -> float:
        """Mean utility regret of ``params``' own decisions (model and context, no session) on the
        anchor rows that carry a utility table; 0.0 without any."""
        if not self._gate:
            return 0.0
        regret = 0.0
        for e in self._gate:
            out, _ = params.step(np.atleast_2d(e.x)[-1], None)
            u = np.asarray(e.meta["utility"], np.float64)  # (M, C)
            regret += float(u.max() - u[int(np.argmax(out.model_probs)), int(np.argmax(out.context_probs))])
        return regret / len(self._gate)

    def experience(self, x: Any, model: str, quality: float, *, propensity: float = 1.0, text: str = "",
                   task: str = "", target: str | None = None, request_id: str = "") -> Experience:
        """One answered query → an ``Experience`` (``target``: a known best model, e.g. from a gold check)."""
        a = self.models.index(model) if model in self.models else None
        q = float(min(max(quality, 0.0), 1.0))
        reward = q if q >= self.cfg.good_quality else 0.0
        return Experience(np.asarray(x, np.float32), target=self.models.index(target) if target in self.models
                          else None, action=a, reward=reward, propensity=propensity, text=text, task=task,
                          meta={"quality": q, "request_id": request_id})

    def feedback(self, x: Any, model: str, score: float, *, propensity: float = 1.0, text: str = "",
                 request_id: str = "") -> bool:
        """A user's score in [0, 1] for the answer ``model`` gave on features ``x``: trained on now
        (never held out as a probe, never held back by the curriculum), then published. The user's
        verdict replaces the judge's on the same request: that request's judged experience, if still
        pending, is dropped. Returns False for a model the router does not know."""
        if model not in self.models:
            return False
        if request_id:
            with self.learner._lock:
                self.learner.pending = [e for e in self.learner.pending if e.meta.get("request_id") != request_id]
        q = float(min(max(score, 0.0), 1.0))
        iw = min(1.0 / max(float(propensity), 1e-6), MAX_IMPORTANCE_WEIGHT)
        g = self.cfg.good_quality
        push = (g - q) / g * iw if q < g else 0.0
        exp = Experience(np.asarray(x, np.float32), action=self.models.index(model),
                         reward=q if q >= g else 0.0, propensity=propensity, text=text, difficulty=0.0,
                         meta={"quality": q, "source": "feedback", "push": push, "request_id": request_id})
        self.feedbacks += 1
        self.learner.observe(exp)
        self.learner.flush()
        self.publish()
        return True

    def observe(self, exp: Experience) -> None:
        self._n += 1
        if self.cfg.probe_every > 0 and self._n % self.cfg.probe_every == 0:
            self.probe.add(exp)
            return
        self.learner.observe(exp)
        if self.learner.step - self.published_at >= self.cfg.publish_every:
            self.publish()

    def probe_score(self, model: nn.Module) -> float:
        """Reward-weighted agreement with the probe set's good decisions (1.0 when there is none yet)."""
        items = [e for e in self.probe.items() if (e.target is not None) or (e.action is not None and e.reward)]
        if not items:
            return 1.0
        xs = np.stack([np.atleast_2d(e.x)[-1] for e in items])
        pred = router_predict(model, xs)
        want = np.array([e.target if e.target is not None else e.action for e in items])
        w = np.array([1.0 if e.target is not None else float(e.reward or 0.0) for e in items])
        return float((w * (pred == want)).sum() / w.sum())

    def params(self) -> FastGRNNParams:
        with torch.no_grad():
            return self.model.to_params(self.normalizer, {"stage": "online", "updates": self.learner.step})

    def publish(self) -> FastGRNNParams | None:
        """Hand the current weights to ``on_publish``; with a utility gate (class docstring), only
        when they route the anchor rows no worse than the served ones. Returns what was published,
        None when the gate refused (the learner is then back at the served weights)."""
        p = self.params()
        self.published_at = self.learner.step
        if self._gate:
            regret = self.gate_regret(p)
            if regret > self._served_regret + self.cfg.gate_tolerance:
                assert self._served_state is not None
                self.learner.load_state_dict(self._served_state)
                self.gate_rejections += 1
                log.info("router online: weights at update %d not published: utility regret on the anchor rows "
                         "%.4f > served %.4f", self.learner.step, regret, self._served_regret)
                return None
            self._served_regret, self._served_state = regret, self.learner.state_dict()
        self.publishes += 1
        if self.on_publish is not None:
            self.on_publish(p)
        return p

    def close(self) -> None:
        """Flush pending experiences and publish the final weights."""
        if self.learner.flush() is not None:
            self.publish()

    def stats(self) -> dict[str, Any]:
        return {"observed": self._n, "updates": self.learner.step, "publishes": self.publishes,
                "anchored": self.anchored, "gate_rejections": self.gate_rejections,
                "probe": len(self.probe), "rollbacks": self.checkpoints.rollbacks,
                "feedbacks": self.feedbacks, "last_loss": self.learner.last_loss}


def anchor_experiences(featurize: Callable[[Any], Any], records: Sequence[Any]) -> list[Experience]:
    """The training rows of a labelled set (``oracle.LabelledRecord``, split "train") as
    experiences with their oracle target and utility table (the publish gate's measure),
    featurised the way the router routes them (``featurize``: a record → the normalised 128-d
    vector, e.g. ``FastGRNNRouter.featurize`` of a ``RouteInput`` carrying ``record.feature_input()``)."""
    return [Experience(np.asarray(featurize(r), np.float32), target=int(r.best_model), text=r.query,
                       task=r.query_type, difficulty=0.0,
                       meta={"source": "anchor", "utility": np.asarray(r.utility, np.float32)})
            for r in records if r.split == "train"]

