import json
from pathlib import Path

import pytest

from ruvllm.datadir import MARKER, open_data_dir
from ruvllm.errors import DataDirError


def test_creates_and_reopens(tmp_path: Path) -> None:
    d = open_data_dir(tmp_path / "new")
    assert (d / MARKER).exists()
    assert open_data_dir(tmp_path / "new") == d


def test_refuses_a_foreign_non_empty_directory_and_leaves_it(tmp_path: Path) -> None:
    (tmp_path / "thesis.txt").write_text("precious")
    with pytest.raises(DataDirError, match="not a ruvllm data directory"):
        open_data_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]


def test_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(DataDirError, match="is a file"):
        open_data_dir(f)


def test_refuses_other_versions_and_corrupt_markers(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text(json.dumps({"format": "ruvllm-data", "version": 99}))
    with pytest.raises(DataDirError, match="version 99"):
        open_data_dir(tmp_path)
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(DataDirError, match="corrupt"):
        open_data_dir(tmp_path)
    assert (tmp_path / MARKER).read_text() == "{not json"
