"""The memory service: a durable graph of nodes and edges with vector search.

    mem = Memory.open(path, dim=384, params=HnswParams(), auto_params=False, cache_size=1024, cache_ttl_s=300)
    mem.add_many(nodes, edges)                 # one transaction, durable before it returns
    hits = mem.search(qvec, k=10)              # [Hit(node, score)], cosine similarity, best first
    near = mem.expand([h.node.id for h in hits], hops=2)
    mem.close()                                # saves the index

``Memory`` composes three parts, each usable alone: ``store.Store`` (SQLite WAL, the truth),
``index.HnswIndex`` (hnswlib, rebuilt from the store when missing, corrupt or stale) and
``graph`` (expansion, pruning, neighbourhood statistics). ``WriteBack`` decides which answers
are kept. See docs/memory.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.config import HnswParams, hnsw_params_for
from ruvllm.errors import InvalidInputError, NotFoundError, StoreCorruptError, StoreError
from ruvllm.memory.checks import (
    check_batch,
    check_edge,
    check_ef,
    check_k,
    check_min_score,
    check_query,
    next_version,
)
from ruvllm.memory.graph import Expanded, NeighbourhoodStats, expand, neighbourhood_stats, prune_weak_edges
from ruvllm.memory.index import HnswIndex, IndexStamp
from ruvllm.memory.schema import Edge, EdgeType, Node, NodeType
from ruvllm.memory.store import Filter, Store

__all__ = [
    "Expanded", "Filter", "Hit", "Memory", "NeighbourhoodStats", "NodeCache", "QueryCache", "Store", "WriteBack",
    "WriteResult",
]

log = logging.getLogger("ruvllm.memory")

DB_FILE = "memory.db"
INDEX_FILE = "index.hnsw"
INDEX_META = "index.json"
LOCK_FILE = "lock"
EXACT_FILTER_LIMIT = 4096  # a filter matching at most this many nodes is answered by exact search


class _DirLock:
    """One process owns a memory directory: a second opener would keep its own index, and the two
    would drift apart. ``flock`` is released by the kernel when the owner dies, even by kill -9."""

    def __init__(self, fh: Any, path: Path):
        self.fh = fh
        self.path = path

    @classmethod
    def acquire(cls, path: Path) -> _DirLock:
        fh = path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "?"
            fh.close()
            raise StoreError(
                f"the memory at {path.parent} is in use by another ruvllm process (pid {owner}); stop it, "
                "talk to it through `ruvllm serve`, or use another --data-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        return cls(fh, path)

    def release(self) -> None:
        if not self.fh.closed:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()


class _ResultNodes:
    """The nodes behind one search result, read from the store together, once, on first use.

    ``Memory.search`` returns as soon as the index has answered: a caller that only needs the
    scores (write-back's duplicate check drops everything under 0.95) never reads a row, and one
    that reads any hit's node pays one store query for the whole result, not one per hit."""

    __slots__ = ("_labels", "_memory", "_nodes")

    def __init__(self, memory: Memory, labels: list[int]):
        self._memory = memory
        self._labels = labels
        self._nodes: dict[int, Node] | None = None

    def get(self, label: int) -> Node:
        if self._nodes is None:  # two threads racing here both read the same rows: harmless
            self._nodes = self._memory._nodes(self._labels)
        node = self._nodes.get(label)
        if node is None:
            raise NotFoundError(f"the node at index label {label} was deleted after the search that found it")
        return node


class Hit:
    """A search result: ``node`` and its cosine similarity ``score`` in [-1, 1], higher is closer.

    ``Hit(node, score)`` holds its node; hits from ``Memory.search`` read theirs on first access
    of ``.node`` (all hits of that search at once). A node deleted between the search and that
    access raises ``NotFoundError``; a node updated in between is read in its new version."""

    __slots__ = ("_label", "_node", "_rows", "score")

    def __init__(self, node: Node, score: float):
        self._node: Node | None = node
        self.score = score
        self._label = -1
        self._rows: _ResultNodes | None = None

    @classmethod
    def _lazy(cls, label: int, score: float, rows: _ResultNodes) -> Hit:
        hit = cls.__new__(cls)
        hit._node, hit.score, hit._label, hit._rows = None, score, label, rows
        return hit

    @property
    def node(self) -> Node:
        if self._node is None:
            assert self._rows is not None
            self._node = self._rows.get(self._label)
        return self._node

    @node.setter
    def node(self, value: Node) -> None:
        self._node = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hit) and self.score == other.score and self.node == other.node

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        node = self._node if self._node is not None else f"<label {self._label}, not read yet>"
        return f"Hit(node={node!r}, score={self.score!r})"


class QueryCache:
    """LRU cache with a TTL for repeated searches; cleared on every write."""

    def __init__(self, size: int, ttl_s: float):
        self.size = max(0, int(size))
        self.ttl_s = float(ttl_s)
        self._data: OrderedDict[Any, tuple[float, list[Hit]]] = OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> list[Hit] | None:
        if self.size == 0:
            return None
        with self._lock:
            item = self._data.get(key)
            if item is not None and time.monotonic() - item[0] <= self.ttl_s:
                self._data.move_to_end(key)
                self.hits += 1
                return list(item[1])
            if item is not None:
                del self._data[key]
            self.misses += 1
            return None

    def put(self, key: Any, value: list[Hit], generation: int) -> None:
        if self.size == 0:
            return
        with self._lock:
            if generation != self.generation:  # a write happened while this result was computed
                return
            self._data[key] = (time.monotonic(), list(value))
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._data.clear()

    def info(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"entries": len(self._data), "capacity": self.size, "ttl_s": self.ttl_s, "hits": self.hits,
                "misses": self.misses, "hit_rate": round(self.hits / total, 4) if total else 0.0}


class NodeCache:
    """LRU of recently returned nodes by index label, so hot nodes skip SQLite on the search path.

    Nodes it hands out are shared: treat a searched node as read-only (its vector is marked
    read-only); ``get`` returns a private copy. ``update``/``delete`` evict the node."""

    def __init__(self, size: int):
        self.size = max(0, int(size))
        self._data: OrderedDict[int, Node] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.generation = 0  # bumped by evict/clear: a fetch that raced with a write is not cached

    def get_many(self, labels: list[int]) -> tuple[dict[int, Node], list[int], int]:
        found: dict[int, Node] = {}
        missing: list[int] = []
        if self.size == 0:
            return found, labels, self.generation
        with self._lock:
            for lb in labels:
                node = self._data.get(lb)
                if node is None:
                    missing.append(lb)
                else:
                    self._data.move_to_end(lb)
                    found[lb] = node
            self.hits += len(found)
            self.misses += len(missing)
            return found, missing, self.generation

    def put_many(self, nodes: dict[int, Node], generation: int) -> None:
        if self.size == 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            for lb, node in nodes.items():
                vec = node.vector.copy()  # its own buffer: a row view would pin the whole fetched batch
                vec.flags.writeable = False
                node.vector = vec
                self._data[lb] = node
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def evict(self, label: int) -> None:
        with self._lock:
            self.generation += 1
            self._data.pop(label, None)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._data.clear()

    def info(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"entries": len(self._data), "capacity": self.size, "hits": self.hits, "misses": self.misses,
                "hit_rate": round(self.hits / total, 4) if total else 0.0}


class Memory:
    """Nodes, edges and vectors: the durable store plus the ANN index and the graph."""

    def __init__(self, path: Path, store: Store, index: HnswIndex, *, auto_params: bool, cache: QueryCache,
                 index_status: dict[str, Any], node_cache: int = 0):
        self.path = path
        self.dim = store.dim
        self.store = store
        self.index = index
        self.auto_params = auto_params
        self._cache = cache
        self._nodes_cache = NodeCache(node_cache)
        self._wlock = threading.RLock()
        self._count = store.count()
        self._loaded_seq = store.seq() if index_status.get("action") == "loaded" else -1
        self._index_status = index_status
        self._closed = False
        self._dir_lock: _DirLock | None = None  # set by open()
        self._stats_providers: dict[str, Callable[[], dict[str, Any]]] = {}

    # ---- opening / closing -------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        dim: int,
        params: HnswParams | None = None,
        auto_params: bool = False,
        cache_size: int = 1024,
        cache_ttl_s: float = 300.0,
        *,
        synchronous: str = "FULL",
        node_cache: int = 0,
    ) -> Memory:
        """Open (or create) the memory in directory ``path``; rebuild the index if it is not usable.

        ``cache_size``/``cache_ttl_s``: the LRU of whole search results (cleared on every write);
        ``node_cache``: how many recently returned nodes stay in RAM (0, the default: always read
        SQLite — at the benchmark's 18% hit rate the cache cost more than it saved; turn it on for
        workloads with hot nodes);
        ``synchronous``: SQLite's FULL (default, survives power loss) or NORMAL (survives kill -9)."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock = _DirLock.acquire(path / LOCK_FILE)
        try:
            store = Store(path / DB_FILE, dim, synchronous=synchronous)
        except BaseException:
            lock.release()
            raise
        try:
            count, seq = store.count(), store.seq()
            chosen = hnsw_params_for(count) if auto_params else (params or HnswParams())
            expect = IndexStamp(seq=seq, count=count, dim=dim, m=chosen.m, ef_construction=chosen.ef_construction)
            t0 = time.perf_counter()
            index, reason = HnswIndex.load(path / INDEX_FILE, path / INDEX_META, chosen, expect)
            if index is not None:
                status = {"action": "loaded", "reason": "", "seconds": round(time.perf_counter() - t0, 3)}
            else:
                index = cls._rebuild(store, chosen, count)
                secs = time.perf_counter() - t0
                if count or (path / INDEX_FILE).exists():
                    log.warning("memory: rebuilt the index from %s (%d vectors, %.1f s): %s",
                                store.path, count, secs, reason)
                status = {"action": "rebuilt", "reason": reason, "seconds": round(secs, 3)}
        except sqlite3.DatabaseError as exc:
            store.close()
            lock.release()
            raise StoreCorruptError(f"{store.path} is damaged ({exc}); it was left untouched — restore it from a "
                                    "backup or move it away to start an empty memory") from None
        except BaseException:
            store.close()
            lock.release()
            raise
        mem = cls(path, store, index, auto_params=auto_params, cache=QueryCache(cache_size, cache_ttl_s),
                  index_status=status, node_cache=node_cache)
        mem._dir_lock = lock
        return mem

    @staticmethod
    def _rebuild(store: Store, params: HnswParams, count: int) -> HnswIndex:
        index = HnswIndex(store.dim, params, capacity=int(count * 1.1) + 16)
        for labels, vecs in store.iter_vectors():
            index.add(labels, vecs, num_threads=-1)
        return index

    def rebuild_index(self) -> None:
        """Rebuild the index from the store now (e.g. after changing parameters)."""
        with self._wlock:
            self._check_open()
            params = hnsw_params_for(self._count) if self.auto_params else self.index.params
            self.index = self._rebuild(self.store, params, self._count)
            self._nodes_cache.clear()
            self._loaded_seq = -1
            self._cache.invalidate()

    def save_index(self) -> None:
        """Save the index and its sidecar if it changed since it was loaded."""
        with self._wlock:
            self._check_open()
            seq = self.store.seq()
            if seq == self._loaded_seq:
                return
            stamp = IndexStamp(seq=seq, count=self._count, dim=self.dim, m=self.index.params.m,
                               ef_construction=self.index.params.ef_construction)
            self.index.save(self.path / INDEX_FILE, self.path / INDEX_META, stamp)
            self._loaded_seq = seq

    def close(self) -> None:
        """Save the index and close the store. Safe to call twice."""
        with self._wlock:
            if self._closed:
                return
            try:
                self.save_index()
            finally:
                self._closed = True
                self.store.close()
                if self._dir_lock is not None:
                    self._dir_lock.release()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the memory at {self.path} is closed")

    # ---- writes ------------------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        self.add_many([node], [])
        return node

    def add_many(self, nodes: Sequence[Node], edges: Sequence[Edge] = ()) -> None:
        """Insert nodes and edges in one transaction, durable before return, then index the nodes."""
        nodes, edges = check_batch(nodes, edges, self.dim)
        if not nodes and not edges:
            return
        with self._wlock:
            self._check_open()
            labels = self.store.insert(nodes, edges)
            self._count += len(nodes)
            if nodes:
                vecs = np.stack([n.vector for n in nodes])  # (n, dim)
                self.index.add(np.asarray(labels, np.int64), vecs, num_threads=-1 if len(nodes) >= 512 else 1)
            self._cache.invalidate()
            if self.auto_params and hnsw_params_for(self._count) != hnsw_params_for(self._count - len(nodes)):
                log.info("memory: %d nodes crosses into a new HNSW parameter row %s; the index is rebuilt with it "
                         "at the next open (or call rebuild_index())", self._count, hnsw_params_for(self._count))

    def add_edge(self, edge: Edge) -> Edge:
        check_edge(edge)
        with self._wlock:
            self._check_open()
            self.store.add_edges([edge])
            self._cache.invalidate()
        return edge

    def delete_edge(self, edge_id: str) -> None:
        with self._wlock:
            self._check_open()
            self.store.delete_edge(edge_id)

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
        with self._wlock:
            self._check_open()
            old = self.store.get(node_id)
            new = next_version(old, self.dim, text=text, vector=vector, confidence=confidence, tags=tags,
                               domain=domain, source=source, type=type)
            label = self.store.update(new, old)
            self._nodes_cache.evict(label)
            if vector is not None:
                self.index.add(np.array([label], np.int64), new.vector[None, :])
            self._cache.invalidate()
            return new

    def delete(self, node_id: str) -> None:
        """Delete a node, its edges and its history, and drop it from the index."""
        with self._wlock:
            self._check_open()
            label = self.store.delete(node_id)
            self._nodes_cache.evict(label)
            self._count -= 1
            self.index.delete(label)
            self._cache.invalidate()

    def prune_weak_edges(self, min_weight: float) -> int:
        with self._wlock:
            self._check_open()
            n = prune_weak_edges(self.store, min_weight)
            self._cache.invalidate()
            return n

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, node_id: str) -> Node:
        self._check_open()
        return self.store.get(node_id)

    def get_many(self, node_ids: Sequence[str]) -> dict[str, Node]:
        self._check_open()
        return self.store.get_many(node_ids)

    def history(self, node_id: str) -> list[Node]:
        """Earlier versions of a node, oldest first (the current one is ``get``)."""
        self._check_open()
        return self.store.history(node_id)

    def edges(self, node_id: str) -> list[Edge]:
        """Every edge with ``node_id`` at either end."""
        self._check_open()
        return self.store.edges_of(node_id)

    def find(self, *, types: Any = None, domain: str | None = None, tags: Sequence[str] | None = None,
             since: float | None = None, until: float | None = None, limit: int = 100) -> list[Node]:
        """Nodes matching the filters, newest first."""
        self._check_open()
        return self.store.find(Filter(types, domain, tags, since, until), limit)

    def count(self) -> int:
        return self._count

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
        self._check_open()
        q = check_query(qvec, self.dim)
        k = check_k(k)
        ef = check_ef(ef)
        flt = Filter(types, domain, tags, since, until)
        key = (q.tobytes(), k, ef, flt.key())
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        gen = self._cache.generation
        if flt.empty:
            labels, scores = self.index.search(q[None, :], k, ef)  # (1, k), (1, k)
            hits = self._hits(labels[0], scores[0])
        else:
            hits = self._filtered(q, k, ef, flt)
        self._cache.put(key, hits, gen)
        return hits

    def _nodes(self, labels: list[int]) -> dict[int, Node]:
        nodes, missing, gen = self._nodes_cache.get_many(labels)
        if missing:
            fetched = self.store.by_labels(missing)
            self._nodes_cache.put_many(fetched, gen)
            nodes.update(fetched)
        return nodes

    def _hits(self, labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]) -> list[Hit]:
        ls = labels.tolist()
        rows = _ResultNodes(self, ls)
        lazy = Hit._lazy
        return [lazy(lb, s, rows) for lb, s in zip(ls, scores.tolist(), strict=True)]

    def _filtered(self, q: npt.NDArray[np.float32], k: int, ef: int | None, flt: Filter) -> list[Hit]:
        allowed = self.store.labels_where(flt)
        if len(allowed) == 0:
            return []
        if len(allowed) <= EXACT_FILTER_LIMIT:  # exact: cheaper and better than a sparse graph walk
            vecs = self.index.vectors(allowed)  # (a, dim), unit rows
            sims = vecs @ (q / np.linalg.norm(q))  # (a,)
            top = np.argsort(-sims)[:k]
            return self._hits(allowed[top], sims[top])
        allowed_set = set(allowed.tolist())
        labels, scores = self.index.search(q[None, :], min(k, len(allowed_set)), ef, filter=allowed_set.__contains__)
        return self._hits(labels[0], scores[0])

    def search_batch(self, qvecs: Any, k: int = 10, *, ef: int | None = None) -> list[list[Hit]]:
        """``search`` for each row of ``qvecs`` (n, dim), in parallel inside hnswlib."""
        self._check_open()
        k = check_k(k)
        ef = check_ef(ef)
        try:
            qs = np.ascontiguousarray(qvecs, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInputError("query vectors must be a 2-d array of numbers") from None
        if qs.ndim != 2 or qs.shape[1] != self.dim:
            raise InvalidInputError(f"query vectors must have shape (n, {self.dim}), got {qs.shape}")
        if not np.all(np.isfinite(qs)) or np.any(np.einsum("ij,ij->i", qs, qs) <= 0.0):
            raise InvalidInputError("query vectors contain NaN/inf or an all-zero row")
        if len(qs) == 0:
            return []
        labels, scores = self.index.search(qs, k, ef, num_threads=-1)  # (n, k), (n, k)
        rows = _ResultNodes(self, np.unique(labels).tolist())  # one store query for every row's nodes
        lazy = Hit._lazy
        return [[lazy(lb, s, rows) for lb, s in zip(row_l.tolist(), row_s.tolist(), strict=True)]
                for row_l, row_s in zip(labels, scores, strict=True)]

    def search_threshold(self, qvec: Any, min_score: float = 0.95, k: int = 10, **filters: Any) -> list[Hit]:
        """The hits among the top ``k`` whose similarity is at least ``min_score``."""
        min_score = check_min_score(min_score)
        return [h for h in self.search(qvec, k, **filters) if h.score >= min_score]

    def expand(self, seed_ids: Sequence[str], hops: int = 2, min_weight: float = 0.0, limit: int = 64,
               rels: Sequence[EdgeType | str] | None = None) -> list[Expanded]:
        """Nodes up to ``hops`` edges from the seeds (excluded), by hop then path weight."""
        self._check_open()
        return expand(self.store, seed_ids, hops=hops, min_weight=min_weight, limit=limit, rels=rels)

    def neighbourhood(self, nodes: Sequence[Node | Hit]) -> NeighbourhoodStats:
        """Degree, density and coherence of a set of nodes (or hits), for the router's features."""
        self._check_open()
        return neighbourhood_stats(self.store, [x.node if isinstance(x, Hit) else x for x in nodes])

    # ---- stats -----------------------------------------------------------------------------------
    def register_stats(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        self._stats_providers[name] = provider

    def stats(self) -> dict[str, Any]:
        self._check_open()
        out: dict[str, Any] = {"path": str(self.path), "dim": self.dim, **self.store.counts()}
        out["index"] = {**self.index.info(), "auto_params": self.auto_params, "on_open": dict(self._index_status)}
        out["cache"] = self._cache.info()
        out["node_cache"] = self._nodes_cache.info()
        out["durability"] = {"journal_mode": "WAL", "synchronous": self.store.synchronous}
        for name, provider in self._stats_providers.items():
            out[name] = provider()
        return out


from ruvllm.memory.writeback import WriteBack, WriteResult  # noqa: E402  (writeback uses Memory)
