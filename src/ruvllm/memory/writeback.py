"""Write-back: which answers the memory keeps.

    answer judged ─▶ quality < θ ? ─▶ skipped
                        │
                        ▼
                  plainly off topic? ─▶ skipped  (names other symbols than asked; recites a Q/A pair;
                        │                         a bare heading: names what was asked, says nothing)
                        │
                        ▼
          near-duplicate question?  (MinHash Jaccard >= minhash_threshold  OR  cosine >= dup_similarity)
             │ no                               │ yes
             ▼                                  ▼
        inserted: Query node             same answer? ─▶ skipped
        "Q: …\\nA: …" + Cites edges             │ no
        to its sources (weight = score)        ▼
                                         merged: a new Query node (version = old + 1) supersedes the
                                         old one; the old one stays, tagged "superseded" with its
                                         confidence halved (its previous version kept in history),
                                         linked by a Derived edge new → old. Nothing is deleted.

MinHash (datasketch, character 3-gram shingles of the normalised question) catches reworded
and re-punctuated questions; the vector test catches paraphrases with different words. Both
are needed: either alone misses a class of duplicates.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datasketch import MinHash, MinHashLSH

from ruvllm.config import WritebackConfig
from ruvllm.errors import ConfigError, InvalidInputError, NotFoundError
from ruvllm.memory.schema import Edge, EdgeMetadata, EdgeType, Node, NodeMetadata, NodeType, as_vector

if TYPE_CHECKING:
    from ruvllm.memory.backends import MemoryBackend

NUM_PERM = 128
SHINGLE = 3
SUPERSEDED_TAG = "superseded"
WRITEBACK_TAG = "writeback"
_NON_WORD = re.compile(r"[^\w]+")


@dataclass
class WriteResult:
    action: str  # "inserted" | "skipped" | "merged"
    node_id: str | None  # the new node (inserted/merged) or the duplicate that made us skip
    reason: str


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    t = normalise(text)
    if len(t) <= n:
        return {t} if t else set()
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def minhash(text: str) -> MinHash:
    m = MinHash(num_perm=NUM_PERM)
    m.update_batch([s.encode("utf-8") for s in sorted(shingles(text))])
    return m


_SYMBOL = re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b")


def named_symbols(text: str) -> frozenset[str]:
    """Dotted names a question spells out (``json.dumps``). Two questions that name different
    symbols are different questions however close their vectors ("json.dump" vs "json.dumps")."""
    return frozenset(_SYMBOL.findall(text))


def off_topic_reason(question: str, answer: str) -> str:
    """Why ``answer`` is plainly not an answer to ``question`` ("" when nothing says so).

    Grounding (token overlap with the context) cannot see this: a small model that copies the
    neighbouring docstring ("Class shutil.SpecialFileError …" for shutil.SameFileError) or recites a
    stored pair ("Q: What does fnmatch.translatecase do? A: …") is perfectly grounded. Caught here:
    an answer that names dotted symbols, none of them the ones asked about, and an answer that
    recites a Q/A pair. An answer naming no symbol ("It serialises obj to JSON.") passes."""
    if _RECITED_PAIR.search(answer):
        return "the answer recites a stored question/answer pair"
    asked, said = named_symbols(question), named_symbols(answer)
    # case-blind: "Textwrap.fill wraps …" at the start of a sentence is textwrap.fill
    if asked and said and not {s.lower() for s in asked} & {s.lower() for s in said}:
        return f"the answer is about {', '.join(sorted(said))}, the question about {', '.join(sorted(asked))}"
    if says_nothing(question, answer):
        return "the answer names what was asked about but says nothing of it (a bare docstring heading)"
    return ""


# "Q: … A: …" at the start, or a pair recited on one line (completion prompts put each context
# item on one line) or on two.
_RECITED_PAIR = re.compile(r"^\s*Q:|\bQ: .+?\sA: ", re.S)
# The words of a docstring heading as ingest writes them ("Function textwrap.indent (module
# textwrap).", "Method m (class C, module M).", "json.loads (continued):", "Signature: …").
HEADING_WORDS = frozenset({"function", "class", "method", "module", "exception", "data", "attribute",
                           "property", "continued", "signature", "stdlib"})
_WORD = re.compile(r"[A-Za-z]\w*")


def says_nothing(question: str, answer: str) -> bool:
    """True for an answer made only of heading words and the names the question asked about.

    A small base model often answers "What does textwrap.indent do?" with the heading of the
    docstring it was shown, "Function textwrap.indent (module textwrap)." It is on topic and
    perfectly grounded, and it says nothing: in bench/selflearn.py's first gated run about half
    of the stored answers were such headings, every one with token F1 ≈ 0 against the docs.
    "It adds a prefix to lines." is not caught, nor "Call sorted()." (two words of its own)."""
    asked = {part.lower() for sym in named_symbols(question) for part in sym.split(".")}
    for sym in named_symbols(answer):  # the answer's own dotted names (a heading's class/module)
        asked.update(part.lower() for part in sym.split("."))
    own = [w for w in _WORD.findall(answer) if w.lower() not in HEADING_WORDS and w.lower() not in asked]
    return not own and bool(asked)


def format_qa(question: str, answer: str) -> str:
    return f"Q: {question}\nA: {answer}"


def parse_qa(text: str) -> tuple[str, str]:
    """The question and answer of a write-back node's text (the whole text as question otherwise)."""
    if text.startswith("Q: ") and "\nA: " in text:
        q, _, a = text[3:].partition("\nA: ")
        return q, a
    return text, ""


class WriteBack:
    """Decides whether an answer is stored, skipped or merged; counts what it did."""

    def __init__(self, mem: MemoryBackend, cfg: WritebackConfig | None = None):
        self.mem = mem
        self.cfg = cfg or WritebackConfig()
        for name in ("quality_threshold", "dup_similarity", "minhash_threshold"):
            v = getattr(self.cfg, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"writeback.{name} must be in [0, 1], got {v!r}")
        self._lock = threading.Lock()
        self._lsh: MinHashLSH | None = None
        self._hashes: dict[str, MinHash] = {}
        self.counts: Counter[str] = Counter()
        mem.register_stats("writeback", self.stats)

    # ---- the MinHash index over stored questions, built on first use --------------------------
    def _ensure_lsh(self) -> MinHashLSH:
        if self._lsh is None:
            lsh = MinHashLSH(threshold=self.cfg.minhash_threshold, num_perm=NUM_PERM)
            for nid, text, tags in self.mem.store.query_texts():
                if SUPERSEDED_TAG in tags:
                    continue
                mh = minhash(parse_qa(text)[0])
                lsh.insert(nid, mh)
                self._hashes[nid] = mh
            self._lsh = lsh
        return self._lsh

    def _lsh_add(self, nid: str, mh: MinHash) -> None:
        lsh = self._ensure_lsh()
        if nid not in self._hashes:
            lsh.insert(nid, mh)
            self._hashes[nid] = mh

    def _lsh_remove(self, nid: str) -> None:
        if self._lsh is not None and nid in self._hashes:
            self._lsh.remove(nid)
            del self._hashes[nid]

    # ---- duplicates -------------------------------------------------------------------------------------
    def find_duplicate(self, question: str, qvec: Any, mh: MinHash | None = None) -> tuple[Node, str, float] | None:
        """The stored question ``question`` duplicates, with how it was found and the similarity."""
        mh = mh or minhash(question)
        cands: list[tuple[float, str, str]] = []  # (similarity, how, node id)
        for h in self.mem.search_threshold(qvec, self.cfg.dup_similarity, k=16, types=[NodeType.QUERY]):
            if SUPERSEDED_TAG not in h.node.metadata.tags:
                cands.append((h.score, "vector cosine", h.node.id))
        lsh = self._ensure_lsh()
        for nid in lsh.query(mh):
            j = mh.jaccard(self._hashes[nid])
            if j >= self.cfg.minhash_threshold:
                cands.append((j, "MinHash Jaccard", nid))
        if not cands:
            return None
        nodes = self.mem.get_many([c[2] for c in cands])
        # a node with an incoming Derived edge has a successor even if the merge's second step
        # (tagging it superseded) never ran, e.g. after a crash between the two transactions
        derived = self.mem.store.edges_touching(list(nodes), rels=[EdgeType.DERIVED.value])
        succeeded = {e.dst for e in derived if e.dst in nodes}
        symbols = named_symbols(question)
        for sim, how, nid in sorted(cands, key=lambda c: -c[0]):
            if nid in succeeded:
                continue
            node = nodes.get(nid)
            if node is None:  # deleted since it was hashed
                self._lsh_remove(nid)
                continue
            if named_symbols(parse_qa(node.text)[0]) != symbols:
                continue
            if SUPERSEDED_TAG in node.metadata.tags:
                self._lsh_remove(nid)
                continue
            return node, how, sim
        return None

    # ---- the decision -------------------------------------------------------------------------------------
    def write_answer(
        self,
        question: str,
        answer: str,
        qvec: Any,
        source_ids: Sequence[str],
        source_scores: Sequence[float],
        quality: float,
        domain: str = "",
        created_by: str = "",
    ) -> WriteResult:
        """Store ``answer`` to ``question`` if it is good enough and new; see the module docstring."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError("write-back needs a non-empty question string")
        if not isinstance(answer, str):
            raise InvalidInputError(f"write-back answer must be a string, got {type(answer).__name__}")
        if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0.0 <= quality <= 1.0:
            raise InvalidInputError(f"write-back quality must be a number in [0, 1], got {quality!r}")
        if len(source_ids) != len(source_scores):
            raise InvalidInputError(f"{len(source_ids)} source ids but {len(source_scores)} scores")
        vec = as_vector(qvec, self.mem.dim, "question vector")
        q, a = question.strip(), answer.strip()
        if not a:
            return self._done(WriteResult("skipped", None, "empty answer"))
        if quality < self.cfg.quality_threshold:
            return self._done(WriteResult(
                "skipped", None, f"quality {quality:.3f} below the threshold {self.cfg.quality_threshold}"))
        off_topic = off_topic_reason(q, a)
        if off_topic:
            return self._done(WriteResult("skipped", None, off_topic))
        with self._lock:
            mh = minhash(q)
            dup = self.find_duplicate(q, vec, mh)
            if dup is not None:
                old, how, sim = dup
                old_answer = parse_qa(old.text)[1]
                if normalise(old_answer) == normalise(a) or \
                        jaccard(shingles(old_answer), shingles(a)) >= self.cfg.minhash_threshold:
                    return self._done(WriteResult(
                        "skipped", old.id, f"duplicate of {old.id} ({how} {sim:.3f}) with the same answer"))
            sources = self.mem.get_many(list(source_ids))
            meta = EdgeMetadata(created_by=created_by or "writeback")
            node = Node(
                text=format_qa(q, a), vector=vec, type=NodeType.QUERY, source="writeback",
                metadata=NodeMetadata(domain=domain, tags=[WRITEBACK_TAG], confidence=float(quality),
                                      version=old.metadata.version + 1 if dup else 1),
            )
            edges = [
                Edge(src=node.id, dst=sid, rel=EdgeType.CITES, weight=min(1.0, max(0.0, float(score))),
                     metadata=EdgeMetadata(created_by=meta.created_by, confidence=float(quality)))
                for sid, score in dict(zip(source_ids, source_scores, strict=True)).items() if sid in sources
            ]
            if dup is None:
                self.mem.add_many([node], edges)
                self._lsh_add(node.id, mh)
                return self._done(WriteResult("inserted", node.id, f"new question, {len(edges)} sources cited"))
            edges.append(Edge(src=node.id, dst=old.id, rel=EdgeType.DERIVED, weight=min(1.0, max(0.0, sim)),
                              metadata=EdgeMetadata(created_by=meta.created_by, confidence=float(quality))))
            self.mem.add_many([node], edges)
            with suppress(NotFoundError):  # deleted meanwhile: nothing left to mark
                self.mem.update(old.id, tags=[*old.metadata.tags, SUPERSEDED_TAG],
                                confidence=round(old.metadata.confidence * 0.5, 4))
            self._lsh_remove(old.id)
            self._lsh_add(node.id, mh)
            return self._done(WriteResult(
                "merged", node.id, f"supersedes {old.id} ({how} {sim:.3f}, different answer); old kept as history"))

    def _done(self, res: WriteResult) -> WriteResult:
        self.counts[res.action] += 1
        return res

    def stats(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        kept = self.counts["inserted"] + self.counts["merged"]
        return {"attempts": total, "inserted": self.counts["inserted"], "merged": self.counts["merged"],
                "skipped": self.counts["skipped"], "rate": round(kept / total, 4) if total else 0.0}
