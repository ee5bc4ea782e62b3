"""Benchmarks: each writes JSON + Markdown (+ plots) under results/; not timed tests."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ruvllm

_CHECKOUT = Path(__file__).resolve().parent.parent


def _check_checkout() -> None:
    """Refuse to measure a ruvllm other than this checkout's. An editable install left pointing at
    another clone (``pip install -e`` run from a copy into this venv) is otherwise silent: ``bench/``
    comes from the working directory and ``ruvllm`` from wherever the install points."""
    src = _CHECKOUT / "src" / "ruvllm"
    here = Path(ruvllm.__file__).resolve().parent
    if src.is_dir() and here != src.resolve():
        raise ImportError(f"ruvllm is imported from {here}, not from this checkout's {src}: "
                          f"reinstall it here (`pip install --no-deps -e {_CHECKOUT}`) before measuring")


_check_checkout()


def provenance(module: str, argv: list[str] | None) -> dict[str, str]:
    """The command that reproduces a run, when and on what it ran (the first keys of a result)."""
    return {
        "command": f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
    }


def write_results(out: Path, stem: str, doc: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  plot: Callable[[dict[str, Any], Path], None]) -> None:
    """``<out>/<stem>.json``, ``.md`` and ``.png``; the Markdown is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(doc))
    plot(doc, out / f"{stem}.png")
    print(markdown(doc))
