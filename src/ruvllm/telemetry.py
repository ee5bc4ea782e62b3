"""Per-stage latency measurement. (Prometheus export lives with the HTTP server.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Collects named stage durations in milliseconds, in the order they ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + (time.perf_counter() - t) * 1000.0

    def total_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000.0
