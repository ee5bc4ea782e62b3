"""Memory backends behind one protocol: the embedded one (SQLite + hnswlib, ``ruvllm.memory.Memory``)
and the scale-out ones (PostgreSQL + pgvector, ``backends.pgvector.PgMemory``, and the same sharded
over several servers with hash partitioning + postgres_fdw, ``backends.sharded.ShardedPgMemory``).

    mem = open_memory(config.memory, data_dir)   # memory.backend = "embedded" | "pgvector" | "pgvector-sharded"

``MemoryBackend`` is what the orchestrator and the write-back use; all backends satisfy it
structurally (mypy checks it at the bottom of this module) and pass the same behavioural tests
(tests/test_memory_backends.py). See docs/scale.md for why PostgreSQL + pgvector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ruvllm.config import MemoryConfig
from ruvllm.errors import ConfigError
from ruvllm.memory import Hit, Memory
from ruvllm.memory.graph import Expanded, NeighbourhoodStats
from ruvllm.memory.schema import Edge, EdgeType, Node, NodeType

__all__ = ["BACKENDS", "MemoryBackend", "StoreView", "open_memory"]

BACKENDS = ("embedded", "pgvector", "pgvector-sharded")


class StoreView(Protocol):
    """The two store-level reads the write-back uses (``mem.store``)."""

    def query_texts(self) -> Iterator[tuple[str, str, list[str]]]: ...

    def edges_touching(self, node_ids: Sequence[str], min_weight: float = 0.0,
                       rels: Sequence[str] | None = None) -> list[Edge]: ...


class MemoryBackend(Protocol):
    """The memory's public API: nodes, edges, history, vector search, graph expansion, stats."""

    @property
    def dim(self) -> int: ...

    @property
    def store(self) -> StoreView: ...

    # writes: each is one transaction, committed before it returns
    def add(self, node: Node) -> Node: ...
    def add_many(self, nodes: Sequence[Node], edges: Sequence[Edge] = ()) -> None: ...
    def add_edge(self, edge: Edge) -> Edge: ...
    def delete_edge(self, edge_id: str) -> None: ...
    def update(self, node_id: str, *, text: str | None = None, vector: Any = None, confidence: float | None = None,
               tags: list[str] | None = None, domain: str | None = None, source: str | None = None,
               type: NodeType | str | None = None) -> Node: ...
    def delete(self, node_id: str) -> None: ...
    def prune_weak_edges(self, min_weight: float) -> int: ...

    # reads
    def get(self, node_id: str) -> Node: ...
    def get_many(self, node_ids: Sequence[str]) -> dict[str, Node]: ...
    def history(self, node_id: str) -> list[Node]: ...
    def edges(self, node_id: str) -> list[Edge]: ...
    def find(self, *, types: Any = None, domain: str | None = None, tags: Sequence[str] | None = None,
             since: float | None = None, until: float | None = None, limit: int = 100) -> list[Node]: ...
    def count(self) -> int: ...
    def search(self, qvec: Any, k: int = 10, *, ef: int | None = None, types: Any = None, domain: str | None = None,
               tags: Sequence[str] | None = None, since: float | None = None,
               until: float | None = None) -> list[Hit]: ...
    def search_batch(self, qvecs: Any, k: int = 10, *, ef: int | None = None) -> list[list[Hit]]: ...
    def search_threshold(self, qvec: Any, min_score: float = 0.95, k: int = 10, **filters: Any) -> list[Hit]: ...
    def expand(self, seed_ids: Sequence[str], hops: int = 2, min_weight: float = 0.0, limit: int = 64,
               rels: Sequence[EdgeType | str] | None = None) -> list[Expanded]: ...
    def neighbourhood(self, nodes: Sequence[Node | Hit]) -> NeighbourhoodStats: ...

    # stats and lifetime
    def register_stats(self, name: str, provider: Callable[[], dict[str, Any]]) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...


def open_memory(cfg: MemoryConfig, data_dir: Path) -> MemoryBackend:
    """Open the backend ``cfg.backend`` names: the embedded memory in ``data_dir/memory``, the
    PostgreSQL + pgvector memory at ``cfg.dsn`` (schema ``cfg.pg_schema``), or the sharded one whose
    coordinator is ``cfg.dsn`` and whose shards are ``cfg.shards``."""
    if cfg.backend == "embedded":
        return Memory.open(data_dir / "memory", dim=cfg.dim, params=cfg.hnsw(), auto_params=cfg.hnsw_auto,
                           cache_size=cfg.cache_size, cache_ttl_s=cfg.cache_ttl_s)
    if cfg.backend in ("pgvector", "pgvector-sharded"):
        if not cfg.dsn:
            raise ConfigError(f"memory.backend = {cfg.backend!r} needs memory.dsn (e.g. "
                              "postgresql://user@host:5432/db, or RUVLLM_MEMORY__DSN)")
        try:
            from ruvllm.memory.backends.pgvector import PgMemory
            from ruvllm.memory.backends.sharded import ShardedPgMemory
        except ImportError as exc:
            raise ConfigError(f"memory.backend = {cfg.backend!r} needs psycopg and pgvector ({exc}); "
                              "run `pip install 'ruvllm[pg]'`") from None
        if cfg.backend == "pgvector-sharded":
            return ShardedPgMemory.open(cfg.dsn, dim=cfg.dim, params=cfg.hnsw(), shards=cfg.shards,
                                        schema=cfg.pg_schema)
        return PgMemory.open(cfg.dsn, dim=cfg.dim, params=cfg.hnsw(), schema=cfg.pg_schema)
    raise ConfigError(f"unknown memory.backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")


if TYPE_CHECKING:  # every backend satisfies the protocol (checked by mypy, costs nothing at run time)
    from ruvllm.memory.backends.pgvector import PgMemory
    from ruvllm.memory.backends.sharded import ShardedPgMemory

    def _embedded_is_a_backend(m: Memory) -> MemoryBackend:
        return m

    def _pg_is_a_backend(m: PgMemory) -> MemoryBackend:
        return m

    def _sharded_is_a_backend(m: ShardedPgMemory) -> MemoryBackend:
        return m
