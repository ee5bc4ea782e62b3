"""Phase 1: a labelled question set, and oracle labels for every model × context size.

The question set (``stdlib_qa``) is built from the Python standard library's own docstrings
with ``inspect``, so it is the same on every machine with the same Python: for each public
function or class of a fixed module list there are six query types (definition, signature,
how-to, explain, compare, code), each in three paraphrases, whose gold answers come from the
docstring (its first sentence, its signature, its first paragraph).

``label_with_models`` is the real oracle: for each question, every configured model
(``ruvllm.llm.base.Generator``) answers at every context size with the retrieved context
(a retrieval function is passed in), and each run records quality Q (the measure that fits the
question type, ``router.quality``: code answers executed, how-to answers checked for the gold
function, token F1 vs gold otherwise), latency L (ms) and cost C (model size × tokens processed). The label is
the (model, context) with the best utility U = Q − λ·L/1000 − μ·C.

``SyntheticOracle`` is a documented stand-in used when the real models cannot run: it fills
Q, L and C from a cost/quality model (below), with the same record format and
``label_source = "synthetic"``, so nothing downstream can mistake it for real labels.

Records are saved as JSONL (``save_labelled`` / ``load_labelled``); the query embedding is
stored as base64 float16 to keep the file small.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import inspect
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.router.base import CONTEXT_BINS
from ruvllm.router.features import FeatureInput
from ruvllm.router.quality import ExecLimits, Verdict, answer_quality, symbol_of

F32 = npt.NDArray[np.float32]

# Modules with rich docstrings; a fixed list keeps the set reproducible.
QA_MODULES: tuple[str, ...] = (
    "base64", "bisect", "calendar", "collections", "copy", "csv", "difflib", "fnmatch", "functools",
    "glob", "gzip", "hashlib", "heapq", "html", "itertools", "json", "math", "operator", "os.path",
    "pathlib", "random", "re", "secrets", "shlex", "shutil", "statistics", "string", "struct",
    "tempfile", "textwrap", "uuid", "urllib.parse", "zlib", "datetime", "fractions", "ipaddress",
)
QUERY_TYPES: tuple[str, ...] = ("definition", "signature", "howto", "explain", "compare", "code")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "definition": ("What does {q} do?", "What is {q} used for?", "Tell me what {q} does."),
    "signature": ("What arguments does {q} take?", "What is the signature of {q}?",
                  "Which parameters does {q} accept?"),
    "howto": ("How do I {task} in Python?", "How can I {task} with the standard library?",
              "Which function should I use to {task}?"),
    "explain": ("Explain {q} in detail.", "Why would I use {q}? Explain with an example.",
                "Walk me through how {q} works."),
    "compare": ("What is the difference between {q} and {q2}?", "Compare {q} with {q2}.",
                "{q} versus {q2}: which should I use?"),
    "code": ("Write Python code that uses {q}.", "Show a code snippet calling {q}.",
             "Implement an example program with {q}."),
}
# Sampling labels are a rule, not searched by the oracle: greedy for factual questions,
# a little warmth for code, more for open explanations.
SAMPLING_BY_TYPE: dict[str, tuple[float, float]] = {
    "definition": (0.0, 1.0), "signature": (0.0, 1.0), "howto": (0.0, 1.0),
    "code": (0.2, 0.95), "explain": (0.7, 0.9), "compare": (0.7, 0.9),
}
SPLITS = ("train", "test_seen", "test_unseen")


@dataclass
class QAItem:
    id: str
    query: str
    query_type: str
    gold: str
    symbol: str  # e.g. "json.dumps"
    module: str
    paraphrase: int  # which template of its type
    split: str = "train"  # train | test_seen (paraphrase of a trained symbol+type) | test_unseen (new symbol)
    session: str = ""


def _first_sentence(doc: str) -> str:
    para = doc.strip().split("\n\n")[0].replace("\n", " ")
    m = re.match(r"(.+?[.!?])(\s|$)", para)
    return (m.group(1) if m else para).strip()


def _first_paragraph(doc: str, words: int = 60) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    return " ".join(para.split()[:words])


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _signature(obj: object) -> str:
    """The signature as text, without the memory addresses some defaults' reprs carry
    (``pat=<built-in method match of re.Pattern object at 0x7f…>``): the docs, the questions' gold
    and so the retrieval must be the same in every process."""
    try:
        return _ADDRESS.sub("", str(inspect.signature(obj)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"


def _hash01(*parts: object) -> float:
    """A stable uniform number in [0, 1) from its parts (same on every run and machine)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def stdlib_symbols(modules: Sequence[str] = QA_MODULES, per_module: int = 8) -> list[tuple[str, str, str]]:
    """(qualified name, module, docstring) of up to ``per_module`` documented public functions/classes."""
    out: list[tuple[str, str, str]] = []
    for modname in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(modname)
        public = getattr(mod, "__all__", None)
        picked = 0
        seen_objs: set[int] = set()  # aliases (bisect.bisect is bisect_right) count once
        for name, obj in sorted(vars(mod).items()):
            if picked >= per_module:
                break
            if name.startswith("_") or (public is not None and name not in public):
                continue
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj)
            if not doc or len(_first_sentence(doc).split()) < 4 or id(obj) in seen_objs:
                continue
            seen_objs.add(id(obj))
            out.append((f"{modname}.{name}", modname, doc))
            picked += 1
    return out


def stdlib_qa(
    modules: Sequence[str] = QA_MODULES, *, per_module: int = 8, unseen_fraction: float = 0.2,
    session_len: int = 4, seed: int = 0,
) -> list[QAItem]:
    """The labelled question set. Splits: a ``unseen_fraction`` of symbols is held out entirely
    (``test_unseen``); of the rest, one paraphrase per (symbol, type) is ``test_seen`` and the
    other two ``train``. Sessions are runs of up to ``session_len`` questions on one module."""
    syms = stdlib_symbols(modules, per_module)
    by_module: dict[str, list[tuple[str, str, str]]] = {}
    for s in syms:
        by_module.setdefault(s[1], []).append(s)
    items: list[QAItem] = []
    asked: set[str] = set()  # two symbols with one docstring sentence would ask the same how-to
    for qual, modname, doc in syms:
        unseen = _hash01(seed, "unseen", qual) < unseen_fraction
        first = _first_sentence(doc)
        sig = _signature(_resolve(qual))
        short = qual.split(".")[-1]
        task = first[0].lower() + first[1:].rstrip(".") if first else short
        task = re.sub(r"^(return|returns)\s+", "get ", task)
        mates = [m for m in by_module[modname] if m[0] != qual]
        other = mates[int(_hash01(seed, "mate", qual) * len(mates))] if mates else None
        golds = {
            "definition": first,
            "signature": f"{short}{sig}",
            "howto": f"Use {qual}: {first}",
            "explain": _first_paragraph(doc),
            "compare": f"{first} {_first_sentence(other[2])}" if other else first,
            "code": f"{qual}{sig}: {first}",
        }
        seen_pick = int(_hash01(seed, "seen", qual) * 3)
        for qtype in QUERY_TYPES:
            if qtype == "compare" and other is None:
                continue
            for p, template in enumerate(TEMPLATES[qtype]):
                query = template.format(q=qual, q2=other[0] if other else "", task=task)
                if query in asked:
                    continue
                asked.add(query)
                split = "test_unseen" if unseen else ("test_seen" if p == (seen_pick + QUERY_TYPES.index(qtype)) % 3
                                                       else "train")
                items.append(QAItem(f"{qual}:{qtype}:{p}", query, qtype, golds[qtype], qual, modname, p, split))
    # sessions: within each split and module, shuffled (seeded) runs of ≤ session_len questions
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[QAItem]] = {}
    for it in items:
        groups.setdefault((it.split, it.module), []).append(it)
    ordered: list[QAItem] = []
    for (split, modname), group in sorted(groups.items()):
        perm = rng.permutation(len(group))
        for n, i in enumerate(perm):
            it = group[int(i)]
            it.session = f"{split}:{modname}:{n // session_len}"
            ordered.append(it)
    return ordered


def _resolve(qual: str) -> object:
    parts = qual.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for p in parts[cut:]:
            obj = getattr(obj, p)
        return obj
    raise InvalidInputError(f"cannot resolve {qual}")


def stdlib_corpus(modules: Sequence[str] = QA_MODULES, per_module: int = 8) -> list[tuple[str, str]]:
    """(key, text) of the docs retrieval searches: each QA symbol's docstring and each module's."""
    docs: list[tuple[str, str]] = []
    for modname in modules:
        mod = importlib.import_module(modname)
        mdoc = inspect.getdoc(mod)
        if mdoc:
            docs.append((modname, f"Module {modname}. {_first_paragraph(mdoc, 120)}"))
    for qual, modname, doc in stdlib_symbols(modules, per_module):
        docs.append((qual, f"{qual}{_signature(_resolve(qual))} (module {modname}). {_first_paragraph(doc, 120)}"))
    return docs


# --------------------------------------------------------------------------------------
# retrieval (passed in; DocRetriever is a small exact one for the benchmark)
# --------------------------------------------------------------------------------------


@dataclass
class Retrieval:
    query_vec: F32  # (d,)
    keys: list[str]
    texts: list[str]
    scores: list[float]  # cosine, best first
    depths: list[int]  # 0 = direct hit, 1 = reached by one graph hop
    vectors: F32  # (n, d)


Retrieve = Callable[[str], Retrieval]
Embed = Callable[[Sequence[str]], F32]


class DocRetriever:
    """Exact cosine search over (key, text) docs, plus one 'hop': the module doc of the top hit."""

    def __init__(self, docs: Sequence[tuple[str, str]], embed: Embed, k: int = 8):
        self.keys = [d[0] for d in docs]
        self.texts = [d[1] for d in docs]
        self.embed = embed
        self.k = k
        self.vectors = np.asarray(embed(self.texts), dtype=np.float32)  # (n, d)
        self._pos = {key: i for i, key in enumerate(self.keys)}

    def search_vec(self, q: F32) -> Retrieval:
        sims = self.vectors @ q  # (n,)
        top = [int(i) for i in np.argsort(-sims)[: self.k]]
        depths = [0] * len(top)
        parent = self.keys[top[0]].rsplit(".", 1)[0] if top else ""
        if parent in self._pos and self._pos[parent] not in top:
            top.append(self._pos[parent])
            depths.append(1)
        return Retrieval(q, [self.keys[i] for i in top], [self.texts[i] for i in top],
                         [float(sims[i]) for i in top], depths, self.vectors[top])

    def __call__(self, query: str) -> Retrieval:
        return self.search_vec(np.asarray(self.embed([query]), dtype=np.float32)[0])


def feature_input_for(query: str, ret: Retrieval, k: int = 8) -> FeatureInput:
    return FeatureInput(
        query=query, n_query_tokens=int(len(query.split()) * 1.3) + 1, embedding=ret.query_vec,
        hit_scores=ret.scores, hit_depths=ret.depths, hit_vectors=ret.vectors,
        neighbourhood={"k_requested": float(k)}, top_hit=ret.keys[0] if ret.keys else "",
    )


# --------------------------------------------------------------------------------------
# labelled records
# --------------------------------------------------------------------------------------


@dataclass
class LabelledRecord:
    id: str
    session: str
    split: str
    query: str
    query_type: str
    gold: str
    models: list[str]
    context_bins: list[int]
    quality: list[list[float]]  # (M, C) in [0, 1]
    latency_ms: list[list[float]]  # (M, C)
    cost: list[list[float]]  # (M, C) relative compute units
    utility: list[list[float]]  # (M, C) U = Q − λ·L/1000 − μ·C
    best_model: int
    best_context: int
    temperature: float
    top_p: float
    label_source: str  # "real" | "synthetic"
    features: dict[str, Any] = field(default_factory=dict)  # FeatureInput minus the vectors
    embedding_b64: str = ""  # float16 query embedding
    hit_vectors_b64: str = ""  # float16 (n, d) top-7 hit vectors
    answers: list[list[str]] = field(default_factory=list)  # (M, C) real answers, when real

    def feature_input(self) -> FeatureInput:
        f = dict(self.features)
        emb = _unb64(self.embedding_b64)
        hv = _unb64(self.hit_vectors_b64)
        if hv is not None and emb is not None:
            hv = hv.reshape(-1, len(emb))
        return FeatureInput(embedding=emb, hit_vectors=hv, **f)


def _b64(a: npt.ArrayLike) -> str:
    return base64.b64encode(np.asarray(a, dtype=np.float16).tobytes()).decode()


def _unb64(s: str) -> F32 | None:
    if not s:
        return None
    return np.frombuffer(base64.b64decode(s), dtype=np.float16).astype(np.float32)


def make_record(item: QAItem, fi: FeatureInput, models: Sequence[str], bins: Sequence[int],
                q: npt.NDArray[Any], lat: npt.NDArray[Any], cost: npt.NDArray[Any], lam: float, mu: float,
                source: str, answers: list[list[str]] | None = None) -> LabelledRecord:
    u, best_m, best_c = utility_table(q, lat, cost, lam, mu)
    temp, top_p = SAMPLING_BY_TYPE.get(item.query_type, (0.0, 1.0))
    feats = {k: v for k, v in asdict(fi).items() if k not in ("embedding", "hit_vectors")}
    feats["hit_scores"] = [round(float(s), 5) for s in fi.hit_scores]
    feats["hit_depths"] = [int(d) for d in fi.hit_depths]
    hv = fi.hit_vectors[:7] if fi.hit_vectors is not None else None

    def r(a: npt.NDArray[Any]) -> list[list[float]]:
        return [[round(float(v), 5) for v in row] for row in a]

    return LabelledRecord(
        id=item.id, session=item.session, split=item.split, query=item.query, query_type=item.query_type,
        gold=item.gold, models=list(models), context_bins=list(bins), quality=r(q), latency_ms=r(lat),
        cost=r(cost), utility=r(u), best_model=int(best_m), best_context=int(best_c), temperature=temp,
        top_p=top_p, label_source=source, features=feats,
        embedding_b64=_b64(fi.embedding) if fi.embedding is not None else "",
        hit_vectors_b64=_b64(hv) if hv is not None else "", answers=answers or [],
    )


def utilities(q: npt.ArrayLike, lat: npt.ArrayLike, cost: npt.ArrayLike, lam: float, mu: float
              ) -> npt.NDArray[np.float64]:
    """U = Q − λ·L/1000 − μ·C elementwise (L in ms): the one utility formula every label (real,
    synthetic, relabelled) is made with."""
    qa, la, ca = (np.asarray(a, np.float64) for a in (q, lat, cost))
    return qa - lam * la / 1000.0 - mu * ca


def utility_table(q: npt.ArrayLike, lat: npt.ArrayLike, cost: npt.ArrayLike, lam: float, mu: float
                  ) -> tuple[npt.NDArray[np.float64], int, int]:
    """``utilities`` over (M, C) runs, and the (model, context) with the best U."""
    u = utilities(q, lat, cost, lam, mu)  # (M, C)
    best_m, best_c = np.unravel_index(int(np.argmax(u)), u.shape)
    return u, int(best_m), int(best_c)


def relabel(rec: LabelledRecord, lam: float, mu: float) -> LabelledRecord:
    """The same measured Q, L and C under other utility weights: U = Q − λ·L/1000 − μ·C, argmax again.
    Cost weights can be studied (``bench/router.py --sweep-mu``) without running the models again."""
    u, best_m, best_c = utility_table(rec.quality, rec.latency_ms, rec.cost, lam, mu)
    return replace(rec, utility=[[round(float(v), 5) for v in row] for row in u], best_model=best_m,
                   best_context=best_c)


def requality(rec: LabelledRecord, lam: float, mu: float, limits: ExecLimits | None = None,
              verdict: Verdict | None = None) -> LabelledRecord:
    """Q measured again from the record's stored ``answers`` with the per-type measure
    (``router.quality.answer_quality``: code executed, how-to checked for the gold function, F1
    otherwise), then U and the labels as in ``relabel``; the models are not run again.
    Latency and cost stay as measured."""
    if not rec.answers:
        raise InvalidInputError(f"record {rec.id} has no stored answers ({rec.label_source} labels); "
                                "only real labels made with answers can be measured again")
    symbol = symbol_of(rec.id)
    q = [[round(answer_quality(rec.query_type, a, rec.gold, symbol, limits, question=rec.query, verdict=verdict), 5)
          for a in row] for row in rec.answers]
    return relabel(replace(rec, quality=q), lam, mu)


def save_labelled(records: Iterable[LabelledRecord], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_labelled(path: Path) -> list[LabelledRecord]:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"labelled set {path} does not exist; create it with the oracle (bench/router.py)")
    out: list[LabelledRecord] = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(LabelledRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise StoreCorruptError(f"{path} line {n} is not an oracle record: {exc}") from None
    return out


# --------------------------------------------------------------------------------------
# the real oracle: every model × context size through a Generator
# --------------------------------------------------------------------------------------


@dataclass
class OracleConfig:
    context_bins: tuple[int, ...] = CONTEXT_BINS
    lam: float = 0.02  # utility lost per second of latency
    mu: float = 0.02  # utility lost per cost unit (model params in B × tokens in thousands)
    max_tokens: int = 64
    max_tokens_code: int = 0  # code questions' answer length when larger (a snippet cut before its call fails)
    k: int = 8
    shuffle_seed: int | None = 0  # run order of the (question, model, context) runs; None = nested loops
    isolate: bool = True  # drop the generator's KV state before each run, so no run reuses another's prefix
    exec_limits: ExecLimits = field(default_factory=ExecLimits)  # code answers are run under these (quality.py)
    temperature: float = 0.0  # 0 = greedy, the labels' default; > 0 samples (bench.label_noise)
    top_p: float = 1.0
    sample_seed: int = 0  # the sampler's seed when temperature > 0


def _forget_prefix(gen: Any) -> None:
    """Make the next call pay its full prefill: llama.cpp keeps the last sequence's KV and reuses
    the common prefix, so without this a 1024-token run right after the same question's 256-token
    run is measured faster than it is. Generators without a llama.cpp handle are left alone."""
    reset = getattr(getattr(gen, "llm", None), "reset", None)
    if callable(reset):
        reset()


def label_with_models(
    items: Sequence[QAItem], generators: dict[str, Any], params_b: dict[str, float], retrieve: Retrieve,
    cfg: OracleConfig | None = None, progress: Callable[[int, int], None] | None = None,
) -> list[LabelledRecord]:
    """Run every generator (``ruvllm.llm.base.Generator``) at every context size on every item.
    ``params_b``: parameter count in billions per model (for the cost).

    The runs of all ``items`` go in one seeded random order (``cfg.shuffle_seed``), so a drift in
    machine load spreads over every model and context size instead of landing on whichever runs
    last; with ``cfg.isolate`` no run reuses the KV prefix another run left behind."""
    from ruvllm.llm.base import SamplingParams
    from ruvllm.llm.prompt import ContextItem, build_prompt

    cfg = cfg or OracleConfig()
    models = list(generators)
    M, C = len(models), len(cfg.context_bins)
    rets = [retrieve(item.query) for item in items]
    q, lat, cost = np.zeros((len(items), M, C)), np.zeros((len(items), M, C)), np.zeros((len(items), M, C))
    answers = [[["" for _ in range(C)] for _ in range(M)] for _ in items]
    jobs = [(n, i, j) for n in range(len(items)) for i in range(M) for j in range(C)]
    if cfg.shuffle_seed is not None:
        key = "|".join(it.query for it in items)
        rng = np.random.default_rng([cfg.shuffle_seed, int(_hash01(key) * 2**32)])
        jobs = [jobs[t] for t in rng.permutation(len(jobs))]
    for n, i, j in jobs:
        item, ret, gen = items[n], rets[n], generators[models[i]]
        ctx = [ContextItem(k, t, s, source=k, hop=d)
               for k, t, s, d in zip(ret.keys, ret.texts, ret.scores, ret.depths, strict=True)]
        max_tokens = max(cfg.max_tokens, cfg.max_tokens_code) if item.query_type == "code" else cfg.max_tokens
        room = max(0, gen.n_ctx - max_tokens - 96)
        built = build_prompt(item.query, ctx, style=gen.prompt_style, context_budget=min(cfg.context_bins[j], room),
                             count_tokens=gen.count_tokens)
        sp = SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, stop=built.stop,
                            seed=cfg.sample_seed)
        if cfg.isolate:
            _forget_prefix(gen)
        t0 = time.perf_counter()
        g = gen.complete(built.prompt, sp) if built.style == "completion" else gen.chat(built.messages, sp)
        ms = g.total_ms or (time.perf_counter() - t0) * 1000.0
        q[n, i, j] = answer_quality(item.query_type, g.text, item.gold, item.symbol, cfg.exec_limits)
        lat[n, i, j] = ms
        cost[n, i, j] = params_b[models[i]] * (g.prompt_tokens + g.completion_tokens) / 1000.0
        answers[n][i][j] = g.text
    out: list[LabelledRecord] = []
    for n, item in enumerate(items):
        fi = feature_input_for(item.query, rets[n], cfg.k)
        out.append(make_record(item, fi, models, cfg.context_bins, q[n], lat[n], cost[n], cfg.lam, cfg.mu, "real",
                               answers[n]))
        if progress:
            progress(n + 1, len(items))
    return out


# --------------------------------------------------------------------------------------
# the synthetic stand-in (documented; never reported as real)
# --------------------------------------------------------------------------------------


@dataclass
class SyntheticOracle:
    """A cost/quality model of small CPU LLMs, used when the real models cannot run.

    For question i of type t with retrieval top score s, and model m of size P_m (billions):

    - difficulty  d_i = base_t + 0.3·(1 − s) + ε_i,  ε_i ~ N(0, 0.1) seeded by (symbol, type), so
      paraphrases of one question share their difficulty (base_t in ``DIFFICULTY``)
    - capability  a_m = 0.3 + 0.28·log2(P_m / 0.135)     (0.27 B → 0.58; 0.5 B → 0.83)
    - context need n_t = NEED[t] tokens; g(c) = 0.6 + 0.4·min(1, c / n_t) − 0.05·κ_m·log2⁺(c / n_t),
      too much context distracts, small models more: κ_m = 1 / (1 + P_m / 0.25)
    - quality     Q = clip(0.95 · σ(12·(a_m − d_i)) · g(c) + η, 0, 1),  η ~ N(0, 0.02)
      (easy questions: both models near 0.9; mid/hard ones: the larger model pays off)
    - latency     L = (c + 64 + query tokens) / prefill_m + ANSWER_TOKENS[t] / gen_m  (s → ms), speeds
      falling with size from 400 / 40 tok/s at 0.135 B (assumed 2-core CPU figures, order of magnitude)
    - cost        C = P_m · (prompt + answer tokens) / 1000
    - utility     U = Q − λ·L/1000 − μ·C   (the same formula as the real oracle)
    """

    models: list[str]
    params_b: list[float]  # model sizes in billions, same order
    cfg: OracleConfig = field(default_factory=OracleConfig)
    seed: int = 0

    DIFFICULTY: ClassVar[dict[str, float]] = {
        "definition": 0.1, "signature": 0.15, "howto": 0.3, "code": 0.45, "explain": 0.55, "compare": 0.65}
    NEED: ClassVar[dict[str, int]] = {
        "definition": 256, "signature": 256, "howto": 512, "code": 1024, "explain": 1024, "compare": 2048}
    ANSWER_TOKENS: ClassVar[dict[str, int]] = {
        "definition": 40, "signature": 30, "howto": 60, "code": 120, "explain": 150, "compare": 120}

    def tables(self, item: QAItem, top_score: float, n_query_tokens: int) -> tuple[
            npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        rng = np.random.default_rng(int(_hash01(self.seed, item.symbol, item.query_type) * 2**32))
        d = self.DIFFICULTY[item.query_type] + 0.3 * (1.0 - top_score) + rng.normal(0, 0.1)
        need = self.NEED[item.query_type]
        M, C = len(self.models), len(self.cfg.context_bins)
        q, lat, cost = np.zeros((M, C)), np.zeros((M, C)), np.zeros((M, C))
        for i, p in enumerate(self.params_b):
            a = 0.3 + 0.28 * math.log2(p / 0.135)
            kappa = 1.0 / (1.0 + p / 0.25)
            prefill = max(40.0, 400.0 * 0.135 / p)
            gen_tps = max(4.0, 40.0 * 0.135 / p)
            for j, c in enumerate(self.cfg.context_bins):
                g = 0.6 + 0.4 * min(1.0, c / need) - 0.05 * kappa * max(0.0, math.log2(c / need))
                q[i, j] = float(np.clip(0.95 / (1 + math.exp(-12 * (a - d))) * g + rng.normal(0, 0.02), 0, 1))
                prompt = c + 64 + n_query_tokens
                ans = self.ANSWER_TOKENS[item.query_type]
                lat[i, j] = (prompt / prefill + ans / gen_tps) * 1000.0
                cost[i, j] = p * (prompt + ans) / 1000.0
        return q, lat, cost

    def label(self, items: Sequence[QAItem], retrieve: Retrieve) -> list[LabelledRecord]:
        out = []
        for item in items:
            ret = retrieve(item.query)
            fi = feature_input_for(item.query, ret, self.cfg.k)
            q, lat, cost = self.tables(item, ret.scores[0] if ret.scores else 0.0, fi.n_query_tokens)
            out.append(make_record(item, fi, self.models, self.cfg.context_bins, q, lat, cost,
                                   self.cfg.lam, self.cfg.mu, "synthetic"))
        return out
