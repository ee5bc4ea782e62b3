"""Continual-learning benchmark for the FastGRNN router: naive vs EWC vs replay vs EWC+replay vs joint.

    nice -n 10 .venv/bin/python -m bench.learning                  # 5 domains × 2000 cycles = 10,000 updates
    nice -n 10 .venv/bin/python -m bench.learning --cycles-per-task 200   # quick look

The stream: the router sees queries from one domain at a time (5 domains, in order), as a
deployment does when its users' interests drift. Each update cycle is 16 new experiences
(features → the oracle's best model) and one optimiser step of ``ruvllm.learning.OnlineLearner``
on ``router.training.FastGRNNTorch`` (the real router cell and heads, 128-d input, H=32, 3 models).

The tasks are SYNTHETIC and say so: each domain has its own region of the 128-d feature space
(a domain one-hot in the Q_DOMAIN slice plus a domain-specific mean shift of the other features)
and its own rule for which model is best (a linear utility per model: shared part + domain part,
argmax). The domains conflict, so a router trained on one domain after another forgets. This is
the controlled shift the learner must survive; the real-label oracle (router/oracle.py) is too
small (hundreds of records) to make 10,000 distinct updates.

Metrics (Avalanche / GEM conventions): R[i, j] = accuracy on domain j's held-out set after
training on domain i. Average accuracy = mean_j R[T−1, j]. Forgetting_j = max_{i<T−1} R[i, j] −
R[T−1, j], averaged over j < T−1. BWT = mean_{j<T−1} (R[T−1, j] − R[j, j]). Joint training (the
upper bound) sees the same number of updates on an i.i.d. shuffle of all domains.

Writes bench/results/learning/learning_bench.{json,md} and learning_curves.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ruvllm.learning import (
    EWCConfig,
    EWCPlugin,
    Experience,
    LearnerConfig,
    OnlineLearner,
    Plugin,
    ReplayPlugin,
    router_loss,
    router_predict,
)
from ruvllm.router.fastgrnn import FastGRNNConfig
from ruvllm.router.features import DIM, Q_DOMAIN
from ruvllm.router.training import FastGRNNTorch

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["small", "medium", "large"]


class Domains:
    """Synthetic domains in the router's 128-d feature layout (see the module docstring)."""

    def __init__(self, n: int, seed: int, shared: float, shift: float):
        rng = np.random.default_rng(seed)
        self.n = n
        w0 = rng.normal(size=(len(MODELS), DIM))
        self.mu = rng.normal(scale=shift, size=(n, DIM)).astype(np.float32)  # (T, D) domain centres
        self.w = [shared * w0 + (1 - shared) * rng.normal(size=(len(MODELS), DIM)) for _ in range(n)]
        for t in range(n):
            self.mu[t, Q_DOMAIN] = 0.0
            self.mu[t, Q_DOMAIN.start + t] = 3.0  # domain one-hot

    def sample(self, t: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = (self.mu[t] + rng.normal(size=(n, DIM))).astype(np.float32)  # (n, D)
        x[:, Q_DOMAIN] = self.mu[t, Q_DOMAIN]
        y = (x @ self.w[t].T).argmax(1)  # (n,) best model
        return x, y


def make_learner(strategy: str, args: argparse.Namespace) -> OnlineLearner:
    """``strategy``: naive | ewc | replay | ewc+replay | joint, optionally ``@λ`` (e.g. ``ewc@10``)."""
    torch.manual_seed(args.seed)
    strategy, _, lam = strategy.partition("@")
    lam_v = float(lam) if lam else args.ewc_lambda
    cfg = FastGRNNConfig(models=MODELS, input_dim=DIM, hidden=32, w_rank=16, u_rank=8)
    model = FastGRNNTorch(cfg, seed=args.seed)
    plugins: list[Plugin] = []
    if "ewc" in strategy:
        plugins.append(EWCPlugin(EWCConfig(lam=lam_v, gamma=args.ewc_gamma, fisher_samples=200),
                                 every=args.consolidate_every))
    if "replay" in strategy:
        plugins.append(ReplayPlugin(args.replay_capacity, args.replay_size, seed=args.seed))
    return OnlineLearner(model, router_loss, plugins, LearnerConfig(batch_size=args.batch, lr=args.lr, seed=args.seed))


def run(strategy: str, dom: Domains, tests: list[tuple[np.ndarray, np.ndarray]], args: argparse.Namespace
        ) -> dict[str, Any]:
    learner = make_learner(strategy, args)
    rng = np.random.default_rng(args.seed + 7)

    def accs() -> list[float]:
        return [float((router_predict(learner.model, x) == y).mean()) for x, y in tests]

    T, C, B = dom.n, args.cycles_per_task, args.batch
    R: list[list[float]] = []
    curve: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for t in range(T):
        if strategy.startswith("joint"):  # i.i.d. over all domains, same number of updates
            parts = [dom.sample(j, C * B // T + 1, rng) for j in range(T)]
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            perm = rng.permutation(len(x))[: C * B]
            x, y = x[perm], y[perm]
        else:
            x, y = dom.sample(t, C * B, rng)
        for i in range(C * B):
            learner.observe(Experience(x[i], target=int(y[i]), task=f"d{t}"))
            if learner.step % args.eval_every == 0 and (i + 1) % B == 0:
                a = accs()
                curve.append({"step": learner.step, "task": t, "acc": a})
        R.append(accs())
    secs = time.perf_counter() - t0
    Rm = np.array(R)  # (T, T)
    final = Rm[-1]
    forgetting = [float(Rm[:-1, j].max() - final[j]) for j in range(T - 1)]
    bwt = [float(final[j] - Rm[j, j]) for j in range(T - 1)]
    return {
        "strategy": strategy, "updates": learner.step, "experiences": learner.observed, "seconds": round(secs, 1),
        "R": Rm.round(4).tolist(), "avg_accuracy": float(final.mean()), "forgetting": float(np.mean(forgetting)),
        "max_forgetting": float(np.max(forgetting)), "bwt": float(np.mean(bwt)),
        "learning_accuracy": float(np.mean(np.diag(Rm))), "curve": curve,
    }


def plot(results: list[dict[str, Any]], n_tasks: int, cycles: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for r in results:
        steps = [c["step"] for c in r["curve"]]
        axes[0].plot(steps, [float(np.mean(c["acc"])) for c in r["curve"]], label=r["strategy"])
        axes[1].plot(steps, [c["acc"][0] for c in r["curve"]], label=r["strategy"])
    for ax, title in ((axes[0], "mean accuracy over all 5 domains"), (axes[1], "accuracy on domain 0 (learnt first)")):
        for t in range(1, n_tasks):
            ax.axvline(t * cycles, color="grey", lw=0.5, ls=":")
        ax.set_xlabel("update cycle")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(doc: dict[str, Any]) -> str:
    a = doc["args"]
    lines = [
        "# Router continual learning (bench/learning.py)",
        "",
        f"`{doc['command']}` — {doc['when']}, {doc['machine']}",
        "",
        f"{a['tasks']} synthetic domains in order, {a['cycles_per_task']} update cycles each "
        f"({a['tasks'] * a['cycles_per_task']:,} updates), {a['batch']} new experiences per cycle; "
        f"FastGRNNTorch (H=32, 128-d input, 3 models). Accuracy = the router picks the oracle's best model. "
        f"EWC λ={a['ewc_lambda']}, γ={a['ewc_gamma']}, consolidated every {a['consolidate_every']} updates "
        f"(no task labels); replay: reservoir of {a['replay_capacity']}, {a['replay_size']} replayed per update.",
        "",
        "| strategy | updates | avg accuracy (final) | learning accuracy | forgetting (mean) | forgetting (max) "
        "| BWT | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        f = "—" if r["strategy"].startswith("joint") else f"{100 * r['forgetting']:.1f}%"
        fm = "—" if r["strategy"].startswith("joint") else f"{100 * r['max_forgetting']:.1f}%"
        b = "—" if r["strategy"].startswith("joint") else f"{100 * r['bwt']:+.1f}%"
        lines.append(f"| {r['strategy']} | {r['updates']:,} | {100 * r['avg_accuracy']:.1f}% | "
                     f"{100 * r['learning_accuracy']:.1f}% | {f} | {fm} | {b} | "
                     f"{r['seconds']} |")
    lines += ["", "Learning accuracy = mean of R[j, j] (how well each domain is learnt when it arrives: "
              "plasticity). Forgetting and BWT are in accuracy points. Joint training is i.i.d. over all "
              "domains (upper bound; its forgetting is not defined). The tasks are synthetic (see the module "
              "docstring).", "",
              "![curves](learning_curves.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--cycles-per-task", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ewc-lambda", type=float, default=0.03)
    ap.add_argument("--ewc-gamma", type=float, default=0.9)
    ap.add_argument("--consolidate-every", type=int, default=500)
    ap.add_argument("--replay-capacity", type=int, default=4000)
    ap.add_argument("--replay-size", type=int, default=48)
    ap.add_argument("--shared", type=float, default=0.3, help="share of the best-model rule common to all domains")
    ap.add_argument("--shift", type=float, default=1.0, help="scale of the per-domain feature mean shift")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--strategies", default="naive,ewc,replay,ewc+replay,joint")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dom = Domains(args.tasks, args.seed, args.shared, args.shift)
    test_rng = np.random.default_rng(args.seed + 1000)
    tests = [dom.sample(t, 2000, test_rng) for t in range(args.tasks)]
    results = []
    for s in args.strategies.split(","):
        r = run(s.strip(), dom, tests, args)
        print(f"{r['strategy']:>11}: avg acc {r['avg_accuracy']:.3f}  forgetting {r['forgetting']:.3f} "
              f"(max {r['max_forgetting']:.3f})  BWT {r['bwt']:+.3f}  {r['updates']} updates  {r['seconds']}s",
              flush=True)
        results.append(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python -m bench.learning " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "tasks_are": "synthetic domains in the router's feature layout (see bench/learning.py docstring)",
        "args": vars(args), "results": results,
    }
    (out / "learning_bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "learning_bench.md").write_text(markdown(doc))
    plot(results, args.tasks, args.cycles_per_task, out / "learning_curves.png")
    return doc


if __name__ == "__main__":
    main()
