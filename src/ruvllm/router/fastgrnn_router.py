"""``FastGRNNRouter``: the trained FastGRNN behind the ``Router`` protocol (numpy only).

``FastGRNNRouter.load(path, models=installed)`` reads ``<path>.npz`` + ``<path>.json`` (written
by ``training.train_from_oracle``; ``path`` may name either file or the stem). Per query it:

1. builds the normalised 128-d vector: from ``RouteInput.features`` when that is a
   ``features.FeatureInput`` (preferred: the orchestrator fills it from the embedding, hits and
   system stats) or an already-normalised (128,) array; otherwise from the few fields
   ``RouteInput`` carries (query, token count, top score, hit count);
   the historical-accuracy slice comes from the pattern table saved beside the checkpoint
   (``router/history.py``), when there is one and the caller gave none;
2. runs one FastGRNN step from the session's hidden state (kept per ``session_id``, LRU-bounded;
   no session id → a fresh state), so the router sees what the session asked before;
3. decodes the heads: the most probable model among the installed ones, the context bin (capped
   by ``max_context``), temperature, top-p and confidence. Confidence is the head trained to be
   P(chosen model = oracle's); the orchestrator falls back to a larger model below
   ``router.confidence_threshold``.

Exploration (phase 3): with ``epsilon > 0`` the model is drawn uniformly from the installed ones
with probability ε (ε-greedy) and ``Decision.propensity`` records the probability of the model
taken, so the online learner can weight its outcome by 1 / propensity. ``epsilon = 0`` (default):
always the argmax, propensity 1.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ruvllm.errors import InvalidInputError, ModelNotFoundError
from ruvllm.router.base import Decision, RouteInput
from ruvllm.router.fastgrnn import F32, FastGRNNParams
from ruvllm.router.features import DIM, FeatureInput
from ruvllm.router.history import PatternHistory

MAX_SESSIONS = 4096


def feature_input_from_search(
    question: str, qvec: Any, hits: Sequence[Any] = (), context: Sequence[Any] = (), *, k_requested: int = 8,
    session_queries: int = 0, **system: Any,
) -> FeatureInput:
    """The ``FeatureInput`` the orchestrator passes as ``RouteInput.features``, built the way the
    training set was (``oracle.feature_input_for``): ``hits`` are the memory's direct hits, best
    first, each with ``.score`` (cosine) and ``.node.vector``; ``context`` the ranked context items,
    each with ``.hop`` (0 = direct hit). ``system`` takes the ``FeatureInput`` system fields
    (latency_budget_ms, device_class, privacy_level, memory_available_mb, battery,
    concurrent_requests, historical_accuracy)."""
    vecs = [np.asarray(h.node.vector, dtype=np.float32) for h in hits if getattr(h.node, "vector", None) is not None]
    return FeatureInput(
        query=question, n_query_tokens=int(len(question.split()) * 1.3) + 1,
        embedding=None if qvec is None else np.asarray(qvec, dtype=np.float32),
        hit_scores=[float(h.score) for h in hits], hit_depths=[int(c.hop) for c in context],
        hit_vectors=np.stack(vecs) if len(vecs) >= 2 else None,
        neighbourhood={"k_requested": float(k_requested)}, user_frequency=float(session_queries),
        top_hit=_stdlib_symbol(hits[0]) if hits else "", **system,
    )


def _stdlib_symbol(hit: Any) -> str:
    """The symbol a hit documents when it is a stdlib doc (``ruvllm ingest --stdlib-docs`` stores
    ``source = "stdlib:json.dumps"``): the same key the training corpus uses; else ""."""
    source = str(getattr(hit.node, "source", "") or "")
    return source.removeprefix("stdlib:") if source.startswith("stdlib:") else ""


class FastGRNNRouter:
    def __init__(self, params: FastGRNNParams, models: list[str] | None = None, *, max_context: int | None = None,
                 epsilon: float = 0.0, seed: int = 0, history: PatternHistory | None = None):
        if not 0.0 <= epsilon <= 1.0:
            raise InvalidInputError(f"exploration epsilon must be in [0, 1], got {epsilon}")
        trained = params.config.models
        wanted = list(models) if models is not None else list(trained)
        self.models = [m for m in wanted if m in trained]
        if not self.models:
            raise ModelNotFoundError(
                f"the FastGRNN router was trained for models {trained}, none of which is installed "
                f"({wanted}); retrain it with `ruvllm router train` for the configured models"
            )
        self.params = params
        self._allowed = np.array([m in self.models for m in trained])  # (M,) mask over the heads
        self.max_context = max_context
        self.epsilon = epsilon
        self._rng = np.random.default_rng(seed)
        self._states: OrderedDict[str, F32] = OrderedDict()
        self._lock = threading.Lock()
        # the pattern table saved beside the checkpoint (router/history.py); fills the features'
        # historical-accuracy slice when the caller left it empty
        self.history = history
        self.path: Path | None = None  # the checkpoint it was loaded from (``load``), without suffix

    @classmethod
    def load(cls, path: Path, models: list[str] | None = None, *, max_context: int | None = None,
             epsilon: float = 0.0, seed: int = 0) -> FastGRNNRouter:
        p = Path(path)
        if p.suffix in (".npz", ".json"):
            p = p.with_suffix("")
        router = cls(FastGRNNParams.load(p), models, max_context=max_context, epsilon=epsilon, seed=seed,
                     history=PatternHistory.load(p))
        router.path = p
        return router

    # ---- features ---------------------------------------------------------------------
    def history_for(self, query: str, top_hit: str = "") -> list[float]:
        """The pattern's past best-model shares, in the order of the trained heads ([] if none)."""
        if self.history is None:
            return []
        shares = dict(zip(self.history.models, self.history.shares(query, top_hit=top_hit), strict=False))
        return [shares.get(m, 0.0) for m in self.params.config.models] if shares else []

    def featurize(self, inp: RouteInput) -> F32:
        f = inp.features
        if isinstance(f, FeatureInput):
            if self.history is not None and not len(f.historical_accuracy):
                f = replace(f, historical_accuracy=self.history_for(f.query, f.top_hit))
            return self.params.normalizer.features(f)
        if f is not None:
            x = np.asarray(f, dtype=np.float32)
            if x.shape != (DIM,) or not np.all(np.isfinite(x)):
                raise InvalidInputError(f"RouteInput.features must be a FeatureInput or a finite ({DIM},) vector")
            return x
        fi = FeatureInput(
            query=inp.query, n_query_tokens=inp.n_query_tokens,
            hit_scores=[inp.top_score] * max(0, inp.n_hits) if inp.n_hits else (),
        )
        return self.params.normalizer.features(fi)

    # ---- routing ----------------------------------------------------------------------
    def route(self, inp: RouteInput) -> Decision:
        x = self.featurize(inp)  # (D,)
        with self._lock:
            h = self._states.get(inp.session_id) if inp.session_id else None
        out, h_new = self.params.step(x, h)
        if inp.session_id:
            with self._lock:
                self._states[inp.session_id] = h_new
                self._states.move_to_end(inp.session_id)
                while len(self._states) > MAX_SESSIONS:
                    self._states.popitem(last=False)
        trained = self.params.config.models
        probs = np.where(self._allowed, out.model_probs, 0.0)
        probs = probs / probs.sum() if probs.sum() > 0 else self._allowed / self._allowed.sum()
        mi = int(np.argmax(probs))
        propensity, explored = 1.0, False
        n_allowed = int(self._allowed.sum())
        if self.epsilon > 0 and n_allowed > 1:
            with self._lock:
                explore, pick = self._rng.random() < self.epsilon, int(self._rng.integers(n_allowed))
            greedy = mi
            if explore:
                mi = int(np.flatnonzero(self._allowed)[pick])
            propensity = (1.0 - self.epsilon) * (mi == greedy) + self.epsilon / n_allowed
            explored = mi != greedy
        bins = list(self.params.config.context_bins)
        ci = int(np.argmax(out.context_probs))
        ctx = bins[ci]
        if self.max_context is not None:
            ctx = max([b for b in bins if b <= self.max_context] or [bins[0]]) if ctx > self.max_context else ctx
        conf = 1.0 if len(self.models) == 1 else out.confidence
        return Decision(
            model=trained[mi], context_tokens=int(ctx), temperature=round(min(2.0, max(0.0, out.temperature)), 4),
            top_p=round(min(1.0, max(0.0, out.top_p)), 4), confidence=round(float(conf), 4),
            reason=f"fastgrnn: p({trained[mi]})={probs[mi]:.2f}, context p={out.context_probs[ci]:.2f}"
            + (f", explored (ε={self.epsilon:g})" if explored else ""),
            model_probs={m: round(float(p), 4) for m, p in zip(trained, probs, strict=True) if m in self.models},
            propensity=round(float(propensity), 6),
        )

    def reset(self, session_id: str | None = None) -> None:
        with self._lock:
            if session_id is None:
                self._states.clear()
            else:
                self._states.pop(session_id, None)
