"""FastGRNN (Kusupati et al., NeurIPS 2018) with the router's output heads, in numpy.

The cell, exactly as Microsoft EdgeML's ``FastGRNNCell``:

    z  = σ(W x + U h + b_z)                    gate
    h̃  = tanh(W x + U h + b_h)                 candidate; W and U are shared by gate and update
    h' = (σ(ζ)·(1 − z) + σ(ν)) ⊙ h̃ + z ⊙ h      ζ, ν learned scalars (init 1 and −4)

with low-rank W = W1·W2ᵀ (H×D) and U = U1·U2ᵀ (H×H). The recurrence runs over one session's
queries, so h carries what the session asked so far. Heads read h' (H) and give:

    model logits (M)      one per configured model → softmax
    context logits (5)    CONTEXT_BINS = 256, 512, 1024, 2048, 4096 → softmax
    temperature           2·σ(·)   ∈ [0, 2]
    top_p                 σ(·)     ∈ [0, 1]
    confidence            σ(·)     ∈ [0, 1], trained to be P(chosen model = oracle's model)

Optionally (``FastGRNNConfig.prior_slice``, ``ruvllm router train --type-prior``) the heads also
read the query-type slice of x straight through ``prior_w``: a per-type prior that the cell's
contribution adds to, so a strongly regularised router falls back to a per-type table instead of
to one constant answer. With ``prior_kind = "table"`` the prior reads the one-hot of the slice's
largest entry (the query's type) instead of its standardised values, so ``prior_w``'s column t is
exactly the logits added for type t: training fills it with the training split's mean utility per
type and holds it fixed (``ruvllm router train --utility-prior``), and the cell learns what the type
does not say.

This file is the inference side: numpy only, no torch import (torch costs seconds and
hundreds of MB at start-up). The torch twin used for training lives in ``training.py`` and
shares the parameter names below, so ``FastGRNNParams`` is the hand-off between the two.
Compression (sparse factors, int8 per-tensor) is stored here too: ``save`` writes
``<stem>.npz`` (arrays) + ``<stem>.json`` (config and metadata); ``load`` needs numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import ModelNotFoundError, StoreCorruptError
from ruvllm.router.base import CONTEXT_BINS
from ruvllm.router.features import DIM, Normalizer

F32 = npt.NDArray[np.float32]
FORMAT = "ruvllm-fastgrnn/1"


@dataclass
class FastGRNNConfig:
    models: list[str] = field(default_factory=lambda: ["small", "large"])  # M output classes, in order
    input_dim: int = DIM  # D
    hidden: int = 32  # H, 32–64
    w_rank: int = 16  # rank of W = W1·W2ᵀ
    u_rank: int = 8  # rank of U = U1·U2ᵀ
    context_bins: tuple[int, ...] = CONTEXT_BINS
    zeta_init: float = 1.0
    nu_init: float = -4.0
    # [start, stop) of input dims the heads also read directly, ``prior_w`` (n_out × width): a
    # per-query-type prior that the cell adds to (features.Q_TYPE); (0, 0) = none, as in checkpoints
    # made before it existed
    prior_slice: tuple[int, int] = (0, 0)
    # how the heads read that slice: "linear" (its normalised values, as before this field) or
    # "table" (the one-hot of its largest entry, so prior_w's column t is type t's logits)
    prior_kind: str = "linear"

    @property
    def prior_width(self) -> int:
        return max(0, self.prior_slice[1] - self.prior_slice[0])

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_out(self) -> int:  # M model logits + 5 context logits + temperature, top_p, confidence
        return self.n_models + len(self.context_bins) + 3


# Parameter names and shapes; the torch module in training.py uses the same names.
def param_shapes(cfg: FastGRNNConfig) -> dict[str, tuple[int, ...]]:
    H, D = cfg.hidden, cfg.input_dim
    return {
        "W1": (H, cfg.w_rank),  # W = W1 @ W2.T : (H, D)
        "W2": (D, cfg.w_rank),
        "U1": (H, cfg.u_rank),  # U = U1 @ U2.T : (H, H)
        "U2": (H, cfg.u_rank),
        "b_z": (H,),
        "b_h": (H,),
        "zeta": (1,),
        "nu": (1,),
        "head_w": (cfg.n_out, H),  # all heads stacked
        "head_b": (cfg.n_out,),
        **({"prior_w": (cfg.n_out, cfg.prior_width)} if cfg.prior_width else {}),
    }


PRIOR_KINDS = ("linear", "table")


def prior_input(cfg: FastGRNNConfig, xs: npt.NDArray[Any]) -> F32:
    """What ``prior_w`` multiplies: the prior slice of xs (…, D), or with ``prior_kind = "table"`` the
    one-hot of its largest entry (all zeros where the slice is flat: no type, no prior)."""
    lo, hi = cfg.prior_slice
    s = np.asarray(xs[..., lo:hi], np.float32)
    if cfg.prior_kind == "linear":
        return s
    hot = np.arange(hi - lo) == s.argmax(axis=-1)[..., None]
    return (hot & (s.max(axis=-1, keepdims=True) > s.min(axis=-1, keepdims=True))).astype(np.float32)


SPARSE_PARAMS = ("W1", "W2", "U1", "U2")  # hard-thresholded in stage 2 (as in EdgeML)


def _sigmoid(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # stable for large |x|


@dataclass
class RouterOutput:
    model_probs: F32  # (M,)
    context_probs: F32  # (5,)
    temperature: float
    top_p: float
    confidence: float


@dataclass
class FastGRNNParams:
    """The numpy model: parameters (float32, already dequantised when loaded from int8)."""

    config: FastGRNNConfig
    arrays: dict[str, F32]
    normalizer: Normalizer = field(default_factory=Normalizer.identity)
    meta: dict[str, Any] = field(default_factory=dict)  # sparsity, quantisation, training report

    def __post_init__(self) -> None:
        lo, hi = self.config.prior_slice
        if not 0 <= lo <= hi <= self.config.input_dim:
            raise StoreCorruptError(f"FastGRNN prior_slice {self.config.prior_slice} is not a slice of the "
                                    f"{self.config.input_dim}-d input")
        if self.config.prior_kind not in PRIOR_KINDS:
            raise StoreCorruptError(f"FastGRNN prior_kind {self.config.prior_kind!r} is not one of {PRIOR_KINDS}")
        shapes = param_shapes(self.config)
        for name, shape in shapes.items():
            if name not in self.arrays or tuple(self.arrays[name].shape) != shape:
                got = None if name not in self.arrays else self.arrays[name].shape
                raise StoreCorruptError(f"FastGRNN parameter {name} has shape {got}, expected {shape}")
        a = {k: np.asarray(v, dtype=np.float32) for k, v in self.arrays.items()}
        self.arrays = a
        # Precomputed dense products: one (H, D) and one (H, H) matvec per step.
        self._W = (a["W1"] @ a["W2"].T).astype(np.float32)  # (H, D)
        self._U = (a["U1"] @ a["U2"].T).astype(np.float32)  # (H, H)
        self._zeta = float(_sigmoid(a["zeta"])[0])
        self._nu = float(_sigmoid(a["nu"])[0])

    @classmethod
    def init(cls, cfg: FastGRNNConfig, seed: int = 0) -> FastGRNNParams:
        rng = np.random.default_rng(seed)
        arrays: dict[str, F32] = {}
        for name, shape in param_shapes(cfg).items():
            if name in ("b_z", "b_h", "head_b", "prior_w"):
                arrays[name] = np.zeros(shape, np.float32)
            elif name == "zeta":
                arrays[name] = np.full(shape, cfg.zeta_init, np.float32)
            elif name == "nu":
                arrays[name] = np.full(shape, cfg.nu_init, np.float32)
            else:
                arrays[name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        return cls(cfg, arrays)

    # ---- forward ------------------------------------------------------------------
    def hidden0(self) -> F32:
        return np.zeros(self.config.hidden, dtype=np.float32)  # (H,)

    def cell(self, x: F32, h: F32) -> F32:
        """One step: x (D,) normalised features, h (H,) → h' (H,)."""
        a = self.arrays
        pre = self._W @ x + self._U @ h  # (H,)
        z = _sigmoid(pre + a["b_z"])  # (H,)
        h_tilde = np.tanh(pre + a["b_h"])  # (H,)
        return ((self._zeta * (1.0 - z) + self._nu) * h_tilde + z * h).astype(np.float32)

    def heads(self, h: F32, x: F32 | None = None) -> F32:
        """h (H,) → raw head outputs (n_out,); with a prior slice, plus ``prior_w`` @ its input."""
        out = self.arrays["head_w"] @ h + self.arrays["head_b"]
        if self.config.prior_width and x is not None:
            if self.config.prior_kind == "table":  # prior_input's one-hot, as a column lookup (one query)
                lo, hi = self.config.prior_slice
                s = x[lo:hi]
                t = int(s.argmax())
                if s[t] > s.min():
                    out = out + self.arrays["prior_w"][:, t]
            else:
                out = out + self.arrays["prior_w"] @ prior_input(self.config, x)
        return out

    def step(self, x: F32, h: F32 | None = None) -> tuple[RouterOutput, F32]:
        """Normalised features x (D,) and the session's state → decision outputs and the new state."""
        h_new = self.cell(x, self.hidden0() if h is None else h)
        return self.decode(self.heads(h_new, x)), h_new

    def decode(self, out: F32) -> RouterOutput:
        M, C = self.config.n_models, len(self.config.context_bins)
        ml = out[:M] - out[:M].max()
        mp = np.exp(ml) / np.exp(ml).sum()  # (M,)
        cl = out[M : M + C] - out[M : M + C].max()
        cp = np.exp(cl) / np.exp(cl).sum()  # (C,)
        t, p, c = _sigmoid(out[M + C : M + C + 3].astype(np.float64))
        return RouterOutput(mp.astype(np.float32), cp.astype(np.float32), float(2.0 * t), float(p), float(c))

    def forward_sequence(self, xs: F32, h: F32 | None = None) -> tuple[F32, F32]:
        """A session: xs (T, D) → raw head outputs (T, n_out) and the final state (H,)."""
        h = self.hidden0() if h is None else h
        outs = np.empty((len(xs), self.config.n_out), dtype=np.float32)
        for t in range(len(xs)):
            h = self.cell(xs[t], h)
            outs[t] = self.heads(h, xs[t])
        return outs, h

    def forward_batch(self, xs: F32, lengths: npt.NDArray[np.int64] | None = None) -> F32:
        """Many sessions at once: xs (B, T, D) → (B, T, n_out); steps past a session's length are junk."""
        a = self.arrays
        B, T, _ = xs.shape
        h = np.zeros((B, self.config.hidden), dtype=np.float32)  # (B, H)
        outs = np.empty((B, T, self.config.n_out), dtype=np.float32)
        for t in range(T):
            pre = xs[:, t] @ self._W.T + h @ self._U.T  # (B, H)
            z = _sigmoid(pre + a["b_z"])
            h = ((self._zeta * (1.0 - z) + self._nu) * np.tanh(pre + a["b_h"]) + z * h).astype(np.float32)
            outs[:, t] = h @ a["head_w"].T + a["head_b"]  # (B, n_out)
        if self.config.prior_width:
            outs += prior_input(self.config, xs) @ a["prior_w"].T
        return outs

    # ---- size ---------------------------------------------------------------------
    def n_params(self) -> int:
        return int(sum(v.size for v in self.arrays.values()))

    def sparsity(self) -> float:
        """Share of zeros in the thresholded factors (W1, W2, U1, U2)."""
        tot = sum(self.arrays[n].size for n in SPARSE_PARAMS)
        zeros = sum(int((self.arrays[n] == 0).sum()) for n in SPARSE_PARAMS)
        return zeros / tot

    def size_bytes(self, bits: int = 32) -> int:
        """Storage of the parameters at ``bits`` per value. Sparse factors store their non-zeros
        plus a 1-bit-per-entry mask when that is smaller than storing them dense; per-tensor scales
        (int8) cost 4 bytes each. The normaliser is not counted (it is the feature pipeline's)."""
        total = 0.0
        for name, arr in self.arrays.items():
            dense = arr.size * bits / 8
            if name in SPARSE_PARAMS:
                nnz = int(np.count_nonzero(arr))
                total += min(dense, nnz * bits / 8 + math.ceil(arr.size / 8))
            else:
                total += dense
            if bits < 32:
                total += 4
        return math.ceil(total)

    # ---- persistence --------------------------------------------------------------
    def save(self, path: Path, *, int8: bool | None = None) -> tuple[Path, Path]:
        """Write ``path.with_suffix('.npz')`` and ``.json``. With int8 (default: as quantised),
        weights are stored as int8 with one float scale per tensor."""
        path = Path(path)
        q = bool(self.meta.get("int8", False)) if int8 is None else int8
        arrays: dict[str, Any] = dict(self.normalizer.to_arrays())
        for name, arr in self.arrays.items():
            if q:
                qa, scale = quantize_int8(arr)
                arrays[f"q_{name}"] = qa
                arrays[f"s_{name}"] = np.array([scale], np.float32)
            else:
                arrays[f"p_{name}"] = arr
        npz, js = path.with_suffix(".npz"), path.with_suffix(".json")
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(npz, **arrays)
        cfg = asdict(self.config)
        cfg["context_bins"] = list(self.config.context_bins)
        doc = {"format": FORMAT, "config": cfg, "int8": q, "meta": {**self.meta, "int8": q}}
        js.write_text(json.dumps(doc, indent=2, sort_keys=True, default=_json_default) + "\n")
        return npz, js

    @classmethod
    def load(cls, path: Path) -> FastGRNNParams:
        path = Path(path)
        npz, js = path.with_suffix(".npz"), path.with_suffix(".json")
        for p in (npz, js):
            if not p.exists():
                raise ModelNotFoundError(
                    f"router checkpoint file {p} does not exist; train one with `ruvllm router train` "
                    "and point router.model_path at it"
                )
        try:
            doc = json.loads(js.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreCorruptError(f"{js} is not a FastGRNN router description: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise StoreCorruptError(f"{js} is not a {FORMAT} file (format={found!r})")
        c = dict(doc["config"])
        c["context_bins"] = tuple(c["context_bins"])
        c["prior_slice"] = tuple(c.get("prior_slice", (0, 0)))
        cfg = FastGRNNConfig(**c)
        try:
            with np.load(npz) as data:
                arrays: dict[str, F32] = {}
                for name in param_shapes(cfg):
                    if f"q_{name}" in data:
                        arrays[name] = dequantize_int8(data[f"q_{name}"], float(data[f"s_{name}"][0]))
                    else:
                        arrays[name] = np.asarray(data[f"p_{name}"], np.float32)
                norm = Normalizer.from_arrays(data)
        except (OSError, ValueError, KeyError) as exc:
            raise StoreCorruptError(f"{npz} is not a FastGRNN router checkpoint: {exc}") from None
        return cls(cfg, arrays, norm, dict(doc.get("meta", {})))


# --------------------------------------------------------------------------------------
# int8: symmetric per-tensor quantisation, zeros stay exactly zero (the sparse support survives)
# --------------------------------------------------------------------------------------


def quantize_int8(arr: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], float]:
    a = np.asarray(arr, dtype=np.float32)
    peak = float(np.abs(a).max()) if a.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.clip(np.round(a / scale), -127, 127).astype(np.int8), scale


def dequantize_int8(q: npt.ArrayLike, scale: float) -> F32:
    return (np.asarray(q, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def quantized(params: FastGRNNParams) -> FastGRNNParams:
    """A copy whose every tensor went through int8 and back (what loading an int8 file gives)."""
    arrays = {k: dequantize_int8(*quantize_int8(v)) for k, v in params.arrays.items()}
    return FastGRNNParams(params.config, arrays, params.normalizer, {**params.meta, "int8": True})


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
