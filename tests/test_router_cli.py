"""``ruvllm router train / eval / info`` end to end on a tiny synthetic set (hash embedder, few epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ruvllm.errors import InvalidInputError
from ruvllm.router.base import RouteInput
from ruvllm.router.cli import router_app
from ruvllm.router.fastgrnn_router import FastGRNNRouter
from ruvllm.router.pipeline import PipelineConfig, build_labels, hash_embed, select_items

TINY = ["--labels", "synthetic", "--embedder", "hash", "--modules", "json,math,textwrap,heapq,bisect,base64",
        "--limit", "120", "--epochs", "6", "--seed", "1"]


def _train(out: Path, *extra: str) -> object:
    res = CliRunner().invoke(router_app, ["train", *TINY, "--out", str(out), *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("router")
    res = _train(out)
    return out, res.output  # type: ignore[attr-defined]


def test_train_writes_labels_router_and_report(trained: tuple[Path, str]) -> None:
    out, output = trained
    for name in ("labelled_synthetic.jsonl", "labels_info.json", "router.npz", "router.json", "router_dense.npz",
                 "train_report.json"):
        assert (out / name).exists(), name
    assert "synthetic" in output and "NOT measured on real models" in output
    assert '[router]\n  kind = "fastgrnn"' in output  # the TOML to paste, its table header included
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["label_source"] == "synthetic" and set(rep["n_eval"]) == {"test_seen", "test_unseen"}
    assert rep["stages"][-1]["stage"] == "sparse retrained int8" and rep["stages"][-1]["size_kb"] < 10
    # the defaults: the per-type prior and 4-fold CV; the given --epochs 6 is kept, the rest chosen
    c = rep["config"]
    assert c["type_prior"] and c["cv_folds"] == 4 and c["cv_keep"] == ["epochs"] and c["epochs"] == 6
    assert c["utility_prior"] == 0.05  # the prior is the training split's per-type utility table, fixed
    assert {r["epochs"] for r in rep["cv"]} == {6} and len({r["weight_decay"] for r in rep["cv"]}) == 3
    assert router_params_prior(out)
    info = json.loads((out / "labels_info.json").read_text())
    assert info["labels"] == "synthetic" and info["n_queries"] == sum(info["splits"].values())
    # the saved router is deployable: numpy only, routes among the packaged model names
    router = FastGRNNRouter.load(out / "router", models=["gemma3-270m", "qwen2.5-coder-0.5b"], max_context=2048)
    d = router.route(RouteInput("What does json.dumps do?", 6, 0.7, 8, session_id="s"))
    assert d.model in ("gemma3-270m", "qwen2.5-coder-0.5b") and d.context_tokens <= 2048


def router_params_prior(out: Path) -> bool:
    """Whether the saved router has a type prior; one made by default has the fixed table kind."""
    from ruvllm.router.fastgrnn import FastGRNNParams

    cfg = FastGRNNParams.load(out / "router").config
    assert cfg.prior_kind == ("table" if cfg.prior_slice != (0, 0) else "linear")
    return cfg.prior_slice != (0, 0)


def test_train_is_reproducible(trained: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = trained
    _train(tmp_path)
    assert (tmp_path / "router.npz").read_bytes() == (out / "router.npz").read_bytes()
    assert (tmp_path / "labelled_synthetic.jsonl").read_bytes() == (out / "labelled_synthetic.jsonl").read_bytes()


def test_eval_and_info(trained: tuple[Path, str]) -> None:
    out, _ = trained
    runner = CliRunner()
    res = runner.invoke(router_app, ["eval", str(out / "router.npz"), "--labelled",
                                     str(out / "labelled_synthetic.jsonl"), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ev = json.loads(res.output)
    assert ev["label_source"] == "synthetic"
    for split in ("train", "test_seen", "test_unseen"):
        assert 0.0 <= ev[split]["model_accuracy"] <= 1.0 and ev[split]["rows"] > 0
    res = runner.invoke(router_app, ["info", str(out / "router")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["int8"] is True and doc["sparsity"] >= 0.45 and doc["size_kb_int8"] < 10
    assert doc["models"] == ["gemma3-270m", "qwen2.5-coder-0.5b"]
    prior = doc["type_prior"]  # the default: the fixed utility table, one choice per query type
    assert prior["kind"] == "table" and set(prior["per_type"]) == {"definition", "signature", "howto", "explain",
                                                                   "compare", "code"}
    assert all(v["model"] in doc["models"] and v["context"] in doc["context_bins"] for v in prior["per_type"].values())


def test_train_from_existing_labels_and_bad_options(trained: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = trained
    runner = CliRunner()
    res = runner.invoke(router_app, ["train", "--labelled", str(out / "labelled_synthetic.jsonl"), "--epochs", "3",
                                     "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b" / "router.npz").exists() and not (tmp_path / "b" / "labelled_synthetic.jsonl").exists()
    for bad in (["--labels", "guess"], ["--hidden", "8"], ["--sparsity", "1.5"], ["--embedder", "nope"],
                ["--cv-folds", "1"], ["--label-temperature", "-0.1"], ["--feature-dropout", "1"],
                ["--history", "--history-dropout", "1"], ["--epochs", "0"], ["--utility-prior", "-0.05"],
                ["--cv-group", "module"], ["--cv-rule", "median"]):
        with pytest.raises(InvalidInputError):
            runner.invoke(router_app, ["train", *TINY, *bad, "--out", str(tmp_path / "c")], catch_exceptions=False)


def test_limit_keeps_every_split_and_hash_embedder_is_normalised() -> None:
    cfg = PipelineConfig(modules=("json", "math", "textwrap", "heapq"), limit=40, seed=0)
    items = select_items(cfg)
    assert 20 <= len(items) <= 80 and {i.split for i in items} == {"train", "test_seen", "test_unseen"}
    assert [i.id for i in items] == [i.id for i in select_items(cfg)]
    v = hash_embed(["What does json.dumps do?", ""])
    assert np.isclose(np.linalg.norm(v[0]), 1.0) and not v[1].any()


def test_real_labels_through_given_generators(tmp_path: Path) -> None:
    """The real path of the pipeline with stand-in generators (the oracle's own test has the fake)."""
    from test_router_oracle import FakeGenerator

    cfg = PipelineConfig(labels="real", embedder="hash", modules=("json",), limit=8, context_bins=(256, 1024))
    gens = {"small": FakeGenerator("small", good=False), "large": FakeGenerator("large", good=True)}
    run = build_labels(cfg, tmp_path, generators=gens, params_b={"small": 0.27, "large": 0.5})
    assert run.path.name == "labelled_real.jsonl" and run.info["models"] == ["small", "large"]
    assert all(r.label_source == "real" and len(r.answers) == 2 for r in run.records)


def test_default_out_is_inside_a_proper_data_dir(tmp_path: Path) -> None:
    from ruvllm.datadir import open_data_dir

    data = tmp_path / "data"
    res = CliRunner().invoke(router_app, ["train", *TINY, "--epochs", "2", "--limit", "40", "--data-dir", str(data)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (data / "router" / "router.npz").exists()
    open_data_dir(data)  # still a ruvllm data dir: `ruvllm ask --data-dir` will accept it


@pytest.mark.parametrize(("limit", "seed"), [(20, 0), (80, 0), (150, 0), (150, 1), (400, 2)])
def test_limit_keeps_a_training_paraphrase_of_every_seen_question(limit: int, seed: int) -> None:
    """A limited set's "seen" split means seen: each test_seen question has a training question of the
    same pattern (symbol + type). Before the fix, a --limit 150 run kept one for 2 of 38."""
    from collections import Counter

    items = select_items(PipelineConfig(limit=limit, seed=seed))
    train = {(i.symbol, i.query_type) for i in items if i.split == "train"}
    seen = [i for i in items if i.split == "test_seen"]
    assert seen and all((i.symbol, i.query_type) in train for i in seen)
    assert Counter(i.split for i in items).keys() == {"train", "test_seen", "test_unseen"}
    assert abs(len(items) - limit) <= max(4, limit // 20)  # still about the limit
    full = {}
    for it in select_items(PipelineConfig(seed=seed)):
        full.setdefault(it.session, []).append(it.id)
    got = {}
    for it in items:
        got.setdefault(it.session, []).append(it.id)
    assert all(got[s] == full[s] for s in got)  # whole sessions, in order
    assert [i.id for i in items] == [i.id for i in select_items(PipelineConfig(limit=limit, seed=seed))]


def test_all_wordings_adds_every_training_wording_of_the_seen_patterns_and_nothing_else() -> None:
    """--all-wordings: the limited set, plus each training wording of every seen pattern it holds."""
    base = select_items(PipelineConfig(limit=150))
    more = select_items(PipelineConfig(limit=150, all_wordings=True))
    every = select_items(PipelineConfig())
    seen = {(i.symbol, i.query_type) for i in base if i.split == "test_seen"}
    added = {i.id for i in more} - {i.id for i in base}
    assert {i.id for i in base} <= {i.id for i in more} and added
    assert added == {i.id for i in every if i.split == "train" and (i.symbol, i.query_type) in seen
                     and i.id not in {b.id for b in base}}
    by_pattern: dict[tuple[str, str], int] = {}
    for i in every:
        if i.split == "train":
            by_pattern[(i.symbol, i.query_type)] = by_pattern.get((i.symbol, i.query_type), 0) + 1
    train_more = [(i.symbol, i.query_type) for i in more if i.split == "train"]
    assert all(train_more.count(p) == by_pattern[p] for p in seen)  # every wording, once


def test_train_with_cv_records_the_chosen_point(trained: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = trained
    runner = CliRunner()
    res = runner.invoke(router_app, ["train", "--labelled", str(out / "labelled_synthetic.jsonl"), "--cv-folds", "0",
                                     "--no-type-prior", "--out", str(tmp_path / "plain")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    plain = json.loads((tmp_path / "plain" / "train_report.json").read_text())
    assert plain["cv"] == [] and plain["config"]["epochs"] == 60 and not router_params_prior(tmp_path / "plain")
    assert plain["config"]["utility_prior"] == 0.0  # --no-type-prior turns the utility table off too
    res = runner.invoke(router_app, ["train", "--labelled", str(out / "labelled_synthetic.jsonl"),
                                     "--cv-folds", "2", "--out", str(tmp_path / "cv")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cv" / "train_report.json").read_text())
    from ruvllm.router.training import CV_GRID

    assert len(rep["cv"]) == len(CV_GRID)
    c = rep["config"]
    chosen = [r for r in rep["cv"] if (r["weight_decay"], r["epochs"], r["label_temperature"])
              == (c["weight_decay"], c["epochs"], c["label_temperature"])]
    assert len(chosen) == 1
    assert chosen[0]["cv_utility_regret"] == pytest.approx(min(r["cv_utility_regret"] for r in rep["cv"]), abs=1e-6)


def test_train_with_history_saves_the_table_the_router_loads(trained: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = trained
    res = CliRunner().invoke(router_app, ["train", "--labelled", str(out / "labelled_synthetic.jsonl"), "--epochs",
                                          "3", "--history", "--out", str(tmp_path / "h")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "pattern history:" in res.output and (tmp_path / "h" / "router_history.json").exists()
    router = FastGRNNRouter.load(tmp_path / "h" / "router")
    assert router.history is not None and router.history.wins
    assert FastGRNNRouter.load(out / "router").history is None  # trained without: none
    # eval feeds the history as training and serving do: the same figures as the train report
    rep = json.loads((tmp_path / "h" / "train_report.json").read_text())
    res = CliRunner().invoke(router_app, ["eval", str(tmp_path / "h" / "router"), "--labelled",
                                          str(out / "labelled_synthetic.jsonl"), "--json"], catch_exceptions=False)
    ev = json.loads(res.output)
    for split in ("test_seen", "test_unseen"):
        assert ev[split]["model_accuracy"] == pytest.approx(rep["compressed"][split]["model_accuracy"])
    info = json.loads(CliRunner().invoke(router_app, ["info", str(tmp_path / "h" / "router")]).output)
    assert info["pattern_history"]["patterns"] == len(router.history.wins)
