"""Does the router's online learner route better after use, and which judge should feed it?

    nice -n 10 .venv/bin/python -m bench.router_learner \
        --labelled bench/results/router-real4-judged/labelled_real.jsonl --type-prior --cv-folds 4 \
        --out bench/results/router-learner-real                                              # ~5 min

With ``learning.enabled`` the orchestrator hands every routed answer to ``learning.RouterOnline``
as an experience: the features the router saw, the model it used and the answer's judged quality
(``RuvLLM._judged``); a shadow label, when there is one, is the experience's known target. This
bench replays that on real labels, whose records hold every model's stored answer:

- the router is trained on the training split (``train_from_oracle``, as ``ruvllm router train``);
- the test questions (``test_seen`` and ``test_unseen``) arrive as a stream, each asked ``--passes``
  times in a seeded order (questions recur in use). Each is routed by the learner's latest
  published weights (ε = ``--explore``, propensities recorded); the served answer is the routed
  model's stored one at the routed context size; ``RouterOnline.observe`` gets the experience the
  orchestrator would build, with the ``RouterOnlineConfig`` the orchestrator uses;
- at checkpoints the learner's current weights are scored, against the oracle, on the streamed
  questions and on the training split (forgetting).

Arms, by what judges the served answer:

- ``frozen``: no learning (the baseline every arm starts from);
- ``check``: ``cascade.check_quality`` on every answer, what the orchestrator feeds today without
  an LLM judge (code and signature questions checked exactly, the rest by grounding);
- ``exact``: the same, but only the answers an exact check covers are fed (the rest are not);
- ``exact+shadow``: ``exact`` plus each such question's shadow label as the target
  (``router.shadow = 1``: every model's stored answer checked, ``bench.router_online.check_label``);
- ``gold``: the oracle's own Q (gold-checked) for every answer: a perfect judge, the ceiling of
  this reward channel.

Each judge runs twice: as the orchestrator built the learner before 2026-12-03 (nothing anchors
the trained weights until EWC's first consolidation), and ``anchored``: ``RouterOnline`` given the
training rows (``anchor_experiences``), which consolidates EWC on them, seeds the replay buffer
and gates every publish on the rows' utility regret (never worse than the served weights).

Reported per arm and checkpoint (mean over seeds): utility regret and model accuracy on the streamed
questions and on the training split, by the served weights (the last published; the orchestrator
publishes every ``publish_every`` updates), and how many publishes the gate refused. Writes
``router_learner.{json,md}`` and ``router_learner.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import provenance, write_results

ROOT = Path(__file__).resolve().parent.parent
JUDGES = ("check", "exact", "exact+shadow", "gold")
# every judge twice: the learner as the orchestrator built it before 2026-12-03 (nothing anchors the
# trained weights until EWC's first consolidation), and anchored on the training rows (RouterOnline's anchor)
ARMS = ("frozen", *JUDGES, *(f"{j}, anchored" for j in JUDGES))
CHECKPOINTS = (1, 3, 10, 30)  # passes over the stream


def score(params: Any, xs: np.ndarray, recs: list[Any]) -> dict[str, float]:
    """Utility regret and model accuracy of ``params``' own decisions (model and context heads, no
    session state) on records with features ``xs`` (N, D)."""
    regret, correct = [], []
    for x, r in zip(xs, recs, strict=True):
        out, _ = params.step(x, None)
        m, c = int(np.argmax(out.model_probs)), int(np.argmax(out.context_probs))
        u = np.asarray(r.utility)
        regret.append(float(u.max() - u[m, c]))
        correct.append(m == int(r.best_model))
    return {"utility_regret": float(np.mean(regret)), "accuracy": float(np.mean(correct))}


def judged(arm: str, r: Any, m: int, c: int, checks: dict[str, Any]) -> tuple[float | None, int | None]:
    """(quality fed to the learner or None when the arm feeds nothing, target model index or None)."""
    if arm == "gold":
        return float(r.quality[m][c]), None
    q, exact = checks["quality"][r.id][m][c]
    if arm == "check":
        return q, None
    if not exact:
        return None, None
    return q, (checks["label"](r, c, m) if arm == "exact+shadow" else None)


def run_arm(arm: str, params: Any, stream: list[Any], xs: np.ndarray, train: list[Any], xt: np.ndarray,
            checks: dict[str, Any], seed: int, passes: int, explore: float) -> list[dict[str, Any]]:
    """One seeded stream through a fresh ``RouterOnline``; the scores at each checkpoint."""
    from ruvllm.config import LearningConfig
    from ruvllm.learning.router_online import RouterOnline, RouterOnlineConfig, anchor_experiences

    lc = LearningConfig()
    served = {"params": params}
    judge, _, anchored = arm.partition(", ")
    x_of = {id(r): x for r, x in zip(train, xt, strict=True)}
    anchor = anchor_experiences(lambda r: x_of[id(r)], train) if anchored else []
    online = RouterOnline(params, RouterOnlineConfig(replay_capacity=lc.replay_size, ewc_lambda=lc.ewc_lambda,
                                                     seed=seed),
                          on_publish=lambda p: served.__setitem__("params", p), anchor=anchor)
    rng = np.random.default_rng([seed, 7])
    M = len(params.config.models)
    rows = []
    fed = 0
    for p in range(1, passes + 1):
        for i in rng.permutation(len(stream)):
            r, x = stream[int(i)], xs[int(i)]
            if arm == "frozen":
                continue
            out, _ = served["params"].step(x, None)
            m, c = int(np.argmax(out.model_probs)), int(np.argmax(out.context_probs))
            propensity = 1.0
            if explore > 0:
                greedy = m
                if rng.random() < explore:
                    m = int(rng.integers(M))
                propensity = (1.0 - explore) * (m == greedy) + explore / M
            q, target = judged(judge, r, m, c, checks)
            if q is None:
                continue
            fed += 1
            models = online.models
            online.observe(online.experience(x, models[m], q, propensity=propensity, text=r.query,
                                             target=models[target] if target is not None else None))
        if p in CHECKPOINTS or p == passes:
            now = served["params"]  # what the orchestrator routes with: the last published weights
            rows.append({"passes": p, "fed": fed, "updates": online.learner.step,
                         "publishes": online.publishes, "gate_rejections": online.gate_rejections,
                         "stream": score(now, xs, stream), "train": score(now, xt, train)})
    return rows


def precompute_checks(stream: list[Any], labelled: Path) -> dict[str, Any]:
    """Every stored answer's ``cascade.check_quality`` and whether an exact check made it, and the
    shadow labeller, on the prompts' docs rebuilt as ``bench.router`` does."""
    from bench.router import prompt_contexts
    from bench.router_online import check_label
    from ruvllm.llm.prompt import clean_answer
    from ruvllm.router import cascade

    contexts, why = prompt_contexts(stream)
    if contexts is None:
        raise SystemExit(f"{labelled}: {why}")
    quality = {}
    for r in stream:
        quality[r.id] = [[(cascade.check_quality(r.query, clean_answer(r.answers[m][c]), contexts[r.id][m][c]),
                           cascade.exact_check(r.query, contexts[r.id][m][c]) != "grounding")
                          for c in range(len(r.context_bins))] for m in range(len(r.models))]
    return {"quality": quality, "label": lambda r, c, m: check_label(r, c, m, contexts), "caveat": why}


def summarise(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for k in range(len(runs[0])):
        at = [run[k] for run in runs]
        row: dict[str, Any] = {"passes": at[0]["passes"]}
        for key in ("fed", "updates", "publishes", "gate_rejections"):
            row[key] = round(float(np.mean([a[key] for a in at])), 1)
        for split in ("stream", "train"):
            for key in ("utility_regret", "accuracy"):
                vals = [a[split][key] for a in at]
                row[f"{split}_{key}"] = round(float(np.mean(vals)), 4)
                row[f"{split}_{key}_std"] = round(float(np.std(vals)), 4)
        out.append(row)
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# The router's online learner, replayed on real answers", "",
        f"Command: `{doc['command']}`  ", f"Date: {doc['date']}, machine: {doc['machine']}", "",
        f"Labels: {doc['labelled']}; models: {', '.join(doc['models'])}. Router: FastGRNN (compressed) trained on "
        f"{doc['n_train']} training questions ({doc['train_config_note']}). Stream: the {doc['n_stream']} test "
        f"questions (`test_seen` + `test_unseen`), each asked once per pass in a seeded order, {doc['seeds']} seeds, "
        f"ε = {doc['explore']:g}; `RouterOnline` with the orchestrator's settings. "
        "Scores are the served (last published) weights at that point, against the oracle; mean ± std over "
        "seeds.", "",
        "| arm | passes | experiences fed | updates | published | refused by the gate | stream: utility regret | "
        "stream: accuracy | train: utility regret | train: accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, rows in doc["arms"].items():
        for row in rows:
            lines.append(
                f"| {arm} | {row['passes']} | {row['fed']:.0f} | {row['updates']:.0f} | {row['publishes']:.1f} | "
                f"{row['gate_rejections']:.1f} | "
                f"{row['stream_utility_regret']:.4f} ± {row['stream_utility_regret_std']:.4f} | "
                f"{row['stream_accuracy']:.3f} | {row['train_utility_regret']:.4f} | {row['train_accuracy']:.3f} |")
    lines += ["", f"Served answers an exact check covers: {doc['exact_share']:.0%} of the stream's (question, model, "
              "context) answers. " + (f"Caveat: {doc['caveat']}." if doc.get("caveat") else ""), ""]
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, rows in doc["arms"].items():
        ax.errorbar([r["passes"] for r in rows], [r["stream_utility_regret"] for r in rows],
                    yerr=[r["stream_utility_regret_std"] for r in rows], marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("passes over the stream")
    ax.set_ylabel("utility regret on the streamed questions")
    ax.set_title("Online router learning, by what judges the answers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, required=True,
                    help="a real oracle JSONL with stored answers (ruvllm router train --labels real)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "router-learner")
    ap.add_argument("--work", type=Path, default=ROOT / "results" / "tmp" / "router-learner")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--passes", type=int, default=max(CHECKPOINTS))
    ap.add_argument("--explore", type=float, default=0.0, help="ε-greedy share (the orchestrator's router.explore)")
    ap.add_argument("--type-prior", action="store_true")
    ap.add_argument("--utility-prior", type=float, default=0.0,
                    help="> 0: the type prior is the per-type utility table, fixed (ruvllm router train: 0.05)")
    ap.add_argument("--cv-folds", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from ruvllm.router.base import RouteInput
    from ruvllm.router.fastgrnn_router import FastGRNNRouter
    from ruvllm.router.oracle import load_labelled
    from ruvllm.router.training import TrainConfig, train_from_oracle

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    recs = load_labelled(args.labelled)
    if not all(r.answers for r in recs):
        print(f"{args.labelled}: the records hold no answers (real labels are needed)", file=sys.stderr)
        return 2
    report = train_from_oracle(args.labelled, args.work / "router",
                               TrainConfig(type_prior=args.type_prior, utility_prior=args.utility_prior,
                                           cv_folds=args.cv_folds))
    router = FastGRNNRouter.load(Path(report.checkpoint))

    def features(rs: list[Any]) -> np.ndarray:
        return np.stack([router.featurize(RouteInput(r.query, 0, 0.0, 0, features=r.feature_input())) for r in rs])

    stream = [r for r in recs if r.split in ("test_seen", "test_unseen")]
    train = [r for r in recs if r.split == "train"]
    xs, xt = features(stream), features(train)
    checks = precompute_checks(stream, args.labelled)
    exact = [e for r in stream for row in checks["quality"][r.id] for _, e in row]
    arms = {arm: summarise([run_arm(arm, router.params, stream, xs, train, xt, checks, s, args.passes, args.explore)
                            for s in range(args.seeds)]) for arm in ARMS}
    doc = {
        **provenance("bench.router_learner", argv),
        "labelled": str(args.labelled), "models": report.models, "n_train": report.n_train,
        "train_config": report.config,
        "train_config_note": (f"utility-table prior (τ = {args.utility_prior:g})" if args.utility_prior
                              else "type prior" if args.type_prior else "no type prior")
        + (f", {args.cv_folds}-fold CV" if args.cv_folds else ""),
        "n_stream": len(stream), "seeds": args.seeds, "explore": args.explore, "passes": args.passes,
        "exact_share": round(float(np.mean(exact)), 4), "caveat": checks["caveat"],
        "arms": arms, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_results(args.out, "router_learner", doc, markdown, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
