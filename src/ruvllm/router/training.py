"""Training the FastGRNN router: the torch twin, phase 2 (supervised), compression, phase 3 (online).

Phase 1 (oracle labels) is ``oracle.py``. Here:

- ``FastGRNNTorch``: the same cell and heads as ``fastgrnn.FastGRNNParams`` (same parameter names),
  in PyTorch, for autograd. ``to_params`` / ``from_params`` hand models across.
- ``router_loss``: CE(model) + CE(context) + α·SmoothL1(temperature) + β·SmoothL1(top-p)
  + γ·BCE(confidence, [argmax model = oracle model]) so the confidence head is calibrated to the
  probability that the chosen model is the oracle's. CE(model) is optionally weighted by the
  oracle's utility gap, so near-ties cost less than clear mistakes.
- ``compress``: EdgeML's three stages: dense → iterative hard thresholding of W1, W2, U1, U2 to a
  target sparsity → retrain on the fixed support; then int8 (per-tensor scale). Each stage's
  size in KB and held-out accuracy goes in the report.
- ``OnlineRefiner``: phase 3. ε-greedy exploration over models with logged propensities,
  inverse-propensity-weighted policy-gradient updates, and an EWC penalty (diagonal Fisher
  of the supervised task) that keeps the router from forgetting what phase 2 taught it.
- ``train_from_oracle(labelled_jsonl, out_dir, config)``: the one reproducible entry point
  behind ``ruvllm router train``.

All randomness is seeded; torch runs with one thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from ruvllm.errors import InvalidInputError
from ruvllm.router.base import CONTEXT_BINS
from ruvllm.router.fastgrnn import (
    SPARSE_PARAMS,
    FastGRNNConfig,
    FastGRNNParams,
    param_shapes,
    prior_input,
    quantized,
)
from ruvllm.router.features import DIM, Q_TYPE, SLICES, Normalizer
from ruvllm.router.history import PatternHistory, with_history

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


@dataclass
class RouterDataset:
    """Rows are queries in session order; ``session`` groups them (a row's turn = its order)."""

    x: F32  # (N, D) normalised features
    session: I64  # (N,)
    y_model: I64  # (N,) oracle model index
    y_ctx: I64  # (N,) oracle context-bin index
    y_temp: F32  # (N,) in [0, 2]
    y_top_p: F32  # (N,) in [0, 1]
    utility: F32 | None = None  # (N, M, C) oracle utilities, for regret weighting and evaluation
    symbol: I64 | None = None  # (N,) the asked symbol's index, when the records say it (CV by symbol)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, rows: npt.ArrayLike) -> RouterDataset:
        r = np.asarray(rows, dtype=np.int64)
        return RouterDataset(
            self.x[r], self.session[r], self.y_model[r], self.y_ctx[r], self.y_temp[r], self.y_top_p[r],
            None if self.utility is None else self.utility[r], None if self.symbol is None else self.symbol[r],
        )

    def session_rows(self) -> list[I64]:
        order: dict[int, list[int]] = {}
        for i, s in enumerate(self.session.tolist()):
            order.setdefault(int(s), []).append(i)
        return [np.asarray(v, dtype=np.int64) for v in order.values()]

    def padded(self) -> tuple[F32, npt.NDArray[np.bool_], I64]:
        """(S, T, D) features, (S, T) mask, (S, T) row index (−1 = padding)."""
        sess = self.session_rows()
        S, T = len(sess), max(len(s) for s in sess)
        xs = np.zeros((S, T, self.x.shape[1]), dtype=np.float32)
        idx = np.full((S, T), -1, dtype=np.int64)
        for i, rows in enumerate(sess):
            xs[i, : len(rows)] = self.x[rows]
            idx[i, : len(rows)] = rows
        return xs, idx >= 0, idx


def predict(params: FastGRNNParams, data: RouterDataset) -> F32:
    """Raw head outputs (N, n_out) for every row, each session run through the recurrence."""
    xs, mask, idx = data.padded()
    out = params.forward_batch(xs)  # (S, T, n_out)
    res = np.zeros((len(data), params.config.n_out), dtype=np.float32)
    res[idx[mask]] = out[mask]
    return res


def evaluate(params: FastGRNNParams, data: RouterDataset) -> dict[str, float]:
    out = predict(params, data)
    M, C = params.config.n_models, len(params.config.context_bins)
    pm, pc = out[:, :M].argmax(1), out[:, M : M + C].argmax(1)
    res = {
        "model_accuracy": float((pm == data.y_model).mean()),
        "context_accuracy": float((pc == data.y_ctx).mean()),
        "joint_accuracy": float(((pm == data.y_model) & (pc == data.y_ctx)).mean()),
    }
    if data.utility is not None:
        chosen = data.utility[np.arange(len(data)), pm, pc]
        res["utility_regret"] = float((data.utility.reshape(len(data), -1).max(1) - chosen).mean())
    return res


# --------------------------------------------------------------------------------------
# the torch twin of fastgrnn.FastGRNNParams
# --------------------------------------------------------------------------------------


class FastGRNNTorch(nn.Module):
    """FastGRNN cell + heads; parameter names match ``fastgrnn.param_shapes``."""

    W1: nn.Parameter  # (H, rw)
    W2: nn.Parameter  # (D, rw)
    U1: nn.Parameter  # (H, ru)
    U2: nn.Parameter  # (H, ru)
    b_z: nn.Parameter  # (H,)
    b_h: nn.Parameter  # (H,)
    zeta: nn.Parameter  # (1,)
    nu: nn.Parameter  # (1,)
    head_w: nn.Parameter  # (n_out, H)
    head_b: nn.Parameter  # (n_out,)
    prior_w: nn.Parameter  # (n_out, prior width), only with a prior slice

    def __init__(self, cfg: FastGRNNConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        init = FastGRNNParams.init(cfg, seed=seed)
        for name in param_shapes(cfg):
            setattr(self, name, nn.Parameter(torch.from_numpy(init.arrays[name].copy())))
        self.masks: dict[str, torch.Tensor] = {}  # fixed sparse support (stage 3)
        if cfg.prior_width and cfg.prior_kind == "table":
            self.prior_w.requires_grad_(False)  # a table prior is set from the data and held fixed

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """xs (B, T, D) → raw head outputs (B, T, n_out)."""
        B, T, _ = xs.shape
        W = self.W1 @ self.W2.T  # (H, D)
        U = self.U1 @ self.U2.T  # (H, H)
        zeta, nu = torch.sigmoid(self.zeta), torch.sigmoid(self.nu)  # (1,), (1,)
        wx = xs @ W.T  # (B, T, H): the input projection for every step at once
        h = xs.new_zeros(B, self.cfg.hidden)  # (B, H)
        hs = []
        for t in range(T):
            pre = wx[:, t] + h @ U.T  # (B, H)
            z = torch.sigmoid(pre + self.b_z)
            h_tilde = torch.tanh(pre + self.b_h)
            h = (zeta * (1.0 - z) + nu) * h_tilde + z * h
            hs.append(h)
        hseq = torch.stack(hs, dim=1)  # (B, T, H)
        out = hseq @ self.head_w.T + self.head_b  # (B, T, n_out)
        if self.cfg.prior_width:
            lo, hi = self.cfg.prior_slice
            s = xs[..., lo:hi]
            if self.cfg.prior_kind == "table":  # as fastgrnn.prior_input: the one-hot of the query's type
                hot = F.one_hot(s.argmax(dim=-1), hi - lo).to(s.dtype)
                s = hot * (s.amax(dim=-1, keepdim=True) > s.amin(dim=-1, keepdim=True)).to(s.dtype)
            out = out + s @ self.prior_w.T
        return out

    def apply_masks(self) -> None:
        with torch.no_grad():
            for name, m in self.masks.items():
                getattr(self, name).mul_(m)

    def to_params(self, normalizer: Normalizer | None = None, meta: dict[str, Any] | None = None) -> FastGRNNParams:
        arrays = {n: p.detach().cpu().numpy().astype(np.float32).copy() for n, p in self.named_parameters()}
        return FastGRNNParams(self.cfg, arrays, normalizer or Normalizer.identity(), dict(meta or {}))

    @classmethod
    def from_params(cls, params: FastGRNNParams) -> FastGRNNTorch:
        m = cls(params.config)
        with torch.no_grad():
            for name, arr in params.arrays.items():
                getattr(m, name).copy_(torch.from_numpy(arr.copy()))
        return m


# --------------------------------------------------------------------------------------
# phase 2: supervised training
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    hidden: int = 32
    w_rank: int = 16
    u_rank: int = 8
    epochs: int = 60
    lr: float = 1e-2
    weight_decay: float = 1e-2  # L2; 1e-5 overfit the synthetic oracle set (train 0.94 vs held-out 0.78)
    batch_sessions: int = 32
    alpha: float = 1.0  # SmoothL1(temperature)
    beta: float = 1.0  # SmoothL1(top_p)
    gamma: float = 0.5  # BCE(confidence)
    context_weight: float = 1.0  # CE(context)
    regret_weighting: bool = True  # weight CE(model) by the oracle's utility gap (hard labels only)
    # > 0: CE(model) against softmax(best utility per model / τ) instead of the one-hot oracle label,
    # so a near-tie teaches "either" and a clear win teaches the winner (τ in utility units)
    label_temperature: float = 0.0
    # > 1: choose weight_decay, epochs and label_temperature from CV_GRID by this many folds of the
    # training sessions (lowest mean utility regret on the left-out folds) before training
    cv_folds: int = 0
    # what a CV fold holds whole: "session" (a fold's patterns may have other wordings in the training
    # folds, so CV scores seen-pattern routing) or "symbol" (every question on a symbol in one fold,
    # so CV scores routing for symbols never trained on, the held-out split's case; a session whose
    # questions ask about several symbols is split across folds)
    cv_group: str = "session"
    # how CV picks: "min" (the lowest CV utility regret) or "1se" (the strongest weight decay whose
    # CV regret is within one standard error, over folds, of the lowest: the usual guard when CV
    # cannot tell the points apart)
    cv_rule: str = "min"
    # with cv_folds > 1: the fields CV keeps as given ("epochs", "label_temperature") instead of
    # choosing them from CV_GRID
    cv_keep: tuple[str, ...] = ()
    # > 0: each named feature slice but the query type is blanked (set to 0, the training mean after
    # normalisation) with this probability per training row and epoch, so the router cannot lean on
    # one group of features that happens to identify the training questions
    feature_dropout: float = 0.0
    # the heads also read the query-type slice directly (FastGRNNConfig.prior_slice): with strong
    # weight decay the router becomes a per-type table rather than a constant (128-d inputs only)
    type_prior: bool = False
    # > 0 (implies type_prior): the prior is a fixed table, per query type the training rows' mean
    # utility of each model (and of each context size, best model) relative to the type's best, over
    # this temperature (utility units per logit); the cell learns what the type does not say. A
    # strongly regularised router then makes ``baselines.QueryTypeRouter``'s choices, not the
    # per-type majority of argmax labels the learnt prior drifts to. 0: the learnt linear prior.
    utility_prior: float = 0.0
    # fill the features' historical-accuracy slice with each question's pattern history (router/
    # history.py): leave-one-out on the training rows, none for this share of them; the table is
    # saved beside the checkpoint and read at serving time
    history: bool = False
    history_dropout: float = 0.3
    target_sparsity: float = 0.5  # share of zeros in W1, W2, U1, U2 after stage 2
    iht_rounds: int = 4
    iht_epochs: int = 8
    retrain_epochs: int = 25
    seed: int = 0


@dataclass
class _Batch:
    xs: torch.Tensor  # (S, T, D)
    mask: torch.Tensor  # (S, T) bool
    y_model: torch.Tensor  # (S, T)
    y_ctx: torch.Tensor
    y_temp: torch.Tensor
    y_top_p: torch.Tensor
    weight: torch.Tensor  # (S, T) per-row CE(model) weight
    y_soft: torch.Tensor  # (S, T, M) CE(model) target distribution (one-hot for hard labels)


def _model_weights(data: RouterDataset, on: bool) -> F32:
    if not on or data.utility is None:
        return np.ones(len(data), dtype=np.float32)
    best_per_model = data.utility.max(axis=2)  # (N, M)
    best = best_per_model[np.arange(len(data)), data.y_model]
    other = best_per_model.copy()
    other[np.arange(len(data)), data.y_model] = -np.inf
    gap = best - other.max(axis=1)  # (N,) ≥ 0
    med = float(np.median(gap[gap > 0])) if np.any(gap > 0) else 1.0
    return np.clip(gap / max(med, 1e-6), 0.25, 4.0).astype(np.float32)


def soft_targets(data: RouterDataset, temperature: float, n_models: int) -> F32:
    """(N, M) CE(model) targets: one-hot oracle labels (τ = 0 or no utilities), else
    softmax over each model's best utility (across context sizes) divided by τ."""
    if temperature <= 0 or data.utility is None:
        return np.eye(n_models, dtype=np.float32)[data.y_model]
    z = data.utility.max(axis=2).astype(np.float64) / temperature  # (N, M)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def _train_batch(data: RouterDataset, tc: TrainConfig, n_models: int) -> _Batch:
    soft = soft_targets(data, tc.label_temperature, n_models)
    return _batches(data, _model_weights(data, tc.regret_weighting and tc.label_temperature <= 0), soft)


def _batches(data: RouterDataset, weights: F32, soft: F32) -> _Batch:
    xs, mask, idx = data.padded()
    safe = np.where(idx >= 0, idx, 0)

    def g(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.where(mask, a[safe], 0)

    return _Batch(
        torch.from_numpy(xs), torch.from_numpy(mask),
        torch.from_numpy(g(data.y_model).astype(np.int64)), torch.from_numpy(g(data.y_ctx).astype(np.int64)),
        torch.from_numpy(g(data.y_temp).astype(np.float32)), torch.from_numpy(g(data.y_top_p).astype(np.float32)),
        torch.from_numpy(g(weights).astype(np.float32)),
        torch.from_numpy(np.where(mask[..., None], soft[safe], 0).astype(np.float32)),
    )


def _take(b: _Batch, rows: torch.Tensor) -> _Batch:
    return _Batch(*(getattr(b, f)[rows] for f in ("xs", "mask", "y_model", "y_ctx", "y_temp", "y_top_p", "weight",
                                                   "y_soft")))


def router_loss(
    out: torch.Tensor, b: _Batch, cfg: FastGRNNConfig, tc: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """out (S, T, n_out) against the oracle labels of the unpadded steps."""
    M, C = cfg.n_models, len(cfg.context_bins)
    o = out[b.mask]  # (n, n_out)
    ym, yc = b.y_model[b.mask], b.y_ctx[b.mask]
    w = b.weight[b.mask]
    ce_m = (F.cross_entropy(o[:, :M], b.y_soft[b.mask], reduction="none") * w).sum() / w.sum()
    ce_c = F.cross_entropy(o[:, M : M + C], yc)
    temp = 2.0 * torch.sigmoid(o[:, M + C])
    top_p = torch.sigmoid(o[:, M + C + 1])
    l_t = F.smooth_l1_loss(temp, b.y_temp[b.mask])
    l_p = F.smooth_l1_loss(top_p, b.y_top_p[b.mask])
    correct = (o[:, :M].argmax(1) == ym).float().detach()
    l_c = F.binary_cross_entropy_with_logits(o[:, M + C + 2], correct)
    loss = ce_m + tc.context_weight * ce_c + tc.alpha * l_t + tc.beta * l_p + tc.gamma * l_c
    parts = {"ce_model": ce_m.item(), "ce_context": ce_c.item(), "temp": l_t.item(), "top_p": l_p.item(),
             "confidence": l_c.item()}
    return loss, parts


def dropout_groups(dim: int) -> torch.Tensor:
    """(G, dim) 0/1 rows, one per named feature slice of ``features.SLICES`` that ``feature_dropout``
    may blank: every slice but the query type. Empty when ``dim`` is not the 128-d layout."""
    if dim != DIM:
        return torch.zeros(0, dim)
    rows = []
    for name, sl in SLICES.items():
        if name != "query_type" and sl.stop > sl.start:
            r = torch.zeros(dim)
            r[sl] = 1.0
            rows.append(r)
    return torch.stack(rows)


def _blank_groups(xs: torch.Tensor, groups: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """xs (S, T, D) with each group of ``groups`` zeroed with probability p per row."""
    if p <= 0 or len(groups) == 0:
        return xs
    drop = (torch.rand(*xs.shape[:2], len(groups), generator=gen) < p).float()  # (S, T, G)
    return xs * (1.0 - (drop @ groups).clamp(max=1.0))


def _fit(model: FastGRNNTorch, batch: _Batch, tc: TrainConfig, epochs: int, lr: float, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    groups = dropout_groups(batch.xs.shape[2]) if tc.feature_dropout > 0 else torch.zeros(0)
    S = batch.xs.shape[0]
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(S, generator=gen)
        for start in range(0, S, tc.batch_sessions):
            b = _take(batch, perm[start : start + tc.batch_sessions])
            xs = _blank_groups(b.xs, groups, tc.feature_dropout, gen)
            loss, _ = router_loss(model(xs), b, model.cfg, tc)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.apply_masks()
            last = loss.item()
    return last


def utility_table(data: RouterDataset, cfg: FastGRNNConfig, temperature: float) -> F32:
    """(n_out, 6) the table prior: column t holds, for the training rows of query type t, each
    model's mean utility at its best context size and each context size's at its best model, minus
    the type's best, over ``temperature``; the sampling and confidence rows are 0. A type with no
    training row gets the all-rows mean. Its argmax per column is ``QueryTypeRouter``'s table."""
    assert data.utility is not None
    U = data.utility.astype(np.float64)  # (N, M, C)
    hot = prior_input(cfg, data.x).astype(bool)  # (N, 6): each row's type as the heads read it
    M, C = cfg.n_models, len(cfg.context_bins)
    P = np.zeros((cfg.n_out, cfg.prior_width), np.float32)
    for g in range(cfg.prior_width):
        mean = U[hot[:, g]].mean(axis=0) if hot[:, g].any() else U.mean(axis=0)  # (M, C)
        per_model, per_ctx = mean.max(axis=1), mean.max(axis=0)
        P[:M, g] = (per_model - per_model.max()) / temperature
        P[M : M + C, g] = (per_ctx - per_ctx.max()) / temperature
    return P


def train_dense(data: RouterDataset, models: Sequence[str], tc: TrainConfig,
                context_bins: Sequence[int] = CONTEXT_BINS) -> FastGRNNTorch:
    """Stage 1: the dense FastGRNN on ``data`` (normalised features); ``y_ctx`` indexes ``context_bins``."""
    torch.manual_seed(tc.seed)
    if tc.utility_prior < 0:
        raise InvalidInputError(f"utility_prior is a temperature ≥ 0 (0 = off), got {tc.utility_prior}")
    table = tc.utility_prior > 0
    if table and (data.utility is None or data.x.shape[1] != DIM):
        raise InvalidInputError("utility_prior needs the oracle's utilities and the 128-d layout's query-type "
                                "slice (train with utility_prior = 0 otherwise)")
    prior = (Q_TYPE.start, Q_TYPE.stop) if (tc.type_prior or table) and data.x.shape[1] == DIM else (0, 0)
    cfg = FastGRNNConfig(models=list(models), input_dim=data.x.shape[1], hidden=tc.hidden, w_rank=tc.w_rank,
                         u_rank=tc.u_rank, context_bins=tuple(context_bins), prior_slice=prior,
                         prior_kind="table" if table else "linear")
    model = FastGRNNTorch(cfg, seed=tc.seed)
    if cfg.prior_kind == "table":
        with torch.no_grad():
            model.prior_w.copy_(torch.from_numpy(utility_table(data, cfg, tc.utility_prior)))
    _fit(model, _train_batch(data, tc, len(models)), tc, tc.epochs, tc.lr, tc.seed)
    return model


# (weight_decay, epochs, label_temperature): from the default to much stronger regularisation
CV_GRID: tuple[tuple[float, int, float], ...] = tuple(
    (wd, ep, tau) for wd in (1e-2, 1e-1, 3e-1) for ep in (60, 20) for tau in (0.0, 0.05))


def cv_grid(tc: TrainConfig) -> tuple[tuple[float, int, float], ...]:
    """CV_GRID with the fields of ``tc.cv_keep`` held at ``tc``'s values (duplicates dropped)."""
    unknown = set(tc.cv_keep) - {"epochs", "label_temperature"}
    if unknown:
        raise InvalidInputError(f"cv_keep takes 'epochs' and 'label_temperature', got {sorted(unknown)}")
    return tuple(dict.fromkeys(
        (wd, tc.epochs if "epochs" in tc.cv_keep else ep, tc.label_temperature if "label_temperature" in tc.cv_keep
         else tau) for wd, ep, tau in CV_GRID))


def cv_folds(data: RouterDataset, tc: TrainConfig) -> tuple[I64, int]:
    """(each row's CV fold, the number of folds): ``tc.cv_folds`` seeded folds of whole sessions, or of
    whole symbols with ``tc.cv_group = "symbol"``."""
    if tc.cv_group not in ("session", "symbol"):
        raise InvalidInputError(f"cv_group must be 'session' or 'symbol', got {tc.cv_group!r}")
    if tc.cv_group == "symbol" and data.symbol is None:
        raise InvalidInputError("CV by symbol needs records whose ids name their symbol (<symbol>:<type>:<n>)")
    unit = data.symbol if tc.cv_group == "symbol" and data.symbol is not None else data.session
    units = np.unique(unit)
    k = min(tc.cv_folds, len(units))
    if k < 2 or data.utility is None:
        raise InvalidInputError(f"cross-validation needs ≥ 2 folds of {tc.cv_group}s and utilities; got {k} folds "
                                "(train without it: cv_folds = 0, `--cv-folds 0`)")
    fold_of = dict(zip(np.random.default_rng(tc.seed).permutation(units).tolist(),
                       np.arange(len(units)) % k, strict=True))
    return np.array([fold_of[int(s)] for s in unit], dtype=np.int64), k


def select_by_cv(data: RouterDataset, models: Sequence[str], tc: TrainConfig,
                 context_bins: Sequence[int] = CONTEXT_BINS, grid: Sequence[tuple[float, int, float]] = CV_GRID,
                 ) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """Model selection on the training split only: ``tc.cv_folds`` folds of whole sessions, or of whole
    symbols with ``tc.cv_group = "symbol"`` (seeded); each grid point trains the dense router on the
    other folds and is scored by its utility regret on the left-out one, with its standard error over
    the folds. Returns (``tc`` with the chosen point, one row per point). The chosen point has the
    lowest CV regret (ties keep the earlier point, so the default wins unless something beats it),
    or with ``tc.cv_rule = "1se"`` the strongest weight decay within one standard error of that."""
    if tc.cv_rule not in ("min", "1se"):
        raise InvalidInputError(f"cv_rule must be 'min' or '1se', got {tc.cv_rule!r}")
    fold, k = cv_folds(data, tc)
    rows: list[dict[str, Any]] = []
    for wd, epochs, tau in grid:
        cfg = replace(tc, weight_decay=wd, epochs=epochs, label_temperature=tau, cv_folds=0)
        regrets, accs, sizes = [], [], []  # per left-out fold
        for f in range(k):
            val = data.subset(np.flatnonzero(fold == f))
            ev = evaluate(train_dense(data.subset(np.flatnonzero(fold != f)), models, cfg, context_bins).to_params(),
                          val)
            regrets.append(ev["utility_regret"])
            accs.append(ev["model_accuracy"])
            sizes.append(len(val))
        rows.append({"weight_decay": wd, "epochs": epochs, "label_temperature": tau,
                     "cv_utility_regret": float(np.average(regrets, weights=sizes)),  # pooled over the rows
                     "cv_utility_regret_se": float(np.std(regrets, ddof=1) / np.sqrt(k)),
                     "cv_model_accuracy": float(np.average(accs, weights=sizes))})
    best = min(range(len(rows)), key=lambda i: (round(rows[i]["cv_utility_regret"], 6), i))
    if tc.cv_rule == "1se":  # the most regularised point within one standard error of the best
        bar = rows[best]["cv_utility_regret"] + rows[best]["cv_utility_regret_se"]
        near = [i for i, r in enumerate(rows) if r["cv_utility_regret"] <= bar + 1e-12]
        best = max(near, key=lambda i: (rows[i]["weight_decay"], -rows[i]["cv_utility_regret"], -i))
    b = rows[best]
    return replace(tc, weight_decay=b["weight_decay"], epochs=b["epochs"], label_temperature=b["label_temperature"]
                   ), rows


def hard_threshold(model: FastGRNNTorch, sparsity: float) -> None:
    """Keep the largest-magnitude (1 − sparsity) share of each sparse factor; fix that support."""
    with torch.no_grad():
        for name in SPARSE_PARAMS:
            p = getattr(model, name)
            k = round(p.numel() * (1.0 - sparsity))
            if k >= p.numel():
                model.masks[name] = torch.ones_like(p)
                continue
            thresh = p.abs().flatten().kthvalue(p.numel() - k).values if k > 0 else p.abs().max() + 1
            mask = (p.abs() > thresh).float()
            model.masks[name] = mask
            p.mul_(mask)


@dataclass
class StageReport:
    stage: str
    size_kb: float
    sparsity: float
    model_accuracy: float
    context_accuracy: float
    accuracy_lost: float  # vs the dense model, on the evaluation split
    utility_regret: float | None = None


def compress(
    model: FastGRNNTorch, train: RouterDataset, evalset: RouterDataset, tc: TrainConfig,
    normalizer: Normalizer | None = None,
) -> tuple[FastGRNNParams, FastGRNNParams, list[StageReport]]:
    """Stages 2 and 3 and int8 on a trained dense ``model`` (modified in place).
    Returns (dense params, compressed int8 params, per-stage report)."""
    norm = normalizer or Normalizer.identity()
    dense = model.to_params(norm, {"stage": "dense"})
    reports: list[StageReport] = []

    def record(stage: str, p: FastGRNNParams, bits: int) -> None:
        ev = evaluate(p, evalset)
        base = reports[0].model_accuracy if reports else ev["model_accuracy"]
        reports.append(StageReport(stage, round(p.size_bytes(bits) / 1024, 3), round(p.sparsity(), 4),
                                   ev["model_accuracy"], ev["context_accuracy"],
                                   round(base - ev["model_accuracy"], 4), ev.get("utility_regret")))

    record("dense fp32", dense, 32)
    batch = _train_batch(train, tc, model.cfg.n_models)
    for r in range(1, tc.iht_rounds + 1):  # stage 2: iterative hard thresholding
        hard_threshold(model, tc.target_sparsity * r / tc.iht_rounds)
        if r < tc.iht_rounds:
            model.masks = {}  # IHT: the support may change between rounds
            _fit(model, batch, tc, tc.iht_epochs, tc.lr * 0.5, tc.seed + r)
    record("sparse (hard-thresholded) fp32", model.to_params(norm), 32)
    _fit(model, batch, tc, tc.retrain_epochs, tc.lr * 0.3, tc.seed + 100)  # stage 3: fixed support
    sparse = model.to_params(norm, {"stage": "sparse"})
    record("sparse retrained fp32", sparse, 32)
    q = quantized(sparse)
    q.meta.update({"stage": "sparse+int8", "sparsity": sparse.sparsity()})
    record("sparse retrained int8", q, 8)
    return dense, q, reports


# --------------------------------------------------------------------------------------
# phase 3: online refinement (ε-greedy, importance weights, EWC)
# --------------------------------------------------------------------------------------


def diag_fisher(model: FastGRNNTorch, data: RouterDataset, max_sessions: int = 256) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of the model-choice log-likelihood, per session, scaled to mean 1."""
    batch = _batches(data, np.ones(len(data), np.float32), soft_targets(data, 0.0, model.cfg.n_models))
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    S = min(batch.xs.shape[0], max_sessions)
    M = model.cfg.n_models
    for s in range(S):
        b = _take(batch, torch.tensor([s]))
        out = model(b.xs)[b.mask]  # (t, n_out)
        nll = F.cross_entropy(out[:, :M], b.y_model[b.mask], reduction="sum")
        model.zero_grad()
        nll.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 / S
    total = sum(float(f.sum()) for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    mean = total / max(count, 1)
    return {n: f / mean if mean > 0 else f for n, f in fisher.items()}


@dataclass
class OnlineConfig:
    epsilon: float = 0.1  # exploration rate of ε-greedy
    lr: float = 3e-3
    ewc_lambda: float = 10.0  # 0 turns EWC off
    steps_per_update: int = 5
    max_importance_weight: float = 10.0  # clip on 1/propensity
    seed: int = 0


@dataclass
class OnlineEvent:
    xs: F32  # (T, D) the session's features up to and including this query
    action: int  # model index that answered
    propensity: float  # probability the behaviour policy gave that action
    reward: float  # observed utility (e.g. judged quality − λ·latency − μ·cost)


class OnlineRefiner:
    """Phase 3: explore, log, and refine a trained router without forgetting phase 2."""

    def __init__(self, params: FastGRNNParams, cfg: OnlineConfig | None = None,
                 fisher_data: RouterDataset | None = None):
        self.cfg = cfg or OnlineConfig()
        torch.manual_seed(self.cfg.seed)
        self.normalizer = params.normalizer
        self.model = FastGRNNTorch.from_params(params)
        for name in SPARSE_PARAMS:  # keep a compressed model's support
            p = getattr(self.model, name)
            if bool((p == 0).any()):
                self.model.masks[name] = (p != 0).float()
        self.anchor = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.fisher = (diag_fisher(self.model, fisher_data) if fisher_data is not None
                       else {n: torch.ones_like(p) for n, p in self.model.named_parameters()})
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        self.rng = np.random.default_rng(self.cfg.seed)
        self.buffer: list[OnlineEvent] = []
        self.baseline = 0.0
        self.n_seen = 0

    def choose(self, model_probs: npt.ArrayLike) -> tuple[int, float]:
        """ε-greedy over the router's model probabilities → (action, its propensity)."""
        p = np.asarray(model_probs, dtype=np.float64)
        M, greedy = len(p), int(np.argmax(p))
        a = int(self.rng.integers(M)) if self.rng.random() < self.cfg.epsilon else greedy
        prop = (1.0 - self.cfg.epsilon) * (a == greedy) + self.cfg.epsilon / M
        return a, float(prop)

    def observe(self, event: OnlineEvent) -> None:
        if not 0.0 < event.propensity <= 1.0:
            raise InvalidInputError(f"propensity must be in (0, 1], got {event.propensity}")
        self.buffer.append(event)
        self.n_seen += 1
        self.baseline += (event.reward - self.baseline) / self.n_seen  # running mean reward

    def ewc_penalty(self) -> torch.Tensor:
        pen = torch.zeros(())
        for n, p in self.model.named_parameters():
            pen = pen + (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
        return pen

    def update(self) -> dict[str, float]:
        """A few IPS policy-gradient steps on the buffered events (+ EWC); clears the buffer."""
        if not self.buffer:
            return {"events": 0}
        M = self.model.cfg.n_models
        T = max(len(e.xs) for e in self.buffer)
        xs = np.zeros((len(self.buffer), T, self.buffer[0].xs.shape[1]), dtype=np.float32)
        last = np.array([len(e.xs) - 1 for e in self.buffer])
        for i, e in enumerate(self.buffer):
            xs[i, : len(e.xs)] = e.xs
        x_t = torch.from_numpy(xs)
        acts = torch.tensor([e.action for e in self.buffer])
        w = torch.tensor([min(1.0 / e.propensity, self.cfg.max_importance_weight) for e in self.buffer])
        adv = torch.tensor([e.reward - self.baseline for e in self.buffer], dtype=torch.float32)
        rows = torch.arange(len(self.buffer))
        loss_v = 0.0
        for _ in range(self.cfg.steps_per_update):
            out = self.model(x_t)[rows, torch.from_numpy(last)]  # (E, n_out)
            logp = F.log_softmax(out[:, :M], dim=1)[rows, acts]  # (E,)
            loss = -(w * adv * logp).mean() + self.cfg.ewc_lambda * self.ewc_penalty()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.model.apply_masks()
            loss_v = loss.item()
        n = len(self.buffer)
        self.buffer.clear()
        return {"events": n, "loss": loss_v}

    def params(self) -> FastGRNNParams:
        return self.model.to_params(self.normalizer, {"stage": "online"})

    def drift(self) -> float:
        """Fisher-weighted squared distance from the phase-2 parameters."""
        with torch.no_grad():
            return float(self.ewc_penalty())


# --------------------------------------------------------------------------------------
# the one entry point: oracle JSONL → trained, compressed router
# --------------------------------------------------------------------------------------


@dataclass
class TrainReport:
    labelled: str
    out_dir: str
    label_source: str  # "real" or "synthetic" (from the oracle records)
    models: list[str]
    n_train: int
    n_eval: dict[str, int]
    dense: dict[str, dict[str, float]]  # split → metrics
    compressed: dict[str, dict[str, float]]
    stages: list[StageReport]
    checkpoint: str  # the deployable (compressed) router: <out_dir>/router.{npz,json}
    dense_checkpoint: str
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    cv: list[dict[str, Any]] = field(default_factory=list)  # select_by_cv's rows, when it ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def datasets_from_records(records: Sequence[Any], normalizer: Normalizer) -> RouterDataset:
    """Oracle records (``oracle.LabelledRecord``) → a normalised ``RouterDataset``."""
    from ruvllm.router.features import extract

    x = np.stack([normalizer.transform(extract(r.feature_input(), normalizer)) for r in records]).astype(np.float32)
    sess_ids: dict[str, int] = {}
    session = np.array([sess_ids.setdefault(r.session, len(sess_ids)) for r in records], dtype=np.int64)
    return RouterDataset(
        x=x, session=session,
        y_model=np.array([r.best_model for r in records], dtype=np.int64),
        y_ctx=np.array([r.best_context for r in records], dtype=np.int64),
        y_temp=np.array([r.temperature for r in records], dtype=np.float32),
        y_top_p=np.array([r.top_p for r in records], dtype=np.float32),
        utility=np.array([r.utility for r in records], dtype=np.float32),
        symbol=_symbol_index(records),
    )


def _symbol_index(records: Sequence[Any]) -> I64 | None:
    """Each record's symbol as an index, from ids ``<symbol>:<type>:<n>``; None if any id is not one."""
    from ruvllm.router.quality import symbol_of

    try:
        names = [symbol_of(r.id) for r in records]
    except InvalidInputError:
        return None
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(n, len(ids)) for n in names], dtype=np.int64)


def train_from_oracle(labelled_jsonl: Path, out_dir: Path, config: TrainConfig | None = None) -> TrainReport:
    """Train, compress and save a router from an oracle-labelled JSONL (``oracle.label``).

    Records with ``split == "train"`` train it (all records when no split is marked, then
    a seeded 80/20 split by session holds some out); every other split is evaluated. Writes
    ``router.{npz,json}`` (compressed int8, deployable), ``router_dense.{npz,json}`` and
    ``train_report.json`` to ``out_dir``. Same inputs and seed → same files.
    """
    from ruvllm.router.oracle import load_labelled

    tc = config or TrainConfig()
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    records = load_labelled(Path(labelled_jsonl))
    splits: dict[str, list[Any]] = {}
    for r in records:
        splits.setdefault(r.split or "", []).append(r)
    if "train" in splits:
        train_recs = splits.pop("train")
    else:
        allr = [r for rs in splits.values() for r in rs]
        sessions = sorted({r.session for r in allr})
        rng = np.random.default_rng(tc.seed)
        held = set(rng.choice(sessions, size=max(1, len(sessions) // 5), replace=False).tolist())
        train_recs = [r for r in allr if r.session not in held]
        splits = {"heldout": [r for r in allr if r.session in held]}
    if len(train_recs) < 8:
        raise InvalidInputError(f"{labelled_jsonl} has {len(train_recs)} training records; need at least 8")
    models = list(train_recs[0].models)
    history = None
    if tc.history:
        history = PatternHistory.from_records(train_recs, models)
        train_recs = with_history(train_recs, history, leave_one_out=True, dropout=tc.history_dropout, seed=tc.seed)
        splits = {name: with_history(rs, history) for name, rs in splits.items()}
    normalizer = Normalizer.fit([r.feature_input() for r in train_recs], seed=tc.seed)
    train = datasets_from_records(train_recs, normalizer)
    evals = {name: datasets_from_records(rs, normalizer) for name, rs in splits.items() if rs}
    main_eval = evals.get("test_unseen") or next(iter(evals.values()), train)

    bins = tuple(int(b) for b in train_recs[0].context_bins)
    if any(tuple(r.context_bins) != bins or list(r.models) != models for r in records):
        raise InvalidInputError(f"{labelled_jsonl} mixes records of different models or context bins")
    cv: list[dict[str, Any]] = []
    if tc.cv_folds > 1:
        tc, cv = select_by_cv(train, models, tc, bins, cv_grid(tc))
    model = train_dense(train, models, tc, bins)
    dense, comp, stages = compress(model, train, main_eval, tc, normalizer)
    source = sorted({r.label_source for r in records})
    meta = {"label_source": ",".join(source), "train_config": asdict(tc), "n_train": len(train)}
    dense.meta.update(meta)
    comp.meta.update(meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dense.save(out / "router_dense", int8=False)
    comp.save(out / "router", int8=True)
    for stem in ("router_dense", "router"):  # a table left by an earlier training must not feed this one
        if history is not None:
            history.save(out / stem)
        else:
            PatternHistory.path_for(out / stem).unlink(missing_ok=True)
    report = TrainReport(
        labelled=str(labelled_jsonl), out_dir=str(out), label_source=",".join(source), models=models,
        n_train=len(train), n_eval={k: len(v) for k, v in evals.items()},
        dense={k: evaluate(dense, v) for k, v in {"train": train, **evals}.items()},
        compressed={k: evaluate(comp, v) for k, v in {"train": train, **evals}.items()},
        stages=stages, checkpoint=str(out / "router"), dense_checkpoint=str(out / "router_dense"),
        seconds=round(time.perf_counter() - t0, 2), config=asdict(tc), cv=cv,
    )
    (out / "train_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
