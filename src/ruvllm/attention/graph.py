"""Graph attention over retrieved nodes: it ranks and selects the context the LLM sees.

One whole idea in one file (nanoGPT style). Inputs for one query:

    q        (d,)      the query embedding
    X        (N, d)    the candidates: search hits (hop 0) + their 2-hop graph neighbourhood
    hop      (N,)      graph distance of each candidate from the nearest hit
    level    (N,)      hierarchy depth (module 0 → class 1 → method 2), for the hyperbolic space
    edges    (E,)      src, dst index into the candidates, rel type, features (weight, confidence, recency)

The forward pass:

 1. Metric: x ← g ⊙ x, q ← g ⊙ q (a learned diagonal metric; g = 1 is plain cosine).
 2. Graph attention layer (GAT-style, multi-head, edge-featured): every node attends over itself
    and its neighbours; per head h the logit for j ← k is  x_j^h·x_k^h / √d_h + w_e^h·e_jk + b_rel^h,
    and x_j ← normalise((1 − β)·x_j + β·Σ_k a_jk x_k). A continuation chunk thus carries some of
    its summary's meaning, a method some of its class's.
 3. Query attention, multi-head, with GraphRoPE: per head the key is rotated by hop·θ_i (pairs of
    dims, θ_i = base^(−2i/d_h)), so the score q^h·R(hop)k^h depends on graph distance as RoPE's
    depends on token distance; plus a per-head edge bias from the path that reached the node.
 4. Dual-space score: s_j = α·mean_h(score_h) − (1 − α)·κ·d_P(q̃, x̃_j) + b_hop[hop_j], where
    d_P is the Poincaré-ball distance between exp-mapped points whose radius encodes the level.
 5. Rank by s; the caller keeps the top k that fit its token budget.

Numpy only; parameters are a flat dict of float32 arrays (``AttentionParams``), so a trained set
loads without torch. ``attention.train`` (torch) fits them on a training split.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.memory.schema import EdgeType

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
RELS: tuple[EdgeType, ...] = tuple(EdgeType)  # rel index order
N_EDGE_FEATS = 3  # weight, confidence, recency


@dataclass
class GraphAttentionConfig:
    dim: int = 384  # d: embedding size
    n_heads: int = 4  # H; head h sees dims [h·d/H, (h+1)·d/H)
    rope_base: float = 100.0  # GraphRoPE θ_i = base^(−2i/d_h)
    curvature: float = 1.0  # c of the Poincaré ball
    recency_half_life_s: float = 30 * 86400.0  # recency feature = 0.5^(age / half-life)
    max_hops: int = 2

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def init_params(cfg: GraphAttentionConfig) -> dict[str, F32]:
    """The untrained defaults: plain cosine on the hits, neighbours discounted per hop, every
    other part switched on but weak (so an untrained engine ≈ top-k cosine with graph reach)."""
    H = cfg.n_heads
    return {
        "g": np.ones(cfg.dim, np.float32),  # (d,) diagonal metric
        "gat_beta": np.array([0.0], np.float32),  # β: GAT residual mix, 0 = layer off
        "gat_w_edge": np.zeros((H, N_EDGE_FEATS), np.float32),  # (H, 3)
        "gat_b_rel": np.zeros((H, len(RELS)), np.float32),  # (H, R)
        "rope_scale": np.array([0.0], np.float32),  # 0 = no rotation; 1 = full GraphRoPE
        "q_w_edge": np.zeros((H, N_EDGE_FEATS), np.float32),  # (H, 3) path-edge bias in the query attention
        "q_b_rel": np.zeros((H, len(RELS)), np.float32),  # (H, R)
        "head_w": np.full(H, 1.0 / H, np.float32),  # (H,) head mixture
        "alpha": np.array([1.0], np.float32),  # dual-space mix: 1 = Euclidean only
        "kappa": np.array([0.1], np.float32),  # scale of the hyperbolic distance
        "radius": np.array([0.3, 0.6, 0.85], np.float32),  # Poincaré radius per level (0, 1, ≥2)
        "q_radius": np.array([0.6], np.float32),
        "b_hop": np.array([0.0, -0.15, -0.3], np.float32),  # (max_hops + 1,) prior per hop
    }


@dataclass
class AttentionParams:
    config: GraphAttentionConfig = field(default_factory=GraphAttentionConfig)
    arrays: dict[str, F32] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = init_params(self.config)
        base.update({k: np.asarray(v, np.float32) for k, v in self.arrays.items()})
        self.arrays = base

    def save(self, path: str | Path) -> Path:
        p = Path(path).with_suffix(".npz")
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez(p, **self.arrays)  # type: ignore[arg-type]
        p.with_suffix(".json").write_text(json.dumps({"config": asdict(self.config), "meta": self.meta}, indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> AttentionParams:
        p = Path(path).with_suffix(".npz")
        doc = json.loads(p.with_suffix(".json").read_text())
        with np.load(p) as data:
            arrays = {k: np.asarray(data[k], np.float32) for k in data.files}
        return cls(GraphAttentionConfig(**doc["config"]), arrays, doc.get("meta", {}))


@dataclass
class Candidates:
    """One query's candidate set, as arrays."""

    X: F32  # (N, d) node vectors
    hop: I64  # (N,) 0 = a search hit
    level: I64  # (N,) hierarchy depth
    edge_src: I64  # (E,) index into X
    edge_dst: I64  # (E,)
    edge_rel: I64  # (E,) index into RELS
    edge_feat: F32  # (E, 3) weight, confidence, recency
    path_feat: F32  # (N, 3) features of the edge that reached each node (hits: 1, confidence, recency)
    path_rel: I64  # (N,) rel of that edge (hits: −1)


# --------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------


def _normalise(x: F32) -> F32:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


def poincare_point(direction: F32, radius: F32 | float) -> F32:
    """A point of the unit Poincaré ball: unit ``direction`` (…, d) scaled to ``radius`` ∈ [0, 1)."""
    return _normalise(direction) * np.clip(np.asarray(radius, np.float32), 0.0, 0.999)[..., None]


def poincare_distance(u: F32, v: F32, c: float = 1.0) -> F32:
    """d(u, v) = (1/√c)·arcosh(1 + 2c‖u − v‖² / ((1 − c‖u‖²)(1 − c‖v‖²))); broadcasts over rows."""
    uu = np.sum(u * u, axis=-1)
    vv = np.sum(v * v, axis=-1)
    duv = np.sum((u - v) ** 2, axis=-1)
    arg = 1.0 + 2.0 * c * duv / np.maximum((1.0 - c * uu) * (1.0 - c * vv), 1e-9)
    return (np.arccosh(np.maximum(arg, 1.0)) / math.sqrt(c)).astype(np.float32)


def graph_rope(x: F32, hop: I64, base: float, scale: float) -> F32:
    """Rotate consecutive dim pairs of x (N, H, d_h) by hop·scale·θ_i, θ_i = base^(−2i/d_h)."""
    dh = x.shape[-1]  # x: (N, H, d_h)
    half = dh // 2
    theta = base ** (-np.arange(half, dtype=np.float32) * 2.0 / dh)  # (d_h/2,)
    ang = (hop.astype(np.float32) * scale)[:, None] * theta[None, :]  # (N, d_h/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]  # (N, 1, d_h/2)
    x1, x2 = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]  # (N, H, d_h/2) each
    out = x.copy()
    out[..., 0 : 2 * half : 2] = x1 * cos - x2 * sin
    out[..., 1 : 2 * half : 2] = x1 * sin + x2 * cos
    return out


# --------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------


class GraphAttention:
    """``scores(q, cands)`` → (N,) ranking scores; ``rank(...)`` adapts memory hits/expansions."""

    def __init__(self, params: AttentionParams | None = None):
        self.params = params or AttentionParams()
        self.cfg = self.params.config

    @property
    def beta(self) -> float:  # GAT residual mix β in [0, 0.9]; 0 switches the layer off
        return float(np.clip(self.params.arrays["gat_beta"][0], 0.0, 0.9))

    def gat_layer(self, X: F32, c: Candidates) -> F32:
        """One edge-featured multi-head graph attention layer: X (N, d) → (N, d)."""
        beta = self.beta
        if beta == 0.0 or len(c.edge_src) == 0:
            return X
        a = self.params.arrays
        N, H, dh = X.shape[0], self.cfg.n_heads, self.cfg.head_dim
        Xh = X[:, : H * dh].reshape(N, H, dh)  # (N, H, d_h)
        src = np.concatenate([c.edge_src, c.edge_dst, np.arange(N)])  # both directions + self loops
        dst = np.concatenate([c.edge_dst, c.edge_src, np.arange(N)])
        feat = np.concatenate([c.edge_feat, c.edge_feat, np.tile([[1.0, 1.0, 1.0]], (N, 1))]).astype(np.float32)
        rel = np.concatenate([c.edge_rel, c.edge_rel, np.full(N, -1)])
        logit = np.einsum("ehd,ehd->eh", Xh[dst], Xh[src]) / math.sqrt(dh)  # (E', H)
        logit = logit + feat @ a["gat_w_edge"].T  # (E', H)
        logit = logit + np.where(rel[:, None] >= 0, a["gat_b_rel"].T[np.maximum(rel, 0)], 0.0)
        # softmax over each destination's incoming edges, per head
        mx = np.full((N, H), -np.inf, np.float32)
        np.maximum.at(mx, dst, logit)
        w = np.exp(logit - mx[dst])  # (E', H)
        den = np.zeros((N, H), np.float32)
        np.add.at(den, dst, w)
        w = w / den[dst]
        msg = np.zeros((N, H, dh), np.float32)
        np.add.at(msg, dst, w[:, :, None] * Xh[src])  # (N, H, d_h)
        out = X.copy()
        out[:, : H * dh] = (1 - beta) * Xh.reshape(N, H * dh) + beta * msg.reshape(N, H * dh)
        return _normalise(out).astype(np.float32)

    def scores(self, q: F32, c: Candidates) -> F32:
        """q (d,), candidates → (N,) scores; higher = more relevant."""
        a, cfg = self.params.arrays, self.cfg
        N, H, dh = len(c.X), cfg.n_heads, cfg.head_dim
        if N == 0:
            return np.zeros(0, np.float32)
        g = a["g"]
        X = _normalise(c.X * g)  # (N, d)
        qn = _normalise(q * g)  # (d,)
        X = self.gat_layer(X, c)  # (N, d)
        K = X[:, : H * dh].reshape(N, H, dh)  # (N, H, d_h)
        if a["rope_scale"][0] != 0:
            K = graph_rope(K, c.hop, cfg.rope_base, float(a["rope_scale"][0]))
        Q = qn[: H * dh].reshape(H, dh)  # (H, d_h)
        per_head = np.einsum("nhd,hd->nh", K, Q) * H  # (N, H); ×H so the mean over heads ≈ cosine
        per_head = per_head + c.path_feat @ a["q_w_edge"].T  # (N, H) edge bias of the reaching path
        per_head = per_head + np.where(c.path_rel[:, None] >= 0, a["q_b_rel"].T[np.maximum(c.path_rel, 0)], 0.0)
        euclid = per_head @ a["head_w"]  # (N,)
        alpha = float(a["alpha"][0])
        s = alpha * euclid
        if alpha < 1.0:
            rad = a["radius"][np.minimum(c.level, len(a["radius"]) - 1)]  # (N,)
            xh = poincare_point(X, rad)  # (N, d)
            qh = poincare_point(qn[None, :], a["q_radius"])  # (1, d)
            s = s - (1.0 - alpha) * float(a["kappa"][0]) * poincare_distance(qh, xh, cfg.curvature)
        s = s + a["b_hop"][np.minimum(c.hop, len(a["b_hop"]) - 1)]
        return s.astype(np.float32)

    # ---- adapters over memory's Hit / Expanded -------------------------------------
    def candidates(self, hits: Sequence[Any], expanded: Sequence[Any], edges: Sequence[Any] | None = None,
                   now: float | None = None) -> tuple[list[Any], Candidates]:
        """Nodes and arrays from ``memory.search`` hits (``.node``, ``.score``) and ``memory.expand``
        results (``.node``, ``.hop``, ``.via``, ``.weight``, ``.rel``); ``edges`` (schema ``Edge``s
        among them, e.g. ``store.edges_among``) add the full edge features when given."""
        now = time.time() if now is None else now
        nodes: list[Any] = []
        index: dict[str, int] = {}
        hop: list[int] = []
        path_feat: list[list[float]] = []
        path_rel: list[int] = []
        rel_ix = {r: i for i, r in enumerate(RELS)}
        for h in hits:
            if h.node.id in index:
                continue
            index[h.node.id] = len(nodes)
            nodes.append(h.node)
            hop.append(0)
            path_feat.append([1.0, h.node.metadata.confidence, self._recency(h.node.metadata.timestamp, now)])
            path_rel.append(-1)
        e_src: list[int] = []
        e_dst: list[int] = []
        e_rel: list[int] = []
        e_feat: list[list[float]] = []
        for e in expanded:
            n = e.node
            if n.id in index:
                continue
            index[n.id] = len(nodes)
            nodes.append(n)
            hop.append(min(int(e.hop), self.cfg.max_hops))
            rec = self._recency(n.metadata.timestamp, now)
            path_feat.append([float(e.weight), n.metadata.confidence, rec])
            path_rel.append(rel_ix.get(EdgeType(e.rel), 0))
            if edges is None and getattr(e, "via", None) in index:
                e_src.append(index[e.via])
                e_dst.append(index[n.id])
                e_rel.append(rel_ix.get(EdgeType(e.rel), 0))
                e_feat.append([float(e.weight), n.metadata.confidence, rec])
        for ed in edges or ():
            if ed.src in index and ed.dst in index:
                e_src.append(index[ed.src])
                e_dst.append(index[ed.dst])
                e_rel.append(rel_ix.get(EdgeType(ed.rel), 0))
                e_feat.append([float(ed.weight), ed.metadata.confidence, self._recency(ed.metadata.timestamp, now)])
        X = np.stack([np.asarray(n.vector, np.float32) for n in nodes]) if nodes else np.zeros((0, self.cfg.dim),
                                                                                                np.float32)
        cands = Candidates(
            X=X, hop=np.array(hop, np.int64), level=np.array([level_of(n) for n in nodes], np.int64),
            edge_src=np.array(e_src, np.int64), edge_dst=np.array(e_dst, np.int64),
            edge_rel=np.array(e_rel, np.int64), edge_feat=np.array(e_feat, np.float32).reshape(-1, N_EDGE_FEATS),
            path_feat=np.array(path_feat, np.float32).reshape(-1, N_EDGE_FEATS), path_rel=np.array(path_rel, np.int64),
        )
        return nodes, cands

    def _recency(self, ts: float, now: float) -> float:
        return float(0.5 ** (max(now - ts, 0.0) / self.cfg.recency_half_life_s))

    def rank(self, qvec: npt.ArrayLike, hits: Sequence[Any], expanded: Sequence[Any],
             edges: Sequence[Any] | None = None) -> list[Any]:
        """Drop-in for the orchestrator's ``_rank``: ``ContextItem``s, best first."""
        from ruvllm.llm.prompt import ContextItem

        nodes, cands = self.candidates(hits, expanded, edges)
        if not nodes:
            return []
        s = self.scores(np.asarray(qvec, np.float32), cands)
        order = np.argsort(-s, kind="stable")
        return [ContextItem(nodes[i].id, nodes[i].text, float(s[i]), nodes[i].source, nodes[i].type.value,
                            int(cands.hop[i])) for i in order]


def level_of(node: Any) -> int:
    """Hierarchy depth from the node's tags: module 0, class/function 1, method 2 (default 1)."""
    tags = set(getattr(getattr(node, "metadata", None), "tags", []) or [])
    if "module" in tags:
        return 0
    if "method" in tags:
        return 2
    return 1
