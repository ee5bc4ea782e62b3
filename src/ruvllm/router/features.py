"""The router's 128-d feature vector: a fixed layout, every slice a named constant.

Layout (DESIGN.md, "The router's feature vector"):

    0–31    query stats      token count, language one-hot (8), domain (16), user frequency, query type (6)
    32–47   embedding stats  L2 norm, 8 principal components, entropy, sparsity, 4 cluster memberships, pad
    48–95   search stats     k, distance mean/std/min/max, entropy, graph depth, recall estimate,
                             neighbourhood density (16), semantic coherence (24), pad
    96–127  system           latency budget, device class (4), privacy level (4), memory, battery,
                             concurrent requests, historical accuracy (16), pad

``extract(inp)`` turns a ``FeatureInput`` into the raw float32 (128,) vector. The parts that need
data (the embedding's 8 principal components and 4 k-means clusters, and the per-dimension
mean/scale) live in a ``Normalizer`` that is fitted on training data and saved next to the model
(``.npz``, numpy only). ``Normalizer.transform`` is what the router feeds the network.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError, StoreCorruptError

F32 = npt.NDArray[np.float32]

DIM = 128
EMBED_DIM = 384  # all-MiniLM-L6-v2; any dimension works, the basis is fitted to what it sees

# ---- top-level slices -----------------------------------------------------------------
QUERY_STATS = slice(0, 32)
EMBEDDING_STATS = slice(32, 48)
SEARCH_STATS = slice(48, 96)
SYSTEM_STATS = slice(96, 128)

# ---- query stats (0–31) ---------------------------------------------------------------
Q_TOKENS = slice(0, 1)  # log1p(query tokens) / log1p(512)
Q_LANGUAGE = slice(1, 9)  # one-hot over LANGUAGES
Q_DOMAIN = slice(9, 25)  # soft keyword scores over DOMAINS (sum 1, or all 0)
Q_USER_FREQ = slice(25, 26)  # how often this user/session has asked, log-scaled
Q_TYPE = slice(26, 32)  # one-hot over QUERY_TYPES

# ---- embedding stats (32–47) ----------------------------------------------------------
E_NORM = slice(32, 33)
E_PCA = slice(33, 41)  # 8 principal components (fitted basis)
E_ENTROPY = slice(41, 42)  # entropy of x²/‖x‖², over log(dim)
E_SPARSITY = slice(42, 43)  # Hoyer sparsity in [0, 1]
E_CLUSTER = slice(43, 47)  # soft membership in 4 k-means clusters (fitted)
E_PAD = slice(47, 48)

# ---- search stats (48–95) -------------------------------------------------------------
S_K = slice(48, 49)  # hits retrieved, log1p(k) / log1p(64)
S_DIST = slice(49, 53)  # distance (1 − cosine) mean, std, min, max
S_ENTROPY = slice(53, 54)  # entropy of softmax(scores / 0.1), over log(k)
S_DEPTH = slice(54, 55)  # mean graph hop depth of the context, / 4
S_RECALL = slice(55, 56)  # recall estimate in [0, 1]
S_DENSITY = slice(56, 72)  # histogram of neighbour similarities over 16 bins of [0, 1]
S_COHERENCE = slice(72, 96)  # 21 pairwise cosines of the top-7 hits + their mean, min, std (block full: no pad)

# ---- system stats (96–127) ------------------------------------------------------------
Y_LATENCY = slice(96, 97)  # latency budget, log1p(ms) / log1p(60000)
Y_DEVICE = slice(97, 101)  # one-hot over DEVICE_CLASSES
Y_PRIVACY = slice(101, 105)  # one-hot, privacy level 0..3
Y_MEMORY = slice(105, 106)  # memory available, log1p(MB) / log1p(65536)
Y_BATTERY = slice(106, 107)  # battery in [0, 1] (1 on mains)
Y_CONCURRENT = slice(107, 108)  # concurrent requests, log1p(n) / log1p(64)
Y_HISTORY = slice(108, 124)  # historical accuracy of up to 16 configured models, by model index
Y_PAD = slice(124, 128)

SLICES: dict[str, slice] = {
    "query_tokens": Q_TOKENS, "language": Q_LANGUAGE, "domain": Q_DOMAIN, "user_frequency": Q_USER_FREQ,
    "query_type": Q_TYPE, "embedding_norm": E_NORM, "embedding_pca": E_PCA, "embedding_entropy": E_ENTROPY,
    "embedding_sparsity": E_SPARSITY, "embedding_cluster": E_CLUSTER, "embedding_pad": E_PAD,
    "search_k": S_K, "search_distance": S_DIST, "search_entropy": S_ENTROPY, "graph_depth": S_DEPTH,
    "recall_estimate": S_RECALL, "neighbourhood_density": S_DENSITY, "semantic_coherence": S_COHERENCE,
    "latency_budget": Y_LATENCY, "device_class": Y_DEVICE, "privacy_level": Y_PRIVACY,
    "memory_available": Y_MEMORY, "battery": Y_BATTERY, "concurrent_requests": Y_CONCURRENT,
    "historical_accuracy": Y_HISTORY, "system_pad": Y_PAD,
}

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "zh", "ru", "code", "other")
DEVICE_CLASSES: tuple[str, ...] = ("server", "laptop", "edge", "mobile")
QUERY_TYPES: tuple[str, ...] = ("definition", "signature", "howto", "explain", "compare", "code")
N_PCA, N_CLUSTERS, N_HISTORY, TOP_COHERENCE = 8, 4, 16, 7

DOMAINS: dict[str, tuple[str, ...]] = {
    "text": ("string", "text", "regex", "re", "pattern", "format", "unicode", "encode", "decode", "wrap"),
    "math": ("math", "number", "float", "integer", "sqrt", "log", "statistics", "mean", "fraction", "decimal"),
    "files": ("file", "path", "directory", "folder", "open", "read", "write", "glob", "shutil", "pathlib"),
    "network": ("socket", "http", "url", "request", "server", "client", "smtp", "imap", "ssl", "ip"),
    "concurrency": ("thread", "process", "async", "await", "lock", "queue", "future", "pool", "signal"),
    "formats": ("json", "csv", "xml", "toml", "pickle", "struct", "base64", "html", "mime", "config"),
    "time": ("time", "date", "datetime", "calendar", "timezone", "sched", "clock", "timeit"),
    "system": ("os", "sys", "environment", "platform", "subprocess", "shell", "shlex", "exit", "argv"),
    "testing": ("test", "unittest", "assert", "mock", "doctest", "traceback", "warning", "debug"),
    "typing": ("type", "typing", "annotation", "dataclass", "abc", "protocol", "generic", "enum"),
    "collections": ("list", "dict", "set", "tuple", "deque", "heap", "heapq", "bisect", "counter", "sorted"),
    "crypto": ("hash", "hashlib", "hmac", "secret", "secrets", "token", "random", "uuid", "digest"),
    "compression": ("zip", "gzip", "zlib", "tar", "tarfile", "zipfile", "compress", "archive"),
    "functional": ("function", "functools", "itertools", "operator", "iterator", "generator", "lambda"),
    "storage": ("sqlite", "sqlite3", "database", "shelve", "sql", "cursor", "commit", "table"),
    "logging": ("log", "logging", "logger", "handler", "inspect", "pprint", "copy", "weakref"),
}
assert len(DOMAINS) == 16

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE = re.compile(r"(\w+\.\w+\(|def |import |=>|==|\)\s*:|\[\w*\]|\w+\(\)|`)")
_LANG_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the is are what how why does do of to and in with a an which when".split()),
    "de": frozenset("der die das ist und wie was warum nicht mit ein eine ich sie für".split()),
    "fr": frozenset("le la les est et comment que pourquoi une des pas avec pour dans".split()),
    "es": frozenset("el la los es y como qué que por una las con para del no".split()),
}
_TYPE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("compare", re.compile(r"\b(difference|differ|compare|comparison|versus|vs\.?|better than)\b", re.I)),
    ("code", re.compile(r"\b(write|code|snippet|implement|program|script)\b", re.I)),
    ("explain", re.compile(r"\b(explain|why|in detail|elaborate|walk me through|describe how)\b", re.I)),
    ("howto", re.compile(r"\b(how (do|can|should|would) (i|you|we)|how to|which function|what should i use)\b", re.I)),
    ("signature", re.compile(r"\b(arguments?|parameters?|signature|returns?|what type|takes)\b", re.I)),
)


@dataclass
class FeatureInput:
    """Everything the router may know about one query. Unknown parts keep their defaults."""

    query: str
    n_query_tokens: int = 0  # 0: estimated from the words
    embedding: F32 | None = None  # (EMBED_DIM,) L2-normalised query vector
    hit_scores: Sequence[float] = ()  # cosine similarity of each retrieved node, best first
    hit_depths: Sequence[int] = ()  # graph hop depth of each node in the context (0 = direct hit)
    hit_vectors: F32 | None = None  # (n_hits, EMBED_DIM) vectors of the hits, for coherence
    neighbourhood: dict[str, float] = field(default_factory=dict)  # k_requested, recall_estimate
    domain: str = ""  # a DOMAINS key when known (e.g. from the hits' metadata); else inferred
    user_frequency: float = 0.0  # queries this user/session asked before
    # system
    latency_budget_ms: float = 5000.0
    device_class: str = "laptop"
    privacy_level: int = 0  # 0..3
    memory_available_mb: float = 8192.0
    battery: float = 1.0
    concurrent_requests: int = 0
    historical_accuracy: Sequence[float] = ()  # per configured model, in [0, 1]
    # not a feature: the symbol the best direct hit documents ("json.dumps"), the pattern of a
    # question that names none (router/history.py)
    top_hit: str = ""


# --------------------------------------------------------------------------------------
# raw extraction
# --------------------------------------------------------------------------------------


def language_of(text: str) -> str:
    if not text.strip():
        return "other"
    letters = [c for c in text if c.isalpha()]
    if letters:
        if sum("\u4e00" <= c <= "\u9fff" for c in letters) / len(letters) > 0.3:
            return "zh"
        if sum("\u0400" <= c <= "\u04ff" for c in letters) / len(letters) > 0.3:
            return "ru"
    if len(_CODE.findall(text)) >= 2:
        return "code"
    words = [w.lower() for w in _WORD.findall(text)]
    scores = {lang: sum(w in vocab for w in words) for lang, vocab in _LANG_WORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    if scores[best] == 0:
        return "en" if words else "other"
    return best


@functools.lru_cache(maxsize=256)  # one route asks twice (the features, the pattern history's key)
def query_type_of(text: str) -> str:
    for name, pattern in _TYPE_RULES:
        if pattern.search(text):
            return name
    return "definition"


_DOMAIN_OF: dict[str, tuple[int, ...]] = {}
for _i, _keys in enumerate(DOMAINS.values()):
    for _k in _keys:
        _DOMAIN_OF[_k] = (*_DOMAIN_OF.get(_k, ()), _i)
_ALNUM = re.compile(r"[A-Za-z0-9]+")


def domain_scores(text: str) -> npt.NDArray[np.float32]:
    out = np.zeros(len(DOMAINS), dtype=np.float32)
    for w in _ALNUM.findall(text):
        for i in _DOMAIN_OF.get(w.lower(), ()):
            out[i] += 1.0
    total = float(out.sum())
    return out / total if total > 0 else out


def _one_hot(n: int, index: int) -> F32:
    v = np.zeros(n, dtype=np.float32)
    if 0 <= index < n:
        v[index] = 1.0
    return v


def _log_scale(x: float, top: float) -> float:
    return float(math.log1p(max(0.0, x)) / math.log1p(top))


def _entropy(p: npt.NDArray[np.float64]) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def extract(inp: FeatureInput, normalizer: Normalizer | None = None) -> F32:
    """The raw (unnormalised) float32 (128,) vector. The PCA/cluster slots need ``normalizer``'s
    fitted basis and stay 0 without it; use ``Normalizer.transform`` before feeding a network."""
    if not isinstance(inp.query, str):
        raise InvalidInputError(f"FeatureInput.query must be a string, got {type(inp.query).__name__}")
    x = np.zeros(DIM, dtype=np.float32)
    basis = normalizer.basis if normalizer is not None else None

    # ---- query stats ----
    n_tok = inp.n_query_tokens or int(len(inp.query.split()) * 1.3) + 1
    x[Q_TOKENS] = _log_scale(n_tok, 512)
    x[Q_LANGUAGE] = _one_hot(len(LANGUAGES), LANGUAGES.index(language_of(inp.query)))
    if inp.domain in DOMAINS:
        x[Q_DOMAIN] = _one_hot(len(DOMAINS), list(DOMAINS).index(inp.domain))
    else:
        x[Q_DOMAIN] = domain_scores(inp.query)
    x[Q_USER_FREQ] = _log_scale(inp.user_frequency, 1000)
    x[Q_TYPE] = _one_hot(len(QUERY_TYPES), QUERY_TYPES.index(query_type_of(inp.query)))

    # ---- embedding stats ----
    if inp.embedding is not None:
        e = np.asarray(inp.embedding, dtype=np.float64).ravel()  # (d,)
        norm = float(np.linalg.norm(e))
        x[E_NORM] = norm
        if norm > 0:
            p = (e / norm) ** 2  # (d,) sums to 1
            x[E_ENTROPY] = _entropy(p) / math.log(len(e))
            l1 = float(np.abs(e).sum())
            x[E_SPARSITY] = (math.sqrt(len(e)) - l1 / norm) / (math.sqrt(len(e)) - 1)
        if basis is not None:
            x[E_PCA] = basis.project(e)
            x[E_CLUSTER] = basis.memberships(e)

    # ---- search stats ----
    scores = np.asarray(list(inp.hit_scores), dtype=np.float64)  # (k,)
    if not np.all(np.isfinite(scores)):
        raise InvalidInputError("router features: hit_scores contain NaN or inf; check the retrieval scores")
    k_req = float(inp.neighbourhood.get("k_requested", max(len(scores), 1)))
    x[S_K] = _log_scale(len(scores), 64)
    if len(scores):
        dist = 1.0 - scores
        x[S_DIST] = (dist.mean(), dist.std(), dist.min(), dist.max())
        if len(scores) > 1:
            z = np.exp((scores - scores.max()) / 0.1)
            x[S_ENTROPY] = _entropy(z / z.sum()) / math.log(len(scores))
        bins = np.minimum((np.clip(scores, 0.0, 1.0) * 16).astype(np.int64), 15)  # 16 bins over [0, 1]
        x[S_DENSITY] = np.bincount(bins, minlength=16) / len(scores)
    if len(inp.hit_depths):
        x[S_DEPTH] = float(np.mean(inp.hit_depths)) / 4.0
    x[S_RECALL] = float(inp.neighbourhood.get("recall_estimate", min(1.0, len(scores) / max(k_req, 1.0))))
    if inp.hit_vectors is not None and len(inp.hit_vectors) >= 2:
        v = np.asarray(inp.hit_vectors[:TOP_COHERENCE], dtype=np.float64)  # (t, d), t ≤ 7
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sims = v @ v.T  # (t, t)
        iu = np.triu_indices(len(v), k=1)
        pairs = sims[iu]  # (t(t-1)/2,) ≤ 21
        coh = np.zeros(24, dtype=np.float32)
        coh[: len(pairs)] = pairs
        coh[21:24] = (pairs.mean(), pairs.min(), pairs.std())
        x[S_COHERENCE] = coh

    # ---- system ----
    x[Y_LATENCY] = _log_scale(inp.latency_budget_ms, 60000)
    dev = DEVICE_CLASSES.index(inp.device_class) if inp.device_class in DEVICE_CLASSES else 1
    x[Y_DEVICE] = _one_hot(len(DEVICE_CLASSES), dev)
    x[Y_PRIVACY] = _one_hot(4, int(min(3, max(0, inp.privacy_level))))
    x[Y_MEMORY] = _log_scale(inp.memory_available_mb, 65536)
    x[Y_BATTERY] = float(min(1.0, max(0.0, inp.battery)))
    x[Y_CONCURRENT] = _log_scale(inp.concurrent_requests, 64)
    hist_acc = np.asarray(list(inp.historical_accuracy)[:N_HISTORY], dtype=np.float32)
    x[Y_HISTORY.start : Y_HISTORY.start + len(hist_acc)] = hist_acc
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("router features contain NaN or inf; check the retrieval scores and system stats")
    return x


# --------------------------------------------------------------------------------------
# fitted parts: embedding basis (PCA + k-means) and the per-dimension normaliser
# --------------------------------------------------------------------------------------


@dataclass
class EmbeddingBasis:
    """8 principal components and 4 k-means centroids of query embeddings (numpy only)."""

    mean: F32  # (d,)
    components: F32  # (N_PCA, d)
    centroids: F32  # (N_CLUSTERS, d)
    temperature: float = 0.05  # softmax temperature of the cluster memberships

    @classmethod
    def fit(cls, embeddings: npt.ArrayLike, *, seed: int = 0, iters: int = 50) -> EmbeddingBasis:
        e = np.asarray(embeddings, dtype=np.float64)  # (n, d)
        if e.ndim != 2 or len(e) < N_CLUSTERS:
            raise InvalidInputError(f"need at least {N_CLUSTERS} embeddings (n, d) to fit the basis, got {e.shape}")
        mean = e.mean(axis=0)  # (d,)
        centred = e - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(n,d), d)
        comps = np.zeros((N_PCA, e.shape[1]))
        comps[: min(N_PCA, len(vt))] = vt[:N_PCA]
        for i in range(len(comps)):  # fix the sign so refits are reproducible
            j = int(np.argmax(np.abs(comps[i])))
            if comps[i, j] < 0:
                comps[i] = -comps[i]
        # k-means++-lite: deterministic farthest-point init from a seeded first pick
        rng = np.random.default_rng(seed)
        cents = [e[int(rng.integers(len(e)))]]
        for _ in range(1, N_CLUSTERS):
            d2 = np.min([((e - c) ** 2).sum(axis=1) for c in cents], axis=0)
            cents.append(e[int(np.argmax(d2))])
        c = np.stack(cents)  # (K, d)
        for _ in range(iters):
            assign = np.argmin(((e[:, None, :] - c[None]) ** 2).sum(-1), axis=1)  # (n,)
            new = np.stack([e[assign == j].mean(0) if np.any(assign == j) else c[j] for j in range(N_CLUSTERS)])
            if np.allclose(new, c):
                break
            c = new
        d2 = ((e[:, None, :] - c[None]) ** 2).sum(-1)  # (n, K)
        temp = float(max(np.median(d2), 1e-6) / 4.0)
        return cls(mean.astype(np.float32), comps.astype(np.float32), c.astype(np.float32), temp)

    def project(self, e: npt.NDArray[np.float64]) -> F32:
        return ((e - self.mean) @ self.components.T).astype(np.float32)  # (N_PCA,)

    def memberships(self, e: npt.NDArray[np.float64]) -> F32:
        d2 = ((self.centroids - e) ** 2).sum(axis=1)  # (K,)
        z = np.exp(-(d2 - d2.min()) / self.temperature)
        return (z / z.sum()).astype(np.float32)


@dataclass
class Normalizer:
    """Per-dimension standardisation of the raw vector (constant dims pass through centred),
    plus the fitted embedding basis. Saved with the model as one ``.npz``."""

    mean: F32  # (DIM,)
    scale: F32  # (DIM,)
    basis: EmbeddingBasis | None = None

    @classmethod
    def identity(cls) -> Normalizer:
        return cls(np.zeros(DIM, np.float32), np.ones(DIM, np.float32))

    @classmethod
    def fit(cls, inputs: Sequence[FeatureInput], *, seed: int = 0) -> Normalizer:
        """Fit the basis on the inputs' embeddings, then the scaling on their raw vectors."""
        embs = [i.embedding for i in inputs if i.embedding is not None]
        basis = EmbeddingBasis.fit(np.stack(embs), seed=seed) if len(embs) >= N_CLUSTERS else None
        norm = cls.identity()
        norm.basis = basis
        raw = np.stack([extract(i, norm) for i in inputs])  # (n, DIM)
        norm.fit_raw(raw)
        return norm

    def fit_raw(self, raw: npt.ArrayLike) -> Normalizer:
        r = np.asarray(raw, dtype=np.float64)  # (n, DIM)
        self.mean = r.mean(axis=0).astype(np.float32)
        std = r.std(axis=0)
        self.scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return self

    def transform(self, raw: npt.ArrayLike) -> F32:
        """(…, DIM) raw → normalised, clipped to ±8 so one odd input cannot saturate the cell."""
        r = np.asarray(raw, dtype=np.float32)
        return np.clip((r - self.mean) / self.scale, -8.0, 8.0).astype(np.float32)

    def features(self, inp: FeatureInput) -> F32:
        return self.transform(extract(inp, self))

    # ---- persistence --------------------------------------------------------------
    def to_arrays(self, prefix: str = "norm_") -> dict[str, Any]:
        out: dict[str, Any] = {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale}
        if self.basis is not None:
            out[f"{prefix}basis_mean"] = self.basis.mean
            out[f"{prefix}basis_components"] = self.basis.components
            out[f"{prefix}basis_centroids"] = self.basis.centroids
            out[f"{prefix}basis_temperature"] = np.array([self.basis.temperature], np.float32)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "norm_") -> Normalizer:
        basis = None
        if f"{prefix}basis_mean" in arrays:
            basis = EmbeddingBasis(
                np.asarray(arrays[f"{prefix}basis_mean"], np.float32),
                np.asarray(arrays[f"{prefix}basis_components"], np.float32),
                np.asarray(arrays[f"{prefix}basis_centroids"], np.float32),
                float(np.asarray(arrays[f"{prefix}basis_temperature"])[0]),
            )
        mean = np.asarray(arrays[f"{prefix}mean"], np.float32)
        scale = np.asarray(arrays[f"{prefix}scale"], np.float32)
        if mean.shape != (DIM,) or scale.shape != (DIM,):
            raise StoreCorruptError(f"router normaliser has shape {mean.shape}, expected ({DIM},)")
        return cls(mean, scale, basis)

    def save(self, path: Path) -> None:
        np.savez(path, **self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> Normalizer:
        try:
            with np.load(path) as data:
                return cls.from_arrays(data)
        except (OSError, ValueError, KeyError) as exc:
            raise StoreCorruptError(f"{path} is not a ruvllm router normaliser: {exc}") from None
