"""Self-learning over a QA stream: quality and latency as memory fills, write-back + learning on vs off.

    nice -n 10 .venv/bin/python -m bench.selflearn                 # the recorded run (~40 min on 2 shared cores)
    nice -n 10 .venv/bin/python -m bench.selflearn --quick         # smoke run (a few minutes)

The stream: ``--facts`` documented stdlib functions/classes (the router's question set,
``router.oracle.stdlib_qa``, definition questions). Each fact is asked as its original question
("What does json.dumps do?"), later as two paraphrases ("What is json.dumps used for?", "Tell me
what json.dumps does."), later again as an exact repeat of the original, and for a seeded share of
facts as an exact repeat of a paraphrase. Each fact enters at a random time in the first half of
the stream and its later occurrences follow at random gaps, so new facts and recurrences are
interleaved and the recurrences come later in time. Gold answer: the docstring's first sentence.

Two arms, the same stream, the same models, temperature 0 (the rule router's choice for a
definition question), the same ingested corpus (ingested once and copied), one process:

- **on**:  ``writeback.enabled``, ``writeback.recall`` and ``learning.enabled`` (the background
  worker judges each generated answer with the grounding metric and logs it to experiences.jsonl;
  with the default rule router nothing is trained from it, see the report);
- **off**: the three switched off: memory holds only the ingested documents, every question is
  generated.

The arms are interleaved question by question (alternating which goes first), so load drift on a
shared machine hits both alike. Per question: model used, recalled or generated, latency (wall,
the response's total and its generate stage), token F1 and exact match vs gold, grounding, what
write-back did, whether a recalled answer came from a stored question about another symbol, and
whether the answer echoes a stored "Q: … A: …" pair about another symbol.

After the stream a judge model that answers nothing (``--judge-model``, default the largest
installed, qwen2.5-coder-1.5b) scores answers given the fact's canonical question and the gold
sentence as reference, so a score depends only on (fact, answer text): identical answers are judged
once. ``--judge-mode verdict`` (the default) asks "does the ANSWER say what the REFERENCE says?" and
records P(yes) from the judge's next-token distribution (``LLMJudge.verdict``, 0–1);
``--judge-mode rubric`` samples the spec's 1–5 rubric (``LLMJudge.score``, with the docstring's
first paragraph as context), which did not discriminate here (every answer 5/5). Unique answers
are judged in a seeded random order until ``--judge-budget`` seconds are spent; the coverage is
reported (an unjudged answer has no judge score; curves use the judged ones).

Writes bench/results/selflearn/selflearn.{json,md}, selflearn_quality.png and selflearn_latency.png.
Nothing is downloaded: the encoder and GGUFs must already be installed (HF_HUB_OFFLINE=1 is set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Ten modules of the router's QA set (router.oracle.QA_MODULES) with many short, distinct docstrings.
DEFAULT_MODULES: tuple[str, ...] = (
    "json", "textwrap", "shutil", "base64", "bisect", "heapq", "fnmatch", "glob", "difflib", "statistics",
)
QUICK_MODULES: tuple[str, ...] = ("json", "textwrap", "shutil", "heapq")
KINDS: tuple[str, ...] = ("first", "paraphrase", "repeat")


# --------------------------------------------------------------------------------------
# The stream (pure: no model, no memory)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    id: str  # the symbol, e.g. "json.dumps"
    module: str
    questions: tuple[str, ...]  # [0] the original, [1:] paraphrases (router.oracle TEMPLATES["definition"])
    gold: str  # the docstring's first sentence
    context: str  # the docstring's first paragraph (the judge's context)


@dataclass(frozen=True)
class StreamItem:
    position: int
    fact: str
    kind: str  # "first" | "paraphrase" | "repeat"
    variant: int  # which question of the fact (0 = the original)
    question: str
    gold: str


def make_facts(modules: Sequence[str], n_facts: int, seed: int, per_module: int = 8) -> list[Fact]:
    """``n_facts`` facts (seeded sample, spread over the modules) with all three definition phrasings."""
    from ruvllm.router.oracle import _first_paragraph, stdlib_qa, stdlib_symbols

    docs = {qual: doc for qual, _mod, doc in stdlib_symbols(modules, per_module)}
    by_symbol: dict[str, dict[int, Any]] = {}
    for it in stdlib_qa(modules, per_module=per_module, seed=seed):
        if it.query_type == "definition":
            by_symbol.setdefault(it.symbol, {})[it.paraphrase] = it
    complete = sorted(s for s, qs in by_symbol.items() if len(qs) == 3 and len(set(docs.get(s, "").split())) >= 4)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.permutation(len(complete))[: min(n_facts, len(complete))].tolist())
    facts = []
    for i in picked:
        sym = complete[i]
        qs = by_symbol[sym]
        facts.append(Fact(sym, qs[0].module, tuple(qs[p].query for p in range(3)), qs[0].gold,
                          _first_paragraph(docs[sym], words=80)))
    return facts


def build_stream(facts: Sequence[Fact], seed: int, repeat_paraphrase: float = 0.5) -> list[StreamItem]:
    """The seeded stream: per fact original → paraphrases (shuffled) → exact repeat of the original
    (→ for a ``repeat_paraphrase`` share of facts, an exact repeat of one paraphrase). A fact enters
    at a uniform time in [0, 0.5); each later occurrence follows after a gap in [0.04, 0.25)."""
    rng = np.random.default_rng(seed + 1)
    timed: list[tuple[float, int, int, str, int]] = []  # (time, fact index, order within fact, kind, variant)
    for fi, fact in enumerate(facts):
        paras = [int(v) for v in rng.permutation(np.arange(1, len(fact.questions)))]
        occ: list[tuple[str, int]] = [("first", 0), *[("paraphrase", v) for v in paras], ("repeat", 0)]
        if rng.random() < repeat_paraphrase and paras:
            occ.append(("repeat", paras[int(rng.integers(len(paras)))]))
        t = float(rng.uniform(0.0, 0.5))
        for k, (kind, variant) in enumerate(occ):
            if k:
                t += float(rng.uniform(0.04, 0.25))
            timed.append((t, fi, k, kind, variant))
    timed.sort()
    return [StreamItem(pos, facts[fi].id, kind, variant, facts[fi].questions[variant], facts[fi].gold)
            for pos, (_t, fi, _k, kind, variant) in enumerate(timed)]


# --------------------------------------------------------------------------------------
# Arithmetic over records (pure)
# --------------------------------------------------------------------------------------


def windowed(positions: Sequence[int], values: Sequence[float | None], window: int,
             agg: Callable[[list[float]], float] = statistics.fmean) -> list[tuple[float, float, int]]:
    """Non-overlapping windows of ``window`` stream positions: (centre, agg of the non-None values, n).
    Windows with no value are left out."""
    if window < 1:
        raise ValueError("window must be >= 1")
    bins: dict[int, list[float]] = {}
    for p, v in zip(positions, values, strict=True):
        if v is not None:
            bins.setdefault(p // window, []).append(float(v))
    return [(b * window + (window - 1) / 2, agg(vs), len(vs)) for b, vs in sorted(bins.items())]


def writeback_rate(actions: Sequence[str | None]) -> dict[str, Any]:
    """Write-back rate = stored (inserted + merged) / answered. Also per generated answer (recalled
    answers are never written back) and the action counts."""
    counts: dict[str, int] = {}
    for a in actions:
        key = a or "none"
        counts[key] = counts.get(key, 0) + 1
    stored = counts.get("inserted", 0) + counts.get("merged", 0)
    answered = len(actions)
    generated = answered - counts.get("recalled", 0)
    return {"stored": stored, "answered": answered, "generated": generated,
            "rate": stored / answered if answered else 0.0,
            "rate_of_generated": stored / generated if generated else 0.0, "counts": counts}


def recall_rates(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per question kind: how many were answered from memory, and how many of those came from a
    stored question about another symbol (a wrong recall)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        rs = [r for r in records if r["kind"] == kind]
        hits = [r for r in rs if r["recalled"]]
        out[kind] = {"n": len(rs), "recalled": len(hits), "rate": len(hits) / len(rs) if rs else 0.0,
                     "wrong": sum(bool(r.get("wrong_recall")) for r in hits)}
    return out


def _median(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def phase_summary(records: Sequence[dict[str, Any]], n_positions: int) -> dict[str, dict[str, Any]]:
    """Whole stream, first quarter and last quarter of positions: mean F1, mean judge, median latency."""
    q = max(1, n_positions // 4)
    phases = {"all": (0, n_positions), "early": (0, q), "late": (n_positions - q, n_positions)}
    out: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in phases.items():
        rs = [r for r in records if lo <= r["position"] < hi]
        out[name] = {
            "n": len(rs), "f1_mean": _mean([r["f1"] for r in rs]), "f1_median": _median([r["f1"] for r in rs]),
            "judge_mean": _mean([r.get("judge") for r in rs]), "judge_median": _median([r.get("judge") for r in rs]),
            "judged": sum(r.get("judge") is not None for r in rs),
            "judge_accuracy_mean": _mean([r.get("judge_accuracy") for r in rs]),
            "latency_ms_median": _median([r["wall_ms"] for r in rs]),
            "latency_ms_mean": _mean([r["wall_ms"] for r in rs]),
            "generated": sum(not r["recalled"] for r in rs),
        }
    return out


# --------------------------------------------------------------------------------------
# Running the arms (real models)
# --------------------------------------------------------------------------------------

ARMS: dict[str, dict[str, Any]] = {
    "on": {"writeback.enabled": True, "writeback.recall": True, "learning.enabled": True},
    "off": {"writeback.enabled": False, "writeback.recall": False, "learning.enabled": False},
}


def _record(rv: Any, item: StreamItem, resp: Any, wall_ms: float, arm: str) -> dict[str, Any]:
    from ruvllm import judge
    from ruvllm.memory.writeback import named_symbols, parse_qa

    wb = resp.writeback or {}
    recalled = resp.model == "memory"
    wrong_recall = False
    recalled_question = ""
    if recalled and wb.get("node_id"):
        recalled_question = parse_qa(rv.memory.get(wb["node_id"]).text)[0]
        wrong_recall = named_symbols(recalled_question) != frozenset({item.fact})
    # the recited questions: a pair is recited on one line ("Q: … A: …") or on two
    echoed = [ln[3:].split(" A: ")[0] for ln in resp.answer.splitlines() if ln.startswith("Q: ")]
    echo_other = any(named_symbols(q) != frozenset({item.fact}) for q in echoed)
    return {
        "arm": arm, "position": item.position, "fact": item.fact, "kind": item.kind, "variant": item.variant,
        "question": item.question, "answer": resp.answer, "model": resp.model, "recalled": recalled,
        "recalled_question": recalled_question, "wrong_recall": wrong_recall,
        "echo": bool(echoed), "echo_other": echo_other,
        "wall_ms": round(wall_ms, 1), "total_ms": resp.total_ms,
        "generate_ms": resp.latency_ms.get("generate", 0.0) + resp.latency_ms.get("generate_escalated", 0.0),
        "f1": round(judge.token_f1(resp.answer, item.gold), 4), "em": judge.exact_match(resp.answer, item.gold),
        "grounding": resp.quality, "writeback": wb.get("action") if arm == "on" else None,
        "writeback_reason": wb.get("reason", ""), "completion_tokens": resp.usage.get("completion_tokens", 0),
    }


def run_stream(stream: Sequence[StreamItem], modules: Sequence[str], work: Path, args: argparse.Namespace
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM

    base = {"llm.n_threads": args.threads, "llm.seed": args.seed}
    seed_dir = work / "seed"
    t0 = time.perf_counter()
    rv0 = RuvLLM(Config.load(data_dir=str(seed_dir), env=False, **base))
    embedder = rv0.embedder
    ing = rv0.ingest_stdlib(list(modules))
    rv0.close()
    info: dict[str, Any] = {"ingest": asdict(ing), "ingest_s": round(time.perf_counter() - t0, 1)}
    print(f"ingested {ing.inserted} chunks of {len(modules)} modules in {info['ingest_s']} s", flush=True)
    systems: dict[str, Any] = {}
    for arm, keys in ARMS.items():
        shutil.copytree(seed_dir, work / arm)
        rv = RuvLLM(Config.load(data_dir=str(work / arm), env=False, **base, **keys), embedder=embedder)
        for m in rv.installed_models():  # load outside the measured queries
            rv.pool.get(m)
        systems[arm] = rv
    info["models"] = systems["on"].installed_models()
    records: list[dict[str, Any]] = []
    t_stream = time.perf_counter()
    try:
        for item in stream:
            pair: dict[str, dict[str, Any]] = {}
            for arm in (("on", "off") if item.position % 2 == 0 else ("off", "on")):
                rv = systems[arm]
                t = time.perf_counter()
                resp = rv.query(item.question, max_tokens=args.max_tokens)
                pair[arm] = _record(rv, item, resp, (time.perf_counter() - t) * 1000.0, arm)
                records.append(pair[arm])
            on, off = pair["on"], pair["off"]
            print(f"[{item.position + 1:>3}/{len(stream)}] {item.kind:<10} {item.fact:<28} "
                  f"on: {on['model']:<18} {on['wall_ms']:>7.0f} ms F1 {on['f1']:.2f} wb {on['writeback']!s:<8} | "
                  f"off: {off['model']:<18} {off['wall_ms']:>7.0f} ms F1 {off['f1']:.2f}", flush=True)
    finally:
        for arm, rv in systems.items():
            info[f"{arm}_memory_nodes"] = rv.memory.count()
            info[f"{arm}_learning"] = rv.learning_stats()
            info[f"{arm}_writeback_stats"] = dict(rv.writeback.counts)
            rv.close()  # drains the learning queue
            info[f"{arm}_learning_after_close"] = rv.learning_stats()
            exp = work / arm / "experiences.jsonl"
            info[f"{arm}_experiences_logged"] = len(exp.read_text().splitlines()) if exp.exists() else 0
    info["stream_s"] = round(time.perf_counter() - t_stream, 1)
    return records, info


def judge_records(records: list[dict[str, Any]], facts: dict[str, Fact], args: argparse.Namespace
                  ) -> dict[str, Any]:
    """Score unique (fact, answer) pairs with the judge model, seeded order, within the time budget."""
    from ruvllm.config import Config
    from ruvllm.judge_llm import LLMJudge
    from ruvllm.llm import ModelPool, Registry
    from ruvllm.llm.base import SamplingParams
    from ruvllm.memory.writeback import normalise

    info: dict[str, Any] = {"model": args.judge_model, "budget_s": args.judge_budget}
    keys: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        keys.setdefault((r["fact"], normalise(r["answer"])), []).append(r)
    info["unique_answers"] = len(keys)
    cfg = Config.load(env=False, **{"llm.models": [args.judge_model], "llm.default_model": args.judge_model,
                                       "llm.n_threads": args.threads})
    registry = Registry(cfg.models_path, extra=cfg.llm.paths)
    if args.judge_budget <= 0 or not registry.is_installed(args.judge_model):
        info["skipped"] = "budget 0" if args.judge_budget <= 0 else f"{args.judge_model} is not installed"
        info["judged"] = 0
        return info
    pool = ModelPool(registry, cfg.llm)
    judge = LLMJudge(pool.get(args.judge_model), params=SamplingParams(max_tokens=120, temperature=0.0))
    info["mode"] = args.judge_mode

    def one(fact: Fact, answer: str) -> tuple[float | None, float | None]:
        """(score, accuracy criterion) on the mode's scale; an empty answer is the floor, no call."""
        if args.judge_mode == "verdict":
            v = judge.verdict(fact.questions[0], answer, fact.gold)
            return (round(v, 3) if v is not None else None), None
        if not answer.strip():
            return 1.0, 1.0
        r = judge.score(fact.questions[0], answer, [fact.context], reference=fact.gold)
        return (round(r.overall, 3), float(r.accuracy)) if r is not None else (None, None)

    rng = np.random.default_rng(args.seed + 7)
    order = [list(keys)[int(i)] for i in rng.permutation(len(keys))]
    t0 = time.perf_counter()
    # Can the judge tell right from wrong at all? The gold sentence itself vs another fact's gold sentence.
    sanity: dict[str, list[float | None]] = {"gold": [], "other_fact_gold": []}
    ids = sorted(facts)
    for i in rng.permutation(len(ids))[: min(args.judge_sanity, len(ids))]:
        fact = facts[ids[int(i)]]
        others = [f for f in ids if facts[f].module != fact.module] or [f for f in ids if f != fact.id]
        other = facts[others[int(i) % len(others)]]  # another module's fact where there is one
        for key, answer in (("gold", fact.gold), ("other_fact_gold", other.gold)):
            sanity[key].append(one(fact, answer)[0])
    info["sanity"] = {**sanity, "gold_mean": _mean(sanity["gold"]),
                      "other_fact_gold_mean": _mean(sanity["other_fact_gold"]),
                      "seconds": round(time.perf_counter() - t0, 1)}
    print(f"judge sanity: {info['sanity']}", flush=True)
    t0 = time.perf_counter()
    judged = 0
    times: list[float] = []
    try:
        for fact_id, norm in order:
            if time.perf_counter() - t0 > args.judge_budget:
                break
            group = keys[(fact_id, norm)]
            fact = facts[fact_id]
            t = time.perf_counter()
            score, accuracy = one(fact, group[0]["answer"] if norm else "")
            if norm:
                times.append(time.perf_counter() - t)
            for r in group:
                r["judge"], r["judge_accuracy"] = score, accuracy
            judged += 1
            if judged % 10 == 0:
                print(f"judged {judged}/{len(keys)} unique answers, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        pool.close()
    info.update(judged=judged, seconds=round(time.perf_counter() - t0, 1),
                median_s_per_call=round(statistics.median(times), 2) if times else None, stats=judge.stats(),
                records_with_score=sum(r.get("judge") is not None for r in records))
    return info


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def judge_scale(doc: dict[str, Any]) -> tuple[str, float]:
    """The judge score's name and the span of its scale (runs before the verdict mode were rubric)."""
    if doc.get("judge", {}).get("mode", "rubric") == "verdict":
        return "judge P(correct) (0–1)", 1.0
    return "judge overall (1–5)", 4.0


def plot(doc: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = doc["args"]["window"]
    curves = doc["curves"]
    colours = {"on": "tab:blue", "off": "tab:orange"}
    label = {"on": "write-back + recall + learning ON", "off": "all OFF"}
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for arm in ("on", "off"):
        for ax, key, ylab in ((axes[0], "f1", "token F1 vs gold"), (axes[1], "judge", judge_scale(doc)[0])):
            pts = curves[arm][key]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colours[arm], label=label[arm])
            ax.set_ylabel(ylab)
    judged = {round(p[1], 3) for arm in ("on", "off") for p in curves[arm]["judge"]}
    if len(judged) == 1:  # the two lines lie on top of each other
        axes[1].text(0.5, 0.25, f"every judged window of both arms averages {judged.pop():g}: the judge does not "
                     "discriminate (see judge sanity)", transform=axes[1].transAxes, ha="center", fontsize=8)
    on_rec = curves["on"]["recalled_share"]
    axes[2].plot([p[0] for p in on_rec], [p[1] for p in on_rec], "o-", color="tab:green",
                 label="on: answered from memory")
    on_wb = curves["on"]["writeback_share"]
    axes[2].plot([p[0] for p in on_wb], [p[1] for p in on_wb], "s--", color="tab:red", label="on: written back")
    axes[2].axhspan(0.10, 0.30, color="grey", alpha=0.15, label="write-back target 10–30%")
    axes[2].set_ylabel("share of window")
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel(f"stream position (windows of {w} questions)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Answer quality over a recurring QA stream")
    fig.tight_layout()
    fig.savefig(out / "selflearn_quality.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for arm in ("on", "off"):
        pts = curves[arm]["latency"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colours[arm], label=label[arm])
    ax.set_yscale("log")
    ax.set_ylabel("median latency per window (ms, log)")
    ax.set_xlabel(f"stream position (windows of {w} questions)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Latency over the stream (wall time of RuvLLM.query)")
    fig.tight_layout()
    fig.savefig(out / "selflearn_latency.png", dpi=110)
    plt.close(fig)


def _f(x: Any, nd: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "—"


def markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    lines = [
        "# Self-learning over a recurring QA stream", "",
        f"`{doc['command']}`", "",
        f"- when: {doc['when']}; machine: {doc['machine']}",
        f"- load average (1/5/15 min) at start {doc['load_start']}, at end {doc['load_end']}",
        f"- wall time: {doc['wall_s']:.0f} s (stream {doc['run']['stream_s']:.0f} s for both arms, "
        f"judge {doc['judge'].get('seconds', 0):.0f} s)",
        f"- corpus: {doc['run']['ingest']['inserted']} docstring chunks of {len(doc['modules'])} stdlib modules "
        f"({', '.join(doc['modules'])}); answering models {', '.join(doc['run']['models'])} (rule router, "
        f"temperature 0), {doc['args']['max_tokens']} answer tokens max, n_threads={doc['args']['threads']}",
        f"- stream: {doc['n_questions']} questions over {doc['n_facts']} facts — "
        + ", ".join(f"{k} {v}" for k, v in doc["kinds"].items()),
        "",
        "## On vs off, same run", "",
        f"| phase | arm | n | F1 mean | {judge_scale(doc)[0]} mean (judged) | judge accuracy mean | median latency ms "
        "| generated |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in ("all", "early", "late"):
        for arm in ("on", "off"):
            p = s[arm][phase]
            lines.append(f"| {phase} | {arm} | {p['n']} | {_f(p['f1_mean'])} | {_f(p['judge_mean'], 2)} "
                         f"({p['judged']}) | {_f(p.get('judge_accuracy_mean'), 2)} | "
                         f"{_f(p['latency_ms_median'], 0)} | {p['generated']} |")
    lines += ["", "early = first quarter of stream positions, late = last quarter.", "",
              "| ratio on/off | all | early | late |", "|---|---:|---:|---:|"]
    for key, name in (("f1_mean", "F1 mean"), ("judge_mean", "judge mean"), ("latency_ms_median", "median latency")):
        lines.append(f"| {name} | " + " | ".join(_ratio(s["on"][ph][key], s["off"][ph][key])
                                              for ph in ("all", "early", "late")) + " |")
    wb = doc["writeback"]
    lines += ["", "## Write-back and recall (on arm)", "",
              f"- write-back rate: **{wb['rate']:.1%}** of answered questions ({wb['stored']}/{wb['answered']}; "
              f"{wb['rate_of_generated']:.1%} of generated answers) — target 10–30%: "
              f"**{'met' if 0.10 <= wb['rate'] <= 0.30 else 'not met'}**; actions {wb['counts']}",
              "", "| kind | n | answered from memory | rate | from another symbol's question |",
              "|---|---:|---:|---:|---:|"]
    for kind, r in doc["recall"].items():
        lines.append(f"| {kind} | {r['n']} | {r['recalled']} | {r['rate']:.1%} | {r['wrong']} |")
    lines += ["", "Per kind, F1 mean on / off (judge mean on / off):", "",
              "| kind | F1 on | F1 off | judge on | judge off |", "|---|---:|---:|---:|---:|"]
    for kind, r in doc["by_kind"].items():
        lines.append(f"| {kind} | {_f(r['on']['f1'])} | {_f(r['off']['f1'])} | {_f(r['on']['judge'], 2)} | "
                     f"{_f(r['off']['judge'], 2)} |")
    pr, st = doc.get("paired", {}), doc.get("repeat_stability", {})
    if pr:
        lines += ["", "Paired by position (both arms answered the same question at the same point of the stream):", "",
                  "| where | n | F1 on | F1 off | on better | off better | same answer |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, why in (("on_recalled", "on arm answered from memory"),
                          ("both_generated", "both generated (on arm's context may hold written-back Q/A nodes)")):
            r = pr[name]
            lines.append(f"| {why} | {r['n']} | {_f(r['f1_on'])} | {_f(r['f1_off'])} | {r['on_better']} | "
                         f"{r['off_better']} | {r['same_answer']} |")
    ev = doc["evidence"]
    j = doc["judge"]
    lines += [
        "", "## Evidence about the system", "",
        f"- answers that echo a stored \"Q: … A: …\" pair: on {ev['echo']['on']}, off {ev['echo']['off']}; "
        f"of those about another symbol: on {ev['echo_other']['on']}, off {ev['echo_other']['off']}",
        f"- recalled answers whose stored question names another symbol: {ev['wrong_recalls']}",
        f"- exact repeats answered differently from the question's first asking (temperature 0): off arm "
        f"{st.get('off', {}).get('different')} of {sum(st.get('off', {}).values())}, on arm "
        f"{st.get('on', {}).get('different')} of {sum(st.get('on', {}).values())}",
        f"- recalled answers with F1 < 0.2 (a poor stored answer served again): {ev['poor_recalls']}",
        f"- generated answers admitted by the write-back gate with F1 < 0.2: {ev['poor_stored']} of "
        f"{doc['writeback']['stored']} stored",
        f"- learning (on arm): {doc['run'].get('on_learning_after_close')}; experiences logged: "
        f"{doc['run'].get('on_experiences_logged')}",
        f"- judge: {j.get('model')}, {j.get('judged', 0)} of {j.get('unique_answers', 0)} unique (fact, answer) "
        f"pairs judged in {j.get('seconds', 0)} s (budget {j.get('budget_s')} s; median "
        f"{j.get('median_s_per_call')} s per call); {j.get('records_with_score', 0)} of {2 * doc['n_questions']} "
        f"answers carry a score; {j.get('skipped', '')}",
        f"- judge sanity ({judge_scale(doc)[0]}): the gold sentence itself "
        f"{_f((j.get('sanity') or {}).get('gold_mean'), 2)}, "
        f"another fact's gold sentence {_f((j.get('sanity') or {}).get('other_fact_gold_mean'), 2)} "
        f"({(j.get('sanity') or {}).get('gold')} vs {(j.get('sanity') or {}).get('other_fact_gold')})",
        "", "Examples:", "",
    ]
    for ex in doc["examples"]:
        lines.append(f"- {ex}")
    lines += ["", "## What this shows / does not show", "", doc["reading"], "",
              "![quality](selflearn_quality.png)", "", "![latency](selflearn_latency.png)", ""]
    return "\n".join(lines)


def paired(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The two arms answer the same question at each position: compare them where the on arm recalled
    (what recall costs or gains) and where both generated (what written-back nodes in the context do)."""
    on = {r["position"]: r for r in records if r["arm"] == "on"}
    off = {r["position"]: r for r in records if r["arm"] == "off"}
    both = sorted(set(on) & set(off))
    out: dict[str, dict[str, Any]] = {}
    for name, recalled in (("on_recalled", True), ("both_generated", False)):
        ps = [p for p in both if on[p]["recalled"] == recalled]
        out[name] = {
            "n": len(ps), "f1_on": _mean([on[p]["f1"] for p in ps]), "f1_off": _mean([off[p]["f1"] for p in ps]),
            "on_better": sum(on[p]["f1"] > off[p]["f1"] + 1e-9 for p in ps),
            "off_better": sum(off[p]["f1"] > on[p]["f1"] + 1e-9 for p in ps),
            "same_answer": sum(" ".join(on[p]["answer"].split()) == " ".join(off[p]["answer"].split()) for p in ps),
        }
    return out


def repeat_stability(records: Sequence[dict[str, Any]], arm: str = "off") -> dict[str, int]:
    """Exact repeats in ``arm``: how many got a different answer from the question's first asking
    (with memory unchanged and temperature 0 the off arm should always give the same answer)."""
    first: dict[str, str] = {}
    same = differ = 0
    for r in sorted((r for r in records if r["arm"] == arm), key=lambda r: r["position"]):
        ans = " ".join(r["answer"].split())
        if r["question"] in first:
            if ans == first[r["question"]]:
                same += 1
            else:
                differ += 1
        else:
            first[r["question"]] = ans
    return {"same": same, "different": differ}


def analyse(records: list[dict[str, Any]], n: int, window: int) -> dict[str, Any]:
    by_arm = {arm: sorted((r for r in records if r["arm"] == arm), key=lambda r: r["position"]) for arm in ARMS}
    curves: dict[str, dict[str, Any]] = {}
    for arm, rs in by_arm.items():
        pos = [r["position"] for r in rs]
        curves[arm] = {
            "f1": windowed(pos, [r["f1"] for r in rs], window),
            "judge": windowed(pos, [r.get("judge") for r in rs], window),
            "latency": windowed(pos, [r["wall_ms"] for r in rs], window, agg=statistics.median),
            "recalled_share": windowed(pos, [float(r["recalled"]) for r in rs], window),
            "writeback_share": windowed(pos, [float(r["writeback"] in ("inserted", "merged")) for r in rs], window),
        }
    on = by_arm["on"]
    by_kind = {kind: {arm: {"f1": _mean([r["f1"] for r in by_arm[arm] if r["kind"] == kind]),
                            "judge": _mean([r.get("judge") for r in by_arm[arm] if r["kind"] == kind])}
                      for arm in ARMS} for kind in KINDS}
    evidence = {
        "echo": {arm: sum(r["echo"] for r in rs) for arm, rs in by_arm.items()},
        "echo_other": {arm: sum(r["echo_other"] for r in rs) for arm, rs in by_arm.items()},
        "wrong_recalls": sum(r["recalled"] and r["wrong_recall"] for r in on),
        "poor_recalls": sum(r["recalled"] and r["f1"] < 0.2 for r in on),
        "poor_stored": sum(r["writeback"] in ("inserted", "merged") and r["f1"] < 0.2 for r in on),
    }
    return {"summary": {arm: phase_summary(rs, n) for arm, rs in by_arm.items()}, "curves": curves,
            "writeback": writeback_rate([r["writeback"] for r in on]), "recall": recall_rates(on),
            "by_kind": by_kind, "evidence": evidence, "paired": paired(records),
            "repeat_stability": {arm: repeat_stability(records, arm) for arm in ARMS}}


def examples(records: list[dict[str, Any]], limit: int = 6) -> list[str]:
    out: list[str] = []
    on = [r for r in records if r["arm"] == "on"]

    def show(r: dict[str, Any], why: str) -> str:
        ans = " ".join(r["answer"].split())[:220]
        return (f"{why}: #{r['position']} {r['kind']} \"{r['question']}\" → \"{ans}\" (F1 {r['f1']:.2f}, judge "
                f"{_f(r.get('judge'), 2)}, model {r['model']}, write-back {r['writeback']})")

    for r in [r for r in on if r["echo_other"]][:2]:
        out.append(show(r, "echoes another symbol's stored Q/A"))
    for r in [r for r in on if r["recalled"] and r["wrong_recall"]][:2]:
        out.append(show(r, f"recalled from \"{r['recalled_question']}\""))
    for r in [r for r in on if r["recalled"] and r["f1"] < 0.2][:2]:
        out.append(show(r, "a poor stored answer recalled"))
    for r in [r for r in on if r["writeback"] in ("inserted", "merged") and r["f1"] < 0.2][:2]:
        out.append(show(r, "a poor answer admitted by the write-back gate"))
    return out[:limit]


def reading(doc: dict[str, Any]) -> str:
    """The "what this shows / does not show" paragraph, written from the numbers by rules the author
    checked against the run (each clause states which way the data went)."""
    s, wb, rc, ev = doc["summary"], doc["writeback"], doc["recall"], doc["evidence"]
    pr, st = doc.get("paired", {}), doc.get("repeat_stability", {})
    on_all, off_all = s["on"]["all"], s["off"]["all"]
    f1_on, f1_off = on_all["f1_mean"] or 0.0, off_all["f1_mean"] or 0.0
    trend = ("lower than" if f1_on < 0.9 * f1_off else "higher than" if f1_on > 1.1 * f1_off else "about the same as")
    parts = [
        f"**Latency**: recall is what changes over the stream. Exact repeats were answered from memory "
        f"{rc['repeat']['rate']:.0%} of the time and paraphrases {rc['paraphrase']['rate']:.0%} "
        f"({rc['repeat']['wrong'] + rc['paraphrase']['wrong']} of them from a stored question about another "
        f"symbol), so the on arm generated {on_all['generated']} of {on_all['n']} answers and its median latency "
        f"was {_ratio(on_all['latency_ms_median'], off_all['latency_ms_median'])} the off arm's "
        f"({_ratio(s['on']['late']['latency_ms_median'], s['off']['late']['latency_ms_median'])} in the last "
        f"quarter, where it generated {s['on']['late']['generated']} of {s['on']['late']['n']}).",
        f"**Quality**: token F1 on the on arm was {trend} the off arm's ({_f(f1_on)} vs {_f(f1_off)}, "
        f"{_ratio(f1_on, f1_off)}; last quarter {_f(s['on']['late']['f1_mean'])} vs "
        f"{_f(s['off']['late']['f1_mean'])}, {_ratio(s['on']['late']['f1_mean'], s['off']['late']['f1_mean'])}); "
        f"the judge's mean P(correct) {_f(on_all['judge_mean'], 2)} vs {_f(off_all['judge_mean'], 2)}.",
    ]
    if pr:
        r, g = pr["on_recalled"], pr["both_generated"]
        recall_says = ("a stored answer served again scored better than the fresh one more often than worse"
                       if r["on_better"] > r["off_better"] else
                       "recall freezes whatever was stored first, and a fresh answer was as good or better")
        parts.append(
            f"Where the on arm recalled, the off arm's fresh answer to the same question scored F1 {_f(r['f1_off'])} "
            f"against the recalled {_f(r['f1_on'])} (off better {r['off_better']}, on better {r['on_better']} of "
            f"{r['n']}): {recall_says}. Where both generated, on {_f(g['f1_on'])} vs off {_f(g['f1_off'])} "
            f"({g['same_answer']} of {g['n']} the same answer); {ev['echo']['on']} on-arm answers echo a stored "
            f"\"Q: … A: …\" pair ({ev['echo_other']['on']} about another symbol; off arm: {ev['echo']['off']}).")
    parts.append(
        f"**Write-back rate** {wb['rate']:.0%} of answered questions, {wb['rate_of_generated']:.0%} of generated "
        f"ones, against the 10–30% target ({'met' if 0.10 <= wb['rate'] <= 0.30 else 'not met'}; the share of "
        f"answered questions falls only because recalled ones are never written): the gate is grounding ≥ 0.5 "
        f"plus the off-topic and bare-heading checks, and a small model that copies its context scores high "
        f"grounding whether or not it answers — {ev['poor_stored']} of {wb['stored']} stored answers have "
        f"F1 < 0.2.")
    san = doc.get("judge", {}).get("sanity") or {}
    if san.get("gold_mean") is not None and san.get("other_fact_gold_mean") is not None:
        if san["other_fact_gold_mean"] >= san["gold_mean"] - judge_scale(doc)[1] / 8:
            parts.append(
                f"**The judge does not discriminate**: {doc['judge']['model']} gave another fact's gold sentence "
                f"{_f(san['other_fact_gold_mean'], 2)} and the right one {_f(san['gold_mean'], 2)}, so its scores "
                f"here are not evidence of quality; token F1 is the measure to read.")
        else:
            parts.append(f"The judge separates right from wrong (gold {_f(san['gold_mean'], 2)} vs another fact's "
                         f"gold {_f(san['other_fact_gold_mean'], 2)}).")
    if st.get("off"):
        parts.append(f"Noise floor: with memory unchanged and temperature 0, the off arm answered "
                     f"{st['off']['different']} of {sum(st['off'].values())} exact repeats differently from the "
                     f"first asking, so single-question differences between the arms are partly noise.")
    parts.append(
        "Learning was on in the on arm, but with the default rule router the learner only grades (grounding) and "
        "logs experiences — router updates need router.kind = \"fastgrnn\" — so it cannot change an answer here. "
        "Not shown: other seeds, other question types than definitions, the 0.5B or 1.5B as the answering model "
        "(the rule router sent every question to gemma3-270m), or an unshared machine (absolute latencies are "
        "inflated; the arms were interleaved question by question, so the ratios are fair).")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=36, help="distinct facts (each asked 4-5 times)")
    ap.add_argument("--modules", default=",".join(DEFAULT_MODULES), help="stdlib modules to ingest and ask about")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1, help="llm.n_threads for every model")
    ap.add_argument("--judge-model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--judge-mode", choices=("verdict", "rubric"), default="verdict",
                    help="verdict: P(yes) of a reference-based yes/no question; rubric: sampled 1-5 rubric")
    ap.add_argument("--judge-budget", type=float, default=720.0, help="seconds for judging after the stream")
    ap.add_argument("--judge-sanity", type=int, default=4,
                    help="facts whose gold sentence and another fact's gold sentence the judge scores first")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeat-paraphrase", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 modules, 6 facts, short answers")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "selflearn"))
    ap.add_argument("--keep", action="store_true", help="keep the arms' data dirs (printed)")
    ap.add_argument("--render", default="", help="re-write the report and plots from this selflearn.json (no run)")
    ap.add_argument("--reading-file", default="", help="with --render: replace the 'what this shows' paragraph")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bench must never download anything
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    raw = list(argv if argv is not None else sys.argv[1:])
    args = ap.parse_args(raw)
    if args.render:
        done: dict[str, Any] = json.loads(Path(args.render).read_text())
        done.update(analyse(done["records"], done["n_questions"], done["args"]["window"]))  # this code's metrics
        done["examples"] = examples(done["records"])
        done["reading"] = reading(done)
        if args.reading_file:
            done["reading"] = Path(args.reading_file).read_text().strip()
        where = Path(args.render).parent
        (where / "selflearn.json").write_text(json.dumps(done, indent=1, default=str) + "\n")
        (where / "selflearn.md").write_text(markdown(done))
        plot(done, where)
        return done
    if args.quick:
        args.facts, args.max_tokens, args.window = min(args.facts, 6), min(args.max_tokens, 24), min(args.window, 6)
        args.judge_budget = min(args.judge_budget, 60.0)
        if args.modules == ",".join(DEFAULT_MODULES):
            args.modules = ",".join(QUICK_MODULES)
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    t_start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    import torch

    torch.set_num_threads(1)  # the learner's worker: threads only add contention (docs/learning.md)
    facts = make_facts(modules, args.facts, args.seed)
    stream = build_stream(facts, args.seed, args.repeat_paraphrase)
    kinds = {k: sum(it.kind == k for it in stream) for k in KINDS}
    print(f"{len(facts)} facts, {len(stream)} questions: {kinds}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ruvllm-selflearn-"))
    try:
        records, run_info = run_stream(stream, modules, work, args)
    finally:
        if args.keep:
            print(f"data dirs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selflearn.records.partial.json").write_text(json.dumps(records, indent=1) + "\n")  # before judging
    judge_info = judge_records(records, {f.id: f for f in facts}, args)
    doc: dict[str, Any] = {
        "command": " ".join(["python -m bench.selflearn", *raw]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, python "
                   f"{platform.python_version()}",
        "load_start": load_start, "load_end": [round(x, 2) for x in os.getloadavg()],
        "args": vars(args), "modules": modules, "n_facts": len(facts), "n_questions": len(stream), "kinds": kinds,
        "run": run_info, "judge": judge_info,
    }
    doc.update(analyse(records, len(stream), args.window))
    doc["examples"] = examples(records)
    doc["reading"] = reading(doc)
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    doc["records"] = records
    (out / "selflearn.records.partial.json").unlink(missing_ok=True)
    (out / "selflearn.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "selflearn.md").write_text(markdown(doc))
    plot(doc, out)
    s = doc["summary"]
    print(f"done in {doc['wall_s']:.0f} s; F1 on/off {_f(s['on']['all']['f1_mean'])}/{_f(s['off']['all']['f1_mean'])}, "
          f"median latency on/off {_f(s['on']['all']['latency_ms_median'], 0)}/"
          f"{_f(s['off']['all']['latency_ms_median'], 0)} ms, write-back rate {doc['writeback']['rate']:.1%}; "
          f"wrote {out}", flush=True)
    return doc


if __name__ == "__main__":
    main()
