"""The memory on PostgreSQL + pgvector: the same API as the embedded ``Memory``, for a memory that
outgrows one process or one machine (see docs/scale.md).

    mem = PgMemory.open("postgresql://ruvllm@db:5432/ruvllm", dim=384, params=HnswParams(32, 200, 64))

Tables, in schema ``schema`` (default ``ruvllm``)::

    meta(key, value)                      schema name/version, dim, HNSW m / ef_construction
    nodes(id uuid PK, vector vector(D), text, type, source, timestamp, tags text[], domain, version,
          confidence)                     + HNSW index (vector_cosine_ops, m, ef_construction),
                                          b-tree on type/domain/timestamp, GIN on tags
    node_history(id → nodes ON DELETE CASCADE, version, ... , replaced_at)   superseded versions
    edges(id uuid PK, src/dst → nodes ON DELETE CASCADE, rel, weight, timestamp, created_by,
          confidence, UNIQUE (src, dst, rel))

Scores follow the embedded convention: cosine similarity (``1 - (vector <=> q)``), best first.
``hnsw.ef_search`` is set per query (``SET LOCAL``) to ``max(ef or params.ef_search, k)``.
A filtered search matching at most ``EXACT_FILTER_LIMIT`` nodes is answered exactly (as the
embedded backend does); a broader one walks the HNSW index with the filter applied to its
candidates and falls back to an exact scan if that returned fewer than ``k``. Graph expansion is
one SQL statement per hop (a join of the frontier with ``edges`` in both directions, best path
weight per reached node via ``DISTINCT ON``), with the embedded backend's semantics.

Durability: every write is one transaction, committed before the call returns (``synchronous_commit``
is the server's; keep it ``on``). Lost connections: every call reconnects and retries up to
``retries`` times with exponential backoff (``backoff_s``, doubling), then raises
``MemoryUnavailableError`` naming the server. Reads are always safe to retry. Writes are made safe
to retry instead of being retried blindly: a lost ``COMMIT`` leaves the write either fully applied
or not at all, so on a retry

- ``add``/``add_many`` (fixed UUIDs): if every node of the batch is already there with the same
  version and text, the lost attempt committed and the call succeeds; edges are upserts on
  (src, dst, rel), idempotent by construction;
- ``update``: if the node already is the new version the lost attempt wrote, the call succeeds;
  otherwise the update is applied to the current row (as a fresh call would);
- ``delete``/``delete_edge``: a node/edge that is gone on the retry counts as deleted;
- ``prune_weak_edges``: idempotent (the count returned is that of the attempt that committed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg.types import TypeInfo

from ruvllm.config import HnswParams
from ruvllm.errors import (
    ConfigError,
    InvalidInputError,
    NotFoundError,
    StoreCorruptError,
    StoreError,
    ValidationError,
)
from ruvllm.memory import EXACT_FILTER_LIMIT, Hit
from ruvllm.memory.checks import (
    check_batch,
    check_edge,
    check_ef,
    check_k,
    check_min_score,
    check_node,
    check_query,
    next_version,
)
from ruvllm.memory.graph import Expanded, NeighbourhoodStats, check_expand, check_min_weight, neighbourhood_stats
from ruvllm.memory.schema import Edge, EdgeMetadata, EdgeType, Node, NodeMetadata, NodeType, check_uuid
from ruvllm.memory.store import Filter

log = logging.getLogger("ruvllm.memory.pgvector")

SCHEMA_NAME = "ruvllm.memory"
SCHEMA_VERSION = 1
PG_MAX_EF_SEARCH = 1000  # pgvector's limit on hnsw.ef_search; a larger ef or k is answered exactly
_NODE_TYPES = {t.value: t for t in NodeType}
_REL = {t.value: t for t in EdgeType}
_COLS = "id, type, text, source, timestamp, tags, domain, version, confidence, vector"
_EDGE_COLS = "id, src, dst, rel, weight, timestamp, created_by, confidence"

T = TypeVar("T")
M = TypeVar("M", bound="PgMemory")
Conn = psycopg.Connection[Any]


class MemoryUnavailableError(StoreError):
    """The PostgreSQL server of the memory cannot be reached (down, restarting, network cut)."""

    http_status = 503
    code = "memory_unavailable"


class _NumpyVectorLoader(Loader):
    """pgvector's binary format (uint16 dim, uint16 unused, dim big-endian float32) → float32 array."""

    format = Format.BINARY

    def load(self, data: Any) -> npt.NDArray[np.float32]:
        return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


def _ddl(schema: str, dim: int, params: HnswParams, *, partitioned: bool = False) -> list[sql.Composed]:
    """The tables of one memory. ``partitioned``: the coordinator of a sharded memory (sharded.py) —
    ``nodes`` and ``node_history`` are ``PARTITION BY HASH (id)`` parents whose partitions are foreign
    tables on the shards, so they carry no keys or indexes of their own (PostgreSQL allows none on a
    parent with foreign partitions; each shard's own tables have them), and ``edges`` has no foreign
    keys (the sharded backend checks and cascades them in the same transaction)."""
    s = sql.Identifier(schema)
    types = sql.SQL(", ").join(sql.Literal(t.value) for t in NodeType)
    rels = sql.SQL(", ").join(sql.Literal(t.value) for t in EdgeType)
    d = sql.Literal(dim)
    key = sql.SQL("") if partitioned else sql.SQL(" PRIMARY KEY")
    part = sql.SQL(" PARTITION BY HASH (id)") if partitioned else sql.SQL("")
    ref = sql.SQL("") if partitioned else sql.SQL(" REFERENCES {}.nodes (id) ON DELETE CASCADE").format(s)
    hist_key = sql.SQL("") if partitioned else sql.SQL(", PRIMARY KEY (id, version)")
    node_indexes = [] if partitioned else [
        sql.SQL("CREATE INDEX nodes_type ON {}.nodes (type)").format(s),
        sql.SQL("CREATE INDEX nodes_domain ON {}.nodes (domain)").format(s),
        sql.SQL("CREATE INDEX nodes_timestamp ON {}.nodes (timestamp)").format(s),
        sql.SQL("CREATE INDEX nodes_tags ON {}.nodes USING gin (tags)").format(s),
        _hnsw_ddl(schema, params),
    ]
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
        sql.SQL("CREATE TABLE {}.meta (key text PRIMARY KEY, value text NOT NULL)").format(s),
        sql.SQL("""CREATE TABLE {s}.nodes (
            id uuid NOT NULL{key}, vector vector({d}) NOT NULL, text text NOT NULL,
            type text NOT NULL CHECK (type IN ({types})), source text NOT NULL,
            timestamp double precision NOT NULL, tags text[] NOT NULL, domain text NOT NULL,
            version integer NOT NULL CHECK (version >= 1), confidence double precision NOT NULL){part}""").format(
            s=s, d=d, types=types, key=key, part=part),
        *node_indexes,
        sql.SQL("""CREATE TABLE {s}.node_history (
            id uuid NOT NULL{ref}, version integer NOT NULL,
            vector vector({d}) NOT NULL, text text NOT NULL, type text NOT NULL, source text NOT NULL,
            timestamp double precision NOT NULL, tags text[] NOT NULL, domain text NOT NULL,
            confidence double precision NOT NULL, replaced_at double precision NOT NULL{hist_key}){part}""").format(
            s=s, d=d, ref=ref, hist_key=hist_key, part=part),
        sql.SQL("""CREATE TABLE {s}.edges (
            id uuid PRIMARY KEY,
            src uuid NOT NULL{ref},
            dst uuid NOT NULL{ref},
            rel text NOT NULL CHECK (rel IN ({rels})), weight double precision NOT NULL,
            timestamp double precision NOT NULL, created_by text NOT NULL, confidence double precision NOT NULL,
            UNIQUE (src, dst, rel))""").format(s=s, rels=rels, ref=ref),
        sql.SQL("CREATE INDEX edges_dst ON {}.edges (dst)").format(s),
    ]


def _hnsw_ddl(schema: str, params: HnswParams) -> sql.Composed:
    return sql.SQL("CREATE INDEX nodes_vector_hnsw ON {}.nodes USING hnsw (vector vector_cosine_ops) "
                   "WITH (m = {}, ef_construction = {})").format(
        sql.Identifier(schema), sql.Literal(int(params.m)), sql.Literal(int(params.ef_construction)))


def _node(r: Sequence[Any]) -> Node:
    md = NodeMetadata(timestamp=r[4], tags=list(r[5]), domain=r[6], version=r[7], confidence=r[8])
    return Node(text=r[2], vector=np.asarray(r[9], dtype=np.float32), type=_NODE_TYPES[r[1]], source=r[3],
                id=str(r[0]), metadata=md)


def _edge(r: Sequence[Any]) -> Edge:
    return Edge(src=str(r[1]), dst=str(r[2]), rel=_REL[r[3]], weight=r[4], id=str(r[0]),
                metadata=EdgeMetadata(timestamp=r[5], created_by=r[6], confidence=r[7]))


def _node_params(n: Node) -> tuple[Any, ...]:
    md = n.metadata
    return (n.id, n.type.value, n.text, n.source, float(md.timestamp), list(md.tags), md.domain, int(md.version),
            float(md.confidence), n.vector)


def _edge_params(e: Edge) -> tuple[Any, ...]:
    md = e.metadata
    return (e.id, e.src, e.dst, e.rel.value, float(e.weight), float(md.timestamp), md.created_by,
            float(md.confidence))


def _valid_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _lost(exc: BaseException, conn: Conn | None) -> bool:
    """Whether ``exc`` means the connection (or the server) is gone, rather than a bad statement."""
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        if conn is None or conn.closed or conn.broken:
            return True
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return False


class _PgStoreView:
    """``mem.store`` for the write-back: its two store-level reads."""

    def __init__(self, mem: PgMemory):
        self._mem = mem

    def query_texts(self) -> Iterator[tuple[str, str, list[str]]]:
        rows = self._mem._read(lambda c: c.execute(
            self._mem._q("SELECT id, text, tags FROM {s}.nodes WHERE type = 'Query'")).fetchall())
        for nid, text, tags in rows:
            yield str(nid), text, list(tags)

    def edges_touching(self, node_ids: Sequence[str], min_weight: float = 0.0,
                       rels: Sequence[str] | None = None) -> list[Edge]:
        return self._mem.edges_touching(node_ids, min_weight, rels)


class PgMemory:
    """Nodes, edges, history and vector search in PostgreSQL + pgvector. Thread-safe (a connection per thread)."""

    BACKEND = "pgvector"  # memory.backend's name for it
    LAYOUT = "single"  # meta's "layout": "single" here, "sharded" for ShardedPgMemory (sharded.py)

    def __init__(self, dsn: str, dim: int, params: HnswParams, schema: str, *, retries: int, backoff_s: float,
                 connect_timeout: int):
        self.dsn = dsn
        self._dim = dim
        self.params = params
        self.schema = schema
        self.retries = retries
        self.backoff_s = backoff_s
        self.connect_timeout = connect_timeout
        self.where = server_name(dsn)
        self._local = threading.local()
        self._conns: list[Conn] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._stats_providers: dict[str, Callable[[], dict[str, Any]]] = {}
        self._store = _PgStoreView(self)
        self.reconnects = 0

    # ---- opening / closing -----------------------------------------------------------------
    @classmethod
    def open(cls, dsn: str, dim: int, params: HnswParams | None = None, *, schema: str = "ruvllm",
             retries: int = 3, backoff_s: float = 0.2, connect_timeout: int = 3) -> PgMemory:
        """Connect to ``dsn``; create the pgvector extension, the schema and its tables if missing.

        A schema holding another dimension raises ``ConfigError``; one holding tables that are not a
        ruvllm memory raises ``StoreCorruptError`` and is left untouched."""
        _check_open(dim, schema, retries)
        return cls(dsn, dim, params or HnswParams(), schema, retries=retries, backoff_s=backoff_s,
                   connect_timeout=connect_timeout)._started()

    def _started(self: M) -> M:
        try:
            self._retry("open", self._init_schema)
        except BaseException:
            self.close()
            raise
        return self

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    def _connect(self) -> Conn:
        conn: Conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)
        try:
            if not _has_vector(conn):
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            info = TypeInfo.fetch(conn, "vector")
            assert info is not None
            conn.adapters.register_loader(info.oid, _NumpyVectorLoader)
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self._session_ef)))
        except BaseException:
            conn.close()
            raise
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @property
    def _session_ef(self) -> int:
        return min(PG_MAX_EF_SEARCH, int(self.params.ef_search))

    # the largest max(ef, k) the index walk serves (a larger one is answered exactly), and whether the
    # walk's ef is fixed per server (sharded: the shards' sessions ignore a SET on the coordinator)
    _fixed_ef = False

    @property
    def _max_walk_ef(self) -> int:
        return PG_MAX_EF_SEARCH

    def _conn(self) -> Conn:
        if self._closed:
            raise StoreError(f"the PostgreSQL memory at {self.where} is closed")
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            self._drop(conn)
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _drop(self, conn: Conn | None) -> None:
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error):  # closing a broken connection
            conn.close()
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _retry(self, what: str, fn: Callable[[Conn, bool], T]) -> T:
        """Run ``fn(conn, is_retry)``; on a lost connection reconnect and retry with backoff, then give up
        with ``MemoryUnavailableError``. Other database errors become ``StoreError``."""
        delay = self.backoff_s
        t0 = time.monotonic()
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            conn: Conn | None = None
            try:
                conn = self._conn()
                return fn(conn, attempt > 0)
            except psycopg.Error as exc:
                if not _lost(exc, conn):
                    raise StoreError(f"PostgreSQL memory at {self.where}: {what} failed: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                                     ) from None
                last = exc
                self._drop(conn)
                self.reconnects += 1
                if attempt < self.retries:
                    log.warning("memory: lost the connection to %s during %s (%s); retry %d/%d in %.2f s",
                                self.where, what, _first_line(exc), attempt + 1, self.retries, delay)
                    time.sleep(delay)
                    delay *= 2
        raise MemoryUnavailableError(
            f"{self._unreachable(last)} is unreachable: {what} failed {self.retries + 1} times over "
            f"{time.monotonic() - t0:.1f} s ({_first_line(last)}); check that the server is up — every write "
            "acknowledged before is committed there") from None

    def _unreachable(self, last: BaseException | None) -> str:
        """Which server a lost connection points at (the sharded memory names the shard)."""
        return f"the PostgreSQL memory at {self.where}"

    def _read(self, fn: Callable[[Conn], T], what: str = "read") -> T:
        return self._retry(what, lambda c, _retry: fn(c))

    def _init_schema(self, conn: Conn, _retry: bool) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA_NAME}.{self.schema}",))
            tables = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (self.schema,))}
            if not tables:
                meta = {"schema": SCHEMA_NAME, "schema_version": str(SCHEMA_VERSION), "dim": str(self._dim),
                        "m": str(self.params.m), "ef_construction": str(self.params.ef_construction),
                        "created": str(time.time()), "layout": self.LAYOUT, **self._create_tables(conn)}
                conn.cursor().executemany(self._q("INSERT INTO {s}.meta (key, value) VALUES (%s, %s)"),
                                          list(meta.items()))
                return
            if "meta" not in tables:
                raise StoreCorruptError(
                    f"schema {self.schema!r} at {self.where} holds tables that are not a ruvllm memory "
                    f"({', '.join(sorted(tables))}); it was left untouched — choose another memory.pg_schema")
            meta = dict(conn.execute(self._q("SELECT key, value FROM {s}.meta")).fetchall())
        if meta.get("schema") != SCHEMA_NAME:
            raise StoreCorruptError(f"schema {self.schema!r} at {self.where} is not a ruvllm memory "
                                    f"(schema {meta.get('schema')!r}); it was left untouched")
        if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
            raise StoreError(f"the memory at {self.where} ({self.schema}) has schema version "
                             f"{meta['schema_version']}, newer than this ruvllm understands; upgrade ruvllm")
        layout = meta.get("layout", "single")
        if layout != self.LAYOUT:
            raise ConfigError(f"schema {self.schema!r} at {self.where} holds a {layout} memory; set memory.backend = "
                              f"{'pgvector-sharded' if layout == 'sharded' else 'pgvector'!r} to open it")
        self._check_meta(meta)
        stored = int(meta.get("dim", "0"))
        if stored != self._dim:
            raise ConfigError(f"the memory at {self.where} (schema {self.schema}) holds {stored}-d vectors but "
                              f"memory.dim is {self._dim}; set memory.dim = {stored} or use another memory.pg_schema")
        built = HnswParams(int(meta.get("m", self.params.m)), int(meta.get("ef_construction",
                                                                          self.params.ef_construction)),
                           self.params.ef_search)
        if (built.m, built.ef_construction) != (self.params.m, self.params.ef_construction):
            log.info("memory: the HNSW index at %s was built with m=%d ef_construction=%d (config asks %d/%d); "
                     "call rebuild_index() to rebuild it", self.where, built.m, built.ef_construction,
                     self.params.m, self.params.ef_construction)
            self.params = built

    def _create_tables(self, conn: Conn) -> dict[str, str]:
        """Create the memory's tables in an empty schema (inside ``_init_schema``'s transaction);
        returns extra ``meta`` rows."""
        for stmt in _ddl(self.schema, self._dim, self.params):
            conn.execute(stmt)
        return {}

    def _check_meta(self, meta: dict[str, str]) -> None:
        """A hook for the sharded layout's own checks of an existing memory's ``meta``."""

    def close(self) -> None:
        """Close every connection. Safe to call twice; everything acknowledged is already committed."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(psycopg.Error):
                c.close()

    def __enter__(self) -> PgMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def store(self) -> _PgStoreView:
        return self._store

    # ---- writes ------------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        self.add_many([node], [])
        return node

    def add_many(self, nodes: Sequence[Node], edges: Sequence[Edge] = ()) -> None:
        """Insert nodes and edges in one transaction, committed before return."""
        nodes, edges = check_batch(nodes, edges, self._dim)
        if not nodes and not edges:
            return

        def op(conn: Conn, retry: bool) -> None:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    if nodes:
                        cur.executemany(self._q(
                            f"INSERT INTO {{s}}.nodes ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, "
                            "%s)"), [_node_params(n) for n in nodes])
                    if edges:
                        self._upsert_edges(cur, edges)
            except psycopg.errors.UniqueViolation as exc:
                if retry and nodes and self._batch_present(conn, nodes):
                    return  # the attempt whose connection was lost had committed
                raise self._unique(conn, exc, [n.id for n in nodes]) from None
            except psycopg.errors.ForeignKeyViolation:
                raise self._missing_end(conn, edges, {n.id for n in nodes}) from None

        self._retry("add_many", op)

    def _upsert_edges(self, cur: psycopg.Cursor[Any], edges: Sequence[Edge]) -> None:
        cur.executemany(self._q(
            f"INSERT INTO {{s}}.edges ({_EDGE_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (src, dst, rel) DO UPDATE SET weight = excluded.weight, timestamp = excluded.timestamp, "
            "created_by = excluded.created_by, confidence = excluded.confidence"), [_edge_params(e) for e in edges])

    def _batch_present(self, conn: Conn, nodes: Sequence[Node]) -> bool:
        rows = conn.execute(self._q("SELECT id, version, text FROM {s}.nodes WHERE id = ANY(%s::uuid[])"),
                            ([n.id for n in nodes],)).fetchall()
        have = {str(r[0]): (r[1], r[2]) for r in rows}
        return all(have.get(n.id) == (n.metadata.version, n.text) for n in nodes)

    def _unique(self, conn: Conn, exc: psycopg.errors.UniqueViolation, ids: Sequence[str]) -> Exception:
        # through postgres_fdw (a sharded memory) the shard's constraint name is only in the message
        constraint = exc.diag.constraint_name or next(iter(re.findall(r'constraint "([^"]+)"', str(exc))), "")
        if constraint.startswith("nodes"):
            rows = conn.execute(self._q("SELECT id FROM {s}.nodes WHERE id = ANY(%s::uuid[])"), (list(ids),))
            dup = [str(r[0]) for r in rows.fetchall()]
            return ValidationError(f"node id {dup[0] if dup else '?'} already exists; use update() to change it")
        if constraint.startswith("edges"):
            return ValidationError(f"an edge id already exists ({_first_line(exc)})")
        return StoreError(f"write to {self.where} rejected: {_first_line(exc)}")

    def _missing_end(self, conn: Conn, edges: Sequence[Edge], known: set[str]) -> Exception:
        ends = list({end for e in edges for end in (e.src, e.dst)} - known)
        rows = conn.execute(self._q("SELECT id FROM {s}.nodes WHERE id = ANY(%s::uuid[])"), (ends,)).fetchall()
        have = {str(r[0]) for r in rows} | known
        for e in edges:
            for end in (e.src, e.dst):
                if end not in have:
                    return NotFoundError(f"edge {e.id} refers to node {end}, which does not exist")
        return NotFoundError("an edge refers to a node that does not exist")

    def add_edge(self, edge: Edge) -> Edge:
        check_edge(edge)

        def op(conn: Conn, _retry: bool) -> None:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    self._upsert_edges(cur, [edge])
            except psycopg.errors.UniqueViolation as exc:
                raise self._unique(conn, exc, []) from None
            except psycopg.errors.ForeignKeyViolation:
                raise self._missing_end(conn, [edge], set()) from None

        self._retry("add_edge", op)
        return edge

    def delete_edge(self, edge_id: str) -> None:
        eid = _valid_uuid(edge_id)

        def op(conn: Conn, retry: bool) -> None:
            with conn.transaction():
                n = conn.execute(self._q("DELETE FROM {s}.edges WHERE id = %s"), (eid,)).rowcount if eid else 0
            if n == 0 and not retry:
                raise NotFoundError(f"no edge with id {edge_id}")

        self._retry("delete_edge", op)

    def update(
        self,
        node_id: str,
        *,
        text: str | None = None,
        vector: Any = None,
        confidence: float | None = None,
        tags: list[str] | None = None,
        domain: str | None = None,
        source: str | None = None,
        type: NodeType | str | None = None,
    ) -> Node:
        """Change a node: its version goes up by one and the old version is kept in history."""
        written: list[Node] = []

        def op(conn: Conn, retry: bool) -> Node:
            with conn.transaction():
                old = self._get(conn, node_id, lock=True)
                if retry and written and _same_version(old, written[0]):
                    return old  # the attempt whose connection was lost had committed
                new = next_version(old, self._dim, text=text, vector=vector, confidence=confidence, tags=tags,
                                   domain=domain, source=source, type=type)
                written[:] = [new]
                self._write_version(conn, new, old)
                return new

        return self._retry("update", op)

    def _write_version(self, conn: Conn, new: Node, old: Node) -> None:
        """``old`` goes to history, ``new`` (version-bumped) replaces it; inside the caller's transaction."""
        md = old.metadata
        # replaces a stale (id, version) row; not ON CONFLICT DO UPDATE, which postgres_fdw cannot ship
        conn.execute(self._q("DELETE FROM {s}.node_history WHERE id = %s AND version = %s"), (old.id, md.version))
        conn.execute(self._q(
            "INSERT INTO {s}.node_history (id, version, vector, text, type, source, timestamp, tags, domain, "
            "confidence, replaced_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::text[], %s, %s, %s)"),
            (old.id, md.version, old.vector, old.text, old.type.value, old.source, float(md.timestamp),
             list(md.tags), md.domain, float(md.confidence), time.time()))
        nm = new.metadata
        cur = conn.execute(self._q(
            "UPDATE {s}.nodes SET type = %s, text = %s, source = %s, timestamp = %s, tags = %s::text[], "
            "domain = %s, version = %s, confidence = %s, vector = %s WHERE id = %s AND version = %s"),
            (new.type.value, new.text, new.source, float(nm.timestamp), list(nm.tags), nm.domain, nm.version,
             float(nm.confidence), new.vector, new.id, md.version))
        if cur.rowcount != 1:
            raise StoreError(f"node {new.id} changed or vanished during the update; retry")

    def delete(self, node_id: str) -> None:
        """Delete a node; its edges and its history go with it (ON DELETE CASCADE)."""
        nid = _valid_uuid(node_id)
        if nid is None and not isinstance(node_id, str):
            check_uuid(node_id, "node id")

        def op(conn: Conn, retry: bool) -> None:
            with conn.transaction():
                n = self._delete_node(conn, nid) if nid else 0
            if n == 0 and not retry:
                raise NotFoundError(f"no node with id {node_id}")

        self._retry("delete", op)

    def _delete_node(self, conn: Conn, nid: str) -> int:
        """Delete one node inside the caller's transaction (its edges and history cascade); rows deleted."""
        return int(conn.execute(self._q("DELETE FROM {s}.nodes WHERE id = %s"), (nid,)).rowcount)

    def prune_weak_edges(self, min_weight: float) -> int:
        check_min_weight(min_weight)

        def op(conn: Conn, _retry: bool) -> int:
            with conn.transaction():
                return int(conn.execute(self._q("DELETE FROM {s}.edges WHERE weight < %s"),
                                        (float(min_weight),)).rowcount)

        return self._retry("prune_weak_edges", op)

    # ---- reads -------------------------------------------------------------------------------
    def _get(self, conn: Conn, node_id: str, lock: bool = False) -> Node:
        if not isinstance(node_id, str):
            check_uuid(node_id, "node id")  # raises ValidationError naming the type
        nid = _valid_uuid(node_id)
        row = None
        if nid is not None:
            q = f"SELECT {_COLS} FROM {{s}}.nodes WHERE id = %s" + (" FOR UPDATE" if lock else "")
            row = conn.cursor(binary=True).execute(self._q(q), (nid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no node with id {node_id}")
        return _node(row)

    def get(self, node_id: str) -> Node:
        return self._read(lambda c: self._get(c, node_id), "get")

    def get_many(self, node_ids: Sequence[str]) -> dict[str, Node]:
        """The nodes that exist among ``node_ids``, by id."""
        ids = [i for i in dict.fromkeys(_valid_uuid(x) for x in node_ids) if i is not None]
        if not ids:
            return {}
        rows = self._read(lambda c: c.cursor(binary=True).execute(
            self._q(f"SELECT {_COLS} FROM {{s}}.nodes WHERE id = ANY(%s::uuid[])"), (ids,)).fetchall(), "get_many")
        return {str(r[0]): _node(r) for r in rows}

    def history(self, node_id: str) -> list[Node]:
        """Earlier versions of a node, oldest first (the current one is ``get``)."""
        nid = _valid_uuid(node_id)
        if nid is None:
            return []
        rows = self._read(lambda c: c.cursor(binary=True).execute(self._q(
            f"SELECT {_COLS} FROM {{s}}.node_history WHERE id = %s ORDER BY version"), (nid,)).fetchall(), "history")
        return [_node(r) for r in rows]

    def edges(self, node_id: str) -> list[Edge]:
        """Every edge with ``node_id`` at either end."""
        nid = _valid_uuid(node_id)
        if nid is None:
            return []
        rows = self._read(lambda c: c.execute(self._q(
            f"SELECT {_EDGE_COLS} FROM {{s}}.edges WHERE src = %s OR dst = %s ORDER BY id"), (nid, nid)).fetchall(),
            "edges")
        return [_edge(r) for r in rows]

    def edges_touching(self, node_ids: Sequence[str], min_weight: float = 0.0,
                       rels: Sequence[str] | None = None) -> list[Edge]:
        """Edges with either end in ``node_ids`` (weight >= min_weight, rel in rels)."""
        ids = [i for i in (_valid_uuid(x) for x in node_ids) if i is not None]
        if not ids:
            return []
        rows = self._read(lambda c: c.execute(self._q(
            f"SELECT {_EDGE_COLS} FROM {{s}}.edges WHERE (src = ANY(%(ids)s::uuid[]) OR dst = ANY(%(ids)s::uuid[])) "
            "AND weight >= %(w)s AND (%(rels)s::text[] IS NULL OR rel = ANY(%(rels)s::text[]))"),
            {"ids": ids, "w": float(min_weight), "rels": list(rels) if rels else None}).fetchall(), "edges")
        return [_edge(r) for r in rows]

    def _where(self, flt: Filter) -> tuple[str, list[Any]]:
        parts: list[str] = []
        args: list[Any] = []
        if flt.types is not None:
            parts.append("type = ANY(%s::text[])")
            args.append(list(flt.types))
        if flt.domain is not None:
            parts.append("domain = %s")
            args.append(flt.domain)
        if flt.tags is not None:
            parts.append("tags && %s::text[]")
            args.append(list(flt.tags))
        if flt.since is not None:
            parts.append("timestamp >= %s")
            args.append(float(flt.since))
        if flt.until is not None:
            parts.append("timestamp <= %s")
            args.append(float(flt.until))
        return (" AND ".join(parts) or "true"), args

    def find(self, *, types: Any = None, domain: str | None = None, tags: Sequence[str] | None = None,
             since: float | None = None, until: float | None = None, limit: int = 100) -> list[Node]:
        """Nodes matching the filters, newest first."""
        where, args = self._where(Filter(types, domain, tags, since, until))
        rows = self._read(lambda c: c.cursor(binary=True).execute(self._q(
            f"SELECT {_COLS} FROM {{s}}.nodes WHERE {where} ORDER BY timestamp DESC LIMIT %s"),
            (*args, int(limit))).fetchall(), "find")
        return [_node(r) for r in rows]

    def count(self) -> int:
        return int(self._read(lambda c: c.execute(self._q("SELECT count(*) FROM {s}.nodes")).fetchone()[0],  # type: ignore[index]
                              "count"))

    def _knn(self, conn: Conn, q: npt.NDArray[np.float32], k: int, ef: int | None, where: str = "true",
             args: Sequence[Any] = (), exact: bool = False) -> list[Hit]:
        """The k nearest (cosine) among rows matching ``where``: through the HNSW index, or exactly."""
        efs = max(ef or self.params.ef_search, k)
        cur = conn.cursor(binary=True)
        if exact or efs > self._max_walk_ef:
            rows = cur.execute(self._knn_query(where, exact=True), self._knn_args(q, args, k)).fetchall()
        else:
            query = self._knn_query(where)
            if efs == self._session_ef or self._fixed_ef:  # the connection's default: one round trip
                rows = cur.execute(query, self._knn_args(q, args, k)).fetchall()
            else:
                with conn.transaction():
                    cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(efs)))
                    rows = cur.execute(query, self._knn_args(q, args, k)).fetchall()
        hits = [Hit(_node(r), float(r[10])) for r in rows]
        hits.sort(key=lambda h: -h.score)  # the index returns them in order; an exact tie keeps id order
        return hits

    def _knn_query(self, where: str = "true", exact: bool = False, table: str = "nodes") -> sql.Composed:
        """The k-nearest query (parameters: ``_knn_args``). ``exact``: "+ 0" keeps the planner off the
        HNSW index (it only serves ORDER BY vector <=> q) — an exact scan of the matching rows; the
        expression is plain SQL, so postgres_fdw ships it to the shards of a sharded memory."""
        order = "(vector <=> %s) + 0, id" if exact else "vector <=> %s"
        return self._q(f"SELECT {_COLS}, 1 - (vector <=> %s) FROM {{s}}.{table} WHERE {where} "
                       f"ORDER BY {order} LIMIT %s")

    def _knn_args(self, q: npt.NDArray[np.float32], args: Sequence[Any], k: int) -> tuple[Any, ...]:
        return (q, *args, q, k)

    def search(
        self,
        qvec: Any,
        k: int = 10,
        *,
        ef: int | None = None,
        types: Any = None,
        domain: str | None = None,
        tags: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Hit]:
        """The ``k`` nodes most similar to ``qvec`` (cosine), best first, optionally filtered."""
        q = check_query(qvec, self._dim)
        k = check_k(k)
        ef = check_ef(ef)
        flt = Filter(types, domain, tags, since, until)
        if flt.empty:
            return self._read(lambda c: self._knn(c, q, k, ef), "search")
        where, args = self._where(flt)

        def filtered(c: Conn) -> list[Hit]:
            n = c.execute(self._q(f"SELECT count(*) FROM (SELECT 1 FROM {{s}}.nodes WHERE {where} LIMIT %s) t"),
                          (*args, EXACT_FILTER_LIMIT + 1)).fetchone()[0]  # type: ignore[index]
            if n == 0:
                return []
            if n <= EXACT_FILTER_LIMIT:  # exact: cheaper and better than a filtered graph walk
                return self._knn(c, q, k, ef, where, args, exact=True)
            hits = self._knn(c, q, k, max(ef or self.params.ef_search, 4 * k), where, args)
            if len(hits) < k:  # the filter removed too many of the walk's candidates
                hits = self._knn(c, q, k, ef, where, args, exact=True)
            return hits

        return self._read(filtered, "search")

    def search_batch(self, qvecs: Any, k: int = 10, *, ef: int | None = None) -> list[list[Hit]]:
        """``search`` for each row of ``qvecs`` (n, dim), over one connection."""
        k = check_k(k)
        ef = check_ef(ef)
        try:
            qs = np.ascontiguousarray(qvecs, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInputError("query vectors must be a 2-d array of numbers") from None
        if qs.ndim != 2 or qs.shape[1] != self._dim:
            raise InvalidInputError(f"query vectors must have shape (n, {self._dim}), got {qs.shape}")
        if not np.all(np.isfinite(qs)) or np.any(np.einsum("ij,ij->i", qs, qs) <= 0.0):
            raise InvalidInputError("query vectors contain NaN/inf or an all-zero row")
        if len(qs) == 0:
            return []
        return self._read(lambda c: [self._knn(c, q, k, ef) for q in qs], "search_batch")

    def search_threshold(self, qvec: Any, min_score: float = 0.95, k: int = 10, **filters: Any) -> list[Hit]:
        """The hits among the top ``k`` whose similarity is at least ``min_score``."""
        min_score = check_min_score(min_score)
        return [h for h in self.search(qvec, k, **filters) if h.score >= min_score]

    def expand(self, seed_ids: Sequence[str], hops: int = 2, min_weight: float = 0.0, limit: int = 64,
               rels: Sequence[EdgeType | str] | None = None) -> list[Expanded]:
        """Nodes up to ``hops`` edges from the seeds (excluded), by hop then path weight — in SQL, one
        statement per hop: the frontier joined with ``edges`` both ways, best path per reached node."""
        rel_names = check_expand(hops, min_weight, limit, rels)
        seeds = [i for i in dict.fromkeys(_valid_uuid(s) for s in seed_ids) if i is not None]
        ok = "e.weight >= %(mw)s AND (%(rels)s::text[] IS NULL OR e.rel = ANY(%(rels)s::text[]))"
        step = self._q(
            "WITH f(id, w) AS (SELECT * FROM unnest(%(ids)s::uuid[], %(ws)s::float8[])), "
            "l AS (SELECT f.id AS via, e.dst AS nid, f.w * e.weight AS pw, e.rel FROM f JOIN {s}.edges e "
            f"      ON e.src = f.id WHERE {ok} "
            "      UNION ALL "
            "      SELECT f.id, e.src, f.w * e.weight, e.rel FROM f JOIN {s}.edges e "
            f"      ON e.dst = f.id WHERE {ok}) "
            "SELECT DISTINCT ON (nid) nid, via, pw, rel FROM l WHERE NOT (nid = ANY(%(seen)s::uuid[])) "
            "ORDER BY nid, pw DESC, via")

        def run(c: Conn) -> list[Expanded]:
            seen: list[str] = list(seeds)
            frontier: list[tuple[str, float]] = [(s, 1.0) for s in seeds]
            found: list[tuple[str, int, str, float, EdgeType]] = []
            for hop in range(1, hops + 1):
                if not frontier or len(found) >= limit:
                    break
                rows = c.execute(step, {"ids": [f[0] for f in frontier], "ws": [f[1] for f in frontier],
                                        "mw": float(min_weight), "rels": rel_names, "seen": seen}).fetchall()
                reached = sorted(((str(r[0]), str(r[1]), float(r[2]), _REL[r[3]]) for r in rows),
                                 key=lambda t: (-t[2], t[0]))
                for nid, via, w, rel in reached:
                    found.append((nid, hop, via, w, rel))
                seen.extend(r[0] for r in reached)
                frontier = [(r[0], r[2]) for r in reached]
            found = found[:limit]
            if not found:
                return []
            rows = c.cursor(binary=True).execute(
                self._q(f"SELECT {_COLS} FROM {{s}}.nodes WHERE id = ANY(%s::uuid[])"), ([f[0] for f in found],)
            ).fetchall()
            nodes = {str(r[0]): _node(r) for r in rows}
            return [Expanded(nodes[nid], hop, via, w, rel) for nid, hop, via, w, rel in found if nid in nodes]

        return self._read(run, "expand")

    def neighbourhood(self, nodes: Sequence[Node | Hit]) -> NeighbourhoodStats:
        """Degree, density and coherence of a set of nodes (or hits), for the router's features."""
        return neighbourhood_stats(cast(Any, self._store), [x.node if isinstance(x, Hit) else x for x in nodes])

    # ---- bulk access (migration, benchmark) --------------------------------------------------------
    def iter_nodes(self, batch: int = 1000) -> Iterator[list[Node]]:
        """Every node, ``batch`` at a time, in id order."""
        for rows in self._pages("nodes", _COLS, batch):
            yield [_node(r) for r in rows]

    def iter_edges(self, batch: int = 5000) -> Iterator[list[Edge]]:
        """Every edge, ``batch`` at a time, in id order."""
        for rows in self._pages("edges", _EDGE_COLS, batch):
            yield [_edge(r) for r in rows]

    def _pages(self, table: str, cols: str, batch: int) -> Iterator[list[Any]]:
        """The rows of ``table`` by id, ``batch`` at a time (keyset pagination: each page is one short read)."""
        last = "00000000-0000-0000-0000-000000000000"
        first = True
        while True:
            query = self._q(f"SELECT {cols} FROM {{s}}.{table} WHERE id {'>=' if first else '>'} %s "
                            "ORDER BY id LIMIT %s")
            args = (last, batch)

            def page(c: Conn, query: sql.Composed = query, args: tuple[Any, ...] = args) -> list[Any]:
                return c.cursor(binary=True).execute(query, args).fetchall()

            rows = self._read(page, f"iter_{table}")
            if not rows:
                return
            yield rows
            last, first = str(rows[-1][0]), False

    def histories(self, node_ids: Sequence[str]) -> dict[str, list[Node]]:
        """Earlier versions of each node among ``node_ids``, oldest first."""
        ids = [i for i in (_valid_uuid(x) for x in node_ids) if i is not None]
        rows = self._read(lambda c: c.cursor(binary=True).execute(self._q(
            f"SELECT {_COLS} FROM {{s}}.node_history WHERE id = ANY(%s::uuid[]) ORDER BY id, version"), (ids,)
        ).fetchall(), "histories") if ids else []
        out: dict[str, list[Node]] = {}
        for r in rows:
            out.setdefault(str(r[0]), []).append(_node(r))
        return out

    def import_versions(self, items: Sequence[tuple[Node, Sequence[Node]]]) -> None:
        """Write nodes exactly as given (version, timestamp and all) with their earlier versions, in one
        transaction. For ``ruvllm migrate``; ordinary writers use ``add_many``/``update``."""
        nodes = [check_node(n, self._dim) for n, _ in items]
        hist = [(h, n.id) for n, hs in items for h in hs]
        for h, _ in hist:
            h.validate(self._dim)

        def op(conn: Conn, retry: bool) -> None:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(self._q(
                        f"INSERT INTO {{s}}.nodes ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s)"),
                        [_node_params(n) for n in nodes])
                    if hist:
                        cur.executemany(self._q(
                            f"INSERT INTO {{s}}.node_history ({_COLS}, replaced_at) "
                            "VALUES (%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s, %s)"),
                            [(*_node_params(h), time.time()) for h, _ in hist])
            except psycopg.errors.UniqueViolation as exc:
                if retry and self._batch_present(conn, nodes):
                    return
                raise self._unique(conn, exc, [n.id for n in nodes]) from None

        self._retry("import", op)

    def counts(self) -> dict[str, Any]:
        def run(c: Conn) -> dict[str, Any]:
            by_type = {r[0]: int(r[1]) for r in c.execute(
                self._q("SELECT type, count(*) FROM {s}.nodes GROUP BY type")).fetchall()}
            by_rel = {r[0]: int(r[1]) for r in c.execute(
                self._q("SELECT rel, count(*) FROM {s}.edges GROUP BY rel")).fetchall()}
            hist = c.execute(self._q("SELECT count(*) FROM {s}.node_history")).fetchone()[0]  # type: ignore[index]
            return {"nodes": sum(by_type.values()), "nodes_by_type": by_type, "edges": sum(by_rel.values()),
                    "edges_by_rel": by_rel, "history_versions": int(hist)}

        return self._read(run, "counts")

    def drop_index(self) -> None:
        """Drop the HNSW index (before a bulk load; ``rebuild_index`` builds it again)."""
        self._retry("drop_index", lambda c, _r: c.execute(self._q("DROP INDEX IF EXISTS {s}.nodes_vector_hnsw")))

    def rebuild_index(self, params: HnswParams | None = None, *, maintenance_work_mem: str = "512MB") -> float:
        """(Re)build the HNSW index with ``params`` (default: the current ones); returns seconds taken."""
        p = params or self.params

        def op(conn: Conn, _retry: bool) -> float:
            t0 = time.perf_counter()
            with conn.transaction():
                self._build_index(conn, p, maintenance_work_mem)
                conn.execute(self._q("UPDATE {s}.meta SET value = %s WHERE key = 'm'"), (str(p.m),))
                conn.execute(self._q("UPDATE {s}.meta SET value = %s WHERE key = 'ef_construction'"),
                             (str(p.ef_construction),))
            return time.perf_counter() - t0

        secs = self._retry("rebuild_index", op)
        self.params = p
        return secs

    def _build_index(self, conn: Conn, p: HnswParams, maintenance_work_mem: str) -> None:
        conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem)))
        conn.execute(self._q("DROP INDEX IF EXISTS {s}.nodes_vector_hnsw"))
        conn.execute(_hnsw_ddl(self.schema, p))

    # ---- stats -----------------------------------------------------------------------------------
    def register_stats(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        self._stats_providers[name] = provider

    def sizes(self) -> tuple[int, int]:
        """(bytes of ``nodes`` with its indexes, bytes of the HNSW index)."""
        def run(c: Conn) -> tuple[int, int]:
            row = c.execute(self._q(
                "SELECT pg_total_relation_size(%s::regclass), "
                "coalesce(pg_relation_size(to_regclass(%s)), 0)"),
                (f"{self.schema}.nodes", f"{self.schema}.nodes_vector_hnsw")).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        return self._read(run, "stats")

    def stats(self) -> dict[str, Any]:
        total, index_bytes = self.sizes()
        out: dict[str, Any] = {"backend": self.BACKEND, "path": f"postgresql://{self.where} schema {self.schema}",
                               "dim": self._dim, **self.counts()}
        out["index"] = {"kind": "pgvector hnsw (vector_cosine_ops)", "m": self.params.m,
                        "ef_construction": self.params.ef_construction, "ef_search": self.params.ef_search,
                        "bytes": index_bytes}
        out["table_bytes"] = total
        out["connection"] = {"retries": self.retries, "backoff_s": self.backoff_s, "reconnects": self.reconnects}
        out["durability"] = {"engine": "PostgreSQL", "commit": "one transaction per write, committed before return"}
        for name, provider in self._stats_providers.items():
            out[name] = provider()
        return out


def server_name(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, for messages (no user or password)."""
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def _check_open(dim: Any, schema: str, retries: Any) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    if not (schema.isidentifier() and schema.isascii()):
        raise ConfigError(f"the PostgreSQL schema name must be a plain identifier, got {schema!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")


def _has_vector(conn: Conn) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None


def _same_version(a: Node, b: Node) -> bool:
    return a.metadata.version == b.metadata.version and a.text == b.text and bool(
        np.array_equal(a.vector, b.vector)) and math.isclose(a.metadata.timestamp, b.metadata.timestamp)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__

