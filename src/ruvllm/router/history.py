"""Pattern history: which model was the best choice the last times this request came.

The 128-d layout reserves 16 slots for "historical accuracy" per configured model
(``features.Y_HISTORY``). Here that is, for a question's *pattern* — the dotted symbols it names
plus its query type, e.g. ``json.dumps|code`` — the share of the pattern's past questions on which
each model was the oracle's best (its routing accuracy there). A question that names no symbol
("How do I decode base32 in Python?") takes the symbol its best retrieval hit documents
(``FeatureInput.top_hit``: the training corpus's key, a served stdlib doc's ``stdlib:`` source);
without either it has no pattern and no history (all zeros, as for a pattern never seen).

Why a table beside the router: paraphrases of one request get their labels from the same hidden
facts (how hard that symbol is for each model), which the question's own features do not carry, and
a 2 KB cell cannot memorise hundreds of patterns. The table is built from the oracle runs of the
training split (``from_records``) and saved next to the checkpoint (``<model>_history.json``);
``FastGRNNRouter`` reads it at serving time.

Training rows see their pattern's history *without their own outcome* (leave-one-out), and a
share of them (``TrainConfig.history_dropout``) see none, so the router learns to route both with
and without it.

The table grows from use: with ``router.shadow`` the orchestrator has every installed model answer
a share of the served queries in the background, takes the best utility as the oracle would, and
``add``s that win (the same meaning as a training win, with the judge's Q instead of the gold). The
wins learnt in use are saved apart, in ``<model>_history_online.json`` (``save_online``), and
``load`` adds them to the trained table: a retraining rewrites the trained table and keeps them. The
methods are safe to call from the request path and the background worker at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ruvllm.datadir import write_json_atomic
from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.memory.writeback import named_symbols
from ruvllm.router.features import N_HISTORY, query_type_of

FORMAT = "ruvllm-pattern-history-v1"


def pattern_key(query: str, top_hit: str = "") -> str | None:
    """``"a.b,c.d|type"`` for a question that names dotted symbols, else ``"top_hit|type"``; None
    without either. The type is the features' own classifier (``query_type_of``), so training and
    serving key a question alike."""
    symbols = sorted(named_symbols(query)) or ([top_hit] if top_hit else [])
    if not symbols:
        return None
    return ",".join(symbols) + "|" + query_type_of(query)


@dataclass
class PatternHistory:
    models: list[str]
    wins: dict[str, list[float]] = field(default_factory=dict)  # key → per-model count of best choices
    online: dict[str, list[float]] = field(default_factory=dict)  # the part of ``wins`` added in use
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.models or len(self.models) > N_HISTORY:
            raise InvalidInputError(f"pattern history needs 1–{N_HISTORY} models, got {len(self.models)}")

    @classmethod
    def from_records(cls, records: Iterable[Any], models: Sequence[str]) -> PatternHistory:
        """From labelled records (``oracle.LabelledRecord``: ``query``, ``best_model``)."""
        h = cls(list(models))
        for r in records:
            h.add(r.query, int(r.best_model), _top_hit(r))
        return h

    def copy(self) -> PatternHistory:
        with self._lock:
            return PatternHistory(list(self.models), {k: list(v) for k, v in self.wins.items()},
                                  {k: list(v) for k, v in self.online.items()})

    def add(self, query: str, best_model: int, top_hit: str = "", *, online: bool = False) -> None:
        """One more best choice of ``best_model`` on the question's pattern; ``online``: learnt in use
        (a shadow label), kept in its own file by ``save_online``."""
        if not 0 <= best_model < len(self.models):
            raise InvalidInputError(f"best model index {best_model} outside 0..{len(self.models) - 1}")
        key = pattern_key(query, top_hit)
        if key is not None:
            with self._lock:
                self._add(key, best_model, 1.0, online)

    def _add(self, key: str, model: int, n: float, online: bool) -> None:
        self.wins.setdefault(key, [0.0] * len(self.models))[model] += n
        if online:
            self.online.setdefault(key, [0.0] * len(self.models))[model] += n

    def count(self, query: str, top_hit: str = "") -> float:
        """How many best choices the table holds for the question's pattern (0 without one)."""
        key = pattern_key(query, top_hit)
        with self._lock:
            return float(sum(self.wins.get(key, ()))) if key is not None else 0.0

    def shares(self, query: str, leave_out: int | None = None, top_hit: str = "") -> list[float]:
        """Each model's share of the pattern's past best choices ([] without history).
        ``leave_out``: the best model of this very question, when it is one of the past ones."""
        key = pattern_key(query, top_hit)
        with self._lock:
            if key is None or key not in self.wins:
                return []
            counts = np.array(self.wins[key])
        if leave_out is not None:
            counts[leave_out] -= 1.0
        total = counts.sum()
        return [] if total <= 0 else [round(float(c / total), 5) for c in counts]

    # ---- files -----------------------------------------------------------------------
    @staticmethod
    def path_for(model_path: str | Path, suffix: str = "_history.json") -> Path:
        """The table beside a checkpoint: ``<dir>/router`` → ``<dir>/router_history.json``."""
        p = Path(model_path)
        return p.with_name(p.name.removesuffix(".npz") + suffix)

    @classmethod
    def online_path_for(cls, model_path: str | Path) -> Path:
        """The wins learnt in use: ``<dir>/router`` → ``<dir>/router_history_online.json``."""
        return cls.path_for(model_path, "_history_online.json")

    def save(self, model_path: str | Path) -> Path:
        """The trained table (the wins learnt in use left out). Written to a temporary file, synced,
        then renamed over the old one."""
        with self._lock:
            trained = {k: [w - o for w, o in zip(v, self.online.get(k, [0.0] * len(v)), strict=True)]
                       for k, v in self.wins.items()}
        return self._write(self.path_for(model_path), {k: v for k, v in trained.items() if sum(v) > 0})

    def save_online(self, model_path: str | Path) -> Path:
        """The wins learnt in use, in their own file beside the trained table (atomic, like ``save``)."""
        with self._lock:
            online = {k: list(v) for k, v in self.online.items()}
        return self._write(self.online_path_for(model_path), online)

    def _write(self, dest: Path, wins: dict[str, list[float]]) -> Path:
        write_json_atomic(dest, {"format": FORMAT, "models": self.models, "wins": wins}, indent=None)
        return dest

    @classmethod
    def load(cls, model_path: str | Path) -> PatternHistory | None:
        """The table beside ``model_path`` plus the wins learnt in use; None when there is no trained
        table (a router trained without it does not read the slots, so the wins in use wait)."""
        path = cls.path_for(model_path)
        if not path.exists():
            return None
        models, wins = _read(path)
        h = cls(models, wins)
        online = cls.online_path_for(model_path)
        if online.exists():
            o_models, o_wins = _read(online)
            with h._lock:
                for key, counts in o_wins.items():  # by model name: a model the router lost is dropped
                    for name, n in zip(o_models, counts, strict=True):
                        if name in h.models and n > 0:
                            h._add(key, h.models.index(name), n, True)
        return h


def _read(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        models = [str(m) for m in doc["models"]]
        if not 1 <= len(models) <= N_HISTORY:
            raise ValueError(f"{len(models)} models")
        wins = {str(k): [float(c) for c in v] for k, v in doc["wins"].items()}
        if any(len(v) != len(models) or min(v) < 0 for v in wins.values()):
            raise ValueError("a pattern's counts do not match the models")
        return models, wins
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreCorruptError(f"pattern history {path} is unreadable ({exc}); retrain the router or "
                                "delete the file to route without it") from None


def _top_hit(record: Any) -> str:
    """A labelled record's best hit (records labelled before it was stored have none)."""
    return str(record.features.get("top_hit", "") or "")


def with_history(records: Sequence[Any], history: PatternHistory, *, leave_one_out: bool = False,
                 dropout: float = 0.0, seed: int = 0) -> list[Any]:
    """Copies of labelled records whose features carry their pattern's history. Training rows:
    ``leave_one_out`` (their own outcome is in the table) and ``dropout``, the share that get none
    (seeded, in record order)."""
    if not 0.0 <= dropout < 1.0:
        raise InvalidInputError(f"history dropout must be in [0, 1), got {dropout}")
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        drop = dropout > 0 and rng.random() < dropout
        shares = [] if drop else history.shares(r.query, int(r.best_model) if leave_one_out else None,
                                                _top_hit(r))
        out.append(replace(r, features={**r.features, "historical_accuracy": shares}))
    return out
