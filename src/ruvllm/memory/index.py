"""The ANN index: hnswlib HNSW over cosine similarity, a rebuildable cache of the store.

Labels are the store's ``nodes.label`` (never reused), so a hit maps straight back to a row.
The index is saved on clean shutdown as ``index.hnsw`` plus a sidecar ``index.json`` that
records what it was built from (the store's change sequence and node count, dim, M, efC,
the file's size and CRC32). On open, an index whose sidecar is missing or does not match the
store (a crash after writes, a changed parameter, a truncated or flipped file) is rebuilt from
the store; the sidecar is checked *before* hnswlib reads the file, so a corrupt file is never
handed to the C++ loader.

Why hnswlib: measured against faiss HNSWFlat/HNSW+SQ8 and usearch in ``bench/memory.py``
(results in ``bench/results/memory.md``); it gives the best recall/latency at efSearch=64 for
this workload, supports deletion (``mark_deleted``), in-place updates and resizing, and has no
heavy dependencies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import numpy.typing as npt

from ruvllm.config import HnswParams

log = logging.getLogger("ruvllm.memory")

SPACE = "cosine"  # hnswlib normalises on add and query; score = 1 - distance
MIN_CAPACITY = 1024


@dataclass
class IndexStamp:
    """What a saved index was built from; compared with the store on open."""

    seq: int
    count: int
    dim: int
    m: int
    ef_construction: int
    space: str = SPACE
    size: int = 0
    crc32: int = 0


def file_crc32(path: Path, chunk: int = 1 << 22) -> tuple[int, int]:
    crc, size = 0, 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return crc, size


class HnswIndex:
    """A thread-safe wrapper over ``hnswlib.Index`` (cosine) that grows as needed."""

    def __init__(self, dim: int, params: HnswParams, capacity: int = MIN_CAPACITY):
        self.dim = dim
        self.params = params
        self._lock = threading.RLock()
        self._idx = hnswlib.Index(space=SPACE, dim=dim)
        self._idx.init_index(max_elements=max(capacity, MIN_CAPACITY), M=params.m,
                             ef_construction=params.ef_construction, allow_replace_deleted=False)
        self._idx.set_ef(params.ef_search)
        self._ef = params.ef_search  # what hnswlib's ef is set to now
        self._deleted = 0

    # ---- persistence ---------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, meta_path: Path, params: HnswParams, expect: IndexStamp) -> tuple[HnswIndex | None, str]:
        """Load a saved index if it matches ``expect``; else ``(None, reason)``."""
        if not path.exists():
            return None, f"index file {path} is missing"
        if not meta_path.exists():
            return None, f"index sidecar {meta_path} is missing"
        try:
            saved = IndexStamp(**json.loads(meta_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            return None, f"index sidecar {meta_path} is unreadable ({exc})"
        for field in ("seq", "count", "dim", "m", "ef_construction", "space"):
            if getattr(saved, field) != getattr(expect, field):
                return None, (f"index {path} is stale: {field} {getattr(saved, field)} != "
                              f"{getattr(expect, field)} in the store/config")
        crc, size = file_crc32(path)
        if (crc, size) != (saved.crc32, saved.size):
            return None, f"index file {path} is corrupt (size/CRC32 do not match its sidecar)"
        self = cls(expect.dim, params, capacity=MIN_CAPACITY)
        try:
            self._idx = hnswlib.Index(space=SPACE, dim=expect.dim)
            self._idx.load_index(str(path), max_elements=0, allow_replace_deleted=False)
        except (RuntimeError, ValueError, MemoryError) as exc:
            return None, f"index file {path} could not be loaded ({exc})"
        self._idx.set_ef(params.ef_search)
        self._deleted = self._idx.element_count - expect.count
        if self._deleted < 0:
            return None, f"index file {path} holds fewer vectors than the store"
        return self, ""

    def save(self, path: Path, meta_path: Path, stamp: IndexStamp) -> None:
        """Write the index and its sidecar atomically (tmp file + rename, sidecar last)."""
        with self._lock:
            tmp = path.with_name(path.name + ".tmp")
            self._idx.save_index(str(tmp))
            stamp.crc32, stamp.size = file_crc32(tmp)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            # the old sidecar must not vouch for the new file while they are swapped
            meta_path.unlink(missing_ok=True)
            os.replace(tmp, path)
            meta_tmp = meta_path.with_name(meta_path.name + ".tmp")
            with meta_tmp.open("w", encoding="utf-8") as fh:
                json.dump(asdict(stamp), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(meta_tmp, meta_path)

    # ---- writes ------------------------------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        need = self._idx.element_count + extra
        cap = self._idx.get_max_elements()
        if need > cap:
            self._idx.resize_index(max(need, cap * 2, MIN_CAPACITY))

    def add(self, labels: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], num_threads: int = 1) -> None:
        """Add (or replace, for a label already present) vectors. vectors: (n, dim)."""
        if len(labels) == 0:
            return
        with self._lock:
            self._reserve(len(labels))
            self._idx.add_items(vectors, labels, num_threads=num_threads)

    def delete(self, label: int) -> None:
        with self._lock:
            try:
                self._idx.mark_deleted(int(label))
                self._deleted += 1
            except RuntimeError:  # not in the index (e.g. added while the index was being rebuilt)
                pass

    # ---- reads ---------------------------------------------------------------------------------
    def search(
        self, q: npt.NDArray[np.float32], k: int, ef: int | None = None,
        filter: Callable[[int], bool] | None = None, num_threads: int = 1,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` labels and cosine similarities for each row of ``q`` (n, dim) → (n, k), (n, k).

        Fewer than ``k`` live vectors: ``k`` is cut to what there is."""
        with self._lock:
            live = self._idx.element_count - self._deleted
            k = min(k, live)
            if k <= 0:
                return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
            want = max(ef or self.params.ef_search, k)
            if want != self._ef:  # set_ef only when it changes: most searches use the default
                self._idx.set_ef(want)
                self._ef = want
            try:
                labels, dist = self._idx.knn_query(q, k=k, num_threads=num_threads, filter=filter)
            except RuntimeError:
                # deletions or a filter left too few reachable candidates at this ef: widen the beam
                self._ef = max(4 * k, 4 * (ef or self.params.ef_search), 256)
                self._idx.set_ef(self._ef)
                try:
                    labels, dist = self._idx.knn_query(q, k=k, num_threads=num_threads, filter=filter)
                except RuntimeError:
                    return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
        # hnswlib's labels are uint64 and its cosine distances float32 (1 - similarity)
        return labels.astype(np.int64), np.subtract(np.float32(1.0), dist, dtype=np.float32)

    def vectors(self, labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The indexed vectors of ``labels`` as unit rows (n, dim)."""
        with self._lock:
            v = np.asarray(self._idx.get_items(labels.tolist(), return_type="numpy"), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def __len__(self) -> int:
        return int(self._idx.element_count - self._deleted)

    def info(self) -> dict[str, Any]:
        return {
            "library": f"hnswlib {getattr(hnswlib, '__version__', '')}".strip(), "space": SPACE,
            "m": self.params.m, "ef_construction": self.params.ef_construction, "ef_search": self.params.ef_search,
            "size": len(self), "deleted": self._deleted, "capacity": int(self._idx.get_max_elements()),
        }
