"""The ``ruvllm`` command: a thin layer over ``ruvllm.RuvLLM``.

Every command takes ``--data-dir`` (default: the user data dir, or RUVLLM_DATA_DIR) and
``--config`` (a TOML file). Errors print one line that says what to do, and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ruvllm.config import Config
from ruvllm.errors import RuvLLMError

app = typer.Typer(
    name="ruvllm",
    help=(
        "ruvllm: a small local language model that answers from a memory it keeps improving.\n\n"
        "Start with `ruvllm ingest --stdlib-docs`, then `ruvllm ask \"What does json.dumps do?\"`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where memory and models live (default: user data dir or $RUVLLM_DATA_DIR)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A TOML config file (see README).")]


def _config(config: Path | None, data_dir: Path | None, **overrides: Any) -> Config:
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    return Config.load(config, **overrides)


def _open(config: Path | None, data_dir: Path | None) -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ruvllm.orchestrator import RuvLLM

    return RuvLLM(_config(config, data_dir))


@app.command()
def ingest(
    path: Annotated[Path | None, typer.Argument(help="A text file or a folder of .txt/.md/.rst files.")] = None,
    stdlib_docs: Annotated[
        bool, typer.Option("--stdlib-docs", help="Ingest the Python standard library's docstrings (no download).")
    ] = False,
    modules: Annotated[
        str | None, typer.Option(help="With --stdlib-docs: comma-separated modules (default: a curated set of ~90).")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add documents to memory: embed them, index them, link them."""
    if (path is None) == (not stdlib_docs):
        raise typer.BadParameter("give a PATH or --stdlib-docs (one of the two)")
    rv = _open(config, data_dir)
    try:
        with Progress(
            TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, disable=not err.is_terminal and os.environ.get("RUVLLM_PROGRESS") != "1",
        ) as bar:
            task = bar.add_task("ingest", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if stdlib_docs:
                mods = [m.strip() for m in modules.split(",") if m.strip()] if modules else None
                report = rv.ingest_stdlib(mods, progress)
            else:
                assert path is not None
                report = rv.ingest_path(path, progress)
        out.print(
            f"ingested {report.inserted} new documents ({report.skipped} already present), "
            f"{report.edges} edges, in {report.seconds:.1f} s; memory now holds {rv.memory.count()} nodes"
        )
    finally:
        rv.close()


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in quotes.")],
    model: Annotated[str | None, typer.Option(help="Force a model instead of letting the router choose.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on answer length in tokens.")] = None,
    no_writeback: Annotated[bool, typer.Option("--no-writeback", help="Do not store this answer.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole response as JSON.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask a question; print the answer, its sources, the router's decision and the latency per stage."""
    rv = _open(config, data_dir)
    try:
        resp = rv.query(question, model=model, max_tokens=max_tokens, writeback=False if no_writeback else None)
    finally:
        rv.close()
    if as_json:
        out.print_json(json.dumps(resp.to_dict()))
        return
    print_response(resp)


def print_response(resp: Any) -> None:
    out.print(f"[bold]Q:[/bold] {resp.question}")
    out.print(f"[bold green]A:[/bold green] {resp.answer or '(empty answer)'}")
    table = Table(title="sources", show_lines=False, title_justify="left")
    for col in ("#", "node", "score", "type", "hop", "source / snippet"):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(resp.sources, 1):
        table.add_row(str(i), s.node_id[:8], f"{s.score:.3f}", s.type, str(s.hop), f"{s.source}: {s.snippet}")
    out.print(table)
    d = resp.decision
    out.print(
        f"[bold]router:[/bold] model={d.model} context={d.context_tokens} temperature={d.temperature} "
        f"top_p={d.top_p} confidence={d.confidence:.2f} ({d.reason})"
    )
    stages = "  ".join(f"{k}={v:.0f}ms" for k, v in resp.latency_ms.items())
    out.print(f"[bold]latency:[/bold] {stages}  total={resp.total_ms:.0f}ms")
    wb = resp.writeback
    out.print(
        f"[bold]quality[/bold] (grounding)={resp.quality:.2f}  [bold]write-back:[/bold] "
        + (f"{wb['action']} {wb['node_id'] or ''} {wb['reason']}" if wb else "off")
    )
    out.print(f"request id: {resp.request_id}")


@app.command()
def stats(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """What is in memory and which models are installed."""
    rv = _open(config, data_dir)
    try:
        out.print_json(json.dumps(rv.stats(), default=str))
    finally:
        rv.close()


@app.command()
def models(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """The model registry: every known model and whether it is installed here."""
    from ruvllm.llm import Registry

    cfg = _config(config, data_dir)
    reg = Registry(cfg.models_path, extra=cfg.llm.paths)
    table = Table(title="models")
    for col in ("name", "family", "params", "quant", "style", "installed", "file / how to install"):
        table.add_column(col, overflow="fold")
    for s in reg.specs():
        inst = reg.is_installed(s.name)
        if inst:
            how = s.filename
        elif s.packages:
            how = f"pip install {' '.join(s.packages)}"
        else:
            how = f"put {s.filename} in {reg.models_dir}, or set [llm.paths] {s.name}"
        table.add_row(s.name, s.family, f"{s.params_m}M", s.quant, s.prompt_style, "yes" if inst else "no", how)
    out.print(table)


@app.command()
def migrate(
    source: Annotated[str, typer.Option("--from", help="A PostgreSQL DSN (postgresql://…) or a data directory.")],
    target: Annotated[str, typer.Option("--to", help="A PostgreSQL DSN or a data directory (created if new).")],
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty target (its nodes are kept).")] = False,
    batch: Annotated[int, typer.Option(help="Nodes per transaction.")] = 1000,
    sample: Annotated[int, typer.Option(help="Nodes read back from both sides to verify the copy.")] = 1000,
    from_schema: Annotated[str, typer.Option(help="PostgreSQL schema of the source.")] = "ruvllm",
    to_schema: Annotated[str, typer.Option(help="PostgreSQL schema of the target.")] = "ruvllm",
) -> None:
    """Copy a memory between backends (embedded <-> pgvector): nodes with their history, edges, vectors; verified."""
    from ruvllm.memory.backends.migrate import run_migration

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, disable=not err.is_terminal and os.environ.get("RUVLLM_PROGRESS") != "1",
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        rep = run_migration(source, target, from_schema=from_schema, to_schema=to_schema, force=force,
                            batch=batch, sample=sample, progress=progress)
    out.print(
        f"migrated {rep.nodes} nodes ({rep.history_versions} earlier versions), {rep.edges} edges from "
        f"{rep.source} to {rep.target} in {rep.seconds:.1f} s"
        + (f"; {rep.skipped} nodes were already there and kept" if rep.skipped else "")
        + f"; verified counts and {rep.verified} sampled nodes"
    )


def _mount_subcommands() -> None:
    """Commands that live beside the parts they drive: `ruvllm serve`, `ruvllm eval`, `ruvllm router ...`."""
    from ruvllm.evaluate import eval_command
    from ruvllm.router.cli import router_app
    from ruvllm.server import serve_command

    app.command("serve")(serve_command)
    app.command("eval")(eval_command)
    app.add_typer(router_app, name="router")


_mount_subcommands()


def main() -> None:
    """Entry point: run the app, turning ruvllm errors into one line and a non-zero exit."""
    try:
        app(standalone_mode=False)
    except RuvLLMError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
