"""Retrieval quality: EmbeddingAdapter (LLM hidden states) vs the default sentence encoder.

    nice -n 10 .venv/bin/python bench/embedding.py [--quick]

Corpus: the first chunk of every public function/class docstring of a set of standard-library
modules (``ruvllm.ingest.stdlib_docs``). Questions: "What does <module.name> do?" for a seeded
sample of them; a hit is the question's own docstring among the top 10 (R@10) by cosine.
Encoders: all-MiniLM-L6-v2 (default); the adapter over Gemma 3 270M unfitted (random orthogonal
projection); the adapter fitted by ridge least squares to the sentence encoder's vectors of the
corpus (no question is used for fitting). Writes bench/results/embedding.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"
MODULES = ["json", "os.path", "re", "math", "itertools", "functools", "collections", "shutil", "string",
           "textwrap", "random", "statistics", "heapq", "bisect", "glob", "base64", "copy", "csv"]


def recall_at(q: np.ndarray, d: np.ndarray, gold: list[int], k: int = 10) -> float:
    sims = q @ d.T  # (n_q, n_docs)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float(np.mean([g in row for g, row in zip(gold, top, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--questions", type=int, default=150)
    args = ap.parse_args()
    from ruvllm.embedding import SentenceEmbedder
    from ruvllm.embedding_adapter import EmbeddingAdapter
    from ruvllm.ingest import stdlib_docs
    from ruvllm.llm import Registry

    mods = MODULES[:6] if args.quick else MODULES
    docs = [d for d in stdlib_docs(mods) if d.key.endswith("#0") and "." in d.source.split(":", 1)[1]]
    quals = [d.source.split(":", 1)[1] for d in docs]
    corpus = [d.text for d in docs]
    rng = random.Random(0)
    n_q = min(40 if args.quick else args.questions, len(docs))
    picks = rng.sample(range(len(docs)), n_q)
    questions = [f"What does {quals[i]} do?" for i in picks]
    reg = Registry(os.environ.get("RUVLLM_LLM__MODELS_DIR") or Path.home() / ".cache" / "ruvllm" / "models")
    rows: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    st = SentenceEmbedder()
    d_st, q_st = st.embed(corpus), st.embed(questions)
    rows.append({"encoder": "sentence (all-MiniLM-L6-v2)", "r@10": recall_at(q_st, d_st, picks),
                 "embed_s": round(time.perf_counter() - t0, 1)})

    t0 = time.perf_counter()
    ad = EmbeddingAdapter(reg.path("gemma3-270m"), n_ctx=512)
    h_d, h_q = ad.hidden(corpus), ad.hidden(questions)
    secs = round(time.perf_counter() - t0, 1)
    rows.append({"encoder": "adapter gemma3-270m, unfitted", "r@10": recall_at(ad.project(h_q), ad.project(h_d), picks),
                 "embed_s": secs})
    cos = ad.fit(None, d_st, ridge=0.1, hidden=h_d)
    rows.append({"encoder": "adapter gemma3-270m, fitted to the sentence space", "r@10":
                 recall_at(ad.project(h_q), ad.project(h_d), picks), "embed_s": secs, "fit_cosine": round(cos, 3)})
    ad.save(RESULTS / "adapter-gemma3-270m.npz")
    ad.close()

    res = {"command": "nice -n 10 .venv/bin/python bench/embedding.py" + (" --quick" if args.quick else ""),
           "docs": len(corpus), "questions": n_q, "modules": mods, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embedding.json").write_text(json.dumps(res, indent=2))
    md = [f"# Retrieval: EmbeddingAdapter vs sentence encoder\n\n`{res['command']}` — {len(corpus)} docstring chunks, "
          f"{n_q} questions \"What does <name> do?\", R@10 = own docstring in the top 10.\n",
          "| encoder | R@10 | embed s (corpus + questions) |", "|---|---|---|"]
    md += [f"| {r['encoder']} | {r['r@10']:.3f} | {r['embed_s']} |" for r in rows]
    (RESULTS / "embedding.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
