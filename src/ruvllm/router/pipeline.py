"""One reproducible pipeline: labelled set → oracle runs → training → compression → saved router.

``ruvllm router train`` and ``bench/router.py`` both call it, and both train with
``training.train_from_oracle``, so the benchmark measures what the command ships. Their training
defaults differ: the command adds the per-type utility prior and 4-fold CV, the benchmark keeps the plain
cell so its recorded commands reproduce (its report's header names the settings).

    cfg = PipelineConfig(labels="synthetic")          # or "real": every model × context, really run
    run = build_labels(cfg, work_dir)                  # <work_dir>/labelled_<labels>.jsonl + info
    report = train_from_oracle(run.path, out_dir, TrainConfig(type_prior=True, utility_prior=0.05, cv_folds=4))

Embedders: ``"sentence"`` is the packaged all-MiniLM-L6-v2 (what the orchestrator uses at serving
time, so train on it); ``"hash"`` is a deterministic bag-of-words hashing embedder with no model,
for tests and smoke runs only.

Real labels need generators: pass ``generators`` and ``params_b`` yourself, or let
``real_generators`` load the configured, installed GGUF models through ``ruvllm.llm``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ruvllm.errors import InvalidInputError, ModelNotFoundError
from ruvllm.router.base import CONTEXT_BINS
from ruvllm.router.oracle import (
    QA_MODULES,
    DocRetriever,
    LabelledRecord,
    OracleConfig,
    QAItem,
    Retrieval,
    SyntheticOracle,
    label_with_models,
    load_labelled,
    save_labelled,
    stdlib_corpus,
    stdlib_qa,
)

F32 = npt.NDArray[np.float32]
Embed = Callable[[Sequence[str]], F32]

# The two packaged models (llm.registry) and their sizes: the synthetic oracle's defaults.
DEFAULT_MODELS: tuple[str, ...] = ("gemma3-270m", "qwen2.5-coder-0.5b")
DEFAULT_PARAMS_B: tuple[float, ...] = (0.27, 0.5)
HASH_DIM = 384


@dataclass
class PipelineConfig:
    labels: str = "synthetic"  # "synthetic" | "real"
    embedder: str = "sentence"  # "sentence" | "hash" (tests / smoke runs only)
    modules: tuple[str, ...] = QA_MODULES  # stdlib modules the question set is built from
    per_module: int = 8  # documented symbols per module
    limit: int = 0  # about this many questions, whole sessions, seeded; 0 = all
    split_filter: tuple[str, ...] = ()  # keep only these splits (e.g. to label the test splits first)
    models: tuple[str, ...] = DEFAULT_MODELS  # synthetic: the names; real: the configured models to run
    params_b: tuple[float, ...] = DEFAULT_PARAMS_B  # synthetic model sizes (billions), same order
    lam: float = 0.02  # utility lost per second of latency
    mu: float = 0.02  # utility lost per cost unit (params in B × tokens in thousands)
    context_bins: tuple[int, ...] = CONTEXT_BINS
    max_tokens: int = 64  # answer length of each real oracle run
    max_tokens_code: int = 0  # code questions' answer length, when larger
    k: int = 8  # retrieved docs per question
    seed: int = 0
    resume: bool = False  # real labels: keep the matching records of a stopped run's partial file
    all_wordings: bool = False  # also every training wording of each seen pattern in the set


@dataclass
class LabelRun:
    path: Path  # the labelled JSONL
    records: list[LabelledRecord]
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# embedders
# --------------------------------------------------------------------------------------


def hash_embed(texts: Sequence[str], dim: int = HASH_DIM) -> F32:
    """Deterministic bag-of-words hashing embedder, L2-normalised (no model; tests and smoke runs)."""
    out = np.zeros((len(texts), dim), np.float32)  # (n, dim)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z0-9_]+", t.lower()):
            out[i, int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "big") % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def make_embed(kind: str) -> tuple[Embed, str]:
    if kind == "hash":
        return hash_embed, "hash (bag-of-words, no model)"
    if kind == "sentence":
        from ruvllm.config import EmbeddingConfig
        from ruvllm.embedding import make_embedder

        emb = make_embedder(EmbeddingConfig())
        return emb.embed, "sentence (all-MiniLM-L6-v2)"
    raise InvalidInputError(f"unknown embedder {kind!r}; use 'sentence' or 'hash'")


# --------------------------------------------------------------------------------------
# phase 1
# --------------------------------------------------------------------------------------


def select_items(cfg: PipelineConfig) -> list[QAItem]:
    """The question set, optionally cut to whole sessions (seeded) and to some splits.

    A limited set keeps what its splits promise: every ``test_seen`` question (a new paraphrase of a
    trained question) has at least one training question of the same pattern (symbol and type) in
    the set. Sessions are picked whole: the held-out ones first (their share of the sessions), then
    each seen session together with the training sessions that cover its patterns (greedy, most
    patterns first), as long as they fit the budget and the seen share; the rest of the budget is
    random training sessions. ``--limit`` stays "about this many questions".

    ``all_wordings`` then adds every training wording of each seen pattern the set holds (as
    questions of their own sessions, which the set may hold only in part), so each seen question
    has all the training wordings of its pattern, not only the one that covers it."""
    every = stdlib_qa(cfg.modules, per_module=cfg.per_module, seed=cfg.seed)
    items = every
    if cfg.split_filter:
        items = [it for it in items if it.split in cfg.split_filter]
    if cfg.limit and cfg.limit < len(items):
        keep = _limited_sessions(items, cfg.limit, cfg.seed)
        items = [it for it in items if it.session in keep]
    if cfg.all_wordings:
        seen = {(it.symbol, it.query_type) for it in items if it.split == "test_seen"}
        have = {it.id for it in items}
        items = [it for it in every if it.id in have or (it.split == "train" and (it.symbol, it.query_type) in seen)]
    if not items:
        raise InvalidInputError("the question set is empty; check --modules / --limit")
    return items


def _session_patterns(items: Sequence[QAItem]) -> dict[str, set[tuple[str, str]]]:
    """Session -> the (symbol, type) patterns of its questions."""
    out: dict[str, set[tuple[str, str]]] = {}
    for it in items:
        out.setdefault(it.session, set()).add((it.symbol, it.query_type))
    return out


def _limited_sessions(items: Sequence[QAItem], limit: int, seed: int) -> set[str]:
    patterns = _session_patterns(items)
    split_of = {it.session: it.split for it in items}
    by_split: dict[str, list[str]] = {}
    for sid in patterns:  # sessions in order of first appearance
        by_split.setdefault(split_of[sid], []).append(sid)
    rng = np.random.default_rng(seed)
    n_sessions = max(1, round(limit / 4))
    total = sum(len(v) for v in by_split.values())
    quota = {sp: max(1, round(n_sessions * len(v) / total)) for sp, v in by_split.items()}
    order = {sp: [str(s) for s in rng.permutation(v)] for sp, v in sorted(by_split.items())}
    chosen: set[str] = set(order.get("test_unseen", [])[: quota.get("test_unseen", 0)])
    budget = max(1, n_sessions - len(chosen))  # for the seen and training sessions together
    train_rank = {sid: n for n, sid in enumerate(order.get("train", []))}
    by_pattern: dict[tuple[str, str], list[str]] = {}
    for sid in order.get("train", []):
        for pat in patterns[sid]:
            by_pattern.setdefault(pat, []).append(sid)
    train: set[str] = set()
    covered: set[tuple[str, str]] = set()
    n_seen = 0
    for sid in order.get("test_seen", []):
        if n_seen >= quota["test_seen"]:
            break
        need = {p for p in patterns[sid] if p not in covered}
        cover: list[str] = []
        while need:  # the training session that covers most of what is left (seeded order breaks ties)
            cands = {c for p in need for c in by_pattern.get(p, ()) if c not in train and c not in cover}
            if not cands:
                break
            best = min(cands, key=lambda c: (-len(patterns[c] & need), train_rank[c]))
            cover.append(best)
            need -= patterns[best]
        if need or len(train) + len(cover) + n_seen + 1 > budget:
            continue  # no training paraphrase exists (a split filter), or it does not fit: next one
        chosen.add(sid)
        n_seen += 1
        train.update(cover)
        for c in cover:
            covered |= patterns[c]
    for sid in order.get("train", []):
        if len(train) + n_seen >= budget:
            break
        train.add(sid)
    return chosen | train


def labelling_order(items: Sequence[QAItem], done: Sequence[QAItem] = (), seed: int = 0) -> list[QAItem]:
    """The order real labels are made in: whole sessions (their questions in order), the splits
    interleaved so any prefix of the run (a stopped run) has train, seen and held-out questions in
    about the proportions of the whole set, counting what ``done`` already holds. A seen session
    comes right after the training sessions that cover its patterns (symbol + type), so a run
    stopped at a session boundary keeps what "seen" promises for every seen question it labelled."""
    sessions: dict[str, list[QAItem]] = {}
    for it in items:
        sessions.setdefault(it.session, []).append(it)
    rng = np.random.default_rng(seed)
    queues: dict[str, list[str]] = {}
    for sid in rng.permutation(sorted(sessions)).tolist():
        queues.setdefault(sessions[sid][0].split, []).append(sid)
    target = {sp: sum(len(sessions[s]) for s in q) + sum(d.split == sp for d in done) for sp, q in queues.items()}
    have = {sp: sum(d.split == sp for d in done) for sp in queues}
    patterns = _session_patterns(items)
    covered = {(d.symbol, d.query_type) for d in done if d.split == "train"}
    out: list[QAItem] = []

    def emit(sid: str) -> None:
        chunk = sessions[sid]
        out.extend(chunk)
        have[chunk[0].split] += len(chunk)
        if chunk[0].split == "train":
            covered.update(patterns[sid])

    while any(queues.values()):
        sp = min((sp for sp, q in queues.items() if q), key=lambda sp: (have[sp] / target[sp], sp))
        sid = queues[sp].pop(0)
        if sp == "test_seen":  # first the queued training sessions that hold its uncovered patterns
            need = patterns[sid] - covered
            for tid in list(queues.get("train", [])):
                if need & patterns[tid]:
                    queues["train"].remove(tid)
                    emit(tid)
                    need -= covered
        emit(sid)
    return out


def real_generators(models: Sequence[str] = (), *, config: Path | None = None
                    ) -> tuple[dict[str, Any], dict[str, float]]:
    """Load the configured (or named), installed GGUF models through ``ruvllm.llm``
    (``config``: a TOML file; else the defaults and RUVLLM_* environment)."""
    from ruvllm.config import Config
    from ruvllm.llm import ModelPool, Registry

    cfg = Config.load(config)
    registry = Registry(cfg.models_path, extra=cfg.llm.paths)
    wanted = list(models) or list(cfg.llm.models)
    installed = [m for m in wanted if registry.is_installed(m)]
    if not installed:
        raise ModelNotFoundError(f"none of {wanted} is installed: real oracle labels need the GGUF models "
                                 "(see `ruvllm models`), or use --labels synthetic")
    pool = ModelPool(registry, cfg.llm)
    gens = {m: pool.get(m) for m in installed}
    params_b = {m: float(registry.spec(m).params_m) / 1000.0 for m in installed}
    return gens, params_b


def build_labels(
    cfg: PipelineConfig, work_dir: Path, *, embed: Embed | None = None, generators: dict[str, Any] | None = None,
    params_b: dict[str, float] | None = None, progress: Callable[[int, int], None] | None = None,
) -> LabelRun:
    """Phase 1: the question set, retrieval over the stdlib docs, oracle labels; saved as JSONL."""
    t0 = time.perf_counter()
    items = select_items(cfg)
    emb_name = "caller's"
    if embed is None:
        embed, emb_name = make_embed(cfg.embedder)
    corpus = stdlib_corpus(cfg.modules, per_module=cfg.per_module)
    retriever = DocRetriever(corpus, embed, k=cfg.k)
    qvecs = np.asarray(embed([it.query for it in items]), dtype=np.float32)  # (n, d), one batch
    cache = {it.query: qvecs[i] for i, it in enumerate(items)}

    def retrieve(q: str) -> Retrieval:
        return retriever.search_vec(cache[q] if q in cache else np.asarray(embed([q]), np.float32)[0])

    t_embed = time.perf_counter() - t0
    ocfg = OracleConfig(context_bins=tuple(cfg.context_bins), lam=cfg.lam, mu=cfg.mu, max_tokens=cfg.max_tokens,
                        max_tokens_code=cfg.max_tokens_code, k=cfg.k, shuffle_seed=cfg.seed)
    if cfg.labels == "synthetic":
        if len(cfg.models) != len(cfg.params_b):
            raise InvalidInputError("synthetic labels need one size (params_b) per model")
        models = list(cfg.models)
        records = SyntheticOracle(models, list(cfg.params_b), ocfg, seed=cfg.seed).label(items, retrieve)
    elif cfg.labels == "real":
        if generators is None:
            generators, params_b = real_generators(cfg.models)
        if params_b is None or set(params_b) != set(generators):
            raise InvalidInputError("real labels need params_b (billions) for every generator")
        models = list(generators)
        records = []
        partial = Path(work_dir) / f"labelled_{cfg.labels}.partial.jsonl"  # what is done so far, if stopped
        partial.parent.mkdir(parents=True, exist_ok=True)
        if cfg.resume and partial.exists():
            wanted = {it.id for it in items}
            records = [r for r in load_labelled(partial) if r.id in wanted and list(r.models) == models
                       and list(r.context_bins) == list(cfg.context_bins)]
        partial.write_text("".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records))
        done = {r.id for r in records}
        todo = labelling_order([it for it in items if it.id not in done],
                               [it for it in items if it.id in done], cfg.seed)
        # chunks of 8 questions (48 runs for 3 models × 2 sizes), each run in a seeded random order and
        # saved when done, so a stopped run keeps its labels and load drift spreads over every model
        for start in range(0, len(todo), 8):
            chunk = label_with_models(todo[start : start + 8], generators, params_b, retrieve, ocfg)
            records.extend(chunk)
            with partial.open("a") as fh:
                fh.writelines(json.dumps(asdict(r), sort_keys=True) + "\n" for r in chunk)
            if progress:
                progress(len(records), len(items))
        partial.unlink()
        rank = {it.id: n for n, it in enumerate(items)}
        records.sort(key=lambda r: rank[r.id])  # the question set's order, however they were labelled
    else:
        raise InvalidInputError(f"unknown label source {cfg.labels!r}; use 'synthetic' or 'real'")
    path = save_labelled(records, Path(work_dir) / f"labelled_{cfg.labels}.jsonl")
    splits = ("train", "test_seen", "test_unseen")
    info = {
        "labels": cfg.labels, "n_queries": len(records), "n_docs": len(corpus), "embedder": emb_name,
        "models": models, "lambda_per_s": cfg.lam, "mu_per_cost_unit": cfg.mu,
        "context_bins": list(cfg.context_bins), "splits": {s: sum(r.split == s for r in records) for s in splits},
        "oracle_best_model_share": {m: float(np.mean([r.best_model == i for r in records]))
                                    for i, m in enumerate(models)},
        "embed_seconds": round(t_embed, 2), "label_seconds": round(time.perf_counter() - t0, 2),
        # what ran: for real labels the models (and their sizes) are the generators', not cfg's defaults
        "config": {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
                   "models": models, "params_b": [float((params_b or {}).get(m, 0.0)) for m in models]
                   if cfg.labels == "real" else list(cfg.params_b)},
    }
    return LabelRun(path, records, info)


# --------------------------------------------------------------------------------------
# relabelling stored answers with the per-type quality measure
# --------------------------------------------------------------------------------------


def label_distribution(records: Sequence[LabelledRecord]) -> dict[str, dict[str, int]]:
    """How often each model is the oracle's best, per question type (and ``"all"``)."""
    if not records:
        return {}
    models = list(records[0].models)
    out: dict[str, dict[str, int]] = {}
    for r in records:
        for key in (r.query_type, "all"):
            row = out.setdefault(key, dict.fromkeys(models, 0))
            row[models[r.best_model]] += 1
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "all", kv[0])))


def relabel_file(src: Path, dest: Path, *, lam: float | None = None, mu: float | None = None,
                 limits: Any = None, progress: Callable[[int, int], None] | None = None,
                 verdict: Any = None, judge_model: str = "", reuse: Path | None = None) -> dict[str, Any]:
    """Measure Q again from the stored answers of a real labelled file (``oracle.requality``: code
    executed, how-to checked for the gold function, F1 otherwise), recompute U and the labels, and
    save the result as ``dest``, with a ``labels_info.json`` beside it (the source's, updated: the
    quality measure, the weights, the label distribution before and after). The models do not run.
    λ and μ default to the source's ``labels_info.json``, else 0.02. With ``verdict`` (a judge's
    ``LLMJudge.verdict``; ``judge_model`` names it in the info) the types without a check of their
    own are scored by it instead of token F1.

    ``reuse``: an earlier relabelled file, measured the same way (its ``labels_info.json`` says how;
    another measure or judge is refused). A record whose id, gold, models, context sizes and stored
    answers it holds unchanged takes its Q from there, so a labelled set that grew is measured only
    where it is new; U and the labels are recomputed with this run's λ and μ either way."""
    from ruvllm.router.oracle import relabel, requality
    from ruvllm.router.quality import METHOD_BY_TYPE, QUALITY_VERSION, QUALITY_VERSION_JUDGED

    src, dest = Path(src), Path(dest)
    if dest.resolve().parent == src.resolve().parent:
        raise InvalidInputError(f"write the relabelled file to another folder than {src.parent}: its "
                                "labels_info.json describes the source and is kept")
    side = src.parent / "labels_info.json"
    info: dict[str, Any] = json.loads(side.read_text()) if side.exists() else {}
    lam = float(info.get("lambda_per_s", 0.02)) if lam is None else lam
    mu = float(info.get("mu_per_cost_unit", 0.02)) if mu is None else mu
    before = load_labelled(src)
    if not before:
        raise InvalidInputError(f"{src} holds no records")
    measure = QUALITY_VERSION_JUDGED if verdict else QUALITY_VERSION
    known = _reusable(reuse, measure, judge_model) if reuse is not None else {}
    after = []
    n_reused = 0
    for n, rec in enumerate(before, 1):
        old = known.get(rec.id)
        if old is not None and (old.gold, old.answers, list(old.models), list(old.context_bins)) == (
                rec.gold, rec.answers, list(rec.models), list(rec.context_bins)):
            after.append(relabel(replace(rec, quality=old.quality), lam, mu))
            n_reused += 1
        else:
            after.append(requality(rec, lam, mu, limits, verdict))
        if progress:
            progress(n, len(before))
    save_labelled(after, dest)
    models = list(before[0].models)
    types = sorted({r.query_type for r in before})

    def mean_q(recs: Sequence[LabelledRecord], t: str | None = None) -> dict[str, list[float]]:
        q = np.array([r.quality for r in recs if t is None or r.query_type == t])  # (n, M, C)
        return {m: [round(float(v), 3) for v in q[:, i, :].mean(0)] for i, m in enumerate(models)}

    info.update({
        "relabelled_from": str(src), "quality_measure": measure,
        "quality_reused_from": str(reuse) if reuse is not None else None, "quality_reused": n_reused,
        "quality_by_type": {**{t: f"{judge_model or 'judge'} verdict P(yes) vs gold" if verdict else
                               "token F1 vs gold" for t in types},
                            **{t: METHOD_BY_TYPE[t] for t in types if t in METHOD_BY_TYPE}},
        "lambda_per_s": lam, "mu_per_cost_unit": mu,
        "oracle_best_model_share": {m: float(np.mean([r.best_model == i for r in after]))
                                    for i, m in enumerate(models)},
        "mean_quality": mean_q(after),
        "mean_quality_by_type": {t: {"before": mean_q(before, t), "after": mean_q(after, t)} for t in types},
        "label_distribution_before": label_distribution(before),
        "label_distribution_after": label_distribution(after),
        "labels_changed": int(sum((a.best_model, a.best_context) != (b.best_model, b.best_context)
                                  for a, b in zip(after, before, strict=True))),
    })
    (dest.parent / "labels_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _reusable(path: Path, measure: str, judge_model: str) -> dict[str, LabelledRecord]:
    """The records of an earlier relabelled file, by id, if it was measured as this run measures."""
    side = Path(path).parent / "labels_info.json"
    info: dict[str, Any] = json.loads(side.read_text()) if side.exists() else {}
    was = (info.get("quality_measure"), _judge_of(info))
    if was != (measure, judge_model or None):
        raise InvalidInputError(f"--reuse {path}: its quality was measured as {was[0]!r} (judge {was[1]!r}), this run "
                                f"measures {measure!r} (judge {judge_model or None!r}); Q from another measure "
                                "cannot be reused")
    return {r.id: r for r in load_labelled(Path(path))}


def _judge_of(info: dict[str, Any]) -> str | None:
    """The judge model a relabelled file's info names (``quality_by_type``: "<judge> verdict ..."), if any."""
    for how in info.get("quality_by_type", {}).values():
        if " verdict " in str(how):
            return str(how).split(" verdict ")[0]
    return None
