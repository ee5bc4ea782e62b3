"""Write-back: quality gate, duplicate skip, paraphrase detection (MinHash and vector), merge keeping history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm.config import WritebackConfig
from ruvllm.errors import InvalidInputError
from ruvllm.memory import Memory, WriteBack
from ruvllm.memory.schema import EdgeType, Node, NodeType

DIM = 32


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Memory, WriteBack, list[Node], np.random.Generator]:
    rng = np.random.default_rng(3)
    mem = Memory.open(tmp_path / "m", dim=DIM)
    docs = [Node(text=f"doc {i}", vector=rng.normal(size=DIM).astype(np.float32)) for i in range(20)]
    mem.add_many(docs)
    wb = WriteBack(mem, WritebackConfig(quality_threshold=0.5, dup_similarity=0.95, minhash_threshold=0.8))
    yield mem, wb, docs, rng
    mem.close()


def rvec(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=DIM).astype(np.float32)


def test_insert_with_cites_edges(setup) -> None:
    mem, wb, docs, rng = setup
    res = wb.write_answer("What does json.dumps do?", "It serialises an object to JSON.", rvec(rng),
                          [docs[0].id, docs[1].id], [0.83, 0.41], 0.9, domain="json", created_by="test")
    assert res.action == "inserted" and res.node_id
    node = mem.get(res.node_id)
    assert node.type == NodeType.QUERY
    assert node.text == "Q: What does json.dumps do?\nA: It serialises an object to JSON."
    assert node.metadata.domain == "json" and node.metadata.confidence == pytest.approx(0.9)
    cites = {e.dst: e.weight for e in mem.edges(node.id) if e.rel == EdgeType.CITES and e.src == node.id}
    assert cites == {docs[0].id: pytest.approx(0.83), docs[1].id: pytest.approx(0.41)}


def test_low_quality_is_skipped(setup) -> None:
    mem, wb, docs, rng = setup
    before = mem.count()
    res = wb.write_answer("Q?", "meh", rvec(rng), [docs[0].id], [0.5], 0.2)
    assert res.action == "skipped" and "quality" in res.reason and res.node_id is None
    assert wb.write_answer("Q?", "   ", rvec(rng), [], [], 0.9).action == "skipped"
    assert mem.count() == before


def test_exact_duplicate_is_skipped(setup) -> None:
    mem, wb, docs, rng = setup
    v = rvec(rng)
    first = wb.write_answer("How do I sort a list in Python?", "Use sorted(xs).", v, [docs[0].id], [0.9], 0.9)
    again = wb.write_answer("How do I sort a list in Python?", "Use sorted(xs).", v, [docs[0].id], [0.9], 0.9)
    assert again.action == "skipped" and again.node_id == first.node_id and "duplicate" in again.reason
    assert mem.stats()["nodes_by_type"]["Query"] == 1


def test_reworded_question_caught_by_minhash(setup) -> None:
    """Different embedding (cosine far below 0.95), near-identical wording: MinHash catches it."""
    _mem, wb, _docs, rng = setup
    first = wb.write_answer("How do I sort a list in Python?", "Use sorted(xs).", rvec(rng), [], [], 0.9)
    res = wb.write_answer("how do i sort a list in python??", "use sorted(xs)", rvec(rng), [], [], 0.9)
    assert res.action == "skipped" and res.node_id == first.node_id and "MinHash" in res.reason


def test_paraphrase_caught_by_vector_similarity(setup) -> None:
    """Different words (low Jaccard), near-identical embedding: the vector test catches it."""
    _mem, wb, _docs, rng = setup
    v = rvec(rng)
    first = wb.write_answer("What's the way to order items of an array?", "Call sorted().", v, [], [], 0.9)
    para = v + 0.05 * rvec(rng)  # cosine ~0.99
    res = wb.write_answer("Python: arranging list elements ascending", "Call sorted().", para, [], [], 0.9)
    assert res.action == "skipped" and res.node_id == first.node_id and "vector" in res.reason


def test_conflicting_answer_is_merged_keeping_history(setup) -> None:
    mem, wb, docs, rng = setup
    v = rvec(rng)
    old = wb.write_answer("Default port of the server?", "It is 8000.", v, [docs[2].id], [0.7], 0.8)
    new = wb.write_answer("Default port of the server?", "It listens on 8080 by default.", v + 0.01,
                          [docs[3].id], [0.9], 0.9)
    assert new.action == "merged" and new.node_id != old.node_id
    newer = mem.get(new.node_id)
    older = mem.get(old.node_id)  # still there: facts are never deleted
    assert newer.text.endswith("8080 by default.") and newer.metadata.version == 2
    assert "superseded" in older.metadata.tags and older.metadata.confidence == pytest.approx(0.4)
    assert mem.history(old.node_id)[0].metadata.tags == ["writeback"]  # the pre-merge version is kept
    derived = [e for e in mem.edges(new.node_id) if e.rel == EdgeType.DERIVED]
    assert len(derived) == 1 and derived[0].src == new.node_id and derived[0].dst == old.node_id
    # the next duplicate compares with the newest version, not the superseded one
    third = wb.write_answer("Default port of the server?", "It listens on 8080 by default.", v, [], [], 0.9)
    assert third.action == "skipped" and third.node_id == new.node_id
    st = mem.stats()["writeback"]
    assert st == {"attempts": 3, "inserted": 1, "merged": 1, "skipped": 1, "rate": pytest.approx(2 / 3, abs=1e-3)}


def test_minhash_index_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with Memory.open(tmp_path / "m", dim=DIM) as mem:
        WriteBack(mem).write_answer("What is a context manager?", "An object with __enter__/__exit__.",
                                    rvec(rng), [], [], 0.9)
    with Memory.open(tmp_path / "m", dim=DIM) as mem:
        res = WriteBack(mem).write_answer("what is a context manager", "An object with __enter__/__exit__.",
                                          rvec(rng), [], [], 0.9)
        assert res.action == "skipped"


def test_missing_sources_are_not_cited(setup) -> None:
    mem, wb, docs, rng = setup
    ghost = Node(text="never stored", vector=rvec(rng)).id
    res = wb.write_answer("A question?", "An answer.", rvec(rng), [docs[0].id, ghost], [0.5, 0.9], 0.9)
    assert res.action == "inserted"
    assert {e.dst for e in mem.edges(res.node_id)} == {docs[0].id}


def test_bad_write_back_input(setup) -> None:
    _mem, wb, docs, rng = setup
    with pytest.raises(InvalidInputError, match="quality"):
        wb.write_answer("q", "a", rvec(rng), [], [], 1.5)
    with pytest.raises(InvalidInputError, match="question"):
        wb.write_answer("  ", "a", rvec(rng), [], [], 0.9)
    with pytest.raises(InvalidInputError, match="scores"):
        wb.write_answer("q", "a", rvec(rng), [docs[0].id], [], 0.9)


def test_half_finished_merge_still_points_at_the_successor(setup) -> None:
    """A crash between the merge's two transactions leaves the old node untagged; its incoming
    Derived edge still marks it as superseded."""
    from ruvllm.memory.schema import Edge, Node, NodeMetadata

    mem, wb, _docs, rng = setup
    v = rvec(rng)
    old = wb.write_answer("Which port?", "8000.", v, [], [], 0.8)
    newer = Node(text="Q: Which port?\nA: 8080.", vector=v, type=NodeType.QUERY,
                 metadata=NodeMetadata(tags=["writeback"], version=2))
    mem.add_many([newer], [Edge(newer.id, old.node_id, EdgeType.DERIVED, 1.0)])  # no superseded tag
    res = wb.write_answer("Which port?", "8080.", v, [], [], 0.9)
    assert res.action == "skipped" and res.node_id == newer.id


def test_questions_naming_different_symbols_are_not_duplicates(setup) -> None:
    """'json.dump' and 'json.dumps' questions are near-identical as text and as vectors; merging
    them would overwrite one function's answer with the other's."""
    mem, wb, docs, rng = setup
    v = rvec(rng)
    first = wb.write_answer("What does json.dump do?", "It writes JSON to a file.", v, [docs[0].id], [0.9], 0.9)
    second = wb.write_answer("What does json.dumps do?", "It returns a JSON string.", v, [docs[1].id], [0.9], 0.9)
    assert first.action == second.action == "inserted" and first.node_id != second.node_id
    assert "superseded" not in mem.get(first.node_id).metadata.tags


def test_plainly_off_topic_answers_are_not_kept(setup) -> None:
    """Grounded but wrong: the neighbouring docstring, or a recited stored pair, is never stored."""
    mem, wb, docs, rng = setup
    before = mem.count()
    wrong = wb.write_answer("What does shutil.SameFileError do?", "Class shutil.SpecialFileError (module shutil).",
                            rvec(rng), [docs[0].id], [0.9], 0.95)
    assert wrong.action == "skipped" and "shutil.SpecialFileError" in wrong.reason
    recited = wb.write_answer("What does fnmatch.translate do?",
                              "Q: What does fnmatch.translatecase do?\nA: It translates.", rvec(rng), [], [], 0.95)
    assert recited.action == "skipped" and "recites" in recited.reason
    assert mem.count() == before
    # naming the asked symbol, or no symbol at all, is fine
    assert wb.write_answer("What does shutil.SameFileError do?", "shutil.SameFileError is raised when source "
                           "and destination are the same file.", rvec(rng), [], [], 0.95).action == "inserted"
    assert wb.write_answer("What does json.loads do?", "It parses a JSON document.", rvec(rng), [], [],
                           0.95).action == "inserted"
    assert wb.write_answer("What does textwrap.fill do?", "Textwrap.fill wraps a paragraph.", rvec(rng), [], [],
                           0.95).action == "inserted"  # capitalised at the sentence start: the same symbol


@pytest.mark.parametrize("answer", [
    "Function textwrap.indent (module textwrap).",
    "Textwrap.indent (continued):",
    "Module textwrap.",
    "(stdlib:textwrap.indent) Signature:",
    "Function textwrap.indent (module textwrap).\nSignature: textwrap.indent",
])
def test_a_bare_docstring_heading_is_not_kept(setup, answer: str) -> None:
    """On topic and grounded, and it says nothing: half of the stored answers in bench/selflearn's
    first gated run were such headings."""
    mem, wb, _docs, rng = setup
    res = wb.write_answer("What does textwrap.indent do?", answer, rvec(rng), [], [], 0.95)
    assert res.action == "skipped" and "says nothing" in res.reason, res
    assert mem.stats()["nodes_by_type"].get("Query", 0) == 0


@pytest.mark.parametrize("answer", [
    "Function textwrap.indent (module textwrap). Adds a prefix to the selected lines.",
    "It adds a prefix to lines.",
    "textwrap.indent(text, prefix, predicate=None)",
])
def test_a_heading_with_something_after_it_is_kept(setup, answer: str) -> None:
    _mem, wb, _docs, rng = setup
    assert wb.write_answer("What does textwrap.indent do?", answer, rvec(rng), [], [], 0.95).action == "inserted"


def test_a_pair_recited_on_one_line_is_not_kept(setup) -> None:
    """Completion prompts put each context item on one line, so a recital has no newline before A:."""
    _mem, wb, _docs, rng = setup
    res = wb.write_answer("What does json.loads do?", "json.loads Q: What does json.loads do? A: It parses JSON.",
                          rvec(rng), [], [], 0.95)
    assert res.action == "skipped" and "recites" in res.reason
