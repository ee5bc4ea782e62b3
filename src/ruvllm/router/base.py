"""What a router decides, and the protocol every router implements."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

CONTEXT_BINS: tuple[int, ...] = (256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class Decision:
    model: str
    context_tokens: int  # one of CONTEXT_BINS, capped by the model's window
    temperature: float  # [0, 2]
    top_p: float  # [0, 1]
    confidence: float  # [0, 1]
    reason: str = ""
    model_probs: dict[str, float] = field(default_factory=dict)
    # P(the routing policy picks ``model`` for this input): 1 for a deterministic choice, < 1 when the
    # router explored (ε-greedy); the online learner weights the outcome by 1 / propensity
    propensity: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RouteInput:
    """What a router sees of one query. ``features`` is the 128-d vector when computed."""

    query: str
    n_query_tokens: int
    top_score: float  # best retrieval similarity, 0 when memory is empty
    n_hits: int
    features: Any = None  # numpy float32 (128,) from router.features, when available
    session_id: str | None = None


class Router(Protocol):
    models: list[str]

    def route(self, inp: RouteInput) -> Decision: ...
