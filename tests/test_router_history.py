"""The pattern history (router/history.py): keys, leave-one-out shares, its file beside the
checkpoint, serving, and what it buys a router whose labels are a per-pattern hidden fact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch

from ruvllm.errors import InvalidInputError, StoreCorruptError
from ruvllm.router.base import RouteInput
from ruvllm.router.fastgrnn_router import FastGRNNRouter
from ruvllm.router.features import Y_HISTORY
from ruvllm.router.history import PatternHistory, pattern_key, with_history
from ruvllm.router.oracle import DocRetriever, SyntheticOracle, save_labelled, stdlib_corpus, stdlib_qa
from ruvllm.router.pipeline import hash_embed
from ruvllm.router.training import TrainConfig, train_from_oracle

torch.set_num_threads(1)
MODULES = ("json", "math", "textwrap", "heapq", "bisect", "base64")


@dataclass
class Rec:  # the fields of oracle.LabelledRecord the history reads
    id: str
    query: str
    best_model: int
    features: dict = field(default_factory=lambda: {"historical_accuracy": []})


def q(query: str, best: int, id_: str = "x") -> Rec:
    return Rec(id_, query, best)


def test_pattern_key_is_the_named_symbols_and_the_query_type() -> None:
    assert pattern_key("What does json.dumps do?") == "json.dumps|definition"
    # order of naming does not matter; the type does
    assert pattern_key("Compare json.loads and json.dumps.") == pattern_key("Compare json.dumps and json.loads.")
    assert pattern_key("Show a code snippet calling json.dumps.") != pattern_key("What does json.dumps do?")
    assert pattern_key("How do I turn an object into a JSON string?") is None  # names no symbol
    # … unless retrieval says what it is about; a named symbol wins over the best hit
    assert pattern_key("How do I turn an object into a JSON string?", "json.dumps") == "json.dumps|howto"
    assert pattern_key("What does json.dumps do?", "json.loads") == "json.dumps|definition"


def test_shares_count_best_choices_and_leave_one_out() -> None:
    h = PatternHistory.from_records([q("What does json.dumps do?", 1), q("What does json.dumps do exactly?", 1),
                                     q("Tell me what json.dumps does.", 2), q("What is json.dumps?", 0)],
                                    ["a", "b", "c"])
    # all four are the definition pattern of json.dumps, however worded
    assert h.shares("Describe what json.dumps does.") == [0.25, 0.5, 0.25]
    assert h.shares("What does json.dumps do?", leave_out=1) == [round(1 / 3, 5)] * 3
    assert h.shares("Show a code snippet calling json.dumps.") == []  # same symbol, another type
    assert h.shares("What does json.loads do?") == []  # an unseen pattern
    only = PatternHistory.from_records([q("What does math.floor do?", 1)], ["a", "b"])
    assert only.shares("What does math.floor do?", leave_out=1) == []  # its own outcome was all there was
    with pytest.raises(InvalidInputError):
        only.add("What does math.floor do?", 2)
    with pytest.raises(InvalidInputError):
        PatternHistory([])


def test_count_is_the_patterns_number_of_best_choices() -> None:
    h = PatternHistory(["a", "b"])
    for best in (0, 1, 1):
        h.add("What does json.dumps do?", best)
    h.add("Explain json.dumps.", 0)  # another type: another pattern
    assert h.count("What is json.dumps?") == 3.0
    assert h.count("Explain json.dumps in detail.") == 1.0
    assert h.count("What does json.loads do?") == 0.0 and h.count("hello there") == 0.0
    copy = h.copy()
    copy.add("What does json.dumps do?", 0)
    assert copy.count("What does json.dumps do?") == 4.0 and h.count("What does json.dumps do?") == 3.0


def test_with_history_leaves_out_the_own_outcome_and_drops_a_seeded_share() -> None:
    recs = [q("What does json.dumps do?", i % 2, f"r{i}") for i in range(200)]
    h = PatternHistory.from_records(recs, ["a", "b"])
    out = with_history(recs, h, leave_one_out=True)
    assert out[0].features["historical_accuracy"] == [round(99 / 199, 5), round(100 / 199, 5)]  # r0 was "a"
    assert recs[0].features["historical_accuracy"] == []  # copies; the inputs are untouched
    dropped = with_history(recs, h, leave_one_out=True, dropout=0.3, seed=4)
    share = np.mean([r.features["historical_accuracy"] == [] for r in dropped])
    assert 0.2 < share < 0.4
    again = with_history(recs, h, leave_one_out=True, dropout=0.3, seed=4)
    assert [r.features for r in again] == [r.features for r in dropped]
    with pytest.raises(InvalidInputError):
        with_history(recs, h, dropout=1.0)


def test_file_beside_the_checkpoint_round_trips_and_a_corrupt_one_is_refused(tmp_path) -> None:
    h = PatternHistory.from_records([q("What does json.dumps do?", 1)], ["a", "b"])
    assert PatternHistory.load(tmp_path / "router") is None  # trained without: no table
    path = h.save(tmp_path / "router")
    assert path == tmp_path / "router_history.json"
    assert PatternHistory.path_for(tmp_path / "router.npz") == path
    assert PatternHistory.load(tmp_path / "router") == h
    for bad in ("{not json", '{"format": "other", "models": ["a"], "wins": {}}',
                '{"format": "ruvllm-pattern-history-v1", "models": ["a", "b"], "wins": {"k|code": [1]}}'):
        path.write_text(bad)
        with pytest.raises(StoreCorruptError, match="retrain the router or delete"):
            PatternHistory.load(tmp_path / "router")


def test_wins_learnt_in_use_live_in_their_own_file_and_survive_a_retrained_table(tmp_path) -> None:
    h = PatternHistory.from_records([q("What does json.dumps do?", 1)], ["a", "b"])
    trained = h.save(tmp_path / "router").read_bytes()
    h.add("What is json.dumps?", 0, online=True)
    h.add("Show a code snippet calling math.floor.", 1, online=True)
    assert h.count("What does json.dumps do?") == 2.0
    online = h.save_online(tmp_path / "router")
    assert online == tmp_path / "router_history_online.json"
    assert (tmp_path / "router_history.json").read_bytes() == trained  # the trained table is not rewritten
    loaded = PatternHistory.load(tmp_path / "router")
    assert loaded is not None and loaded.wins == h.wins and loaded.online == h.online
    assert loaded.shares("What does json.dumps do?") == [0.5, 0.5]

    # a retraining rewrites the trained table (here for models ["b", "c"]); the wins learnt in use
    # are added to it by model name, and a model the router no longer has is dropped
    PatternHistory.from_records([q("What does json.dumps do?", 0)], ["b", "c"]).save(tmp_path / "router")
    again = PatternHistory.load(tmp_path / "router")
    assert again is not None
    assert again.wins == {"json.dumps|definition": [1.0, 0.0], "math.floor|code": [1.0, 0.0]}
    assert again.online == {"math.floor|code": [1.0, 0.0]}
    again.save(tmp_path / "router")  # saving the trained part leaves the wins learnt in use out
    assert json.loads((tmp_path / "router_history.json").read_text())["wins"] == {"json.dumps|definition": [1.0, 0.0]}

    online.write_text('{"format": "ruvllm-pattern-history-v1", "models": ["a"], "wins": {"k": [1, 2]}}')
    with pytest.raises(StoreCorruptError, match="router_history_online.json"):
        PatternHistory.load(tmp_path / "router")


def hidden_coin_records(tmp_path):
    """Synthetic records whose best model is a coin flip per pattern (symbol + type): nothing in a
    question's own features tells it, its pattern's past questions do."""
    items = stdlib_qa(MODULES)
    recs = SyntheticOracle(["small", "large"], [0.27, 0.5]).label(items, DocRetriever(stdlib_corpus(MODULES),
                                                                                      hash_embed, k=6))
    out = []
    for r in recs:
        coin = int(hashlib.md5(r.id.rsplit(":", 1)[0].encode()).hexdigest(), 16) % 2
        u = [[0.0] * len(r.context_bins) for _ in r.models]
        u[coin][0] = 1.0
        out.append(replace(r, utility=u, quality=u, best_model=coin, best_context=0))
    return save_labelled(out, tmp_path / "coin.jsonl"), out


def test_history_lets_the_router_route_seen_patterns_and_is_served_from_its_file(tmp_path) -> None:
    path, recs = hidden_coin_records(tmp_path)
    cfg = TrainConfig(epochs=40, iht_rounds=2, iht_epochs=3, retrain_epochs=10, seed=0)
    plain = train_from_oracle(path, tmp_path / "plain", cfg)
    assert not PatternHistory.path_for(tmp_path / "plain" / "router").exists()
    hist = train_from_oracle(path, tmp_path / "hist", replace(cfg, history=True))
    seen = [r for r in recs if r.split == "test_seen"]
    keyed = np.mean([pattern_key(r.query, r.features["top_hit"]) is not None for r in seen])
    acc_plain = plain.compressed["test_seen"]["model_accuracy"]
    acc_hist = hist.compressed["test_seen"]["model_accuracy"]
    assert acc_hist > acc_plain + 0.2 and acc_hist >= keyed - 0.1, (acc_plain, acc_hist, keyed)

    # serving: the router reads the table beside its checkpoint and fills the slice itself
    router = FastGRNNRouter.load(tmp_path / "hist" / "router")
    assert router.history is not None
    r = next(r for r in seen if router.history_for(r.query))
    fi = r.feature_input()
    x = router.featurize(RouteInput(r.query, 8, 0.5, 3, features=fi))
    filled = replace(fi, historical_accuracy=router.history_for(r.query))
    given = router.featurize(RouteInput(r.query, 8, 0.5, 3, features=filled))
    assert np.array_equal(x, given)
    assert not np.array_equal(x[Y_HISTORY], router.params.normalizer.features(fi)[Y_HISTORY])

    # retraining into the same folder without history removes the stale table
    train_from_oracle(path, tmp_path / "hist", cfg)
    assert FastGRNNRouter.load(tmp_path / "hist" / "router").history is None


def test_a_history_grown_by_shadow_labels_routes_new_patterns(tmp_path) -> None:
    """bench.router_online's stream: held-out symbols' patterns start without a history; with every
    question shadow-labelled (r = 1) their later phrasings are routed by the grown table, with r = 0
    nothing changes. On the hidden-coin labels only the table can know a pattern's model."""
    from bench.router_online import stream_run

    path, recs = hidden_coin_records(tmp_path)
    cfg = TrainConfig(epochs=40, iht_rounds=2, iht_epochs=3, retrain_epochs=10, seed=0, history=True)
    report = train_from_oracle(path, tmp_path / "hist", cfg)
    router = FastGRNNRouter.load(report.checkpoint)
    table = router.history
    assert table is not None
    # where the orchestrator saves the wins learnt in use, however the checkpoint was named
    assert FastGRNNRouter.load(report.checkpoint + ".json").path == router.path == tmp_path / "hist" / "router"
    stream = [r for r in recs if r.split == "test_unseen"]

    def later_accuracy(run: dict) -> float:
        return float(np.mean([x["correct"] for x in run["rows"] if x["occ"] > 0]))

    frozen, grown = stream_run(router, table, stream, 0.0, seed=1), stream_run(router, table, stream, 1.0, seed=1)
    assert frozen["labels"] == 0 and grown["labels"] == len(stream) and grown["patterns_added"] > 0
    assert len(table.wins) == len(FastGRNNRouter.load(report.checkpoint).history.wins)  # the run grew a copy
    assert later_accuracy(grown) > later_accuracy(frozen) + 0.2, (later_accuracy(frozen), later_accuracy(grown))
    assert all(x["had_history"] for x in grown["rows"] if x["occ"] > 0)
