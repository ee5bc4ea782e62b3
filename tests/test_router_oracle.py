"""Phase 1: the stdlib QA set, the oracle (real path with a fake Generator; synthetic), and
``train_from_oracle`` end to end on a small labelled file."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.llm.base import ChatMessage, Generation, SamplingParams
from ruvllm.router.fastgrnn_router import FastGRNNRouter
from ruvllm.router.oracle import (
    DocRetriever,
    OracleConfig,
    SyntheticOracle,
    label_with_models,
    load_labelled,
    relabel,
    save_labelled,
    stdlib_corpus,
    stdlib_qa,
)
from ruvllm.router.training import TrainConfig, train_from_oracle

torch.set_num_threads(1)
MODULES = ("json", "math", "textwrap", "heapq", "bisect", "base64")


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Deterministic bag-of-words hashing embedder (64-d), L2-normalised."""
    out = np.zeros((len(texts), 64), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().replace("(", " ").replace(".", " ").split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class FakeGenerator:
    """Answers with the first sentence of its first context line, or 'I don't know'."""

    prompt_style = "completion"

    def __init__(self, name: str, good: bool):
        self.name, self.n_ctx, self.good = name, 4096, good

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        lines = [ln for ln in prompt.splitlines() if ln.startswith("[1]")]
        text = lines[0].split(") ", 1)[-1].split(". ", 1)[-1] if (lines and self.good) else "I don't know."
        return Generation(text, self.count_tokens(prompt), self.count_tokens(text), "stop", total_ms=5.0)

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Generation:  # pragma: no cover
        raise NotImplementedError

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:  # pragma: no cover
        yield self.complete(prompt, params).text

    def stream_chat(self, messages: list[ChatMessage], params: SamplingParams) -> Iterator[str]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_qa_set_is_reproducible_and_split_by_symbol() -> None:
    a, b = stdlib_qa(MODULES), stdlib_qa(MODULES)
    assert [(i.id, i.query, i.gold, i.split, i.session) for i in a] == [
        (i.id, i.query, i.gold, i.split, i.session) for i in b]
    assert {i.query_type for i in a} == {"definition", "signature", "howto", "explain", "compare", "code"}
    assert all(i.gold.strip() and i.query.strip() for i in a)
    by = {s: {i.symbol for i in a if i.split == s} for s in ("train", "test_seen", "test_unseen")}
    assert by["test_unseen"] and not (by["test_unseen"] & by["train"])
    train_pairs = {(i.symbol, i.query_type) for i in a if i.split == "train"}
    seen = [i for i in a if i.split == "test_seen"]
    assert seen and all((i.symbol, i.query_type) in train_pairs for i in seen)
    train_queries = {i.query for i in a if i.split == "train"}
    assert not any(i.query in train_queries for i in seen)  # a new paraphrase, not a copy
    # the gold answer of a definition question is its docstring's first sentence
    dumps = next(i for i in a if i.id == "json.dumps:definition:0")
    assert dumps.query == "What does json.dumps do?" and dumps.gold.startswith("Serialize")
    # sessions never mix splits
    for s in {i.session for i in a}:
        assert len({i.split for i in a if i.session == s}) == 1


def test_docs_and_gold_carry_no_memory_addresses() -> None:
    """difflib.IS_LINE_JUNK's default is ``<built-in method match of re.Pattern object at 0x…>``: with
    the address in its doc, the retrieval (and so the labels) changed from one process to the next."""
    docs = dict(stdlib_corpus(("difflib",)))
    assert "IS_LINE_JUNK(line, pat=<built-in method match of re.Pattern object>)" in docs["difflib.IS_LINE_JUNK"]
    texts = list(docs.values()) + [i.gold for i in stdlib_qa(("difflib",))]
    assert not any(re.search(r"0x[0-9a-fA-F]{4,}", t) for t in texts)


def test_real_oracle_path_labels_by_utility(tmp_path) -> None:
    items = [i for i in stdlib_qa(("json",)) if i.query_type == "definition"][:4]
    ret = DocRetriever(stdlib_corpus(("json",)), fake_embed, k=4)
    gens = {"small": FakeGenerator("small", good=False), "large": FakeGenerator("large", good=True)}
    recs = label_with_models(items, gens, {"small": 0.27, "large": 0.5}, ret,
                             OracleConfig(context_bins=(256, 1024), lam=0.0, mu=0.0, k=4))
    assert len(recs) == 4 and all(r.label_source == "real" for r in recs)
    for r in recs:
        q = np.array(r.quality)
        assert q.shape == (2, 2) and np.all(q[0] == 0.0)  # "I don't know" scores F1 0
        assert r.best_model == int(np.unravel_index(np.argmax(r.utility), (2, 2))[0])
        assert np.array(r.cost)[1].min() > np.array(r.cost)[0].min()  # larger model costs more per token
    assert any(np.array(r.quality)[1].max() > 0 for r in recs)
    path = save_labelled(recs, tmp_path / "l.jsonl")
    back = load_labelled(path)
    assert back[0].answers == recs[0].answers and back[0].quality == recs[0].quality
    fi = back[0].feature_input()
    assert fi.embedding is not None and fi.embedding.shape == (64,) and len(fi.hit_scores) >= 4


class _Llm:
    """Stands in for llama_cpp.Llama: counts the KV resets the oracle asks for."""

    def __init__(self, log: list[str]):
        self.log = log

    def reset(self) -> None:
        self.log.append("reset")


class LoggingGenerator(FakeGenerator):
    def __init__(self, name: str, log: list[str]):
        super().__init__(name, good=True)
        self.log, self.llm = log, _Llm(log)

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        self.log.append(f"{self.name}:{len(prompt.split())}")
        return super().complete(prompt, params)


def test_real_oracle_runs_in_a_seeded_random_order_each_from_a_clean_cache() -> None:
    items = [i for i in stdlib_qa(("json",)) if i.query_type == "definition"][:4]
    ret = DocRetriever(stdlib_corpus(("json",)), fake_embed, k=4)

    def run(seed: int | None) -> tuple[list[str], list]:
        log: list[str] = []
        gens = {"small": LoggingGenerator("small", log), "large": LoggingGenerator("large", log)}
        recs = label_with_models(items, gens, {"small": 0.27, "large": 0.5}, ret,
                                 OracleConfig(context_bins=(64, 1024), k=4, shuffle_seed=seed))
        return log, recs

    nested, recs0 = run(None)
    shuffled, recs1 = run(0)
    assert shuffled == run(0)[0]  # seeded: the same order every time
    calls = [e for e in shuffled if e != "reset"]
    assert len(calls) == 4 * 2 * 2 and shuffled.count("reset") == len(calls)  # a reset before every run
    assert all(shuffled[k] == "reset" for k in range(0, len(shuffled), 2))
    assert calls != [e for e in nested if e != "reset"] and sorted(calls) == sorted(e for e in nested if e != "reset")
    models = [c.split(":")[0] for c in calls]
    assert models[:8].count("small") not in (0, 8)  # the models interleave rather than run in blocks
    assert [r.quality for r in recs0] == [r.quality for r in recs1]  # order changes when, not what


def test_code_questions_get_their_own_answer_length() -> None:
    """A snippet cut off before its call fails the execution check: code answers may be longer."""
    qa = stdlib_qa(("json",))
    items = [next(i for i in qa if i.query_type == "code"), next(i for i in qa if i.query_type == "definition")]
    ret = DocRetriever(stdlib_corpus(("json",)), fake_embed, k=4)
    seen: list[tuple[str, int]] = []

    class Recording(FakeGenerator):
        def complete(self, prompt: str, params: SamplingParams) -> Generation:
            seen.append((prompt.rsplit("Question: ", 1)[-1], params.max_tokens))
            return super().complete(prompt, params)

    label_with_models(items, {"m": Recording("m", good=True)}, {"m": 0.27}, ret,
                      OracleConfig(context_bins=(256,), k=4, max_tokens=64, max_tokens_code=192))
    by_query = dict(seen)
    assert by_query[f"{items[0].query}\nAnswer:"] == 192 and by_query[f"{items[1].query}\nAnswer:"] == 64


def test_labels_are_greedy_unless_a_temperature_and_seed_are_given() -> None:
    """bench.label_noise draws answers at a temperature with a seed; the labels' default stays greedy."""
    items = [i for i in stdlib_qa(("json",)) if i.query_type == "definition"][:1]
    ret = DocRetriever(stdlib_corpus(("json",)), fake_embed, k=4)
    seen: list[tuple[float, float, int]] = []

    class Recording(FakeGenerator):
        def complete(self, prompt: str, params: SamplingParams) -> Generation:
            seen.append((params.temperature, params.top_p, params.seed))
            return super().complete(prompt, params)

    gen = {"m": Recording("m", good=True)}
    label_with_models(items, gen, {"m": 0.27}, ret, OracleConfig(context_bins=(256,), k=4))
    label_with_models(items, gen, {"m": 0.27}, ret,
                      OracleConfig(context_bins=(256,), k=4, temperature=0.7, top_p=0.9, sample_seed=3))
    assert seen == [(0.0, 1.0, 0), (0.7, 0.9, 3)]


def test_relabel_reweights_the_same_measurements() -> None:
    items = [i for i in stdlib_qa(("json",)) if i.query_type == "definition"][:2]
    ret = DocRetriever(stdlib_corpus(("json",)), fake_embed, k=4)
    gens = {"small": FakeGenerator("small", good=True), "large": FakeGenerator("large", good=True)}
    recs = label_with_models(items, gens, {"small": 0.27, "large": 0.5}, ret,
                             OracleConfig(context_bins=(256, 1024), lam=0.0, mu=0.0, k=4))
    for r in recs:
        heavy = relabel(r, 0.0, 10.0)  # cost dominates: the cheapest (model, context) wins
        assert heavy.quality == r.quality and heavy.cost == r.cost
        flat = int(np.argmin(np.array(r.cost)))
        assert (heavy.best_model, heavy.best_context) == divmod(flat, 2)
        same = relabel(r, 0.0, 0.0)
        assert (same.best_model, same.best_context, same.utility) == (r.best_model, r.best_context, r.utility)


def test_synthetic_oracle_and_train_from_oracle(tmp_path) -> None:
    items = stdlib_qa(MODULES)
    ret = DocRetriever(stdlib_corpus(MODULES), fake_embed, k=6)
    so = SyntheticOracle(["small", "large"], [0.27, 0.5])
    recs = so.label(items, ret)
    assert all(r.label_source == "synthetic" for r in recs)
    assert 0.1 < np.mean([r.best_model for r in recs]) < 0.9  # both models are sometimes best
    # paraphrases of one question share their label (difficulty is per symbol and type)
    first = {}
    for r in recs:
        key = r.id.rsplit(":", 1)[0]
        first.setdefault(key, []).append(r.best_model)
    agree = np.mean([len(set(v)) == 1 for v in first.values()])
    assert agree > 0.8
    path = save_labelled(recs, tmp_path / "l.jsonl")
    cfg = TrainConfig(epochs=6, iht_rounds=2, iht_epochs=2, retrain_epochs=3, seed=1)
    rep = train_from_oracle(path, tmp_path / "a", cfg)
    assert rep.label_source == "synthetic" and set(rep.n_eval) == {"test_seen", "test_unseen"}
    assert rep.stages[-1].size_kb < 10
    rep2 = train_from_oracle(path, tmp_path / "b", cfg)
    assert (tmp_path / "a" / "router.npz").read_bytes() == (tmp_path / "b" / "router.npz").read_bytes()
    assert rep.compressed == rep2.compressed
    router = FastGRNNRouter.load(tmp_path / "a" / "router")
    rec = recs[0]
    from ruvllm.router.base import RouteInput

    d = router.route(RouteInput(rec.query, 8, 0.5, 3, features=rec.feature_input()))
    assert d.model in ("small", "large")


def test_bad_labelled_files(tmp_path) -> None:
    with pytest.raises(InvalidInputError):
        load_labelled(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(StoreCorruptError):
        load_labelled(tmp_path / "bad.jsonl")


def test_labelling_order_interleaves_the_splits_of_a_real_plan() -> None:
    from ruvllm.router.pipeline import PipelineConfig, labelling_order, select_items

    items = select_items(PipelineConfig(limit=200))
    order = labelling_order(items)
    share = {sp: sum(i.split == sp for i in items) / len(items) for sp in ("train", "test_seen", "test_unseen")}
    for quarter in (1, 2, 3):  # a run stopped a quarter, half or three quarters in: every split, in proportion
        head = order[: len(order) * quarter // 4]
        for sp, p in share.items():
            assert abs(sum(i.split == sp for i in head) / len(head) - p) < 0.1, (quarter, sp)


def test_real_labels_interleave_splits_and_resume_a_stopped_run(tmp_path) -> None:
    from ruvllm.router.pipeline import PipelineConfig, build_labels, labelling_order, select_items

    cfg = PipelineConfig(labels="real", modules=("json", "textwrap"), limit=24, context_bins=(256, 1024), k=4)
    items = select_items(cfg)
    order = labelling_order(items)
    assert sorted(i.id for i in order) == sorted(i.id for i in items)
    for s in {i.session for i in items}:  # sessions stay whole and in order
        assert [i.id for i in order if i.session == s] == [i.id for i in items if i.session == s]
    # stopped after any question, every seen question labelled so far has its training paraphrase
    # labelled before it (select_items guarantees one exists in the whole set)
    for n in range(1, len(order) + 1):
        train = {(i.symbol, i.query_type) for i in order[:n] if i.split == "train"}
        assert all((i.symbol, i.query_type) in train for i in order[:n] if i.split == "test_seen"), n

    log: list[str] = []
    gens = {"small": LoggingGenerator("small", log), "large": LoggingGenerator("large", log)}
    sizes = {"small": 0.27, "large": 0.5}
    full = build_labels(cfg, tmp_path, embed=fake_embed, generators=gens, params_b=sizes)
    n_runs = sum(e != "reset" for e in log)
    assert n_runs == len(items) * 4
    # the record of the run names the models that ran, not the config's defaults
    assert full.info["models"] == full.info["config"]["models"] == ["small", "large"]
    assert full.info["config"]["params_b"] == [0.27, 0.5]
    # a stopped run: its partial file holds some records; --resume labels only the rest
    partial = tmp_path / "labelled_real.partial.jsonl"
    partial.write_text("".join(ln + "\n" for ln in full.path.read_text().splitlines()[:8]))
    log.clear()
    cfg.resume = True
    again = build_labels(cfg, tmp_path, embed=fake_embed, generators=gens, params_b=sizes)
    assert sum(e != "reset" for e in log) == (len(items) - 8) * 4
    assert sorted(r.id for r in again.records) == sorted(r.id for r in full.records)
