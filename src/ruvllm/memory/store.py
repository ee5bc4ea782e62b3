"""The durable store: SQLite in WAL mode, the memory's source of truth.

Tables (one file, ``memory.db``)::

    meta(key, value)                       schema name/version, dim, seq (last change sequence)
    nodes(label, id, type, text, source,   label: INTEGER PRIMARY KEY AUTOINCREMENT, never reused,
          timestamp, tags, domain,         so it doubles as the ANN index's label; vector: float32
          version, confidence, vector)     little-endian blob of length dim
    edges(id, src, dst, rel, weight, ...)  src/dst → nodes.id ON DELETE CASCADE; (src, dst, rel) unique
    node_history(id, version, ...)         every superseded version of a node (update() writes it)

Durability: ``journal_mode=WAL`` + ``synchronous=FULL``. Every write runs in one
``BEGIN IMMEDIATE … COMMIT`` and returns only after COMMIT, and with FULL the WAL is fsynced at
every commit, so an acknowledged write survives a kill -9 *and* a power cut. (NORMAL would
survive a kill -9 too, since the WAL pages are already in the OS page cache, but could lose the
last commits on power loss; it is available as ``synchronous="NORMAL"`` for bulk loads.)

Concurrency: one writer connection guarded by a lock (writes are serialised); each reading
thread gets its own connection, so reads never wait for a write (WAL readers see the last
committed state).

A file that is not SQLite, or a SQLite file with somebody else's schema, raises
``StoreCorruptError`` naming the file; such a file is never written to.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import ConfigError, NotFoundError, StoreCorruptError, StoreError, ValidationError
from ruvllm.memory.schema import Edge, EdgeMetadata, EdgeType, Node, NodeMetadata, NodeType, check_uuid

SCHEMA_NAME = "ruvllm.memory"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x7275766C  # "ruvl": marks the file as ours (PRAGMA application_id)
SQLITE_MAGIC = b"SQLite format 3\x00"
MMAP_BYTES = 1 << 30  # address space, not memory: pages are shared with the OS page cache
MAX_SQL_VARS = 900  # stay well below SQLite's limit on bound parameters per statement

_NODE_COLS = "label, id, type, text, source, timestamp, tags, domain, version, confidence, vector"
_EDGE_COLS = "id, src, dst, rel, weight, timestamp, created_by, confidence"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    label INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    timestamp REAL NOT NULL,
    tags TEXT NOT NULL,
    domain TEXT NOT NULL,
    version INTEGER NOT NULL,
    confidence REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_type ON nodes(type);
CREATE INDEX IF NOT EXISTS nodes_domain ON nodes(domain);
CREATE INDEX IF NOT EXISTS nodes_timestamp ON nodes(timestamp);
CREATE TABLE IF NOT EXISTS edges (
    id TEXT PRIMARY KEY,
    src TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    dst TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    rel TEXT NOT NULL,
    weight REAL NOT NULL,
    timestamp REAL NOT NULL,
    created_by TEXT NOT NULL,
    confidence REAL NOT NULL,
    UNIQUE (src, dst, rel)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst);
CREATE TABLE IF NOT EXISTS node_history (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    timestamp REAL NOT NULL,
    tags TEXT NOT NULL,
    domain TEXT NOT NULL,
    confidence REAL NOT NULL,
    vector BLOB NOT NULL,
    replaced_at REAL NOT NULL,
    PRIMARY KEY (id, version)
);
"""

NodeRow = tuple[Any, ...]


class Filter:
    """Filters on node type, domain, tags (any of) and time (unix seconds, inclusive)."""

    __slots__ = ("domain", "since", "tags", "types", "until")

    def __init__(
        self,
        types: Iterable[NodeType | str] | NodeType | str | None = None,
        domain: str | None = None,
        tags: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ):
        if isinstance(types, (str, NodeType)):
            types = [types]
        try:
            self.types = tuple(NodeType(t).value for t in types) if types is not None else None
        except ValueError:
            raise ValidationError(f"unknown node type in filter {types!r}; valid: "
                                  f"{', '.join(t.value for t in NodeType)}") from None
        self.domain = domain
        self.tags = tuple(tags) if tags is not None else None
        self.since = since
        self.until = until

    @property
    def empty(self) -> bool:
        return self.types is None and self.domain is None and self.tags is None and self.since is None \
            and self.until is None

    def key(self) -> tuple[Any, ...]:
        return (self.types, self.domain, self.tags, self.since, self.until)

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (without the keyword; ``1`` if empty) and its parameters."""
        parts: list[str] = []
        args: list[Any] = []
        if self.types is not None:
            parts.append(f"type IN ({','.join('?' * len(self.types))})")
            args.extend(self.types)
        if self.domain is not None:
            parts.append("domain = ?")
            args.append(self.domain)
        if self.tags is not None:
            marks = ",".join("?" * len(self.tags))
            parts.append(f"EXISTS (SELECT 1 FROM json_each(nodes.tags) WHERE value IN ({marks}))")
            args.extend(self.tags)
        if self.since is not None:
            parts.append("timestamp >= ?")
            args.append(float(self.since))
        if self.until is not None:
            parts.append("timestamp <= ?")
            args.append(float(self.until))
        return (" AND ".join(parts) or "1"), args


def vec_blob(vec: npt.NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def blob_vec(blob: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


_NODE_TYPES = {t.value: t for t in NodeType}


def _tags(raw: str) -> list[str]:
    return [] if raw == "[]" else list(json.loads(raw))


def row_node(row: NodeRow) -> Node:
    """A ``nodes`` row (``_NODE_COLS`` order) → ``Node``."""
    _, nid, typ, text, source, ts, tags, domain, version, conf, blob = row
    return Node(
        text=text, vector=blob_vec(blob), type=_NODE_TYPES[typ], source=source, id=nid,
        metadata=NodeMetadata(timestamp=ts, tags=_tags(tags), domain=domain, version=version, confidence=conf),
    )


def rows_nodes(rows: Sequence[NodeRow], dim: int) -> list[Node]:
    """Many rows at once: one allocation for all the vectors (each node's vector is a row of it)."""
    if not rows:
        return []
    vecs = np.frombuffer(b"".join(r[10] for r in rows), dtype="<f4").reshape(len(rows), dim).astype(np.float32)
    out = []
    new_node, new_meta = Node.__new__, NodeMetadata.__new__
    for row, vec in zip(rows, vecs, strict=True):
        md = new_meta(NodeMetadata)
        md.timestamp, md.tags, md.domain, md.version, md.confidence = row[5], _tags(row[6]), row[7], row[8], row[9]
        node = new_node(Node)
        node.id, node.type, node.text, node.source = row[1], _NODE_TYPES[row[2]], row[3], row[4]
        node.vector, node.metadata = vec, md
        out.append(node)
    return out


def row_edge(row: tuple[Any, ...]) -> Edge:
    eid, src, dst, rel, weight, ts, created_by, conf = row
    return Edge(src=src, dst=dst, rel=EdgeType(rel), weight=weight, id=eid,
                metadata=EdgeMetadata(timestamp=ts, created_by=created_by, confidence=conf))


def _chunks(seq: Sequence[Any], n: int = MAX_SQL_VARS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def check_database_file(path: Path) -> None:
    """Raise ``StoreCorruptError`` if ``path`` exists, is non-empty and is not a SQLite file."""
    if not path.exists():
        return
    if not path.is_file():
        raise StoreCorruptError(f"{path} is not a regular file; move it away (it was left untouched)")
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise StoreCorruptError(
            f"{path} is not a SQLite database (corrupt or foreign); it was left untouched — "
            "move it away to start an empty memory, or restore it from a backup"
        )


class Store:
    """SQLite store of nodes, edges and node history. Thread-safe; one writer at a time."""

    def __init__(self, path: Path, dim: int, *, synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        self.dim = dim
        self.synchronous = synchronous
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        check_database_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._w = self._connect()
        self._init_schema()

    # ---- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # reads straight from the page cache, no copies
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path} cannot be opened as a SQLite database ({exc}); "
                                    "it was left untouched") from None
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _r(self) -> sqlite3.Connection:
        """This thread's read connection."""
        if self._closed:
            raise StoreError(f"the memory store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _init_schema(self) -> None:
        w = self._w
        try:
            app_id = w.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in w.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path} is not a readable SQLite database ({exc}); it was left untouched") \
                from None
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if user_tables and app_id != APPLICATION_ID:
            raise StoreCorruptError(
                f"{self.path} is a SQLite database with a foreign schema (tables: {', '.join(sorted(user_tables))}); "
                "it is not a ruvllm memory and was left untouched"
            )
        try:
            w.execute("PRAGMA journal_mode = WAL")
            w.execute(f"PRAGMA synchronous = {self.synchronous}")
            if not user_tables:
                with self._tx() as c:
                    for stmt in _DDL.split(";"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                        ("schema", SCHEMA_NAME), ("schema_version", str(SCHEMA_VERSION)), ("dim", str(self.dim)),
                        ("seq", "0"), ("created", str(time.time())),
                    ])
            meta = dict(w.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreCorruptError(f"{self.path} is corrupt ({exc}); it was left untouched") from None
        if meta.get("schema") != SCHEMA_NAME:
            raise StoreCorruptError(f"{self.path} is not a ruvllm memory (schema {meta.get('schema')!r}); "
                                    "it was left untouched")
        if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has memory schema version {meta['schema_version']}, newer than this "
                             f"ruvllm understands ({SCHEMA_VERSION}); upgrade ruvllm")
        stored_dim = int(meta.get("dim", "0"))
        if stored_dim != self.dim:
            raise ConfigError(
                f"the memory at {self.path} holds {stored_dim}-d vectors but memory.dim is {self.dim}; "
                f"set memory.dim = {stored_dim} or use another data directory"
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: serialised, committed (durable) before the block's caller returns."""
        with self._write_lock:
            if self._closed:
                raise StoreError(f"the memory store {self.path} is closed")
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                yield w
                w.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq'")
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._conns_lock:
                for conn in self._conns:
                    with suppress(sqlite3.Error):  # closing a broken connection
                        conn.close()
                self._conns.clear()

    # ---- meta --------------------------------------------------------------------------
    def seq(self) -> int:
        return int(self._r().execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    def count(self) -> int:
        return int(self._r().execute("SELECT count(*) FROM nodes").fetchone()[0])

    def max_label(self) -> int:
        row = self._r().execute("SELECT max(label) FROM nodes").fetchone()
        return int(row[0] or 0)

    # ---- writes --------------------------------------------------------------------------
    def insert(self, nodes: Sequence[Node], edges: Sequence[Edge]) -> list[int]:
        """Insert validated nodes then edges in one transaction; returns the nodes' labels."""
        labels: list[int] = []
        try:
            with self._tx() as c:
                for n in nodes:
                    md = n.metadata
                    cur = c.execute(
                        "INSERT INTO nodes(id, type, text, source, timestamp, tags, domain, version, confidence, "
                        "vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (n.id, n.type.value, n.text, n.source, float(md.timestamp), json.dumps(md.tags), md.domain,
                         md.version, md.confidence, vec_blob(n.vector)),
                    )
                    labels.append(int(cur.lastrowid or 0))
                for e in edges:
                    self._insert_edge(c, e)
        except sqlite3.IntegrityError as exc:
            raise self._integrity(exc, nodes, edges) from None
        return labels

    @staticmethod
    def _insert_edge(c: sqlite3.Connection, e: Edge) -> None:
        md = e.metadata
        c.execute(
            f"INSERT INTO edges({_EDGE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(src, dst, rel) DO UPDATE SET weight = excluded.weight, timestamp = excluded.timestamp, "
            "created_by = excluded.created_by, confidence = excluded.confidence",
            (e.id, e.src, e.dst, e.rel.value, e.weight, float(md.timestamp), md.created_by, md.confidence),
        )

    def _integrity(self, exc: sqlite3.IntegrityError, nodes: Sequence[Node], edges: Sequence[Edge]) -> Exception:
        msg = str(exc)
        if "nodes.id" in msg:
            ids = [n.id for n in nodes]
            dup = [i for i in ids if self.has(i)] or [i for i in ids if ids.count(i) > 1]
            return ValidationError(f"node id {dup[0] if dup else '?'} already exists; use update() to change it")
        if "FOREIGN KEY" in msg:
            known = {n.id for n in nodes}
            for e in edges:
                for end in (e.src, e.dst):
                    if end not in known and not self.has(end):
                        return NotFoundError(f"edge {e.id} refers to node {end}, which does not exist")
            return NotFoundError(f"an edge refers to a node that does not exist ({msg})")
        if "edges.id" in msg:
            return ValidationError(f"an edge id already exists ({msg})")
        return StoreError(f"write to {self.path} rejected: {msg}")

    def update(self, node: Node, replaced: Node) -> int:
        """Write ``node`` (already version-bumped) over its row; ``replaced`` goes to history. Returns its label."""
        with self._tx() as c:
            md = replaced.metadata
            c.execute(
                "INSERT OR REPLACE INTO node_history(id, version, type, text, source, timestamp, tags, domain, "
                "confidence, vector, replaced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (replaced.id, md.version, replaced.type.value, replaced.text, replaced.source, float(md.timestamp),
                 json.dumps(md.tags), md.domain, md.confidence, vec_blob(replaced.vector), time.time()),
            )
            nm = node.metadata
            cur = c.execute(
                "UPDATE nodes SET type = ?, text = ?, source = ?, timestamp = ?, tags = ?, domain = ?, version = ?, "
                "confidence = ?, vector = ? WHERE id = ? AND version = ? RETURNING label",
                (node.type.value, node.text, node.source, float(nm.timestamp), json.dumps(nm.tags), nm.domain,
                 nm.version, nm.confidence, vec_blob(node.vector), node.id, md.version),
            )
            row = cur.fetchone()
            if row is None:
                raise StoreError(f"node {node.id} changed or vanished during the update; retry")
            return int(row[0])

    def delete(self, node_id: str) -> int:
        """Delete a node, its edges (cascade) and its history; returns its label."""
        with self._tx() as c:
            row = c.execute("DELETE FROM nodes WHERE id = ? RETURNING label", (node_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no node with id {node_id}")
            c.execute("DELETE FROM node_history WHERE id = ?", (node_id,))
            return int(row[0])

    def add_edges(self, edges: Sequence[Edge]) -> None:
        try:
            with self._tx() as c:
                for e in edges:
                    self._insert_edge(c, e)
        except sqlite3.IntegrityError as exc:
            raise self._integrity(exc, [], edges) from None

    def delete_edge(self, edge_id: str) -> None:
        with self._tx() as c:
            if c.execute("DELETE FROM edges WHERE id = ?", (edge_id,)).rowcount == 0:
                raise NotFoundError(f"no edge with id {edge_id}")

    def prune_edges(self, min_weight: float) -> int:
        with self._tx() as c:
            return int(c.execute("DELETE FROM edges WHERE weight < ?", (float(min_weight),)).rowcount)

    # ---- reads -----------------------------------------------------------------------------
    def has(self, node_id: str) -> bool:
        return self._r().execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone() is not None

    def get(self, node_id: str) -> Node:
        if not isinstance(node_id, str):
            check_uuid(node_id, "node id")  # raises ValidationError naming the type
        row = self._r().execute(f"SELECT {_NODE_COLS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no node with id {node_id}")
        return row_node(row)

    def get_many(self, node_ids: Sequence[str]) -> dict[str, Node]:
        """The nodes that exist among ``node_ids``, by id."""
        out: dict[str, Node] = {}
        r = self._r()
        for part in _chunks(list(dict.fromkeys(node_ids))):
            q = f"SELECT {_NODE_COLS} FROM nodes WHERE id IN ({','.join('?' * len(part))})"
            rows = r.execute(q, tuple(part)).fetchall()
            for row, node in zip(rows, rows_nodes(rows, self.dim), strict=True):
                out[row[1]] = node
        return out

    def by_labels(self, labels: Sequence[int]) -> dict[int, Node]:
        out: dict[int, Node] = {}
        r = self._r()
        for part in _chunks(list(labels)):
            q = f"SELECT {_NODE_COLS} FROM nodes WHERE label IN ({','.join('?' * len(part))})"
            rows = r.execute(q, tuple(part)).fetchall()
            for row, node in zip(rows, rows_nodes(rows, self.dim), strict=True):
                out[row[0]] = node
        return out

    def label_of(self, node_id: str) -> int | None:
        row = self._r().execute("SELECT label FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return int(row[0]) if row else None

    def history(self, node_id: str) -> list[Node]:
        """Earlier versions of a node, oldest first."""
        rows = self._r().execute(
            "SELECT 0, id, type, text, source, timestamp, tags, domain, version, confidence, vector "
            "FROM node_history WHERE id = ? ORDER BY version", (node_id,),
        ).fetchall()
        return [row_node(r) for r in rows]

    def iter_vectors(self, batch: int = 10_000, where: str = "1", args: Sequence[Any] = ()) \
            -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """(labels, vectors) in label order, ``batch`` rows at a time."""
        last = 0
        r = self._r()
        while True:
            rows = r.execute(
                f"SELECT label, vector FROM nodes WHERE label > ? AND ({where}) ORDER BY label LIMIT ?",
                (last, *args, batch),
            ).fetchall()
            if not rows:
                return
            labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(len(rows), self.dim)
            yield labels, vecs.astype(np.float32)
            last = int(labels[-1])

    def labels_where(self, flt: Filter) -> npt.NDArray[np.int64]:
        where, args = flt.sql()
        rows = self._r().execute(f"SELECT label FROM nodes WHERE {where}", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def find(self, flt: Filter, limit: int = 100) -> list[Node]:
        where, args = flt.sql()
        rows = self._r().execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE {where} ORDER BY timestamp DESC LIMIT ?", (*args, int(limit)),
        ).fetchall()
        return [row_node(r) for r in rows]

    def edges_of(self, node_id: str) -> list[Edge]:
        rows = self._r().execute(
            f"SELECT {_EDGE_COLS} FROM edges WHERE src = ? UNION SELECT {_EDGE_COLS} FROM edges WHERE dst = ?",
            (node_id, node_id),
        ).fetchall()
        return [row_edge(r) for r in rows]

    def edges_touching(self, node_ids: Sequence[str], min_weight: float = 0.0,
                       rels: Sequence[str] | None = None) -> list[Edge]:
        """Edges with either end in ``node_ids`` (weight >= min_weight, rel in rels)."""
        return [row_edge(row) for row in self._edge_rows(node_ids, _EDGE_COLS, min_weight, rels)]

    def links(self, node_ids: Sequence[str], min_weight: float = 0.0,
              rels: Sequence[str] | None = None) -> list[tuple[str, str, str, float]]:
        """(src, dst, rel, weight) of the edges touching ``node_ids``: the graph walk's hot path."""
        return [(r[1], r[2], r[3], r[4]) for r in self._edge_rows(node_ids, "id, src, dst, rel, weight",
                                                                  min_weight, rels)]

    def _edge_rows(self, node_ids: Sequence[str], cols: str, min_weight: float,
                   rels: Sequence[str] | None) -> list[tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        r = self._r()
        rel_sql = f" AND rel IN ({','.join('?' * len(rels))})" if rels else ""
        extra = tuple(rels) if rels else ()
        for part in _chunks(list(node_ids), MAX_SQL_VARS // 2):
            marks = ",".join("?" * len(part))
            q = (f"SELECT {cols} FROM edges WHERE src IN ({marks}) AND weight >= ?{rel_sql} UNION ALL "
                 f"SELECT {cols} FROM edges WHERE dst IN ({marks}) AND weight >= ?{rel_sql}")
            for row in r.execute(q, (*part, min_weight, *extra, *part, min_weight, *extra)):
                out[row[0]] = row
        return list(out.values())

    def edges_among(self, node_ids: Sequence[str]) -> list[Edge]:
        ids = list(dict.fromkeys(node_ids))
        if not ids or len(ids) > MAX_SQL_VARS // 2:
            wanted = set(ids)
            return [e for e in self.edges_touching(ids) if e.src in wanted and e.dst in wanted]
        marks = ",".join("?" * len(ids))
        rows = self._r().execute(
            f"SELECT {_EDGE_COLS} FROM edges WHERE src IN ({marks}) AND dst IN ({marks})", (*ids, *ids),
        ).fetchall()
        return [row_edge(r) for r in rows]

    def query_texts(self) -> Iterator[tuple[str, str, list[str]]]:
        """(id, text, tags) of every Query node, for the write-back's MinHash index."""
        for nid, text, tags in self._r().execute("SELECT id, text, tags FROM nodes WHERE type = 'Query'").fetchall():
            yield nid, text, json.loads(tags)

    def counts(self) -> dict[str, Any]:
        r = self._r()
        by_type = dict(r.execute("SELECT type, count(*) FROM nodes GROUP BY type").fetchall())
        by_rel = dict(r.execute("SELECT rel, count(*) FROM edges GROUP BY rel").fetchall())
        history = r.execute("SELECT count(*) FROM node_history").fetchone()[0]
        return {"nodes": sum(by_type.values()), "nodes_by_type": by_type, "edges": sum(by_rel.values()),
                "edges_by_rel": by_rel, "history_versions": int(history)}
