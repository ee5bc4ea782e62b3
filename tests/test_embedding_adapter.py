"""EmbeddingAdapter: LLM hidden states (llama.cpp, mean pooling) → projection → LayerNorm → 384-d."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ruvllm.embedding_adapter import EmbeddingAdapter
from ruvllm.errors import InvalidInputError, ModelLoadError, ModelNotFoundError

pytestmark = pytest.mark.model

TEXTS = [
    "json.dumps serializes a Python object to a JSON formatted string.",
    "math.sqrt returns the square root of x.",
    "What does json.dumps do?",
    "How do I get a square root in Python?",
    "os.path.join joins one or more path segments intelligently.",
    "itertools.chain makes an iterator that returns elements from the first iterable, then the next.",
]


@pytest.fixture(scope="module")
def adapter(registry: Any) -> Iterator[EmbeddingAdapter]:
    a = EmbeddingAdapter(registry.path("gemma3-270m"), n_ctx=256)
    yield a
    a.close()


def test_shape_norm_and_determinism(adapter: EmbeddingAdapter) -> None:
    e = adapter.embed(TEXTS)
    assert e.shape == (len(TEXTS), 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    # deterministic and (up to float noise from the batch's composition) batch-independent
    assert np.all(np.sum(adapter.embed(TEXTS[:2]) * e[:2], axis=1) > 0.999)
    assert adapter.embed([]).shape == (0, 384)
    # LayerNorm: each vector has zero mean over its dimensions
    assert np.allclose(e.mean(axis=1), 0.0, atol=1e-4)
    # even unfitted, the question lands nearer its answer than an unrelated doc
    assert e[2] @ e[0] > e[2] @ e[4]


def test_fit_save_load_roundtrip(adapter: EmbeddingAdapter, tmp_path: Path, registry: Any) -> None:
    rng = np.random.default_rng(0)
    h = adapter.hidden(TEXTS)
    assert h.shape == (len(TEXTS), adapter.d_model)
    targets = rng.standard_normal((len(TEXTS), 384)).astype(np.float32)
    before = float(np.mean(np.sum(adapter.project(h) * targets / np.linalg.norm(targets, axis=1, keepdims=True), 1)))
    cos = adapter.fit(None, targets, ridge=1e-3, hidden=h)
    assert adapter.fitted and cos > max(0.9, before)
    path = adapter.save(tmp_path / "proj.npz")
    other = EmbeddingAdapter(registry.path("gemma3-270m"), projection_path=path, n_ctx=256)
    try:
        assert other.fitted
        assert np.all(np.sum(other.embed(TEXTS[:3]) * adapter.embed(TEXTS[:3]), axis=1) > 0.9999)
    finally:
        other.close()


def test_bad_inputs(adapter: EmbeddingAdapter, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        adapter.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        adapter.embed([1, 2])  # type: ignore[list-item]
    with pytest.raises(ModelNotFoundError):
        EmbeddingAdapter(tmp_path / "missing.gguf")
    with pytest.raises(ModelNotFoundError, match="projection"):
        EmbeddingAdapter(adapter.model_path, projection_path=tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(3), W=np.zeros((3, 384)), b=np.zeros(384), d_model=np.int64(3))
    with pytest.raises(ModelLoadError, match="refit"):
        adapter.load(bad)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="projection file"):
        adapter.load(tmp_path / "junk.npz")
