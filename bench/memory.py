"""Memory benchmark: ruvllm ``Memory`` against the raw ANN libraries and exact numpy, one run.

    nice -n 10 .venv/bin/python -m bench.memory --n 100000 --dim 384     # the recorded run
    nice -n 10 .venv/bin/python -m bench.memory --n 20000 --dim 384      # a couple of minutes

Data: clustered synthetic embeddings (``--clusters`` Gaussian clusters, ``--spread`` noise
around each centre, unit-normalised), ``--queries`` held-out queries from the same
distribution, exact top-64 by numpy as ground truth. Every engine is built with the same
HNSW parameters (M=32, efConstruction=200, efSearch=64 unless given) and runs in its own
subprocess, so build time and RSS are measured in isolation:

- ``ruvllm``   ``Memory.add_many`` in batches (SQLite WAL, synchronous=FULL, then hnswlib),
               ``Memory.search`` (validation + index + node rows from SQLite), cache off;
               plus 2-hop ``expand`` latency, durable insert throughput, index save/load/rebuild
- ``hnswlib``  the raw library (cosine) — the reference for the overhead ratio
- ``faiss-hnsw``, ``faiss-hnsw-sq8``  faiss IndexHNSWFlat / IndexHNSWSQ (8-bit), inner product
- ``usearch``  usearch Index (cos, f32), if importable
- ``numpy``    exact search (one matmul per query)

Writes bench/results/memory.json and bench/results/memory.md (``--out`` to change). Single
queries run one at a time on one thread (the latency a request sees); builds use all cores.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("ruvllm", "hnswlib", "faiss-hnsw", "faiss-hnsw-sq8", "usearch", "ruvector", "numpy")
WARMUP = 20
_R_co = TypeVar("_R_co", covariant=True)


class QueryFn(Protocol[_R_co]):
    """``fn(q)`` for one query vector. A Protocol rather than ``Callable[[np.ndarray], R]``: mypy cannot
    infer a ``lambda q, k=k: ...`` (a loop value bound as a default) against a Callable context."""

    def __call__(self, q: np.ndarray, /) -> _R_co: ...


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


def make_data(n: int, nq: int, dim: int, clusters: int, spread: float, seed: int) -> tuple[np.ndarray, ...]:
    """Clustered unit vectors: base (n, dim), queries (nq, dim), cluster ids of base (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)  # (c, dim)
    sizes = rng.zipf(1.6, clusters).astype(np.float64)
    p = np.minimum(sizes, 50) / np.minimum(sizes, 50).sum()  # uneven but bounded cluster sizes

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        cid = rng.choice(clusters, size=m, p=p)
        x = np.empty((m, dim), np.float32)
        for s in range(0, m, 50_000):
            part = cid[s : s + 50_000]
            x[s : s + len(part)] = centres[part] + spread * rng.normal(size=(len(part), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x, cid

    base, cid = draw(n)
    queries, _ = draw(nq)
    return base, queries, cid


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        sims = queries[s : s + 256] @ base.T  # (b, n)
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        out[s : s + 256] = np.take_along_axis(part, order, axis=1)
    return out


# ----------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def latencies(fn: QueryFn[Any], queries: np.ndarray) -> tuple[list[float], list[Any]]:
    for q in queries[:WARMUP]:
        fn(q)
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter_ns()
        r = fn(q)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        results.append(r)
    return times, results


def summary(times: list[float]) -> dict[str, float]:
    a = np.asarray(times)
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "mean_ms": round(float(a.mean()), 4)}


def recall_at(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth,
                                                                                              strict=True)]))


# ----------------------------------------------------------------------------------------
# engines (each runs in its own process: ``--child ENGINE --work DIR``)
# ----------------------------------------------------------------------------------------


def run_engine(engine: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    base = np.load(work / "base.npy")
    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    m, efc, efs = cfg["m"], cfg["ef_construction"], cfg["ef_search"]
    n, dim = base.shape
    threads = os.cpu_count() or 1
    out: dict[str, Any] = {"engine": engine}
    rss0 = rss_mb()
    search: dict[int, QueryFn[np.ndarray]] = {}

    if engine == "numpy":
        out["build_s"] = 0.0

        def exact(q: np.ndarray, k: int) -> np.ndarray:
            sims = base @ q  # (n,)
            top = np.argpartition(-sims, k)[:k]
            return top[np.argsort(-sims[top])]

        for k in (10, 64):
            search[k] = lambda q, k=k: exact(q, k)
        queries = queries[: min(len(queries), 200 if n > 50_000 else len(queries))]  # slow: a sample
        truth = truth[: len(queries)]

    elif engine == "hnswlib":
        import hnswlib

        idx = hnswlib.Index(space="cosine", dim=dim)
        t0 = time.perf_counter()
        idx.init_index(max_elements=n, M=m, ef_construction=efc)
        idx.add_items(base, np.arange(n), num_threads=threads)
        out["build_s"] = time.perf_counter() - t0
        idx.set_ef(efs)
        for k in (10, 64):
            search[k] = lambda q, k=k: idx.knn_query(q, k=k, num_threads=1)[0][0]
        out["version"] = "hnswlib 0.8.0"

    elif engine in ("faiss-hnsw", "faiss-hnsw-sq8"):
        import faiss

        fidx: faiss.IndexHNSW
        if engine == "faiss-hnsw":
            fidx = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        else:
            # faiss's stub types arg 2 as a ScalarQuantizer; the C++ constructor takes a QuantizerType (an int)
            fidx = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit,  # type: ignore[arg-type]
                                     m, faiss.METRIC_INNER_PRODUCT)
        fidx.hnsw.efConstruction = efc
        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        if not fidx.is_trained:
            fidx.train(base[: min(n, 100_000)])
        fidx.add(base)
        out["build_s"] = time.perf_counter() - t0
        fidx.hnsw.efSearch = efs
        faiss.omp_set_num_threads(1)
        for k in (10, 64):
            search[k] = lambda q, k=k: fidx.search(q[None, :], k)[1][0]
        out["version"] = f"faiss {faiss.__version__}"

    elif engine == "usearch":
        from usearch.index import Index

        uidx = Index(ndim=dim, metric="cos", dtype="f32", connectivity=m, expansion_add=efc, expansion_search=efs)
        t0 = time.perf_counter()
        uidx.add(np.arange(n), base, threads=threads)
        out["build_s"] = time.perf_counter() - t0
        for k in (10, 64):
            search[k] = lambda q, k=k: uidx.search(q, k, threads=1).keys
        import usearch

        out["version"] = f"usearch {usearch.__version__}"

    elif engine == "ruvector":
        import ruvector  # optional, often not installed

        ridx = ruvector.HnswIndex.create(dim, metric="cosine", m=m, ef_construction=efc, ef_search=efs)
        keys = [str(i) for i in range(n)]
        t0 = time.perf_counter()
        for s in range(0, n, 10_000):
            ridx.insert_batch(keys[s : s + 10_000], base[s : s + 10_000])
        out["build_s"] = time.perf_counter() - t0
        for k in (10, 64):
            search[k] = lambda q, k=k: np.fromiter((int(h[0]) for h in ridx.search(q, k)), np.int64)
        out["version"] = "ruvector 0.1.4 (ruvector-core 0.2.0)"

    elif engine == "ruvllm-build":
        return {"engine": engine, **ruvllm_build(base, work, cfg)}

    elif engine == "ruvllm":
        del base
        out.update(ruvllm_serve(queries, work, cfg, search))

    else:
        raise SystemExit(f"unknown engine {engine}")

    out["rss_mb"] = round(rss_mb() - rss0, 1)
    out["rss_mb_per_million"] = round(out["rss_mb"] / n * 1e6, 1)
    for k in (10, 64):
        times, found = latencies(search[k], queries)
        out[f"k{k}"] = summary(times)
        if k == 10:
            out["recall@10"] = round(recall_at([np.asarray(f) for f in found], truth, 10), 4)
        else:
            out["recall@64"] = round(recall_at([np.asarray(f) for f in found], truth, 64), 4)
    out["queries_timed"] = len(queries)
    if "build_s" in out:
        out["build_s"] = round(out["build_s"], 2)
    return out


def ruvllm_build(base: np.ndarray, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Phase 1 (own process): durable build, graph, insert throughput, save/load/rebuild timings."""
    from ruvllm.config import HnswParams
    from ruvllm.memory import Memory
    from ruvllm.memory.schema import Edge, EdgeMetadata, EdgeType, Node, NodeMetadata, NodeType

    n, dim = base.shape
    cid = np.load(work / "cid.npy")
    rng = np.random.default_rng(1)
    path = work / "ruvllm-mem"
    params = HnswParams(cfg["m"], cfg["ef_construction"], cfg["ef_search"])
    res: dict[str, Any] = {}
    mem = Memory.open(path, dim=dim, params=params, cache_size=0)
    ids: list[str] = []
    t0 = time.perf_counter()
    for s in range(0, n, 10_000):
        nodes = [Node(text=f"synthetic node {i} of cluster {cid[i]}", vector=base[i], type=NodeType.DOCUMENT,
                      source="bench", metadata=NodeMetadata(domain=f"c{cid[i] % 16}"))
                 for i in range(s, min(n, s + 10_000))]
        mem.add_many(nodes)
        ids.extend(x.id for x in nodes)
    res["build_s"] = round(time.perf_counter() - t0, 2)
    (work / "ids.json").write_text(json.dumps(ids))
    # the graph: each node → 2 random members of its cluster (SameTopic) + the previous member (Follows)
    t0 = time.perf_counter()
    by_cluster: dict[int, list[int]] = {}
    for i, c in enumerate(cid.tolist()):
        by_cluster.setdefault(c, []).append(i)
    edges: list[Edge] = []
    md = EdgeMetadata(created_by="bench")
    for members in by_cluster.values():
        arr = np.asarray(members)
        for j, i in enumerate(members):
            if j:
                edges.append(Edge(ids[i], ids[members[j - 1]], EdgeType.FOLLOWS, 0.9, metadata=md))
            if len(arr) > 2:
                for o in rng.choice(arr, size=2, replace=False).tolist():
                    if o != i:
                        edges.append(Edge(ids[i], ids[o], EdgeType.SAME_TOPIC, float(rng.uniform(0.2, 1.0)),
                                          metadata=md))
    for s in range(0, len(edges), 50_000):
        mem.add_many([], edges[s : s + 50_000])
    res["graph_build_s"] = round(time.perf_counter() - t0, 2)
    res["edges"] = mem.stats()["edges"]
    # durable inserts: each add() is its own fsynced transaction; add_many batches share one
    # (into a second, scratch memory, so the searched corpus stays exactly the benchmark's)
    extra = rng.normal(size=(2600, dim)).astype(np.float32)
    with Memory.open(work / "ruvllm-inserts", dim=dim, params=params, cache_size=0) as scratch:
        scratch.add_many([Node(text="seed", vector=v) for v in base[:5000]])
        t0 = time.perf_counter()
        for v in extra[:300]:
            scratch.add(Node(text="insert", vector=v))
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(300, 2600, 256):
            scratch.add_many([Node(text="insert", vector=v) for v in extra[s : s + 256]])
        batched = time.perf_counter() - t0
    res["insert_single_per_s"] = round(300 / single, 1)
    res["insert_batch256_per_s"] = round(2300 / batched, 1)
    # shutdown and the next start: save, load, and a rebuild as after a crash
    t0 = time.perf_counter()
    mem.close()
    res["close_save_s"] = round(time.perf_counter() - t0, 2)
    if n <= 200_000:
        meta = (path / "index.json").read_text()
        (path / "index.json").unlink()
        t0 = time.perf_counter()
        rebuilt = Memory.open(path, dim=dim, params=params, cache_size=0)
        rebuilt.store.close()  # rebuilt, not saved
        if rebuilt._dir_lock is not None:
            rebuilt._dir_lock.release()
        res["open_rebuild_s"] = round(time.perf_counter() - t0, 2)
        (path / "index.json").write_text(meta)
    res["db_mb"] = round(sum(p.stat().st_size for p in path.glob("memory.db*")) / 2**20, 1)
    res["index_file_mb"] = round((path / "index.hnsw").stat().st_size / 2**20, 1)
    return res


def ruvllm_serve(queries: np.ndarray, work: Path, cfg: dict[str, Any],
                 search: dict[int, QueryFn[np.ndarray]]) -> dict[str, Any]:
    """Phase 2 (own process, as a server starts): open the saved memory, then search and expand."""
    from ruvllm.config import HnswParams
    from ruvllm.memory import Memory, NodeCache, QueryCache

    ids = json.loads((work / "ids.json").read_text())
    pos = {nid: i for i, nid in enumerate(ids)}
    del ids
    dim = queries.shape[1]
    params = HnswParams(cfg["m"], cfg["ef_construction"], cfg["ef_search"])
    res: dict[str, Any] = {"version": "ruvllm Memory (SQLite WAL synchronous=FULL + hnswlib 0.8.0)"}
    t0 = time.perf_counter()
    mem = Memory.open(work / "ruvllm-mem", dim=dim, params=params, cache_size=0, node_cache=0)
    res["open_load_s"] = round(time.perf_counter() - t0, 2)
    assert mem.stats()["index"]["on_open"]["action"] == "loaded", mem.stats()["index"]

    def interleaved(k: int) -> dict[str, Any]:
        """Raw hnswlib on the very same index vs Memory.search (hits: ids + scores, nodes read on
        first use) vs Memory.search with every hit's node read from the store, interleaved query by
        query so all three see the same background load (the fair overhead measure on a shared machine)."""
        raw = mem.index._idx

        def read_all(q: np.ndarray) -> None:
            for h in mem.search(q, k):
                _ = h.node

        calls: dict[str, Callable[[np.ndarray], Any]] = {
            "raw": lambda q: raw.knn_query(q, k=k, num_threads=1),
            "mem": lambda q: mem.search(q, k),
            "read": read_all,
        }
        for q in queries[:WARMUP]:
            for fn in calls.values():
                fn(q)
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        for i, q in enumerate(queries):
            # a later search of the same query finds the graph's pages in the CPU caches: rotate who goes first
            for who in order[i % 3:] + order[: i % 3]:
                t0n = time.perf_counter_ns()
                calls[who](q)
                times[who].append((time.perf_counter_ns() - t0n) / 1e6)
        raw_p50 = float(np.median(times["raw"]))
        return {"raw_hnswlib": summary(times["raw"]), "memory_search": summary(times["mem"]),
                "memory_search_read_nodes": summary(times["read"]),
                "p50_ratio": round(float(np.median(times["mem"])) / raw_p50, 3),
                "p50_ratio_read_nodes": round(float(np.median(times["read"])) / raw_p50, 3)}

    for k in (10, 64):
        res[f"cold_k{k}"] = interleaved(k)  # node cache off: every hit's row is read from SQLite
    mem._nodes_cache = NodeCache(10_000)  # the optional node cache (off by default) from here on
    for k in (10, 64):
        res[f"default_k{k}"] = interleaved(k)
    res["node_cache"] = mem.stats()["node_cache"]
    # 2-hop expansion from the top-8 hits, as the orchestrator does (min weight 0.1)
    seeds = [[h.node.id for h in mem.search(q, 8)] for q in queries[:300]]
    for name, limit in (("expand_2hop_limit32", 32), ("expand_2hop_limit256", 256)):
        times, sizes, deep = [], [], []
        for sd in seeds:
            t0n = time.perf_counter_ns()
            got = mem.expand(sd, hops=2, min_weight=0.1, limit=limit)
            times.append((time.perf_counter_ns() - t0n) / 1e6)
            sizes.append(len(got))
            deep.append(sum(e.hop == 2 for e in got))
        res[name] = {**summary(times), "mean_nodes": round(float(np.mean(sizes)), 1),
                     "mean_hop2_nodes": round(float(np.mean(deep)), 1)}
    # repeated queries through the result cache
    mem._cache = QueryCache(1024, 300.0)
    for q in queries[:200]:
        mem.search(q, 10)
    cached, _ = latencies(lambda q: mem.search(q, 10), queries[:200])
    res["cached_k10"] = summary(cached)
    mem._cache = QueryCache(0, 0.0)
    mem._nodes_cache = NodeCache(0)  # the table's row measures the default configuration
    for k in (10, 64):
        search[k] = lambda q, k=k: np.fromiter((pos.get(h.node.id, -1) for h in mem.search(q, k)), np.int64)
    return res


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def _interleaved_row(ru: dict[str, Any], mode: str, label: str, k: int) -> str:
    r = ru[f"{mode}_k{k}"]
    row = (f"| k={k}, {label}: Memory.search p50 / raw hnswlib p50 on the same index, interleaved | "
           f"{r['memory_search']['p50_ms']:.3f} / {r['raw_hnswlib']['p50_ms']:.3f} ms = **{r['p50_ratio']:.2f}x** |")
    if "memory_search_read_nodes" in r:  # results from before the lazy read path lack it
        row += (f"\n| k={k}, {label}: the same, then every hit's node read from the store | "
                f"{r['memory_search_read_nodes']['p50_ms']:.3f} / {r['raw_hnswlib']['p50_ms']:.3f} ms = "
                f"**{r['p50_ratio_read_nodes']:.2f}x** |")
    return row


def to_markdown(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    rows = doc["engines"]
    ref = next((r for r in rows if r["engine"] == "hnswlib" and "error" not in r), None)
    lines = [
        f"# Memory benchmark — n={cfg['n']:,}, dim={cfg['dim']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {doc['machine']}; load average {doc['loadavg_start'][0]} at the start, "
        f"{doc['loadavg_end'][0]} at the end (a shared machine: compare ratios within a run)  ",
        f"Data: {cfg['clusters']} Gaussian clusters, spread {cfg['spread']}, unit vectors; {cfg['queries']} held-out "
        f"queries; ground truth = exact numpy top-64. HNSW M={cfg['m']}, efConstruction={cfg['ef_construction']}, "
        f"efSearch={cfg['ef_search']}. Latencies: single queries, one thread, medians (p50) and p99 in ms.",
        "",
        "| engine | build s | k=10 p50 | k=10 p99 | k=64 p50 | k=64 p99 | recall@10 | recall@64 | RSS MB / 1M vec "
        "| p50 k=10 vs hnswlib | p50 k=64 vs hnswlib |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['engine']} | — | {r['error']} |||||||||")
            continue
        ratio10 = f"{r['k10']['p50_ms'] / ref['k10']['p50_ms']:.2f}x" if ref else "—"
        ratio64 = f"{r['k64']['p50_ms'] / ref['k64']['p50_ms']:.2f}x" if ref else "—"
        lines.append(
            f"| {r['engine']} | {r['build_s']:.1f} | {r['k10']['p50_ms']:.3f} | {r['k10']['p99_ms']:.3f} | "
            f"{r['k64']['p50_ms']:.3f} | {r['k64']['p99_ms']:.3f} | {r['recall@10']:.4f} | {r['recall@64']:.4f} | "
            f"{r['rss_mb_per_million']:,.0f} | {ratio10} | {ratio64} |"
        )
    ru = next((r for r in rows if r["engine"] == "ruvllm" and "error" not in r), None)
    if ru:
        lines += [
            "",
            "## ruvllm Memory, beyond search",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| build (add_many, 10k-node durable batches) | {ru['build_s']:.1f} s |",
            f"| graph build ({ru['edges']:,} edges) | {ru['graph_build_s']:.1f} s |",
            *[_interleaved_row(ru, mode, label, k)
              for mode, label in (("cold", "node cache off (default)"), ("default", "node cache 10,000 nodes"))
              for k in (10, 64)],
            f"| node cache hit rate over those queries | {ru['node_cache']['hit_rate']:.1%} |",
            f"| 2-hop expansion from 8 hits, limit 32: p50 / p99 | {ru['expand_2hop_limit32']['p50_ms']:.3f} / "
            f"{ru['expand_2hop_limit32']['p99_ms']:.3f} ms |",
            f"| 2-hop expansion from 8 hits, limit 256: p50 / p99 (mean {ru['expand_2hop_limit256']['mean_nodes']} "
            f"nodes, {ru['expand_2hop_limit256']['mean_hop2_nodes']} at hop 2) | "
            f"{ru['expand_2hop_limit256']['p50_ms']:.3f} / {ru['expand_2hop_limit256']['p99_ms']:.3f} ms |",
            f"| repeated query (LRU cache hit), k=10 p50 | {ru['cached_k10']['p50_ms']:.4f} ms |",
            f"| durable insert, one node per transaction (fsync each) | {ru['insert_single_per_s']:,.0f} nodes/s |",
            f"| durable insert, 256 nodes per transaction | {ru['insert_batch256_per_s']:,.0f} nodes/s |",
            f"| close (index save) | {ru['close_save_s']:.2f} s |",
            f"| open in a new process (index load + CRC + checks) | {ru['open_load_s']:.2f} s |",
        ]
        if "open_rebuild_s" in ru:
            lines.append(f"| open after a crash (index rebuilt from the store) | {ru['open_rebuild_s']:.2f} s |")
        lines += [
            f"| store on disk / index file | {ru['db_mb']:,.0f} MB / {ru['index_file_mb']:,.0f} MB |",
        ]
    lines += ["", *[f"Note: {n}" for n in doc.get("notes", [])]]
    lines += ["", "Versions: " + "; ".join(f"{r['engine']}: {r.get('version', '-')}" for r in rows), ""]
    return "\n".join(lines)


def child(engine: str, work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one engine in a fresh process; its result is the ``RESULT {json}`` line it prints."""
    env = dict(os.environ)
    if engine == "numpy":  # one BLAS thread: the single-query latency a request sees, like the others
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", engine, "--work", str(work),
         *[a for k, v in cfg.items() for a in (f"--{k.replace('_', '-')}", str(v))]],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1])
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=0, help="default: n / 100")
    ap.add_argument("--spread", type=float, default=0.9, help="noise around a cluster centre (per dimension)")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--work", default="", help="scratch directory (default: a temporary one)")
    ap.add_argument("--append", action="store_true",
                    help="keep the other engines' rows of an earlier run with the same config in --out")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cfg = {"n": args.n, "dim": args.dim, "queries": args.queries, "clusters": args.clusters or max(10, args.n // 100),
           "spread": args.spread, "m": args.m, "ef_construction": args.ef_construction, "ef_search": args.ef_search,
           "seed": args.seed}

    if args.child:
        res = run_engine(args.child, Path(args.work), cfg)
        print("RESULT " + json.dumps(res))
        return 0

    load0 = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="ruvllm-bench-", dir=args.work or None) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        base, queries, cid = make_data(args.n, args.queries, args.dim, cfg["clusters"], args.spread, args.seed)
        truth = exact_topk(base, queries, 64)
        np.save(work / "base.npy", base)
        np.save(work / "queries.npy", queries)
        np.save(work / "truth.npy", truth)
        np.save(work / "cid.npy", cid)
        print(f"data: {args.n:,} x {args.dim} + {args.queries} queries, truth in {time.perf_counter() - t0:.1f} s",
              flush=True)
        del base
        rows = []
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            t0 = time.perf_counter()
            try:
                if engine == "ruvllm":
                    built = child("ruvllm-build", work, cfg)
                    res = child("ruvllm", work, cfg)
                    res.update({k: v for k, v in built.items() if k != "engine"})
                else:
                    res = child(engine, work, cfg)
            except RuntimeError as exc:
                rows.append({"engine": engine, "error": str(exc)[:200]})
                print(f"{engine}: FAILED {exc}", flush=True)
                continue
            rows.append(res)
            print(f"{engine}: build {res['build_s']} s, k=10 p50 {res['k10']['p50_ms']} ms, recall@10 "
                  f"{res['recall@10']} ({time.perf_counter() - t0:.0f} s)", flush=True)

    doc = {
        "command": "python -m bench.memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {platform.system()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": load0,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "config": cfg,
        "engines": rows,
        "notes": [
            "the first table's ruvllm row reads every hit's node (recall needs the ids), as a caller that "
            "builds a prompt from all k hits does; Memory.search alone returns ids and scores and reads the "
            "nodes on first use, in one store query per search (the interleaved rows below time both)",
        ],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.append and (out / "memory.json").exists():
        earlier = json.loads((out / "memory.json").read_text())
        if earlier.get("config") == cfg:
            ran = {r["engine"] for r in rows}
            rows[:0] = [r for r in earlier["engines"] if r["engine"] not in ran]
            doc["command"] = f"{earlier['command']}; then {doc['command']}"
            doc["loadavg_start"] = earlier.get("loadavg_start", doc["loadavg_start"])
        else:
            print("--append: the earlier run used another config; not merged", flush=True)
    (out / "memory.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "memory.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
