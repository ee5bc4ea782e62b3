"""How much of a real oracle label is the draw, and how much the wording?

The real labels (``ruvllm router train --labels real``) answer each question once per model, greedily.
Two wordings of one pattern (symbol + question type) get the same oracle model in only about 60% of
pairs (``bench.router``'s "label repeatability"), which caps the accuracy any router can reach on seen
patterns. Two explanations predict different cures:

* the wording decides the outcome (a model answers one phrasing well and another badly): then no
  amount of sampling changes the label, and a router can only learn the pattern's average;
* the outcome is a draw (a small change of prompt moves a greedy decode like a change of seed
  would): then labels averaged over several sampled answers per question are stable, and the
  ceiling rises with the number of samples.

This bench answers the same questions again, S times at temperature T with S seeds (and once greedily,
to check the stored answers reproduce), on patterns with three labelled wordings, and compares how
often two draws of one wording agree with how often two wordings agree. Only the types with an exact
quality measure run (code: executed; signature: parameter names; howto: names the gold function), so
no judge stands between the answer and its label. One context size, so the label is the model.

    python -m bench.label_noise --labelled bench/results/router-real5-judged/labelled_real.jsonl \\
        --config models2.toml --out bench/results/label-noise --work <dir>

Every pass is saved as it goes (``<work>/<pass>.jsonl``, a normal labelled file); a rerun resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance, write_results
from bench.router import independent_share, modal_share, pattern_of
from ruvllm.router.oracle import utilities

EXACT_TYPES = ("code", "signature", "howto")


def select_patterns(recs: Sequence[Any], types: Sequence[str], per_type: int, seed: int = 0) -> list[list[Any]]:
    """``per_type`` patterns of each type among those with exactly three labelled wordings, drawn with
    ``seed``; each pattern's records in id order."""
    by: dict[tuple[str, str], list[Any]] = {}
    for r in recs:
        by.setdefault(pattern_of(r), []).append(r)
    rng = np.random.default_rng(seed)
    out: list[list[Any]] = []
    for t in types:
        keys = sorted(k for k, v in by.items() if k[1] == t and len(v) == 3)
        for i in rng.permutation(len(keys))[:per_type]:
            out.append(sorted(by[keys[int(i)]], key=lambda r: r.id))
    return out


def _modal_share(labels: np.ndarray, groups: Sequence[Sequence[int]], n_models: int) -> float:
    return modal_share([labels[list(g)].tolist() for g in groups], n_models)


def _pair_agreement(labels: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    pairs = [labels[i] == labels[j] for g in groups for i, j in itertools.combinations(g, 2)]
    return float(np.mean(pairs)) if pairs else float("nan")


def _loo_lookup(U: np.ndarray, groups: Sequence[Sequence[int]]) -> tuple[float, float]:
    """Each wording's label predicted from its pattern's other wordings (the best mean utility over them):
    accuracy against its own label and utility regret, over all grouped questions."""
    acc, reg = [], []
    for g in groups:
        for i in g:
            others = [j for j in g if j != i]
            m = int(U[others].mean(axis=0).argmax())
            acc.append(m == int(U[i].argmax()))
            reg.append(float(U[i].max() - U[i, m]))
    return float(np.mean(acc)), float(np.mean(reg))


def analyse(U_draws: np.ndarray, groups: Sequence[Sequence[int]], U_greedy: np.ndarray | None = None,
            tie: float = 0.02) -> dict[str, Any]:
    """``U_draws``: (S draws, n questions, M models); ``groups``: each pattern's question indices.

    * ``draw_agreement``: two draws of one question pick the same model (all pairs of draws);
    * ``wording_agreement``: two wordings of one pattern pick the same model, within one draw;
    * ``mean_wording_agreement``: the same for labels from the mean utility over all S draws;
    * ``ceiling_by_draws[k]``: the modal share (the pattern ceiling) of labels from the mean of k draws,
      averaged over every k-subset of the draws; ``if_independent``: the same ceiling expected if each
      question's label were drawn from the pooled label shares;
    * ``lookup``: each wording's mean-of-S label predicted from its pattern's other two (best mean
      utility over them), and the same from single draws (averaged over draws);
    * ``draw_vs_mean``: a single draw's label equals the mean-of-S label;
    * ``near_tie``: the mean-of-S runner-up model is within ``tie`` utility of the best."""
    S, n, M = U_draws.shape
    single = U_draws.argmax(axis=2)  # (S, n)
    mean_U = U_draws.mean(axis=0)
    mean_lab = mean_U.argmax(axis=1)
    out: dict[str, Any] = {"draws": S, "questions": n, "patterns": len(groups)}
    out["draw_agreement"] = float(np.mean([single[a, i] == single[b, i] for i in range(n)
                                           for a, b in itertools.combinations(range(S), 2)])) if S > 1 else None
    out["wording_agreement"] = float(np.mean([_pair_agreement(single[s], groups) for s in range(S)]))
    out["mean_wording_agreement"] = _pair_agreement(mean_lab, groups)
    ceil: dict[str, float] = {}
    for k in range(1, S + 1):
        ceil[str(k)] = float(np.mean([_modal_share(U_draws[list(c)].mean(axis=0).argmax(axis=1), groups, M)
                                      for c in itertools.combinations(range(S), k)]))
    out["ceiling_by_draws"] = ceil
    p = np.bincount(mean_lab, minlength=M) / n
    sizes = sorted({len(g) for g in groups})
    out["if_independent"] = {str(k): independent_share(p, k) for k in sizes}
    acc_mean, reg_mean = _loo_lookup(mean_U, groups)
    single_lookup = [_loo_lookup(U_draws[s], groups) for s in range(S)]
    out["lookup"] = {"mean_of_draws": {"accuracy": acc_mean, "utility_regret": reg_mean},
                     "single_draw": {"accuracy": float(np.mean([a for a, _ in single_lookup])),
                                     "utility_regret": float(np.mean([r for _, r in single_lookup]))}}
    out["draw_vs_mean"] = float(np.mean(single == mean_lab[None, :]))
    top2 = np.sort(mean_U, axis=1)[:, -2:]
    out["near_tie"] = float(np.mean(top2[:, 1] - top2[:, 0] < tie))
    out["label_shares"] = {"mean_of_draws": np.bincount(mean_lab, minlength=M).tolist(),
                           "single_draws": np.bincount(single.ravel(), minlength=M).tolist()}
    if U_greedy is not None:
        g = U_greedy.argmax(axis=1)
        acc_g, reg_g = _loo_lookup(U_greedy, groups)
        out["greedy"] = {"wording_agreement": _pair_agreement(g, groups), "ceiling": _modal_share(g, groups, M),
                         "lookup": {"accuracy": acc_g, "utility_regret": reg_g},
                         "agrees_with_mean_of_draws": float(np.mean(g == mean_lab)),
                         "label_shares": np.bincount(g, minlength=M).tolist()}
    return out


# --------------------------------------------------------------------------------------
# the real runs
# --------------------------------------------------------------------------------------


def _items_for(records: Sequence[Any], info: dict[str, Any]) -> list[Any]:
    """The question set's own items (gold, symbol, …) for these records, as the labelling made them."""
    from ruvllm.router.pipeline import PipelineConfig, select_items

    c = info.get("config", {})
    plan = PipelineConfig(labels="real", modules=tuple(c.get("modules", PipelineConfig.modules)),
                          per_module=int(c.get("per_module", 8)))
    by_id = {it.id: it for it in select_items(plan)}
    missing = [r.id for r in records if r.id not in by_id]
    if missing:
        raise SystemExit(f"{len(missing)} records are not in today's question set (e.g. {missing[0]})")
    return [by_id[r.id] for r in records]


def run_passes(items: Sequence[Any], passes: Sequence[tuple[str, float, int]], work: Path, *, config: Path | None,
               context: int, max_tokens: int, max_tokens_code: int, top_p: float, lam: float, mu: float,
               embedder: str, modules: Sequence[str], per_module: int, models: Sequence[str]
               ) -> dict[str, list[Any]]:
    """Label ``items`` once per pass (name, temperature, seed) at one context size; resumable.
    ``models``: the labelled file's, in its order, which the configured models must match."""
    from ruvllm.router.oracle import DocRetriever, OracleConfig, label_with_models, load_labelled, stdlib_corpus
    from ruvllm.router.pipeline import make_embed, real_generators

    gens, params_b = real_generators(config=config)
    if list(gens) != list(models):
        raise SystemExit(f"the configured, installed models {list(gens)} are not the labelled ones {list(models)}")
    embed, _ = make_embed(embedder)
    retriever = DocRetriever(stdlib_corpus(modules, per_module=per_module), embed)
    qvecs = np.asarray(embed([it.query for it in items]), np.float32)
    cache = {it.query: qvecs[i] for i, it in enumerate(items)}
    out: dict[str, list[Any]] = {}
    work.mkdir(parents=True, exist_ok=True)
    for name, temp, seed in passes:
        path = work / f"{name}.jsonl"
        done = {r.id: r for r in load_labelled(path)} if path.exists() else {}
        todo = [it for it in items if it.id not in done]
        t0 = time.perf_counter()
        for start in range(0, len(todo), 6):
            cfg = OracleConfig(context_bins=(context,), lam=lam, mu=mu, max_tokens=max_tokens,
                               max_tokens_code=max_tokens_code, shuffle_seed=seed, temperature=temp,
                               top_p=top_p if temp > 0 else 1.0, sample_seed=seed)
            chunk = label_with_models(todo[start:start + 6], gens, params_b,
                                      lambda q: retriever.search_vec(cache[q]), cfg)
            with path.open("a") as fh:
                fh.writelines(json.dumps(asdict(r), sort_keys=True) + "\n" for r in chunk)
            done.update({r.id: r for r in chunk})
            print(f"{name}: {len(done)}/{len(items)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        out[name] = [done[it.id] for it in items]
    return out


def _arrays(recs: Sequence[Any], col: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.array([np.asarray(r.quality)[:, col] for r in recs])
    lat = np.array([np.asarray(r.latency_ms)[:, col] for r in recs])
    cost = np.array([np.asarray(r.cost)[:, col] for r in recs])
    return q, lat, cost


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        "# Label noise: the draw or the wording? (REAL models)", "",
        f"Command: `{m['command']}`  ",
        f"Date: {m['date']}, machine: {m['machine']}", "",
        f"{m['patterns']} patterns with three labelled wordings ({', '.join(m['types'])}; exact quality measures, "
        f"no judge), {m['questions']} questions, models {', '.join(m['models'])}, context {m['context']} tokens, "
        f"{m['draws']} draws at temperature {m['temperature']} (top-p {m['top_p']}, seeds 0…{m['draws'] - 1}) and "
        f"one greedy pass. U = Q − λ·L[s] − μ·C with μ = {m['mu']}.", "",
        f"Greedy answers reproduce the stored labelling's answers at this context size on "
        f"**{m['greedy_reproduced']}** of {m['questions'] * len(m['models'])} (question, model) runs; their "
        f"labels agree with the stored labels on {_fmt(m['greedy_labels_reproduced'])} of questions "
        f"(λ = {m['lams'][0]}).",
        "",
    ]
    for lam, r in res["by_lambda"].items():
        g = r.get("greedy", {})
        lines += [
            f"## λ = {lam} per second", "",
            "| measure | greedy (one decode) | one draw at T | mean of all draws |", "|---|---:|---:|---:|",
            f"| two draws of one question agree | – | {_fmt(r['draw_agreement'])} | – |",
            f"| two wordings of one pattern agree | {_fmt(g.get('wording_agreement'))} | "
            f"{_fmt(r['wording_agreement'])} | {_fmt(r['mean_wording_agreement'])} |",
            f"| pattern ceiling (modal share; independent labels: {_fmt(r['if_independent'].get('3'))}) | "
            f"{_fmt(g.get('ceiling'))} | {_fmt(r['ceiling_by_draws']['1'])} | "
            f"{_fmt(r['ceiling_by_draws'][str(r['draws'])])} |",
            f"| lookup from the pattern's other two wordings: accuracy | {_fmt(g.get('lookup', {}).get('accuracy'))} | "
            f"{_fmt(r['lookup']['single_draw']['accuracy'])} | {_fmt(r['lookup']['mean_of_draws']['accuracy'])} |",
            f"| same: utility regret | {_fmt(g.get('lookup', {}).get('utility_regret'), False)} | "
            f"{_fmt(r['lookup']['single_draw']['utility_regret'], False)} | "
            f"{_fmt(r['lookup']['mean_of_draws']['utility_regret'], False)} |",
            f"| labels per model ({', '.join(m['models'])}) | {g.get('label_shares')} | "
            f"{r['label_shares']['single_draws']} (all draws) | {r['label_shares']['mean_of_draws']} |", "",
            "Pattern ceiling by the number of draws averaged before the argmax (every subset of that size): "
            + ", ".join(f"{k}: {_fmt(v)}" for k, v in r["ceiling_by_draws"].items())
            + f". A single draw's label equals the mean-of-draws label in {_fmt(r['draw_vs_mean'])}; the mean's "
            f"runner-up is within 0.02 utility of its best in {_fmt(r['near_tie'])} of questions. Greedy labels equal "
            f"the mean-of-draws labels in {_fmt(g.get('agrees_with_mean_of_draws'))}.", "",
        ]
    lines += ["## Per type (λ as labelled)", "", "| type | questions | draws agree | wordings agree (one draw) | "
              "wordings agree (mean) | ceiling, one draw | ceiling, mean | ceiling, greedy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t, r in res["by_type"].items():
        lines.append(f"| {t} | {r['questions']} | {_fmt(r['draw_agreement'])} | {_fmt(r['wording_agreement'])} | "
                     f"{_fmt(r['mean_wording_agreement'])} | {_fmt(r['ceiling_by_draws']['1'])} | "
                     f"{_fmt(r['ceiling_by_draws'][str(r['draws'])])} | {_fmt(r['greedy']['ceiling'])} |")
    lines += ["", f"This invocation took {res['meta']['seconds']:.0f} s; a pass already in the work directory is "
              "read, not run again."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], out: Path) -> None:
    """The pattern ceiling against the number of draws averaged before the argmax, per λ, beside the
    greedy labels' ceiling and the ceiling of labels independent of the pattern."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (lam, r), colour in zip(res["by_lambda"].items(), ("tab:blue", "tab:orange"), strict=False):
        ks = [int(k) for k in r["ceiling_by_draws"]]
        ax.plot(ks, [100 * v for v in r["ceiling_by_draws"].values()], "o-", color=colour,
                label=f"mean of k draws, λ = {lam}")
        ax.axhline(100 * r["greedy"]["ceiling"], color=colour, ls="--", lw=1, label=f"greedy, λ = {lam}")
        ax.axhline(100 * r["if_independent"]["3"], color=colour, ls=":", lw=1,
                   label=f"labels independent of the pattern, λ = {lam}")
    ax.set_xticks(range(1, res["meta"]["draws"] + 1))
    ax.axhline(95, color="grey", lw=1)
    ax.text(1, 95.5, "spec: 95% on seen patterns", fontsize=8, color="grey")
    ax.set_xlabel("draws averaged per question and model before the argmax")
    ax.set_ylabel("pattern ceiling, % of questions")
    ax.set_title(f"Real labels: {res['meta']['patterns']} patterns × 3 wordings, T = {res['meta']['temperature']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.label_noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, required=True, help="a real, labelled JSONL (router train/relabel)")
    ap.add_argument("--config", type=Path, default=None, help="ruvllm TOML naming the models (as labelled)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/label-noise"))
    ap.add_argument("--work", type=Path, default=None, help="where the passes are kept (default: <out>/work)")
    ap.add_argument("--types", default=",".join(EXACT_TYPES))
    ap.add_argument("--per-type", type=int, default=8, help="patterns per type")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.3,
                    help="sampling temperature of the draws (at 0.7 gemma3-270m, a base model, falls apart)")
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--context", type=int, default=256, help="one of the labelled context sizes")
    ap.add_argument("--seed", type=int, default=0, help="which patterns")
    args = ap.parse_args(argv)

    from ruvllm.router.oracle import QA_MODULES, load_labelled

    recs = load_labelled(args.labelled)
    info_path = args.labelled.parent / "labels_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not recs or recs[0].label_source != "real":
        raise SystemExit("--labelled must hold real labels")
    if args.context not in recs[0].context_bins:
        raise SystemExit(f"--context must be one of the labelled sizes {recs[0].context_bins}")
    if args.draws < 1 or args.per_type < 1 or not 0.0 < args.temperature <= 2.0:
        raise SystemExit("--draws and --per-type must be >= 1 and --temperature in (0, 2]")
    col = list(recs[0].context_bins).index(args.context)
    types = [t for t in args.types.split(",") if t]
    groups_recs = select_patterns(recs, types, args.per_type, args.seed)
    chosen = [r for g in groups_recs for r in g]
    groups, i = [], 0
    for g in groups_recs:
        groups.append(list(range(i, i + len(g))))
        i += len(g)
    c = info.get("config", {})
    lam, mu = float(info.get("lambda_per_s", 0.02)), float(info.get("mu_per_cost_unit", 0.02))
    passes = [("greedy", 0.0, 0)] + [(f"t{args.temperature:g}-s{s}", args.temperature, s) for s in range(args.draws)]
    t0 = time.perf_counter()
    runs = run_passes(_items_for(chosen, info), passes, args.work or args.out / "work", config=args.config,
                      context=args.context, max_tokens=int(c.get("max_tokens", 64)),
                      max_tokens_code=int(c.get("max_tokens_code", 0)), top_p=args.top_p, lam=lam, mu=mu,
                      embedder=str(c.get("embedder", "sentence")), modules=c.get("modules", QA_MODULES),
                      per_module=int(c.get("per_module", 8)), models=list(recs[0].models))
    seconds = time.perf_counter() - t0
    models = list(recs[0].models)
    greedy, draws = runs["greedy"], [runs[n] for n, _, _ in passes[1:]]
    reproduced = sum(a.answers[m][0] == b.answers[m][col] for a, b in zip(greedy, chosen, strict=True)
                     for m in range(len(models)))

    def U(rs: Sequence[Any], lam_: float, c_: int) -> np.ndarray:
        return utilities(*_arrays(rs, c_), lam_, mu)

    by_lambda = {}
    for lam_ in (lam, 0.0):
        by_lambda[f"{lam_:g}"] = analyse(np.stack([U(d, lam_, 0) for d in draws]), groups, U(greedy, lam_, 0))
    stored_lab = U(chosen, lam, col).argmax(axis=1)
    by_type = {}
    for t in types:
        idx = [gi for gi, g in enumerate(groups_recs) if g[0].query_type == t]
        sub = [i for gi in idx for i in groups[gi]]
        remap = {i: n for n, i in enumerate(sub)}
        sub_groups = [[remap[i] for i in groups[gi]] for gi in idx]
        by_type[t] = analyse(np.stack([U(d, lam, 0)[sub] for d in draws]), sub_groups, U(greedy, lam, 0)[sub])
    res = {
        "meta": {**provenance("bench.label_noise", list(argv) if argv is not None else None),
                 "labelled": str(args.labelled), "types": types, "patterns": len(groups), "questions": len(chosen),
                 "models": models, "context": args.context, "draws": args.draws, "temperature": args.temperature,
                 "top_p": args.top_p, "mu": mu, "lams": [lam, 0.0], "seconds": seconds,
                 "greedy_reproduced": reproduced,
                 "greedy_labels_reproduced": float(np.mean(U(greedy, lam, 0).argmax(axis=1) == stored_lab)),
                 "ids": [r.id for r in chosen]},
        "by_lambda": by_lambda, "by_type": by_type,
    }
    write_results(args.out, "label_noise", res, markdown, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
