"""Prometheus metrics for the service: one small module of counters, gauges and histograms.

The HTTP server calls ``observe_request`` for every request and ``observe_response`` for every
answered query; anything else that answers queries (the CLI, a batch job) may call
``observe_response`` too. ``render()`` returns the text exposition for ``GET /metrics``.

All metrics live in their own ``REGISTRY`` (not the process-global default), so importing this
module twice in a test session, or next to another library that uses prometheus-client, never
raises a duplicate-metric error.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# Latency buckets in seconds: sub-millisecond stages (search, rank) up to multi-second generation.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

HTTP_REQUESTS = Counter(
    "ruvllm_http_requests", "HTTP requests by route template, method and status code.",
    ["route", "method", "status"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "ruvllm_http_request_seconds", "Wall time of an HTTP request (to the last byte for streams), by route.",
    ["route"], buckets=REQUEST_BUCKETS, registry=REGISTRY,
)
STAGE_LATENCY = Histogram(
    "ruvllm_stage_seconds", "Time spent in each stage of a query (embed, search, expand, rank, route, ...).",
    ["stage"], buckets=STAGE_BUCKETS, registry=REGISTRY,
)
QUERY_LATENCY = Histogram(
    "ruvllm_query_seconds", "End-to-end query time inside the orchestrator, split by cache hit vs model call.",
    ["path"], buckets=REQUEST_BUCKETS, registry=REGISTRY,
)
QUERIES = Counter("ruvllm_queries", "Answered queries by model and path (cache or model).", ["model", "path"],
                  registry=REGISTRY)
ROUTER_DECISIONS = Counter(
    "ruvllm_router_decisions", "Router decisions by chosen model.", ["model"], registry=REGISTRY,
)
ROUTER_CONFIDENCE = Histogram(
    "ruvllm_router_confidence", "Router decision confidence.",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=REGISTRY,
)
CACHE = Counter("ruvllm_cache", "Answer cache lookups by result (hit or miss).", ["result"], registry=REGISTRY)
WRITEBACK = Counter(
    "ruvllm_writeback", "Write-back outcomes by action (inserted, merged, duplicate, rejected, off, ...).",
    ["action"], registry=REGISTRY,
)
TOKENS = Counter("ruvllm_tokens", "Tokens processed, by kind (prompt, completion).", ["kind"], registry=REGISTRY)
QUALITY = Histogram(
    "ruvllm_answer_quality", "Judged grounding quality of answers, [0, 1].",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=REGISTRY,
)
FEEDBACK = Counter("ruvllm_feedback", "User feedback events by label (good: score >= 0.5).", ["label"],
                   registry=REGISTRY)
MEMORY_NODES = Gauge("ruvllm_memory_nodes", "Nodes in memory (documents + written-back answers).", registry=REGISTRY)
MEMORY_STAT = Gauge("ruvllm_memory_stat", "Numeric memory statistics reported by the store.", ["name"],
                    registry=REGISTRY)
LEARNING_STAT = Gauge("ruvllm_learning_stat", "Numeric statistics reported by the online learner.", ["name"],
                      registry=REGISTRY)
REPLAY_FILL = Gauge("ruvllm_replay_fill", "Fraction of the learner's replay buffer in use, [0, 1].",
                    registry=REGISTRY)
QUEUE_DEPTH = Gauge("ruvllm_queue_depth", "Requests waiting for a generation slot.", registry=REGISTRY)
IN_FLIGHT = Gauge("ruvllm_in_flight", "Requests holding a generation slot.", registry=REGISTRY)
REJECTED = Counter("ruvllm_rejected", "Requests turned away, by reason (queue_full, timeout, draining).",
                   ["reason"], registry=REGISTRY)
READY = Gauge("ruvllm_ready", "1 once models and index are loaded and the server accepts queries.",
              registry=REGISTRY)


def is_cache_hit(resp: Any) -> bool:
    """Whether a ``QueryResponse`` was served from a cache rather than by a model call.

    An explicit ``cached``/``cache_hit`` attribute wins; otherwise a response without a
    ``generate`` stage in its latency breakdown did not call a model.
    """
    for attr in ("cache_hit", "cached"):
        value = getattr(resp, attr, None)
        if isinstance(value, bool):
            return value
    latency = getattr(resp, "latency_ms", None) or {}
    return bool(latency) and "generate" not in latency


_SEEN: OrderedDict[str, None] = OrderedDict()  # request ids already recorded (the last few thousand)
_SEEN_MAX = 4096
_SEEN_LOCK = threading.Lock()


def _first_time(request_id: Any) -> bool:
    if not isinstance(request_id, str) or not request_id:
        return True
    with _SEEN_LOCK:
        if request_id in _SEEN:
            return False
        _SEEN[request_id] = None
        while len(_SEEN) > _SEEN_MAX:
            _SEEN.popitem(last=False)
        return True


def observe_response(resp: Any) -> None:
    """Record one answered query (an ``orchestrator.QueryResponse``): stages, decision, write-back.

    Idempotent per ``request_id``: the orchestrator and the server may both call it for the same
    response and it is counted once.
    """
    if not _first_time(getattr(resp, "request_id", None)):
        return
    latency: Mapping[str, float] = getattr(resp, "latency_ms", None) or {}
    for stage, ms in latency.items():
        STAGE_LATENCY.labels(stage=stage).observe(max(float(ms), 0.0) / 1000.0)
    hit = is_cache_hit(resp)
    path = "cache" if hit else "model"
    CACHE.labels(result="hit" if hit else "miss").inc()
    model = str(getattr(resp, "model", "") or "unknown")
    QUERIES.labels(model=model, path=path).inc()
    total_ms = getattr(resp, "total_ms", None)
    if total_ms is not None:
        QUERY_LATENCY.labels(path=path).observe(max(float(total_ms), 0.0) / 1000.0)
    decision = getattr(resp, "decision", None)
    if decision is not None:
        ROUTER_DECISIONS.labels(model=str(getattr(decision, "model", model))).inc()
        conf = getattr(decision, "confidence", None)
        if isinstance(conf, (int, float)):
            ROUTER_CONFIDENCE.observe(float(conf))
    wb = getattr(resp, "writeback", None)
    WRITEBACK.labels(action=str(wb.get("action", "unknown")) if isinstance(wb, Mapping) else "off").inc()
    usage: Mapping[str, int] = getattr(resp, "usage", None) or {}
    for kind in ("prompt", "completion"):
        n = usage.get(f"{kind}_tokens")
        if isinstance(n, int) and n > 0:
            TOKENS.labels(kind=kind).inc(n)
    quality = getattr(resp, "quality", None)
    if isinstance(quality, (int, float)):
        QUALITY.observe(float(quality))


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    HTTP_LATENCY.labels(route=route).observe(max(seconds, 0.0))


def observe_feedback(score: float) -> None:
    FEEDBACK.labels(label="good" if score >= 0.5 else "bad").inc()


def observe_rejection(reason: str) -> None:
    REJECTED.labels(reason=reason).inc()


def set_queue(depth: int, in_flight: int) -> None:
    QUEUE_DEPTH.set(depth)
    IN_FLIGHT.set(in_flight)


def set_ready(ready: bool) -> None:
    READY.set(1 if ready else 0)


def update_from_stats(stats: Mapping[str, Any]) -> None:
    """Refresh gauges from ``RuvLLM.stats()``: memory size, numeric memory stats, replay fill."""
    memory = stats.get("memory")
    if isinstance(memory, Mapping):
        for name, value in _numbers(memory):
            MEMORY_STAT.labels(name=name).set(value)
        for key in ("nodes", "count", "n_nodes"):
            if isinstance(memory.get(key), int):
                MEMORY_NODES.set(memory[key])
                break
    learning = stats.get("learning")
    if isinstance(learning, Mapping):
        for name, value in _numbers(learning):
            LEARNING_STAT.labels(name=name).set(value)
        fill = learning.get("replay_fill")
        if fill is None and isinstance(learning.get("replay_size"), (int, float)) and learning.get("replay_capacity"):
            fill = float(learning["replay_size"]) / float(learning["replay_capacity"])
        if isinstance(fill, (int, float)):
            REPLAY_FILL.set(float(fill))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(tree: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Numeric leaves of a stats dict, one level deep: ``nodes``, ``cache.hits``, ..."""
    out = []
    for name, value in tree.items():
        if _is_number(value):
            out.append((str(name), float(value)))
        elif isinstance(value, Mapping):
            out += [(f"{name}.{sub}", float(v)) for sub, v in value.items() if _is_number(v)]
    return out


def set_memory_nodes(n: int) -> None:
    MEMORY_NODES.set(n)


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
