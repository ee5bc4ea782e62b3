"""bench/ refuses to measure a ruvllm imported from another clone (a stale editable install)."""

from __future__ import annotations

from pathlib import Path

import bench
import pytest


def test_bench_refuses_a_ruvllm_from_another_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench._check_checkout()  # this checkout's ruvllm: accepted
    (tmp_path / "src" / "ruvllm").mkdir(parents=True)
    monkeypatch.setattr(bench, "_CHECKOUT", tmp_path)  # as if bench/ lay in another clone
    with pytest.raises(ImportError, match="not from this checkout"):
        bench._check_checkout()


def test_an_installed_ruvllm_without_a_src_tree_is_not_refused(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "_CHECKOUT", tmp_path)  # no src/ruvllm there: nothing to compare with
    bench._check_checkout()
