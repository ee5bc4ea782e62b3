"""Reservoir replay: bounded and uniform over the stream."""

from __future__ import annotations

import numpy as np
import pytest

from ruvllm.errors import InvalidInputError
from ruvllm.learning.replay import ReservoirBuffer


def test_bounded_and_counts_the_stream() -> None:
    buf: ReservoirBuffer[int] = ReservoirBuffer(10, seed=0)
    for i in range(1000):
        buf.add(i)
    assert len(buf) == 10 and buf.seen == 1000
    assert len(set(buf.items())) == 10
    assert len(buf.sample(4)) == 4 and len(buf.sample(100)) == 10


def test_uniform_over_the_stream_chi_square() -> None:
    """Each of N items ends up in the buffer with probability C/N: inclusion counts over many
    independent streams pass a chi-square test, and early vs late items are kept equally often."""
    n, cap, trials = 200, 20, 2000
    counts = np.zeros(n)
    for t in range(trials):
        buf: ReservoirBuffer[int] = ReservoirBuffer(cap, seed=t)
        for i in range(n):
            buf.add(i)
        counts[buf.items()] += 1
    expected = trials * cap / n  # 200
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n - 1
    assert chi2 < dof + 3.3 * np.sqrt(2 * dof), chi2  # ≈ the 0.9995 quantile of χ²(199)
    first, last = counts[: n // 2].mean(), counts[n // 2 :].mean()
    assert abs(first - last) / expected < 0.03


def test_sample_is_uniform_over_the_buffer() -> None:
    buf: ReservoirBuffer[int] = ReservoirBuffer(10, seed=1)
    buf.extend(range(10))
    rng = np.random.default_rng(0)
    hits = np.zeros(10)
    for _ in range(3000):
        hits[buf.sample(3, rng)] += 1
    assert np.all(np.abs(hits / 900 - 1) < 0.1)


def test_state_round_trip_and_validation() -> None:
    a: ReservoirBuffer[int] = ReservoirBuffer(5, seed=3)
    a.extend(range(50))
    b: ReservoirBuffer[int] = ReservoirBuffer(1)
    b.load_state_dict(a.state_dict())
    a.extend(range(50, 100))
    b.extend(range(50, 100))
    assert a.items() == b.items() and b.seen == 100
    with pytest.raises(InvalidInputError):
        ReservoirBuffer(0)
