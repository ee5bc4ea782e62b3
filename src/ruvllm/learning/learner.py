"""The online learner: one training loop, strategies as plugins (Avalanche-style).

Every interaction becomes an ``Experience`` (features, decision, outcome). ``observe`` queues
it; every ``batch_size`` experiences the loop runs one update cycle:

    batch = new experiences
    for p in plugins: batch = p.before_update(learner, batch)     # curriculum pacing, replay mixing
    loss  = loss_fn(model, batch) + Σ p.penalty(learner)            # EWC
    step the optimiser (grad-norm clipped)
    for p in plugins: p.after_update(learner, batch, loss)          # EWC consolidation, checkpoints

Plugins: ``ReplayPlugin`` (reservoir buffer), ``EWCPlugin`` (online EWC, consolidated on a fixed
schedule: no task labels needed), ``CurriculumPlugin`` (holds back hard items until the
competence schedule admits them), ``CheckpointPlugin`` (periodic evaluation; rolls back to the
best checkpoint when the metric drops by more than a tolerance).

``BackgroundWorker`` runs work (judge → write-back → ``learner.observe``) off the request path
with a bounded queue: when full, the oldest item is dropped and counted; ``close`` drains the
queue and flushes the learner.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from ruvllm.errors import InvalidInputError
from ruvllm.learning.curriculum import Curriculum, difficulty
from ruvllm.learning.ewc import EWC, EWCConfig
from ruvllm.learning.replay import ReservoirBuffer

log = logging.getLogger(__name__)


@dataclass
class Experience:
    """One interaction: what the router saw, what it decided, how it went."""

    x: npt.NDArray[np.float32]  # normalised features (D,) or the session so far (T, D)
    target: int | None = None  # the best decision when known (oracle label, gold)
    action: int | None = None  # the decision taken (model index)
    reward: float | None = None  # observed outcome in [0, 1] (judge score, F1, user feedback)
    propensity: float = 1.0  # probability the behaviour policy gave ``action``
    task: str = ""  # domain / query type; reporting only, the learner never needs it
    text: str = ""  # the query, for the curriculum
    difficulty: float | None = None  # overrides difficulty(text)
    timestamp: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    def level(self) -> float:
        return self.difficulty if self.difficulty is not None else difficulty(self.text)


LossFn = Callable[[nn.Module, Sequence[Experience]], torch.Tensor]


def _stack(batch: Sequence[Experience]) -> tuple[torch.Tensor, torch.Tensor]:
    """Experiences → padded (B, T, D) features and (B,) index of each one's last step."""
    seqs = [np.atleast_2d(np.asarray(e.x, dtype=np.float32)) for e in batch]  # each (T_i, D)
    T, D = max(len(s) for s in seqs), seqs[0].shape[1]
    xs = np.zeros((len(seqs), T, D), dtype=np.float32)  # (B, T, D)
    for i, s in enumerate(seqs):
        xs[i, : len(s)] = s
    return torch.from_numpy(xs), torch.tensor([len(s) - 1 for s in seqs])


def _labels(batch: Sequence[Experience]) -> tuple[list[int], list[int], list[float]]:
    """(row, class, weight) for every experience that teaches something.

    A known ``target`` is a supervised label (weight 1). Otherwise an ``action`` with a
    ``reward`` is reward-weighted regression towards that action (weight = reward, clipped by
    1/propensity ≤ 10): good outcomes pull the policy towards what was done, bad ones do not."""
    rows, ys, ws = [], [], []
    for i, e in enumerate(batch):
        if e.target is not None:
            rows.append(i)
            ys.append(int(e.target))
            ws.append(1.0)
        elif e.action is not None and e.reward is not None and e.reward > 0:
            rows.append(i)
            ys.append(int(e.action))
            ws.append(float(e.reward) * min(1.0 / max(e.propensity, 1e-3), 10.0))
    return rows, ys, ws


def _n_models(model: nn.Module) -> int:
    cfg: Any = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_models"):
        raise InvalidInputError("router_loss needs a model with cfg.n_models (router.training.FastGRNNTorch)")
    return int(cfg.n_models)


def router_loss(model: nn.Module, batch: Sequence[Experience]) -> torch.Tensor:
    """Loss of a FastGRNN router (``router.training.FastGRNNTorch`` or any module mapping
    (B, T, D) → (B, T, n_out) whose first ``model.cfg.n_models`` outputs are model logits)."""
    rows, ys, ws = _labels(batch)
    if not rows:
        return torch.zeros((), requires_grad=True)
    sub = [batch[i] for i in rows]
    xs, last = _stack(sub)
    out = model(xs)[torch.arange(len(sub)), last]  # (B, n_out)
    M = _n_models(model)
    w = torch.tensor(ws)
    return (F.cross_entropy(out[:, :M], torch.tensor(ys), reduction="none") * w).sum() / w.sum()


@torch.no_grad()
def router_predict(model: nn.Module, xs: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Model choice for single-step features xs (N, D) → (N,)."""
    out = model(torch.from_numpy(np.asarray(xs, np.float32))[:, None, :])[:, 0]  # (N, n_out)
    return out[:, : _n_models(model)].argmax(1).numpy()


# --------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------


class Plugin:
    """Hooks into the one loop. ``rollback``: whether a checkpoint rollback restores its state."""

    rollback = False

    def after_observe(self, learner: OnlineLearner, exp: Experience) -> None: ...

    def before_update(self, learner: OnlineLearner, batch: list[Experience]) -> list[Experience]:
        return batch

    def penalty(self, learner: OnlineLearner) -> torch.Tensor | None:
        return None

    def after_update(self, learner: OnlineLearner, batch: list[Experience], loss: float) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ReplayPlugin(Plugin):
    """Mixes ``replay_size`` uniform samples of the whole stream into every update."""

    def __init__(self, capacity: int = 2000, replay_size: int = 16, seed: int = 0):
        self.buffer: ReservoirBuffer[Experience] = ReservoirBuffer(capacity, seed)
        self.replay_size = replay_size
        self._rng = np.random.default_rng(seed + 1)

    def before_update(self, learner: OnlineLearner, batch: list[Experience]) -> list[Experience]:
        old = self.buffer.sample(self.replay_size, self._rng)  # drawn before this batch joins
        for e in batch:
            self.buffer.add(e)
        return batch + old


class EWCPlugin(Plugin):
    """Online EWC. Every ``every`` updates the Fisher is estimated on the last ``window``
    new experiences and folded in; the penalty applies from the first consolidation on.
    Put it before ``ReplayPlugin`` so its window holds new experiences only."""

    rollback = True

    def __init__(self, cfg: EWCConfig | None = None, every: int = 500, window: int | None = None):
        self.ewc = EWC(cfg)
        self.every = every
        self.recent: deque[Experience] = deque(maxlen=window or self.ewc.cfg.fisher_samples)

    def before_update(self, learner: OnlineLearner, batch: list[Experience]) -> list[Experience]:
        self.recent.extend(batch)  # placed before ReplayPlugin, so these are the new experiences
        return batch

    def penalty(self, learner: OnlineLearner) -> torch.Tensor | None:
        return self.ewc.penalty(learner.model)

    def after_update(self, learner: OnlineLearner, batch: list[Experience], loss: float) -> None:
        if self.every > 0 and learner.step % self.every == 0 and self.recent:
            self.consolidate(learner)

    def consolidate(self, learner: OnlineLearner) -> None:
        self.ewc.consolidate(learner.model, list(self.recent), learner.loss_fn)

    def state_dict(self) -> dict[str, Any]:
        return self.ewc.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ewc.load_state_dict(state)


class CurriculumPlugin(Plugin):
    """Easy first: items above the current competence wait (up to ``max_held``) until admitted."""

    def __init__(self, curriculum: Curriculum | None = None, max_held: int = 512):
        self.curriculum = curriculum or Curriculum(key=Experience.level)
        self.held: deque[Experience] = deque()
        self.max_held = max_held

    def before_update(self, learner: OnlineLearner, batch: list[Experience]) -> list[Experience]:
        pool = list(self.held) + batch
        admitted = self.curriculum.admissible(pool, learner.step)
        ids = {id(e) for e in admitted}
        self.held = deque(e for e in pool if id(e) not in ids)
        while len(self.held) > self.max_held:  # never starve: the oldest held item trains now
            admitted.append(self.held.popleft())
        return admitted


class CheckpointPlugin(Plugin):
    """Every ``every`` updates: evaluate; keep the best snapshot; roll back when the metric falls
    more than ``tolerance`` below the best. Snapshots live in memory (and in ``directory``)."""

    def __init__(self, evaluate: Callable[[nn.Module], float], every: int = 200, tolerance: float = 0.02,
                 directory: str | Path | None = None):
        self.evaluate = evaluate
        self.every = every
        self.tolerance = tolerance
        self.directory = Path(directory) if directory else None
        self.best: float | None = None
        self.best_state: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []  # {step, metric, action}
        self.rollbacks = 0

    def after_update(self, learner: OnlineLearner, batch: list[Experience], loss: float) -> None:
        if self.every > 0 and learner.step % self.every == 0:
            self.check(learner)

    def check(self, learner: OnlineLearner) -> str:
        metric = float(self.evaluate(learner.model))
        if self.best is None or metric >= self.best:
            self.best, self.best_state = metric, learner.state_dict()
            action = "checkpoint"
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                torch.save(self.best_state, self.directory / "best.pt")
        elif metric < self.best - self.tolerance and self.best_state is not None:
            learner.load_state_dict(self.best_state)
            self.rollbacks += 1
            action = "rollback"
            log.warning("learner: eval %.4f fell below best %.4f − %.4f at step %d; rolled back",
                        metric, self.best, self.tolerance, learner.step)
        else:
            action = "keep"
        self.history.append({"step": learner.step, "metric": metric, "action": action})
        return action


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


@dataclass
class LearnerConfig:
    batch_size: int = 16  # new experiences per update cycle
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    seed: int = 0


class OnlineLearner:
    """One training loop over a stream of experiences; strategies are ``plugins`` (order matters:
    curriculum before replay, so replayed items are not held back)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn = router_loss, plugins: Sequence[Plugin] = (),
                 cfg: LearnerConfig | None = None, after_step: Callable[[nn.Module], None] | None = None):
        self.cfg = cfg or LearnerConfig()
        if self.cfg.batch_size < 1:
            raise InvalidInputError(f"learner batch_size must be >= 1, got {self.cfg.batch_size}")
        torch.manual_seed(self.cfg.seed)
        self.model = model
        self.loss_fn = loss_fn
        self.plugins = list(plugins)
        self.after_step = after_step  # e.g. FastGRNNTorch.apply_masks to keep a sparse support
        self.opt = torch.optim.Adam(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.pending: list[Experience] = []
        self.step = 0  # update cycles run
        self.observed = 0
        self.last_loss = float("nan")
        self._lock = threading.RLock()

    def plugin(self, kind: type[Any]) -> Any:
        return next((p for p in self.plugins if isinstance(p, kind)), None)

    def observe(self, exp: Experience) -> dict[str, float] | None:
        """Queue one experience; runs an update cycle when a batch is full."""
        if not isinstance(exp, Experience):
            raise InvalidInputError(f"learner.observe takes an Experience, got {type(exp).__name__}")
        x = np.asarray(exp.x)
        if x.size == 0 or x.ndim > 2 or not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise InvalidInputError(f"experience features must be a finite (D,) or (T, D) array, got shape {x.shape}")
        with self._lock:
            self.observed += 1
            self.pending.append(exp)
            for p in self.plugins:
                p.after_observe(self, exp)
            if len(self.pending) >= self.cfg.batch_size:
                batch, self.pending = self.pending, []
                return self.update(batch)
            return None

    def flush(self) -> dict[str, float] | None:
        """Train on whatever is pending (shutdown)."""
        with self._lock:
            if not self.pending:
                return None
            batch, self.pending = self.pending, []
            return self.update(batch)

    def update(self, batch: list[Experience]) -> dict[str, float]:
        """One update cycle over ``batch`` (plus whatever the plugins add)."""
        with self._lock:
            for p in self.plugins:
                batch = p.before_update(self, batch)
            self.model.train()
            loss = self.loss_fn(self.model, batch)
            for p in self.plugins:
                pen = p.penalty(self)
                if pen is not None:
                    loss = loss + pen
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            self.opt.step()
            if self.after_step is not None:
                self.after_step(self.model)
            self.step += 1
            self.last_loss = float(loss.detach())
            for p in self.plugins:
                p.after_update(self, batch, self.last_loss)
            return {"step": self.step, "loss": self.last_loss, "batch": len(batch)}

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser and the rollback-able plugin states (deep copies)."""
        with self._lock:
            return copy.deepcopy({
                "model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "plugins": {i: p.state_dict() for i, p in enumerate(self.plugins) if p.rollback},
            })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore model, optimiser and rollback-able plugins; the step counter keeps counting."""
        with self._lock:
            st = copy.deepcopy(state)
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["opt"])
            for i, ps in st["plugins"].items():
                self.plugins[int(i)].load_state_dict(ps)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), p)
        return p

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(Path(path), weights_only=False))


# --------------------------------------------------------------------------------------
# off the request path
# --------------------------------------------------------------------------------------

_STOP = object()


class BackgroundWorker:
    """Runs ``handler(item)`` on one thread; bounded queue; drop-oldest when full.

    ``submit`` never blocks the caller. ``close`` processes everything already queued, then
    calls ``on_close`` (e.g. ``learner.flush``) and joins the thread. Handler errors are
    logged and counted, never raised into the request path."""

    def __init__(self, handler: Callable[[Any], Any], maxsize: int = 1024,
                 on_close: Callable[[], Any] | None = None, name: str = "ruvllm-learner"):
        if maxsize < 1:
            raise InvalidInputError(f"background queue size must be >= 1, got {maxsize}")
        self.handler = handler
        self.on_close = on_close
        self.q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.submitted = self.processed = self.dropped = self.errors = 0
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Queue ``item``; returns False when the worker is closed. When full, the oldest item goes."""
        with self._lock:
            if self._closed:
                return False
            self.submitted += 1
            while True:
                try:
                    self.q.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        self.q.get_nowait()
                        self.q.task_done()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _run(self) -> None:
        while True:
            item = self.q.get()
            try:
                if item is _STOP:
                    return
                self.handler(item)
                self.processed += 1
            except Exception:  # background work must never take the service down
                self.errors += 1
                log.exception("background learner: handler failed")
            finally:
                self.q.task_done()

    def join(self) -> None:
        """Wait until everything queued so far is processed."""
        self.q.join()

    def close(self, timeout: float | None = 30.0) -> None:
        """Drain the queue, run ``on_close``, stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.q.put(_STOP)  # after everything already queued
        self._thread.join(timeout)
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception:
                self.errors += 1
                log.exception("background learner: flush on close failed")

    def stats(self) -> dict[str, int]:
        return {"submitted": self.submitted, "processed": self.processed, "dropped": self.dropped,
                "errors": self.errors, "queued": self.q.qsize()}


def background_learner(learner: OnlineLearner, maxsize: int = 1024) -> BackgroundWorker:
    """A worker that feeds ``learner.observe`` and flushes the learner on close."""
    return BackgroundWorker(learner.observe, maxsize=maxsize, on_close=learner.flush)
