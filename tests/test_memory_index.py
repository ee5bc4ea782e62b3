"""The ANN index: correctness against exact numpy, batch/threshold search, rebuild when missing/corrupt/stale, cache."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ruvllm.config import HnswParams, hnsw_params_for
from ruvllm.memory import Memory
from ruvllm.memory.schema import Node

DIM = 32
N = 2000


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x.astype(np.float32)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1)[:, :k]  # (nq, k)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(N, DIM)


def fill(mem: Memory, x: np.ndarray) -> list[Node]:
    nodes = [Node(text=f"n{i}", vector=v) for i, v in enumerate(x)]
    mem.add_many(nodes)
    return nodes


def test_search_matches_exact_numpy(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM, params=HnswParams(32, 200, 64)) as mem:
        nodes = fill(mem, data)
        pos = {n.id: i for i, n in enumerate(nodes)}
        qs = clustered(100, DIM, seed=1)
        truth = exact_topk(data, qs, 10)
        recall = []
        for q, t in zip(qs, truth, strict=True):
            hits = mem.search(q, k=10)
            assert len(hits) == 10
            assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
            exact = float(np.dot(q, data[pos[hits[0].node.id]]) /
                          (np.linalg.norm(q) * np.linalg.norm(data[pos[hits[0].node.id]])))
            assert hits[0].score == pytest.approx(exact, abs=1e-4)
            recall.append(len({pos[h.node.id] for h in hits} & set(t.tolist())) / 10)
        assert np.mean(recall) >= 0.95
        # batch search gives the same answers
        batch = mem.search_batch(qs[:20], k=10)
        for q, hits in zip(qs[:20], batch, strict=True):
            assert [h.node.id for h in hits] == [h.node.id for h in mem.search(q, k=10)]
        assert len(mem.search(qs[0], k=64)) == 64


def test_threshold_search(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM) as mem:
        nodes = fill(mem, data[:300])
        q = nodes[3].vector + 0.001
        hits = mem.search_threshold(q, min_score=0.95, k=10)
        assert hits and hits[0].node.id == nodes[3].id
        assert all(h.score >= 0.95 for h in hits)
        far = -nodes[3].vector
        assert mem.search_threshold(far, min_score=0.95) == []


def test_k_larger_than_corpus_and_empty(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM) as mem:
        assert mem.search(data[0], k=5) == []
        fill(mem, data[:3])
        assert len(mem.search(data[0], k=64)) == 3


def test_cache_hits_and_invalidation(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM, cache_size=8, cache_ttl_s=60) as mem:
        nodes = fill(mem, data[:200])
        first = mem.search(data[0], k=5)
        again = mem.search(data[0], k=5)
        assert [h.node.id for h in first] == [h.node.id for h in again]
        assert mem.stats()["cache"]["hits"] == 1
        mem.delete(nodes[0].id)  # a write invalidates
        after = mem.search(data[0], k=5)
        assert nodes[0].id not in [h.node.id for h in after]
    with Memory.open(tmp_path / "m2", dim=DIM, cache_size=8, cache_ttl_s=0.0) as mem:
        fill(mem, data[:10])
        mem.search(data[0], k=1)
        mem.search(data[0], k=1)
        assert mem.stats()["cache"]["hits"] == 0  # expired at once


def _reopen(path: Path, **kw: object) -> Memory:
    return Memory.open(path, dim=DIM, params=HnswParams(16, 100, 64), **kw)  # type: ignore[arg-type]


def test_index_is_saved_and_loaded(tmp_path: Path, data: np.ndarray) -> None:
    p = tmp_path / "m"
    with _reopen(p) as mem:
        fill(mem, data[:500])
    assert (p / "index.hnsw").exists() and (p / "index.json").exists()
    with _reopen(p) as mem:
        assert mem.stats()["index"]["on_open"]["action"] == "loaded"
        assert mem.count() == 500 and len(mem.search(data[7], k=3)) == 3


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "stale", "sidecar", "params"])
def test_index_is_rebuilt_when_unusable(tmp_path: Path, data: np.ndarray, damage: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "m"
    with _reopen(p) as mem:
        nodes = fill(mem, data[:400])
    idx = p / "index.hnsw"
    params = HnswParams(16, 100, 64)
    if damage == "missing":
        idx.unlink()
    elif damage == "corrupt":
        raw = bytearray(idx.read_bytes())
        for i in range(100, len(raw), 997):
            raw[i] ^= 0xFF
        idx.write_bytes(bytes(raw))
    elif damage == "truncated":
        idx.write_bytes(idx.read_bytes()[:1000])
    elif damage == "stale":  # the store moved on without the index (e.g. a crash after writes)
        m2 = _reopen(p)
        m2.add(Node(text="late", vector=data[450]))
        m2.store.close()  # no index save: simulates a kill ...
        assert m2._dir_lock is not None
        m2._dir_lock.release()  # ... whose flock the kernel would drop
        nodes.append(Node(text="late", vector=data[450]))
    elif damage == "sidecar":
        (p / "index.json").write_text("{not json")
    elif damage == "params":
        params = HnswParams(8, 50, 32)
    with caplog.at_level(logging.WARNING, logger="ruvllm.memory"):
        mem = Memory.open(p, dim=DIM, params=params)
    with mem:
        assert mem.stats()["index"]["on_open"]["action"] == "rebuilt"
        assert "rebuilt the index" in caplog.text
        assert mem.count() == len(nodes)
        for n in nodes[::37]:
            assert mem.search(n.vector, k=1)[0].node.id == n.id
    with _reopen(p) if damage != "params" else Memory.open(p, dim=DIM, params=params) as mem:
        assert mem.stats()["index"]["on_open"]["action"] == "loaded"
    stamp = json.loads((p / "index.json").read_text())
    assert stamp["count"] == len(nodes)


def test_deleted_nodes_never_come_back_and_index_grows(tmp_path: Path, data: np.ndarray) -> None:
    with _reopen(tmp_path / "m") as mem:
        nodes = fill(mem, data[:1500])  # past the initial capacity: the index resizes
        assert mem.stats()["index"]["capacity"] >= 1500
        gone = nodes[:700]
        for n in gone:
            mem.delete(n.id)
        gone_ids = {n.id for n in gone}
        for n in gone[::50]:
            hits = mem.search(n.vector, k=10)
            assert len(hits) == 10 and not gone_ids & {h.node.id for h in hits}
        assert mem.stats()["index"]["size"] == 800
    with _reopen(tmp_path / "m") as mem:  # deletions survive a save/load
        assert mem.stats()["index"]["on_open"]["action"] == "loaded"
        hits = mem.search(gone[0].vector, k=10)
        assert not gone_ids & {h.node.id for h in hits}


def test_auto_params_follow_the_table(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM, params=HnswParams(48, 300, 128), auto_params=True) as mem:
        fill(mem, data[:50])
        info = mem.stats()["index"]
        expected = hnsw_params_for(0)
        assert (info["m"], info["ef_construction"], info["ef_search"]) == (
            expected.m, expected.ef_construction, expected.ef_search)


def test_node_cache_serves_hot_nodes_and_follows_writes(tmp_path: Path, data: np.ndarray) -> None:
    with Memory.open(tmp_path / "m", dim=DIM, cache_size=0, node_cache=100) as mem:
        nodes = fill(mem, data[:300])
        first = mem.search(data[0], k=5)
        again = mem.search(data[0], k=5)
        assert [h.node.id for h in first] == [h.node.id for h in again]
        assert mem.stats()["node_cache"]["hits"] == 5
        with pytest.raises(ValueError):
            again[0].node.vector[0] = 1.0  # shared with the cache: read-only
        top = first[0].node.id
        mem.update(top, text="changed")
        assert mem.search(data[0], k=1)[0].node.text == "changed"
        mem.delete(top)
        assert top not in {h.node.id for h in mem.search(data[0], k=5)}
        mine = mem.get(nodes[1].id)
        mine.vector[0] = 0.0  # get() returns a private, writable copy


def test_broad_filter_uses_the_index_filter(tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import ruvllm.memory as memory_mod
    from ruvllm.memory.schema import NodeMetadata

    monkeypatch.setattr(memory_mod, "EXACT_FILTER_LIMIT", 10)  # force hnswlib's filtered search
    with Memory.open(tmp_path / "m", dim=DIM) as mem:
        nodes = [Node(text=f"n{i}", vector=v, metadata=NodeMetadata(domain="even" if i % 2 == 0 else "odd"))
                 for i, v in enumerate(data[:1000])]
        mem.add_many(nodes)
        evens = np.array([n.vector for n in nodes[::2]])
        for q in clustered(10, DIM, seed=5):
            hits = mem.search(q, k=10, domain="even")
            assert len(hits) == 10 and all(h.node.metadata.domain == "even" for h in hits)
            truth = {nodes[2 * i].id for i in exact_topk(evens, q[None, :], 10)[0]}
            assert len(truth & {h.node.id for h in hits}) >= 8


def test_hits_read_their_nodes_once_and_only_when_used(tmp_path: Path, data: np.ndarray) -> None:
    """search() answers from the index alone; the first .node reads every hit's row in one query."""
    from ruvllm.errors import NotFoundError

    with Memory.open(tmp_path / "m", dim=DIM, cache_size=0, node_cache=0) as mem:
        nodes = fill(mem, data[:300])
        by_id = {n.id: n for n in nodes}
        statements: list[str] = []
        mem.store._r().set_trace_callback(statements.append)  # this thread's read connection
        hits = mem.search(data[0], k=10)
        scores_only = [h.score for h in hits if h.score >= 0.95]
        assert scores_only and not any("FROM nodes" in s for s in statements)  # scores need no row
        assert hits[3].node.text == by_id[hits[3].node.id].text  # first use: the whole result is read
        for h in hits:
            assert np.allclose(h.node.vector, by_id[h.node.id].vector)
        assert sum("FROM nodes" in s for s in statements) == 1
        # a batch search reads the union of its rows' nodes in one query too
        statements.clear()
        batch = mem.search_batch(data[:4], k=10)
        assert [h.node.id for h in batch[2]] == [h.node.id for h in mem.search(data[2], k=10)]
        assert all(h.node.id in by_id for row in batch for h in row)
        assert sum("FROM nodes" in s for s in statements) == 2  # the batch's one + the single search's one
        # a node deleted between the search and its first use is reported, not invented
        gone = mem.search(data[7], k=3)
        mem.delete(mem.search(data[7], k=1)[0].node.id)
        with pytest.raises(NotFoundError, match="deleted after the search"):
            _ = gone[0].node
