"""``ruvllm migrate``: embedded → PostgreSQL + pgvector (one server, or sharded over two) → embedded
loses nothing (every node id, version, vector, earlier version and edge), and a non-empty target is
refused unless --force. Runs against real PostgreSQL + pgvector servers started on loopback for this
module (a failure to start fails the tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from conftest import run_cli
from ruvllm.config import HnswParams
from ruvllm.errors import NotFoundError, StoreError
from ruvllm.memory import Memory, WriteBack
from ruvllm.memory.backends.localpg import LocalPostgres
from ruvllm.memory.backends.migrate import parse_endpoint, run_migration
from ruvllm.memory.backends.pgvector import PgMemory
from ruvllm.memory.backends.sharded import ShardedPgMemory
from ruvllm.memory.schema import Edge, EdgeType, Node, NodeMetadata, NodeType

DIM = 12
N = 120


@pytest.fixture
def schema(pg_server: LocalPostgres) -> Iterator[str]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _populate(mem: Any) -> None:
    rng = np.random.default_rng(3)
    kinds = list(NodeType)
    nodes = [Node(text=f"node {i}", vector=rng.normal(size=DIM).astype(np.float32), type=kinds[i % 4],
                  source=f"src{i % 3}", metadata=NodeMetadata(timestamp=1_700_000_000 + i * 0.5, tags=[f"t{i % 5}"],
                                                              domain=["py", "js", ""][i % 3],
                                                              confidence=round(0.5 + i / 400, 4)))
             for i in range(N)]
    edges = [Edge(nodes[i].id, nodes[(i * 7 + 1) % N].id, list(EdgeType)[i % 5], weight=round((i % 10) / 10, 2))
             for i in range(0, N, 2)]
    mem.add_many(nodes[:60], edges=[e for e in edges if {e.src, e.dst} <= {n.id for n in nodes[:60]}])
    mem.add_many(nodes[60:], edges=[e for e in edges if not {e.src, e.dst} <= {n.id for n in nodes[:60]}])
    for i in range(0, N, 9):  # earlier versions: some nodes updated once, some three times
        for v in range(1 if i % 2 else 3):
            mem.update(nodes[i].id, text=f"node {i} v{v + 2}", vector=rng.normal(size=DIM).astype(np.float32),
                       tags=[f"t{i % 5}", f"v{v + 2}"])
    wb = WriteBack(mem)
    q = rng.normal(size=DIM).astype(np.float32)
    wb.write_answer("What does json.dumps do?", "It returns a str.", q, [nodes[0].id], [0.9], 0.9)
    wb.write_answer("What does json.dumps do?", "Serialises an object to a JSON formatted str.", q,
                    [nodes[1].id], [0.8], 0.8)


def _snapshot(mem: Any) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
    """Everything observable through the public API, by node id."""
    nodes = mem.find(limit=10 * N)
    out: dict[str, Any] = {}
    edges: set[tuple[Any, ...]] = set()
    for n in nodes:
        md = n.metadata
        hist = [(h.metadata.version, h.text, h.vector.tolist(), h.metadata.timestamp, h.metadata.tags)
                for h in mem.history(n.id)]
        out[n.id] = (md.version, n.text, n.type, n.source, md.tags, md.domain, round(md.confidence, 9),
                     md.timestamp, n.vector.tolist(), hist)
        for e in mem.edges(n.id):
            edges.add((e.id, e.src, e.dst, e.rel, round(e.weight, 9), e.metadata.created_by,
                       round(e.metadata.confidence, 9), e.metadata.timestamp))
    return out, edges


def test_migrate_embedded_to_pg_and_back_loses_nothing(pg_server: LocalPostgres, schema: str, tmp_path: Path) -> None:
    with Memory.open(tmp_path / "a" / "memory", dim=DIM) as src:
        _populate(src)
        before = _snapshot(src)
        counts = src.store.counts()
    assert len(before[0]) == N + 2 and counts["history_versions"] >= 20 and len(before[1]) >= 60

    r1 = run_cli("migrate", "--from", str(tmp_path / "a"), "--to", pg_server.dsn, "--to-schema", schema,
                 "--batch", "25", RUVLLM_PROGRESS="1")
    assert r1.returncode == 0, r1.stderr
    assert f"migrated {N + 2} nodes ({counts['history_versions']} earlier versions), {counts['edges']} edges" \
        in r1.stdout
    assert "verified counts" in r1.stdout
    with PgMemory.open(pg_server.dsn, dim=DIM, schema=schema) as pg:
        assert _snapshot(pg) == before
        assert pg.counts() == counts

    r2 = run_cli("migrate", "--from", pg_server.dsn, "--from-schema", schema, "--to", str(tmp_path / "b"),
                 "--batch", "40")
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "b" / "ruvllm.json").exists()  # a ruvllm data dir, usable with --data-dir
    with Memory.open(tmp_path / "b" / "memory", dim=DIM) as back:
        after = _snapshot(back)
        assert after == before
        # the index was built from the copied (latest) vectors: each node finds itself first
        for nid, row in list(after[0].items())[::10]:
            if row[1].startswith("Q: "):  # the two write-back nodes share one question vector
                continue
            hit = back.search(np.asarray(row[8], np.float32), k=1)[0]
            assert hit.node.id == nid and hit.score == pytest.approx(1.0, abs=1e-5)


def test_migrate_embedded_to_sharded_and_back_loses_nothing(pg_cluster: Any, tmp_path: Path) -> None:
    """Into a memory hash-partitioned over two shard servers (postgres_fdw) and out again."""
    schema = f"m_{uuid.uuid4().hex[:12]}"
    coord = pg_cluster.coordinator.dsn
    with Memory.open(tmp_path / "a" / "memory", dim=DIM) as src:
        _populate(src)
        before = _snapshot(src)
        counts = src.store.counts()
    target = "pgvector-sharded:" + ";".join([coord, *(s.dsn for s in pg_cluster.shards)])
    try:
        r1 = run_cli("migrate", "--from", str(tmp_path / "a"), "--to", target, "--to-schema", schema, "--batch", "25")
        assert r1.returncode == 0, r1.stderr
        assert "verified counts" in r1.stdout
        with ShardedPgMemory.open(coord, dim=DIM, schema=schema) as sh:
            assert _snapshot(sh) == before and sh.counts() == counts
            assert min(sh.shard_counts()) > 0 and sum(sh.shard_counts()) == N + 2
        r2 = run_cli("migrate", "--from", f"pgvector-sharded:{coord}", "--from-schema", schema,
                     "--to", str(tmp_path / "b"), "--batch", "40")
        assert r2.returncode == 0, r2.stderr
        with Memory.open(tmp_path / "b" / "memory", dim=DIM) as back:
            assert _snapshot(back) == before
    finally:
        for srv in (pg_cluster.coordinator, *pg_cluster.shards):
            with psycopg.connect(srv.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_migrate_refuses_a_non_empty_target_unless_forced(pg_server: LocalPostgres, schema: str,
                                                          tmp_path: Path) -> None:
    with Memory.open(tmp_path / "memory", dim=DIM, params=HnswParams(8, 40, 32)) as src:
        src.add_many([Node(text=f"n{i}", vector=np.eye(DIM, dtype=np.float32)[i]) for i in range(DIM)])
    rep = run_migration(str(tmp_path), pg_server.dsn, to_schema=schema)
    assert (rep.nodes, rep.edges, rep.verified) == (DIM, 0, DIM)
    with pytest.raises(StoreError, match="not empty"):
        run_migration(str(tmp_path), pg_server.dsn, to_schema=schema)
    rep2 = run_migration(str(tmp_path), pg_server.dsn, to_schema=schema, force=True)
    assert (rep2.nodes, rep2.skipped) == (0, DIM)
    bad = run_cli("migrate", "--from", str(tmp_path), "--to", pg_server.dsn, "--to-schema", schema)
    assert bad.returncode != 0 and "not empty" in bad.stderr and "--force" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_endpoints(tmp_path: Path) -> None:
    assert parse_endpoint("postgresql://u@h:5432/db").kind == "pgvector"
    assert parse_endpoint("host=h dbname=db", "s2").schema == "s2"
    assert parse_endpoint("pgvector:postgresql://u@h/db").location == "postgresql://u@h/db"
    with pytest.raises(NotFoundError):
        parse_endpoint(str(tmp_path / "nothing-here"))
    ep = parse_endpoint(str(tmp_path / "new"), for_write=True)
    assert ep.kind == "embedded" and ep.location.endswith("memory")
