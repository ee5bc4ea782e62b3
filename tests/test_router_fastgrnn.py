"""FastGRNN: the numpy inference equals the torch twin; save/load; the Router wrapper."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ruvllm.errors import InvalidInputError, ModelNotFoundError, StoreCorruptError
from ruvllm.router.base import CONTEXT_BINS, Decision, RouteInput
from ruvllm.router.fastgrnn import FastGRNNConfig, FastGRNNParams, dequantize_int8, quantize_int8, quantized
from ruvllm.router.fastgrnn_router import FastGRNNRouter
from ruvllm.router.features import FeatureInput
from ruvllm.router.training import FastGRNNTorch

torch.set_num_threads(1)


def _random_params(models: list[str], seed: int = 0, prior: tuple[int, int] = (0, 0),
                   kind: str = "linear") -> FastGRNNParams:
    cfg = FastGRNNConfig(models=models, hidden=32, w_rank=8, u_rank=4, prior_slice=prior, prior_kind=kind)
    p = FastGRNNParams.init(cfg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    arrays = {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.3) for k, v in p.arrays.items()}
    return FastGRNNParams(cfg, arrays)


@pytest.mark.parametrize(("prior", "kind"), [((0, 0), "linear"), ((26, 32), "linear"), ((26, 32), "table")])
def test_numpy_forward_equals_torch_forward(prior: tuple[int, int], kind: str) -> None:
    params = _random_params(["a", "b", "c"], prior=prior, kind=kind)
    xs = np.random.default_rng(3).standard_normal((5, 4, 128)).astype(np.float32)  # (B, T, D)
    with torch.no_grad():
        ref = FastGRNNTorch.from_params(params)(torch.from_numpy(xs)).numpy()  # (B, T, n_out)
    assert np.allclose(params.forward_batch(xs), ref, atol=1e-5)
    # the single-step path used at serving time gives the same as the batched one
    seq, h = params.forward_sequence(xs[2])
    assert np.allclose(seq, ref[2], atol=1e-5)
    h2 = None
    for t in range(4):
        _, h2 = params.step(xs[2, t], h2)
    assert h2 is not None and np.allclose(h2, h, atol=1e-6)
    first = params.step(xs[2, 0])[0]
    assert np.allclose(first.model_probs, params.decode(ref[2, 0]).model_probs, atol=1e-5)
    # and the round trip torch → numpy keeps every tensor
    back = FastGRNNTorch.from_params(params).to_params()
    for k in params.arrays:
        assert np.array_equal(back.arrays[k], params.arrays[k])


def test_cell_is_the_published_update() -> None:
    """h' = (σ(ζ)(1−z) + σ(ν)) ⊙ h̃ + z ⊙ h with shared W, U — checked by hand for one step."""
    params = _random_params(["a", "b"], seed=5)
    a = params.arrays
    x = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    h = np.random.default_rng(1).standard_normal(32).astype(np.float32) * 0.5
    W, U = a["W1"] @ a["W2"].T, a["U1"] @ a["U2"].T
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    z = sig(W @ x + U @ h + a["b_z"])
    ht = np.tanh(W @ x + U @ h + a["b_h"])
    expected = (sig(a["zeta"][0]) * (1 - z) + sig(a["nu"][0])) * ht + z * h
    assert np.allclose(params.cell(x, h), expected, atol=1e-5)


def test_heads_are_in_range() -> None:
    params = _random_params(["a", "b"])
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal(128).astype(np.float32) * 5
        out, _ = params.step(x)
        assert np.isclose(out.model_probs.sum(), 1.0) and np.isclose(out.context_probs.sum(), 1.0)
        assert len(out.context_probs) == len(CONTEXT_BINS)
        assert 0.0 <= out.temperature <= 2.0 and 0.0 <= out.top_p <= 1.0 and 0.0 <= out.confidence <= 1.0


def test_save_load_fp32_and_int8(tmp_path) -> None:
    params = _random_params(["a", "b"])
    params.save(tmp_path / "r", int8=False)
    back = FastGRNNParams.load(tmp_path / "r")
    x = np.ones(128, np.float32)
    assert np.array_equal(back.step(x)[1], params.step(x)[1])
    params.save(tmp_path / "q", int8=True)
    q = FastGRNNParams.load(tmp_path / "q")
    assert json.loads((tmp_path / "q.json").read_text())["int8"] is True
    for k, v in params.arrays.items():
        step = np.abs(v).max() / 127
        assert np.max(np.abs(q.arrays[k] - v)) <= step / 2 + 1e-7
    assert np.allclose(q.arrays["W1"], quantized(params).arrays["W1"])
    assert params.size_bytes(8) < params.size_bytes(32) / 3


def test_int8_keeps_zeros() -> None:
    a = np.array([0.0, 0.5, -1.0, 0.0, 0.25], np.float32)
    qa, s = quantize_int8(a)
    assert qa.dtype == np.int8 and np.array_equal(dequantize_int8(qa, s) == 0, a == 0)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError):
        FastGRNNParams.load(tmp_path / "missing")
    params = _random_params(["a", "b"])
    params.save(tmp_path / "r")
    (tmp_path / "r.json").write_text('{"format": "something-else"}')
    with pytest.raises(StoreCorruptError):
        FastGRNNParams.load(tmp_path / "r")
    params.save(tmp_path / "s")
    (tmp_path / "s.npz").write_bytes(b"garbage")
    with pytest.raises(StoreCorruptError):
        FastGRNNParams.load(tmp_path / "s")


def test_loading_and_routing_do_not_import_torch(tmp_path) -> None:
    _random_params(["a", "b"]).save(tmp_path / "r")
    code = (
        "import sys; from pathlib import Path; from ruvllm.router.fastgrnn_router import FastGRNNRouter; "
        "from ruvllm.router.base import RouteInput; "
        f"r = FastGRNNRouter.load(Path({str(tmp_path / 'r')!r})); "
        "d = r.route(RouteInput('What does json.dumps do?', 6, 0.7, 4)); "
        "assert 'torch' not in sys.modules, 'torch was imported'; print(d.model)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in ("a", "b")


def test_router_protocol_sessions_and_installed_models(tmp_path) -> None:
    params = _random_params(["small", "mid", "large"], seed=2)
    params.save(tmp_path / "r")
    router = FastGRNNRouter.load(tmp_path / "r.npz", models=["large", "small"], max_context=1024)
    assert router.models == ["large", "small"]
    d = router.route(RouteInput("How do I parse JSON?", 8, 0.6, 5, session_id="s1"))
    assert isinstance(d, Decision) and d.model in ("small", "large")
    assert set(d.model_probs) == {"small", "large"} and np.isclose(sum(d.model_probs.values()), 1.0, atol=1e-3)
    assert d.context_tokens in CONTEXT_BINS and d.context_tokens <= 1024
    # the session's hidden state is kept and changes the next decision's inputs
    assert "s1" in router._states
    h1 = router._states["s1"].copy()
    router.route(RouteInput("And how do I write it back?", 8, 0.6, 5, session_id="s1"))
    assert not np.array_equal(h1, router._states["s1"])
    router.reset("s1")
    assert "s1" not in router._states
    # a FeatureInput is accepted as features
    d2 = router.route(RouteInput("q", 1, 0.0, 0, features=FeatureInput(query="What does zip do?")))
    assert d2.model in router.models
    with pytest.raises(InvalidInputError):
        router.route(RouteInput("q", 1, 0.0, 0, features=np.zeros(5)))
    with pytest.raises(ModelNotFoundError):
        FastGRNNRouter(params, models=["other"])


def test_feature_input_from_search_matches_the_training_construction() -> None:
    """The orchestrator's helper builds the same FeatureInput the oracle built for training."""
    from types import SimpleNamespace

    from ruvllm.router.fastgrnn_router import feature_input_from_search
    from ruvllm.router.features import extract
    from ruvllm.router.oracle import Retrieval, feature_input_for

    rng = np.random.default_rng(0)
    q = rng.standard_normal(384).astype(np.float32)
    vecs = rng.standard_normal((4, 384)).astype(np.float32)
    scores = [0.8, 0.7, 0.6, 0.5]
    sources = ["stdlib:json.dumps", "stdlib:json.dump", "/docs/a.md", "stdlib:json"]
    hits = [SimpleNamespace(score=s, node=SimpleNamespace(vector=v, source=src))
            for s, v, src in zip(scores, vecs, sources, strict=True)]
    ctx = [SimpleNamespace(hop=d) for d in (0, 0, 0, 1)]
    fi = feature_input_from_search("What does json.dumps do?", q, hits, ctx, k_requested=8, latency_budget_ms=900.0)
    keys = ["json.dumps", "json.dump", "a", "json"]  # the training corpus's keys (oracle.stdlib_corpus)
    ref = feature_input_for("What does json.dumps do?", Retrieval(q, keys, [], scores, [0, 0, 0, 1], vecs), k=8)
    # the best hit's symbol, the pattern of a question that names none, is the same in both
    assert fi.top_hit == ref.top_hit == "json.dumps"
    assert feature_input_from_search("q", q, hits[2:3]).top_hit == ""  # a file chunk names no symbol
    a, b = extract(fi), extract(ref)
    assert not np.allclose(a, b)  # only the latency budget differs …
    ref.latency_budget_ms = 900.0
    assert np.allclose(extract(fi), extract(ref))  # … and with it set, they agree
    empty = feature_input_from_search("hi", None)
    assert extract(empty).shape == (128,)


def test_the_type_prior_reads_its_slice_and_survives_save_and_load(tmp_path) -> None:
    params = _random_params(["a", "b"], prior=(26, 32))
    assert params.arrays["prior_w"].shape == (params.config.n_out, 6)
    x = np.zeros(128, np.float32)
    y = x.copy()
    y[27] = 1.0  # only the type slice differs: only the prior moves the output
    hx, hy = params.hidden0(), params.hidden0()
    hx, hy = params.cell(x, hx), params.cell(y, hy)
    assert np.allclose(params.heads(hy, y) - params.heads(hy, x), params.arrays["prior_w"][:, 1], atol=1e-6)
    for int8 in (False, True):
        params.save(tmp_path / f"p{int8}", int8=int8)
        back = FastGRNNParams.load(tmp_path / f"p{int8}")
        assert back.config.prior_slice == (26, 32)
        step = np.abs(params.arrays["prior_w"]).max() / 127  # int8: within one quantisation step
        assert np.allclose(back.arrays["prior_w"], params.arrays["prior_w"], atol=step)
    # a checkpoint written before the prior existed has no prior_slice: it loads without one
    plain = _random_params(["a", "b"])
    plain.save(tmp_path / "old", int8=False)
    doc = json.loads((tmp_path / "old.json").read_text())
    del doc["config"]["prior_slice"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = FastGRNNParams.load(tmp_path / "old")
    assert old.config.prior_slice == (0, 0) and "prior_w" not in old.arrays
    with pytest.raises(StoreCorruptError):  # a prior that is not a slice of the input
        FastGRNNParams.init(FastGRNNConfig(models=["a", "b"], input_dim=16, prior_slice=(26, 32)))
    assert np.array_equal(old.step(x)[1], plain.step(x)[1])
    assert old.config.prior_kind == "linear"  # and reads its prior as before prior_kind existed


def test_a_table_prior_adds_the_column_of_the_query_type_whatever_the_slice_scale(tmp_path) -> None:
    params = _random_params(["a", "b"], prior=(26, 32), kind="table")
    h = params.cell(np.zeros(128, np.float32), params.hidden0())
    base = params.heads(h)  # no x: no prior
    for t, (hot, cold) in enumerate([(1.0, 0.0), (2.2, -0.45), (0.3, -3.0)]):  # raw and standardised one-hots
        x = np.zeros(128, np.float32)
        x[26:32] = cold
        x[26 + t] = hot
        assert np.allclose(params.heads(h, x) - base, params.arrays["prior_w"][:, t], atol=1e-6)
    flat = np.zeros(128, np.float32)
    flat[26:32] = -0.4  # no type is hot: no prior, not type 0's
    assert np.allclose(params.heads(h, flat), base, atol=1e-6)
    params.save(tmp_path / "t", int8=True)
    assert FastGRNNParams.load(tmp_path / "t").config.prior_kind == "table"
    doc = json.loads((tmp_path / "t.json").read_text())
    doc["config"]["prior_kind"] = "quadratic"
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(StoreCorruptError, match="prior_kind"):
        FastGRNNParams.load(tmp_path / "t")
