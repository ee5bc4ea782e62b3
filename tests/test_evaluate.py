"""``ruvllm eval``: real bench child processes (tiny sizes), the report built from their real output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ruvllm.errors import ConfigError
from ruvllm.evaluate import (
    BenchSpec,
    EvalOptions,
    headline_table,
    latency_table,
    latency_worker,
    markdown_tables,
    plot_latency_cdf,
    repo_root,
    run_bench,
    run_eval,
)

TINY_LEARNING = ("--tasks", "2", "--cycles-per-task", "20", "--eval-every", "10", "--strategies", "naive,replay")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One eval: bench/learning.py at a tiny size (real run), bench/memory.py given a bad flag (fails)."""
    out = tmp_path_factory.mktemp("eval")
    opts = EvalOptions(out=out, only=("learning", "memory"), queries=0,
                       bench_args={"learning": TINY_LEARNING, "memory": ("--no-such-flag",)})
    run_eval(opts, "ruvllm eval --only learning,memory --queries 0")
    return out


def test_report_has_the_bench_table_command_and_machine(tiny_eval: Path) -> None:
    report = (tiny_eval / "report.md").read_text()
    assert "# ruvllm evaluation — quick mode" in report
    assert "Git commit: `" in report and "CPUs" in report and "Date: " in report
    assert "## bench/learning.py — ok" in report
    # the exact command, runnable from the repository root
    assert "-m bench.learning --tasks 2 --cycles-per-task 20 --eval-every 10 --strategies naive,replay --out" in report
    # its headline table, taken from the bench's own Markdown
    assert "| strategy | updates |" in report
    assert "| naive | 40 |" in report and "| replay | 40 |" in report
    assert (tiny_eval / "bench" / "learning" / "learning_bench.json").is_file()


def test_a_failing_bench_is_noted_and_the_report_still_written(tiny_eval: Path) -> None:
    report = (tiny_eval / "report.md").read_text()
    assert "## bench/memory.py — failed" in report
    assert "unrecognized arguments: --no-such-flag" in report
    log = (tiny_eval / "bench" / "memory" / "log.txt").read_text()
    assert "--no-such-flag" in log and "exit 2" in log
    summary = json.loads((tiny_eval / "eval.json").read_text())
    assert {b["name"]: b["status"] for b in summary["benches"]} == {"learning": "ok", "memory": "failed"}


def test_learning_curve_plotted_from_this_runs_json(tiny_eval: Path) -> None:
    report = (tiny_eval / "report.md").read_text()
    assert "## Learning curve\n\nFrom this run." in report
    assert (tiny_eval / "learning_curve.png").read_bytes().startswith(PNG)


def test_router_curve_falls_back_to_the_recorded_json(tiny_eval: Path) -> None:
    recorded = repo_root() / "bench" / "results" / "router" / "router_bench.json"
    if not recorded.is_file():
        pytest.skip("no recorded router results in this checkout")
    report = (tiny_eval / "report.md").read_text()
    assert "the recorded `bench/results/router/router_bench.json`" in report
    assert (tiny_eval / "router_cost_quality.png").read_bytes().startswith(PNG)


def test_missing_optional_dependency_skips_with_a_note(tmp_path: Path) -> None:
    spec = BenchSpec("memory", quick=(), needs=("ruvllm_no_such_module",))
    run = run_bench(spec, EvalOptions(out=tmp_path))
    assert run.status == "skipped"
    assert "optional dependency missing: ruvllm_no_such_module" in run.note


def test_unknown_bench_name_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown bench 'nosuch'"):
        run_eval(EvalOptions(out=tmp_path, only=("nosuch",), queries=0))


def test_cli_reports_unknown_bench_and_exits_2(tmp_path: Path) -> None:
    from ruvllm.evaluate import eval_command

    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # two commands, so "eval" is a subcommand as in the real CLI
    res = CliRunner().invoke(app, ["eval", "--only", "nosuch", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown bench" in res.output


def test_headline_table_picks_the_hinted_heading() -> None:
    md = "# A\n\n| a |\n|---|\n| 1 |\n\n## Held-out symbols\n\n| b |\n|---|\n| 2 |\n"
    assert [h for h, _ in markdown_tables(md)] == ["A", "Held-out symbols"]
    table = headline_table(md, "held-out")
    assert table is not None and table[1][-1] == "| 2 |"
    first = headline_table(md)
    assert first is not None and first[1][-1] == "| 1 |"
    assert headline_table("no tables here") is None


@pytest.mark.model
def test_latency_worker_real_queries_to_cdf(tmp_path: Path) -> None:
    doc = latency_worker(tmp_path, 2, None, 8)
    assert len(doc["queries"]) == 2 and doc["ingested_nodes"] > 0
    for q in doc["queries"]:
        assert {"embed", "search", "generate"} <= set(q["latency_ms"])
    table = latency_table(doc)
    assert table[0].startswith("| stage |") and any(r.startswith("| generate | 2 |") for r in table)
    plot_latency_cdf(doc, tmp_path / "cdf.png")
    assert (tmp_path / "cdf.png").read_bytes().startswith(PNG)


HELLO_BENCH = '''
import argparse, json, pathlib
ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--out", required=True)
a = ap.parse_args()
out = pathlib.Path(a.out)
(out / "hello.json").write_text(json.dumps({"quick": a.quick}))
size = "quick" if a.quick else "full"
(out / "hello.md").write_text("# Hello bench\\n\\n| size | ok |\\n|---|---|\\n| " + size + " | yes |\\n")
'''


def test_a_new_bench_is_run_by_its_help_flags_or_skipped(tmp_path: Path) -> None:
    """A bench eval has no entry for: --quick/--out passed when its --help lists them; no --out → skipped."""
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "hello.py").write_text(HELLO_BENCH)
    (root / "bench" / "noout.py").write_text("print('would write into bench/results')\n")
    out = tmp_path / "report"
    run_eval(EvalOptions(out=out, queries=0, root=root))
    report = (out / "report.md").read_text()
    assert "## bench/hello.py — ok" in report and "-m bench.hello --quick --out" in report
    assert "| quick | yes |" in report
    assert json.loads((out / "bench" / "hello" / "hello.json").read_text()) == {"quick": True}
    assert "## bench/noout.py — skipped" in report and "lists no --out" in report
    assert "Router cost–quality" not in report  # no router JSON in that checkout, none recorded either
