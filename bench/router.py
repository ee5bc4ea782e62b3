"""Router benchmark: FastGRNN (dense and compressed) against simple baselines, one run.

    nice -n 10 .venv/bin/python -m bench.router                 # synthetic oracle labels (default)
    nice -n 10 .venv/bin/python -m bench.router --labels real --limit 120   # real models (slow)

Pipeline: the stdlib QA set (``oracle.stdlib_qa``) → real sentence embeddings and exact retrieval
over the docstrings (``oracle.DocRetriever``) → oracle labels for every model × context size
(synthetic cost/quality model, or the real models through ``ruvllm.llm`` Generators) →
``training.train_from_oracle`` (dense → IHT sparse → retrain → int8) → evaluation on the
held-out symbols (``test_unseen``) and on new paraphrases of trained questions (``test_seen``),
with the orchestrator's fallback and cascade (``router/cascade.py``) replayed on the stored answers.

Writes bench/results/router/router_bench.{json,md} and bench/results/router/cost_quality.png; the labelled
JSONL and checkpoints go to results/tmp/router/ (ignored by git). The label source is printed
in every output: synthetic labels are never presented as real.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def build_labels(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """Phase 1 through ``router.pipeline`` (the same code as ``ruvllm router train``)."""
    from ruvllm.router.pipeline import PipelineConfig
    from ruvllm.router.pipeline import build_labels as pipeline_labels

    cfg = PipelineConfig(labels=args.labels, embedder=args.embedder, per_module=args.per_module, limit=args.limit,
                         lam=args.lam, mu=args.mu, context_bins=tuple(args.context_bins), max_tokens=args.max_tokens,
                         seed=args.seed)
    if args.modules:
        cfg.modules = tuple(m.strip() for m in args.modules.split(",") if m.strip())

    def progress(i: int, n: int) -> None:
        print(f"oracle {i}/{n}", file=sys.stderr, flush=True)

    run = pipeline_labels(cfg, work, progress=progress)
    return run.path, run.info


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


def _tables(recs: list[Any]) -> dict[str, np.ndarray]:
    return {k: np.array([getattr(r, k) for r in recs], dtype=np.float64)
            for k in ("quality", "latency_ms", "cost", "utility")}


# "as good as the oracle's choice" up to this much utility: 1 s of latency at λ = 0.02, or a small
# share of the spread of quality between the models' answers to one question
NEAR_DELTA = 0.02


def metrics(m: np.ndarray, c: np.ndarray, t: dict[str, np.ndarray], large_ref: tuple[int, int],
            first: np.ndarray | None = None) -> dict[str, float]:
    """Decision metrics of choices (m, c) against the oracle and against always-large.

    ``first``: per question, the model of a first answer that failed its check and was escalated
    (-1 where none was): a cascade pays that answer's latency and cost too (``replay_safety``)."""
    n = len(m)
    rows = np.arange(n)
    U = t["utility"]
    flat = U.reshape(n, -1).argmax(1)
    om, oc = flat // U.shape[2], flat % U.shape[2]
    lm, lc = large_ref
    q = t["quality"][rows, m, c]
    q_large = t["quality"][:, lm, lc]
    cost = t["cost"][rows, m, c]
    cost_large = t["cost"][:, lm, lc]
    lat = t["latency_ms"][rows, m, c]
    u = U[rows, m, c]
    if first is not None:
        ran = first >= 0
        f = np.where(ran, first, 0)
        lat = lat + np.where(ran, t["latency_ms"][rows, f, c], 0.0)
        cost = cost + np.where(ran, t["cost"][rows, f, c], 0.0)
        # U = Q − λ·L − μ·C, so the first answer's latency and cost weigh U₁ − Q₁ in utility
        u = u + np.where(ran, U[rows, f, c] - t["quality"][rows, f, c], 0.0)
    return {
        "model_accuracy": float((m == om).mean()),
        "joint_accuracy": float(((m == om) & (c == oc)).mean()),
        "quality_1to5": float(1 + 4 * q.mean()),
        "quality_regret_vs_large_1to5": float(4 * (q_large.mean() - q.mean())),
        "latency_ms": float(lat.mean()),
        "latency_regret_vs_oracle_ms": float((lat - t["latency_ms"][rows, om, oc]).mean()),
        "cost_reduction_vs_large": float(1 - cost.sum() / cost_large.sum()),
        # the model choice alone: against the large model at the same context sizes as these choices
        "cost_reduction_model_only": float(1 - cost.sum() / t["cost"][rows, lm, c].sum()),
        "large_call_share": float((m == U.shape[1] - 1).mean()),
        "utility_regret": float((U.reshape(n, -1).max(1) - u).mean()),
        # the decision (model and context) is worth at least the oracle's utility − NEAR_DELTA
        "near_optimal": float((u >= U.reshape(n, -1).max(1) - NEAR_DELTA).mean()),
    }


def curve(score: np.ndarray, ctx_small: np.ndarray, ctx_large: np.ndarray, t: dict[str, np.ndarray]
          ) -> list[tuple[float, float, float]]:
    """Sweep a 'needs the large model' score: (large-call share, mean quality, mean cost) per cut."""
    n = len(score)
    rows = np.arange(n)
    L = t["quality"].shape[1] - 1
    order = np.argsort(-score, kind="stable")
    pts = []
    for k in range(0, n + 1, max(1, n // 100)):
        large = np.zeros(n, bool)
        large[order[:k]] = True
        m = np.where(large, L, 0)
        c = np.where(large, ctx_large, ctx_small)
        pts.append((k / n, float(t["quality"][rows, m, c].mean()), float(t["cost"][rows, m, c].mean())))
    if pts[-1][0] < 1.0:
        m = np.full(n, L)
        pts.append((1.0, float(t["quality"][rows, m, ctx_large].mean()), float(t["cost"][rows, m, ctx_large].mean())))
    return pts


def apgr(pts: list[tuple[float, float, float]], q_weak: float, q_strong: float) -> dict[str, float]:
    """RouteLLM's APGR (mean performance gap recovered over call shares 0..1), the large-call share
    needed for 95% PGR and for 95% of the large model's quality, and the cost saved at that last point
    (vs always-large, on the same curve)."""
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    cost = np.array([p[2] for p in pts])
    grid = np.linspace(0, 1, 101)
    yi = np.interp(grid, x, y)
    ci = np.interp(grid, x, cost)
    gap = q_strong - q_weak
    pgr = (yi - q_weak) / gap if abs(gap) > 1e-12 else np.ones_like(yi)
    hit = np.flatnonzero(pgr >= 0.95)
    hit_q = np.flatnonzero(yi >= 0.95 * q_strong)
    at = int(hit_q[0]) if len(hit_q) else len(grid) - 1
    return {"apgr": float(pgr.mean()),
            "calls_for_95pct_pgr": float(grid[hit[0]]) if len(hit) else 1.0,
            "calls_for_95pct_of_large_quality": float(grid[at]),
            "cost_reduction_at_95pct_of_large_quality": float(1.0 - ci[at] / cost[-1]) if cost[-1] > 0 else 0.0}


def without_prior(params: Any) -> Any:
    """The same cell and heads with the query-type prior taken out: the same-run baseline the
    forward pass is timed against (machines here are shared, so absolute µs drift between runs)."""
    from ruvllm.router.fastgrnn import FastGRNNParams

    cfg = replace(params.config, prior_slice=(0, 0), prior_kind="linear")
    return FastGRNNParams(cfg, {k: v for k, v in params.arrays.items() if k != "prior_w"}, params.normalizer)


def forward_us(params: Any, fi: Any, n: int = 5000) -> dict[str, float]:
    from ruvllm.router.base import RouteInput
    from ruvllm.router.fastgrnn_router import FastGRNNRouter

    x = params.normalizer.features(fi)
    h = params.hidden0()
    plain = without_prior(params)
    for _ in range(200):
        params.step(x, h)
        plain.step(x, h)
    samples, base = [], []
    for _ in range(n):  # interleaved, so a change in machine load hits both alike
        t0 = time.perf_counter_ns()
        params.step(x, h)
        t1 = time.perf_counter_ns()
        plain.step(x, h)
        samples.append(t1 - t0)
        base.append(time.perf_counter_ns() - t1)
    router = FastGRNNRouter(params)
    ri = RouteInput(fi.query, fi.n_query_tokens, 0.5, 5, features=fi)
    full = []
    for _ in range(min(n, 2000)):
        t0 = time.perf_counter_ns()
        router.route(ri)
        full.append(time.perf_counter_ns() - t0)
    s, f = np.array(samples) / 1000, np.array(full) / 1000
    b = np.array(base) / 1000
    return {"step_p50_us": float(np.median(s)), "step_p99_us": float(np.percentile(s, 99)),
            "no_prior_step_p50_us": float(np.median(b)), "step_vs_no_prior": float(np.median(s) / np.median(b)),
            "route_with_features_p50_us": float(np.median(f)),
            "route_with_features_p99_us": float(np.percentile(f, 99))}


EMB_KNN = "kNN on raw embedding (k=3, reference)"


def _with_embeddings(data: Any, recs: list[Any]) -> Any:
    """The same rows with x = the query embedding (for the memorising reference router)."""
    from dataclasses import replace

    emb = np.stack([r.feature_input().embedding for r in recs]).astype(np.float32)
    return replace(data, x=emb)


def evaluate_all(labelled: Path, model_dir: Path, seed: int) -> dict[str, Any]:
    from ruvllm.config import RouterConfig
    from ruvllm.router.baselines import (
        FixedRouter,
        KNNRouter,
        LogisticRouter,
        QueryTypeRouter,
        RandomRouter,
        ThresholdRouter,
    )
    from ruvllm.router.cascade import CascadePolicy
    from ruvllm.router.fastgrnn import FastGRNNParams
    from ruvllm.router.history import PatternHistory, with_history
    from ruvllm.router.oracle import load_labelled
    from ruvllm.router.training import datasets_from_records, predict

    recs = load_labelled(labelled)
    contexts, context_note = prompt_contexts(recs)
    dense = FastGRNNParams.load(model_dir / "router_dense")
    comp = FastGRNNParams.load(model_dir / "router")
    norm = dense.normalizer
    by = {s: [r for r in recs if r.split == s] for s in ("train", "test_seen", "test_unseen")}
    history = PatternHistory.load(model_dir / "router")
    if history is not None:  # every router sees what the FastGRNN was trained and is evaluated on
        tc = dense.meta["train_config"]
        by = {"train": with_history(by["train"], history, leave_one_out=True, dropout=tc["history_dropout"],
                                    seed=tc["seed"]),
              **{s: with_history(by[s], history) for s in ("test_seen", "test_unseen")}}
    data = {s: datasets_from_records(rs, norm) for s, rs in by.items()}
    tabs = {s: _tables(rs) for s, rs in by.items()}
    train = data["train"]
    M = len(dense.config.models)
    qtab = tabs["train"]["quality"].astype(np.float32)
    routers: dict[str, Any] = {
        "always-small": FixedRouter(0, "always-small").fit(train),
        "always-large": FixedRouter(M - 1, "always-large").fit(train),
        # the commonest oracle model of the training split, always: what accuracy is worth on these labels
        "majority model (constant)": FixedRouter(int(np.bincount(train.y_model, minlength=M).argmax()),
                                                 "majority model").fit(train),
        "kNN (k=10)": KNNRouter(k=10).fit(train),
        "logistic regression": LogisticRouter().fit(train),
        "RouteLLM-style threshold": ThresholdRouter(quality=qtab).fit(train),
        "query-type best": QueryTypeRouter().fit(train),
        # not a deployable router: it sees the raw 384-d query embedding instead of the 128-d features,
        # so it can recognise a paraphrase of a trained question; it shows what "seen patterns" allow
        EMB_KNN: KNNRouter(k=3, name=EMB_KNN).fit(_with_embeddings(train, by["train"])),
    }
    # always-large = the large model at the context size that gives it the best mean quality on the
    # training split (not its best utility: the reference must not get cheaper as μ grows)
    routers["always-large"].ctx = int(tabs["train"]["quality"][:, M - 1, :].mean(0).argmax())
    large_ref = (M - 1, routers["always-large"].ctx)
    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    by_type: dict[str, dict[str, Any]] = {}  # split -> router -> query type -> regret and choices
    C = len(dense.config.context_bins)
    for split in ("test_seen", "test_unseen"):
        d, t = data[split], tabs[split]
        res: dict[str, dict[str, float]] = {}
        sc: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, p in (("FastGRNN dense", dense), ("FastGRNN compressed (sparse+int8)", comp)):
            out = predict(p, d)
            pm, pc = out[:, :M].argmax(1), out[:, M : M + C].argmax(1)
            res[name] = metrics(pm, pc, t, large_ref)
            probs = np.exp(out[:, :M] - out[:, :M].max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            conf = 1 / (1 + np.exp(-out[:, M + C + 2]))
            correct = pm == np.array([r.best_model for r in by[split]])
            res[name]["confidence_mean"] = float(conf.mean())
            sure = conf >= 0.5
            res[name]["accuracy_when_confident_0.5"] = float(correct[sure].mean()) if sure.any() else 0.0
            res[name]["share_confident_0.5"] = float(sure.mean())
            if history is not None:  # the questions whose pattern has a history, and the rest
                has = np.array([bool(r.features["historical_accuracy"]) for r in by[split]])
                res[name]["share_with_history"] = float(has.mean())
                for part, mask in (("with_history", has), ("without_history", ~has)):
                    res[name][f"model_accuracy_{part}"] = float(correct[mask].mean()) if mask.any() else float("nan")
            sc[name] = (probs[:, -1], pc, pc)
            if name.startswith("FastGRNN compressed"):
                by_type.setdefault(split, {})[name] = regret_by_type(pm, pc, by[split])
                for row, fields in SAFETY.items():
                    policy = CascadePolicy.from_router_config(RouterConfig(**fields))
                    if policy.quality_threshold > 0 and contexts is None:
                        continue
                    fm, first, fell = replay_safety(pm, pc, conf, by[split], policy, contexts)
                    res[row] = metrics(fm, pc, t, large_ref, first)
                    res[row]["fallback_share"] = float(fell.mean())
                    esc = np.flatnonzero(first >= 0)
                    res[row]["escalated_share"] = len(esc) / len(first)
                    # how good the check is: escalations whose second answer scored higher than the first
                    res[row]["escalations_that_raised_quality"] = (
                        float((t["quality"][esc, fm[esc], pc[esc]] > t["quality"][esc, first[esc], pc[esc]]).mean())
                        if len(esc) else float("nan"))
        d_emb = _with_embeddings(d, by[split])
        for name, r in routers.items():
            dd = d_emb if name == EMB_KNN else d
            m, c = r.decide(dd)
            res[name] = metrics(m, c, t, large_ref)
            if name == "query-type best":
                by_type.setdefault(split, {})[name] = regret_by_type(m, c, by[split])
            s = r.large_score(dd)
            if s is not None:
                ctx_s = np.full(len(d), routers["always-small"].ctx)
                ctx_l = np.full(len(d), routers["always-large"].ctx)
                if isinstance(r, KNNRouter):
                    u = r._mean_utility(dd)
                    ctx_s, ctx_l = u[:, 0].argmax(1), u[:, -1].argmax(1)
                elif isinstance(r, LogisticRouter):
                    pr = r._probs(d)
                    ctx_s, ctx_l = pr[:, 0].argmax(1), pr[:, -1].argmax(1)
                sc[name] = (s, ctx_s, ctx_l)
        if split == "test_seen":
            pm, pc, ok = pattern_lookup(by["train"], by[split])
            if ok.all():
                res[PATTERN_LOOKUP] = metrics(pm, pc, t, large_ref)
            elif ok.any():  # a labelled set whose seen questions are not all covered: say on how many
                res[f"{PATTERN_LOOKUP}, {int(ok.sum())} of {len(ok)} covered"] = metrics(
                    pm[ok], pc[ok], {k: v[ok] for k, v in t.items()}, large_ref)
        # random at the compressed FastGRNN's cost: p_large matched on this split
        target = res["FastGRNN compressed (sparse+int8)"]["large_call_share"]
        rnd = RandomRouter(p_large=target, seed=seed).fit(train)
        m, c = rnd.decide(d)
        res["random (matched cost)"] = metrics(m, c, t, large_ref)
        # oracle, for reference
        U = t["utility"]
        flat = U.reshape(len(d), -1).argmax(1)
        res["oracle"] = metrics(flat // C, flat % C, t, large_ref)
        q_weak = float(t["quality"][:, 0, routers["always-small"].ctx].mean())
        q_strong = float(t["quality"][:, M - 1, routers["always-large"].ctx].mean())
        split_curves = {}
        for name, (s, cs, cl) in sc.items():
            pts = curve(s, cs, cl, t)
            res[name].update(apgr(pts, q_weak, q_strong))
            split_curves[name] = pts
        rs_pts = curve(np.random.default_rng(seed).random(len(d)), np.full(len(d), routers["always-small"].ctx),
                       np.full(len(d), routers["always-large"].ctx), t)
        res["random (matched cost)"].update(apgr(rs_pts, q_weak, q_strong))
        split_curves["random"] = rs_pts
        results[split] = res
        curves[split] = split_curves
    fi = by["test_unseen"][0].feature_input()
    timing = {"dense": forward_us(dense, fi), "compressed": forward_us(comp, fi)}
    return {"results": results, "curves": curves, "timing": timing, "by_type": by_type,
            "always_large_context": int(dense.config.context_bins[routers["always-large"].ctx]),
            "sizes_kb": {"dense_fp32": dense.size_bytes(32) / 1024, "compressed_int8": comp.size_bytes(8) / 1024,
                         "dense_file": (model_dir / "router_dense.npz").stat().st_size / 1024,
                         "compressed_file": (model_dir / "router.npz").stat().st_size / 1024},
            "n_params": dense.n_params(), "sparsity": comp.sparsity(),
            "history": None if history is None else {
                "patterns": len(history.wins),
                "file_kb": PatternHistory.path_for(model_dir / "router").stat().st_size / 1024},
            "safety": {"confidence_threshold": RouterConfig().confidence_threshold,
                       "quality_threshold": CascadePolicy.quality_threshold,
                       "contexts": context_note if contexts is not None else "",
                       "cascade_skipped": context_note if contexts is None else ""}}


# --------------------------------------------------------------------------------------
# safety (router/cascade.py) replayed on the stored answers
# --------------------------------------------------------------------------------------

# row name → the RouterConfig fields the orchestrator would run the compressed router with
SAFETY: dict[str, dict[str, Any]] = {
    "FastGRNN compressed + fallback (default config)": {},
    "FastGRNN compressed + fallback + cascade": {"cascade": True},
    "FastGRNN compressed + cascade only": {"cascade": True, "confidence_threshold": 0.0},
}


def prompt_contexts(recs: list[Any]) -> tuple[dict[str, list[list[list[str]]]] | None, str]:
    """Per record id, model and context size: the doc texts the oracle's prompt held (``built.used``),
    which the cascade's grounding check reads. Rebuilt, not stored: the same exact retrieval over
    the same docstrings (``pipeline.build_labels``' defaults; the records whose stored hit scores
    do not come out again are counted in the caveat), packed by ``build_prompt`` with each model's
    own tokenizer (loaded vocab-only) at the bin's budget (the oracle's n_ctx of 2048 leaves every
    bin up to 1024 whole).
    Returns (contexts, a caveat or "") or (None, why they cannot be rebuilt)."""
    from ruvllm.config import Config
    from ruvllm.llm import Registry
    from ruvllm.llm.prompt import ContextItem, build_prompt
    from ruvllm.router.oracle import DocRetriever, stdlib_corpus
    from ruvllm.router.pipeline import PipelineConfig, make_embed

    if not recs or not all(r.answers for r in recs):
        return None, "the records hold no answers (synthetic labels)"
    import llama_cpp

    cfg = Config.load(None)
    reg = Registry(cfg.models_path, extra=cfg.llm.paths)
    packers = {}
    for m in recs[0].models:
        if not reg.is_installed(m):
            return None, f"model {m} is not installed (its tokenizer packs the prompt)"
        vocab = llama_cpp.Llama(model_path=str(reg.path(m)), vocab_only=True, verbose=False)
        packers[m] = (reg.spec(m).prompt_style,
                      lambda text, v=vocab: len(v.tokenize(text.encode("utf-8"), add_bos=False, special=False)))
    embed, _ = make_embed("sentence")
    plan = PipelineConfig()  # the corpus and k the labelling used by default
    retriever = DocRetriever(stdlib_corpus(plan.modules, per_module=plan.per_module), embed, k=plan.k)
    qvecs = np.asarray(embed([r.query for r in recs]), dtype=np.float32)
    out: dict[str, list[list[list[str]]]] = {}
    differ = 0
    for r, q in zip(recs, qvecs, strict=True):
        ret = retriever.search_vec(q)
        stored = r.features.get("hit_scores", [])
        differ += len(stored) != len(ret.scores) or not np.allclose(stored, ret.scores, atol=2e-3)
        ctx = [ContextItem(k, t, sc, source=k, hop=d)
               for k, t, sc, d in zip(ret.keys, ret.texts, ret.scores, ret.depths, strict=True)]
        out[r.id] = [[[c.text for c in build_prompt(r.query, ctx, style=style, context_budget=b,
                                                    count_tokens=count).used]
                      for b in r.context_bins]
                     for style, count in (packers[m] for m in r.models)]
    if differ:  # labels made before the docs lost their memory addresses (oracle._signature)
        return out, (f"the retrieval of {differ} of {len(recs)} questions does not reproduce their stored hit "
                     "scores; their prompts' docs are today's retrieval")
    return out, ""


def replay_safety(pm: np.ndarray, pc: np.ndarray, conf: np.ndarray, recs: list[Any], policy: Any,
                  contexts: dict[str, list[list[list[str]]]] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the orchestrator does around the router's decisions (pm, pc, confidence), replayed on the
    stored answers with the production functions: ``cascade.fallback`` before generation, then
    ``cascade.escalate`` on the answer as served (``clean_answer``) and, when the policy checks
    quality, its grounding in the docs the prompt held. Models are ordered small to large as in the
    records. Returns (final model, model of a failed first answer or -1, fell back)."""
    from ruvllm.llm.prompt import clean_answer
    from ruvllm.router import cascade
    from ruvllm.router.base import Decision

    models = list(recs[0].models)
    sizes = {m: float(i) for i, m in enumerate(models)}
    n = len(recs)
    final, first, fell = np.empty(n, dtype=int), np.full(n, -1), np.zeros(n, dtype=bool)
    for i, r in enumerate(recs):
        routed = Decision(models[pm[i]], r.context_bins[pc[i]], 0.0, 1.0, float(conf[i]))
        d = cascade.fallback(routed, models, sizes, policy)
        fell[i] = d.model != routed.model
        m = models.index(d.model)
        if r.answers:  # synthetic records have none: nothing to check
            answer = clean_answer(r.answers[m][pc[i]])
            quality = None
            if policy.cascade and policy.quality_threshold > 0:
                if contexts is None:
                    raise ValueError("a grounding check needs the prompts' contexts (prompt_contexts)")
                quality = cascade.check_quality(r.query, answer, contexts[r.id][m][pc[i]])
            nxt = cascade.escalate(d, answer, quality, models, sizes, policy)
            if nxt is not None:
                first[i], m = m, models.index(nxt.model)
        final[i] = m
    return final, first, fell


SWEEP_CONFIDENCE = (0.0, 0.3, 0.5)  # router.confidence_threshold (0: no fallback)
SWEEP_QUALITY = (0.0, 0.35, 0.5, 0.7)  # the cascade's quality threshold (0: cascade off)


def safety_sweep(labelled: Path, model_dir: Path) -> dict[str, Any]:
    """The orchestrator's two safety knobs over a grid, replayed (``replay_safety``) around the
    compressed FastGRNN on every split, the training split included: a setting is chosen there,
    by utility regret, and read on the test splits. None of the test figures takes part in the
    choice. Needs real labels with stored answers."""
    from ruvllm.router.cascade import CascadePolicy
    from ruvllm.router.fastgrnn import FastGRNNParams
    from ruvllm.router.history import PatternHistory
    from ruvllm.router.oracle import load_labelled
    from ruvllm.router.training import datasets_from_records, predict

    recs = load_labelled(labelled)
    contexts, why = prompt_contexts(recs)
    if contexts is None:
        return {"skipped": why}
    if PatternHistory.load(model_dir / "router") is not None:
        return {"skipped": "a router with a pattern history (its training rows' features depend on the split)"}
    comp = FastGRNNParams.load(model_dir / "router")
    M, C = len(comp.config.models), len(comp.config.context_bins)
    by = {s: [r for r in recs if r.split == s] for s in ("train", "test_seen", "test_unseen")}
    ref = _large_ref(by["train"])
    decided = {}
    for split, rs in by.items():
        out = predict(comp, datasets_from_records(rs, comp.normalizer))
        decided[split] = (out[:, :M].argmax(1), out[:, M:M + C].argmax(1), 1 / (1 + np.exp(-out[:, M + C + 2])))
    rows = []
    for conf_t in SWEEP_CONFIDENCE:
        for q_t in SWEEP_QUALITY:
            policy = CascadePolicy(confidence_threshold=conf_t, cascade=q_t > 0, quality_threshold=q_t,
                                   self_check=q_t > 0)
            row: dict[str, Any] = {"confidence_threshold": conf_t, "cascade_quality_threshold": q_t}
            for split, rs in by.items():
                pm, pc, conf = decided[split]
                fm, first, _ = replay_safety(pm, pc, conf, rs, policy, contexts)
                row[split] = metrics(fm, pc, _tables(rs), ref, first)
            rows.append(row)
    chosen = min(range(len(rows)), key=lambda i: rows[i]["train"]["utility_regret"])
    return {"rows": rows, "chosen": chosen, "rule": "lowest utility regret on the training split",
            "contexts": why}


def safety_sweep_markdown(doc: dict[str, Any]) -> list[str]:
    sw = doc.get("safety_sweep")
    if not sw:
        return []
    if "skipped" in sw:
        return ["## Safety settings swept", "", f"Skipped: {sw['skipped']}.", ""]
    lines = ["## Safety settings swept (chosen on the training split)", "",
             "`router.confidence_threshold` (0: no fallback) × the cascade's quality threshold (0: cascade off; "
             "the self-check on with it), replayed around the compressed FastGRNN on every split. The setting "
             f"marked ◀ has the {sw['rule']}; the test columns took no part in the choice. The default config "
             "is confidence 0.5, cascade off.", "",
             "| confidence | cascade below | train: utility regret | seen: utility regret | seen: quality regret | "
             "seen: latency regret | seen: cost reduction | held-out: utility regret | held-out: quality regret | "
             "held-out: latency regret | held-out: cost reduction |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(sw["rows"]):
        mark = " ◀" if i == sw["chosen"] else ""
        cells = [f"{r['train']['utility_regret']:.4f}{mark}"]
        for split in ("test_seen", "test_unseen"):
            m = r[split]
            cells += [f"{m['utility_regret']:.4f}", f"{m['quality_regret_vs_large_1to5']:+.3f}",
                      f"{m['latency_regret_vs_oracle_ms']:+.0f} ms", f"{m['cost_reduction_vs_large']:.1%}"]
        lines.append(f"| {r['confidence_threshold']:g} | {r['cascade_quality_threshold'] or 'off'} | "
                     + " | ".join(cells) + " |")
    return [*lines, ""]


def safety_markdown(doc: dict[str, Any]) -> list[str]:
    safety = doc.get("safety")
    if not safety:
        return []
    lines = ["## Safety replayed (router/cascade.py on the stored answers)", "",
             "The orchestrator does not serve the router's bare decision: a decision whose confidence is below "
             f"`router.confidence_threshold` ({safety['confidence_threshold']}) goes to the largest model "
             "(fallback), an empty answer goes once to the next larger model, and with `router.cascade = true` "
             f"so does an answer whose check (`cascade.check_quality`) scores below {safety['quality_threshold']} "
             "or one that says it does not know. The check reads a code request's code (does it call the "
             "symbol?), a signature question's parameter names against the signature its docs write, and any "
             "other answer's grounding in its prompt's docs. These rows replay those functions on the labelled "
             "answers; an escalated question pays both answers' latency and cost.", ""]
    if safety.get("cascade_skipped"):
        lines += [f"Cascade rows left out: {safety['cascade_skipped']}.", ""]
    if safety.get("contexts"):
        lines += [f"Grounding contexts: {safety['contexts']}.", ""]
    lines += ["| router | split | fell back | escalated | of which raised Q | quality regret | latency regret ms | "
              "cost reduction | utility regret |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for split, title in (("test_seen", "seen"), ("test_unseen", "held-out")):
        for name in ("FastGRNN compressed (sparse+int8)", *SAFETY):
            r = doc["results"][split].get(name)
            if r is None:
                continue
            raised = r.get("escalations_that_raised_quality", float("nan"))
            lines.append(f"| {name} | {title} | {r.get('fallback_share', 0):.1%} | {r.get('escalated_share', 0):.1%} | "
                         f"{'–' if np.isnan(raised) else f'{raised:.0%}'} | "
                         f"{r['quality_regret_vs_large_1to5']:+.3f} | {r['latency_regret_vs_oracle_ms']:+.0f} | "
                         f"{r['cost_reduction_vs_large']:.1%} | {r['utility_regret']:.4f} |")
    return [*lines, ""]


# --------------------------------------------------------------------------------------
# cost weights: μ chosen on the training split, and a sweep
# --------------------------------------------------------------------------------------

MU_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
QUALITY_REGRET_TARGET = 0.1  # the spec's bound, 1–5 scale


def _large_ref(train_recs: list[Any]) -> tuple[int, int]:
    q = _tables(train_recs)["quality"]  # (n, M, C)
    return q.shape[1] - 1, int(q[:, -1, :].mean(0).argmax())


def oracle_point(recs: list[Any], ref: tuple[int, int]) -> dict[str, float]:
    """The oracle's own operating point on ``recs``: what labels under these weights ask the router for."""
    t = _tables(recs)
    n, C = len(recs), t["utility"].shape[2]
    flat = t["utility"].reshape(n, -1).argmax(1)
    return metrics(flat // C, flat % C, t, ref)


def select_mu(train_recs: list[Any], lam: float, grid: tuple[float, ...] = MU_GRID) -> tuple[float, list[Any]]:
    """The cost weight, chosen on the training split only: the largest μ in ``grid`` at which the
    oracle's labels still keep the quality regret vs always-large within the spec's 0.1 (1–5).

    Why this rule: the spec asks for quality regret < 0.1 *and* cost reduction > 50%. μ prices cost
    in quality units; labels with a larger μ would teach the router to give up quality the spec does
    not allow, a smaller μ leaves cost savings on the table that the quality bound would allow.
    Returns (μ*, one row per μ)."""
    from ruvllm.router.oracle import relabel

    ref = _large_ref(train_recs)
    rows, best = [], grid[0]
    for mu in grid:
        pt = oracle_point([relabel(r, lam, mu) for r in train_recs], ref)
        rows.append({"mu": mu, **pt})
        if pt["quality_regret_vs_large_1to5"] <= QUALITY_REGRET_TARGET:
            best = max(best, mu)
    return best, rows


def router_metrics(checkpoint: Path, recs: list[Any], ref: tuple[int, int]) -> dict[str, float]:
    """``metrics`` of a saved FastGRNN's own choices on test ``recs`` (with its pattern history, if
    it was trained with one)."""
    from ruvllm.router.fastgrnn import FastGRNNParams
    from ruvllm.router.history import PatternHistory, with_history
    from ruvllm.router.training import datasets_from_records, predict

    params = FastGRNNParams.load(checkpoint)
    history = PatternHistory.load(checkpoint)
    if history is not None:
        recs = with_history(recs, history)
    M, C = params.config.n_models, len(params.config.context_bins)
    out = predict(params, datasets_from_records(recs, params.normalizer))
    return metrics(out[:, :M].argmax(1), out[:, M : M + C].argmax(1), _tables(recs), ref)


SEED_KEYS = ("model_accuracy", "quality_regret_vs_large_1to5", "latency_regret_vs_oracle_ms",
             "cost_reduction_vs_large", "near_optimal", "utility_regret")


def seed_spread(recs: list[Any], labelled: Path, work: Path, seeds: list[int], base: Any) -> dict[str, Any]:
    """The compressed FastGRNN trained with each seed on the same labels and split: mean, sd, min and
    max of its test metrics, so one lucky or unlucky initialisation is not the headline. ``base``: the
    training configuration (a ``TrainConfig``) but for the seed."""
    from ruvllm.router.training import train_from_oracle

    ref = _large_ref([r for r in recs if r.split == "train"])
    per_seed: dict[str, list[dict[str, float]]] = {"test_seen": [], "test_unseen": []}
    chosen: list[dict[str, Any]] = []
    for seed in seeds:
        d = work / "seeds" / f"seed_{seed}"
        rep = train_from_oracle(labelled, d, replace(base, seed=seed))
        point = {k: rep.config[k] for k in ("weight_decay", "epochs", "label_temperature")}
        # the chosen point's own CV figure (with cv_rule = "1se" it is not the grid's lowest)
        row = next((r for r in rep.cv if all(r[k] == v for k, v in point.items())), None)
        chosen.append({**point, **({"cv_utility_regret": row["cv_utility_regret"]} if row else {})})
        for split in per_seed:
            per_seed[split].append(router_metrics(d / "router", [r for r in recs if r.split == split], ref))
    out: dict[str, Any] = {"seeds": seeds, "cv_folds": base.cv_folds, "cv_group": base.cv_group,
                           "cv_rule": base.cv_rule, "feature_dropout": base.feature_dropout,
                           "type_prior": base.type_prior, "utility_prior": base.utility_prior,
                           "history": base.history, "chosen": chosen}
    for split, rows in per_seed.items():
        out[split] = {k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows])),
                          "min": float(np.min([r[k] for r in rows])), "max": float(np.max([r[k] for r in rows]))}
                      for k in SEED_KEYS}
    return out


def cv_markdown(doc: dict[str, Any]) -> list[str]:
    cv = doc["train_report"].get("cv")
    if not cv:
        return []
    c = doc["train_report"]["config"]
    lines = [f"## Model selection on the training split ({c['cv_folds']}-fold CV over "
             f"{c.get('cv_group', 'session')}s)", "",
             f"Chosen: weight decay {c['weight_decay']:g}, {c['epochs']} epochs, label temperature "
             f"{c['label_temperature']:g} (0 = one-hot labels)"
             + (", by the one-SE rule: the strongest weight decay within one standard error (over folds) of the "
                "lowest CV utility regret" if c.get("cv_rule") == "1se" else ", the lowest CV utility regret")
             + ". The test splits play no part.", "",
             "| weight decay | epochs | label τ | CV utility regret | ± SE | CV model acc |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in cv:
        se = f"{r['cv_utility_regret_se']:.4f}" if "cv_utility_regret_se" in r else "–"
        lines.append(f"| {r['weight_decay']:g} | {r['epochs']} | {r['label_temperature']:g} | "
                     f"{r['cv_utility_regret']:.4f} | {se} | {r['cv_model_accuracy']:.3f} |")
    return [*lines, ""]


def seeds_markdown(doc: dict[str, Any]) -> list[str]:
    sp = doc.get("seed_spread")
    if not sp:
        return []
    lines = [f"## Training seeds: the compressed FastGRNN retrained with seeds {sp['seeds']}", "",
             "Same labels and split; mean ± sd (min … max)."
             + (f" Each seed chose its own weight decay / epochs / label temperature by {sp['cv_folds']}-fold CV "
                f"by {sp.get('cv_group', 'session')}: "
                + ", ".join(f"{c['weight_decay']:g}/{c['epochs']}/{c['label_temperature']:g}" for c in sp["chosen"])
                + "." + (f" Their CV utility regret on the training split (the choice's own figure, no test data): "
                         f"mean {np.mean([c['cv_utility_regret'] for c in sp['chosen']]):.4f}."
                         if all("cv_utility_regret" in c for c in sp["chosen"]) else "")
                if sp.get("cv_folds") else "")
             + (f" Feature dropout {sp['feature_dropout']:g}." if sp.get("feature_dropout") else "")
             + (f" With the per-type utility table as a fixed prior (τ = {sp['utility_prior']:g})."
                if sp.get("utility_prior") else " With the per-type prior." if sp.get("type_prior") else "")
             + (" With the pattern history." if sp.get("history") else ""), "",
             "| split | model acc | quality regret | latency regret ms | cost reduction | "
             f"within {NEAR_DELTA} of best | utility regret |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    fmts = ("{:.3f}", "{:+.3f}", "{:+.0f}", "{:.1%}", "{:.3f}", "{:.4f}")
    for split in ("test_seen", "test_unseen"):
        cells = []
        for k, f in zip(SEED_KEYS, fmts, strict=True):
            v = sp[split][k]
            cells.append(f"{f.format(v['mean'])} ± {f.format(v['sd']).lstrip('+')} "
                         f"({f.format(v['min'])} … {f.format(v['max'])})")
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def sweep_mu(recs: list[Any], lam: float, mus: list[float], work: Path, base: Any) -> list[dict[str, Any]]:
    """For each μ: relabel the same measurements, train + compress the FastGRNN on the train split,
    report the oracle and the compressed router on both test splits (always-large fixed by quality).
    ``base``: the training configuration (a ``TrainConfig``)."""
    from ruvllm.router.oracle import relabel, save_labelled
    from ruvllm.router.training import train_from_oracle

    ref = _large_ref([r for r in recs if r.split == "train"])
    rows = []
    for mu in mus:
        rl = [relabel(r, lam, mu) for r in recs]
        d = work / "sweep" / f"mu_{mu:g}"
        path = save_labelled(rl, d / "labelled.jsonl")
        train_from_oracle(path, d, base)
        row: dict[str, Any] = {"mu": mu, "lambda": lam,
                               "oracle_train": oracle_point([r for r in rl if r.split == "train"], ref)}
        for split in ("test_seen", "test_unseen"):
            srecs = [r for r in rl if r.split == split]
            row[split] = {"oracle": oracle_point(srecs, ref), "fastgrnn": router_metrics(d / "router", srecs, ref)}
        rows.append(row)
        print(f"sweep μ={mu:g}: held-out acc {row['test_unseen']['fastgrnn']['model_accuracy']:.3f}", file=sys.stderr)
    return rows


def sweep_markdown(doc: dict[str, Any]) -> list[str]:
    sel = doc.get("mu_selection")
    lines: list[str] = []
    if sel:
        lines += ["## Cost weight μ (chosen on the training split)", "",
                  f"Rule: the largest μ in {list(MU_GRID)} at which the oracle's training-split labels keep quality "
                  f"regret vs always-large ≤ {QUALITY_REGRET_TARGET} (1–5); λ = {sel['lambda']}. "
                  + (f"Chosen: **μ = {sel['mu']:g}**." if sel.get("applied", True) else
                     f"The rule would choose μ = {sel['mu']:g}; this run uses "
                     f"**μ = {doc['labels']['mu_per_cost_unit']:g}** (given with --mu)."), "",
                  "| μ | oracle large calls (train) | oracle quality regret (train) | oracle cost reduction (train) |",
                  "|---:|---:|---:|---:|"]
        for r in sel["rows"]:
            lines.append(f"| {r['mu']:g} | {r['large_call_share']:.1%} | {r['quality_regret_vs_large_1to5']:+.3f} | "
                         f"{r['cost_reduction_vs_large']:.1%} |")
        lines.append("")
    if doc.get("sweep"):
        lines += ["## μ sweep: the same measurements relabelled, the router retrained at each μ", "",
                  "Oracle = the labels' own operating point (the ceiling); FastGRNN = compressed router. "
                  "Quality regret and cost reduction are against always-large at its best-quality context.", "",
                  "| μ | split | oracle large calls | oracle q regret | oracle cost red. | FastGRNN acc | "
                  "FastGRNN q regret | FastGRNN lat regret ms | FastGRNN cost red. |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in doc["sweep"]:
            for split in ("test_seen", "test_unseen"):
                o, f = r[split]["oracle"], r[split]["fastgrnn"]
                lines.append(f"| {r['mu']:g} | {split} | {o['large_call_share']:.1%} | "
                             f"{o['quality_regret_vs_large_1to5']:+.3f} | {o['cost_reduction_vs_large']:.1%} | "
                             f"{f['model_accuracy']:.3f} | {f['quality_regret_vs_large_1to5']:+.3f} | "
                             f"{f['latency_regret_vs_oracle_ms']:+.0f} | {f['cost_reduction_vs_large']:.1%} |")
        lines.append("")
    return lines


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------

COLS = [("model_accuracy", "model acc", "{:.3f}"), ("joint_accuracy", "model+ctx acc", "{:.3f}"),
        ("quality_1to5", "quality (1–5)", "{:.3f}"), ("quality_regret_vs_large_1to5", "quality regret", "{:+.3f}"),
        ("latency_regret_vs_oracle_ms", "latency regret ms", "{:+.0f}"),
        ("cost_reduction_vs_large", "cost reduction", "{:.1%}"),
        ("cost_reduction_model_only", "cost red. (model only)", "{:.1%}"),
        ("large_call_share", "large calls", "{:.1%}"),
        ("apgr", "APGR", "{:.3f}"), ("calls_for_95pct_pgr", "calls @95% PGR", "{:.0%}"),
        ("calls_for_95pct_of_large_quality", "calls @95% large q", "{:.0%}"),
        ("cost_reduction_at_95pct_of_large_quality", "cost cut @95% large q", "{:.1%}"),
        ("near_optimal", f"within {NEAR_DELTA} of best", "{:.3f}"), ("utility_regret", "utility regret", "{:.4f}")]


def targets(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, seen value, held-out value, met?) for the spec's targets, on the compressed router."""
    name = "FastGRNN compressed (sparse+int8)"
    seen, held = doc["results"]["test_seen"][name], doc["results"]["test_unseen"][name]
    tm, kb = doc["timing"]["compressed"], doc["sizes_kb"]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    rows = [
        ("decision accuracy vs oracle > 95% (seen patterns)", f"{seen['model_accuracy']:.1%}",
         f"{held['model_accuracy']:.1%}", yes(seen["model_accuracy"] > 0.95)),
        *[(f"(reference: {name}: model acc, not a target)", f"{r['model_accuracy']:.1%}", "", "")
          for name, r in doc["results"]["test_seen"].items() if name.startswith(PATTERN_LOOKUP)],
        ("quality regret vs always-large < 0.1 (1–5)", f"{seen['quality_regret_vs_large_1to5']:+.3f}",
         f"{held['quality_regret_vs_large_1to5']:+.3f}",
         yes(max(seen["quality_regret_vs_large_1to5"], held["quality_regret_vs_large_1to5"]) < 0.1)),
        ("latency regret vs oracle < 50 ms", f"{seen['latency_regret_vs_oracle_ms']:+.0f} ms",
         f"{held['latency_regret_vs_oracle_ms']:+.0f} ms",
         yes(max(seen["latency_regret_vs_oracle_ms"], held["latency_regret_vs_oracle_ms"]) < 50)),
        ("cost reduction vs always-large > 50% (router's own operating point)",
         f"{seen['cost_reduction_vs_large']:.1%}", f"{held['cost_reduction_vs_large']:.1%}",
         yes(min(seen["cost_reduction_vs_large"], held["cost_reduction_vs_large"]) > 0.5)),
        ("same, model choice only (large model at the router's context sizes)",
         f"{seen['cost_reduction_model_only']:.1%}", f"{held['cost_reduction_model_only']:.1%}",
         yes(min(seen["cost_reduction_model_only"], held["cost_reduction_model_only"]) > 0.5)),
        ("cost reduction > 50% at 95% of always-large quality (on its curve)",
         f"{seen.get('cost_reduction_at_95pct_of_large_quality', 0):.1%}",
         f"{held.get('cost_reduction_at_95pct_of_large_quality', 0):.1%}",
         yes(min(seen.get("cost_reduction_at_95pct_of_large_quality", 0),
                 held.get("cost_reduction_at_95pct_of_large_quality", 0)) > 0.5)),
        ("forward pass < 50 µs (cell + heads, p50)", f"{tm['step_p50_us']:.1f} µs", "", yes(tm["step_p50_us"] < 50)),
        ("compressed model < 10 KB (sparse int8 parameters)", f"{kb['compressed_int8']:.2f} KB",
         f"file {kb['compressed_file']:.1f} KB", yes(kb["compressed_int8"] < 10)),
    ]
    return rows


PATTERN_LOOKUP = "pattern lookup (knows symbol + type; reference)"


def pattern_of(r: Any) -> tuple[str, str]:
    """A question's pattern: its symbol and type (its wordings share it)."""
    return r.id.split(":")[0], r.query_type


def pattern_lookup(train_recs: list[Any], recs: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An estimate of the seen-pattern ceiling, as a router: for each question whose pattern (symbol + type) has
    training questions, the (model, context) with the best mean utility over those training
    paraphrases. It knows what no deployable router knows (the pattern's identity and its measured
    outcomes), but not how this phrasing will go, which the labels also depend on.
    Returns (model, context, has_pattern) per record."""
    U: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in train_recs:
        U.setdefault(pattern_of(r), []).append(np.asarray(r.utility, np.float64))
    m, c, ok = np.zeros(len(recs), int), np.zeros(len(recs), int), np.zeros(len(recs), bool)
    for i, r in enumerate(recs):
        us = U.get(pattern_of(r))
        if us:
            mean = np.mean(us, axis=0)  # (M, C)
            m[i], c[i] = np.unravel_index(int(mean.argmax()), mean.shape)
            ok[i] = True
    return m, c, ok


def cheapest_near_best(r: Any, delta: float) -> int:
    """The smallest model (models are listed small → large) whose best utility over context sizes is
    within ``delta`` of the record's best: the oracle label with near ties broken towards cost."""
    per_model = np.asarray(r.utility, np.float64).max(axis=1)  # (M,)
    return int(np.flatnonzero(per_model >= per_model.max() - delta)[0])


def paraphrase_agreement(recs: list[Any], delta: float = NEAR_DELTA) -> dict[str, float]:
    """How often two labelled questions of the same pattern (symbol + type, any split) get the same
    oracle model: the labels' own repeatability across phrasings; also with near ties (within
    ``delta``) broken towards the smaller model, to tell tie noise from answers that really differ."""
    by: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r in recs:
        by.setdefault(pattern_of(r), []).append((int(r.best_model), cheapest_near_best(r, delta)))
    same = same_tied = pairs = 0
    for labels in by.values():
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                pairs += 1
                same += labels[i][0] == labels[j][0]
                same_tied += labels[i][1] == labels[j][1]
    nan = float("nan")
    return {"pairs": pairs, "same_model": same / pairs if pairs else nan, "delta": delta,
            "same_model_ties_to_cheaper": same_tied / pairs if pairs else nan}


def regret_by_type(m: np.ndarray, c: np.ndarray, recs: list[Any]) -> dict[str, dict[str, Any]]:
    """Per query type: how many questions, the mean utility regret of the decisions (m, c), and how
    often each model was chosen, so a router's loss can be traced to the types where it is made."""
    U = np.asarray([r.utility for r in recs], np.float64)  # (n, M, C)
    regret = U.reshape(len(recs), -1).max(1) - U[np.arange(len(recs)), m, c]
    types = np.array([r.query_type for r in recs])
    return {t: {"n": int((types == t).sum()), "utility_regret": float(regret[types == t].mean()),
                "model_counts": np.bincount(m[types == t], minlength=U.shape[1]).tolist()}
            for t in sorted(set(types.tolist()))}


def by_type_markdown(doc: dict[str, Any]) -> list[str]:
    bt = doc.get("by_type")
    if not bt:
        return []
    names = {"test_seen": "seen", "test_unseen": "held-out"}
    models = doc["labels"].get("models", [])
    lines = ["## Utility regret per question type", "",
             "The compressed FastGRNN against query-type best, per split; in brackets how many questions each "
             f"sent to each model ({', '.join(models)}).", "",
             "| split | type | n | FastGRNN compressed | query-type best |", "|---|---|---:|---:|---:|"]
    for split, rows in bt.items():
        fg: dict[str, Any] = next((v for k, v in rows.items() if k.startswith("FastGRNN compressed")), {})
        qt = rows.get("query-type best", {})
        for t in sorted(fg):
            a, b = fg[t], qt.get(t)
            lines.append(f"| {names.get(split, split)} | {t} | {a['n']} | {a['utility_regret']:.3f} "
                         f"({'/'.join(map(str, a['model_counts']))}) | "
                         + (f"{b['utility_regret']:.3f} ({'/'.join(map(str, b['model_counts']))})" if b else "–")
                         + " |")
    return [*lines, ""]


def restrict_training(recs: list[Any], ids: set[str]) -> list[Any]:
    """The training rows whose ids are in ``ids`` and every test row: a smaller training set, the same tests."""
    return [r for r in recs if r.split != "train" or r.id in ids]


def modal_share(groups: list[list[int]], n_models: int) -> float:
    """The share of the grouped labels that equal their group's commonest: the most a router that gives
    every member of a group the same model can match."""
    return sum(int(np.bincount(g, minlength=n_models).max()) for g in groups) / sum(len(g) for g in groups)


def independent_share(p: np.ndarray, k: int) -> float:
    """``modal_share`` expected for groups of k labels drawn independently from the label shares ``p``
    (with k = 2 it is ≥ 50% whatever the labels)."""
    return sum(float(np.prod(p[list(combo)])) * int(np.bincount(combo, minlength=len(p)).max())
               for combo in itertools.product(range(len(p)), repeat=k)) / k


def pattern_ceiling(recs: list[Any]) -> dict[str, dict[str, float]]:
    """In-sample, per number k ≥ 2 of labelled wordings of a pattern (symbol + type, any split): the share
    of those wordings whose oracle model is the pattern's commonest (``modal_share``). No router that
    gives every wording of a pattern the same model can score more on them. Beside it, the same share
    expected if each wording's label were drawn independently from the pooled label shares (compare the
    two, not the share with 100%)."""
    by: dict[tuple[str, str], list[int]] = {}
    for r in recs:
        by.setdefault(pattern_of(r), []).append(int(r.best_model))
    if not recs:
        return {}
    n_models = len(recs[0].utility)  # utility is (models, context sizes)
    p = np.bincount([int(r.best_model) for r in recs], minlength=n_models) / len(recs)
    out = {}
    for k in sorted({len(v) for v in by.values() if len(v) >= 2}):
        groups = [v for v in by.values() if len(v) == k]
        out[str(k)] = {"patterns": len(groups), "share": modal_share(groups, n_models),
                       "if_independent": independent_share(p, k)}
    return out


def lookup_by_wordings(train_recs: list[Any], recs: list[Any]) -> dict[str, dict[str, float]]:
    """Does a second training wording make a pattern's outcomes predict a new wording better? For the
    questions of ``recs`` whose pattern has exactly two training wordings: the pattern lookup's model
    accuracy and utility regret from both (their mean utility) and from each one alone (the mean of
    the two lookups); and, for reference, the questions whose pattern has one training wording."""
    U: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in train_recs:
        U.setdefault(pattern_of(r), []).append(np.asarray(r.utility, np.float64))

    def score(u: np.ndarray, table: np.ndarray, best_model: int) -> tuple[float, float]:
        m, c = np.unravel_index(int(table.argmax()), table.shape)
        return float(m == best_model), float(u.max() - u[m, c])

    one, both, single = [], [], []
    for r in recs:
        us, u = U.get(pattern_of(r), []), np.asarray(r.utility, np.float64)
        if len(us) == 1:
            one.append(score(u, us[0], int(r.best_model)))
        elif len(us) == 2:
            both.append(score(u, (us[0] + us[1]) / 2, int(r.best_model)))
            single.append(tuple(np.mean([score(u, x, int(r.best_model)) for x in us], axis=0)))
    nan = float("nan")

    def summary(rows: list[tuple[float, float]]) -> dict[str, float]:
        a = np.asarray(rows, np.float64).reshape(-1, 2)
        return {"n": len(rows), "model_accuracy": float(a[:, 0].mean()) if len(rows) else nan,
                "utility_regret": float(a[:, 1].mean()) if len(rows) else nan}

    return {"two_wordings_both": summary(both), "two_wordings_each_alone": summary(single),
            "one_wording": summary(one)}


def near_ties(recs: list[Any], delta: float = NEAR_DELTA) -> dict[str, float]:
    """Share of questions where another model's best decision is within ``delta`` utility of the
    oracle's: where "the oracle's model" is decided by less than the measurement can tell apart."""
    gaps = []
    for r in recs:
        per_model = np.sort(np.asarray(r.utility, np.float64).max(1))[::-1]
        gaps.append(per_model[0] - per_model[1] if len(per_model) > 1 else np.inf)
    g = np.asarray(gaps)
    return {"delta": delta, "share": float((g < delta).mean()) if len(g) else float("nan"),
            "median_gap": float(np.median(g)) if len(g) else float("nan")}


def seen_coverage(recs: list[Any]) -> dict[str, int]:
    """How many test_seen questions have a training question of the same pattern (symbol + type):
    what "seen" can mean on this labelled set."""
    train = {pattern_of(r) for r in recs if r.split == "train"}
    seen = [r for r in recs if r.split == "test_seen"]
    return {"test_seen": len(seen), "with_a_training_paraphrase": sum(pattern_of(r) in train for r in seen)}


def quality_markdown(doc: dict[str, Any]) -> list[str]:
    """The quality measure per question type and, for relabelled files, the oracle's label distribution
    before and after (``ruvllm router relabel``)."""
    info, lines = doc["labels"], []
    cov = doc.get("seen_coverage")
    if cov:
        lines += [f"Seen patterns: {cov['with_a_training_paraphrase']} of {cov['test_seen']} test_seen questions "
                  "have a training question of the same symbol and type in this labelled set.", ""]
    agree = doc.get("paraphrase_agreement")
    if agree and agree["pairs"]:
        lines += [f"Label repeatability: two questions of the same pattern (symbol + type, any split) have the same "
                  f"oracle model in **{agree['same_model']:.1%}** of {agree['pairs']} pairs"
                  + (f" ({agree['same_model_ties_to_cheaper']:.1%} with near ties broken towards cost: the "
                     f"smallest model within {agree['delta']} utility of the best counts as the best)"
                     if "same_model_ties_to_cheaper" in agree else "")
                  + ". The labels differ "
                  "across phrasings of one request, so no router that sees only the question can match them all; "
                  f"the row \"{PATTERN_LOOKUP}\" shows what knowing each pattern's training outcomes buys on "
                  "the seen split (an estimate of that ceiling, not a bound).", ""]
    ceiling = doc.get("pattern_ceiling")
    if ceiling:
        lines += ["Pattern ceiling (in-sample): among a pattern's k labelled wordings, the share whose oracle model is "
                  "the pattern's commonest, the most a router that routes a pattern's wordings alike can score on "
                  "them; beside it, that share if each wording's label were drawn independently from the pooled "
                  "shares: " + "; ".join(f"k = {k}: **{c['share']:.1%}** over {c['patterns']} patterns "
                                         f"(independent: {c['if_independent']:.1%})" for k, c in ceiling.items())
                  + ".", ""]
    lw = doc.get("lookup_by_wordings")
    if lw and lw["two_wordings_both"]["n"]:
        b, e, o = lw["two_wordings_both"], lw["two_wordings_each_alone"], lw["one_wording"]
        lines += [f"Pattern lookup by training wordings (seen questions): with two training wordings (n = {b['n']}) "
                  f"it agrees with the oracle on **{b['model_accuracy']:.1%}** (utility regret "
                  f"{b['utility_regret']:.4f}) from both, {e['model_accuracy']:.1%} ({e['utility_regret']:.4f}) "
                  f"from either one alone; with one training wording (n = {o['n']}): "
                  f"{o['model_accuracy']:.1%} ({o['utility_regret']:.4f}).", ""]
    ties = doc.get("near_ties")
    if ties:
        lines += [f"Near ties: in **{ties['share']:.1%}** of the questions another model comes within "
                  f"{ties['delta']} utility of the oracle's (median gap to the runner-up model "
                  f"{ties['median_gap']:.3f}); the column \"within {ties['delta']} of best\" counts a decision "
                  "as right when it is worth at least the oracle's utility − that much.", ""]
    if info.get("quality_by_type"):
        lines += [f"Quality Q ({info.get('quality_measure', '')}, from the stored answers of "
                  f"`{info.get('relabelled_from', '?')}`): "
                  + "; ".join(f"{t}: {m}" for t, m in info["quality_by_type"].items()) + ".", ""]
    before, after = info.get("label_distribution_before"), info.get("label_distribution_after")
    if before and after:
        models = list(after["all"])
        lines += ["Oracle's best model per question type (λ, μ as labelled), before → after the per-type quality "
                  f"({info.get('labels_changed', '?')} labels changed):", "",
                  "| type | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
        for qtype, row in after.items():
            lines.append(f"| {qtype} | " + " | ".join(f"{before[qtype][m]} → {row[m]}" for m in models) + " |")
        lines.append("")
    return lines


def history_markdown(doc: dict[str, Any]) -> list[str]:
    if not doc.get("history"):
        return []
    lines = ["Pattern history, compressed FastGRNN: model accuracy on the questions whose pattern (named symbols or "
             "the best hit's symbol, + type) has training questions, and on the rest (new patterns):", "",
             "| split | share with history | acc with history | acc without |", "|---|---:|---:|---:|"]
    for split in ("test_seen", "test_unseen"):
        r = doc["results"][split]["FastGRNN compressed (sparse+int8)"]
        cells = [f"{r['share_with_history']:.1%}",
                 *("–" if np.isnan(r[k]) else f"{r[k]:.3f}"
                   for k in ("model_accuracy_with_history", "model_accuracy_without_history"))]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def training_line(doc: dict[str, Any]) -> list[str]:
    c, hist = doc["train_report"]["config"], doc.get("history")
    prior = (f"type prior: the training split's per-type utility table, fixed (τ = {c['utility_prior']:g})"
             if c.get("utility_prior") else f"type prior {'on' if c.get('type_prior') else 'off'}")
    parts = [prior,
             (f"{c['cv_folds']}-fold CV by {c.get('cv_group', 'session')}"
              + (", the one-SE rule" if c.get("cv_rule") == "1se" else "")) if c.get("cv_folds", 0) > 1 else "no CV",
             f"feature dropout {c.get('feature_dropout', 0):g}"]
    if hist:
        parts.append(f"pattern history on ({hist['patterns']} patterns of the training split, "
                     f"{hist['file_kb']:.1f} KB beside the checkpoint; none for {c['history_dropout']:.0%} of the "
                     "training rows; every router in the tables sees the same history features)")
    else:
        parts.append("pattern history off")
    return ["FastGRNN training: " + ", ".join(parts) + ".", ""]


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Router benchmark ({doc['label_note']})", "",
             f"Command: `{doc['command']}`  ", f"Date: {doc['date']}, machine: {doc['machine']}", "",
             f"Labels: **{doc['labels']['labels']}** — {doc['label_note']}.  ",
             f"Queries: {doc['labels']['n_queries']} ({doc['labels']['splits']}), docs: {doc['labels']['n_docs']}, "
             f"embedder: {doc['labels']['embedder']}, models: {', '.join(doc['labels']['models'])}, "
             f"U = Q − {doc['labels']['lambda_per_s']}·L[s] − {doc['labels']['mu_per_cost_unit']}·C."
             + (f" Training rows: only those `{doc['labels']['train_ids_from']}` also holds."
                if doc["labels"].get("train_ids_from") else ""), ""]
    lines += training_line(doc) + quality_markdown(doc)
    for split, title in (("test_seen", "Seen patterns (new paraphrases of trained questions)"),
                         ("test_unseen", "Held-out symbols (never seen in training)")):
        lines += [f"## {title}", "", "| router | " + " | ".join(c[1] for c in COLS) + " |",
                  "|---|" + "---:|" * len(COLS)]
        for name, r in doc["results"][split].items():
            cells = [fmt.format(r[k]) if k in r else "–" for k, _, fmt in COLS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += history_markdown(doc)
    if "always_large_context" in doc:
        lines += [f"Always-large = the largest model at {doc['always_large_context']} context tokens, its best mean "
                  "quality on the training split; cost reduction is against it, \"model only\" against the "
                  "largest model at each router's own context sizes.", ""]
    lines += safety_markdown(doc)
    lines += safety_sweep_markdown(doc)
    lines += by_type_markdown(doc)
    lines += cv_markdown(doc)
    lines += seeds_markdown(doc)
    lines += sweep_markdown(doc)
    tm = doc["timing"]
    lines += ["## The spec's targets (compressed FastGRNN)", "", "| target | seen | held-out | met |",
              "|---|---:|---:|---|"]
    for label, seen, held, ok in targets(doc):
        lines.append(f"| {label} | {seen} | {held} | {ok} |")
    lines += ["", "## Size, compression and speed", "",
              f"FastGRNN: {doc['n_params']} parameters; compressed sparsity {doc['sparsity']:.1%}.", "",
              "| stage | size KB | sparsity | model acc (held-out) | ctx acc | accuracy lost |",
              "|---|---:|---:|---:|---:|---:|"]
    for s in doc["train_report"]["stages"]:
        lines.append(f"| {s['stage']} | {s['size_kb']:.2f} | {s['sparsity']:.1%} | {s['model_accuracy']:.3f} | "
                     f"{s['context_accuracy']:.3f} | {s['accuracy_lost']:+.3f} |")
    lines += ["", "| forward | p50 µs | p99 µs |", "|---|---:|---:|"]
    for k in ("dense", "compressed"):
        lines.append(f"| {k}: cell + heads (numpy, one query) | {tm[k]['step_p50_us']:.1f} | "
                     f"{tm[k]['step_p99_us']:.1f} |")
        lines.append(f"| {k}: route() incl. 128-d feature extraction | {tm[k]['route_with_features_p50_us']:.1f} | "
                     f"{tm[k]['route_with_features_p99_us']:.1f} |")
    if "step_vs_no_prior" in tm["compressed"]:
        c = tm["compressed"]
        lines += ["", f"Same-run baseline: the compressed cell + heads without the query-type prior, timed "
                      f"interleaved with it: {c['no_prior_step_p50_us']:.1f} µs p50; the router takes "
                      f"**{c['step_vs_no_prior']:.2f}×** that (1.00× for a router without a prior)."]
    lines += ["", f"Training: {doc['train_report']['seconds']} s; plot: cost_quality.png.", ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, split in zip(axes, ("test_seen", "test_unseen"), strict=True):
        for name, pts in doc["curves"][split].items():
            x = [p[0] * 100 for p in pts]
            y = [1 + 4 * p[1] for p in pts]
            ax.plot(x, y, label=name, lw=2.2 if name.startswith("FastGRNN") else 1.2,
                    ls="--" if name == "random" else "-")
        o = doc["results"][split]["oracle"]
        ax.scatter([o["large_call_share"] * 100], [o["quality_1to5"]], marker="*", s=120, c="k", label="oracle",
                   zorder=5)
        ax.set_xlabel("calls to the large model (%)")
        ax.set_ylabel("mean quality (1–5)")
        ax.set_title(f"{split} — {doc['labels']['labels']} labels")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    short = ("SYNTHETIC labels: documented cost/quality model, not measured on real models"
             if doc["labels"]["labels"] == "synthetic" else "REAL labels: measured on the local GGUF models")
    fig.suptitle(f"Router cost–quality curve — {short}\n(each router keeps its own context choice; "
                 "the sweep moves its large-model threshold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", choices=("synthetic", "real"), default="synthetic")
    ap.add_argument("--limit", type=int, default=0, help="about this many questions (whole sessions); 0 = all")
    ap.add_argument("--per-module", type=int, default=8)
    ap.add_argument("--embedder", choices=("sentence", "hash"), default="sentence")
    ap.add_argument("--modules", default="", help="comma-separated stdlib modules (default: oracle.QA_MODULES)")
    ap.add_argument("--max-tokens", type=int, default=64, help="real labels: answer tokens per oracle run")
    ap.add_argument("--lam", type=float, default=None,
                    help="utility lost per second of latency (default: as labelled, 0.02 when labelling)")
    ap.add_argument("--mu", default=None,
                    help="utility lost per cost unit, or 'auto': chosen on the training split (see select_mu); "
                    "default: as labelled, 0.02 when labelling")
    ap.add_argument("--sweep-mu", default="",
                    help="comma-separated μ values: relabel, retrain and evaluate at each (the cost-weight sweep)")
    ap.add_argument("--context-bins", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv-folds", type=int, default=0,
                    help="> 1: FastGRNN weight decay, epochs, label temperature chosen by CV on the train split")
    ap.add_argument("--cv-rule", choices=("min", "1se"), default="min",
                    help="CV picks the lowest regret, or the strongest weight decay within one SE of it")
    ap.add_argument("--cv-group", choices=("session", "symbol"), default="session",
                    help="what a CV fold holds whole: sessions, or every question on a symbol (the held-out case)")
    ap.add_argument("--feature-dropout", type=float, default=0.0,
                    help="FastGRNN training: blank each feature slice but the query type with this probability")
    ap.add_argument("--type-prior", action="store_true",
                    help="FastGRNN: the heads also read the query-type features directly (a per-type prior)")
    ap.add_argument("--utility-prior", type=float, default=0.0,
                    help="FastGRNN: > 0, the type prior is the training split's per-type mean-utility table over "
                         "this temperature, held fixed (implies --type-prior)")
    ap.add_argument("--history", action="store_true",
                    help="FastGRNN: the historical-accuracy features carry each question's pattern history")
    ap.add_argument("--history-dropout", type=float, default=0.3,
                    help="with --history: the share of training rows that see no history")
    ap.add_argument("--seeds", type=int, default=0,
                    help="also retrain the compressed FastGRNN with this many seeds (from --seed): the spread")
    ap.add_argument("--safety-sweep", action="store_true",
                    help="real labels: replay the fallback and cascade thresholds over a grid, chosen on train")
    ap.add_argument("--labelled", type=Path, default=None, help="skip phase 1: an oracle JSONL made before")
    ap.add_argument("--train-ids-from", type=Path, default=None,
                    help="train only on the training rows this labelled file also holds (e.g. an earlier, "
                    "smaller run), test on every test question: what the other training rows buy")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router")
    ap.add_argument("--work", type=Path, default=ROOT / "results" / "tmp" / "router")
    args = ap.parse_args(argv)
    mu_arg = args.mu
    if mu_arg not in (None, "auto"):
        mu_arg = float(mu_arg)
    # phase 1 labels with the given weights (0.02 / 0.02 by default); 'auto' relabels afterwards
    lam_given = args.lam is not None
    args.lam = 0.02 if args.lam is None else args.lam
    args.mu = mu_arg if isinstance(mu_arg, float) else 0.02

    import torch

    torch.set_num_threads(1)
    from ruvllm.router.training import TrainConfig, train_from_oracle

    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.labelled:
        import json as _json

        labelled = args.labelled
        side = labelled.parent / "labels_info.json"
        info = _json.loads(side.read_text()) if side.exists() else {}
        if not info:
            from ruvllm.router.oracle import load_labelled

            recs = load_labelled(labelled)
            info = {"labels": recs[0].label_source, "n_queries": len(recs), "n_docs": "?", "embedder": "sentence",
                    "models": recs[0].models, "lambda_per_s": args.lam, "mu_per_cost_unit": args.mu,
                    "splits": {s: sum(r.split == s for r in recs) for s in ("train", "test_seen", "test_unseen")}}
        args.labels = info["labels"]
    else:
        labelled, info = build_labels(args, args.work)
        (args.work / "labels_info.json").write_text(json.dumps(info, indent=1) + "\n")
    from ruvllm.router.oracle import load_labelled, relabel, save_labelled

    recs = load_labelled(labelled)
    if args.train_ids_from:
        recs = restrict_training(recs, {r.id for r in load_labelled(args.train_ids_from)})
        labelled = save_labelled(recs, args.work / "labelled_train_subset.jsonl")
        info = {**info, "train_ids_from": str(args.train_ids_from), "n_queries": len(recs),
                "splits": {s: sum(r.split == s for r in recs) for s in ("train", "test_seen", "test_unseen")}}
    cost_doc: dict[str, Any] = {}
    if mu_arg is not None or lam_given:
        lam = args.lam if lam_given else float(info.get("lambda_per_s", 0.02))
        picked, rows = select_mu([r for r in recs if r.split == "train"], lam)
        cost_doc["mu_selection"] = {"lambda": lam, "mu": picked, "rows": rows, "applied": mu_arg == "auto",
                                    "rule": "largest μ whose train-split oracle keeps quality regret <= 0.1"}
        if mu_arg == "auto":
            mu = picked
        else:
            mu = float(mu_arg) if mu_arg is not None else float(info.get("mu_per_cost_unit", 0.02))
        recs = [relabel(r, lam, mu) for r in recs]
        labelled = save_labelled(recs, args.work / "labelled_weighted.jsonl")
        info = {**info, "lambda_per_s": lam, "mu_per_cost_unit": mu,
                "oracle_best_model_share": {m: float(np.mean([r.best_model == i for r in recs]))
                                            for i, m in enumerate(recs[0].models)}}
    tc = TrainConfig(seed=args.seed, cv_folds=args.cv_folds, cv_group=args.cv_group, cv_rule=args.cv_rule,
                     feature_dropout=args.feature_dropout, type_prior=args.type_prior,
                     utility_prior=args.utility_prior, history=args.history,
                     history_dropout=args.history_dropout)
    if args.sweep_mu:  # without CV: one training per μ
        mus = [float(v) for v in args.sweep_mu.split(",") if v.strip()]
        cost_doc["sweep"] = sweep_mu(recs, float(info.get("lambda_per_s", args.lam)), mus, args.work,
                                     replace(tc, cv_folds=0))
    print(f"labels: {info}", file=sys.stderr)
    report = train_from_oracle(labelled, args.work / "model", tc)
    print(f"trained in {report.seconds}s", file=sys.stderr)
    ev = evaluate_all(labelled, args.work / "model", args.seed)
    if args.safety_sweep:
        cost_doc["safety_sweep"] = safety_sweep(labelled, args.work / "model")
    if args.seeds:
        cost_doc["seed_spread"] = seed_spread(recs, labelled, args.work, list(range(args.seed, args.seed + args.seeds)),
                                              tc)
    note = ("SYNTHETIC labels from oracle.SyntheticOracle's documented cost/quality model over real embeddings "
            "and real retrieval — not measured on real models" if args.labels == "synthetic"
            else "REAL labels: every model × context size run through the local GGUF models")
    doc = {
        "command": ("nice -n 10 .venv/bin/python -m bench.router "
                    + " ".join(argv if argv is not None else sys.argv[1:])).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}, "
        f"numpy {np.__version__}",
        "labels": info, "label_note": note, "train_report": report.to_dict(), **ev, **cost_doc,
        "seen_coverage": seen_coverage(recs), "paraphrase_agreement": paraphrase_agreement(recs),
        "pattern_ceiling": pattern_ceiling(recs),
        "lookup_by_wordings": lookup_by_wordings([r for r in recs if r.split == "train"],
                                                 [r for r in recs if r.split == "test_seen"]),
        "near_ties": near_ties(recs),
    }
    (args.out / "router_bench.json").write_text(json.dumps(doc, indent=1, default=_default) + "\n")
    (args.out / "router_bench.md").write_text(markdown(doc))
    plot(doc, args.out / "cost_quality.png")
    print(markdown(doc))
    return 0


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(type(o).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
