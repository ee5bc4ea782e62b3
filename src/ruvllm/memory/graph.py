"""The memory's graph: k-hop expansion, edge filters, pruning, neighbourhood statistics.

Edges are followed in both directions (a Document reached by a Query's ``Cites`` edge leads
back to the other Queries that cite it). A node reached in ``h`` hops carries the product of
the edge weights along the strongest path that reached it first, so callers can rank by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError
from ruvllm.memory.schema import EdgeType, Node
from ruvllm.memory.store import Store

MAX_HOPS = 6
_REL = {t.value: t for t in EdgeType}


@dataclass
class Expanded:
    """A node reached from the seeds: ``hop`` edges away, ``via`` the node before it on the path,
    ``weight`` the product of edge weights along that path, ``rel`` the last edge's type."""

    node: Node
    hop: int
    via: str
    weight: float
    rel: EdgeType = EdgeType.SAME_TOPIC


@dataclass
class NeighbourhoodStats:
    """Statistics of a set of nodes (e.g. a query's hits) that the router's features use.

    degree_*: edges per node in the whole graph; density: edges among the set / possible pairs;
    coherence: mean pairwise cosine similarity of their vectors (1 = all the same direction)."""

    n_nodes: int
    n_edges: int
    degree_mean: float
    degree_max: int
    density: float
    coherence: float
    coherence_min: float


def check_rels(rels: Sequence[EdgeType | str] | None) -> list[str] | None:
    if rels is None:
        return None
    try:
        return [EdgeType(r).value for r in rels]
    except ValueError:
        raise InvalidInputError(f"unknown edge type in {list(rels)!r}; valid: "
                                f"{', '.join(t.value for t in EdgeType)}") from None


def check_min_weight(min_weight: float) -> float:
    if not 0.0 <= float(min_weight) <= 1.0:
        raise InvalidInputError(f"min_weight must be in [0, 1], got {min_weight!r}")
    return float(min_weight)


def check_expand(hops: int, min_weight: float, limit: int, rels: Sequence[EdgeType | str] | None) -> list[str] | None:
    """``expand``'s arguments, checked the same way by every backend; returns the edge types' names."""
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= MAX_HOPS:
        raise InvalidInputError(f"hops must be an integer in [0, {MAX_HOPS}], got {hops!r}")
    check_min_weight(min_weight)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
    return check_rels(rels)


def expand(
    store: Store,
    seed_ids: Sequence[str],
    hops: int = 2,
    min_weight: float = 0.0,
    limit: int = 64,
    rels: Sequence[EdgeType | str] | None = None,
) -> list[Expanded]:
    """Breadth-first expansion from ``seed_ids`` up to ``hops`` edges away; the seeds are excluded.

    One SQL query per hop. Results are ordered by hop, then path weight (strongest first), and
    cut at ``limit``."""
    rel_names = check_expand(hops, min_weight, limit, rels)
    seen: set[str] = set(seed_ids)
    path_w: dict[str, float] = dict.fromkeys(seed_ids, 1.0)
    frontier = list(dict.fromkeys(seed_ids))
    found: list[tuple[str, int, str, float, EdgeType]] = []
    for hop in range(1, hops + 1):
        if not frontier or len(found) >= limit:
            break
        best: dict[str, tuple[float, str, EdgeType]] = {}
        in_frontier = set(frontier)
        for src, dst, rel, weight in store.links(frontier, min_weight, rel_names):
            for a, b in ((src, dst), (dst, src)):
                if a in in_frontier and b not in seen:
                    w = path_w[a] * weight
                    if b not in best or w > best[b][0]:
                        best[b] = (w, a, _REL[rel])
        ordered = sorted(best.items(), key=lambda kv: -kv[1][0])
        for nid, (w, via, rel) in ordered:
            seen.add(nid)
            path_w[nid] = w
            found.append((nid, hop, via, w, rel))
        frontier = [nid for nid, _ in ordered]
    found = found[:limit]
    nodes = store.get_many([f[0] for f in found])
    return [Expanded(nodes[nid], hop, via, w, rel) for nid, hop, via, w, rel in found if nid in nodes]


def coherence(vectors: npt.NDArray[np.float32]) -> tuple[float, float]:
    """Mean and minimum pairwise cosine similarity of the rows of ``vectors`` (n, dim); (1, 1) if n < 2."""
    n = len(vectors)
    if n < 2:
        return 1.0, 1.0
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # (n, dim)
    sims = v @ v.T  # (n, n)
    iu = np.triu_indices(n, k=1)
    pair = sims[iu]
    return float(pair.mean()), float(pair.min())


def neighbourhood_stats(store: Store, nodes: Sequence[Node]) -> NeighbourhoodStats:
    """Degree, density and coherence of ``nodes`` (typically the hits of one search)."""
    ids = [n.id for n in nodes]
    n = len(ids)
    if n == 0:
        return NeighbourhoodStats(0, 0, 0.0, 0, 0.0, 1.0, 1.0)
    touching = store.edges_touching(ids)
    degree = dict.fromkeys(ids, 0)
    wanted = set(ids)
    inner = 0
    for e in touching:
        if e.src in degree:
            degree[e.src] += 1
        if e.dst in degree:
            degree[e.dst] += 1
        if e.src in wanted and e.dst in wanted:
            inner += 1
    pairs = n * (n - 1) / 2
    coh, coh_min = coherence(np.stack([x.vector for x in nodes]))
    return NeighbourhoodStats(
        n_nodes=n, n_edges=inner, degree_mean=float(np.mean(list(degree.values()))),
        degree_max=max(degree.values()), density=float(min(1.0, inner / pairs)) if pairs else 0.0,
        coherence=coh, coherence_min=coh_min,
    )


def prune_weak_edges(store: Store, min_weight: float) -> int:
    """Delete every edge whose weight is below ``min_weight``; returns how many went."""
    return store.prune_edges(check_min_weight(min_weight))
