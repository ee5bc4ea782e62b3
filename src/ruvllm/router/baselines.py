"""Baseline routers the FastGRNN router has to beat, on the same features and oracle labels.

Each works on a whole ``RouterDataset`` at once (the benchmark's view) and returns, per row, a
model index and a context-bin index; ``large_score`` (when a router has one) is a monotone
"needs the large model" score whose threshold traces the cost–quality curve.

- ``FixedRouter``: always the same model (always-small / always-large), with the context bin
  that has the best mean utility for that model on the training split.
- ``RandomRouter``: the large model with probability p (the benchmark sets p so the cost matches
  the FastGRNN's), else the small one.
- ``KNNRouter``: the k nearest training queries (cosine on normalised features); the action
  with the best mean oracle utility among them.
- ``LogisticRouter``: multinomial logistic regression (numpy) on the joint (model, context) label.
- ``QueryTypeRouter``: the (model, context) with the best mean training utility for the query's
  type (the feature vector's query-type one-hot); six numbers' worth of learning.
- ``ThresholdRouter``: RouteLLM-style: a logistic win-rate model P(large beats small by > δ in
  quality) and a threshold α (tuned for utility on the training split), as in Ong et al. 2024.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ruvllm.router.features import Q_TYPE
from ruvllm.router.training import RouterDataset

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _best_ctx(train: RouterDataset, model: int) -> int:
    assert train.utility is not None
    return int(train.utility[:, model, :].mean(axis=0).argmax())


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax_regression(
    x: npt.ArrayLike, y: npt.ArrayLike, n_classes: int, *, l2: float = 1e-3, iters: int = 400, lr: float = 0.05,
    sample_weight: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Multinomial logistic regression by full-batch Adam; returns W (D + 1, K) (last row: bias)."""
    X = np.hstack([np.asarray(x, np.float64), np.ones((len(np.asarray(x)), 1))])  # (N, D+1)
    Y = np.eye(n_classes)[np.asarray(y, np.int64)]  # (N, K)
    sw = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    sw = sw / sw.sum()
    W = np.zeros((X.shape[1], n_classes))
    m, v = np.zeros_like(W), np.zeros_like(W)
    for t in range(1, iters + 1):
        P = _softmax(X @ W)  # (N, K)
        g = X.T @ ((P - Y) * sw[:, None]) + l2 * np.vstack([W[:-1], np.zeros((1, n_classes))])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        W -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return W


def predict_softmax(W: npt.NDArray[np.float64], x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    X = np.hstack([np.asarray(x, np.float64), np.ones((len(np.asarray(x)), 1))])
    return _softmax(X @ W)


@dataclass
class FixedRouter:
    model: int
    name: str = ""
    ctx: int = 0

    def fit(self, train: RouterDataset) -> FixedRouter:
        self.ctx = _best_ctx(train, self.model)
        return self

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        n = len(data)
        return np.full(n, self.model, np.int64), np.full(n, self.ctx, np.int64)

    def large_score(self, data: RouterDataset) -> F32 | None:
        return None


@dataclass
class QueryTypeRouter:
    name: str = "query-type best"
    table: dict[int, tuple[int, int]] = field(default_factory=dict)  # type index -> (model, context)
    large_gap: dict[int, float] = field(default_factory=dict)  # type -> large's best U - others' best U
    default: tuple[int, int] = (0, 0)  # for a type the training split never had

    @staticmethod
    def types(data: RouterDataset) -> I64:
        """The query type of each row: the hot column of the (normalised) one-hot slice."""
        return np.asarray(data.x[:, Q_TYPE].argmax(axis=1), np.int64)

    def fit(self, train: RouterDataset) -> QueryTypeRouter:
        assert train.utility is not None
        U = train.utility.astype(np.float64)  # (N, M, C)
        t = self.types(train)

        def best(mean: npt.NDArray[np.float64]) -> tuple[int, int]:
            m, c = np.unravel_index(int(mean.argmax()), mean.shape)
            return int(m), int(c)

        self.default = best(U.mean(axis=0))
        for g in np.unique(t).tolist():
            mean = U[t == g].mean(axis=0)  # (M, C)
            self.table[int(g)] = best(mean)
            per_model = mean.max(axis=1)
            self.large_gap[int(g)] = float(per_model[-1] - per_model[:-1].max())
        return self

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        mc = np.array([self.table.get(int(g), self.default) for g in self.types(data)], np.int64).reshape(-1, 2)
        return mc[:, 0], mc[:, 1]

    def large_score(self, data: RouterDataset) -> F32:
        return np.array([self.large_gap.get(int(g), 0.0) for g in self.types(data)], np.float32)


@dataclass
class RandomRouter:
    p_large: float = 0.5
    seed: int = 0
    name: str = "random (matched cost)"
    ctx: dict[int, int] = field(default_factory=dict)
    n_models: int = 2

    def fit(self, train: RouterDataset) -> RandomRouter:
        assert train.utility is not None
        self.n_models = train.utility.shape[1]
        self.ctx = {m: _best_ctx(train, m) for m in range(self.n_models)}
        return self

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        rng = np.random.default_rng(self.seed)
        large = rng.random(len(data)) < self.p_large
        m = np.where(large, self.n_models - 1, 0).astype(np.int64)
        return m, np.array([self.ctx[int(i)] for i in m], np.int64)

    def large_score(self, data: RouterDataset) -> F32 | None:
        return np.random.default_rng(self.seed).random(len(data)).astype(np.float32)


@dataclass
class KNNRouter:
    k: int = 10
    name: str = "kNN"
    _x: F32 | None = None
    _u: F32 | None = None

    def fit(self, train: RouterDataset) -> KNNRouter:
        assert train.utility is not None
        self._x = train.x / np.maximum(np.linalg.norm(train.x, axis=1, keepdims=True), 1e-9)
        self._u = train.utility
        return self

    def _mean_utility(self, data: RouterDataset) -> F32:
        assert self._x is not None and self._u is not None
        q = data.x / np.maximum(np.linalg.norm(data.x, axis=1, keepdims=True), 1e-9)
        sims = q @ self._x.T  # (n, N_train)
        k = min(self.k, len(self._x) - 1)  # tiny training sets (a few real-labelled questions)
        nn = np.argpartition(-sims, k, axis=1)[:, :k] if k > 0 else np.zeros((len(q), 1), np.int64)  # (n, k)
        return self._u[nn].mean(axis=1)  # (n, M, C)

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        u = self._mean_utility(data)
        flat = u.reshape(len(data), -1).argmax(1)
        return (flat // u.shape[2]).astype(np.int64), (flat % u.shape[2]).astype(np.int64)

    def large_score(self, data: RouterDataset) -> F32 | None:
        u = self._mean_utility(data).max(axis=2)  # (n, M)
        return (u[:, -1] - u[:, :-1].max(axis=1)).astype(np.float32)


@dataclass
class LogisticRouter:
    name: str = "logistic regression"
    l2: float = 1e-3
    _W: npt.NDArray[np.float64] | None = None
    _shape: tuple[int, int] = (2, 5)

    def fit(self, train: RouterDataset) -> LogisticRouter:
        assert train.utility is not None
        M, C = train.utility.shape[1:]
        self._shape = (M, C)
        y = train.y_model * C + train.y_ctx
        self._W = fit_softmax_regression(train.x, y, M * C, l2=self.l2)
        return self

    def _probs(self, data: RouterDataset) -> npt.NDArray[np.float64]:
        assert self._W is not None
        return predict_softmax(self._W, data.x).reshape(len(data), *self._shape)  # (n, M, C)

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        p = self._probs(data)
        flat = p.reshape(len(data), -1).argmax(1)
        return (flat // self._shape[1]).astype(np.int64), (flat % self._shape[1]).astype(np.int64)

    def large_score(self, data: RouterDataset) -> F32 | None:
        return self._probs(data)[:, -1].sum(axis=1).astype(np.float32)


@dataclass
class ThresholdRouter:
    """RouteLLM-style: P(large wins) from logistic regression, route large when P > alpha."""

    margin: float = 0.05  # large "wins" when its best quality beats the small's by more than this
    name: str = "RouteLLM-style threshold"
    alpha: float = 0.5
    quality: F32 | None = None  # (N, M, C) quality table of the training split (set by the caller)
    _W: npt.NDArray[np.float64] | None = None
    ctx: dict[int, int] = field(default_factory=dict)
    n_models: int = 2

    def fit(self, train: RouterDataset) -> ThresholdRouter:
        assert train.utility is not None
        self.n_models = train.utility.shape[1]
        table = self.quality if self.quality is not None else train.utility
        best = table.max(axis=2)  # (N, M)
        wins = (best[:, -1] - best[:, 0] > self.margin).astype(np.int64)
        self._W = fit_softmax_regression(train.x, wins, 2)
        self.ctx = {m: _best_ctx(train, m) for m in range(self.n_models)}
        # α: the threshold with the best mean oracle utility on the training split
        p = self.large_score(train)
        assert p is not None
        rows = np.arange(len(train))
        best_u, best_a = -np.inf, 0.5
        for a in np.linspace(0.05, 0.95, 19):
            m = np.where(p > a, self.n_models - 1, 0)
            u = train.utility[rows, m, [self.ctx[int(i)] for i in m]].mean()
            if u > best_u:
                best_u, best_a = float(u), float(a)
        self.alpha = best_a
        return self

    def decide(self, data: RouterDataset) -> tuple[I64, I64]:
        p = self.large_score(data)
        assert p is not None
        m = np.where(p > self.alpha, self.n_models - 1, 0).astype(np.int64)
        return m, np.array([self.ctx[int(i)] for i in m], np.int64)

    def large_score(self, data: RouterDataset) -> F32 | None:
        assert self._W is not None
        return predict_softmax(self._W, data.x)[:, 1].astype(np.float32)
