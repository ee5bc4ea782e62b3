"""The memory's data model, exactly as the spec's schema.

Node {id: UUID, vector: f32[D], text, type: Query | Document | AgentStep | Fact, source,
      metadata {timestamp, tags, domain, version, confidence}}
Edge {id, src, dst, rel: Cites | Follows | SameTopic | AgentStep | Derived, weight,
      metadata {timestamp, created_by, confidence}}

``validate()`` raises ``ValidationError`` with a message that names the bad field.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import ValidationError

Vector = npt.NDArray[np.float32]

MAX_TEXT_CHARS = 1_000_000


class NodeType(StrEnum):
    QUERY = "Query"
    DOCUMENT = "Document"
    AGENT_STEP = "AgentStep"
    FACT = "Fact"


class EdgeType(StrEnum):
    CITES = "Cites"
    FOLLOWS = "Follows"
    SAME_TOPIC = "SameTopic"
    AGENT_STEP = "AgentStep"
    DERIVED = "Derived"


def new_id() -> str:
    return str(uuid.uuid4())


def check_uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a UUID string, got {type(value).__name__}")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ValidationError(f"{what} {value!r} is not a valid UUID") from None
    return str(parsed)


def check_unit(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{what} must be a number in [0, 1], got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValidationError(f"{what} must be in [0, 1], got {value!r}")
    return float(value)


def as_vector(value: Any, dim: int | None = None, what: str = "vector") -> Vector:
    """Validate and convert to a contiguous float32 vector of length ``dim``."""
    try:
        vec = np.ascontiguousarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a sequence of numbers") from None
    if vec.ndim != 1:
        raise ValidationError(f"{what} must be 1-dimensional, got shape {vec.shape}")
    if dim is not None and vec.shape[0] != dim:
        raise ValidationError(f"{what} has dimension {vec.shape[0]}, expected {dim}")
    if vec.shape[0] == 0:
        raise ValidationError(f"{what} is empty")
    if not np.all(np.isfinite(vec)):
        raise ValidationError(f"{what} contains NaN or inf")
    return vec


@dataclass
class NodeMetadata:
    timestamp: float = field(default_factory=time.time)
    tags: list[str] = field(default_factory=list)
    domain: str = ""
    version: int = 1
    confidence: float = 1.0


@dataclass
class Node:
    text: str
    vector: Vector
    type: NodeType = NodeType.DOCUMENT
    source: str = ""
    metadata: NodeMetadata = field(default_factory=NodeMetadata)
    id: str = field(default_factory=new_id)

    def validate(self, dim: int | None = None) -> Node:
        self.id = check_uuid(self.id, "node id")
        if not isinstance(self.text, str):
            raise ValidationError(f"node text must be a string, got {type(self.text).__name__}")
        if not self.text.strip():
            raise ValidationError("node text is empty")
        if len(self.text) > MAX_TEXT_CHARS:
            raise ValidationError(f"node text is {len(self.text)} characters; the limit is {MAX_TEXT_CHARS}")
        try:
            self.type = NodeType(self.type)
        except ValueError:
            raise ValidationError(
                f"unknown node type {self.type!r}; valid: {', '.join(t.value for t in NodeType)}"
            ) from None
        if not isinstance(self.source, str):
            raise ValidationError("node source must be a string")
        self.vector = as_vector(self.vector, dim, "node vector")
        md = self.metadata
        if not isinstance(md.tags, list) or not all(isinstance(t, str) for t in md.tags):
            raise ValidationError("node metadata.tags must be a list of strings")
        if not isinstance(md.domain, str):
            raise ValidationError("node metadata.domain must be a string")
        if isinstance(md.version, bool) or not isinstance(md.version, int) or md.version < 1:
            raise ValidationError(f"node metadata.version must be an integer >= 1, got {md.version!r}")
        if not isinstance(md.timestamp, (int, float)) or not math.isfinite(md.timestamp):
            raise ValidationError("node metadata.timestamp must be a finite number (unix seconds)")
        md.confidence = check_unit(md.confidence, "node metadata.confidence")
        return self


@dataclass
class EdgeMetadata:
    timestamp: float = field(default_factory=time.time)
    created_by: str = "system"
    confidence: float = 1.0


@dataclass
class Edge:
    src: str
    dst: str
    rel: EdgeType
    weight: float = 1.0
    metadata: EdgeMetadata = field(default_factory=EdgeMetadata)
    id: str = field(default_factory=new_id)

    def validate(self) -> Edge:
        self.id = check_uuid(self.id, "edge id")
        self.src = check_uuid(self.src, "edge src")
        self.dst = check_uuid(self.dst, "edge dst")
        if self.src == self.dst:
            raise ValidationError(f"edge {self.id} is a self-loop on {self.src}")
        try:
            self.rel = EdgeType(self.rel)
        except ValueError:
            raise ValidationError(
                f"unknown edge type {self.rel!r}; valid: {', '.join(t.value for t in EdgeType)}"
            ) from None
        self.weight = check_unit(self.weight, "edge weight")
        md = self.metadata
        if not isinstance(md.created_by, str):
            raise ValidationError("edge metadata.created_by must be a string")
        if not isinstance(md.timestamp, (int, float)) or not math.isfinite(md.timestamp):
            raise ValidationError("edge metadata.timestamp must be a finite number (unix seconds)")
        md.confidence = check_unit(md.confidence, "edge metadata.confidence")
        return self
