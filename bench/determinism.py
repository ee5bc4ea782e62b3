"""Is a temperature-0 answer a function of the question? With and without the RAM prefix cache.

    nice -n 10 .venv/bin/python -m bench.determinism            # ~3 min on 2 cores

bench/selflearn.py found gemma-270m answering 7 of 53 exact repeats differently at temperature 0
with memory unchanged. This bench asks the same ``--questions`` (the demo's stdlib modules
ingested into a fresh data dir) ``--rounds`` times, forward and backward in turn, each twice in a
row (the second time the whole prompt is the one just evaluated), through
``RuvLLM.query`` with write-back off, once with ``llm.prefix_cache_mb`` = ``--cache-mb``, once
with 0, and once with 0 and ``llm.deterministic`` on, and counts the answers that differ from the
question's first answer in the same process.

Why a difference is possible at all: a prefix restored from the RAM cache carries KV computed in
another batch split than a fresh evaluation of the same prompt, and llama.cpp's kernels do not
give bit-identical results across batch shapes; greedy decoding then sometimes takes another
token. Without the RAM cache only the last prompt's KV is reused, which has the same problem in
a smaller way; ``llm.deterministic`` keeps only whole ``n_batch`` chunks of it, which a fresh
evaluation computes identically.

Writes bench/results/determinism/determinism.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = (
    "What does textwrap.indent do?", "What does json.loads do?", "What does shutil.copytree do?",
    "What does textwrap.fill do?", "What does json.dump do?", "What does shutil.which do?",
    "What does textwrap.shorten do?", "What is json.dumps used for?", "Tell me what shutil.move does.",
    "What does json.JSONDecoder do?",
)


def run(data_dir: Path, cache_mb: int, model: str, rounds: int, max_tokens: int,
        deterministic: bool = False) -> dict[str, Any]:
    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM

    overrides: dict[str, Any] = {"llm.prefix_cache_mb": cache_mb, "llm.n_threads": 1,
                                 "llm.deterministic": deterministic}
    rv = RuvLLM(Config.load(env=False, data_dir=str(data_dir), **overrides))
    first: dict[str, str] = {}
    differ: list[str] = []
    t0 = time.perf_counter()
    try:
        for r in range(rounds):
            for q in QUESTIONS if r % 2 == 0 else QUESTIONS[::-1]:
                for _ in range(2):  # and at once again: the same prompt right after itself
                    answer = rv.query(q, model=model, writeback=False, max_tokens=max_tokens).answer
                    if q not in first:
                        first[q] = answer
                    elif answer != first[q]:
                        differ.append(q)
    finally:
        rv.close()
    repeats = (2 * rounds - 1) * len(QUESTIONS)
    return {"prefix_cache_mb": cache_mb, "deterministic": deterministic, "repeats": repeats, "different": len(differ),
            "questions_with_a_different_answer": sorted(set(differ)), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-mb", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "determinism"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="ruvllm-determinism-") as tmp:
        from ruvllm.config import Config
        from ruvllm.orchestrator import RuvLLM

        data = Path(tmp) / "data"
        with RuvLLM(Config.load(env=False, data_dir=str(data))) as rv:
            rv.ingest_stdlib(["json", "textwrap", "shutil"])
        arms = [run(data, mb, args.model, args.rounds, args.max_tokens, det)
                for mb, det in ((args.cache_mb, False), (0, False), (0, True))]
    doc: dict[str, Any] = {"command": "python -m bench.determinism " + " ".join(argv or []),
                           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": f"{platform.machine()} {os.cpu_count()} cores", "args": vars(args),
                           "arms": arms}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "determinism.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Temperature-0 answers, repeated in one process", "", f"`{doc['command'].strip()}`", "",
             f"- when: {doc['when']}; machine: {doc['machine']}; model {args.model}, {len(QUESTIONS)} questions × "
             f"{args.rounds} rounds, {args.max_tokens} tokens, n_threads=1", "",
             "| llm.prefix_cache_mb | llm.deterministic | repeats | answered differently | questions | seconds |",
             "|---:|---|---:|---:|---|---:|"]
    for a in arms:
        lines.append(f"| {a['prefix_cache_mb']} | {str(a.get('deterministic', False)).lower()} | {a['repeats']} | "
                     f"{a['different']} | "
                     f"{', '.join(a['questions_with_a_different_answer']) or '—'} | {a['seconds']} |")
    (out / "determinism.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return doc


if __name__ == "__main__":
    main()
