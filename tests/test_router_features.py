"""The 128-d router feature layout is pinned, and each input moves only its own slice."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.router import features as F
from ruvllm.router.features import FeatureInput, Normalizer, extract


def _emb(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def _base() -> FeatureInput:
    rng = np.random.default_rng(1)
    hv = rng.standard_normal((8, 384)).astype(np.float32)
    return FeatureInput(
        query="What does foo do?", n_query_tokens=6, embedding=_emb(0),
        hit_scores=[0.8, 0.7, 0.65, 0.5, 0.4], hit_depths=[0, 0, 0, 1, 1], hit_vectors=hv,
        neighbourhood={"k_requested": 8}, historical_accuracy=[0.7, 0.9],
    )


def _fitted() -> Normalizer:
    inputs = [dataclasses.replace(_base(), embedding=_emb(s)) for s in range(20)]
    return Normalizer.fit(inputs)


def test_layout_is_pinned() -> None:
    assert F.DIM == 128
    blocks = (F.QUERY_STATS, F.EMBEDDING_STATS, F.SEARCH_STATS, F.SYSTEM_STATS)
    assert blocks == (slice(0, 32), slice(32, 48), slice(48, 96), slice(96, 128))
    sizes = {name: s.stop - s.start for name, s in F.SLICES.items()}
    assert sizes["language"] == 8 and sizes["domain"] == 16 and sizes["query_type"] == 6
    assert sizes["embedding_pca"] == 8 and sizes["embedding_cluster"] == 4
    assert sizes["neighbourhood_density"] == 16 and sizes["semantic_coherence"] == 24
    assert sizes["device_class"] == 4 and sizes["privacy_level"] == 4 and sizes["historical_accuracy"] == 16
    # the named slices tile 0..128 exactly, in order, without gaps or overlaps
    ordered = sorted(F.SLICES.values(), key=lambda s: s.start)
    assert ordered[0].start == 0 and ordered[-1].stop == 128
    for a, b in itertools.pairwise(ordered):
        assert a.stop == b.start
    # each sub-slice lies inside its block
    blocks = [F.QUERY_STATS, F.EMBEDDING_STATS, F.SEARCH_STATS, F.SYSTEM_STATS]
    for s in F.SLICES.values():
        assert sum(b.start <= s.start and s.stop <= b.stop for b in blocks) == 1
    assert len(F.LANGUAGES) == 8 and len(F.QUERY_TYPES) == 6 and len(F.DOMAINS) == 16


def _changed(a: np.ndarray, b: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(~np.isclose(a, b))}


def _dims(*slices: slice) -> set[int]:
    return {i for s in slices for i in range(s.start, s.stop)}


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({"n_query_tokens": 40}, (F.Q_TOKENS,)),
        ({"user_frequency": 12.0}, (F.Q_USER_FREQ,)),
        ({"domain": "formats"}, (F.Q_DOMAIN,)),
        ({"query": "Why does foo fail?"}, (F.Q_TYPE,)),
        ({"query": "Was macht das foo?"}, (F.Q_LANGUAGE,)),
        ({"embedding": _emb(7)}, (F.EMBEDDING_STATS,)),
        ({"hit_scores": [0.9, 0.2, 0.1, 0.05, 0.01]}, (F.S_DIST, F.S_ENTROPY, F.S_DENSITY)),
        ({"hit_depths": [0, 1, 2, 2, 2]}, (F.S_DEPTH,)),
        ({"neighbourhood": {"k_requested": 8, "recall_estimate": 0.3}}, (F.S_RECALL,)),
        ({"hit_vectors": np.random.default_rng(9).standard_normal((8, 384)).astype(np.float32)}, (F.S_COHERENCE,)),
        ({"latency_budget_ms": 200.0}, (F.Y_LATENCY,)),
        ({"device_class": "mobile"}, (F.Y_DEVICE,)),
        ({"privacy_level": 3}, (F.Y_PRIVACY,)),
        ({"memory_available_mb": 512.0}, (F.Y_MEMORY,)),
        ({"battery": 0.2}, (F.Y_BATTERY,)),
        ({"concurrent_requests": 9}, (F.Y_CONCURRENT,)),
        ({"historical_accuracy": [0.1, 0.9, 0.5]}, (F.Y_HISTORY,)),
    ],
)
def test_an_input_moves_only_its_slice(change: dict, allowed: tuple[slice, ...]) -> None:
    norm = _fitted()
    a = extract(_base(), norm)
    b = extract(dataclasses.replace(_base(), **change), norm)
    moved = _changed(a, b)
    assert moved, f"{change} moved nothing"
    assert moved <= _dims(*allowed), f"{change} moved dims outside its slice: {sorted(moved - _dims(*allowed))}"


def test_embedding_moves_pca_and_clusters_with_a_fitted_basis() -> None:
    norm = _fitted()
    a = extract(_base(), norm)
    b = extract(dataclasses.replace(_base(), embedding=_emb(7)), norm)
    assert _changed(a, b) & _dims(F.E_PCA) and _changed(a, b) & _dims(F.E_CLUSTER)
    assert np.isclose(a[F.E_CLUSTER].sum(), 1.0)
    # without a basis the fitted slots stay zero
    raw = extract(_base())
    assert not raw[F.E_PCA].any() and not raw[F.E_CLUSTER].any()


def test_classifiers() -> None:
    assert F.language_of("What does json.dumps do?") == "en"
    assert F.language_of("Wie funktioniert das und warum ist es nicht schnell?") == "de"
    assert F.language_of("这个函数是做什么的") == "zh"
    assert F.language_of("x = json.dumps(obj) == y; print(foo())") == "code"
    assert F.query_type_of("What is the difference between a and b?") == "compare"
    assert F.query_type_of("How do I read a file?") == "howto"
    assert F.query_type_of("Explain the GIL") == "explain"
    assert F.query_type_of("What arguments does open take?") == "signature"
    assert F.query_type_of("Write code that zips two lists") == "code"
    assert F.query_type_of("What does zip do?") == "definition"


def test_normalizer_standardises_and_round_trips(tmp_path) -> None:
    inputs = [dataclasses.replace(_base(), embedding=_emb(s), n_query_tokens=3 + s, battery=s / 40)
              for s in range(30)]
    norm = Normalizer.fit(inputs)
    x = np.stack([norm.features(i) for i in inputs])
    varying = x.std(axis=0) > 1e-3
    assert np.allclose(x.mean(axis=0), 0.0, atol=1e-4)
    assert np.allclose(x.std(axis=0)[varying], 1.0, atol=1e-3)
    norm.save(tmp_path / "n.npz")
    back = Normalizer.load(tmp_path / "n.npz")
    assert np.array_equal(back.features(inputs[3]), norm.features(inputs[3]))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(StoreCorruptError):
        Normalizer.load(tmp_path / "bad.npz")


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError):
        extract(dataclasses.replace(_base(), hit_scores=[float("nan")]))
    with pytest.raises(InvalidInputError):
        extract(FeatureInput(query=None))  # type: ignore[arg-type]
