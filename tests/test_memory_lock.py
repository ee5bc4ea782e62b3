"""One process owns a memory directory; a second opener gets a clear error, a dead owner none."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ruvllm.config import HnswParams
from ruvllm.errors import StoreError
from ruvllm.memory import Memory

PARAMS = HnswParams(16, 100, 32)


def test_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = Memory.open(tmp_path, dim=8, params=PARAMS)
    with pytest.raises(StoreError, match="in use by another ruvllm process"):
        Memory.open(tmp_path, dim=8, params=PARAMS)
    first.close()
    Memory.open(tmp_path, dim=8, params=PARAMS).close()


def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from ruvllm.config import HnswParams\n"
        "from ruvllm.memory import Memory\n"
        f"m = Memory.open({str(tmp_path)!r}, dim=8, params=HnswParams(16, 100, 32))\n"
        "print('open', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match=f"pid {proc.pid}"):
            Memory.open(tmp_path, dim=8, params=PARAMS)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.1)
    Memory.open(tmp_path, dim=8, params=PARAMS).close()
