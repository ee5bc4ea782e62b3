"""Input checks every memory backend applies the same way, so both answer bad input alike, and
the one rule for what an update makes of a node."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError, ValidationError
from ruvllm.memory.schema import Edge, Node, NodeType, as_vector

MAX_K = 1024


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise InvalidInputError(f"k must be an integer in [1, {MAX_K}], got {k!r}")
    return int(k)


def check_ef(ef: Any) -> int | None:
    if ef is None:
        return None
    if isinstance(ef, bool) or not isinstance(ef, (int, np.integer)) or not 1 <= int(ef) <= 100_000:
        raise InvalidInputError(f"ef must be a positive integer, got {ef!r}")
    return int(ef)


def check_min_score(min_score: Any) -> float:
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -1.0 <= min_score <= 1.0:
        raise InvalidInputError(f"min_score must be a number in [-1, 1], got {min_score!r}")
    return float(min_score)


def check_query(qvec: Any, dim: int) -> npt.NDArray[np.float32]:
    """A query vector of length ``dim``: finite and not all zeros (cosine needs a direction)."""
    try:
        q = as_vector(qvec, dim, "query vector")
    except ValidationError as exc:
        raise InvalidInputError(str(exc)) from None
    if not float(np.dot(q, q)) > 0.0:
        raise InvalidInputError("query vector is all zeros")
    return q


def check_node(node: Any, dim: int) -> Node:
    if not isinstance(node, Node):
        raise ValidationError(f"expected a Node, got {type(node).__name__}")
    node.validate(dim)
    if not float(np.dot(node.vector, node.vector)) > 0.0:
        raise ValidationError(f"node {node.id} has an all-zero vector; cosine similarity is undefined for it")
    return node


def check_edge(edge: Any) -> Edge:
    if not isinstance(edge, Edge):
        raise ValidationError(f"expected an Edge, got {type(edge).__name__}")
    return edge.validate()


def check_batch(nodes: Sequence[Any], edges: Sequence[Any], dim: int) -> tuple[list[Node], list[Edge]]:
    """``add_many``'s input, validated: every node and edge, and no node id twice."""
    checked = [check_node(n, dim) for n in nodes]
    links = [check_edge(e) for e in edges]
    ids = [n.id for n in checked]
    if len(set(ids)) != len(ids):
        raise ValidationError("the batch holds the same node id twice")
    return checked, links


def next_version(
    old: Node,
    dim: int,
    *,
    text: str | None = None,
    vector: Any = None,
    confidence: float | None = None,
    tags: list[str] | None = None,
    domain: str | None = None,
    source: str | None = None,
    type: NodeType | str | None = None,
) -> Node:
    """``old`` with the given fields changed, version + 1 and a new timestamp, validated."""
    new = copy.deepcopy(old)
    if text is not None:
        new.text = text
    if vector is not None:
        new.vector = as_vector(vector, dim, "node vector")
    if confidence is not None:
        new.metadata.confidence = confidence
    if tags is not None:
        new.metadata.tags = list(tags) if isinstance(tags, (list, tuple)) else tags
    if domain is not None:
        new.metadata.domain = domain
    if source is not None:
        new.source = source
    if type is not None:
        new.type = type  # type: ignore[assignment]  # validate() converts / rejects
    new.metadata.version = old.metadata.version + 1
    new.metadata.timestamp = time.time()
    return check_node(new, dim)
