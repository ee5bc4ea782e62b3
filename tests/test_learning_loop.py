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


def _train_router(data_dir: Path, *args: str) -> None:
    """``ruvllm router train`` on synthetic labels for json and textwrap into ``data_dir``."""
    proc = run_cli("router", "train", "--data-dir", str(data_dir), "--modules", "json,textwrap", *args)
    assert proc.returncode == 0, proc.stderr


def _routed(data_dir: Path, embedder: Any, **overrides: Any) -> RuvLLM:
    """A ``RuvLLM`` on ``data_dir`` that routes with its trained FastGRNN and learns online."""
    cfg = Config.load(data_dir=str(data_dir), **{"router.kind": "fastgrnn", "learning.enabled": True, **overrides})
    return RuvLLM(cfg, embedder=embedder)


def test_answers_become_experiences_and_reach_the_router(tmp_path: Path, embedder: Any) -> None:
    d = tmp_path / "data"
    _train_router(d, "--limit", "60", "--epochs", "5")
    rv = _routed(d, embedder)
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
    # anchored on the training rows of the labelled set the router was trained from (learning.anchor)
    assert rv._online.stats()["anchored"] == stats["router_anchored"] == sum(
        json.loads(ln)["split"] == "train" for ln in next((d / "router").glob("labelled_*.jsonl")).open())
    assert stats["router_gate_rejections"] == rv._online.gate_rejections


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
    _train_router(d, "--limit", "40", "--epochs", "3")
    rv = _routed(d, embedder, **{"router.confidence_threshold": 0.0})
    try:
        rv.ingest_stdlib(["json"])
        a = rv.query("What does json.dumps do?", max_tokens=8, writeback=False)
        x, model, propensity = rv._routed[a.request_id]
        assert model == a.model and propensity == 1.0  # greedy routing
        router = rv.router
        i = list(router.params.config.models).index(model)
        # the x kept for learning is the one the router routed on: its greedy choice is the served model
        allowed = [list(router.params.config.models).index(m) for m in router.models]
        probs = router.params.step(x)[0].model_probs
        assert max(allowed, key=lambda j: probs[j]) == i
        before = float(probs[i])
        event = rv.feedback(a.request_id, 0.0)
        assert event["router"] == "queued"
    finally:
        rv.close()  # drains the queue: the feedback is trained on and published
    after = float(router.params.step(x)[0].model_probs[i])
    assert after < before
    assert rv._online is not None and rv._online.stats()["feedbacks"] == 1
    logged = json.loads((d / "feedback.jsonl").read_text().splitlines()[-1])
    assert logged["request_id"] == a.request_id and logged["router"] == "queued"


def test_shadow_labels_train_the_router_and_grow_its_history(tmp_path: Path, embedder: Any) -> None:
    """``router.shadow = 1``: the other installed model answers the served question too, in the
    background; the best utility becomes the question's label, a known target for the online router
    and a win on its pattern in the history table beside the checkpoint. Once the pattern holds
    ``router.shadow_per_pattern`` wins, the same question is not labelled again; a question that
    no exact check covers (a definition) is not labelled at all (no judge here ranks models on them)."""
    from ruvllm.router.history import PatternHistory, pattern_key

    d = tmp_path / "data"
    _train_router(d, "--limit", "60", "--epochs", "3", "--cv-folds", "0", "--history")
    before = PatternHistory.load(d / "router" / "router")
    assert before is not None
    trained = PatternHistory.path_for(d / "router" / "router").read_bytes()
    question = "Show a code snippet calling json.dumps."
    key = pattern_key(question, "json.dumps")
    cap = int(before.count(question, "json.dumps")) + 1  # room for exactly one more label
    rv = _routed(d, embedder, **{"router.shadow": 1.0, "router.shadow_per_pattern": cap})
    try:
        rv.ingest_stdlib(["json"])
        a = rv.query(question, max_tokens=12, writeback=False)
        rv.query(question, max_tokens=12, writeback=False)  # the worker runs in order: labelled after the first
        rv.query("What does json.dumps do?", max_tokens=12, writeback=False)
        installed = rv.router.models  # type: ignore[attr-defined]
    finally:
        rv.close()  # drains the queue: the shadow runs happen there
    assert len(installed) >= 2, "needs two installed models (make install assembles gemma3-270m and qwen 0.5b)"
    first, second, third = (json.loads(ln) for ln in (d / "experiences.jsonl").read_text().splitlines()[-3:])
    assert "shadow" not in second  # the pattern reached its cap with the first label
    assert "shadow" not in third and third["judged_by"] == "grounding"  # exactly checked questions only
    assert first["judged_by"] == "code check"
    shadow = first["shadow"]
    runs = {r["model"]: r for r in shadow["runs"]}
    assert set(runs) == set(installed) and runs[a.model]["quality"] == first["quality"]
    assert all(0.0 <= r["quality"] <= 1.0 and r["latency_ms"] > 0 and r["cost"] > 0 for r in runs.values())
    assert shadow["best"] == max(runs, key=lambda m: runs[m]["utility"]) and shadow["pattern"] == key
    assert rv.learning_stats()["shadow_labels"] == 1 and rv.learning_stats()["shadow_errors"] == 0
    assert rv._online is not None and rv._online.stats()["observed"] == 3
    # the wins learnt in use are saved as they come, apart from the trained table, and read with it
    assert PatternHistory.path_for(d / "router" / "router").read_bytes() == trained
    assert PatternHistory.online_path_for(d / "router" / "router").exists()
    after = PatternHistory.load(d / "router" / "router")
    assert after is not None and key is not None
    old = before.wins.get(key, [0.0] * len(before.models))
    grown = [n - o for n, o in zip(after.wins[key], old, strict=True)]
    assert grown == [1.0 if m == shadow["best"] else 0.0 for m in after.models]


def test_a_configured_judge_gives_its_verdict_on_a_real_answer(tmp_path: Path, embedder: Any) -> None:
    """``learning.judge_model``: a real model's yes/no verdict against the docs the question names
    judges an answer that no exact check covers; a code request keeps its code check."""
    cfg = Config.load(data_dir=str(tmp_path / "d"), **{"learning.enabled": True,
                                                       "learning.judge_model": "qwen2.5-coder-0.5b"})
    rv = RuvLLM(cfg, embedder=embedder)
    try:
        rv.ingest_stdlib(["json"])
        rv.query("What does json.dumps do?", max_tokens=24, writeback=False)
        rv.query("Show a code snippet calling json.dumps.", max_tokens=48, writeback=False)
    finally:
        rv.close()
    told, code = (json.loads(ln) for ln in (tmp_path / "d" / "experiences.jsonl").read_text().splitlines())
    assert told["judged_by"] == "verdict:qwen2.5-coder-0.5b" and 0.0 <= told["quality"] <= 1.0
    assert code["judged_by"] == "code check"
    assert rv.learning_stats()["judge"]["calls"] == 1


def test_a_signature_question_is_shadow_labelled_by_its_signature_check(tmp_path: Path, embedder: Any) -> None:
    """Real models: "What arguments does json.dumps take?" with the ingested json docs (their
    ``Signature:`` line in the prompt) is judged by the signature check, and ``router.shadow = 1``
    has the other installed model answer it too, scored by the same check."""
    d = tmp_path / "data"
    _train_router(d, "--limit", "60", "--epochs", "3", "--cv-folds", "0")
    rv = _routed(d, embedder, **{"router.shadow": 1.0})
    try:
        rv.ingest_stdlib(["json"])
        a = rv.query("What arguments does json.dumps take?", max_tokens=32, writeback=False)
        installed = rv.router.models  # type: ignore[attr-defined]
    finally:
        rv.close()
    assert len(installed) >= 2, "needs two installed models (make install assembles gemma3-270m and qwen 0.5b)"
    record = json.loads((d / "experiences.jsonl").read_text().splitlines()[-1])
    assert record["judged_by"] == "signature check"
    runs = {r["model"]: r for r in record["shadow"]["runs"]}
    assert set(runs) == set(installed) and runs[a.model]["quality"] == record["quality"]
    assert all(0.0 <= r["quality"] <= 1.0 for r in runs.values())
    assert record["shadow"]["pattern"] == "json.dumps|signature"
