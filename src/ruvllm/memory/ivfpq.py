"""The cold tier: IVF-PQ on disk beside the HNSW hot tier, for corpora beyond RAM.

    cold = IvfPqIndex.build(path, vectors, labels, IvfPqParams(nlist=4096, pq_m=48))  # trains, adds, saves
    cold = IvfPqIndex.open(path)                            # lists memory-mapped, not read into RAM
    labels, scores = cold.search(q, k=10, nprobe=32, refine=4)   # (n, k), (n, k)
    labels, scores = search_tiers(hot, cold, q, k=10)       # both tiers, merged by exact cosine

What lives where, per vector (dim 384, pq_m 48):

- RAM: nothing per vector beyond what the OS keeps in its page cache. The coarse centroids
  (nlist x dim float32), and the OPQ rotation if used, are loaded; the inverted lists (PQ codes + ids)
  are memory-mapped from ``ivfpq.faiss``.
- disk: ``pq_m`` bytes of code + 8 bytes of id in the lists, plus ``2·dim`` bytes of float16 in
  ``vectors.f16`` for the exact re-rank (``refine``), plus the int64 label in ``labels.npy``.

Search scans ``nprobe`` lists with PQ (approximate) scores, keeps ``k·refine`` candidates and
re-ranks them by exact cosine against their float16 vectors, read from the memory-mapped file.
Vectors are stored unit-normalised, so inner product is cosine.

This module is the tier itself (build, open, search, merge); the orchestrator's ``Memory`` does not
move nodes between tiers on its own. bench/hybrid.py measures it against HNSW on the same corpus.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.memory.index import HnswIndex

INDEX_FILE = "ivfpq.faiss"
VECTORS_FILE = "vectors.f16"
LABELS_FILE = "labels.npy"
META_FILE = "ivfpq.json"
FORMAT = 1


@dataclass(frozen=True)
class IvfPqParams:
    """nlist coarse cells; pq_m sub-quantisers of pq_bits each (dim % pq_m == 0); OPQ rotation or not."""

    nlist: int = 4096
    pq_m: int = 48
    pq_bits: int = 8
    opq: bool = False  # OPQ48 trained for minutes and recalled less on bench/hybrid.py's data

    def check(self, dim: int) -> None:
        if self.nlist < 1:
            raise InvalidInputError(f"nlist must be >= 1, got {self.nlist}")
        if self.pq_m < 1 or dim % self.pq_m:
            raise InvalidInputError(f"pq_m must divide the dimension {dim}, got {self.pq_m}")
        if not 4 <= self.pq_bits <= 12:
            raise InvalidInputError(f"pq_bits must be in [4, 12], got {self.pq_bits}")

    def factory(self) -> str:
        """The faiss index_factory string, e.g. ``OPQ48,IVF4096,PQ48x8``."""
        pre = f"OPQ{self.pq_m}," if self.opq else ""
        return f"{pre}IVF{self.nlist},PQ{self.pq_m}x{self.pq_bits}"

    @staticmethod
    def for_size(n: int, dim: int = 384) -> IvfPqParams:
        """nlist ≈ 4·√n (faiss's guideline), bounded so each cell has enough training points."""
        nlist = int(min(max(16, 4 * np.sqrt(max(n, 1))), max(16, n // 39)))
        pq_m = next(m for m in (48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1) if dim % m == 0 and m <= dim)
        return IvfPqParams(nlist=nlist, pq_m=pq_m)


def _unit(x: Any, dim: int, what: str) -> npt.NDArray[np.float32]:
    try:
        v = np.ascontiguousarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a 2-d array of numbers") from None
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise InvalidInputError(f"{what} must have shape (n, {dim}), got {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)  # (n, 1)
    if not np.all(np.isfinite(v)) or np.any(norms <= 0.0):
        raise InvalidInputError(f"{what} contain NaN/inf or an all-zero row")
    return np.ascontiguousarray(v / norms, dtype=np.float32)


class IvfPqIndex:
    """A built, saved IVF-PQ tier opened from its directory (see the module docstring)."""

    def __init__(self, path: Path, index: Any, vectors: np.memmap, labels: npt.NDArray[np.int64],
                 params: IvfPqParams):
        self.path = path
        self.params = params
        self.dim = int(index.d)
        self._index = index
        self._ivf = faiss.extract_index_ivf(index)
        self._vectors = vectors  # (n, dim) float16, memory-mapped
        self._labels = labels  # (n,) position → caller's label, memory-mapped

    # ---- build / open --------------------------------------------------------------------------
    @classmethod
    def build(cls, path: Path, vectors: Any, labels: Any, params: IvfPqParams | None = None, *,
              train_size: int = 100_000, seed: int = 0) -> IvfPqIndex:
        """Train on a sample of ``vectors`` (n, dim), add them all, write the tier to ``path``."""
        x = _unit(vectors, np.asarray(vectors).shape[-1], "vectors")
        n, dim = x.shape
        lab = np.asarray(labels, dtype=np.int64)
        if lab.shape != (n,):
            raise InvalidInputError(f"labels must have shape ({n},), got {lab.shape}")
        if len(np.unique(lab)) != n:
            raise InvalidInputError("labels must be unique")
        params = params or IvfPqParams.for_size(n, dim)
        params.check(dim)
        need = 39 * max(params.nlist, 1 << params.pq_bits)  # faiss's k-means wants 39 points a centroid
        if n < need:
            raise InvalidInputError(f"{n} vectors are too few to train IVF{params.nlist} with PQ {params.pq_bits}-bit "
                                    f"(need {need}); use a smaller nlist or keep them in the HNSW tier")
        path.mkdir(parents=True, exist_ok=True)
        index = faiss.index_factory(dim, params.factory(), faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=min(n, max(train_size, need)), replace=False)]
        index.train(sample)
        for s in range(0, n, 100_000):  # ids are positions in vectors.f16
            index.add_with_ids(x[s : s + 100_000], np.arange(s, min(n, s + 100_000), dtype=np.int64))
        faiss.write_index(index, str(path / INDEX_FILE))
        vec = np.lib.format.open_memmap(path / VECTORS_FILE, mode="w+", dtype=np.float16, shape=(n, dim))
        vec[:] = x.astype(np.float16)
        vec.flush()
        del vec
        np.save(path / LABELS_FILE, lab)
        meta = {"format": FORMAT, "n": n, "dim": dim, "params": asdict(params), "faiss": faiss.__version__}
        (path / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> IvfPqIndex:
        """Open a saved tier; its lists and vectors stay on disk, memory-mapped."""
        meta_path = path / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
            params = IvfPqParams(**meta["params"])
            n, dim = int(meta["n"]), int(meta["dim"])
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        except FileNotFoundError:
            raise StoreCorruptError(f"{path} holds no IVF-PQ tier ({META_FILE} is missing)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorruptError(f"{meta_path} is unreadable ({exc})") from None
        try:
            index = faiss.read_index(str(path / INDEX_FILE), faiss.IO_FLAG_MMAP)
            vectors = np.load(path / VECTORS_FILE, mmap_mode="r")
            labels = np.load(path / LABELS_FILE, mmap_mode="r")  # int64, as saved
        except (RuntimeError, OSError, ValueError) as exc:
            raise StoreCorruptError(f"the IVF-PQ tier in {path} cannot be read ({exc})") from None
        if index.d != dim or index.ntotal != n or vectors.shape != (n, dim) or labels.shape != (n,):
            raise StoreCorruptError(f"the IVF-PQ tier in {path} is inconsistent: index {index.ntotal}x{index.d}, "
                                    f"vectors {vectors.shape}, labels {labels.shape}, expected {n}x{dim}")
        if labels.dtype != np.int64:
            raise StoreCorruptError(f"{path / LABELS_FILE} holds {labels.dtype}, expected int64")
        return cls(path, index, vectors, labels, params)

    # ---- search --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, q: Any, k: int = 10, *, nprobe: int = 32, refine: int = 4) -> tuple[
            npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` labels and cosine similarities per query row → (n, k), (n, k); -1 pads a short row.

        ``refine`` = 0 returns PQ's approximate scores; ``refine`` = r re-ranks ``r·k`` candidates
        by exact cosine on their stored float16 vectors."""
        qs = _unit(q, self.dim, "query vectors")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1024:
            raise InvalidInputError(f"k must be an integer in [1, 1024], got {k!r}")
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or not 1 <= nprobe <= self.params.nlist:
            raise InvalidInputError(f"nprobe must be an integer in [1, {self.params.nlist}], got {nprobe!r}")
        if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= 64:
            raise InvalidInputError(f"refine must be an integer in [0, 64], got {refine!r}")
        self._ivf.nprobe = nprobe
        wide = k * refine if refine else k
        approx, pos = self._index.search(qs, wide)  # (n, wide), (n, wide); pos -1 = no candidate
        out_l = np.full((len(qs), k), -1, np.int64)
        out_s = np.full((len(qs), k), -np.inf, np.float32)
        for i in range(len(qs)):
            ok = pos[i] >= 0
            cand = pos[i][ok]
            if refine:
                order = np.sort(cand)  # ascending positions: sequential-ish reads of the memmap
                exact = self._vectors[order].astype(np.float32) @ qs[i]  # (c,)
                top = np.argsort(-exact)[:k]
                chosen, scores = order[top], exact[top]
            else:
                chosen, scores = cand[:k], approx[i][ok][:k]
            out_l[i, : len(chosen)] = self._labels[chosen]
            out_s[i, : len(chosen)] = scores
        return out_l, out_s

    def info(self) -> dict[str, Any]:
        files = [self.path / f for f in (INDEX_FILE, VECTORS_FILE, LABELS_FILE)]
        disk = sum(f.stat().st_size for f in files if f.exists())
        return {"kind": "ivfpq", "factory": self.params.factory(), "vectors": len(self),
                "disk_bytes": disk, "disk_bytes_per_vector": round(disk / max(len(self), 1), 1)}


def search_tiers(hot: HnswIndex, cold: IvfPqIndex, q: Any, k: int = 10, *, ef: int | None = None,
                 nprobe: int = 32, refine: int = 4) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Search the hot HNSW tier and the cold IVF-PQ tier, merge by cosine → (n, k), (n, k).

    A label in both tiers (a node promoted back to hot) counts once, with the hot tier's score."""
    qs = _unit(q, cold.dim, "query vectors")
    hl, hs = hot.search(qs, k, ef)  # (n, ≤k)
    cl, cs = cold.search(qs, k, nprobe=nprobe, refine=refine)  # (n, k)
    out_l = np.full((len(qs), k), -1, np.int64)
    out_s = np.full((len(qs), k), -np.inf, np.float32)
    for i in range(len(qs)):
        best: dict[int, float] = {}
        for lb, s in zip(cl[i].tolist(), cs[i].tolist(), strict=True):
            if lb >= 0:
                best[lb] = s
        for lb, s in zip(hl[i].tolist(), hs[i].tolist(), strict=True):
            best[lb] = s  # the hot tier holds the current vector
        top = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        out_l[i, : len(top)] = [lb for lb, _ in top]
        out_s[i, : len(top)] = [s for _, s in top]
    return out_l, out_s
