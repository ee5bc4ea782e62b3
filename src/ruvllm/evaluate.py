"""``ruvllm eval``: run the benchmark suite that exists and write one report with plots.

    ruvllm eval                       # every bench in its quick mode → results/eval-<timestamp>/
    ruvllm eval --full                # the recorded sizes (hours on 2 cores)
    ruvllm eval --only router,learning --queries 0 --out /tmp/ev

Each bench in ``bench/`` runs in its own ``nice``d child process (``python -m bench.<name> ...``)
with its output pointed into the report folder, so a bench that crashes, times out or lacks an
optional dependency is skipped with a note and the report is still written. A bench that appears
in ``bench/`` but has no entry in ``BENCHES`` is still run: ``--quick`` / ``--out`` are passed when
its ``--help`` lists them.

The report folder holds:

- ``report.md``: date, git commit, machine, then one section per bench: the exact command,
  its status and time, its headline table (taken from the bench's own Markdown), a link to it;
- ``latency_cdf.png``: per-stage latency CDFs of real ``RuvLLM.query`` calls (a temporary data dir
  with a small stdlib subset ingested; run in a child process, see ``latency_worker``);
- ``router_cost_quality.png``: from ``bench/router.py``'s JSON (this run's, else the recorded one);
- ``learning_curve.png``: from ``bench/learning.py``'s JSON (this run's, else the recorded one);
- ``bench/<name>/``: each bench's own JSON, Markdown, plots and ``log.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ruvllm.errors import ConfigError

# --------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchSpec:
    """How to run one bench in quick and full mode, and where its results land."""

    name: str  # bench/<name>.py
    quick: tuple[str, ...]  # arguments for the quick mode (minutes on 2 loaded cores)
    full: tuple[str, ...] = ()  # arguments for the recorded sizes
    out_flags: tuple[str, ...] = ("--out", "{out}")  # point its output at our folder; () = it has no --out
    fixed_quick: tuple[str, ...] = ()  # with no --out: files under bench/results it writes (quick mode)
    fixed_full: tuple[str, ...] = ()  # ... and in full mode
    needs: tuple[str, ...] = ()  # importable modules it needs (optional dependencies)
    table: str = ""  # which table of its Markdown is the headline (substring of the heading above it)
    timeout_quick: int = 900
    timeout_full: int = 4 * 3600

    @property
    def module(self) -> str:
        return f"bench.{self.name}"


BENCHES: tuple[BenchSpec, ...] = (
    BenchSpec("memory", quick=("--n", "5000", "--queries", "200"), full=("--n", "100000", "--dim", "384"),
              needs=("hnswlib",)),
    BenchSpec("router", quick=("--embedder", "hash", "--limit", "120"), full=(),
              out_flags=("--out", "{out}", "--work", "{out}/work"), table="Held-out"),
    BenchSpec("learning", quick=("--tasks", "3", "--cycles-per-task", "150", "--eval-every", "50"), full=(),
              needs=("torch",)),
    BenchSpec("attention", quick=("--per-type", "60", "--rounds", "1"), full=("--modules", "all"),
              needs=("torch",)),
    BenchSpec("llm", quick=("--quick",), full=(), out_flags=(),
              fixed_quick=("llm-quick.json", "llm-quick.md"), fixed_full=("llm.json", "llm.md"),
              needs=("llama_cpp",)),
    BenchSpec("embedding", quick=("--quick",), full=(), out_flags=(),
              fixed_quick=("embedding.json", "embedding.md", "adapter-gemma3-270m.npz"),
              fixed_full=("embedding.json", "embedding.md", "adapter-gemma3-270m.npz"), needs=("llama_cpp",)),
    BenchSpec("load", quick=("--levels", "1,2", "--per-level", "4", "--crash-seconds", "8"), full=(),
              needs=("httpx", "uvicorn")),
)

LATENCY_MODULES = ("json", "textwrap", "shutil")
LATENCY_QUESTIONS = (
    "What does json.dumps do?",
    "How do I pretty-print JSON with an indent?",
    "What does textwrap.dedent do?",
    "What does shutil.rmtree do?",
    "How do I copy a whole directory tree with shutil?",
    "What does textwrap.wrap return?",
    "What does json.loads do with a bytes argument?",
    "How does shutil.which find an executable?",
    "What does textwrap.shorten do?",
    "What is json.JSONDecodeError?",
    "How do I move a file with shutil?",
    "What does textwrap.fill do?",
    "What does the sort_keys argument of json.dumps do?",
    "How much disk space is free? Which shutil function tells me?",
    "What does textwrap.indent do?",
    "What does shutil.make_archive do?",
    "How do I read JSON from a file object?",
    "What does shutil.copy2 preserve?",
    "What does json.JSONEncoder.default do?",
    "How does textwrap.TextWrapper break long words?",
)
STAGE_ORDER = ("embed", "search", "expand", "rank", "route", "load", "prompt", "generate", "judge", "writeback")


def repo_root() -> Path:
    """The checkout holding ``bench/`` (this file is src/ruvllm/evaluate.py), else the current dir."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "bench").is_dir() else Path.cwd()


# --------------------------------------------------------------------------------------
# running benches
# --------------------------------------------------------------------------------------


@dataclass
class BenchRun:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    command: str = ""
    seconds: float = 0.0
    note: str = ""
    dir: Path | None = None
    json_path: Path | None = None
    md_path: Path | None = None
    data: dict[str, Any] | None = None


@dataclass
class EvalOptions:
    out: Path
    full: bool = False
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    queries: int | None = None  # None: 6 quick, 20 full; 0: no latency run
    config: Path | None = None
    nice: int = 10
    timeout: int | None = None  # per bench; None: the spec's
    bench_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # replace a bench's mode arguments
    root: Path = field(default_factory=repo_root)


def _rel(p: Path | str, root: Path) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def _python(root: Path) -> str:
    exe = os.path.abspath(sys.executable)  # not resolved: a venv's python is a symlink
    return os.path.relpath(exe, root) if exe.startswith(str(root.resolve()) + os.sep) else exe


def discover(root: Path) -> list[BenchSpec]:
    """The known benches that exist in ``root/bench``, then any other ``bench/*.py`` (unknown flags)."""
    present = {p.stem for p in (root / "bench").glob("*.py") if p.stem != "__init__" and not p.stem.startswith("_")}
    specs = [s for s in BENCHES if s.name in present]
    known = {s.name for s in BENCHES}
    specs += [BenchSpec(n, quick=(), out_flags=()) for n in sorted(present - known)]
    return specs


def _help_flags(spec: BenchSpec, root: Path, nice: int) -> BenchSpec:
    """For a bench with no entry in BENCHES: pass --quick / --out if its --help lists them."""
    if spec.name in {s.name for s in BENCHES}:
        return spec
    try:
        h = subprocess.run(["nice", "-n", str(nice), sys.executable, "-m", spec.module, "--help"], cwd=root,
                           capture_output=True, text=True, timeout=300, env=_env(root)).stdout
    except (subprocess.TimeoutExpired, OSError):
        h = ""
    quick = ("--quick",) if re.search(r"--quick\b", h) else ()
    out = ("--out", "{out}") if re.search(r"--out\b", h) else ()
    return BenchSpec(spec.name, quick=quick, full=(), out_flags=out)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(root / "src")
    env["PYTHONPATH"] = os.pathsep.join([str(root), src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _missing_module(stderr: str) -> str | None:
    m = re.findall(r"ModuleNotFoundError: No module named '([^']+)'", stderr)
    return m[-1] if m else None


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b|^error:", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def run_bench(spec: BenchSpec, opts: EvalOptions) -> BenchRun:
    """Run one bench in a child process; never raises for the bench's own failures."""
    root = opts.root
    bdir = opts.out / "bench" / spec.name
    bdir.mkdir(parents=True, exist_ok=True)
    missing = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if missing:
        return BenchRun(spec.name, "skipped", note=f"optional dependency missing: {', '.join(missing)}", dir=bdir)
    spec = _help_flags(spec, root, opts.nice)
    if not spec.out_flags and not (spec.fixed_full if opts.full else spec.fixed_quick):
        return BenchRun(spec.name, "skipped", dir=bdir,
                        note="its --help lists no --out, so running it would overwrite its recorded results in "
                             "bench/results; give it --out or an entry in ruvllm.evaluate.BENCHES")
    args = opts.bench_args.get(spec.name, spec.full if opts.full else spec.quick)
    out_args = tuple(a.replace("{out}", str(bdir)) for a in spec.out_flags)
    argv = ["nice", "-n", str(opts.nice), sys.executable, "-m", spec.module, *args, *out_args]
    shown = ["nice", "-n", str(opts.nice), _python(root), "-m", spec.module, *args,
             *(a.replace("{out}", _rel(bdir, root)) for a in spec.out_flags)]
    command = shlex.join(shown)
    fixed = spec.fixed_full if opts.full else spec.fixed_quick
    results = root / "bench" / "results"
    saved = {f: (results / f).read_bytes() for f in fixed if (results / f).is_file()}  # restored afterwards
    timeout = opts.timeout or (spec.timeout_full if opts.full else spec.timeout_quick)
    t0 = time.time()
    log = bdir / "log.txt"
    try:
        proc = subprocess.run(argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
        rc, so, se = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, so, se = -1, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout} s"
    secs = round(time.time() - t0, 1)
    log.write_text(f"$ {command}\nexit {rc}, {secs} s\n\n--- stdout\n{so}\n--- stderr\n{se}\n")
    try:  # a bench with no --out writes into bench/results: take its files, put the recorded ones back
        for f in fixed:
            p = results / f
            if p.is_file() and p.stat().st_mtime >= t0 - 1:
                shutil.copy2(p, bdir / f)
                if f in saved:
                    p.write_bytes(saved[f])
                else:
                    p.unlink()
    except OSError as exc:
        se += f"\ncould not move its results: {exc}"
    run = BenchRun(spec.name, "ok", command=command, seconds=secs, dir=bdir)
    if rc != 0:
        mod = _missing_module(se)
        if rc == -1:
            run.status, run.note = "failed", f"timed out after {timeout} s"
        elif mod:
            run.status, run.note = "skipped", f"optional dependency missing: {mod}"
        else:
            run.status, run.note = "failed", f"exit {rc}: {_last_error(se or so)}"
    jsons = sorted(p for p in bdir.glob("*.json"))
    mds = sorted(p for p in bdir.glob("*.md"))
    if jsons:
        run.json_path = jsons[0]
        try:
            run.data = json.loads(jsons[0].read_text())
        except (OSError, ValueError) as exc:
            run.note += f" (its JSON is unreadable: {exc})"
    if mds:
        run.md_path = mds[0]
    if run.status == "ok" and not jsons and not mds:
        run.note = "ran, but wrote no JSON/Markdown here (it has no --out flag?); see its log"
    return run


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


# --------------------------------------------------------------------------------------
# latency of real queries (child process)
# --------------------------------------------------------------------------------------


def latency_worker(out: Path, n: int, config: Path | None, max_tokens: int | None) -> dict[str, Any]:
    """Ingest a small stdlib subset into a temporary data dir, time ``n`` real queries.

    One warm-up query (encoder and model load) is kept apart from the ``n`` that are plotted.
    """
    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM

    questions = [LATENCY_QUESTIONS[i % len(LATENCY_QUESTIONS)] for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="ruvllm-eval-") as tmp:
        cfg = Config.load(config, data_dir=str(Path(tmp) / "data"))
        t0 = time.perf_counter()
        with RuvLLM(cfg) as rv:
            rep = rv.ingest_stdlib(list(LATENCY_MODULES))
            ingest_s = time.perf_counter() - t0
            warm = rv.query("What does json.dump do?", max_tokens=max_tokens)
            rows = []
            for q in questions:
                r = rv.query(q, max_tokens=max_tokens)
                rows.append({"question": q, "model": r.model, "latency_ms": r.latency_ms, "total_ms": r.total_ms,
                             "completion_tokens": r.usage.get("completion_tokens"), "answer": r.answer[:160]})
    doc = {"modules": list(LATENCY_MODULES), "ingested_nodes": rep.inserted, "ingest_s": round(ingest_s, 1),
           "max_tokens": max_tokens, "warmup": {"latency_ms": warm.latency_ms, "total_ms": warm.total_ms},
           "queries": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def run_latency(opts: EvalOptions) -> BenchRun:
    n = opts.queries if opts.queries is not None else (20 if opts.full else 6)
    ldir = opts.out / "bench" / "latency"
    ldir.mkdir(parents=True, exist_ok=True)
    max_tokens = None if opts.full else 32
    args = ["--latency-worker", "--out", str(ldir), "--queries", str(n)]
    shown = ["--latency-worker", "--out", _rel(ldir, opts.root), "--queries", str(n)]
    if max_tokens:
        args += ["--max-tokens", str(max_tokens)]
        shown += ["--max-tokens", str(max_tokens)]
    if opts.config:
        args += ["--config", str(opts.config)]
        shown += ["--config", str(opts.config)]
    argv = ["nice", "-n", str(opts.nice), sys.executable, "-m", "ruvllm.evaluate", *args]
    command = shlex.join(["nice", "-n", str(opts.nice), _python(opts.root), "-m", "ruvllm.evaluate", *shown])
    timeout = opts.timeout or (3600 if opts.full else 900)
    t0 = time.time()
    try:
        proc = subprocess.run(argv, cwd=opts.root, env=_env(opts.root), capture_output=True, text=True,
                              timeout=timeout)
        rc, so, se = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, so, se = -1, _text(exc.stdout), _text(exc.stderr)
    secs = round(time.time() - t0, 1)
    (ldir / "log.txt").write_text(f"$ {command}\nexit {rc}, {secs} s\n\n--- stdout\n{so}\n--- stderr\n{se}\n")
    run = BenchRun("latency", "ok", command=command, seconds=secs, dir=ldir)
    if rc != 0:
        run.status = "failed"
        run.note = f"timed out after {timeout} s" if rc == -1 else f"exit {rc}: {_last_error(se or so)}"
    p = ldir / "latency.json"
    if rc == 0 and p.is_file():
        run.json_path, run.data = p, json.loads(p.read_text())
    return run


# --------------------------------------------------------------------------------------
# tables and plots
# --------------------------------------------------------------------------------------


def markdown_tables(md: str) -> list[tuple[str, list[str]]]:
    """Every table in a Markdown text as (the heading above it, its lines)."""
    tables: list[tuple[str, list[str]]] = []
    heading, cur = "", []
    for line in [*md.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            cur.append(line.strip())
            continue
        if cur:
            tables.append((heading, cur))
            cur = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def headline_table(md: str, hint: str = "") -> tuple[str, list[str]] | None:
    tables = markdown_tables(md)
    if not tables:
        return None
    if hint:
        for h, t in tables:
            if hint.lower() in h.lower():
                return h, t
    return tables[0]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def stage_samples(latency: dict[str, Any]) -> dict[str, list[float]]:
    """Per-stage latency samples (ms) over the timed queries, in pipeline order, plus ``total``."""
    by: dict[str, list[float]] = {}
    for q in latency["queries"]:
        for k, v in q["latency_ms"].items():
            by.setdefault(k, []).append(float(v))
        by.setdefault("total", []).append(float(q["total_ms"]))
    order = [s for s in STAGE_ORDER if s in by] + sorted(k for k in by if k not in STAGE_ORDER and k != "total")
    return {k: by[k] for k in [*order, "total"]}


def latency_table(latency: dict[str, Any]) -> list[str]:
    lines = ["| stage | n | p50 ms | p90 ms | max ms | warm-up query ms |", "|---|---:|---:|---:|---:|---:|"]
    warm = latency.get("warmup", {}).get("latency_ms", {})
    for k, xs in stage_samples(latency).items():
        w = latency["warmup"]["total_ms"] if k == "total" else warm.get(k)
        lines.append(f"| {k} | {len(xs)} | {_pct(xs, 0.5):.1f} | {_pct(xs, 0.9):.1f} | {max(xs):.1f} | "
                     f"{'' if w is None else f'{w:.1f}'} |")
    return lines


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdf(latency: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for k, xs in stage_samples(latency).items():
        s = sorted(max(x, 1e-3) for x in xs)
        ys = [(i + 1) / len(s) for i in range(len(s))]
        ax.step(s, ys, where="post", label=k, lw=2.4 if k == "total" else 1.4, ls="--" if k == "total" else "-")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of queries ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_title(f"RuvLLM.query latency per stage — {len(latency['queries'])} queries over stdlib "
                 f"{', '.join(latency['modules'])} (warm-up excluded)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_router(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    splits = [s for s in ("test_seen", "test_unseen") if s in doc.get("curves", {})]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for name, pts in doc["curves"][split].items():
            ax.plot([p[0] * 100 for p in pts], [1 + 4 * p[1] for p in pts], label=name,
                    lw=2.2 if name.startswith("FastGRNN") else 1.2, ls="--" if name == "random" else "-")
        o = doc.get("results", {}).get(split, {}).get("oracle")
        if o:
            ax.scatter([o["large_call_share"] * 100], [o["quality_1to5"]], marker="*", s=120, c="k", label="oracle",
                       zorder=5)
        ax.set_xlabel("calls to the large model (%)")
        ax.set_ylabel("mean quality (1–5)")
        ax.set_title(split, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    note = doc.get("label_note") or f"{doc.get('labels', {}).get('labels', '?')} labels"
    fig.suptitle("Router cost–quality curve — " + "\n".join(textwrap.wrap(note, 130)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning(doc: dict[str, Any], path: Path) -> None:
    plt = _plt()
    a = doc.get("args", {})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in doc["results"]:
        steps = [c["step"] for c in r["curve"]]
        axes[0].plot(steps, [sum(c["acc"]) / len(c["acc"]) for c in r["curve"]], label=r["strategy"])
        axes[1].plot(steps, [c["acc"][0] for c in r["curve"]], label=r["strategy"])
    for ax, title in ((axes[0], "mean accuracy over all domains"), (axes[1], "accuracy on domain 0 (learnt first)")):
        for t in range(1, int(a.get("tasks", 0))):
            ax.axvline(t * int(a.get("cycles_per_task", 0)), color="grey", lw=0.5, ls=":")
        ax.set_xlabel("update cycle")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Router continual learning — {a.get('tasks', '?')} synthetic domains × "
                 f"{a.get('cycles_per_task', '?')} cycles", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version()}
    with contextlib.suppress(OSError, StopIteration):
        info["cpu_model"] = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                                 if ln.startswith("model name"))
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))
        info["memory_gb"] = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 1) for x in os.getloadavg()]
    return info


def _recorded(root: Path, rel: str) -> dict[str, Any] | None:
    p = root / "bench" / "results" / rel
    try:
        return dict(json.loads(p.read_text()))
    except (OSError, ValueError):
        return None


def build_report(opts: EvalOptions, runs: list[BenchRun], latency: BenchRun | None, command: str,
                 started: str, seconds: float) -> str:
    root, out = opts.root, opts.out
    commit = _git(root, "rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if _git(root, "status", "--porcelain", "--untracked-files=no") else ""
    m = machine_info()
    lines = [
        f"# ruvllm evaluation — {'full' if opts.full else 'quick'} mode", "",
        f"Command: `{command}`  ",
        f"Date: {started} UTC, {seconds:.0f} s in all  ",
        f"Git commit: `{commit}`{dirty} ({_git(root, 'log', '-1', '--format=%s') or '?'})  ",
        f"Machine: {m.get('cpu_model', m['machine'])}, {m['cpus']} CPUs, {m.get('memory_gb', '?')} GB RAM, "
        f"{m['platform']}, Python {m['python']}; load average {m.get('loadavg', '?')} at the end "
        "(a shared machine: compare figures within one run).", "",
        "Every figure below comes from the command shown above its table, run from the repository root; "
        "each bench's full output (JSON, Markdown, its own plots, `log.txt`) is in `bench/<name>/`.", "",
        "| bench | status | seconds | note |", "|---|---|---:|---|",
    ]
    for r in [*runs, *([latency] if latency else [])]:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.note.replace('|', '/')} |")
    lines.append("")

    # latency CDF
    if latency is not None:
        lines += ["## Query latency per stage (`RuvLLM.query`)", "", f"Command: `{latency.command}`  "]
        if latency.data:
            d = latency.data
            plot_latency_cdf(d, out / "latency_cdf.png")
            models = sorted({q["model"] for q in d["queries"]})
            lines += [f"{len(d['queries'])} queries over a temporary data dir with stdlib "
                      f"{', '.join(d['modules'])} ingested ({d['ingested_nodes']} nodes, {d['ingest_s']} s); "
                      f"model(s): {', '.join(models)}; max_tokens {d['max_tokens'] or 'config default'}. "
                      "The warm-up query (encoder and first model load) is shown apart and not in the CDF; "
                      "a later query routed to a model not loaded yet pays that load in `load`.", "",
                      *latency_table(d), "", "![latency CDF](latency_cdf.png)", ""]
        else:
            lines += ["", f"**{latency.status}**: {latency.note} (see `bench/latency/log.txt`).", ""]

    # plots from the router and learning benches
    for name, rel, fn, png, title in (
        ("router", "router/router_bench.json", plot_router, "router_cost_quality.png", "Router cost–quality curve"),
        ("learning", "learning/learning_bench.json", plot_learning, "learning_curve.png", "Learning curve"),
    ):
        found = next((x for x in runs if x.name == name), None)
        doc, src = (found.data, "this run") if found is not None and found.data else (_recorded(root, rel), "")
        if doc is None:
            continue
        if not src:
            src = f"the recorded `bench/results/{rel}` (`{doc.get('command', '?')}`), since this run has none"
        try:
            fn(doc, out / png)
            lines += [f"## {title}", "", f"From {src}.", "", f"![{title}]({png})", ""]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            lines += [f"## {title}", "", f"Not plotted: its JSON has an unexpected shape ({exc!r}).", ""]

    # one section per bench
    for r in runs:
        spec = next((s for s in BENCHES if s.name == r.name), None)
        lines += [f"## bench/{r.name}.py — {r.status}", ""]
        if r.command:
            lines.append(f"Command: `{r.command}` ({r.seconds:.0f} s)  ")
        if r.note:
            lines.append(f"Note: {r.note}  ")
        lines.append("")
        table = None
        if r.md_path is not None:
            table = headline_table(r.md_path.read_text(errors="replace"), spec.table if spec else "")
        if table is not None:
            heading, rows = table
            if heading:
                lines += [f"*{heading}*", ""]
            lines += [*rows, ""]
        if r.md_path is not None:
            lines += [f"Full output: [{_rel(r.md_path, out)}]({_rel(r.md_path, out)})", ""]
        elif r.status == "ok":
            lines += ["(no Markdown table from this bench; see its log)", ""]
    return "\n".join(lines) + "\n"


def run_eval(opts: EvalOptions, command: str = "ruvllm eval", progress: Any = None) -> Path:
    """Run the suite per ``opts`` and write ``opts.out/report.md`` (+ plots). Returns the report path."""
    say = progress or (lambda msg: None)
    root = opts.root
    if not (root / "bench").is_dir():
        raise ConfigError(f"no bench/ folder under {root}: run `ruvllm eval` from a ruvllm checkout")
    specs = discover(root)
    names = {s.name for s in specs} | {"latency"}
    for n in (*opts.only, *opts.skip, *opts.bench_args):
        if n not in names:
            raise ConfigError(f"unknown bench {n!r}; known: {', '.join(sorted(names))}")
    wanted = [s for s in specs if (not opts.only or s.name in opts.only) and s.name not in opts.skip]
    opts.out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.time()
    runs: list[BenchRun] = []
    for s in wanted:
        say(f"bench {s.name} ...")
        r = run_bench(s, opts)
        say(f"bench {s.name}: {r.status} in {r.seconds:.0f} s {r.note}")
        runs.append(r)
    latency = None
    n_q = opts.queries if opts.queries is not None else 1
    if n_q > 0 and (not opts.only or "latency" in opts.only) and "latency" not in opts.skip:
        say("latency: real queries ...")
        latency = run_latency(opts)
        say(f"latency: {latency.status} in {latency.seconds:.0f} s {latency.note}")
    report = build_report(opts, runs, latency, command, started, time.time() - t0)
    path = opts.out / "report.md"
    path.write_text(report)
    summary = {"date": started, "full": opts.full, "command": command,
               "benches": [{"name": r.name, "status": r.status, "command": r.command, "seconds": r.seconds,
                            "note": r.note, "json": _rel(r.json_path, opts.out) if r.json_path else None}
                           for r in [*runs, *([latency] if latency else [])]]}
    (opts.out / "eval.json").write_text(json.dumps(summary, indent=1) + "\n")
    return path


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _names(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def eval_command(
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: results/eval-<timestamp>/).")] \
        = None,
    full: Annotated[bool, typer.Option("--full", help="The recorded sizes instead of the quick modes (hours).")] \
        = False,
    only: Annotated[str, typer.Option("--only", help="Comma-separated benches to run (and/or 'latency').")] = "",
    skip: Annotated[str, typer.Option("--skip", help="Comma-separated benches to leave out.")] = "",
    queries: Annotated[int | None, typer.Option("--queries", help="Real queries for the latency CDF "
                                                "(default 6 quick, 20 full; 0 = none).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config for the latency queries.")] = None,
    bench_args: Annotated[list[str] | None, typer.Option(
        "--bench-args", help="NAME='ARGS': replace one bench's mode arguments, e.g. "
        "--bench-args \"learning=--tasks 2 --cycles-per-task 50\"; repeatable.")] = None,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds per bench (default: 15 min quick).")] = None,
    nice: Annotated[int, typer.Option("--nice", help="nice level of the bench processes.")] = 10,
) -> None:
    """Run the benchmark suite and write a report (Markdown + PNG plots) under a results folder."""
    from rich.console import Console

    con, err = Console(), Console(stderr=True)
    extra: dict[str, tuple[str, ...]] = {}
    for item in bench_args or []:
        name, sep, rest = item.partition("=")
        if not sep:
            err.print(f"[red]error:[/] --bench-args wants NAME='ARGS', got {item!r}")
            raise typer.Exit(2)
        extra[name.strip()] = tuple(shlex.split(rest))
    root = repo_root()
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    opts = EvalOptions(out=(out or root / "results" / f"eval-{stamp}").resolve(), full=full, only=_names(only),
                       skip=_names(skip), queries=queries, config=config, nice=nice, timeout=timeout,
                       bench_args=extra, root=root)
    command = shlex.join(["ruvllm", "eval", *sys.argv[2:]]) if len(sys.argv) > 1 and sys.argv[1] == "eval" \
        else "ruvllm eval" + (" --full" if full else "")
    try:
        path = run_eval(opts, command, progress=lambda msg: con.print(msg, highlight=False))
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    con.print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """``python -m ruvllm.evaluate``: the latency worker (internal), or the eval itself."""
    ap = argparse.ArgumentParser(prog="python -m ruvllm.evaluate")
    ap.add_argument("--latency-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--skip", default="")
    a = ap.parse_args(argv)
    if a.latency_worker:
        latency_worker(a.out, a.queries, a.config, a.max_tokens)
        return 0
    opts = EvalOptions(out=a.out.resolve(), full=a.full, only=_names(a.only), skip=_names(a.skip),
                       queries=a.queries, config=a.config)
    print(run_eval(opts, "python -m ruvllm.evaluate " + shlex.join(argv or sys.argv[1:]), progress=print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
