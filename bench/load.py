"""Load and fault benchmark of the HTTP server on loopback.

    nice -n 10 .venv/bin/python -m bench.load                      # ~6 minutes on 2 cores
    nice -n 10 .venv/bin/python -m bench.load --levels 1,2 --per-level 6 --crash-seconds 8   # quick look

1. Starts ``python -m ruvllm.server`` (real encoder, real GGUF models, SQLite + HNSW memory) on a
   fresh data dir with a few stdlib modules ingested.
2. Closed-loop load at rising concurrency (1, 2, 4, 8 clients): each client sends its next
   ``POST /v1/chat/completions`` as soon as the previous one returns. A share of the questions
   repeat earlier ones, so repeated work (search cache, any answer cache) shows up separately.
   Per level: QPS, p50/p99 latency, error rate, and the split between answers served from a cache
   and answers that needed a model call.
3. Stops the server with SIGTERM and checks, in a fresh process, that every write-back the server
   acknowledged (a 200 whose ``ruvllm.writeback.node_id`` is set) is in the store.
4. Restarts the server, puts it under load, kills it with SIGKILL mid-load, restarts it again and
   counts acknowledged write-backs that were lost (target: none).

Writes bench/results/load.json and bench/results/load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KEY = "bench-key"
MODULES = "json,textwrap,shutil"


# --------------------------------------------------------------------------------------
# the server process
# --------------------------------------------------------------------------------------


class Server:
    def __init__(self, data_dir: Path, log: Path, max_queue: int):
        self.data_dir = data_dir
        self.log = log
        self.max_queue = max_queue
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.ready_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> Server:
        port_file = self.data_dir.parent / "port"
        port_file.unlink(missing_ok=True)
        self.port = 0
        cmd = [sys.executable, "-m", "ruvllm.server", "--host", "127.0.0.1", "--port", "0", "--port-file",
               str(port_file), "--data-dir", str(self.data_dir), "--api-key", KEY, "--ingest-stdlib", MODULES,
               "--max-queue", str(self.max_queue), "--log-level", "warning"]
        t0 = time.monotonic()
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            if not self.port and port_file.exists():
                self.port = int(port_file.read_text())
            if self.port:
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        self.ready_s = time.monotonic() - t0
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready after {timeout} s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------


def questions() -> list[str]:
    import json as json_mod
    import shutil
    import textwrap

    out = []
    for mod in (json_mod, textwrap, shutil):
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            if not name.startswith("_") and callable(obj) and getattr(obj, "__doc__", None):
                out.append(f"What does {mod.__name__}.{name} do?")
    return out


@dataclass
class Result:
    ok: bool
    status: int
    latency_ms: float
    cache_hit: bool = False
    repeat: bool = False
    model: str = ""
    node_id: str | None = None
    writeback_action: str | None = None
    error: str = ""
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class Load:
    url: str
    max_tokens: int
    repeat_share: float
    seed: int
    pool: list[str]
    asked: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, rng: random.Random) -> tuple[str, bool]:
        with self.lock:
            if self.asked and rng.random() < self.repeat_share:
                return rng.choice(self.asked), True
            q = self.pool[len(self.asked) % len(self.pool)]
            if len(self.asked) >= len(self.pool):
                q = f"{q} Answer in one sentence."
            self.asked.append(q)
            return q, False

    def one(self, client: httpx.Client, rng: random.Random) -> Result:
        question, repeat = self.pick(rng)
        body = {"model": "ruvllm", "messages": [{"role": "user", "content": question}],
                "max_tokens": self.max_tokens}
        t0 = time.perf_counter()
        try:
            r = client.post(self.url + "/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return Result(False, 0, (time.perf_counter() - t0) * 1000, repeat=repeat, error=type(exc).__name__)
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            return Result(False, r.status_code, ms, repeat=repeat, error=r.text[:200])
        ext = r.json().get("ruvllm", {})
        wb = ext.get("writeback") or {}
        return Result(True, 200, ms, bool(ext.get("cache_hit")), repeat, r.headers.get("x-ruvllm-model", ""),
                      wb.get("node_id"), wb.get("action"), stages=dict(ext.get("latency_ms") or {}))

    def run(self, concurrency: int, n_requests: int, stop: threading.Event | None = None) -> tuple[list[Result], float]:
        """``concurrency`` closed-loop clients until ``n_requests`` are done (or ``stop`` is set)."""
        results: list[Result] = []
        remaining = [n_requests]
        lock = threading.Lock()

        def client_loop(i: int) -> None:
            rng = random.Random(self.seed * 1000 + concurrency * 100 + i)
            with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
                while stop is None or not stop.is_set():
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    res = self.one(client, rng)
                    with lock:
                        results.append(res)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k], 1)


def summarise(results: list[Result], seconds: float, concurrency: int) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    lat = [r.latency_ms for r in ok]

    def split(rs: list[Result]) -> dict[str, Any]:
        ls = [r.latency_ms for r in rs]
        return {"n": len(rs), "p50_ms": pct(ls, 50), "p99_ms": pct(ls, 99),
                "mean_ms": round(statistics.fmean(ls), 1) if ls else None}

    models: dict[str, int] = {}
    for r in ok:
        models[r.model] = models.get(r.model, 0) + 1
    stage_names = sorted({k for r in ok for k in r.stages})
    stages = {k: round(statistics.fmean(r.stages.get(k, 0.0) for r in ok), 1) for k in stage_names}
    server_ms = [sum(r.stages.values()) for r in ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = str(r.status or r.error)
            errors[key] = errors.get(key, 0) + 1
    return {
        "concurrency": concurrency, "requests": len(results), "ok": len(ok), "errors": errors,
        "error_rate": round(1 - len(ok) / len(results), 4) if results else None,
        "seconds": round(seconds, 2), "qps": round(len(ok) / seconds, 3) if seconds else None,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "cache_hits": split([r for r in ok if r.cache_hit]), "model_calls": split([r for r in ok if not r.cache_hit]),
        "repeated_questions": split([r for r in ok if r.repeat]),
        "new_questions": split([r for r in ok if not r.repeat]),
        "models": models,
        "stage_mean_ms": stages,
        "queue_wait_mean_ms": round(statistics.fmean(lat) - statistics.fmean(server_ms), 1) if ok else None,
        "writebacks_acknowledged": sum(1 for r in ok if r.node_id),
    }


def missing_nodes(data_dir: Path, node_ids: list[str]) -> list[str]:
    """Open the stopped server's data dir in a fresh process and return the ids it cannot find."""
    script = (
        "import json, sys\nfrom ruvllm.config import Config\nfrom ruvllm.orchestrator import RuvLLM\n"
        "rv = RuvLLM(Config.load(data_dir=sys.argv[1]))\nmissing = []\n"
        "for i in json.load(open(sys.argv[2])):\n"
        "    try:\n        rv.memory.get(i)\n    except Exception:\n        missing.append(i)\n"
        "rv.close()\nprint(json.dumps(missing))\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(sorted(set(node_ids)), fh)
    proc = subprocess.run([sys.executable, "-c", script, str(data_dir), fh.name], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    os.unlink(fh.name)
    if proc.returncode != 0:
        raise RuntimeError(f"could not open {data_dir}: {proc.stderr[-2000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def scrape(url: str, name: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,2,4,8", help="comma-separated client counts")
    ap.add_argument("--per-level", type=int, default=0, help="requests per level (default: max(8, 3 x clients))")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--repeat-share", type=float, default=0.3, help="share of requests repeating an earlier question")
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--crash-clients", type=int, default=4)
    ap.add_argument("--crash-seconds", type=float, default=30.0, help="load time before SIGKILL")
    ap.add_argument("--no-crash", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.out.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="ruvllm-load-"))
    data_dir = work / "data"
    log = work / "server.log"
    print(f"work dir {work}", flush=True)
    server = Server(data_dir, log, args.max_queue).start()
    print(f"server ready in {server.ready_s:.1f} s on {server.url}", flush=True)
    load = Load(server.url, args.max_tokens, args.repeat_share, args.seed, questions())
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench.load", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"max_tokens": args.max_tokens, "repeat_share": args.repeat_share, "max_queue": args.max_queue,
                     "modules": MODULES, "slots": 1},
        "startup_s": round(server.ready_s, 1), "levels": [], "load_average_before": os.getloadavg(),
    }
    acked: list[str] = []
    search_before = scrape(server.url, "ruvllm_memory_stat")
    for c in levels:
        n = args.per_level or max(8, 3 * c)
        results, seconds = load.run(c, n)
        summary = summarise(results, seconds, c)
        acked += [r.node_id for r in results if r.ok and r.node_id]
        report["levels"].append(summary)
        print(f"c={c}: {summary['ok']}/{summary['requests']} ok, {summary['qps']} QPS, p50 {summary['p50_ms']} ms, "
              f"p99 {summary['p99_ms']} ms, errors {summary['errors']}", flush=True)
    search_after = scrape(server.url, "ruvllm_memory_stat")
    report["load_average_after"] = os.getloadavg()
    report["memory_search_cache"] = {
        k.split('"')[1]: search_after.get(k, 0) - search_before.get(k, 0)
        for k in search_after if "cache.hits" in k or "cache.misses" in k
    }

    t0 = time.monotonic()
    code = server.stop(signal.SIGTERM)
    stop_s = time.monotonic() - t0
    lost = missing_nodes(data_dir, acked)
    report["graceful"] = {"exit_code": code, "stop_s": round(stop_s, 2), "acknowledged": len(set(acked)),
                          "lost": len(lost), "lost_ids": lost}
    print(f"SIGTERM: exit {code} in {stop_s:.1f} s; {len(set(acked))} acknowledged write-backs, {len(lost)} lost",
          flush=True)

    if not args.no_crash:
        report["crash"] = crash_run(data_dir, log, args, load)
        c = report["crash"]
        print(f"kill -9: {c['acknowledged']} acknowledged before the kill, {c['failed_in_flight']} in flight failed, "
              f"{c['lost']} lost after restart", flush=True)

    (args.out / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "load.md").write_text(markdown(report))
    print(f"wrote {args.out / 'load.json'} and {args.out / 'load.md'}", flush=True)
    failed = report["graceful"]["lost"] or (report.get("crash") or {}).get("lost")
    return 1 if failed else 0


def crash_run(data_dir: Path, log: Path, args: argparse.Namespace, load: Load) -> dict[str, Any]:
    server = Server(data_dir, log, args.max_queue).start()
    load.url = server.url
    stop = threading.Event()
    box: dict[str, Any] = {}

    def drive() -> None:
        box["results"], box["seconds"] = load.run(args.crash_clients, 10_000, stop)

    t = threading.Thread(target=drive, daemon=True)
    t.start()
    time.sleep(args.crash_seconds)
    stop.set()  # clients send nothing new; what is in flight now dies with the server
    server.stop(signal.SIGKILL)
    t.join(60)
    results: list[Result] = box.get("results", [])
    acked = [r.node_id for r in results if r.ok and r.node_id]
    restarted = Server(data_dir, log, args.max_queue).start()  # recovers the index from the store
    health = httpx.get(restarted.url + "/health", timeout=10).json()
    code = restarted.stop(signal.SIGTERM)
    lost = missing_nodes(data_dir, acked)
    return {"clients": args.crash_clients, "killed_after_s": args.crash_seconds,
            "answered": sum(1 for r in results if r.ok), "acknowledged": len(set(acked)),
            "failed_in_flight": sum(1 for r in results if not r.ok), "restart_ready_s": round(restarted.ready_s, 1),
            "restart_health": health.get("status"), "restart_exit_code": code, "lost": len(lost), "lost_ids": lost}


STAGES = ("embed", "search", "expand", "rank", "route", "prompt", "generate", "judge", "writeback")


def _fmt_load(avg: Any) -> str:
    return "/".join(f"{x:.1f}" for x in avg) if avg else "?"


def markdown(rep: dict[str, Any]) -> str:
    s = rep["settings"]
    lines = [
        "# Load test: HTTP server on loopback",
        "",
        f"Command: `{rep['command']}` — {rep['machine']['cpus']} CPUs, Python {rep['machine']['python']}; "
        f"max_tokens {s['max_tokens']}, {int(s['repeat_share'] * 100)}% repeated questions, one generation slot, "
        f"queue {s['max_queue']}; memory: stdlib {s['modules']}. Server ready in {rep['startup_s']} s. "
        f"Host load average (1/5/15 min) before {_fmt_load(rep['load_average_before'])}, after "
        f"{_fmt_load(rep.get('load_average_after', []))}: the machine is shared, so absolute numbers are noisy.",
        "",
        "| clients | requests | QPS | p50 ms | p99 ms | error rate | cache hits (n, p50) | model calls (n, p50) "
        "| repeated q (n, p50) | models |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lv in rep["levels"]:
        ch, mc, rq = lv["cache_hits"], lv["model_calls"], lv["repeated_questions"]
        models = ", ".join(f"{k} {v}" for k, v in sorted(lv["models"].items()))
        lines.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['qps']} | {lv['p50_ms']} | {lv['p99_ms']} | "
            f"{lv['error_rate']:.1%} | {ch['n']}, {ch['p50_ms']} | {mc['n']}, {mc['p50_ms']} | "
            f"{rq['n']}, {rq['p50_ms']} | {models} |"
        )
    lines += [
        "",
        "Mean time per stage inside the server (ms); *queued* is the rest of the client-side time "
        "(waiting for the generation slot, HTTP):",
        "",
        "| clients | " + " | ".join(STAGES) + " | queued |",
        "|---:|" + "---:|" * (len(STAGES) + 1),
    ]
    for lv in rep["levels"]:
        st = lv["stage_mean_ms"]
        lines.append(f"| {lv['concurrency']} | " + " | ".join(str(st.get(k, "")) for k in STAGES)
                     + f" | {lv['queue_wait_mean_ms']} |")
    g = rep["graceful"]
    lines += [
        "",
        "Latency is client-side wall time of a non-streaming `POST /v1/chat/completions` (queueing included); "
        "p99 over a few dozen requests is close to the maximum. A *cache hit* is an answer served without a "
        "model call (`ruvllm.cache_hit`); *repeated q* are requests repeating an earlier question (their memory "
        f"search may hit the search cache: {rep.get('memory_search_cache', {})}).",
        "",
        "## Durability",
        "",
        f"- Graceful stop (SIGTERM): exit code {g['exit_code']} after {g['stop_s']} s; "
        f"**{g['acknowledged']} acknowledged write-backs, {g['lost']} lost**.",
    ]
    c = rep.get("crash")
    if c:
        lines.append(
            f"- Crash (SIGKILL after {c['killed_after_s']} s of load with {c['clients']} clients): {c['answered']} "
            f"answered, {c['failed_in_flight']} in flight failed; after restart (ready in {c['restart_ready_s']} s, "
            f"health {c['restart_health']}): **{c['acknowledged']} acknowledged write-backs, {c['lost']} lost**."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
