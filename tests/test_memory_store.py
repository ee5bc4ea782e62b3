"""The durable store through the Memory API: schema validation, CRUD, history, cascade, filters, corrupt files."""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from ruvllm.config import HnswParams
from ruvllm.errors import ConfigError, InvalidInputError, NotFoundError, StoreCorruptError, StoreError, ValidationError
from ruvllm.memory import Memory
from ruvllm.memory.schema import Edge, EdgeMetadata, EdgeType, Node, NodeMetadata, NodeType

DIM = 16


def vec(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=DIM).astype(np.float32)


@pytest.fixture
def mem(tmp_path: Path) -> Memory:
    m = Memory.open(tmp_path / "mem", dim=DIM, params=HnswParams(16, 100, 32))
    yield m
    m.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda r: Node(text="x", vector=vec(r), id="not-a-uuid"), "not a valid UUID"),
        (lambda r: Node(text="x", vector=np.ones(DIM + 1, np.float32)), "dimension 17, expected 16"),
        (lambda r: Node(text="x", vector=np.full(DIM, np.nan, np.float32)), "NaN or inf"),
        (lambda r: Node(text="x", vector=np.full(DIM, np.inf, np.float32)), "NaN or inf"),
        (lambda r: Node(text="x", vector=vec(r), type="Banana"), "unknown node type"),  # type: ignore[arg-type]
        (lambda r: Node(text="   ", vector=vec(r)), "empty"),
        (lambda r: Node(text="x", vector=vec(r), metadata=NodeMetadata(confidence=1.5)), "confidence"),
        (lambda r: Node(text="x", vector=vec(r), metadata=NodeMetadata(confidence=math.nan)), "confidence"),
        (lambda r: Node(text="x", vector=vec(r), metadata=NodeMetadata(version=0)), "version"),
        (lambda r: Node(text="x", vector=np.zeros(DIM, np.float32)), "all-zero"),
    ],
)
def test_bad_nodes_are_rejected_with_a_clear_error(mem: Memory, rng: np.random.Generator, make, match) -> None:
    with pytest.raises(ValidationError, match=match):
        mem.add(make(rng))
    assert mem.count() == 0


def test_bad_edges_are_rejected(mem: Memory, rng: np.random.Generator) -> None:
    a, b = Node(text="a", vector=vec(rng)), Node(text="b", vector=vec(rng))
    mem.add_many([a, b])
    with pytest.raises(ValidationError, match="unknown edge type"):
        mem.add_edge(Edge(a.id, b.id, "Likes"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="weight"):
        mem.add_edge(Edge(a.id, b.id, EdgeType.CITES, weight=1.2))
    with pytest.raises(ValidationError, match="weight"):
        mem.add_edge(Edge(a.id, b.id, EdgeType.CITES, weight=-0.1))
    with pytest.raises(ValidationError, match="confidence"):
        mem.add_edge(Edge(a.id, b.id, EdgeType.CITES, metadata=EdgeMetadata(confidence=2.0)))
    with pytest.raises(ValidationError, match="self-loop"):
        mem.add_edge(Edge(a.id, a.id, EdgeType.CITES))
    with pytest.raises(ValidationError, match="UUID"):
        mem.add_edge(Edge(a.id, "nope", EdgeType.CITES))
    with pytest.raises(NotFoundError, match="does not exist"):
        mem.add_edge(Edge(a.id, Node(text="c", vector=vec(rng)).id, EdgeType.CITES))
    assert mem.edges(a.id) == []


def test_a_failed_batch_writes_nothing(mem: Memory, rng: np.random.Generator) -> None:
    a = Node(text="a", vector=vec(rng))
    mem.add(a)
    dup = Node(text="again", vector=vec(rng), id=a.id)
    with pytest.raises(ValidationError, match="already exists"):
        mem.add_many([Node(text="fresh", vector=vec(rng)), dup])
    assert mem.count() == 1 and len(mem.search(vec(rng), k=5)) == 1


def test_crud_and_history(mem: Memory, rng: np.random.Generator) -> None:
    n = Node(text="first", vector=vec(rng), type=NodeType.FACT, source="unit",
             metadata=NodeMetadata(tags=["a"], domain="d", confidence=0.9))
    mem.add(n)
    got = mem.get(n.id)
    assert got.text == "first" and got.type == NodeType.FACT and got.metadata.tags == ["a"]
    np.testing.assert_array_equal(got.vector, n.vector)
    new_vec = vec(rng)
    up = mem.update(n.id, text="second", vector=new_vec, confidence=0.5, tags=["b"])
    assert up.metadata.version == 2 and mem.get(n.id).text == "second"
    assert mem.search(new_vec, k=1)[0].node.id == n.id  # the index follows the new vector
    mem.update(n.id, text="third")
    hist = mem.history(n.id)
    assert [h.metadata.version for h in hist] == [1, 2]
    assert [h.text for h in hist] == ["first", "second"] and hist[0].metadata.confidence == 0.9
    with pytest.raises(ValidationError, match="confidence"):
        mem.update(n.id, confidence=3.0)
    assert mem.get(n.id).metadata.version == 3
    with pytest.raises(NotFoundError):
        mem.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFoundError):
        mem.update("00000000-0000-4000-8000-000000000000", text="x")


def test_delete_cascades_to_edges_and_index(mem: Memory, rng: np.random.Generator) -> None:
    nodes = [Node(text=f"n{i}", vector=vec(rng)) for i in range(5)]
    edges = [Edge(nodes[0].id, nodes[i].id, EdgeType.SAME_TOPIC, 0.5) for i in range(1, 5)]
    mem.add_many(nodes, edges)
    assert len(mem.edges(nodes[0].id)) == 4
    mem.delete(nodes[0].id)
    assert mem.count() == 4
    with pytest.raises(NotFoundError):
        mem.get(nodes[0].id)
    for n in nodes[1:]:
        assert mem.edges(n.id) == []
    assert all(h.node.id != nodes[0].id for h in mem.search(nodes[0].vector, k=5))
    assert mem.stats()["edges"] == 0
    with pytest.raises(NotFoundError):
        mem.delete(nodes[0].id)


def test_filters_on_type_domain_tags_and_time(mem: Memory, rng: np.random.Generator) -> None:
    now = time.time()
    nodes = []
    for i in range(60):
        nodes.append(Node(
            text=f"n{i}", vector=vec(rng), type=[NodeType.DOCUMENT, NodeType.QUERY, NodeType.FACT][i % 3],
            metadata=NodeMetadata(timestamp=now - i * 10, domain="json" if i % 2 else "os", tags=[f"t{i % 4}"]),
        ))
    mem.add_many(nodes)
    q = vec(rng)
    hits = mem.search(q, k=50, types=[NodeType.QUERY])
    assert len(hits) == 20 and all(h.node.type == NodeType.QUERY for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.node.metadata.domain == "json" for h in mem.search(q, k=60, domain="json"))
    tagged = mem.search(q, k=60, tags=["t1", "t2"])
    assert len(tagged) == 30 and all(h.node.metadata.tags[0] in ("t1", "t2") for h in tagged)
    recent = mem.search(q, k=60, since=now - 95)
    assert len(recent) == 10
    assert len(mem.search(q, k=60, until=now - 95)) == 50
    assert len(mem.find(types="Fact", domain="os")) == 10
    with pytest.raises(ValidationError, match="unknown node type"):
        mem.search(q, types=["Nope"])


def test_bad_queries(mem: Memory, rng: np.random.Generator) -> None:
    mem.add(Node(text="a", vector=vec(rng)))
    for bad_k in (0, -1, 10_000, 2.5, True, "3"):
        with pytest.raises(InvalidInputError, match="k must be"):
            mem.search(vec(rng), k=bad_k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="dimension"):
        mem.search(np.ones(DIM + 3, np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        mem.search(np.full(DIM, np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="zeros"):
        mem.search(np.zeros(DIM, np.float32))
    with pytest.raises(InvalidInputError, match="hops"):
        mem.expand([], hops=-1)
    with pytest.raises(InvalidInputError, match="min_score"):
        mem.search_threshold(vec(rng), min_score=2.0)


def test_not_a_database_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    d = tmp_path / "mem"
    d.mkdir()
    db = d / "memory.db"
    db.write_bytes(b"this is not a database" * 100)
    before = digest(db)
    with pytest.raises(StoreCorruptError, match="memory.db"):
        Memory.open(d, dim=DIM)
    assert digest(db) == before
    assert sorted(p.name for p in d.iterdir()) == ["lock", "memory.db"]  # only the owner lock was added


def test_foreign_sqlite_schema_is_reported_and_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "mem"
    d.mkdir()
    db = d / "memory.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'x')")
    conn.commit()
    conn.close()
    before = digest(db)
    with pytest.raises(StoreCorruptError, match=r"memory\.db.*foreign"):
        Memory.open(d, dim=DIM)
    assert digest(db) == before


def test_dimension_mismatch_on_reopen(tmp_path: Path, rng: np.random.Generator) -> None:
    with Memory.open(tmp_path / "m", dim=DIM) as m:
        m.add(Node(text="a", vector=vec(rng)))
    with pytest.raises(ConfigError, match="memory.dim"):
        Memory.open(tmp_path / "m", dim=DIM * 2)


def test_closed_memory_refuses_and_close_is_idempotent(tmp_path: Path, rng: np.random.Generator) -> None:
    m = Memory.open(tmp_path / "m", dim=DIM)
    m.add(Node(text="a", vector=vec(rng)))
    m.close()
    m.close()
    with pytest.raises(StoreError, match="closed"):
        m.search(vec(rng))
    with pytest.raises(StoreError, match="closed"):
        m.add(Node(text="b", vector=vec(rng)))


def test_reads_from_other_threads(mem: Memory, rng: np.random.Generator) -> None:
    import threading

    nodes = [Node(text=f"n{i}", vector=vec(rng)) for i in range(50)]
    mem.add_many(nodes)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for n in nodes:
                assert mem.search(n.vector, k=1)[0].node.id == n.id
                assert mem.get(n.id).text == n.text
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer() -> None:
        for i in range(30):
            mem.add(Node(text=f"w{i}", vector=vec(np.random.default_rng(i))))

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert mem.count() == 80


def test_truncated_database_is_reported_and_left_alone(tmp_path: Path, rng: np.random.Generator) -> None:
    d = tmp_path / "mem"
    with Memory.open(d, dim=DIM) as m:
        m.add_many([Node(text="x" * 2000, vector=vec(rng)) for _ in range(300)])
    (d / "index.hnsw").unlink()  # force a full read of the store on open
    db = d / "memory.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    before = digest(db)
    with pytest.raises(StoreCorruptError, match="memory.db"):
        Memory.open(d, dim=DIM)
    assert digest(db) == before
