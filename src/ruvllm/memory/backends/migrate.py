"""Copy a memory from one backend to the other without loss: ``ruvllm migrate --from A --to B``.

An endpoint is a PostgreSQL connection string (``postgresql://…``, ``host=… dbname=…`` or
``pgvector:<dsn>``), a sharded PostgreSQL memory (``pgvector-sharded:<coordinator dsn>;<shard dsn>;…``;
the shards may be left out for one that exists) or a directory (``embedded:<dir>`` or a plain path):
a ruvllm data directory (its ``memory/`` is used) or a memory directory holding ``memory.db``.

What is copied: every node exactly as stored (id, type, text, source, vector, timestamp, tags, domain,
version, confidence), every earlier version of it (the history), every edge. Nodes go first, in
batches (each batch one transaction), then edges (whose ends then exist). The target must be empty
unless ``force``; with ``force`` nodes already in the target are left as they are and counted as
skipped. Afterwards the counts are compared and a deterministic sample of nodes is read back from
both sides (version, text, vector within 1e-6, history versions, edges); any difference raises
``StoreError``. Into an empty PostgreSQL target the HNSW index is built once at the end (much
faster than growing it row by row); into the embedded backend the index is rebuilt from the store.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ruvllm.config import HnswParams
from ruvllm.datadir import MARKER, open_data_dir
from ruvllm.errors import DataDirError, InvalidInputError, NotFoundError, StoreError
from ruvllm.memory import DB_FILE, Memory
from ruvllm.memory.schema import Edge, Node

Progress = Callable[[str, int, int], None]  # (stage, done, total)
_PG_PREFIXES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "embedded" | "pgvector" | "pgvector-sharded"
    location: str  # a memory directory, or a DSN (the coordinator's, for pgvector-sharded)
    schema: str = "ruvllm"
    shards: tuple[str, ...] = ()  # pgvector-sharded: the shards' DSNs

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}" + (f" (schema {self.schema})" if self.kind != "embedded" else "")


def parse_endpoint(spec: str, schema: str = "ruvllm", *, for_write: bool = False) -> Endpoint:
    """``spec`` → an ``Endpoint``; a directory is resolved to its memory directory."""
    spec = spec.strip()
    if not spec:
        raise InvalidInputError("an empty --from/--to; give a PostgreSQL DSN or a data directory")
    if spec.startswith("pgvector-sharded:"):
        coordinator, *shards = (part.strip() for part in spec[len("pgvector-sharded:"):].split(";"))
        return Endpoint("pgvector-sharded", coordinator, schema, tuple(s for s in shards if s))
    if spec.startswith("pgvector:"):
        return Endpoint("pgvector", spec[len("pgvector:"):], schema)
    if spec.startswith(_PG_PREFIXES) or ("host=" in spec or "dbname=" in spec):
        return Endpoint("pgvector", spec, schema)
    path = Path(spec.removeprefix("embedded:")).expanduser()
    if (path / DB_FILE).exists():
        return Endpoint("embedded", str(path))
    if (path / "memory" / DB_FILE).exists():
        return Endpoint("embedded", str(path / "memory"))
    if not for_write:
        raise NotFoundError(f"{path} holds no ruvllm memory (no {DB_FILE} in it or in {path / 'memory'})")
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise DataDirError(f"{path} is not empty and not a ruvllm data directory; choose a new or empty directory")
    return Endpoint("embedded", str(open_data_dir(path) / "memory"))


def stored_dim(ep: Endpoint) -> int | None:
    """The vector dimension the memory at ``ep`` holds, or None if there is none yet."""
    if ep.kind == "embedded":
        db = Path(ep.location) / DB_FILE
        if not db.exists():
            return None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db} is not a readable ruvllm memory ({exc})") from None
        finally:
            conn.close()
        return int(row[0]) if row else None
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(ep.location, autocommit=True, connect_timeout=5) as pg:
            if pg.execute("SELECT to_regclass(%s)", (f"{ep.schema}.meta",)).fetchone() == (None,):
                return None
            row = pg.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = 'dim'").format(
                sql.Identifier(ep.schema))).fetchone()
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot reach PostgreSQL for {ep}: {str(exc).strip().splitlines()[0]}") from None
    return int(row[0]) if row else None


def open_endpoint(ep: Endpoint, dim: int, params: HnswParams | None = None) -> Any:
    if ep.kind == "embedded":
        return Memory.open(ep.location, dim=dim, params=params)
    from ruvllm.memory.backends.pgvector import PgMemory
    from ruvllm.memory.backends.sharded import ShardedPgMemory

    if ep.kind == "pgvector-sharded":
        return ShardedPgMemory.open(ep.location, dim=dim, params=params, shards=ep.shards, schema=ep.schema)
    return PgMemory.open(ep.location, dim=dim, params=params, schema=ep.schema)


# ---- the two sides -------------------------------------------------------------------------------------
class _Side(Protocol):
    mem: Any

    def counts(self) -> dict[str, Any]: ...
    def node_batches(self, batch: int) -> Iterator[list[tuple[Node, list[Node]]]]: ...
    def edge_batches(self, batch: int) -> Iterator[list[Edge]]: ...
    def history(self, node_id: str) -> list[Node]: ...
    def write_nodes(self, items: Sequence[tuple[Node, Sequence[Node]]]) -> None: ...
    def write_edges(self, edges: Sequence[Edge]) -> None: ...
    def begin_bulk(self) -> None: ...
    def finish(self) -> None: ...


class _Embedded:
    def __init__(self, mem: Memory):
        self.mem = mem
        self._replayed = False

    def counts(self) -> dict[str, Any]:
        return self.mem.store.counts()

    def _node_pages(self, batch: int) -> Iterator[list[Node]]:
        for labels, _ in self.mem.store.iter_vectors(batch):
            by_label = self.mem.store.by_labels(labels.tolist())
            yield [by_label[lb] for lb in labels.tolist() if lb in by_label]

    def node_batches(self, batch: int) -> Iterator[list[tuple[Node, list[Node]]]]:
        for nodes in self._node_pages(batch):
            yield [(n, self.mem.history(n.id)) for n in nodes]

    def edge_batches(self, batch: int) -> Iterator[list[Edge]]:
        for nodes in self._node_pages(batch):
            ids = {n.id for n in nodes}
            yield [e for e in self.mem.store.edges_touching(list(ids)) if e.src in ids]  # each edge once: by its src

    def history(self, node_id: str) -> list[Node]:
        return self.mem.history(node_id)

    def write_nodes(self, items: Sequence[tuple[Node, Sequence[Node]]]) -> None:
        # a node with history is written as its oldest version, then each later version over it: the store
        # keeps every version exactly (timestamps included) in node_history, as update() would have
        self.mem.add_many([hs[0] if hs else n for n, hs in items], [])
        for n, hs in items:
            if hs:
                chain = [*hs, n]
                for prev, cur in itertools.pairwise(chain):
                    self.mem.store.update(cur, prev)
                self._replayed = True

    def write_edges(self, edges: Sequence[Edge]) -> None:
        self.mem.add_many([], edges)

    def begin_bulk(self) -> None:
        pass

    def finish(self) -> None:
        if self._replayed:  # the replayed versions changed vectors behind the index's back
            self.mem.rebuild_index()


class _Pg:
    def __init__(self, mem: Any):
        self.mem = mem
        self._bulk = False

    def counts(self) -> dict[str, Any]:
        out: dict[str, Any] = self.mem.counts()
        return out

    def node_batches(self, batch: int) -> Iterator[list[tuple[Node, list[Node]]]]:
        for nodes in self.mem.iter_nodes(batch):
            hist = self.mem.histories([n.id for n in nodes])
            yield [(n, hist.get(n.id, [])) for n in nodes]

    def edge_batches(self, batch: int) -> Iterator[list[Edge]]:
        yield from self.mem.iter_edges(batch)

    def history(self, node_id: str) -> list[Node]:
        out: list[Node] = self.mem.history(node_id)
        return out

    def write_nodes(self, items: Sequence[tuple[Node, Sequence[Node]]]) -> None:
        self.mem.import_versions(items)

    def write_edges(self, edges: Sequence[Edge]) -> None:
        self.mem.add_many([], edges)

    def begin_bulk(self) -> None:
        self.mem.drop_index()
        self._bulk = True

    def finish(self) -> None:
        if self._bulk:
            self.mem.rebuild_index()


def _side(mem: Any) -> _Side:
    return _Embedded(mem) if isinstance(mem, Memory) else _Pg(mem)


@dataclass
class MigrateReport:
    source: str
    target: str
    nodes: int = 0
    history_versions: int = 0
    edges: int = 0
    skipped: int = 0
    verified: int = 0
    seconds: float = 0.0
    target_counts: dict[str, Any] = field(default_factory=dict)


def migrate(source: Any, target: Any, *, force: bool = False, batch: int = 1000, sample: int = 1000,
            progress: Progress | None = None, source_name: str = "", target_name: str = "") -> MigrateReport:
    """Copy everything in ``source`` (an open memory of either backend) into ``target``; verify; report."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(f"batch must be a positive integer, got {batch!r}")
    if source.dim != target.dim:
        raise InvalidInputError(f"the source holds {source.dim}-d vectors, the target {target.dim}-d")
    src, dst = _side(source), _side(target)
    t0 = time.perf_counter()
    before = dst.counts()
    empty = before["nodes"] == 0 and before["edges"] == 0
    if not empty and not force:
        raise StoreError(f"the target {target_name or 'memory'} is not empty ({before['nodes']} nodes, "
                         f"{before['edges']} edges); migrate into an empty one, or pass --force to add to it "
                         "(nodes already there are kept as they are)")
    counts = src.counts()
    rep = MigrateReport(source_name, target_name)
    tick = progress or (lambda stage, done, total: None)
    if empty:
        dst.begin_bulk()
    every = max(1, counts["nodes"] // max(1, sample))
    picked: list[str] = []
    seen = 0
    tick("nodes", 0, counts["nodes"])
    for items in src.node_batches(batch):
        if not empty:
            have = target.get_many([n.id for n, _ in items])
            rep.skipped += sum(1 for n, _ in items if n.id in have)
            items = [(n, hs) for n, hs in items if n.id not in have]
        if items:
            dst.write_nodes(items)
        for n, hs in items:
            if seen % every == 0 and len(picked) < sample:
                picked.append(n.id)
            seen += 1
            rep.nodes += 1
            rep.history_versions += len(hs)
        tick("nodes", rep.nodes + rep.skipped, counts["nodes"])
    tick("edges", 0, counts["edges"])
    for edges in src.edge_batches(batch * 5):
        if edges:
            dst.write_edges(edges)
        rep.edges += len(edges)
        tick("edges", rep.edges, counts["edges"])
    tick("index", 0, 1)
    dst.finish()
    tick("index", 1, 1)
    rep.target_counts = dst.counts()
    rep.verified = _verify(src, dst, counts, before, rep, picked, tick)
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _verify(src: _Side, dst: _Side, counts: dict[str, Any], before: dict[str, Any], rep: MigrateReport,
            picked: list[str], tick: Progress) -> int:
    after = rep.target_counts
    problems: list[str] = []
    if not before["nodes"] and not before["edges"]:  # into an empty target: everything, exactly
        for key in ("nodes", "edges", "history_versions"):
            if after[key] != counts[key]:
                problems.append(f"{key}: source {counts[key]}, target {after[key]}")
    elif after["nodes"] != before["nodes"] + rep.nodes:
        problems.append(f"nodes: target had {before['nodes']}, {rep.nodes} copied, now {after['nodes']}")
    a, b = src.mem, dst.mem
    got_a, got_b = a.get_many(picked), b.get_many(picked)
    for i, nid in enumerate(picked):
        na, nb = got_a.get(nid), got_b.get(nid)
        if na is None or nb is None:
            problems.append(f"node {nid} is missing on the {'source' if na is None else 'target'}")
        elif (na.metadata.version, na.text, na.type, na.source, na.metadata.tags, na.metadata.domain) != \
                (nb.metadata.version, nb.text, nb.type, nb.source, nb.metadata.tags, nb.metadata.domain) or \
                not np.allclose(na.vector, nb.vector, atol=1e-6) or \
                abs(na.metadata.timestamp - nb.metadata.timestamp) > 1e-6:
            problems.append(f"node {nid} differs (version {na.metadata.version} vs {nb.metadata.version})")
        elif [h.metadata.version for h in src.history(nid)] != [h.metadata.version for h in dst.history(nid)]:
            problems.append(f"node {nid}: history versions differ")
        elif sorted(e.id for e in a.edges(nid)) != sorted(e.id for e in b.edges(nid)) and not rep.skipped:
            problems.append(f"node {nid}: edges differ")
        if len(problems) >= 5:
            break
        tick("verify", i + 1, len(picked))
    if problems:
        raise StoreError("migration verification failed: " + "; ".join(problems))
    return len(picked)


def run_migration(source: str, target: str, *, from_schema: str = "ruvllm", to_schema: str = "ruvllm",
                  force: bool = False, batch: int = 1000, sample: int = 1000,
                  progress: Progress | None = None) -> MigrateReport:
    """Open both ends by their specs (see ``parse_endpoint``), migrate, close both."""
    src_ep = parse_endpoint(source, from_schema)
    dst_ep = parse_endpoint(target, to_schema, for_write=True)
    if src_ep == dst_ep:
        raise InvalidInputError(f"--from and --to are the same memory ({src_ep})")
    dim = stored_dim(src_ep)
    if dim is None:
        raise NotFoundError(f"{src_ep} holds no ruvllm memory")
    have = stored_dim(dst_ep)
    if have is not None and have != dim:
        raise InvalidInputError(f"the source holds {dim}-d vectors but the target {dst_ep} holds {have}-d")
    with contextlib.ExitStack() as stack:
        src_mem = stack.enter_context(open_endpoint(src_ep, dim))
        dst_mem = stack.enter_context(open_endpoint(dst_ep, dim))
        return migrate(src_mem, dst_mem, force=force, batch=batch, sample=sample, progress=progress,
                       source_name=str(src_ep), target_name=str(dst_ep))
