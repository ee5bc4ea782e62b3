"""Graph attention: geometry (Poincaré, GraphRoPE), the GAT layer, ranking, the adapter, fitting."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from ruvllm.attention import (
    AttentionParams,
    Candidates,
    GraphAttention,
    GraphAttentionConfig,
    graph_rope,
    poincare_distance,
    poincare_point,
)
from ruvllm.attention.fit import Query, fit, mrr
from ruvllm.attention.graph import RELS
from ruvllm.memory.schema import EdgeType, Node, NodeMetadata

D = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cands(X: np.ndarray, hop: list[int], edges: list[tuple[int, int, EdgeType]] = ()) -> Candidates:  # type: ignore[assignment]
    n = len(X)
    return Candidates(
        X=X, hop=np.array(hop), level=np.ones(n, np.int64),
        edge_src=np.array([e[0] for e in edges], np.int64), edge_dst=np.array([e[1] for e in edges], np.int64),
        edge_rel=np.array([RELS.index(e[2]) for e in edges], np.int64),
        edge_feat=np.ones((len(edges), 3), np.float32),
        path_feat=np.ones((n, 3), np.float32),
        path_rel=np.array([-1 if h == 0 else RELS.index(EdgeType.FOLLOWS) for h in hop], np.int64),
    )


def test_poincare_distance_properties() -> None:
    rng = np.random.default_rng(0)
    u = poincare_point(_unit(rng, 5), 0.5)
    v = poincare_point(_unit(rng, 5), 0.7)
    assert np.allclose(poincare_distance(u, v), poincare_distance(v, u), atol=1e-5)
    assert np.allclose(poincare_distance(u, u), 0.0, atol=1e-3)
    # from the origin: d(0, x) = 2·artanh(‖x‖)
    x = poincare_point(_unit(rng, 1), 0.6)
    assert poincare_distance(np.zeros_like(x), x)[0] == pytest.approx(2 * math.atanh(0.6), rel=1e-4)
    # the same angle costs more near the boundary (hierarchy: leaves are far apart)
    a, b = _unit(rng, 2)
    near = poincare_distance(poincare_point(a, 0.2), poincare_point(b, 0.2))
    far = poincare_distance(poincare_point(a, 0.95), poincare_point(b, 0.95))
    assert far > near * 3


def test_graph_rope_is_a_rotation_by_hop() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 8)).astype(np.float32)
    hop = np.array([0, 1, 2])
    r = graph_rope(x, hop, base=100.0, scale=1.0)
    assert np.allclose(r[0], x[0])  # hop 0 untouched
    assert np.allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(x, axis=-1), atol=1e-5)  # norms kept
    # relative: rotating both sides by the same hop keeps their dot product
    q, k = rng.normal(size=(1, 1, 8)).astype(np.float32), rng.normal(size=(1, 1, 8)).astype(np.float32)
    d0 = float((q * k).sum())
    d2 = float((graph_rope(q, np.array([2]), 100.0, 1.0) * graph_rope(k, np.array([2]), 100.0, 1.0)).sum())
    assert d2 == pytest.approx(d0, rel=1e-4)


def test_defaults_rank_hits_by_cosine_and_discount_hops() -> None:
    rng = np.random.default_rng(2)
    X = _unit(rng, 6)
    q = X[0] + 0.1 * X[1]
    eng = GraphAttention(AttentionParams(GraphAttentionConfig(dim=D, n_heads=2)))
    c = _cands(X, [0, 0, 0, 0, 0, 0])
    s = eng.scores(q, c)
    cos = X @ (q / np.linalg.norm(q))
    assert np.array_equal(np.argsort(-s), np.argsort(-cos))
    c2 = _cands(np.stack([X[0], X[0]]), [0, 2])
    s2 = eng.scores(q, c2)
    assert s2[0] > s2[1]  # same vector, further away in the graph → lower


def test_every_part_switches_on_and_stays_finite() -> None:
    rng = np.random.default_rng(3)
    X = _unit(rng, 8)
    p = AttentionParams(GraphAttentionConfig(dim=D, n_heads=4))
    p.arrays.update(alpha=np.array([0.7], np.float32), gat_beta=np.array([0.3], np.float32),
                    rope_scale=np.array([1.0], np.float32))
    p.arrays["q_b_rel"][:, RELS.index(EdgeType.FOLLOWS)] = 0.5
    eng = GraphAttention(p)
    c = _cands(X, [0, 0, 1, 1, 2, 2, 1, 0], [(0, 2, EdgeType.FOLLOWS), (1, 3, EdgeType.SAME_TOPIC),
                                               (2, 4, EdgeType.FOLLOWS), (3, 5, EdgeType.SAME_TOPIC)])
    s = eng.scores(X[0], c)
    assert s.shape == (8,) and np.all(np.isfinite(s))
    # the GAT layer moves a node towards its neighbours and keeps unit norm
    Y = eng.gat_layer(X, c)
    assert np.allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-5)
    assert float(Y[2] @ X[0]) > float(X[2] @ X[0])
    assert np.allclose(Y[7], X[7], atol=1e-6)  # isolated node: only itself
    assert eng.scores(X[0], _cands(np.zeros((0, D), np.float32), [])).shape == (0,)


@dataclass
class _Hit:
    node: Node
    score: float


@dataclass
class _Exp:
    node: Node
    hop: int
    via: str
    weight: float
    rel: EdgeType


def test_rank_adapter_over_memory_results(tmp_path: object) -> None:
    rng = np.random.default_rng(4)
    X = _unit(rng, 4)
    nodes = [Node(text=f"n{i}", vector=X[i], metadata=NodeMetadata(tags=["method" if i == 3 else "function"]))
             for i in range(4)]
    hits = [_Hit(nodes[0], 0.9), _Hit(nodes[1], 0.5)]
    exp = [_Exp(nodes[2], 1, nodes[0].id, 1.0, EdgeType.FOLLOWS), _Exp(nodes[3], 2, nodes[2].id, 0.5,
                                                                        EdgeType.SAME_TOPIC),
           _Exp(nodes[1], 1, nodes[0].id, 1.0, EdgeType.FOLLOWS)]  # duplicates a hit: ignored
    eng = GraphAttention(AttentionParams(GraphAttentionConfig(dim=D)))
    ranked = eng.rank(X[0], hits, exp)
    assert ranked[0].node_id == nodes[0].id and len(ranked) == 4
    assert {r.hop for r in ranked} == {0, 1, 2}
    _, c = eng.candidates(hits, exp)
    assert list(c.level) == [1, 1, 1, 2] and len(c.edge_src) == 2
    assert eng.rank(X[0], [], []) == []


def test_fit_learns_to_follow_continuations_and_round_trips(tmp_path: object) -> None:
    """Gold is always the Follows-neighbour of the best hit, which plain cosine ranks low:
    fitting on a train split lifts held-out MRR above the defaults."""
    rng = np.random.default_rng(5)

    def make(n: int) -> list[Query]:
        out = []
        for _ in range(n):
            X = _unit(rng, 12)
            q = X[0] + 0.05 * rng.normal(size=D).astype(np.float32)
            hop = [0] * 8 + [1] * 4
            c = _cands(X, hop, [(0, 8, EdgeType.FOLLOWS), (1, 9, EdgeType.SAME_TOPIC)])
            out.append(Query(q, c, 8))
        return out

    train, held = make(60), make(60)
    p0 = AttentionParams(GraphAttentionConfig(dim=D, n_heads=2))
    base, _ = mrr(GraphAttention(p0), held)
    p1, trace = fit(p0, train, rounds=1, knobs=["b_hop[1]", "q_b_rel[Follows]", "gat_beta"])
    after, _ = mrr(GraphAttention(p1), held)
    assert after > base + 0.1 and trace[-1]["mrr"] >= trace[0]["mrr"]
    path = p1.save(tmp_path / "att")  # type: ignore[operator]
    p2 = AttentionParams.load(path)
    assert mrr(GraphAttention(p2), held)[0] == pytest.approx(after)
