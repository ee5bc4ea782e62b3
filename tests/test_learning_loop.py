"""The orchestrator's learning loop with real parts: an answer becomes a judged experience, in
the background, and a FastGRNN router observes it; close() drains the queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from ruvllm.config import Config
from ruvllm.orchestrator import RuvLLM

pytestmark = pytest.mark.model


def test_answers_become_experiences_and_reach_the_router(tmp_path: Path, embedder: Any) -> None:
    d = tmp_path / "data"
    proc = run_cli("router", "train", "--data-dir", str(d), "--modules", "json,textwrap", "--limit", "60",
                   "--epochs", "5")
    assert proc.returncode == 0, proc.stderr
    cfg = Config.load(data_dir=str(d), **{"router.kind": "fastgrnn", "learning.enabled": True})
    rv = RuvLLM(cfg, embedder=embedder)
    try:
        rv.ingest_stdlib(["json"])
        answers = [rv.query(q, max_tokens=16) for q in ("What does json.dumps do?", "What does json.loads do?")]
        assert all(a.decision.reason.startswith(("fastgrnn", "cascade", "low confidence")) for a in answers)
    finally:
        rv.close()  # drains the background queue
    lines = [json.loads(ln) for ln in (d / "experiences.jsonl").read_text().splitlines()]
    assert [e["request_id"] for e in lines] == [a.request_id for a in answers]
    assert all(0.0 <= e["quality"] <= 1.0 and e["judged_by"] == "grounding" for e in lines)
    stats = rv.learning_stats()
    assert stats["processed"] == 2 and stats["errors"] == 0 and stats["dropped"] == 0
    assert rv._online is not None and rv._online.stats()["observed"] == 2


def test_learning_off_writes_no_experiences(tmp_path: Path, embedder: Any) -> None:
    rv = RuvLLM(Config.load(data_dir=str(tmp_path / "d")), embedder=embedder)
    try:
        rv.ingest_stdlib(["textwrap"])
        rv.query("What does textwrap.dedent do?", max_tokens=8, writeback=False)
    finally:
        rv.close()
    assert not (tmp_path / "d" / "experiences.jsonl").exists()
    assert rv.learning_stats() == {"enabled": False}


def test_feedback_reaches_the_online_router(tmp_path: Path, embedder: Any) -> None:
    """A user's bad score on a routed answer goes through the background worker to
    ``RouterOnline.feedback``: the published router gives that model less probability on that query."""
    d = tmp_path / "data"
    proc = run_cli("router", "train", "--data-dir", str(d), "--modules", "json,textwrap", "--limit", "40",
                   "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    cfg = Config.load(data_dir=str(d), **{"router.kind": "fastgrnn", "learning.enabled": True,
                                          "router.confidence_threshold": 0.0})
    rv = RuvLLM(cfg, embedder=embedder)
    try:
        rv.ingest_stdlib(["json"])
        a = rv.query("What does json.dumps do?", max_tokens=8, writeback=False)
        x, model, propensity = rv._routed[a.request_id]
        assert model == a.model and propensity == 1.0  # greedy routing
        router = rv.router
        i = list(router.params.config.models).index(model)
        before = float(router.params.step(x)[0].model_probs[i])
        event = rv.feedback(a.request_id, 0.0)
        assert event["router"] == "queued"
    finally:
        rv.close()  # drains the queue: the feedback is trained on and published
    after = float(router.params.step(x)[0].model_probs[i])
    assert after < before
    assert rv._online is not None and rv._online.stats()["feedbacks"] == 1
    logged = json.loads((d / "feedback.jsonl").read_text().splitlines()[-1])
    assert logged["request_id"] == a.request_id and logged["router"] == "queued"
