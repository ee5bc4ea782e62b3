"""Fit the graph attention's knobs on a training split (numpy, no torch).

The engine has a dozen scalar knobs (dual-space mix, hyperbolic scale, hop priors, GraphRoPE
scale, GAT mix, per-relation biases, edge-feature weights). ``fit`` runs coordinate search over
a grid per knob, maximising mean reciprocal rank of the gold node on the training queries. It is
deliberately small: a few hundred labelled (query, gold node) pairs fit it without overfitting,
and the result is a plain ``AttentionParams`` file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ruvllm.attention.graph import RELS, AttentionParams, Candidates, GraphAttention
from ruvllm.memory.schema import EdgeType


@dataclass
class Query:
    q: np.ndarray  # (d,)
    cands: Candidates
    gold: int  # index of the gold node in cands, −1 when it is not among them


def mrr(engine: GraphAttention, queries: Sequence[Query], k: int = 10) -> tuple[float, float]:
    """(mean reciprocal rank, recall@k) of the gold nodes; a missing gold counts 0."""
    rr, hit = 0.0, 0
    for qu in queries:
        if qu.gold < 0:
            continue
        s = engine.scores(qu.q, qu.cands)
        rank = int((s > s[qu.gold]).sum())  # 0-based
        rr += 1.0 / (rank + 1)
        hit += rank < k
    n = max(len(queries), 1)
    return rr / n, hit / n


def _setter(name: str, idx: tuple[int | slice, ...] | None) -> Callable[[AttentionParams, float], None]:
    def set_(p: AttentionParams, v: float) -> None:
        if idx is None:
            p.arrays[name][...] = v
        else:
            p.arrays[name][idx] = v
    return set_


def _rel(r: EdgeType) -> int:
    return RELS.index(r)


KNOBS: dict[str, tuple[Callable[[AttentionParams, float], None], list[float]]] = {
    "b_hop[1]": (_setter("b_hop", (1,)), [0.0, -0.05, -0.1, -0.15, -0.25, -0.4]),
    "b_hop[2]": (_setter("b_hop", (2,)), [0.0, -0.1, -0.2, -0.3, -0.5, -0.8]),
    "alpha": (_setter("alpha", None), [1.0, 0.95, 0.9, 0.8, 0.6]),
    "kappa": (_setter("kappa", None), [0.02, 0.05, 0.1, 0.2, 0.5]),
    "q_radius": (_setter("q_radius", None), [0.3, 0.5, 0.6, 0.75, 0.9]),
    "rope_scale": (_setter("rope_scale", None), [0.0, 0.25, 0.5, 1.0, 2.0]),
    "gat_beta": (_setter("gat_beta", None), [0.0, 0.05, 0.1, 0.2, 0.35]),
    "gat_b_rel[Follows]": (_setter("gat_b_rel", (slice(None), _rel(EdgeType.FOLLOWS))), [-1.0, 0.0, 1.0, 2.0]),
    "q_b_rel[Follows]": (_setter("q_b_rel", (slice(None), _rel(EdgeType.FOLLOWS))), [-0.1, -0.05, 0.0, 0.05, 0.1]),
    "q_b_rel[SameTopic]": (_setter("q_b_rel", (slice(None), _rel(EdgeType.SAME_TOPIC))),
                           [-0.1, -0.05, 0.0, 0.05, 0.1]),
    "q_w_edge[weight]": (_setter("q_w_edge", (slice(None), 0)), [-0.1, -0.05, 0.0, 0.05, 0.1]),
}


def fit(params: AttentionParams, train: Sequence[Query], rounds: int = 2, knobs: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None) -> tuple[AttentionParams, list[dict[str, float | str]]]:
    """Coordinate search; returns the fitted params (a copy) and the search trace."""
    p = AttentionParams(params.config, {k: v.copy() for k, v in params.arrays.items()}, dict(params.meta))
    engine = GraphAttention(p)
    best, _ = mrr(engine, train)
    trace: list[dict[str, float | str]] = [{"knob": "init", "value": 0.0, "mrr": best}]
    for _ in range(rounds):
        for name in knobs or list(KNOBS):
            set_, grid = KNOBS[name]
            snapshot = {k: v.copy() for k, v in p.arrays.items()}
            best_v: float | None = None
            for v in grid:
                set_(p, v)
                m, _ = mrr(engine, train)
                if m > best + 1e-6:
                    best, best_v = m, v
            p.arrays = snapshot
            if best_v is not None:
                set_(p, best_v)
            engine = GraphAttention(p)
            trace.append({"knob": name, "value": float("nan") if best_v is None else best_v, "mrr": best})
            if log:
                log(f"fit {name} = {best_v} → train MRR {best:.4f}")
    p.meta["fit"] = {"train_queries": len(train), "train_mrr": best, "rounds": rounds}
    return p, trace
