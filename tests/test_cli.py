"""The ``ruvllm`` command as a user meets it: help, errors, exit codes, data left intact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import run_cli


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert lines[0].startswith("error:")
    return lines[0]


def test_help_explains_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("ingest", "ask", "stats", "models"):
        assert word in proc.stdout
    proc = run_cli("ingest", "--help")
    assert "--stdlib-docs" in proc.stdout and "--data-dir" in proc.stdout


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(tmp_path: Path, question: str) -> None:
    proc = run_cli("ask", question, data_dir=tmp_path / "d")
    assert proc.returncode != 0
    assert "empty" in one_line_error(proc.stderr)


def test_unknown_config_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[memory]\nefSearch = 12\n")
    proc = run_cli("stats", "--config", str(cfg), data_dir=tmp_path / "d")
    assert proc.returncode != 0
    line = one_line_error(proc.stderr)
    assert "efSearch" in line and "ef_search" in line


def test_data_dir_that_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_cli("ask", "What is json?", "--data-dir", str(tmp_path))
    assert proc.returncode != 0
    assert "not a ruvllm data directory" in one_line_error(proc.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_corrupt_database_is_reported_and_left_intact(tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert run_cli("stats", data_dir=d).returncode == 0  # creates a valid data dir
    db = d / "memory" / "memory.db"
    assert db.exists()
    for extra in d.joinpath("memory").glob("memory.db-*"):
        extra.unlink()
    db.write_bytes(b"this is not a database" * 100)
    before = digest(db)
    proc = run_cli("stats", data_dir=d)
    assert proc.returncode != 0
    assert "memory.db" in one_line_error(proc.stderr)
    assert digest(db) == before


def test_ingest_needs_a_source(tmp_path: Path) -> None:
    proc = run_cli("ingest", data_dir=tmp_path / "d")
    assert proc.returncode != 0
    assert "--stdlib-docs" in proc.stderr


def _own_model_config(tmp_path: Path, gguf: Path) -> Path:
    cfg = tmp_path / "own.toml"
    cfg.write_text(
        '[llm]\nmodels = ["mine"]\ndefault_model = "mine"\n'
        f'[llm.paths]\nmine = "{gguf}"\n'
    )
    return cfg


@pytest.mark.model
def test_missing_model_file(tmp_path: Path) -> None:
    cfg = _own_model_config(tmp_path, tmp_path / "nowhere.gguf")
    proc = run_cli("ask", "What is json?", "--config", str(cfg), data_dir=tmp_path / "d")
    assert proc.returncode != 0
    assert "nowhere.gguf" in one_line_error(proc.stderr)


@pytest.mark.model
def test_corrupt_model_file_is_reported_and_left_intact(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 4096)  # right magic, garbage after it
    before = digest(bad)
    cfg = _own_model_config(tmp_path, bad)
    proc = run_cli("ask", "What is json?", "--config", str(cfg), data_dir=tmp_path / "d")
    assert proc.returncode != 0
    assert "broken.gguf" in one_line_error(proc.stderr)
    assert digest(bad) == before
