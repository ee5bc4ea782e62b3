"""The IVF-PQ cold tier: recall against exact search, on-disk reopen, tier merge, bad input."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from ruvllm.config import HnswParams
from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.memory.index import HnswIndex
from ruvllm.memory.ivfpq import IvfPqIndex, IvfPqParams, search_tiers

DIM = 32
N = 12_000
PARAMS = IvfPqParams(nlist=64, pq_m=8, pq_bits=6, opq=False)  # small codebooks: trains in about a second


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path]:
    x = clustered(N, 0)
    labels = np.arange(N, dtype=np.int64) * 7 + 3  # the caller's labels, not positions
    path = tmp_path_factory.mktemp("cold") / "tier"
    faiss.omp_set_num_threads(1)  # OpenMP's spinning threads crawl on a loaded 2-core machine
    IvfPqIndex.build(path, x, labels, PARAMS)
    return x, labels, path


def recall10(found: np.ndarray, x: np.ndarray, labels: np.ndarray, qs: np.ndarray) -> float:
    truth = np.argsort(-(qs @ x.T), axis=1)[:, :10]  # (nq, 10) positions
    return float(np.mean([len(set(f.tolist()) & set(labels[t].tolist())) / 10 for f, t in zip(found, truth,
                                                                                                strict=True)]))


def test_refine_recovers_recall_that_pq_alone_loses(corpus: tuple[np.ndarray, np.ndarray, Path]) -> None:
    x, labels, path = corpus
    cold = IvfPqIndex.open(path)  # reopened from disk, lists memory-mapped
    assert len(cold) == N
    qs = clustered(100, 1)
    approx, _ = cold.search(qs, 10, nprobe=16, refine=0)
    exact, scores = cold.search(qs, 10, nprobe=16, refine=8)
    r_pq, r_refined = recall10(approx, x, labels, qs), recall10(exact, x, labels, qs)
    assert r_refined >= 0.9 and r_refined > r_pq
    # refined scores are true cosines (float16 storage: about 1e-3) and come best first
    pos = {int(lb): i for i, lb in enumerate(labels)}
    assert np.allclose(scores[0], x[[pos[int(lb)] for lb in exact[0]]] @ qs[0], atol=2e-3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # more lists probed: never worse on average
    wide, _ = cold.search(qs, 10, nprobe=64, refine=8)
    assert recall10(wide, x, labels, qs) >= r_refined - 0.01
    info = cold.info()
    assert info["vectors"] == N and info["disk_bytes_per_vector"] < 4 * DIM  # smaller than float32 alone


def test_tiers_merge_hot_and_cold(corpus: tuple[np.ndarray, np.ndarray, Path]) -> None:
    x, labels, path = corpus
    cold = IvfPqIndex.open(path)
    hot = HnswIndex(DIM, HnswParams(16, 100, 64))
    fresh = clustered(500, 2)  # new nodes: only in the hot tier
    hot_labels = np.arange(500, dtype=np.int64) + 10**9
    hot.add(hot_labels, fresh)
    q = fresh[:5] + 0.01 * clustered(5, 3)
    got, scores = search_tiers(hot, cold, q, k=10)
    assert all(int(got[i, 0]) == int(hot_labels[i]) for i in range(5))  # each query's own fresh node wins
    both = np.vstack([x, fresh])
    all_labels = np.concatenate([labels, hot_labels])
    assert recall10(got, both, all_labels, q / np.linalg.norm(q, axis=1, keepdims=True)) >= 0.8
    assert len(set(got[0].tolist())) == 10 and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_bad_input_and_damaged_files(corpus: tuple[np.ndarray, np.ndarray, Path], tmp_path: Path) -> None:
    x, labels, path = corpus
    cold = IvfPqIndex.open(path)
    for bad in (np.zeros(DIM), np.full(DIM, np.nan), np.ones(DIM + 1), "text"):
        with pytest.raises(InvalidInputError):
            cold.search(bad, 10)
    with pytest.raises(InvalidInputError, match="nprobe"):
        cold.search(x[0], 10, nprobe=0)
    with pytest.raises(InvalidInputError, match="k must be"):
        cold.search(x[0], 0)
    with pytest.raises(InvalidInputError, match="too few"):
        IvfPqIndex.build(tmp_path / "small", x[:500], labels[:500], PARAMS)
    with pytest.raises(InvalidInputError, match="unique"):
        IvfPqIndex.build(tmp_path / "dup", x, np.zeros(N, np.int64), PARAMS)
    with pytest.raises(StoreCorruptError, match="no IVF-PQ tier"):
        IvfPqIndex.open(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "ivfpq.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(StoreCorruptError, match="cannot be read"):
        IvfPqIndex.open(broken)
    assert IvfPqParams.for_size(1_000_000).nlist == 4000 and IvfPqParams.for_size(1_000_000).pq_m == 48
