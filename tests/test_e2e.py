"""The whole query loop with real parts: encoder, SQLite + HNSW memory, llama.cpp model.

These tests load real models (marked ``model``); they run in CI too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from ruvllm.config import Config
from ruvllm.errors import ContextOverflowError, InvalidInputError
from ruvllm.memory.schema import EdgeType, NodeType
from ruvllm.orchestrator import RuvLLM

pytestmark = pytest.mark.model

MODULES = ["json", "textwrap", "shutil"]
QUESTION = "What does json.dumps do?"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def rv(data_dir: Path, embedder: Any) -> Any:
    r = RuvLLM(Config.load(data_dir=str(data_dir)), embedder=embedder)
    report = r.ingest_stdlib(MODULES)
    assert report.inserted > 50 and report.edges > 20
    yield r
    r.close()


def test_ingest_is_idempotent(rv: RuvLLM) -> None:
    before = rv.memory.count()
    again = rv.ingest_stdlib(MODULES)
    assert again.inserted == 0 and again.skipped == again.docs
    assert rv.memory.count() == before


def test_query_runs_every_stage_with_real_parts(rv: RuvLLM) -> None:
    resp = rv.query(QUESTION)
    assert resp.answer, "the model produced no text"
    assert resp.decision.model in rv.installed_models()
    assert resp.model == resp.decision.model
    top_sources = [s.source for s in resp.sources[:3]]
    assert "stdlib:json.dumps" in top_sources, top_sources
    for stage in ("embed", "search", "expand", "rank", "route", "prompt", "generate", "judge", "writeback"):
        assert stage in resp.latency_ms and resp.latency_ms[stage] >= 0
    assert resp.usage["completion_tokens"] > 0
    # the answer was written back as a Query node that cites its sources
    assert resp.writeback is not None
    assert resp.writeback["action"] == "inserted", resp.writeback
    node = rv.memory.get(resp.writeback["node_id"])
    assert node.type == NodeType.QUERY and node.text.startswith(f"Q: {QUESTION}")
    cites = [e for e in rv.memory.edges(node.id) if e.rel == EdgeType.CITES and e.src == node.id]
    assert {e.dst for e in cites} == {s.node_id for s in resp.sources}


def test_both_prompt_styles_answer(rv: RuvLLM) -> None:
    installed = rv.installed_models()
    for name in installed:
        resp = rv.query("What does textwrap.dedent do?", model=name, writeback=False, max_tokens=48)
        assert resp.model == name and resp.answer
        assert any(s.source.startswith("stdlib:textwrap.dedent") for s in resp.sources)


def test_question_over_the_context_window(rv: RuvLLM) -> None:
    memory_before = rv.memory.count()
    with pytest.raises(ContextOverflowError, match="context window"):
        rv.query("why " * 3000, model="gemma3-270m")
    with pytest.raises(ContextOverflowError, match="character"):
        rv.query("x" * 100_000)
    assert rv.memory.count() == memory_before


def test_empty_and_wrong_type_questions(rv: RuvLLM) -> None:
    for bad in ("", "   \n\t"):
        with pytest.raises(InvalidInputError, match="empty"):
            rv.query(bad)
    with pytest.raises(InvalidInputError, match="string"):
        rv.query(42)  # type: ignore[arg-type]


def test_a_repeated_question_is_recalled_until_feedback_demotes_it(rv: RuvLLM) -> None:
    q = "What does textwrap.fill do?"
    first = rv.query(q, max_tokens=32)
    if first.writeback is None or first.writeback["action"] != "inserted":
        pytest.skip(f"the first answer was not stored ({first.writeback}); nothing to recall")
    again = rv.query(q)
    assert again.model == "memory" and again.answer == first.answer
    assert again.writeback == {"action": "recalled", "node_id": first.writeback["node_id"],
                               "reason": again.decision.reason}
    assert "generate" not in again.latency_ms
    rv.feedback(again.request_id, 0.0)  # a user says the stored answer is bad
    rv.feedback(again.request_id, 0.0)
    assert rv.memory.get(first.writeback["node_id"]).metadata.confidence < 0.5
    third = rv.query(q, max_tokens=16, writeback=False)
    assert third.model != "memory" and "generate" in third.latency_ms


# last: it closes the module's memory, as a process exit would
def test_a_new_process_finds_the_written_back_answer(rv: RuvLLM, data_dir: Path) -> None:
    rv.query(QUESTION)  # ensure it is there (a duplicate is not written twice)
    rv.memory.close()  # as at the end of a process: the index is saved
    proc = run_cli("ask", QUESTION, "--json", "--max-tokens", "32", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    queries = [s for s in out["sources"] if s["type"] == "Query"]
    assert queries, out["sources"]
    assert queries[0]["snippet"].startswith(f"Q: {QUESTION}")
    assert out["sources"][0]["type"] == "Query", "the earlier answer should be the best match"
    # the same question again is answered from memory, without a model call
    assert out["model"] == "memory" and out["writeback"]["action"] == "recalled", out["writeback"]
    assert "generate" not in out["latency_ms"]
    assert " ".join(out["answer"].split())[:40] in queries[0]["snippet"]  # the stored answer, told again
