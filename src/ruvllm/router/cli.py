"""``ruvllm router …``: a thin typer layer over ``router.pipeline`` and ``router.training``.

Mounted by ``ruvllm.cli`` with ``app.add_typer(router_app, name="router")``.

    ruvllm router train                       # synthetic labels → train → compress → <data dir>/router/
    ruvllm router train --labels real --limit 80   # the installed GGUF models label every model × context
    ruvllm router eval  <dir>/router --labelled <dir>/labelled_synthetic.jsonl
    ruvllm router info  <dir>/router
    ruvllm router relabel <dir>/labelled_real.jsonl <other dir>/labelled_real.jsonl   # Q again from stored answers

Errors are ``ruvllm.errors.RuvLLMError``s; the main command prints them as one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ruvllm.errors import InvalidInputError

router_app = typer.Typer(
    name="router",
    help="Train, evaluate and inspect the FastGRNN router (labelled set → oracle → training → compression).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _default_out(data_dir: Path | None, config: Path | None) -> Path:
    """<data dir>/router, opening (and, when new, marking) the data dir the way every command does,
    so a router trained first does not make the folder look foreign to ``ruvllm ask`` later."""
    from ruvllm.config import Config
    from ruvllm.datadir import open_data_dir

    path = data_dir if data_dir is not None else Config.load(config).data_path
    return open_data_dir(path) / "router"


@router_app.command()
def train(
    labels: Annotated[str, typer.Option(help="Oracle labels: 'synthetic' (documented cost/quality model, fast) "
                                             "or 'real' (runs every installed model at every context size).")]
    = "synthetic",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where the router goes (default: <data dir>/router).")]
    = None,
    labelled: Annotated[Path | None, typer.Option(help="Skip phase 1: train from this oracle JSONL instead.")]
    = None,
    embedder: Annotated[str, typer.Option(help="'sentence' (the serving encoder) or 'hash' (smoke tests only).")]
    = "sentence",
    modules: Annotated[str | None, typer.Option(help="Comma-separated stdlib modules for the question set.")]
    = None,
    per_module: Annotated[int, typer.Option(help="Documented symbols per module.")] = 8,
    limit: Annotated[int, typer.Option(help="About this many questions (whole sessions, seeded); 0 = all.")] = 0,
    models: Annotated[str | None, typer.Option(help="Comma-separated model names (default: the packaged two; "
                                                    "with --labels real: the configured ones).")] = None,
    sizes: Annotated[str | None, typer.Option(help="Synthetic labels: model sizes in billions, same order.")]
    = None,
    lam: Annotated[float, typer.Option(help="Utility lost per second of latency (λ).")] = 0.02,
    mu: Annotated[float, typer.Option(help="Utility lost per cost unit, params[B]·tokens/1000 (μ).")] = 0.02,
    max_tokens: Annotated[int, typer.Option(help="Real labels: answer tokens per oracle run.")] = 64,
    max_tokens_code: Annotated[int, typer.Option(help="Real labels: answer tokens for code questions, when "
                                                      "larger (a snippet cut off before its call fails).")] = 0,
    context_bins: Annotated[str | None, typer.Option(help="Comma-separated context sizes the oracle tries "
                                                          "(default: 256,512,1024,2048,4096).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Dense training epochs (stage 1). Default: chosen by CV "
                                                   "(20 or 60), 60 without CV; given, CV keeps it.")] = None,
    hidden: Annotated[int, typer.Option(help="FastGRNN hidden size (32–64).")] = 32,
    sparsity: Annotated[float, typer.Option(help="Share of zeros in W1, W2, U1, U2 after compression.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for the split, the sessions and training.")] = 0,
    cv_folds: Annotated[int, typer.Option(help="> 1: choose weight decay, epochs and label temperature by this "
                                               "many folds of the training sessions (training.CV_GRID); "
                                               "0 = off.")] = 4,
    cv_group: Annotated[str, typer.Option(help="What a CV fold holds whole: 'session', or 'symbol' (every "
                                               "question on a symbol, so CV scores routing for new symbols).")]
    = "session",
    cv_rule: Annotated[str, typer.Option(help="How CV picks: 'min' (the lowest CV utility regret) or '1se' (the "
                                              "strongest weight decay within one standard error of it).")]
    = "min",
    label_temperature: Annotated[float | None, typer.Option(help="> 0: train on softmax(utility / τ) instead of "
                                                                 "the one-hot oracle model. Default: chosen by CV "
                                                                 "(0 or 0.05), 0 without CV; given, CV keeps it.")]
    = None,
    feature_dropout: Annotated[float, typer.Option(help="Blank each feature slice but the query type with this "
                                                        "probability per training row (0 = off).")] = 0.0,
    type_prior: Annotated[bool, typer.Option(help="The heads also read the query-type features directly: a "
                                                  "per-type prior the cell adds to.")] = True,
    utility_prior: Annotated[float, typer.Option(help="> 0: that prior is a fixed table, the training split's "
                                                      "mean utility per query type over this temperature, and "
                                                      "the cell learns the rest; 0: the prior is learnt. "
                                                      "--no-type-prior turns both off.")]
    = 0.05,
    history: Annotated[bool, typer.Option(help="Feed the router each question's pattern history (symbols + "
                                               "type: which model was best on its past questions), from a "
                                               "table saved beside the checkpoint.")] = False,
    history_dropout: Annotated[float, typer.Option(help="With --history: the share of training rows that see "
                                                        "no history, so the router also routes new patterns.")]
    = 0.3,
    resume: Annotated[bool, typer.Option(help="Real labels: keep the records of a stopped run "
                                              "(<out>/labelled_real.partial.jsonl) and label the rest.")] = False,
    all_wordings: Annotated[bool, typer.Option(help="Also label every training wording of each seen pattern in "
                                                    "the set, not only the one that covers it.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data dir for the default --out.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A TOML config (models, paths) for real labels.")]
    = None,
) -> None:
    """Labelled set → oracle runs → training → compression → saved router (one reproducible command)."""
    from ruvllm.router import pipeline
    from ruvllm.router.training import TrainConfig, train_from_oracle

    if labels not in ("synthetic", "real"):
        raise InvalidInputError(f"--labels must be 'synthetic' or 'real', got {labels!r}")
    if not 16 <= hidden <= 64:
        raise InvalidInputError(f"--hidden must be in [16, 64], got {hidden}")
    if not 0.0 <= sparsity < 1.0:
        raise InvalidInputError(f"--sparsity must be in [0, 1), got {sparsity}")
    if cv_folds < 0 or cv_folds == 1 or (label_temperature is not None and label_temperature < 0):
        raise InvalidInputError(f"--cv-folds must be 0 or ≥ 2 and --label-temperature ≥ 0, got {cv_folds}, "
                                f"{label_temperature}")
    if cv_group not in ("session", "symbol") or cv_rule not in ("min", "1se"):
        raise InvalidInputError(f"--cv-group must be 'session' or 'symbol' and --cv-rule 'min' or '1se', got "
                                f"{cv_group!r}, {cv_rule!r}")
    if not 0.0 <= feature_dropout < 1.0:
        raise InvalidInputError(f"--feature-dropout must be in [0, 1), got {feature_dropout}")
    if utility_prior < 0:
        raise InvalidInputError(f"--utility-prior must be ≥ 0, got {utility_prior}")
    if epochs is not None and epochs < 1:
        raise InvalidInputError(f"--epochs must be ≥ 1, got {epochs}")
    if not 0.0 <= history_dropout < 1.0:
        raise InvalidInputError(f"--history-dropout must be in [0, 1), got {history_dropout}")
    dest = out_dir or _default_out(data_dir, config)
    dest.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    if labelled is None:
        cfg = pipeline.PipelineConfig(labels=labels, embedder=embedder, per_module=per_module, limit=limit,
                                      lam=lam, mu=mu, max_tokens=max_tokens, max_tokens_code=max_tokens_code,
                                      seed=seed, resume=resume, all_wordings=all_wordings)
        if modules:
            cfg.modules = _csv(modules)
        if context_bins:
            try:
                cfg.context_bins = tuple(int(c) for c in _csv(context_bins))
            except ValueError:
                raise InvalidInputError(f"--context-bins must be comma-separated integers, got {context_bins!r}"
                                        ) from None
        if models:
            cfg.models = _csv(models)
            if labels == "synthetic":
                if not sizes:
                    raise InvalidInputError("--models with synthetic labels needs --sizes (billions, same order)")
                try:
                    cfg.params_b = tuple(float(s) for s in _csv(sizes))
                except ValueError:
                    raise InvalidInputError(f"--sizes must be comma-separated numbers, got {sizes!r}") from None

        def progress(i: int, n: int) -> None:
            err.print(f"oracle {i}/{n}", highlight=False)

        err.print(f"phase 1: {labels} oracle labels …", highlight=False)
        gens: dict[str, Any] | None = None
        sizes_b: dict[str, float] | None = None
        if labels == "real":
            gens, sizes_b = pipeline.real_generators(cfg.models if models else (), config=config)
        run = pipeline.build_labels(cfg, dest, generators=gens, params_b=sizes_b,
                                    progress=progress if labels == "real" else None)
        labelled, info = run.path, run.info
        (dest / "labels_info.json").write_text(json.dumps(info, indent=2) + "\n")
    given = tuple(name for name, v in (("epochs", epochs), ("label_temperature", label_temperature)) if v is not None)
    tc = TrainConfig(epochs=60 if epochs is None else epochs, hidden=hidden,
                     w_rank=min(16, hidden // 2), u_rank=min(8, hidden // 4), target_sparsity=sparsity, seed=seed,
                     cv_folds=cv_folds, cv_group=cv_group, cv_rule=cv_rule, cv_keep=given,
                     label_temperature=label_temperature or 0.0,
                     feature_dropout=feature_dropout, type_prior=type_prior,
                     utility_prior=utility_prior if type_prior else 0.0, history=history,
                     history_dropout=history_dropout)
    err.print("phase 2: training, then compression (dense → hard threshold → retrain → int8) …", highlight=False)
    import torch

    torch.set_num_threads(1)
    report = train_from_oracle(labelled, dest, tc)
    _print_train(report.to_dict(), info)


def _print_train(rep: dict[str, Any], info: dict[str, Any]) -> None:
    src = rep["label_source"]
    out.print(f"labels: [bold]{src}[/bold]" + (" (a documented stand-in, NOT measured on real models)"
                                              if "synthetic" in src else "") + f" — {rep['labelled']}",
              highlight=False)
    if info:
        out.print(f"questions: {info['n_queries']} {info['splits']}, embedder: {info['embedder']}", highlight=False)
    t = Table(title="decision accuracy vs the oracle")
    for col in ("split", "rows", "model acc (dense)", "model acc (int8)", "ctx acc (int8)", "utility regret (int8)"):
        t.add_column(col)
    for split, m in rep["compressed"].items():
        d = rep["dense"][split]
        n = rep["n_train"] if split == "train" else rep["n_eval"].get(split, 0)
        t.add_row(split, str(n), f"{d['model_accuracy']:.3f}", f"{m['model_accuracy']:.3f}",
                  f"{m['context_accuracy']:.3f}", f"{m.get('utility_regret', float('nan')):.4f}")
    out.print(t)
    s = Table(title="compression")
    for col in ("stage", "size KB", "sparsity", "model acc", "accuracy lost"):
        s.add_column(col)
    for st in rep["stages"]:
        s.add_row(st["stage"], f"{st['size_kb']:.2f}", f"{st['sparsity']:.0%}", f"{st['model_accuracy']:.3f}",
                  f"{st['accuracy_lost']:+.3f}")
    out.print(s)
    if rep["config"].get("history"):
        out.print(f"pattern history: {rep['checkpoint']}_history.json (read with the checkpoint; keep them together)",
                  highlight=False)
    out.print(f"saved {rep['checkpoint']}.{{npz,json}} in {rep['seconds']} s; use it with\n"
              f'  [router]\n  kind = "fastgrnn"\n  model_path = "{rep["checkpoint"]}"', highlight=False,
              markup=False)  # "[router]" is TOML here, not rich markup


@router_app.command()
def relabel(
    src: Annotated[Path, typer.Argument(help="A real-label oracle JSONL with stored answers.")],
    dest: Annotated[Path, typer.Argument(help="Where the relabelled JSONL goes (another folder; a "
                                              "labels_info.json is written beside it).")],
    lam: Annotated[float | None, typer.Option(help="λ (default: the source's labels_info.json, else 0.02).")]
    = None,
    mu: Annotated[float | None, typer.Option(help="μ (default: the source's labels_info.json, else 0.02).")]
    = None,
    timeout: Annotated[float, typer.Option(help="Seconds each code answer may run.")] = 5.0,
    judge: Annotated[str, typer.Option(help="A judge model (e.g. qwen2.5-coder-1.5b): its yes/no verdict "
                                            "against the gold scores the types without a check of their own, "
                                            "instead of token F1.")] = "",
    config: Annotated[Path | None, typer.Option(help="TOML config (for --judge's models dir).")] = None,
    reuse: Annotated[Path | None, typer.Option(help="An earlier relabelled file measured the same way: records "
                                                    "it holds with unchanged answers take their quality from it, "
                                                    "so only new records are measured (and judged).")] = None,
) -> None:
    """Measure quality again from the stored answers with the per-type measure (code executed,
    how-to checked for the gold function, a judge's verdict or token F1 otherwise) and recompute
    the labels; the answering models do not run."""
    from ruvllm.router.pipeline import relabel_file
    from ruvllm.router.quality import ExecLimits

    if timeout <= 0:
        raise InvalidInputError(f"--timeout must be > 0, got {timeout}")
    limits = ExecLimits(timeout_s=timeout, cpu_s=max(1, int(timeout + 0.999)))
    if not judge:
        info = relabel_file(src, dest, lam=lam, mu=mu, limits=limits, reuse=reuse)
    else:
        import functools

        from ruvllm.config import Config
        from ruvllm.judge_llm import LLMJudge
        from ruvllm.llm import ModelPool, Registry

        cfg = Config.load(config)
        pool = ModelPool(Registry(cfg.models_path, extra=cfg.llm.paths), cfg.llm)
        try:
            # a model's answers at the two context sizes are often the same text: judge it once
            verdicts = functools.cache(LLMJudge(pool.get(judge)).verdict)
            info = relabel_file(src, dest, lam=lam, mu=mu, limits=limits, verdict=verdicts, judge_model=judge,
                                reuse=reuse)
        finally:
            pool.close()
    models = info["oracle_best_model_share"].keys()
    t = Table(title=f"oracle's best model per question type, before → after ({info['quality_measure']})")
    t.add_column("type")
    for m in models:
        t.add_column(m)
    t.add_column("quality measure")
    before, after = info["label_distribution_before"], info["label_distribution_after"]
    for qtype, row in after.items():
        t.add_row(qtype, *[f"{before[qtype][m]} → {row[m]}" for m in models],
                  info["quality_by_type"].get(qtype, ""))
    out.print(t)
    if reuse is not None:
        out.print(f"quality of {info['quality_reused']} records reused from {reuse}", highlight=False)
    out.print(f"{info['labels_changed']} of {sum(after['all'].values())} labels "
              f"changed (model or context); λ = {info['lambda_per_s']}, μ = {info['mu_per_cost_unit']}; "
              f"saved {dest} and {dest.parent / 'labels_info.json'}", highlight=False)


@router_app.command("eval")
def eval_(
    model: Annotated[Path, typer.Argument(help="A router checkpoint (<stem>, <stem>.npz or <stem>.json).")],
    labelled: Annotated[Path, typer.Option(help="An oracle JSONL (from `ruvllm router train`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Accuracy and utility regret of a saved router against oracle labels, per split, beside always-small/large.
    A router with a pattern history sees it as when serving; training rows see theirs without their own outcome."""
    from ruvllm.router.fastgrnn import FastGRNNParams
    from ruvllm.router.history import PatternHistory, with_history
    from ruvllm.router.oracle import load_labelled
    from ruvllm.router.training import datasets_from_records, evaluate

    stem = model.with_suffix("") if model.suffix in (".npz", ".json") else model
    params = FastGRNNParams.load(stem)
    history = PatternHistory.load(stem)
    recs = load_labelled(labelled)
    got = list(recs[0].models) if recs else []
    if got != list(params.config.models):
        raise InvalidInputError(f"{labelled} labels models {got}, the router was trained for {params.config.models}")
    res: dict[str, Any] = {}
    for split in sorted({r.split for r in recs}):
        rows = [r for r in recs if r.split == split]
        if history is not None:
            rows = with_history(rows, history, leave_one_out=split == "train")
        data = datasets_from_records(rows, params.normalizer)
        ev = evaluate(params, data)
        assert data.utility is not None
        best = data.utility.reshape(len(data), -1).max(1)
        for name, m in (("always_small", 0), ("always_large", params.config.n_models - 1)):
            c = int(data.utility[:, m].mean(0).argmax())
            ev[f"{name}_model_accuracy"] = float((data.y_model == m).mean())
            ev[f"{name}_utility_regret"] = float((best - data.utility[:, m, c]).mean())
        ev["rows"] = len(data)
        res[split] = ev
    res["label_source"] = ",".join(sorted({r.label_source for r in recs}))
    if as_json:
        sys.stdout.write(json.dumps(res, indent=2) + "\n")
        return
    t = Table(title=f"{stem} on {labelled} ({res['label_source']} labels)")
    for col in ("split", "rows", "model acc", "ctx acc", "utility regret", "always-small regret",
                "always-large regret"):
        t.add_column(col)
    for split, ev in res.items():
        if isinstance(ev, dict):
            t.add_row(split, str(ev["rows"]), f"{ev['model_accuracy']:.3f}", f"{ev['context_accuracy']:.3f}",
                      f"{ev['utility_regret']:.4f}", f"{ev['always_small_utility_regret']:.4f}",
                      f"{ev['always_large_utility_regret']:.4f}")
    out.print(t)


def _prior_info(p: Any) -> dict[str, Any] | None:
    """The query-type prior of a checkpoint: its kind and, for the fixed utility table, each type's
    model and context size (the table's choice when the cell adds nothing)."""
    if not p.config.prior_width:
        return None
    doc: dict[str, Any] = {"kind": p.config.prior_kind}
    if p.config.prior_kind == "table":
        from ruvllm.router.features import QUERY_TYPES

        M, C = p.config.n_models, len(p.config.context_bins)
        w = p.arrays["prior_w"]
        doc["per_type"] = {t: {"model": p.config.models[int(w[:M, i].argmax())],
                               "context": p.config.context_bins[int(w[M : M + C, i].argmax())]}
                           for i, t in enumerate(QUERY_TYPES[: w.shape[1]])}
    return doc


@router_app.command()
def info(model: Annotated[Path, typer.Argument(help="A router checkpoint (<stem>, <stem>.npz or <stem>.json).")]
         ) -> None:
    """What a saved router is: models, sizes, sparsity, int8, label source, its pattern history."""
    from ruvllm.router.fastgrnn import FastGRNNParams
    from ruvllm.router.history import PatternHistory

    stem = model.with_suffix("") if model.suffix in (".npz", ".json") else model
    p = FastGRNNParams.load(stem)
    history = PatternHistory.load(stem)
    doc = {
        "checkpoint": str(stem), "models": p.config.models, "hidden": p.config.hidden,
        "w_rank": p.config.w_rank, "u_rank": p.config.u_rank, "context_bins": list(p.config.context_bins),
        "n_params": p.n_params(), "sparsity": round(p.sparsity(), 4), "int8": bool(p.meta.get("int8", False)),
        "size_kb_int8": round(p.size_bytes(8) / 1024, 3), "size_kb_fp32": round(p.size_bytes(32) / 1024, 3),
        "file_kb": round(stem.with_suffix(".npz").stat().st_size / 1024, 3),
        "label_source": p.meta.get("label_source", "unknown"), "n_train": p.meta.get("n_train"),
        "type_prior": _prior_info(p),
        "pattern_history": None if history is None else {
            "file": str(PatternHistory.path_for(stem)), "patterns": len(history.wins),
            "learnt_in_use": {"file": str(PatternHistory.online_path_for(stem)), "patterns": len(history.online),
                              "wins": int(sum(sum(v) for v in history.online.values()))}},
    }
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
