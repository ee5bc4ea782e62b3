"""Can any router meet the quality and latency targets together on these labels?

The spec asks a router for quality regret < 0.1 (1–5 scale, against always-large) *and* latency
regret < 50 ms (against the oracle) on each split. The oracle itself meets both: it knows how every
model answers every question. A router does not, and the labels are noisy: two wordings of one
pattern (symbol + question type) pick different models in 39% of pairs (``bench.label_noise``).
This bench asks what the two targets need of routers that know progressively less, in two ways.

* **With hindsight** (in-sample, exact): on every labelled wording of the patterns with at least
  two (any split), the best policy that gives every question of a group the same (model, context),
  for groups of one question (the oracle's family), one pattern, one question type, or all. Solved
  as a multiple-choice knapsack (``scipy.optimize.milp``): the least latency regret at quality regret
  ≤ 0.1, the least quality regret at latency regret ≤ 50 ms, and the frontier between. No router that
  routes a group's members alike can do better on them.
* **Learnt** (out of sample): a table per pattern, per type or constant, built on the training
  split, that picks for each group the option with the least mean latency regret + ν · quality regret
  over its training questions, scored on the test splits for a sweep of ν (ν stands for the utility
  weights a router is trained with). The pattern table knows each seen question's pattern, which no
  deployable router does; ν is chosen with hindsight on the test split. So a learnt table that
  cannot meet both targets at any ν says the training split does not carry enough to meet them.

Beside them, a cascade with a perfect check: a smaller model first, always-large again when the first
answer's measured quality is below τ (every first option and τ), the best any cascade of that form can
do. The routers of a ``bench.router`` run on the same labels (``--router-bench``) are placed beside the
learnt frontiers. Always-large is the largest model at the context size with its best mean quality
on the training split, the oracle the best utility under λ and μ, both as in ``bench.router``.

    python -m bench.router_frontier --labelled bench/results/router-real5-judged/labelled_real.jsonl \\
        --router-bench bench/results/router-real5-judged-utility-prior/router_bench.json \\
        --out bench/results/router-frontier
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance, write_results
from bench.router import QUALITY_REGRET_TARGET, _large_ref, _tables, pattern_of
from ruvllm.errors import InvalidInputError
from ruvllm.router.oracle import load_labelled, relabel

LATENCY_REGRET_TARGET_MS = 50.0  # the spec's bound, against the oracle


def regret_tables(recs: Sequence[Any], ref: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per question and option (model × context, flattened): quality regret against always-large on the
    1–5 scale, 4·(Q_large − Q), and latency regret against the oracle (the best utility), L − L_oracle
    in ms. Their means over a policy's choices are ``bench.router.metrics``' two regrets."""
    t = _tables(list(recs))
    n = len(recs)
    q = t["quality"].reshape(n, -1)
    dq = 4.0 * (t["quality"][np.arange(n), ref[0], ref[1]][:, None] - q)
    dl = t["latency_ms"].reshape(n, -1) - oracle_latency(t)[:, None]
    return dq, dl


def oracle_latency(t: dict[str, np.ndarray]) -> np.ndarray:
    """Per question, the latency of the oracle's choice (the best utility) in ``_tables`` output."""
    n = len(t["utility"])
    return t["latency_ms"].reshape(n, -1)[np.arange(n), t["utility"].reshape(n, -1).argmax(1)]


def group_sums(keys: Sequence[Any], *tables: np.ndarray) -> tuple[dict[Any, int], list[np.ndarray]]:
    """Each table (questions × options) summed over the questions of each group: (groups × options),
    with each key's row (groups in the order they first appear)."""
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    g = np.fromiter((index[k] for k in keys), int, len(keys))
    out = []
    for tab in tables:
        s = np.zeros((len(index), tab.shape[1]))
        np.add.at(s, g, tab)
        out.append(s)
    return index, out


def best_choice(cost: np.ndarray, weight: np.ndarray, budget: float) -> np.ndarray | None:
    """One option per group (rows) that minimises Σ cost subject to Σ weight ≤ budget, exactly (a
    multiple-choice knapsack, solved by HiGHS through ``scipy.optimize.milp``). None when no choice
    meets the budget."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    groups, options = cost.shape
    pick = np.kron(np.eye(groups), np.ones(options))  # row g: the options of group g
    res = milp(c=cost.ravel(), integrality=np.ones(groups * options), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(pick, 1, 1), LinearConstraint(weight.ravel()[None, :], -np.inf, budget)])
    if res.status == 2:  # infeasible
        return None
    if not res.success:
        raise RuntimeError(f"milp failed: {res.message}")
    return np.asarray(res.x, np.float64).reshape(groups, options).argmax(1)


def _point(q: float, lat: float) -> dict[str, float]:
    return {"quality_regret": q, "latency_regret_ms": lat}


def hindsight(dq: np.ndarray, dl: np.ndarray, keys: Sequence[Any], points: int = 25) -> dict[str, Any]:
    """Exact in-sample optima over policies that give every question with the same key the same option:
    the least latency regret at quality regret < the target, the least quality regret at latency regret
    < the target, and ``points`` points of the frontier (the least latency regret for quality budgets
    from the least reachable quality regret to that of the fastest policy)."""
    n = len(keys)
    _, (sq, sl) = group_sums(keys, dq, dl)
    rows = np.arange(len(sq))

    def point(choice: np.ndarray | None) -> dict[str, float] | None:
        if choice is None:
            return None
        return _point(float(sq[rows, choice].sum() / n), float(sl[rows, choice].sum() / n))

    q_lo = float(sq.min(1).sum() / n)
    q_hi = float(sq[rows, sl.argmin(1)].sum() / n)  # the fastest policy's quality regret
    curve = [p for b in np.linspace(q_lo, q_hi, points) if (p := point(best_choice(sl, sq, b * n + 1e-9)))]
    return {"groups": len(sq),
            # the targets are strict (< 0.1, < 50 ms): a hair under the bound
            "least_latency_at_quality_target": point(best_choice(sl, sq, QUALITY_REGRET_TARGET * n - 1e-9)),
            "least_quality_at_latency_target": point(best_choice(sq, sl, LATENCY_REGRET_TARGET_MS * n - 1e-9)),
            "frontier": curve}


def breakpoints(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every ν ≥ 0 at which some group's argmin over options of a + ν·b can change (a, b: groups ×
    options): between two consecutive ones every group's choice is fixed. Returns ν = 0, each
    breakpoint (where ties are broken as argmin breaks them), a ν between each two consecutive ones,
    and one past the last, so a sweep over them visits every table the rule makes (exact, no grid)."""
    da = a[:, None, :] - a[:, :, None]  # a_j − a_i
    db = b[:, :, None] - b[:, None, :]  # b_i − b_j
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = da / db
    cuts = np.unique(nu[np.isfinite(nu) & (nu > 0)])
    mids = (cuts[:-1] + cuts[1:]) / 2 if len(cuts) > 1 else np.array([])
    return np.sort(np.concatenate([[0.0], cuts, mids, [2 * cuts[-1] + 1] if len(cuts) else []]))


def pareto(pts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both regrets, by latency regret."""
    out: list[dict[str, Any]] = []
    for p in sorted(pts, key=lambda p: (p["latency_regret_ms"], p["quality_regret"])):
        if not out or p["quality_regret"] < out[-1]["quality_regret"]:
            out.append(p)
    return out


def summary(pts: list[dict[str, Any]]) -> dict[str, Any]:
    """The least latency regret among points within the quality target, the least quality regret among
    points within the latency target (None where no point is), and the Pareto frontier."""
    q_ok = [p for p in pts if p["quality_regret"] < QUALITY_REGRET_TARGET]
    l_ok = [p for p in pts if p["latency_regret_ms"] < LATENCY_REGRET_TARGET_MS]
    return {"least_latency_at_quality_target": min(q_ok, key=lambda p: p["latency_regret_ms"]) if q_ok else None,
            "least_quality_at_latency_target": min(l_ok, key=lambda p: p["quality_regret"]) if l_ok else None,
            "frontier": pareto(pts)}


def learnt(train: tuple[np.ndarray, np.ndarray, Sequence[Any]], test: tuple[np.ndarray, np.ndarray, Sequence[Any]]
           ) -> dict[str, Any] | None:
    """A table from the training questions (dq, dl, keys): for each key, the option with the least mean
    dl + ν·dq (ν: latency regret in ms given up for one unit of quality regret); scored on the test
    questions whose key it has, for every table some ν ≥ 0 makes (``breakpoints``). None if it has none."""
    dq, dl, keys = train
    tq, tl, tkeys = test
    index, (sq, sl, cnt) = group_sums(keys, dq, dl, np.ones((len(keys), 1)))
    have = np.array([k in index for k in tkeys], bool)
    if not have.any():
        return None
    g = np.array([index[k] for k in tkeys if k in index])
    rows = np.flatnonzero(have)
    mq, ml = sq / cnt, sl / cnt
    pts = []
    for nu in breakpoints(ml, mq):
        choice = (ml + nu * mq).argmin(1)[g]
        pts.append({**_point(float(tq[rows, choice].mean()), float(tl[rows, choice].mean())), "nu": float(nu)})
    return {"questions": int(have.sum()), **summary(pts)}


def cascade_points(recs: Sequence[Any], ref: tuple[int, int]) -> list[dict[str, Any]]:
    """A cascade whose check knows the quality of the first answer: answer with one smaller (model,
    context), and when that answer's Q is below τ answer again with always-large, paying both
    latencies. One point per first option and per τ that changes a decision (τ = ∞ escalates all)."""
    t = _tables(list(recs))
    lm, lc = ref
    lat_oracle = oracle_latency(t)
    q_large, lat_large = t["quality"][:, lm, lc], t["latency_ms"][:, lm, lc]
    pts = []
    for m, c in itertools.product(range(lm), range(t["quality"].shape[2])):
        q1, lat1 = t["quality"][:, m, c], t["latency_ms"][:, m, c]
        for tau in np.unique(np.append(q1, np.inf)):
            esc = q1 < tau
            q, lat = np.where(esc, q_large, q1), np.where(esc, lat1 + lat_large, lat1)
            pts.append({**_point(float(4 * (q_large - q).mean()), float((lat - lat_oracle).mean())),
                        "first": [int(m), int(c)], "tau": float(tau), "escalated": float(esc.mean())})
    return pts


def perfect_check_cascade(recs: Sequence[Any], ref: tuple[int, int]) -> dict[str, Any]:
    """``summary`` of ``cascade_points``. A real check (``router/cascade.py``) knows less than the
    quality, so no cascade of this form does better than its frontier."""
    return summary(cascade_points(recs, ref))


GROUPINGS: dict[str, Callable[[Any], Any]] = {
    "per question": lambda r: r.id,
    "per pattern": pattern_of,
    "per type": lambda r: r.query_type,
    "constant": lambda r: "",
}
CASCADE = "cascade with a perfect check"
SPLITS = {"test_seen": "seen patterns", "test_unseen": "held-out symbols"}
ROUTER_ROWS = ("FastGRNN compressed (sparse+int8)", "FastGRNN compressed + fallback (default config)",
               "FastGRNN compressed + cascade only", "query-type best", "kNN (k=10)",
               "pattern lookup (knows symbol + type; reference)")


def frontier(recs: Sequence[Any], points: int = 25, router_bench: dict[str, Any] | None = None) -> dict[str, Any]:
    """``hindsight`` per grouping on every wording of the patterns with at least two labelled wordings,
    ``learnt`` per grouping and test split, and the routers of ``router_bench`` (a ``bench.router`` JSON)."""
    train = [r for r in recs if r.split == "train"]
    if not train:
        raise InvalidInputError("the labelled set has no training split to take always-large from")
    ref = _large_ref(train)
    count: dict[Any, int] = {}
    for r in recs:
        count[pattern_of(r)] = count.get(pattern_of(r), 0) + 1
    pooled = [r for r in recs if count[pattern_of(r)] >= 2]
    if not pooled:
        raise InvalidInputError("no pattern has two labelled wordings")
    dq, dl = regret_tables(pooled, ref)
    doc: dict[str, Any] = {
        "always_large": {"model": recs[0].models[ref[0]], "context": recs[0].context_bins[ref[1]]},
        "hindsight": {"questions": len(pooled), "patterns": len({pattern_of(r) for r in pooled}),
                      "policies": {name: hindsight(dq, dl, [key(r) for r in pooled], points)
                                   for name, key in GROUPINGS.items()}},
        "learnt": {}, "routers": {}}
    tr = regret_tables(train, ref)
    for split in SPLITS:
        test = [r for r in recs if r.split == split]
        if not test:
            continue
        te = regret_tables(test, ref)
        doc["learnt"][split] = {"questions": len(test), "tables": {},
                                "perfect_check_cascade": perfect_check_cascade(test, ref)}
        for name, key in list(GROUPINGS.items())[1:]:
            res = learnt((*tr, [key(r) for r in train]), (*te, [key(r) for r in test]))
            if res is not None:
                doc["learnt"][split]["tables"][name] = res
        rows = (router_bench or {}).get("results", {}).get(split, {})
        doc["routers"][split] = {name: _point(rows[name]["quality_regret_vs_large_1to5"],
                                              rows[name]["latency_regret_vs_oracle_ms"])
                                 for name in ROUTER_ROWS if name in rows}
    return doc


def within_targets(p: dict[str, float] | None) -> bool:
    """A point (quality regret, latency regret) meets both of the spec's targets."""
    return (p is not None and p["quality_regret"] < QUALITY_REGRET_TARGET
            and p["latency_regret_ms"] < LATENCY_REGRET_TARGET_MS)


def meets_both(p: dict[str, Any]) -> bool:
    """Some policy of a grouping's results meets both targets."""
    return within_targets(p["least_latency_at_quality_target"])


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------


def _fmt(p: dict[str, float] | None, key: str, spec: str, unit: str = "") -> str:
    return "none" if p is None else format(p[key], spec) + unit


def _row(name: str, p: dict[str, Any], n: Any) -> str:
    a, b = p["least_latency_at_quality_target"], p["least_quality_at_latency_target"]
    return (f"| {name} | {n} | {_fmt(a, 'latency_regret_ms', '+.0f', ' ms')} | {_fmt(b, 'quality_regret', '+.3f')} | "
            f"{'yes' if meets_both(p) else 'no'} |")


def markdown(doc: dict[str, Any]) -> str:
    h = doc["hindsight"]
    head = ["| policy | {} | least latency regret at quality regret < 0.1 | least quality regret at latency "
            "regret < 50 ms | both targets |", "|---|---:|---:|---:|---|"]
    lines = ["# Quality and latency targets together: what the labels allow", "",
             f"Command: `{doc['command']}`  ", f"Date: {doc['date']}, machine: {doc['machine']}", "",
             f"Labels: `{doc['labelled']}`, U = Q − {doc['lam']}·L[s] − {doc['mu']}·C. "
             f"Targets: quality regret < {QUALITY_REGRET_TARGET} (1–5, against always-large: "
             f"{doc['always_large']['model']} at {doc['always_large']['context']} context tokens) and latency "
             f"regret < {LATENCY_REGRET_TARGET_MS:.0f} ms (against the oracle).", "",
             "## With hindsight (in-sample, exact)", "",
             f"Every labelled wording of the {h['patterns']} patterns (symbol + type) with at least two, "
             f"{h['questions']} questions, any split. Each row is the exact optimum over policies that give every "
             "question of a group the same (model, context): no router that routes a group's members alike "
             "can do better on these questions. The finer the grouping, the more of the labels' noise such a "
             "policy fits with hindsight: these are bounds, not what a router of that grouping learns (next "
             "section).", "",
             head[0].format("groups"), head[1]]
    lines += [_row(name, p, p["groups"]) for name, p in h["policies"].items()]
    lines += ["", "## Learnt on the training split, scored on the test splits", "",
              "A table per group (pattern, type, or one for all) picks the option with the least mean latency "
              "regret + ν · quality regret over the group's training questions. Every table some ν ≥ 0 makes "
              "is scored, and the best for each target is taken with hindsight on the test split. The pattern "
              "table covers only questions whose pattern has training wordings. The cascade row answers with "
              "a smaller (model, context) first and again with always-large when the first answer's measured "
              "quality is below τ, paying both latencies: every first option and τ is scored, so it is the "
              "best any cascade of that form can do with a check that knows the quality. Below each, the routers of "
              f"`{doc['router_bench']}` on the same questions.", ""]
    for split, d in doc["learnt"].items():
        lines += [f"**{SPLITS[split]}** ({d['questions']} questions)", "", head[0].format("questions"), head[1]]
        lines += [_row(name, p, p["questions"]) for name, p in d["tables"].items()]
        lines.append(_row(CASCADE, d["perfect_check_cascade"], d["questions"]))
        lines.append("")
        routers = doc["routers"].get(split, {})
        if routers:
            lines += ["| router | quality regret | latency regret | both targets |", "|---|---:|---:|---|"]
            lines += [f"| {name} | {p['quality_regret']:+.3f} | {p['latency_regret_ms']:+.0f} ms | "
                      f"{'yes' if within_targets(p) else 'no'} |" for name, p in routers.items()]
            lines.append("")
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("with hindsight, pooled wordings", doc["hindsight"]["policies"], {})]
    panels += [(f"learnt: {SPLITS[s]}", {**d["tables"], CASCADE: d["perfect_check_cascade"]}, doc["routers"].get(s, {}))
               for s, d in doc["learnt"].items()]
    x_lo = min(-1500.0, *(x["latency_regret_ms"] - 100 for _, pol, _ in panels for p in pol.values()
                          for x in p["frontier"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, policies, routers) in zip(axes[0], panels, strict=True):
        for name, p in policies.items():
            pts = p["frontier"]
            ax.plot([x["latency_regret_ms"] for x in pts], [x["quality_regret"] for x in pts], label=name,
                    marker="" if name == CASCADE else ".", ls="--" if name == CASCADE else "-")
        for (name, p), mk in zip(routers.items(), "xP^sDv*", strict=False):
            ax.scatter([p["latency_regret_ms"]], [p["quality_regret"]], marker=mk, s=36, color="black",
                       label=name.split(" (")[0])
        ax.axhline(QUALITY_REGRET_TARGET, color="grey", ls="--", lw=0.8)
        ax.axvline(LATENCY_REGRET_TARGET_MS, color="grey", ls="--", lw=0.8)
        ax.set_xlim(x_lo, 4000)
        ax.set_ylim(-0.35, 1.2)
        ax.fill_between([x_lo, LATENCY_REGRET_TARGET_MS], -0.35, QUALITY_REGRET_TARGET, color="tab:green", alpha=0.12)
        ax.set_xlabel("latency regret vs oracle, ms")
        ax.set_ylabel("quality regret vs always-large (1–5)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=6)
    fig.suptitle("Both targets = the green corner", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.router_frontier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, required=True, help="a labelled JSONL (router train/relabel)")
    ap.add_argument("--router-bench", type=Path, default=None,
                    help="a bench.router JSON on the same labels: its routers are placed beside the learnt tables")
    ap.add_argument("--out", type=Path, default=Path("bench/results/router-frontier"))
    ap.add_argument("--lam", type=float, default=0.02, help="utility per second of latency (as bench.router)")
    ap.add_argument("--mu", type=float, default=0.02, help="utility per cost unit (as bench.router)")
    ap.add_argument("--points", type=int, default=25, help="frontier points per policy with hindsight")
    args = ap.parse_args(argv)
    if args.lam < 0 or args.mu < 0:
        raise SystemExit("--lam and --mu must be ≥ 0")
    if args.points < 2:
        raise SystemExit("--points must be at least 2")
    recs = [relabel(r, args.lam, args.mu) for r in load_labelled(args.labelled)]
    rb = json.loads(args.router_bench.read_text()) if args.router_bench else None
    weights = (rb["labels"].get("lambda_per_s"), rb["labels"].get("mu_per_cost_unit")) if rb is not None else None
    if weights is not None and weights != (args.lam, args.mu):
        raise SystemExit(f"{args.router_bench} was measured with λ = {weights[0]}, μ = {weights[1]}, "
                         f"not {args.lam}, {args.mu}")
    doc = {**provenance("bench.router_frontier", list(argv) if argv is not None else None),
           "labelled": str(args.labelled), "router_bench": str(args.router_bench) if args.router_bench else None,
           "lam": args.lam, "mu": args.mu, **frontier(recs, args.points, rb)}
    write_results(args.out, "router_frontier", doc, markdown, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
