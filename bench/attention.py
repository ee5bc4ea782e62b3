"""Retrieval ablation: plain top-k cosine vs hop-discounted re-ranking vs graph attention (R@10).

    nice -n 10 .venv/bin/python -m bench.attention

Corpus: the Python standard library's docstrings (``ruvllm.ingest.stdlib_docs``; by default the 36
modules of the router's QA set, ~1,100 chunks; ``--modules all``: ~4,500 chunks)
with their graph: ``Follows`` between consecutive chunks of a docstring, ``SameTopic`` from a
member to its module/class (``Doc.links``). Vectors: the real sentence encoder
(``ruvllm.embedding.SentenceEmbedder``, all-MiniLM-L6-v2), cached in results/tmp/attention/.

Questions, generated from the docstrings (gold = one chunk):
  name     "What does json.dumps do?"                                  → json.dumps#0
  describe "Which function in json: serialize obj to a JSON formatted str?"  → json.dumps#0 (no name)
  bare     "Which Python function does this: serialize obj to a JSON formatted str?"  (no name, no module)
  detail   "In json.dumps, <first sentence of chunk i ≥ 1>"             → json.dumps#i

Pipeline per question: exact cosine search (k seeds) → 2-hop expansion over the graph (by hop, then
path weight, at most 64 nodes, as memory.expand) → a ranker → top 10. Rankers:
  topk       plain top-10 cosine (no graph)
  hop        the orchestrator's current ``_rank``: cosine × 0.9^hop over seeds + expansion
  attn       ``GraphAttention`` with its untrained defaults
  attn_fit   ``GraphAttention`` fitted (``attention.fit``) on the TRAIN split; modules are split,
             so evaluation questions are about modules never seen in fitting.

Writes bench/results/attention/attention_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def corpus_and_vectors(cache: Path, modules: str) -> tuple[list[Any], np.ndarray]:
    from ruvllm.ingest import STDLIB_MODULES, stdlib_docs
    from ruvllm.router.oracle import QA_MODULES

    docs = stdlib_docs(list({"all": STDLIB_MODULES, "qa": QA_MODULES}.get(modules) or modules.split(",")))
    # keyed on the chunk keys only: ingest's signatures embed reprs like "<function f at 0x7f…>",
    # so the text changes from process to process while the chunks are the same
    key = hashlib.sha256("\n".join(d.key for d in docs).encode()).hexdigest()[:16]
    f = cache / f"vectors-{key}.npy"
    if f.exists():
        return docs, np.load(f)
    from ruvllm.embedding import SentenceEmbedder

    t0 = time.perf_counter()
    vecs = SentenceEmbedder().embed([d.text for d in docs]).astype(np.float32)
    print(f"embedded {len(docs)} chunks in {time.perf_counter() - t0:.0f}s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, vecs)
    return docs, vecs


def _first_sentence(text: str) -> str:
    body = text.split("\n", 1)[1] if "\n" in text else text
    s = re.split(r"(?<=[.!?])\s", body.strip().replace("\n", " "), maxsplit=1)[0]
    return s.strip().rstrip(".")


def questions(docs: list[Any], per_type: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, d in enumerate(docs):
        qual, _, part = d.key.rpartition("#")
        kind = d.tags[0] if d.tags else "function"
        if kind == "module":
            continue
        if part == "0":
            out["name"].append({"type": "name", "q": f"What does {qual} do?", "gold": i, "module": d.domain})
            first = _first_sentence(d.text)
            if len(first.split()) >= 4:
                out["describe"].append({"type": "describe", "gold": i, "module": d.domain,
                                        "q": f"Which {kind} in {d.domain}: {first[0].lower() + first[1:]}?"})
                out["bare"].append({"type": "bare", "gold": i, "module": d.domain,
                                    "q": f"Which Python {kind} does this: {first[0].lower() + first[1:]}?"})
        else:
            first = _first_sentence(d.text)
            if len(first.split()) >= 5:
                out["detail"].append({"type": "detail", "q": f"In {qual}, {first}", "gold": i, "module": d.domain})
    qs: list[dict[str, Any]] = []
    for t in ("name", "describe", "bare", "detail"):
        items = out[t]
        idx = rng.choice(len(items), size=min(per_type, len(items)), replace=False)
        qs += [items[int(j)] for j in sorted(idx)]
    return qs


def graph(docs: list[Any]) -> dict[int, list[tuple[int, str, float]]]:
    """Undirected adjacency from Doc.links: node → [(neighbour, rel, weight)]."""
    ix = {d.key: i for i, d in enumerate(docs)}
    adj: dict[int, list[tuple[int, str, float]]] = defaultdict(list)
    for i, d in enumerate(docs):
        for other, rel, w in d.links:
            j = ix.get(other)
            if j is not None:
                adj[i].append((j, str(rel.value), float(w) if w > 0 else 0.5))
                adj[j].append((i, str(rel.value), float(w) if w > 0 else 0.5))
    return adj


def expand(adj: dict[int, list[tuple[int, str, float]]], seeds: list[int], hops: int, limit: int
           ) -> list[tuple[int, int, int, float, str]]:
    """(node, hop, via, path weight, rel) — by hop, then path weight, at most ``limit``; as memory.expand."""
    seen = set(seeds)
    frontier = [(s, 1.0) for s in seeds]
    out: list[tuple[int, int, int, float, str]] = []
    for hop in range(1, hops + 1):
        layer: dict[int, tuple[int, int, int, float, str]] = {}
        for node, pw in frontier:
            for nb, rel, w in adj.get(node, []):
                if nb in seen:
                    continue
                cand = (nb, hop, node, pw * w, rel)
                if nb not in layer or layer[nb][3] < cand[3]:
                    layer[nb] = cand
        ordered = sorted(layer.values(), key=lambda t: -t[3])
        for t in ordered:
            if len(out) >= limit:
                return out
            out.append(t)
            seen.add(t[0])
        frontier = [(t[0], t[3]) for t in ordered]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ruvllm.attention.fit import Query, fit, mrr
    from ruvllm.attention.graph import AttentionParams, GraphAttention, GraphAttentionConfig
    from ruvllm.memory.schema import EdgeType, Node, NodeMetadata

    ap = argparse.ArgumentParser()
    ap.add_argument("--modules", default="qa", help="qa (router/oracle.QA_MODULES, ~1,100 chunks) | all "
                    "(ingest.STDLIB_MODULES, ~4,500 chunks) | a comma list")
    ap.add_argument("--per-type", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=20, help="k of the vector search before expansion")
    ap.add_argument("--hops", type=int, default=2)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--train-share", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attention"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    docs, V = corpus_and_vectors(ROOT / "results" / "tmp" / "attention", args.modules)
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    from ruvllm.embedding import SentenceEmbedder

    qs = questions(docs, args.per_type, args.seed)
    qkey = hashlib.sha256("\n".join(q["q"] for q in qs).encode()).hexdigest()[:16]
    qf = ROOT / "results" / "tmp" / "attention" / f"questions-{qkey}.npy"
    if qf.exists():
        Q = np.load(qf)
    else:
        Q = SentenceEmbedder().embed([q["q"] for q in qs]).astype(np.float32)
        np.save(qf, Q)
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    adj = graph(docs)
    modules = sorted({q["module"] for q in qs})
    mrng = np.random.default_rng(args.seed)
    train_mods = set(mrng.choice(modules, size=int(len(modules) * args.train_share), replace=False).tolist())

    now = time.time()
    nodes = [Node(text=d.text, vector=V[i], source=d.source,
                  metadata=NodeMetadata(timestamp=now, tags=list(d.tags), domain=d.domain)) for i, d in enumerate(docs)]

    class _Hit:
        def __init__(self, node: Node, score: float):
            self.node, self.score = node, score

    class _Exp:
        def __init__(self, node: Node, hop: int, via: str, weight: float, rel: str):
            self.node, self.hop, self.via, self.weight, self.rel = node, hop, via, weight, EdgeType(rel)

    engine0 = GraphAttention(AttentionParams(GraphAttentionConfig(dim=V.shape[1])))
    rows: list[dict[str, Any]] = []
    train_q: list[Query] = []
    eval_q: list[Query] = []
    for qi, q in enumerate(qs):
        sims = V @ Q[qi]  # (N,)
        top = np.argsort(-sims)[: max(args.seeds, 10)]
        seeds = [int(i) for i in top[: args.seeds]]
        exp = expand(adj, seeds, args.hops, args.limit)
        hits = [_Hit(nodes[i], float(sims[i])) for i in seeds]
        expd = [_Exp(nodes[n], h, nodes[via].id, w, rel) for n, h, via, w, rel in exp]
        order_ids = seeds + [e[0] for e in exp]
        _, cands = engine0.candidates(hits, expd, now=now)
        gold = order_ids.index(q["gold"]) if q["gold"] in order_ids else -1
        hop_scores = np.array([sims[i] * 0.9 ** h for i, h in zip(order_ids, cands.hop, strict=True)])
        row = {
            "type": q["type"], "split": "train" if q["module"] in train_mods else "eval",
            "rank_topk": int((sims > sims[q["gold"]]).sum()),  # 0-based rank over the whole corpus
            "rank_hop": int((hop_scores > hop_scores[gold]).sum()) if gold >= 0 else 10**6,
            "in_pool": gold >= 0, "gold_hop": int(cands.hop[gold]) if gold >= 0 else -1,
        }
        rows.append(row)
        (train_q if row["split"] == "train" else eval_q).append(Query(Q[qi], cands, gold))
    print(f"{len(qs)} questions ({len(train_q)} train / {len(eval_q)} eval), pools built "
          f"in {time.perf_counter() - t_start:.0f}s", flush=True)

    fitted, trace = fit(engine0.params, train_q, rounds=args.rounds, log=lambda s: print(s, flush=True))
    fitted.save(Path(args.out) / "attention_fitted")
    engines = {"attn": engine0, "attn_fit": GraphAttention(fitted)}
    ev = [r for r in rows if r["split"] == "eval"]
    ev_q = eval_q
    for name, eng in engines.items():
        for r, qu in zip(ev, ev_q, strict=True):
            if qu.gold < 0:
                r[f"rank_{name}"] = 10**6
                continue
            sc = eng.scores(qu.q, qu.cands)
            r[f"rank_{name}"] = int((sc > sc[qu.gold]).sum())
    summary: dict[str, dict[str, float]] = {}
    rankers = ("topk", "hop", "attn", "attn_fit")
    for t in ("all", "name", "describe", "bare", "detail"):
        sub = [r for r in ev if t == "all" or r["type"] == t]
        if not sub:
            continue
        summary[t] = {"n": len(sub), "in_pool": float(np.mean([r["in_pool"] for r in sub]))}
        for m in rankers:
            ranks = np.array([r[f"rank_{m}"] for r in sub])
            summary[t][m] = float((ranks < 10).mean())  # recall@10
            summary[t][f"{m}_r1"] = float((ranks < 1).mean())
            summary[t][f"{m}_mrr"] = float((1.0 / (ranks + 1)).mean())
    tr_m, tr_r = mrr(engines["attn_fit"], train_q)
    ev_m, ev_r = mrr(engines["attn_fit"], eval_q)
    winner = max(rankers, key=lambda m: (summary["all"][m], summary["all"][f"{m}_mrr"]))
    doc = {
        "command": "python -m bench.attention " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
        "corpus_chunks": len(docs), "questions": len(qs), "train_modules": len(train_mods),
        "eval_modules": len(modules) - len(train_mods), "args": vars(args),
        "recall_at_10_eval": summary, "winner": winner,
        "fitted": {"train_mrr": tr_m, "train_r10": tr_r, "eval_mrr": ev_m, "eval_r10": ev_r, "trace": trace},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention_bench.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    lines = ["# Graph attention vs top-k (bench/attention.py)", "",
             f"`{doc['command']}` — {doc['when']}, {doc['machine']}", "",
             f"{len(docs)} stdlib docstring chunks, MiniLM-L6 vectors, {len(qs)} generated questions; "
             f"eval = {summary['all']['n']} questions about {doc['eval_modules']} modules unseen in fitting. "
             f"Seeds k={args.seeds}, {args.hops}-hop expansion ≤ {args.limit}.", "",
             "| questions | n | top-10 cosine | cos×0.9^hop | attention (defaults) | attention (fitted) "
             "| gold in pool |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for t, s in summary.items():
        lines.append(f"| {t} | {s['n']} | {100 * s['topk']:.1f}% | {100 * s['hop']:.1f}% | {100 * s['attn']:.1f}% | "
                     f"{100 * s['attn_fit']:.1f}% | {100 * s['in_pool']:.1f}% |")
    lines += ["", "R@1 / MRR on the eval split (same rankers):", "",
              "| questions | top-k cosine | cos×0.9^hop | attention (defaults) | attention (fitted) |",
              "|---|---:|---:|---:|---:|"]
    for t, s in summary.items():
        lines.append(f"| {t} | " + " | ".join(f"{100 * s[f'{m}_r1']:.1f}% / {s[f'{m}_mrr']:.3f}" for m in rankers)
                     + " |")
    lines += ["", f"Recall@10 on the eval split. Winner: **{winner}**. Fitted knobs: train MRR {tr_m:.3f} / "
              f"eval MRR {ev_m:.3f}.", ""]
    (out / "attention_bench.md").write_text("\n".join(lines))
    print("\n".join(lines), flush=True)
    return doc


if __name__ == "__main__":
    main()
