"""LLM runtime benchmark: ruvllm's llama.cpp backend vs raw ``llama_cpp.Llama``, prefix cache, speculative decoding.

    nice -n 10 .venv/bin/python bench/llm.py            # full: 3 models, 5 runs each
    nice -n 10 .venv/bin/python bench/llm.py --quick    # smoke: gemma only, 2 runs

Each model is measured in its own child process (so peak RSS is that model's), on n_threads=2:
load time; TTFT and decode tokens/s for a ~100- and a ~1,000-token prompt through
``LlamaCppGenerator.stream_complete`` and through raw ``Llama.create_completion(stream=True)``,
interleaved, median of the runs (each run's prompt starts differently, so nothing is reused);
the overhead ratio ours/raw; the TTFT gain when a ~1,000-token prefix is shared; speculative
decoding (prompt-lookup; Qwen2.5-Coder-0.5B drafting for 1.5B) against plain decoding at
temperature 0, with an identical-output check. Writes bench/results/llm.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "bench" / "results"
MODELS = ["gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
THREADS = 2


def _corpus_text() -> str:
    from ruvllm.ingest import stdlib_docs

    return "\n\n".join(d.text for d in stdlib_docs(["json", "pathlib", "itertools", "functools", "collections"]))


def _prompt(llm: Any, body: str, n_tokens: int, run: int) -> str:
    """A prompt of about ``n_tokens`` tokens whose first words differ per run (no KV reuse)."""
    head = f"Note {run * 7919 % 1000}: "
    toks = llm.tokenize(body.encode(), add_bos=False)[: max(1, n_tokens - 8)]
    return head + llm.detokenize(toks).decode("utf-8", "ignore")


def _stream_timing(chunks: Any) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = 0.0
    n = 0
    for piece in chunks:
        if not piece:
            continue
        n += 1
        if n == 1:
            first = time.perf_counter()
    end = time.perf_counter()
    ttft = (first - t0) * 1000.0
    tps = (n - 1) / (end - first) if n > 1 and end > first else 0.0
    return ttft, tps, n


def _raw_chunks(llm: Any, prompt: str, max_tokens: int) -> Any:
    for c in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=0, stream=True):
        yield c["choices"][0]["text"]


def _prefix_gain(gen: Any, prefix: str, runs: int) -> dict[str, float]:
    """Median TTFT of ``prefix`` + a new question, cold (each run's prompt starts differently) and warm
    (the prefix was the last prompt evaluated)."""
    from ruvllm.llm.base import SamplingParams

    cold, warm = [], []
    for r in range(runs):
        q = f"\n\nQuestion {r}: what does this module do?\nAnswer:"
        cold.append(_stream_timing(gen.stream_complete(f"[{r}] " + prefix + q, SamplingParams(max_tokens=2)))[0])
    list(gen.stream_complete(prefix, SamplingParams(max_tokens=1)))  # the prefix is now in the KV cache
    for r in range(runs):
        q = f"\n\nQuestion {r}: what does this module do?\nAnswer:"
        warm.append(_stream_timing(gen.stream_complete(prefix + q, SamplingParams(max_tokens=2)))[0])
    return {"ttft_cold_ms": round(statistics.median(cold), 1), "ttft_warm_ms": round(statistics.median(warm), 1),
            "gain": round(statistics.median(cold) / statistics.median(warm), 2)}


def measure_model(name: str, runs: int, lengths: list[int], max_tokens: int, spec: bool) -> dict[str, Any]:
    import llama_cpp

    from ruvllm.llm import Registry
    from ruvllm.llm.base import ChatMessage, SamplingParams
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    reg = Registry(os.environ.get("RUVLLM_LLM__MODELS_DIR") or Path.home() / ".cache" / "ruvllm" / "models")
    path = reg.path(name)
    out: dict[str, Any] = {"model": name, "file": path.name, "size_mb": round(path.stat().st_size / 2**20, 1)}
    n_ctx = 2048
    t0 = time.perf_counter()
    raw = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=THREADS, n_threads_batch=THREADS, n_batch=256,
                          seed=0, verbose=False)
    out["load_ms_raw"] = round((time.perf_counter() - t0) * 1000, 1)
    ours = LlamaCppGenerator(name, path, n_ctx=n_ctx, n_threads=THREADS, n_batch=256, prompt_style="completion")
    out["load_ms"] = round(ours.load_ms, 1)
    body = _corpus_text()
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    # warm-up (first decode pays one-off costs)
    list(ours.stream_complete("Hello", SamplingParams(max_tokens=4)))
    list(_raw_chunks(raw, "Hello", 4))
    for n in lengths:
        rows: dict[str, list[float]] = {"ttft": [], "tps": [], "ttft_raw": [], "tps_raw": []}
        for r in range(runs):
            prompt = _prompt(raw, body, n, r)
            a = _stream_timing(ours.stream_complete(prompt, params))
            b = _stream_timing(_raw_chunks(raw, prompt, max_tokens))
            rows["ttft"].append(a[0])
            rows["tps"].append(a[1])
            rows["ttft_raw"].append(b[0])
            rows["tps_raw"].append(b[1])
        med = {k: statistics.median(v) for k, v in rows.items()}
        out[f"p{n}"] = {
            "prompt_tokens": len(raw.tokenize(_prompt(raw, body, n, 0).encode())),
            "ttft_ms": round(med["ttft"], 1), "decode_tps": round(med["tps"], 2),
            "ttft_ms_raw": round(med["ttft_raw"], 1), "decode_tps_raw": round(med["tps_raw"], 2),
            "ttft_overhead": round(med["ttft"] / med["ttft_raw"], 3) if med["ttft_raw"] else None,
            "decode_overhead": round(med["tps_raw"] / med["tps"], 3) if med["tps"] else None,
        }
    # prefix cache: the same ~1,000-token prefix (system + context) with a different question each time
    prefix = _prompt(raw, body, max(lengths), 99)
    out["prefix_cache"] = {"prefix_tokens": len(raw.tokenize(prefix.encode())), **_prefix_gain(ours, prefix, runs)}
    raw.close()
    ours.close()
    # the same with llm.deterministic: only whole n_batch chunks of the prefix are reused
    exact = LlamaCppGenerator(name, path, n_ctx=n_ctx, n_threads=THREADS, n_batch=256, prompt_style="completion",
                              exact_reuse=True)
    list(exact.stream_complete("Hello", SamplingParams(max_tokens=4)))
    out["prefix_cache_deterministic"] = _prefix_gain(exact, prefix, runs)
    exact.close()
    # speculative decoding on a grounded prompt (the answer quotes the context), chat template, greedy
    if spec and name.startswith("qwen"):
        ctx = "\n".join(body.split("\n")[:40])
        msgs = [ChatMessage("system", "Answer from the context. Quote it exactly."),
                ChatMessage("user", f"Context:\n{ctx}\n\nCopy the first five lines of the context exactly.")]
        sp = SamplingParams(max_tokens=32, temperature=0.0)
        variants: list[tuple[str, Any]] = [("plain", ""), ("prompt-lookup", "prompt-lookup")]
        if name == "qwen2.5-coder-1.5b":
            variants.append(("draft 0.5B", "draft"))
        res: dict[str, Any] = {}
        try:
            _speculative(variants, res, reg, name, path, n_ctx, msgs, sp, runs)
        except Exception as exc:  # recorded, so the model's other figures are kept
            res = {"error": f"{type(exc).__name__}: {exc}"}
        out["speculative"] = res
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _speculative(variants: list[tuple[str, Any]], res: dict[str, Any], reg: Any, name: str, path: Any, n_ctx: int,
                 msgs: list[Any], sp: Any, runs: int) -> None:
    """Plain vs prompt-lookup vs draft-model decoding of one grounded chat prompt, greedy."""
    from ruvllm.llm.base import SamplingParams
    from ruvllm.llm.llamacpp import LlamaCppGenerator
    from ruvllm.llm.speculative import LlamaModelDraft

    base_text = ""
    for label, draft in variants:
        d = LlamaModelDraft(reg.path("qwen2.5-coder-0.5b"), num_pred_tokens=4, n_ctx=n_ctx) if draft == "draft" \
            else draft
        gen = LlamaCppGenerator(name, path, n_ctx=n_ctx, n_threads=THREADS, draft=d)
        gen.chat(msgs, SamplingParams(max_tokens=1))  # prompt evaluated once: timings below are decoding
        times, text, ntok = [], "", 0
        for _ in range(max(3, runs // 2 + 1)):
            g = gen.chat(msgs, sp)
            times.append(g.total_ms)
            text, ntok = g.text, g.completion_tokens
        gen.close()
        tps = ntok / (statistics.median(times) / 1000.0)
        if label == "plain":
            base_text = text
        res[label] = {"tokens": ntok, "tps": round(tps, 2), "identical": text == base_text}
    for label in res:
        res[label]["speedup"] = round(res[label]["tps"] / res["plain"]["tps"], 2)


def to_markdown(res: dict[str, Any]) -> str:
    lines = [f"# LLM runtime benchmark\n\n`{res['command']}` — {res['machine']}, n_threads={THREADS}, "
             f"median of {res['runs']} runs, {res['max_tokens']} decoded tokens. Overhead = ours / raw llama_cpp "
             "(TTFT) and raw / ours (decode time per token); target <= 1.05.\n",
             "| model | load ms | prompt tok | TTFT ms (raw) | decode tok/s (raw) | TTFT ovh | decode ovh "
             "| peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for m in res["models"]:
        for key in sorted(k for k in m if k.startswith("p") and k[1:].isdigit()):
            p = m[key]
            lines.append(f"| {m['model']} | {m['load_ms']:.0f} | {p['prompt_tokens']} | {p['ttft_ms']:.0f} "
                         f"({p['ttft_ms_raw']:.0f}) | {p['decode_tps']:.1f} ({p['decode_tps_raw']:.1f}) | "
                         f"{p['ttft_overhead']} | {p['decode_overhead']} | {m['peak_rss_mb']:.0f} |")
    lines += ["\n## Prefix (KV) cache: shared prefix, new question\n",
              "`llm.deterministic` keeps only whole 256-token chunks of the prefix (the rest is evaluated again), "
              "so that a temperature-0 answer does not depend on the request before it.\n",
              "| model | prefix tokens | TTFT cold ms | TTFT warm ms | gain | warm, deterministic "
              "| gain, deterministic |", "|---|---|---|---|---|---|---|"]
    for m in res["models"]:
        pc, det = m["prefix_cache"], m.get("prefix_cache_deterministic")
        lines.append(f"| {m['model']} | {pc['prefix_tokens']} | {pc['ttft_cold_ms']:.0f} | {pc['ttft_warm_ms']:.0f} "
                     f"| {pc['gain']}x | " + (f"{det['ttft_warm_ms']:.0f} | {det['gain']}x |" if det else "– | – |"))
    specs = [m for m in res["models"] if "speculative" in m]
    if specs:
        lines += ["\n## Speculative decoding (temperature 0, grounded prompt)\n",
                  "| target | method | tokens | tok/s | speed-up | identical output |", "|---|---|---|---|---|---|"]
        for m in specs:
            if "error" in m["speculative"]:
                lines.append(f"| {m['model']} | failed: {m['speculative']['error'][:160]} | | | | |")
                continue
            for label, s in m["speculative"].items():
                lines.append(f"| {m['model']} | {label} | {s['tokens']} | {s['tps']:.1f} | {s['speedup']}x | "
                             f"{'yes' if s['identical'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _write(results: list[dict[str, Any]], quick: bool, runs: int, cfg: dict[str, Any], tag: str,
           argv: list[str]) -> str:
    cmd = " ".join(["nice -n 10 .venv/bin/python bench/llm.py", *argv])
    res = {"command": cmd, "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)",
           "runs": runs, "max_tokens": cfg["max_tokens"], "models": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if quick else "") + tag
    (RESULTS / f"llm{suffix}.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (RESULTS / f"llm{suffix}.md").write_text(md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: gemma only, 2 runs, short prompts")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--lengths", type=int, nargs="*", default=None, help="prompt lengths (default 100 1000)")
    ap.add_argument("--tag", default="", help="results file suffix, e.g. -1.5b for a partial run")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one model, JSON on stdout
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        cfg = json.loads(args.cfg)
        print("RESULT " + json.dumps(measure_model(args.one, **cfg)))
        return
    models = args.models or (["gemma3-270m"] if args.quick else MODELS)
    runs = args.runs or (2 if args.quick else 5)
    cfg = {"runs": runs, "lengths": args.lengths or ([100, 1000] if not args.quick else [100, 400]),
           "max_tokens": 12 if args.quick else 24, "spec": True}
    results: list[dict[str, Any]] = []
    md = ""
    for name in models:
        t0 = time.time()
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--cfg", json.dumps(cfg)],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[7:]))
        print(f"{name}: done in {time.time() - t0:.0f}s", file=sys.stderr)
        # written after each model, so a long run leaves partial results
        md = _write(results, args.quick, runs, cfg, args.tag, sys.argv[1:])
    print(md)


if __name__ == "__main__":
    main()
