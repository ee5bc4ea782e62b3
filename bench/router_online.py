"""Does the router's pattern history grow usefully from use? (``router.shadow``, router/shadow.py)

    nice -n 10 .venv/bin/python -m bench.router_online                 # synthetic labels, built in --work (~1 min)
    nice -n 10 .venv/bin/python -m bench.router_online \
        --labelled bench/results/router-real4-judged/labelled_real.jsonl --type-prior --cv-folds 4 \
        --shadow-judge check --llm-judge-sample 4 --out bench/results/router-online-real-check   # ~15 min

A router trained with ``--history`` knows the training split's patterns (symbol + query type).
Questions on symbols it never saw (``test_unseen``) arrive as a stream, in a seeded random order,
each pattern asked in several phrasings. The router routes each one with its table as it stands;
then, with probability r (the share ``router.shadow`` samples), the question is shadow-labelled —
with its stored oracle label (a judge that agrees with the oracle's Q), or with ``--shadow-judge
check`` as the orchestrator does (only the questions ``cascade.exact_check`` covers: requests for
code, each model's stored answer code-checked, and questions for a signature their docs write,
checked against it) — and that label is added to the table as a win. On real labels,
``--shadow-judge check`` also reports how often grounding and the cascade's check pick the
oracle's model, and
``--llm-judge-sample K`` the same for the LLM judge on K questions per type. Arms r = 0 (the baseline: the table
never grows), 0.25, 0.5 and 1, and r = 1 capped at 3 and at 1 win per pattern
(``router.shadow_per_pattern``: a pattern the table already knows that well is not labelled
again), on the same streams. The router's weights stay frozen (the online
learner is measured elsewhere, bench/learning.py): only the table changes.

Reported per arm, against the oracle of each question: model accuracy and utility regret by the
pattern's occurrence in the stream (1st, 2nd, 3rd+ time it is asked) and overall, and the extra
generations the shadow runs cost (r × (models − 1) per query). The routed decision is the bare
one (no confidence fallback), each question routed on its own (no session state).
Writes ``router_online.{json,md}`` and ``router_online.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance, write_results

ROOT = Path(__file__).resolve().parent.parent
# (r, per-pattern cap): label a question with probability r while its pattern has fewer than cap
# wins in the table (0: no cap), as router.shadow and router.shadow_per_pattern do
ARMS = ((0.0, 0), (0.25, 0), (0.5, 0), (1.0, 0), (1.0, 3), (1.0, 1))
OCCURRENCES = ("1st", "2nd", "3rd+")
JUDGES = {
    "oracle": "A shadow label here is the question's stored oracle label (gold-checked Q): the "
              "orchestrator's judge would have to agree with it for the live figures to match.",
    "check": "A shadow label here is what the orchestrator gives: only the questions the cascade checks "
             "exactly are labelled (requests for code, and questions for a signature the served prompt's docs "
             "write), each model's stored answer at the routed context size scored by that check (its code "
             "calls the symbol; its parameter names against the doc's signature), with the measured latency "
             "and cost (`check_label`); the last column says how often that is the oracle's (gold-checked) "
             "label.",
}


def label_at(r: Any, c: int, qualities: list[float]) -> int:
    """The model index ``shadow.label_runs`` picks for a record at context bin c, given each model's
    quality there and the record's measured latency and cost."""
    from ruvllm.router.shadow import ShadowRun, label_runs

    runs = [ShadowRun(m, q, float(r.latency_ms[i][c]), float(r.cost[i][c]))
            for i, (m, q) in enumerate(zip(r.models, qualities, strict=True))]
    return list(r.models).index(label_runs(runs).best)


def check_label(r: Any, c: int, served: int, contexts: dict[str, Any], *, exact_only: bool = True) -> int | None:
    """The shadow label the orchestrator gives a real record at context bin c when model ``served``
    answered: every model's stored answer there, scored by ``cascade.check_quality`` against the
    served prompt's docs (a code request's code calls its symbol; a signature question's parameter
    names match the signature a doc writes; else grounding), with the record's latency and cost,
    labelled by ``shadow.label_runs``. None for a question the cascade does not check exactly,
    which the orchestrator does not label (``exact_only``)."""
    from ruvllm.llm.prompt import clean_answer
    from ruvllm.router import cascade

    docs = contexts[r.id][served][c]
    if exact_only and cascade.exact_check(r.query, docs) == "grounding":
        return None
    return label_at(r, c, [cascade.check_quality(r.query, clean_answer(r.answers[i][c]), docs)
                           for i in range(len(r.models))])


def judge_agreement(recs: list[Any], contexts: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per question type, over every record and context bin: how often the label made from each
    model's answer scored by grounding alone, and by ``cascade.check_quality`` (against the first
    model's prompt docs), is the oracle's best model at that context bin (gold-checked Q). Chance is
    1 / models."""
    from ruvllm import judge
    from ruvllm.llm.prompt import clean_answer

    def grounding_label(r: Any, c: int) -> int:
        return label_at(r, c, [judge.grounding(clean_answer(r.answers[i][c]), contexts[r.id][i][c])
                               for i in range(len(r.models))])

    from ruvllm.router import cascade

    tally: dict[str, list[int]] = {}
    for r in recs:
        for c in range(len(r.context_bins)):
            best = int(np.argmax(np.asarray(r.utility)[:, c]))
            checked = check_label(r, c, 0, contexts, exact_only=False) == best
            exact = cascade.exact_check(r.query, contexts[r.id][0][c]) != "grounding"
            hits = [1, grounding_label(r, c) == best, checked, exact, exact and checked]
            for t in (r.query_type, "all"):
                tally[t] = [a + b for a, b in zip(tally.get(t, [0] * len(hits)), hits, strict=True)]
    # "exact": the answer sets an exact check covers (code, or a signature the docs write), and how often
    # the check's label is the oracle's on those alone
    return {t: {"n": n, "grounding": round(g / n, 3), "check": round(k / n, 3), "exact_n": e,
                "check_where_exact": round(ek / e, 3) if e else None}
            for t, (n, g, k, e, ek) in sorted(tally.items(), key=lambda kv: (kv[0] == "all", kv[0]))}


def llm_judge_agreement(recs: list[Any], judge_model: str, per_type: int, seed: int = 0, *,
                        rubric: bool = True, types: list[str] | None = None) -> dict[str, Any]:
    """The LLM judge on a seeded sample of ``per_type`` real records per question type (``types``,
    default all), at the smallest context size: how often the model whose answer it scores best
    (with latency and cost) is the gold-checked oracle's. Two ways: the orchestrator's rubric
    (``LLMJudge.score``, no reference; skipped without ``rubric``) and a yes/no verdict against the
    docs the question names (``cascade.reference_docs`` of the first model's prompt: for each
    named symbol the first doc naming it, else the first doc; ``LLMJudge.verdict``, P(yes)), the
    gold the online path does not have replaced by retrieval."""
    from bench.router import prompt_contexts
    from ruvllm.config import Config
    from ruvllm.judge_llm import LLMJudge
    from ruvllm.llm import ModelPool, Registry
    from ruvllm.llm.prompt import clean_answer
    from ruvllm.router import cascade

    rng = np.random.default_rng(seed)
    types = types or sorted({r.query_type for r in recs})
    sample = []
    for t in types:
        of_t = [r for r in recs if r.query_type == t]
        sample += [of_t[int(i)] for i in rng.choice(len(of_t), size=min(per_type, len(of_t)), replace=False)]
    contexts, why = prompt_contexts(sample)
    if contexts is None:
        raise SystemExit(f"--llm-judge-sample: {why}")
    cfg = Config.load(None)
    pool = ModelPool(Registry(cfg.models_path, extra=cfg.llm.paths), cfg.llm)
    jd = LLMJudge(pool.get(judge_model))
    rows = []
    for r in sample:
        best = int(np.argmax(np.asarray(r.utility)[:, 0]))
        answers = [clean_answer(r.answers[i][0]) for i in range(len(r.models))]
        ref = cascade.reference_docs(r.query, contexts[r.id][0][0])
        scores, verdict = [], []
        for i, a in enumerate(answers):
            if rubric:
                sc = jd.score(r.query, a, contexts[r.id][i][0]) if a.strip() else None
                scores.append(sc.quality if sc is not None else 0.0)
            v = jd.verdict(r.query, a, ref)
            verdict.append(0.0 if v is None else v)
        row = {"type": r.query_type, "oracle": best, "verdict": verdict, "verdict_label": label_at(r, 0, verdict)}
        if rubric:
            row.update(rubric=scores, rubric_label=label_at(r, 0, scores))
        rows.append(row)
    pool.close()
    out: dict[str, Any] = {"judge": judge_model, "per_type": per_type, "rubric": rubric, "stats": jd.stats()}
    for t in [*types, "all"]:
        rs = [x for x in rows if t in ("all", x["type"])]
        out[t] = {"n": len(rs), "verdict": round(float(np.mean([x["verdict_label"] == x["oracle"] for x in rs])), 3)}
        if rubric:
            out[t].update(rubric=round(float(np.mean([x["rubric_label"] == x["oracle"] for x in rs])), 3),
                          rubric_all_equal=round(float(np.mean([len(set(x["rubric"])) == 1 for x in rs])), 3))
    return out


def stream_run(router: Any, history: Any, recs: list[Any], rate: float, seed: int, cap: int = 0,
               label_of: Any = None) -> dict[str, Any]:
    """Route the stream once with a growing copy of ``history``; per-question correctness and regret.
    ``label_of(record, context bin, served model)``: the shadow label (default: the record's oracle label)."""
    from ruvllm.router.base import RouteInput
    from ruvllm.router.history import _top_hit, pattern_key

    table = history.copy()
    router.history = table
    rng = np.random.default_rng([seed, int(rate * 1000)])
    order = np.random.default_rng(seed).permutation(len(recs))  # the same order in every arm of a seed
    bins = list(router.params.config.context_bins)
    models = list(router.params.config.models)
    seen: Counter[str] = Counter()
    rows = []
    labels = agree = 0
    for i in order:
        r = recs[int(i)]
        key = pattern_key(r.query, _top_hit(r)) or r.id
        occ = min(seen[key], 2)
        seen[key] += 1
        had = bool(router.history_for(r.query, _top_hit(r)))
        d = router.route(RouteInput(r.query, 0, 0.0, 0, features=r.feature_input()))
        m, c = models.index(d.model), bins.index(d.context_tokens)
        u = np.asarray(r.utility)
        rows.append({"occ": occ, "had_history": had, "correct": m == r.best_model,
                     "regret": float(u.max() - u[m, c])})
        if rate > 0 and rng.random() < rate and (cap <= 0 or table.count(r.query, _top_hit(r)) < cap):
            label = int(r.best_model) if label_of is None else label_of(r, c, m)
            if label is not None:
                table.add(r.query, label, _top_hit(r))
                labels += 1
                agree += label == r.best_model
    return {"rows": rows, "labels": labels, "agree": agree, "patterns_added": len(table.wins) - len(history.wins)}


def summarise(runs: list[dict[str, Any]], n_models: int, rate: float, cap: int = 0) -> dict[str, Any]:
    """Mean over seeds of accuracy / utility regret, overall and by occurrence."""
    def agg(pick: Any) -> dict[str, float]:
        acc, reg, n = [], [], []
        for run in runs:
            sel = [x for x in run["rows"] if pick(x)]
            if sel:
                acc.append(np.mean([x["correct"] for x in sel]))
                reg.append(np.mean([x["regret"] for x in sel]))
                n.append(len(sel))
        return {"accuracy": round(float(np.mean(acc)), 4), "accuracy_std": round(float(np.std(acc)), 4),
                "utility_regret": round(float(np.mean(reg)), 4), "n": int(np.mean(n))} if acc else {}

    n = len(runs[0]["rows"])
    return {
        "rate": rate, "cap": cap,
        "all": agg(lambda x: True),
        "by_occurrence": {name: agg(lambda x, k=k: x["occ"] == k) for k, name in enumerate(OCCURRENCES)},
        "with_history_share": round(float(np.mean([np.mean([x["had_history"] for x in r["rows"]]) for r in runs])), 4),
        "shadow_labels": round(float(np.mean([r["labels"] for r in runs])), 1),
        "labels_agree_with_oracle": round(float(sum(r["agree"] for r in runs) / max(1, sum(r["labels"] for r in runs))),
                                          4),
        "extra_generations_per_query": round(float(np.mean([r["labels"] for r in runs])) * (n_models - 1) / n, 3),
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Pattern history grown from use (shadow labels)", "",
        f"Command: `{doc['command']}`  ", f"Date: {doc['date']}, machine: {doc['machine']}", "",
        f"Labels: **{doc['label_source']}** ({doc['labelled']}); models: {', '.join(doc['models'])}. "
        f"Router: FastGRNN (compressed) trained with the pattern history on {doc['n_train']} training questions "
        f"({doc['train_patterns']} patterns). Stream: the {doc['n_stream']} `test_unseen` questions "
        f"({doc['stream_patterns']} patterns, none in the table at the start), {doc['seeds']} seeded orders; "
        "mean over seeds (± std of accuracy).", "",
        (JUDGES[doc["shadow_judge"]] + " The router's weights are frozen; only the table grows."), "",
        "| shadow rate r | per-pattern cap | accuracy | 1st time | 2nd time | 3rd+ time | utility regret | 1st | "
        "2nd | 3rd+ | routed with a history | extra generations / query | labels = oracle's |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in doc["arms"]:
        occ = a["by_occurrence"]
        lines.append(
            f"| {a['rate']:g} | {a['cap'] or '–'} | {a['all']['accuracy']:.3f} ± {a['all']['accuracy_std']:.3f} | "
            + " | ".join(f"{occ[k]['accuracy']:.3f}" if occ[k] else "–" for k in OCCURRENCES)
            + f" | {a['all']['utility_regret']:.4f} | "
            + " | ".join(f"{occ[k]['utility_regret']:.4f}" if occ[k] else "–" for k in OCCURRENCES)
            + f" | {a['with_history_share']:.1%} | {a['extra_generations_per_query']:.2f} | "
            + (f"{a['labels_agree_with_oracle']:.0%} |" if a["shadow_labels"] else "– |"))
    occ_n = doc["arms"][0]["by_occurrence"]
    lines += ["", "Questions per occurrence: " + ", ".join(f"{k} {occ_n[k].get('n', 0)}" for k in OCCURRENCES) + ".",
              "", f"Reference, same run: `test_seen` (new phrasings of trained patterns, table from training): "
              f"accuracy {doc['seen']['accuracy']:.3f}, utility regret {doc['seen']['utility_regret']:.4f}.", ""]
    if doc.get("judge_agreement"):
        lines += ["## Can the orchestrator's judge make the label?", "",
                  "Every labelled question and context size: how often the model whose stored answer scores best "
                  "(with its latency and cost) is the gold-checked oracle's best model at that context size. "
                  f"Chance: 1 / {len(doc['models'])}.", "",
                  "| question type | answers compared | grounding | check (code: calls the symbol; "
                  "signature: vs the doc's) | answer sets an exact check covers | check, on those |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {t} | {a['n']} | {a['grounding']:.0%} | {a['check']:.0%} | {a.get('exact_n', '–')} | "
                  + (f"{a['check_where_exact']:.0%} |" if a.get("check_where_exact") is not None else "– |")
                  for t, a in doc["judge_agreement"].items()]
        lines.append("")
    lj = doc.get("llm_judge")
    if lj and lj.get("rubric", True):
        lines += [f"LLM judge ({lj['judge']}), {lj['per_type']} questions per type (seeded sample), smallest context "
                  "size: the same agreement with the oracle's best model, for the rubric the orchestrator asks "
                  "(no reference) and for a yes/no verdict against the docs the question names "
                  "(`cascade.reference_docs`).", "",
                  "| question type | questions | rubric | rubric gave all models the same score | "
                  "verdict vs the named docs |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {t} | {a['n']} | {a['rubric']:.0%} | {a['rubric_all_equal']:.0%} | {a['verdict']:.0%} |"
                  for t, a in lj.items() if isinstance(a, dict) and "n" in a]
        lines.append("")
    elif lj:
        lines += [f"LLM judge ({lj['judge']}), {lj['per_type']} questions per type (seeded sample), smallest context "
                  "size: the same agreement with the oracle's best model for a yes/no verdict against the docs the "
                  "question names (`cascade.reference_docs`; the rubric not run).", "",
                  "| question type | questions | verdict vs the named docs |", "|---|---:|---:|"]
        lines += [f"| {t} | {a['n']} | {a['verdict']:.0%} |" for t, a in lj.items() if isinstance(a, dict) and "n" in a]
        lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.arange(len(OCCURRENCES))
    for a in doc["arms"]:
        ys = [a["by_occurrence"][k].get("accuracy", np.nan) for k in OCCURRENCES]
        ax.plot(xs, ys, marker="o", label=f"r = {a['rate']:g}" + (f", cap {a['cap']}" if a["cap"] else ""))
    ax.axhline(doc["seen"]["accuracy"], color="grey", ls="--", label="trained patterns (test_seen)")
    ax.set_xticks(xs, [f"{k} time asked" for k in OCCURRENCES])
    ax.set_ylabel("decision accuracy vs oracle")
    ax.set_title(f"New patterns, history grown by shadow labels ({doc['label_source']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, default=None,
                    help="an oracle JSONL (ruvllm router train / bench.router); default: synthetic labels, "
                         "bench.router's defaults at μ = 0.02, built in --work")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router-online")
    ap.add_argument("--work", type=Path, default=ROOT / "results" / "tmp" / "router-online")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="the LLM judge's sample")
    ap.add_argument("--type-prior", action="store_true")
    ap.add_argument("--utility-prior", type=float, default=0.0,
                    help="> 0: the type prior is the per-type utility table, fixed (ruvllm router train: 0.05)")
    ap.add_argument("--cv-folds", type=int, default=0)
    ap.add_argument("--llm-judge-sample", type=int, default=0,
                    help="real labels: also run the LLM judge on this many questions per type (slow: ~10 s each)")
    ap.add_argument("--judge-model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--llm-judge-types", default="",
                    help="comma-separated question types for the LLM judge (default all)")
    ap.add_argument("--no-rubric", action="store_true",
                    help="the LLM judge's verdict only (the rubric is the slow part)")
    ap.add_argument("--shadow-judge", choices=tuple(JUDGES), default="oracle",
                    help="how a shadow label is made: the stored oracle label, or (real labels, with answers) "
                         "the orchestrator's exact check (code and signature requests), on the stored answers")
    args = ap.parse_args(argv)

    import torch

    from ruvllm.router.fastgrnn_router import FastGRNNRouter
    from ruvllm.router.oracle import load_labelled
    from ruvllm.router.training import TrainConfig, train_from_oracle

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.labelled is None:
        from ruvllm.router.pipeline import PipelineConfig, build_labels

        args.labelled = build_labels(PipelineConfig(labels="synthetic", mu=0.02), args.work).path
    tc = TrainConfig(history=True, type_prior=args.type_prior, utility_prior=args.utility_prior,
                     cv_folds=args.cv_folds)
    report = train_from_oracle(args.labelled, args.work / "router", tc)
    router = FastGRNNRouter.load(Path(report.checkpoint))
    history = router.history
    assert history is not None
    recs = load_labelled(args.labelled)
    stream = [r for r in recs if r.split == "test_unseen"]
    if not stream:
        print(f"{args.labelled} has no test_unseen questions", file=sys.stderr)
        return 2
    from ruvllm.router.history import _top_hit, pattern_key

    seen = stream_run(router, history, [r for r in recs if r.split == "test_seen"], 0.0, 0)
    label_of, agreement = None, None
    if args.shadow_judge == "check":
        from bench.router import prompt_contexts

        contexts, why = prompt_contexts(recs)  # every record's, the stream's among them
        if contexts is None:
            print(f"--shadow-judge check: {why}", file=sys.stderr)
            return 2
        label_of = partial(check_label, contexts=contexts)
        agreement = judge_agreement(recs, contexts)
    arms = [summarise([stream_run(router, history, stream, rate, s, cap, label_of) for s in range(args.seeds)],
                      len(router.params.config.models), rate, cap) for rate, cap in ARMS]
    doc = {
        **provenance("bench.router_online", argv),
        "labelled": str(args.labelled), "label_source": report.label_source, "models": report.models,
        "n_train": report.n_train, "train_patterns": len(history.wins), "n_stream": len(stream),
        "stream_patterns": len({pattern_key(r.query, _top_hit(r)) for r in stream}), "seeds": args.seeds,
        "shadow_judge": args.shadow_judge, "judge_agreement": agreement,
        "llm_judge": (llm_judge_agreement(recs, args.judge_model, args.llm_judge_sample, args.seed,
                                          rubric=not args.no_rubric,
                                          types=[t for t in args.llm_judge_types.split(",") if t] or None)
                      if args.llm_judge_sample > 0 else None),
        "train_config": report.config,
        "seen": {"accuracy": round(float(np.mean([x["correct"] for x in seen["rows"]])), 4),
                 "utility_regret": round(float(np.mean([x["regret"] for x in seen["rows"]])), 4)},
        "arms": arms, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_results(args.out, "router_online", doc, markdown, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
