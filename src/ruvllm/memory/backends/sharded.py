"""The PostgreSQL + pgvector memory sharded over several servers with PostgreSQL's own machinery:
hash partitioning and ``postgres_fdw`` (see docs/scale.md, "Sharding").

    mem = ShardedPgMemory.open("postgresql://ruvllm@coord/ruvllm", dim=384,
                               shards=["postgresql://ruvllm@shard0/ruvllm", "postgresql://ruvllm@shard1/ruvllm"])

Layout (schema ``schema`` on every server):

- each **shard** holds an ordinary ``PgMemory`` layout (opened through ``PgMemory`` itself): the real
  ``nodes`` table with its HNSW index (same m / ef_construction) and b-tree/GIN indexes, and
  ``node_history`` with its foreign key to ``nodes`` (``ON DELETE CASCADE``). Its ``edges`` table
  stays empty.
- the **coordinator** holds ``meta``, ``edges`` (local, no foreign keys) and ``nodes`` /
  ``node_history`` as ``PARTITION BY HASH (id)`` parents whose partition *i* is a foreign table on
  shard *i*. Both are partitioned on the node id with the same modulus, so a node's history lives
  on the node's shard and the shard's own foreign key and cascade cover it. One foreign server per
  shard and memory (``ruvllm_<schema>_shard<i>``) with ``extensions 'vector'`` (so ``<=>`` is shipped
  and every shard answers ``ORDER BY vector <=> q`` from its own HNSW index; the coordinator merges
  the shards' sorted streams), ``options '-c hnsw.ef_search=N'`` (the shards' sessions do not see a
  ``SET`` on the coordinator) and ``parallel_commit``.

Everything else is ``PgMemory``'s code, through the coordinator. What differs:

- edges: a partitioned table with foreign partitions can have no primary key, so ``edges`` cannot
  reference ``nodes``. Writing an edge locks its two ends (``SELECT … FOR SHARE``, shipped to the
  shards) and fails with ``NotFoundError`` if one is missing; deleting a node deletes its edges in
  the same transaction.
- search: every shard walks its index with ``ef_search = memory.ef_search``; a query whose
  ``max(ef, k)`` exceeds it is answered exactly on the shards (pgvector returns at most ef_search
  rows from a walk), as the unsharded memory does above pgvector's limit.
- atomicity: postgres_fdw commits each shard's part when the coordinator commits, one after the
  other (in parallel with ``parallel_commit``), without two-phase commit: a crash between two
  shards' commits can leave a multi-shard write half applied. A write of one node touches one shard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ruvllm.config import HnswParams
from ruvllm.errors import ConfigError
from ruvllm.memory.backends.pgvector import _COLS, Conn, PgMemory, _check_open, _ddl, server_name
from ruvllm.memory.schema import Edge

T = TypeVar("T")
_SHARDED = ("nodes", "node_history")


def public_dsn(dsn: str) -> str:
    """``dsn`` without its password (what the coordinator's ``meta`` records)."""
    info = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    return make_conninfo("", **info)


class ShardedPgMemory(PgMemory):
    """``PgMemory`` whose nodes and history are hash-partitioned over shard servers through postgres_fdw."""

    BACKEND = "pgvector-sharded"
    LAYOUT = "sharded"
    _fixed_ef = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shard_dsns: list[str] = []
        self.shards: list[PgMemory] = []  # direct connections: counts, sizes, index builds, outage checks

    @classmethod
    def open(cls, dsn: str, dim: int, params: HnswParams | None = None, *, shards: Sequence[str] = (),
             schema: str = "ruvllm", retries: int = 3, backoff_s: float = 0.2,
             connect_timeout: int = 3) -> ShardedPgMemory:
        """Connect to the coordinator ``dsn``; create the layout on it and on ``shards`` if the schema is
        new. An existing memory keeps the shards it was created with (``shards`` may be omitted; if
        given it must list the same servers in the same order)."""
        _check_open(dim, schema, retries)
        mem = cls(dsn, dim, params or HnswParams(), schema, retries=retries, backoff_s=backoff_s,
                  connect_timeout=connect_timeout)
        mem.shard_dsns = [d.strip() for d in shards]
        return mem._started()

    def _server(self, i: int) -> sql.Identifier:
        return sql.Identifier(f"ruvllm_{self.schema}_shard{i}")

    @property
    def _max_walk_ef(self) -> int:
        return self._session_ef

    def _fdw_options(self) -> str:
        return f"-c hnsw.ef_search={self._session_ef}"

    # ---- layout ------------------------------------------------------------------------------------
    def _create_tables(self, conn: Conn) -> dict[str, str]:
        if not self.shard_dsns:
            raise ConfigError(f"the sharded memory {self.schema!r} at {self.where} does not exist yet: list its "
                              "shard servers in memory.shards to create it")
        self._open_shards()
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        for stmt in _ddl(self.schema, self._dim, self.params, partitioned=True):
            conn.execute(stmt)
        n = len(self.shard_dsns)
        for i, dsn in enumerate(self.shard_dsns):
            info = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
            login: dict[str, str] = {k: info.pop(k) for k in ("user", "password") if k in info}
            opts = {**info, "extensions": "vector", "parallel_commit": "true", "async_capable": "true",
                    "batch_size": "100",
                    "options": f"{info.get('options', '')} {self._fdw_options()}".strip()}
            srv = self._server(i)
            conn.execute(sql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(srv))  # left by a dropped schema
            conn.execute(sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                srv, _options(opts)))
            conn.execute(sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER {}{}").format(
                srv, sql.SQL(" OPTIONS ({})").format(_options(login)) if login else sql.SQL("")))
            for table in _SHARDED:
                conn.execute(sql.SQL(
                    "CREATE FOREIGN TABLE {s}.{part} PARTITION OF {s}.{table} FOR VALUES WITH (MODULUS {n}, "
                    "REMAINDER {i}) SERVER {srv} OPTIONS (schema_name {schema}, table_name {name})").format(
                    s=sql.Identifier(self.schema), part=sql.Identifier(f"{table}_shard{i}"),
                    table=sql.Identifier(table), n=sql.Literal(n), i=sql.Literal(i), srv=srv,
                    schema=sql.Literal(self.schema), name=sql.Literal(table)))
        return {"shards": json.dumps([public_dsn(d) for d in self.shard_dsns])}

    def _init_schema(self, conn: Conn, retry: bool) -> None:
        super()._init_schema(conn, retry)
        row = conn.execute(self._q("SELECT value FROM {s}.meta WHERE key = 'shards'")).fetchone()
        recorded: list[str] = json.loads(row[0]) if row else []
        if self.shard_dsns and [public_dsn(d) for d in self.shard_dsns] != recorded:
            raise ConfigError(f"the sharded memory {self.schema!r} at {self.where} was created on the shards "
                              f"{recorded}, but memory.shards lists {[public_dsn(d) for d in self.shard_dsns]}; "
                              "resharding is a `ruvllm migrate` into a new sharded memory")
        self.shard_dsns = self.shard_dsns or recorded
        self._open_shards()
        for i in range(len(self.shard_dsns)):  # memory.ef_search may have changed since the last open
            conn.execute(sql.SQL("ALTER SERVER {} OPTIONS (SET options {})").format(
                self._server(i), sql.Literal(self._fdw_options())))

    def _open_shards(self) -> None:
        if self.shards:
            return
        for i, dsn in enumerate(self.shard_dsns):
            shard = PgMemory.open(dsn, self._dim, self.params, schema=self.schema, retries=self.retries,
                                  backoff_s=self.backoff_s, connect_timeout=self.connect_timeout)
            self.shards.append(shard)
            mark = shard._q("INSERT INTO {s}.meta (key, value) VALUES ('shard', %s) ON CONFLICT (key) DO UPDATE "
                            "SET value = excluded.value")
            note = f"{i} of {len(self.shard_dsns)}, coordinator {self.where}"

            def record(c: Conn, _retry: bool, mark: sql.Composed = mark, note: str = note) -> None:
                c.execute(mark, (note,))

            shard._retry("open", record)

    def close(self) -> None:
        super().close()
        for shard in self.shards:
            shard.close()

    def _each_shard(self, fn: Callable[[PgMemory], T]) -> list[T]:
        """``fn`` on every shard at once (each is its own server)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.shards))) as pool:
            return list(pool.map(fn, self.shards))

    # ---- what the partitioned layout changes ------------------------------------------------------------
    def _upsert_edges(self, cur: psycopg.Cursor[Any], edges: Sequence[Edge]) -> None:
        """The foreign keys the coordinator cannot have: lock both ends of every edge on their shards
        (a concurrent delete then waits, or fails this write) and refuse an edge to a missing node."""
        ends = sorted({end for e in edges for end in (e.src, e.dst)})
        have = {str(r[0]) for r in cur.execute(self._q(
            "SELECT id FROM {s}.nodes WHERE id = ANY(%s::uuid[]) FOR SHARE"), (ends,)).fetchall()}
        if len(have) < len(ends):
            raise self._missing_end(cur.connection, edges, have)
        super()._upsert_edges(cur, edges)

    def _delete_node(self, conn: Conn, nid: str) -> int:
        n = super()._delete_node(conn, nid)  # the shard cascades to the node's history
        conn.execute(self._q("DELETE FROM {s}.edges WHERE src = %s OR dst = %s"), (nid, nid))
        return n

    def _unreachable(self, last: BaseException | None) -> str:
        """Name the shard: from postgres_fdw's message, else the first shard that refuses a connection."""
        m = re.search(rf'server "ruvllm_{self.schema}_shard(\d+)"', str(last or ""))
        down = [int(m.group(1))] if m else [i for i, d in enumerate(self.shard_dsns) if not _reachable(d)]
        if down:
            i = down[0]
            return (f"shard {i} ({server_name(self.shard_dsns[i])}) of the sharded PostgreSQL memory at "
                    f"{self.where}")
        return f"the sharded PostgreSQL memory's coordinator at {self.where}"

    def _knn_query(self, where: str = "true", exact: bool = False, table: str = "nodes") -> sql.Composed:
        """One k-nearest subquery per shard's partition, ``UNION ALL``, best k of them. Through the
        partitioned parent postgres_fdw would ship ``ORDER BY vector <=> q`` but not the LIMIT, and a
        shard planning an unlimited ordered scan picks a sequential scan + sort over its index; a
        query on one foreign table ships both, so each shard walks its own HNSW index for its k best.
        Each branch selects its distance and orders by that very column, so it is a bare Foreign Scan
        under the Append (no Subquery Scan for a sort key that is not selected), and postgres_fdw
        asks the shards at the same time (``async_capable``). ``exact``: "+ 0" keeps each shard off
        its index, as in ``PgMemory``."""
        dist = "(vector <=> %s) + 0" if exact else "vector <=> %s"
        tie = ", id" if exact else ""
        parts = [self._q(f"(SELECT {_COLS}, {dist} AS distance FROM {{s}}.nodes_shard{i} WHERE {where} "
                         f"ORDER BY distance{tie} LIMIT %s)") for i in range(len(self.shard_dsns))]
        return (self._q(f"SELECT {_COLS}, 1 - distance FROM (") + sql.SQL(" UNION ALL ").join(parts)
                + sql.SQL(") u ORDER BY distance + 0, id LIMIT %s"))  # "+ 0": a Sort over an Append, which
        # can run its Foreign Scans at once, instead of a Merge Append, which pulls them in turn

    def _knn_args(self, q: Any, args: Sequence[Any], k: int) -> tuple[Any, ...]:
        return (*(q, *args, k) * len(self.shard_dsns), k)

    def drop_index(self) -> None:
        self._each_shard(lambda s: s.drop_index())

    def _build_index(self, conn: Conn, p: HnswParams, maintenance_work_mem: str) -> None:
        self._each_shard(lambda s: s.rebuild_index(p, maintenance_work_mem=maintenance_work_mem))

    def sizes(self) -> tuple[int, int]:
        per = self._each_shard(lambda s: s.sizes())
        return sum(t for t, _ in per), sum(i for _, i in per)

    def shard_counts(self) -> list[int]:
        """Nodes on each shard, counted on the shard itself."""
        return self._each_shard(lambda s: s.count())

    def explain_search(self, qvec: Any, k: int = 10) -> str:
        """``EXPLAIN VERBOSE`` of an unfiltered search: one Foreign Scan per shard, whose Remote SQL
        carries ``ORDER BY vector <=> q`` (each shard walks its own HNSW index)."""
        query = sql.SQL("EXPLAIN VERBOSE ") + self._knn_query()
        rows = self._read(lambda c: c.execute(query, self._knn_args(qvec, (), k)).fetchall(), "explain")
        return "\n".join(r[0] for r in rows)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["shards"] = [{"server": s.where, "nodes": n, "table_bytes": t, "index_bytes": i}
                         for s, n, (t, i) in zip(self.shards, self.shard_counts(),
                                                 self._each_shard(lambda s: s.sizes()), strict=True)]
        out["durability"]["sharding"] = ("postgres_fdw commits each shard at the coordinator's commit, "
                                         "without two-phase commit")
        return out


def _options(opts: dict[str, str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in opts.items())


def _reachable(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=1).close()
        return True
    except psycopg.Error:
        return False

