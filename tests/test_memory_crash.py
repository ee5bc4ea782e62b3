"""A real kill -9 in the middle of a write burst: nothing acknowledged is lost, the next open is consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ruvllm.memory import Memory
from ruvllm.memory.schema import EdgeType

DIM = 16
WRITER = r"""
import sys, numpy as np
from pathlib import Path
from ruvllm.memory import Memory
from ruvllm.memory.schema import Edge, EdgeType, Node
dim = int(sys.argv[2])
mem = Memory.open(Path(sys.argv[1]), dim=dim)
rng = np.random.default_rng(int(sys.argv[3]))
prev = None
i = 0
while True:  # until killed
    if i % 10 == 9:  # a batch: nodes + edges in one transaction
        batch = [Node(text=f"b{i}-{j}", vector=rng.normal(size=dim).astype(np.float32)) for j in range(5)]
        edges = [Edge(batch[0].id, n.id, EdgeType.SAME_TOPIC, 0.5) for n in batch[1:]]
        mem.add_many(batch, edges)
        ids = [n.id for n in batch]
    else:
        node = Node(text=f"n{i}", vector=rng.normal(size=dim).astype(np.float32))
        mem.add_many([node], [Edge(node.id, prev, EdgeType.FOLLOWS, 0.9)] if prev else [])
        ids = [node.id]
        if i % 7 == 3:
            mem.update(node.id, text=f"n{i} v2")
            ids = [node.id + ":v2"]
    prev = ids[0].split(":")[0]
    print(" ".join(ids), flush=True)  # acknowledged: add_many/update returned
    i += 1
"""


def run_and_kill(path: Path, seed: int, min_acks: int) -> list[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(DIM), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 120
    while len(acked) < min_acks and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.extend(line.split())
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: it is writing the next one right now
    rest, err = proc.communicate(timeout=30)
    acked.extend(rest.split())  # lines it printed before the kill landed were acknowledged too
    assert proc.returncode == -signal.SIGKILL, err
    assert len(acked) >= min_acks, err
    return acked


def check(path: Path, acked: list[str]) -> int:
    with Memory.open(path, dim=DIM) as mem:
        assert mem.stats()["index"]["on_open"]["action"] == "rebuilt"  # the index was never saved: rebuilt
        for item in acked:
            nid, _, v2 = item.partition(":")
            node = mem.get(nid)  # raises NotFoundError if an acknowledged write was lost
            if v2:
                assert node.text.endswith("v2") and node.metadata.version == 2
        # the index and the store agree: every stored vector is found, and nothing else is indexed
        assert mem.stats()["index"]["size"] == mem.count()
        for nid in [a.partition(":")[0] for a in acked][:: max(1, len(acked) // 60)]:
            node = mem.get(nid)
            assert mem.search(node.vector, k=1)[0].node.id == nid
        batch_heads = [a for a in acked if mem.get(a.partition(":")[0]).text.endswith("-0")]
        for head in batch_heads:
            assert sum(e.rel == EdgeType.SAME_TOPIC for e in mem.edges(head)) == 4  # its batch's edges came with it
        return mem.count()


def test_kill_9_during_a_write_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "mem"
    acked = run_and_kill(path, seed=1, min_acks=150)
    n1 = check(path, acked)
    assert n1 >= len({a.partition(":")[0] for a in acked})
    # a second burst on the reopened store, killed again: both bursts' acknowledged writes are there
    acked2 = run_and_kill(path, seed=2, min_acks=100)
    n2 = check(path, acked + acked2)
    assert n2 >= n1 + len({a.partition(":")[0] for a in acked2})
    with Memory.open(path, dim=DIM) as mem:
        assert mem.stats()["index"]["on_open"]["action"] == "loaded"  # a clean close saved it
        assert np.isfinite(mem.search(np.ones(DIM, np.float32), k=5)[0].score)
