from pathlib import Path

import pytest

from ruvllm.errors import InvalidInputError
from ruvllm.ingest import CHUNK_CHARS, chunk_text, file_docs, stdlib_docs
from ruvllm.memory.schema import EdgeType


def test_chunks_respect_the_limit_and_keep_all_words() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * (i * 40) for i in range(12))
    chunks = chunk_text(text, limit=500)
    assert all(len(c) <= 500 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_stdlib_docs_for_json() -> None:
    docs = stdlib_docs(["json"])
    by_key = {d.key: d for d in docs}
    dumps = by_key["json.dumps#0"]
    assert dumps.source == "stdlib:json.dumps"
    assert by_key["json.dumps#1"].links == [("json.dumps#0", EdgeType.FOLLOWS, 1.0)]
    assert dumps.text.startswith("Function json.dumps (module json).")
    assert "Signature: json.dumps(obj" in dumps.text
    assert "JSON" in dumps.text
    assert dumps.domain == "json"
    keys = {d.key for d in docs}
    for d in docs:  # every link points at a doc of the same corpus that comes earlier
        for other, rel, w in d.links:
            assert other in keys and 0 < w <= 1
            assert rel in (EdgeType.FOLLOWS, EdgeType.SAME_TOPIC)
    assert ("json#0", EdgeType.SAME_TOPIC, 0.5) in dumps.links
    assert all(len(d.text) <= CHUNK_CHARS + 200 for d in docs)


def test_stdlib_unknown_module() -> None:
    with pytest.raises(InvalidInputError, match="nosuchmodule"):
        stdlib_docs(["nosuchmodule"])


def test_file_docs(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\nFirst paragraph.\n\nSecond paragraph.")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01")
    docs = file_docs(tmp_path)
    assert len(docs) == 1 and "Second paragraph." in docs[0].text


def test_file_docs_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        file_docs(tmp_path / "missing")
    (tmp_path / "x.txt").write_bytes(b"\x00binary")
    with pytest.raises(InvalidInputError, match="binary"):
        file_docs(tmp_path / "x.txt")


def test_signatures_are_stable_across_processes() -> None:
    """Defaults such as ``<function IS_CHARACTER_JUNK at 0x7f...>`` must not carry an address."""
    import re

    docs = stdlib_docs(["difflib"])
    assert docs
    assert not [d.key for d in docs if re.search(r" at 0x[0-9a-fA-F]+", d.text)]
