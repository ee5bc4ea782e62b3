"""The data directory: what makes a folder ours, and the rule that we never write into one that is not.

A ruvllm data directory holds ``ruvllm.json`` (format marker + version), ``memory/``
(the store and index) and ``ingested.json`` (which sources were ingested). Model files
are derived (assembled from installed packages) and live in the user cache dir instead.
A folder that exists, is not empty and has no marker is refused, so pointing
``--data-dir`` at the wrong place cannot damage anything.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ruvllm.errors import DataDirError

MARKER = "ruvllm.json"
FORMAT = "ruvllm-data"
VERSION = 1


def open_data_dir(path: Path) -> Path:
    """Create or check ``path``; returns it resolved. Raises ``DataDirError`` if it is not ours."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data directory {path} is a file; choose a directory with --data-dir")
    marker = path / MARKER
    if path.is_dir() and any(path.iterdir()) and not marker.exists():
        raise DataDirError(
            f"{path} is not a ruvllm data directory (no {MARKER}) and is not empty; "
            "choose a new or empty directory with --data-dir or RUVLLM_DATA_DIR"
        )
    if marker.exists():
        info = read_marker(path)
        if info.get("format") != FORMAT:
            raise DataDirError(
                f"{marker} is not a ruvllm marker (format={info.get('format')!r}); refusing to use {path}"
            )
        if info.get("version") != VERSION:
            raise DataDirError(
                f"{path} holds data format version {info.get('version')}, this ruvllm reads version {VERSION}; "
                "use a matching ruvllm or a new data directory"
            )
        return path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"format": FORMAT, "version": VERSION, "created": time.time()})
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {path}: {exc.strerror}") from None
    return path.resolve()


def read_marker(path: Path) -> dict[str, Any]:
    marker = path / MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{marker} is unreadable or corrupt ({exc}); it was left as it is") from None
    if not isinstance(info, dict):
        raise DataDirError(f"{marker} is corrupt (not a JSON object); it was left as it is")
    return info


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 1) -> None:
    """Write JSON to a temp file, fsync, and rename over ``path``: readers see old or new, never half.
    ``indent=None`` writes it compact (large tables)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
