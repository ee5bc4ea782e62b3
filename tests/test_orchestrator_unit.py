"""How the orchestrator reads a base model's stream (a scripted generator stands in for llama.cpp
here; the real model runs the same path in test_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from ruvllm.llm.base import SamplingParams
from ruvllm.llm.prompt import COMPLETION_STOP, BuiltPrompt
from ruvllm.memory import Hit
from ruvllm.memory.graph import Expanded
from ruvllm.memory.schema import Node, NodeType
from ruvllm.orchestrator import _rank, _until_blank_line


class Scripted:
    """Yields fixed pieces; records the stops it was given."""

    name = "scripted"

    def __init__(self, pieces: list[str]):
        self.pieces = pieces
        self.stops: tuple[str, ...] = ()
        self.pulled = 0

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        self.stops = params.stop
        for p in self.pieces:
            self.pulled += 1
            yield p


@pytest.mark.parametrize(
    ("pieces", "want"),
    [
        (["\n", "\n", "It serial", "izes.", "\n\n", "Question: more"], "\n\nIt serializes."),
        (["It serializes.\n", "\nNext"], "It serializes.\n"),
        (["One line.", "\nTwo lines."], "One line.\nTwo lines."),
        (["\n\n"], "\n\n"),
    ],
)
def test_answer_ends_at_the_first_blank_line_after_text(pieces: list[str], want: str) -> None:
    gen = Scripted(pieces)
    built = BuiltPrompt("completion", prompt="Q", stop=COMPLETION_STOP)
    got = "".join(_until_blank_line(gen, built, SamplingParams(max_tokens=8)))  # type: ignore[arg-type]
    assert got == want
    assert "\n\n" not in gen.stops  # llama.cpp never sees the blank-line stop


def test_generation_stops_being_pulled_after_the_cut() -> None:
    gen = Scripted(["Answer.", "\n\n", "babble"] + ["x"] * 100)
    built = BuiltPrompt("completion", prompt="Q", stop=COMPLETION_STOP)
    list(_until_blank_line(gen, built, SamplingParams(max_tokens=8)))  # type: ignore[arg-type]
    assert gen.pulled == 2


def test_stored_answers_to_other_questions_stay_out_of_the_prompt() -> None:
    """A Q/A node about json.loads must not reach a json.dumps prompt (a small model copies it);
    one about json.dumps itself, and plain documents, do."""
    rng = np.random.default_rng(0)

    def node(text: str, typ: NodeType, source: str = "") -> Node:
        return Node(text=text, vector=rng.normal(size=8).astype(np.float32), type=typ, source=source)

    doc = node("Serialize obj to a JSON formatted str.", NodeType.DOCUMENT, "stdlib:json.dumps")
    same = node("Q: What does json.dumps do?\nA: It returns a JSON string.", NodeType.QUERY)
    other = node("Q: What does json.loads do?\nA: It parses a JSON string.", NodeType.QUERY)
    far = node("Q: What does json.load do?\nA: It reads JSON from a file.", NodeType.QUERY)
    ranked = _rank("What does json.dumps do?", rng.normal(size=8).astype(np.float32),
                   [Hit(other, 0.9), Hit(doc, 0.8), Hit(same, 0.7)], [Expanded(far, 1, doc.id, 0.9)])
    assert {c.node_id for c in ranked} == {doc.id, same.id}


def test_a_base_model_is_not_shown_stored_answers() -> None:
    """gemma-270m recites its context: stored answers in its prompt made its answers worse
    (bench/selflearn.py), so completion prompts keep only the documents, in their order."""
    from ruvllm.llm.prompt import ContextItem
    from ruvllm.orchestrator import _without_stored_answers

    pair = ContextItem("q", "Q: What does json.dumps do?\nA: It returns a JSON string.", 0.9, "writeback", "Query")
    doc = ContextItem("d", "Function json.dumps (module json).", 0.8, "stdlib:json.dumps", "Document")
    other = ContextItem("c", "json.dumps (continued): more.", 0.7, "stdlib:json.dumps", "Document")
    assert _without_stored_answers([pair, doc, other]) == [doc, other]


def test_stored_answers_do_not_take_the_documents_places(tmp_path) -> None:
    """When stored answers are among the k hits, the context still gets k documents: the
    memory-on arm of bench/selflearn.py answered first askings worse while they shrank it."""
    from ruvllm.memory import Memory
    from ruvllm.orchestrator import _with_documents

    rng = np.random.default_rng(1)
    q = rng.normal(size=16).astype(np.float32)
    mem = Memory.open(tmp_path / "m", dim=16)
    try:
        near = [Node(text=f"Q: q{i}?\nA: a{i}.", vector=q + 0.01 * rng.normal(size=16).astype(np.float32),
                     type=NodeType.QUERY) for i in range(2)]
        docs = [Node(text=f"doc {i}", vector=q + (0.1 + 0.05 * i) * rng.normal(size=16).astype(np.float32))
                for i in range(6)]
        mem.add_many([*near, *docs])
        hits = mem.search(q, k=4)
        assert sum(h.node.type == NodeType.QUERY for h in hits) == 2
        got = _with_documents(mem, q, hits, 4)
        assert got[:4] == hits and [h.node.type for h in got].count(NodeType.DOCUMENT) == 4
        assert len({h.node.id for h in got}) == len(got) == 6
        only_docs = mem.search(q, k=4, types=[NodeType.DOCUMENT])
        assert _with_documents(mem, q, only_docs, 4) is only_docs  # nothing to make up
        few = mem.search(q, k=10)[:3]
        assert _with_documents(mem, q, few, 10) is few  # fewer nodes than k: all of them already
    finally:
        mem.close()


def test_close_survives_a_history_that_cannot_be_saved(tmp_path, caplog) -> None:
    """The wins learnt in use are saved on close; when that fails (here: the checkpoint's folder is
    gone, as a full disk would fail it) close still closes the memory store, and says why."""
    from types import SimpleNamespace

    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM
    from ruvllm.router.history import PatternHistory

    rv = RuvLLM(Config.load(data_dir=str(tmp_path / "data")))
    history = PatternHistory(["a", "b"])
    history.add("What does json.dumps do?", 1, online=True)
    rv._router = SimpleNamespace(history=history, path=tmp_path / "gone" / "router")  # type: ignore[assignment]
    rv._history_unsaved = 1
    closed = []
    real_close = rv.memory.close
    rv.memory.close = lambda: (closed.append(True), real_close())  # type: ignore[method-assign]
    rv.close()
    assert closed == [True]
    assert "could not save the router's pattern history" in caplog.text


def test_a_failed_shadow_label_costs_nothing_but_the_label(tmp_path, monkeypatch) -> None:
    """When the other models cannot answer (here: the shadow run raises), the served answer's
    experience is still logged, without a label, and the failure is counted."""
    import json
    from types import SimpleNamespace

    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM
    from ruvllm.router.base import Decision

    rv = RuvLLM(Config.load(data_dir=str(tmp_path / "data"), **{"router.shadow": 1.0}))

    def fail(plan, resp, docs, served_quality):
        raise RuntimeError("model file vanished")

    monkeypatch.setattr(rv, "_shadow_label", fail)
    question = "Show a code snippet calling json.dumps."
    resp = SimpleNamespace(request_id="r1", question=question, answer="print(1)", model="small",
                           decision=Decision("small", 256, 0.0, 1.0, 0.9), total_ms=5.0,
                           usage={"completion_tokens": 3})
    plan = SimpleNamespace(question=question, features=None)
    try:
        rv._after_answer((resp, ["json.dumps serializes"], np.zeros(128, np.float32), plan))
    finally:
        rv.close()
    record = json.loads((tmp_path / "data" / "experiences.jsonl").read_text())
    assert record["request_id"] == "r1" and "shadow" not in record and record["judged_by"] == "code check"
    assert rv._shadow_errors == 1 and rv._shadow_labels == 0


def test_only_exactly_checked_questions_are_shadow_labelled(tmp_path) -> None:
    """``router.shadow``: a request for code naming its symbol, and a question for a signature
    that the served docs write, are labelled; a signature question whose docs write none, and any
    other question, are not (grounding does not rank models)."""
    from types import SimpleNamespace

    from ruvllm.config import Config
    from ruvllm.orchestrator import RuvLLM

    rv = RuvLLM(Config.load(data_dir=str(tmp_path / "data"), **{"router.shadow": 1.0}))
    try:
        sig_doc = ["json.dumps(obj, *, indent=None) Serialize obj to a JSON formatted str."]
        prose = ["json.dumps serializes obj to a JSON formatted str."]

        def due(question: str, docs: list[str]) -> bool:
            return rv._shadow_due(SimpleNamespace(question=question, features=None), docs)  # type: ignore[arg-type]

        assert due("Show a code snippet calling json.dumps.", prose)
        assert due("What arguments does json.dumps take?", sig_doc)
        assert not due("What arguments does json.dumps take?", prose)
        assert not due("What does json.dumps do?", sig_doc)
        assert rv._judged("What arguments does json.dumps take?", "json.dumps(obj, *, indent=None)", sig_doc) == (
            1.0, "signature check")
    finally:
        rv.close()


def test_the_online_router_is_anchored_on_its_training_rows_or_says_why(tmp_path, caplog) -> None:
    """``learning.anchor``: on the worker, before the first experience, the online router gets the
    training rows of the labelled set ``train_report.json`` names (EWC, replay, the publish gate);
    a report that is gone, a labelled set that is corrupt or does not fit the router, leaves it
    unanchored with a warning."""
    import json
    import logging

    import torch

    from ruvllm.config import Config
    from ruvllm.learning.router_online import RouterOnline
    from ruvllm.orchestrator import RuvLLM
    from ruvllm.router.fastgrnn_router import FastGRNNRouter
    from ruvllm.router.oracle import DocRetriever, SyntheticOracle, save_labelled, stdlib_corpus, stdlib_qa
    from ruvllm.router.pipeline import hash_embed
    from ruvllm.router.training import TrainConfig, train_from_oracle

    torch.set_num_threads(1)
    modules = ("json", "textwrap")
    recs = SyntheticOracle(["small", "large"], [0.27, 0.5]).label(
        stdlib_qa(modules), DocRetriever(stdlib_corpus(modules), hash_embed, k=6))
    labelled = save_labelled(recs, tmp_path / "labelled.jsonl")
    train_from_oracle(labelled, tmp_path / "router", TrainConfig(epochs=3, iht_rounds=1, iht_epochs=1,
                                                                  retrain_epochs=1))
    n_train = sum(r.split == "train" for r in recs)

    def anchored() -> int:
        rv = RuvLLM(Config.load(data_dir=str(tmp_path / "data"), **{"learning.enabled": True}))
        try:
            router = FastGRNNRouter.load(tmp_path / "router" / "router")
            rv._router = router  # type: ignore[assignment]
            rv._online = RouterOnline(router.params)
            rv._anchor_online()
            return int(rv._online.stats()["anchored"])
        finally:
            rv.close()

    assert anchored() == n_train > 0
    good = labelled.read_text()
    lines = good.splitlines()
    i = next(n for n, ln in enumerate(lines) if json.loads(ln)["split"] == "train")
    row = json.loads(lines[i])
    row["utility"] = [u[:1] for u in row["utility"]]  # one context bin: not the router's table
    lines[i] = json.dumps(row)
    labelled.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert anchored() == 0
    assert "does not fit the router" in caplog.text
    labelled.write_text("{not json\n")
    with caplog.at_level(logging.WARNING):
        assert anchored() == 0
    assert "runs unanchored" in caplog.text and "labelled.jsonl" in caplog.text
    (tmp_path / "router" / "train_report.json").unlink()
    assert anchored() == 0


def test_the_configured_judge_gives_a_verdict_where_no_exact_check_applies(tmp_path) -> None:
    """``learning.judge_model``: a question no exact check covers is judged by the judge's yes/no
    verdict against the docs it names (P(yes)); a code or signature question keeps its exact check,
    whatever judge is configured; a backend that cannot read probabilities gives its rubric score."""
    from ruvllm.config import Config
    from ruvllm.judge_llm import LLMJudge
    from ruvllm.llm.base import Generation
    from ruvllm.orchestrator import RuvLLM

    class Judge:  # the part the orchestrator talks to: a backend with next-token probabilities (or not)
        name, n_ctx, prompt_style = "judge", 2048, "chat"

        def __init__(self, probs: bool) -> None:
            self.prompts: list[str] = []
            if probs:
                self.choice_probs = lambda prompt, choices: (self.prompts.append(str(prompt)),
                                                              {"yes": 0.6, "no": 0.2})[1]

        def count_tokens(self, text: str) -> int:
            return len(text.split())

        def chat(self, messages, params) -> Generation:
            return Generation('{"accuracy": 5, "completeness": 5, "coherence": 5, "conciseness": 5}', 1, 1, "stop")

    rv = RuvLLM(Config.load(data_dir=str(tmp_path / "data"), **{"learning.judge_model": "judge"}))
    try:
        loads = "json.loads(s) Deserialize s to a Python object."
        docs = [loads, DOC_DUMPS]
        judge = Judge(probs=True)
        rv._judge = LLMJudge(judge)  # type: ignore[arg-type]
        q, how = rv._judged("What does json.dumps do?", "It serializes obj to a JSON string.", docs)
        assert (round(q, 4), how) == (0.75, "verdict:judge")
        assert "REFERENCE: json.dumps(obj" in judge.prompts[-1] and "json.loads(s)" not in judge.prompts[-1]
        assert rv._judged("What arguments does json.dumps take?", "json.dumps(obj, *, indent=None)", docs) == (
            1.0, "signature check")
        assert rv._judged("Show a code snippet calling json.dumps.", "no code", docs) == (0.0, "code check")
        assert len(judge.prompts) == 1  # the exact checks asked no judge
        rv._judge = LLMJudge(Judge(probs=False))  # type: ignore[arg-type]
        assert rv._judged("What does json.dumps do?", "It serializes obj.", docs) == (1.0, "judge:judge")
    finally:
        rv.close()


DOC_DUMPS = "json.dumps(obj, *, indent=None) Serialize obj to a JSON formatted str."
