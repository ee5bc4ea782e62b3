"""Hybrid indexing: the IVF-PQ cold tier on disk against HNSW in RAM, on the same corpus.

    python -m bench.hybrid --n 1000000 --dim 384            # → bench/results/hybrid/hybrid.{json,md}

For each engine, in its own process (so RSS is its own): build time, bytes on disk and resident
per vector, single-query p50/p99 latency at k=10 and recall@10 against exact search. HNSW runs
with the spec's parameter row for 1M–10M vectors (M=48, efConstruction=300, efSearch=128) unless
``--hnsw`` says otherwise; IVF-PQ with PQ48x8 (48-byte codes) and nlist ≈ 4·√n, at several nprobe values,
with and without the exact float16 re-rank. Data: the clustered unit vectors of bench/memory.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.memory import exact_topk, latencies, make_data, recall_at, rss_mb, summary

ROOT = Path(__file__).resolve().parent.parent


def child_hnsw(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    import hnswlib

    base = np.load(work / "base.npy")  # read in full before rss0: a memory-mapped base would count as the index's
    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    n, dim = base.shape
    m, efc, efs = cfg["hnsw"]
    rss0 = rss_mb()
    idx = hnswlib.Index(space="cosine", dim=dim)
    idx.init_index(max_elements=n, M=m, ef_construction=efc)
    t0 = time.perf_counter()
    for s in range(0, n, 100_000):
        idx.add_items(base[s : s + 100_000], np.arange(s, min(n, s + 100_000)), num_threads=-1)
    build = time.perf_counter() - t0
    rss = rss_mb() - rss0
    idx.save_index(str(work / "hnsw.bin"))
    disk = (work / "hnsw.bin").stat().st_size
    (work / "hnsw.bin").unlink()
    idx.set_ef(efs)
    times, found = latencies(lambda q: idx.knn_query(q, k=10, num_threads=1)[0][0], queries)
    return {"engine": f"hnswlib M={m} efC={efc} efS={efs}", "build_s": round(build, 1),
            "resident_bytes_per_vector": round(rss * 2**20 / n, 1), "disk_bytes_per_vector": round(disk / n, 1),
            "k10": summary(times), "recall@10": round(recall_at(found, truth, 10), 4)}


def child_ivfpq_build(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from ruvllm.memory.ivfpq import IvfPqIndex, IvfPqParams

    base = np.load(work / "base.npy")
    n, dim = base.shape
    params = IvfPqParams.for_size(n, dim)
    if cfg.get("nlist"):
        params = IvfPqParams(nlist=cfg["nlist"], pq_m=params.pq_m, pq_bits=params.pq_bits, opq=params.opq)
    t0 = time.perf_counter()
    IvfPqIndex.build(work / "cold", base, np.arange(n, dtype=np.int64), params, train_size=cfg["train_size"])
    return {"build_s": round(time.perf_counter() - t0, 1), "factory": params.factory()}


def child_ivfpq_serve(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """A new process opens the saved tier (memory-mapped) and searches it."""
    from ruvllm.memory.ivfpq import IvfPqIndex

    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    rss0 = rss_mb()
    t0 = time.perf_counter()
    cold = IvfPqIndex.open(work / "cold")
    open_s = time.perf_counter() - t0
    n = len(cold)
    rss_open = rss_mb() - rss0
    out: dict[str, Any] = {"open_s": round(open_s, 2), "rss_after_open_mb": round(rss_open, 1),
                           "disk_bytes_per_vector": cold.info()["disk_bytes_per_vector"], "runs": []}
    for refine in cfg["refine"]:
        for nprobe in cfg["nprobe"]:
            times, found = latencies(lambda q, p=nprobe, r=refine: cold.search(q, 10, nprobe=p, refine=r)[0][0],
                                      queries)
            out["runs"].append({"nprobe": nprobe, "refine": refine, "k10": summary(times),
                                "recall@10": round(recall_at(found, truth, 10), 4)})
    out["rss_after_queries_mb"] = round(rss_mb() - rss0, 1)
    out["resident_bytes_per_vector"] = round(out["rss_after_queries_mb"] * 2**20 / n, 1)
    return out


CHILDREN = {"hnsw": child_hnsw, "ivfpq-build": child_ivfpq_build, "ivfpq-serve": child_ivfpq_serve}


def run_child(name: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.hybrid", "--child", name, "--work", str(work), "--cfg", json.dumps(cfg)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"{name} failed (exit {proc.returncode}): {proc.stderr[-800:]}")


def to_markdown(doc: dict[str, Any]) -> str:
    cfg, res = doc["config"], doc["results"]
    lines = [
        f"# Hybrid indexing — IVF-PQ on disk vs HNSW in RAM, n={cfg['n']:,}, dim={cfg['dim']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}; load average {doc['loadavg_start'][0]} at the start, "
        f"{doc['loadavg_end'][0]} at the end (a shared machine: latencies are noisy, recall and bytes are not)  ",
        f"Data: clustered unit vectors (bench/memory.py), {cfg['queries']} held-out queries, exact top-10 as truth. "
        "Single queries, one thread.",
        "",
        "| engine | build s | on disk B/vector | resident B/vector | k=10 p50 ms | k=10 p99 ms | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    h = res.get("hnsw")
    if h:
        lines.append(f"| {h['engine']} | {h['build_s']} | {h['disk_bytes_per_vector']:,.0f} | "
                     f"{h['resident_bytes_per_vector']:,.0f} | {h['k10']['p50_ms']:.3f} | {h['k10']['p99_ms']:.3f} | "
                     f"{h['recall@10']:.4f} |")
    c = res.get("ivfpq")
    if c:
        for r in c["runs"]:
            how = f"exact re-rank of {r['refine'] * 10}" if r["refine"] else "PQ scores only"
            lines.append(f"| IVF-PQ {c['factory']}, nprobe={r['nprobe']}, {how} | {c['build_s']} | "
                         f"{c['disk_bytes_per_vector']:,.0f} | {c['resident_bytes_per_vector']:,.0f} | "
                         f"{r['k10']['p50_ms']:.3f} | {r['k10']['p99_ms']:.3f} | {r['recall@10']:.4f} |")
        lines += ["", f"IVF-PQ: a new process opens the tier in {c['open_s']} s with {c['rss_after_open_mb']} MB "
                      f"resident; after all {len(c['runs']) * cfg['queries']:,} queries, "
                      f"{c['rss_after_queries_mb']} MB (pages of the lists and vectors the queries touched)."]
    lines += ["", *[f"Note: {x}" for x in doc.get("notes", [])], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--hnsw", default="48,300,128", help="M,efConstruction,efSearch ('' skips HNSW)")
    ap.add_argument("--nprobe", default="8,16,32,64")
    ap.add_argument("--refine", default="0,4,16")
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default: about 4·√n)")
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hybrid"))
    ap.add_argument("--work", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = CHILDREN[args.child](Path(args.work), json.loads(args.cfg))
        print("RESULT " + json.dumps(res))
        return 0
    cfg: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "queries": args.queries, "train_size": args.train_size, "nlist": args.nlist,
        "hnsw": [int(x) for x in args.hnsw.split(",")] if args.hnsw else None,
        "nprobe": [int(x) for x in args.nprobe.split(",")], "refine": [int(x) for x in args.refine.split(",")],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": "python -m bench.hybrid " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "config": cfg, "results": {},
        "notes": ["resident B/vector: the process's RSS growth over the number of vectors (for IVF-PQ, the "
                  "memory-mapped pages the queries touched, which the OS may drop under pressure); on disk: "
                  "the saved index files (for IVF-PQ: lists + float16 vectors for the re-rank + labels)"],
    }

    def save() -> None:
        doc["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        (out / "hybrid.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "hybrid.md").write_text(to_markdown(doc))

    with tempfile.TemporaryDirectory(prefix="ruvllm-hybrid-", dir=args.work or None) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        base, queries, _ = make_data(args.n, args.queries, args.dim, max(args.n // 100, 1), 0.9, 0)
        np.save(work / "base.npy", base)
        np.save(work / "queries.npy", queries)
        np.save(work / "truth.npy", exact_topk(base, queries, 10))
        del base
        print(f"data: {args.n:,} x {args.dim}, truth in {time.perf_counter() - t0:.0f} s", flush=True)
        built = run_child("ivfpq-build", work, cfg)
        doc["results"]["ivfpq"] = {**built, **run_child("ivfpq-serve", work, cfg)}
        print(f"ivfpq: {json.dumps(doc['results']['ivfpq'])[:300]}", flush=True)
        save()
        if cfg["hnsw"]:
            doc["results"]["hnsw"] = run_child("hnsw", work, cfg)
            print(f"hnsw: {json.dumps(doc['results']['hnsw'])}", flush=True)
            save()
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
