"""Graph expansion with filters, pruning, neighbourhood statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm.memory import Memory
from ruvllm.memory.graph import coherence
from ruvllm.memory.schema import Edge, EdgeType, Node

DIM = 8


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Memory, list[Node]]:
    """a -0.9-> b -0.8-> c -0.2-> d ; a -Cites 0.5-> e ; f -0.7-> a (incoming) ; g isolated."""
    rng = np.random.default_rng(0)
    mem = Memory.open(tmp_path / "m", dim=DIM)
    n = [Node(text=ch, vector=rng.normal(size=DIM).astype(np.float32)) for ch in "abcdefg"]
    a, b, c, d, e, f, _ = n
    edges = [
        Edge(a.id, b.id, EdgeType.SAME_TOPIC, 0.9), Edge(b.id, c.id, EdgeType.SAME_TOPIC, 0.8),
        Edge(c.id, d.id, EdgeType.SAME_TOPIC, 0.2), Edge(a.id, e.id, EdgeType.CITES, 0.5),
        Edge(f.id, a.id, EdgeType.FOLLOWS, 0.7),
    ]
    mem.add_many(n, edges)
    yield mem, n
    mem.close()


def texts(xs: list) -> dict[str, int]:
    return {x.node.text: x.hop for x in xs}


def test_two_hop_expansion_excludes_seeds(chain: tuple[Memory, list[Node]]) -> None:
    mem, n = chain
    out = mem.expand([n[0].id], hops=2)
    assert texts(out) == {"b": 1, "e": 1, "f": 1, "c": 2}
    b = next(x for x in out if x.node.text == "b")
    c = next(x for x in out if x.node.text == "c")
    assert b.via == n[0].id and b.weight == pytest.approx(0.9)
    assert c.via == n[1].id and c.weight == pytest.approx(0.72) and c.rel == EdgeType.SAME_TOPIC
    assert [x.hop for x in out] == sorted(x.hop for x in out)
    assert texts(mem.expand([n[0].id], hops=3))["d"] == 3
    assert mem.expand([n[0].id], hops=0) == []
    assert mem.expand([n[6].id]) == []


def test_expansion_filters(chain: tuple[Memory, list[Node]]) -> None:
    mem, n = chain
    assert texts(mem.expand([n[0].id], hops=3, min_weight=0.6)) == {"b": 1, "f": 1, "c": 2}
    assert texts(mem.expand([n[0].id], rels=[EdgeType.CITES])) == {"e": 1}
    assert texts(mem.expand([n[0].id], rels=["SameTopic", "Follows"])) == {"b": 1, "f": 1, "c": 2}
    assert len(mem.expand([n[0].id], hops=3, limit=2)) == 2
    assert [x.node.text for x in mem.expand([n[0].id], limit=1)] == ["b"]  # strongest first
    assert texts(mem.expand([n[0].id, n[1].id], hops=1)) == {"e": 1, "f": 1, "c": 1}
    with pytest.raises(Exception, match="unknown edge type"):
        mem.expand([n[0].id], rels=["Nope"])


def test_prune_weak_edges(chain: tuple[Memory, list[Node]]) -> None:
    mem, n = chain
    assert mem.prune_weak_edges(0.6) == 2  # c-d 0.2, a-e 0.5
    assert mem.stats()["edges"] == 3
    assert "d" not in texts(mem.expand([n[0].id], hops=4))


def test_neighbourhood_stats(chain: tuple[Memory, list[Node]]) -> None:
    mem, n = chain
    s = mem.neighbourhood(n[:3])
    assert s.n_nodes == 3 and s.n_edges == 2
    assert s.density == pytest.approx(2 / 3)
    assert s.degree_max == 3 and s.degree_mean == pytest.approx((3 + 2 + 2) / 3)
    assert -1.0 <= s.coherence <= 1.0
    hits = mem.search(n[0].vector, k=3)
    assert mem.neighbourhood(hits).n_nodes == 3
    same = np.ones((4, DIM), np.float32)
    assert coherence(same) == pytest.approx((1.0, 1.0))
    assert coherence(np.array([[1, 0], [-1, 0]], np.float32))[0] == pytest.approx(-1.0)
    assert mem.neighbourhood([]).n_nodes == 0
