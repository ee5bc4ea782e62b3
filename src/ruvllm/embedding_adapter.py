"""The spec's EmbeddingAdapter: the LLM's own hidden states → projection → LayerNorm → 384-d.

An alternative to the sentence encoder that needs no second model on the machine: the GGUF
already loaded for generation is opened once more in llama.cpp's embedding mode, its last
hidden states are mean-pooled over the tokens, then

    h (d_model,) ─▶ (h − μ) W + b   (d_model → 384) ─▶ LayerNorm ─▶ L2-normalise

``μ, W, b`` either come from a fitted projection file (``.npz``) or, unfitted, are a seeded
random orthogonal projection (Johnson–Lindenstrauss: cosine geometry roughly kept). ``fit``
learns them by ridge least squares so the adapter's vectors land in the sentence encoder's
space (targets: the encoder's vectors of the same texts) — the retrieval comparison is in
``bench/embedding.py``. Selected by config ``embedding.kind = "adapter"``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.embedding import check_texts
from ruvllm.errors import InvalidInputError, ModelLoadError, ModelNotFoundError

F32 = npt.NDArray[np.float32]


class EmbeddingAdapter:
    """``Embedder`` over an LLM GGUF's mean-pooled hidden states."""

    def __init__(self, model_path: str | Path, *, projection_path: str | Path | None = None, dim: int = 384,
                 n_ctx: int = 512, n_threads: int = 2, max_chars: int = 2000, seed: int = 0, name: str = ""):
        import llama_cpp

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelNotFoundError(f"embedding adapter model {self.model_path} does not exist")
        if projection_path and not Path(projection_path).is_file():
            raise ModelNotFoundError(f"adapter projection {projection_path} does not exist; fit one "
                                     "(bench/embedding.py saves one) or leave embedding.adapter_projection empty")
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(self.model_path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not open {self.model_path} for embeddings: {exc}") from None
        self.d_model = int(self._llm.n_embd())
        self.n_ctx = n_ctx
        self.max_chars = max_chars
        self.name = name or f"adapter:{self.model_path.stem}"
        self._lock = threading.Lock()
        self.fitted = False
        if projection_path:
            self.load(projection_path)
        else:
            rng = np.random.default_rng(seed)
            q, _ = np.linalg.qr(rng.standard_normal((self.d_model, dim)))  # (d_model, dim) orthonormal columns
            self.mu: F32 = np.zeros(self.d_model, dtype=np.float32)
            self.W: F32 = q.astype(np.float32)
            self.b: F32 = np.zeros(dim, dtype=np.float32)
        self.dim = int(self.W.shape[1])

    # ---- encoder ---------------------------------------------------------------------
    def hidden(self, texts: Sequence[str]) -> F32:
        """(n,) texts → (n, d_model) mean-pooled last hidden states."""
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.d_model), dtype=np.float32)
        clipped = [t[: self.max_chars] or " " for t in items]
        with self._lock:  # one llama.cpp context: one batch at a time
            vecs = self._llm.embed(clipped, normalize=False, truncate=True)  # mean pooling per text
        return np.asarray(vecs, dtype=np.float32).reshape(len(items), self.d_model)  # (n, d_model)

    def project(self, h: F32) -> F32:
        """(n, d_model) → (n, dim): projection, LayerNorm (no affine), L2-normalise."""
        z = (h - self.mu) @ self.W + self.b  # (n, dim)
        z = (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + 1e-5)  # LayerNorm
        z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-12
        return np.ascontiguousarray(z, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> F32:
        if isinstance(texts, str):
            raise InvalidInputError("embed() takes a list of strings, not a single string")
        if not list(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.project(self.hidden(texts))

    # ---- projection ------------------------------------------------------------------
    def fit(self, texts: Sequence[str] | None, targets: F32, *, ridge: float = 0.1, hidden: F32 | None = None) -> float:
        """Ridge least squares from hidden states to ``targets`` (n, dim); returns the mean cosine.

        ``ridge`` is relative to the mean per-dimension variance of the hidden states.
        """
        h = self.hidden(texts or []) if hidden is None else hidden
        if h.shape[0] != targets.shape[0] or h.shape[0] < 2:
            raise InvalidInputError(f"fit needs >= 2 texts with one target row each, got {h.shape[0]} and "
                                    f"{targets.shape[0]}")
        mu = h.mean(axis=0)
        hc = (h - mu).astype(np.float64)  # (n, d_model)
        t = targets.astype(np.float64)
        tb = t.mean(axis=0)
        g = hc.T @ hc  # (d_model, d_model)
        a = g + ridge * (np.trace(g) / self.d_model) * np.eye(self.d_model)  # ridge relative to the mean variance
        w = np.linalg.solve(a, hc.T @ (t - tb))  # (d_model, dim)
        self.mu, self.W, self.b = mu.astype(np.float32), w.astype(np.float32), tb.astype(np.float32)
        self.dim = int(self.W.shape[1])
        self.fitted = True
        pred = self.project(h)
        tn = targets / (np.linalg.norm(targets, axis=1, keepdims=True) + 1e-12)
        return float(np.mean(np.sum(pred * tn, axis=1)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(fh, mu=self.mu, W=self.W, b=self.b, d_model=np.int64(self.d_model),
                     model=np.str_(self.model_path.name))
        return path

    def load(self, path: str | Path) -> None:
        try:
            with np.load(path) as z:
                mu, w, b, d_model = z["mu"], z["W"], z["b"], int(z["d_model"])
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not an EmbeddingAdapter projection file: {exc}") from None
        if d_model != self.d_model or w.shape[0] != self.d_model:
            raise ModelLoadError(f"projection {path} was fitted for hidden size {d_model}, but {self.model_path.name} "
                                 f"has {self.d_model}; refit it for this model")
        self.mu, self.W, self.b = mu.astype(np.float32), w.astype(np.float32), b.astype(np.float32)
        self.dim = int(self.W.shape[1])
        self.fitted = True

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None




def adapter_from_config(cfg: Any, models_dir: str | Path) -> EmbeddingAdapter:
    """``embedding.kind = "adapter"``: the GGUF ``embedding.llm_model`` (a registry name or a path,
    default gemma3-270m) and the projection ``embedding.adapter_projection`` ('' → unfitted)."""
    from ruvllm.llm.registry import Registry

    model = getattr(cfg, "llm_model", "") or "gemma3-270m"
    path = Path(model) if model.endswith(".gguf") else Registry(models_dir).path(model)
    return EmbeddingAdapter(path, projection_path=getattr(cfg, "adapter_projection", "") or None,
                            max_chars=getattr(cfg, "max_chars", 2000))
