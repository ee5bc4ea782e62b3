"""Reservoir-sampling replay buffer (Vitter's Algorithm R).

The buffer holds at most ``capacity`` items and, after ``n`` items have streamed past, every
one of them is in the buffer with the same probability ``capacity / n``: a uniform sample of
the whole stream in bounded memory, without knowing the stream's length in advance. That is
what lets the learner rehearse old domains long after they stopped arriving.

    buf = ReservoirBuffer[Experience](capacity=2000, seed=0)
    for exp in stream:
        buf.add(exp)
    batch = buf.sample(32)        # uniform over the buffer, without replacement
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import numpy as np

from ruvllm.errors import InvalidInputError

T = TypeVar("T")


class ReservoirBuffer(Generic[T]):
    """Bounded, uniform-over-the-stream sample. Thread-safe for one writer and many readers."""

    def __init__(self, capacity: int, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidInputError(f"replay capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity
        self.seen = 0  # items offered so far (the stream's length n)
        self._items: list[T] = []
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def add(self, item: T) -> bool:
        """Offer one item; returns whether it was kept."""
        with self._lock:
            self.seen += 1
            if len(self._items) < self.capacity:
                self._items.append(item)
                return True
            j = int(self._rng.integers(self.seen))  # uniform in [0, n)
            if j < self.capacity:  # kept with probability capacity / n, replacing a uniform victim
                self._items[j] = item
                return True
            return False

    def extend(self, items: Any) -> None:
        for it in items:
            self.add(it)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> list[T]:
        """``min(n, len)`` distinct items, uniformly at random."""
        with self._lock:
            k = min(max(n, 0), len(self._items))
            if k == 0:
                return []
            idx = (rng or self._rng).choice(len(self._items), size=k, replace=False)
            return [self._items[int(i)] for i in idx]

    def items(self) -> list[T]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.seen = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items())

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"capacity": self.capacity, "seen": self.seen, "items": list(self._items),
                    "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.capacity = int(state["capacity"])
            self.seen = int(state["seen"])
            self._items = list(state["items"])
            self._rng.bit_generator.state = state["rng"]
