from pathlib import Path

import pytest

from ruvllm.config import HNSW_TABLE, Config, HnswParams, hnsw_params_for, preset
from ruvllm.errors import ConfigError


def test_defaults_are_the_spec_hnsw_parameters() -> None:
    cfg = Config.from_dict({})
    assert cfg.memory.hnsw() == HnswParams(32, 200, 64)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, (16, 100, 32)), (99_999, (16, 100, 32)), (100_000, (32, 200, 64)), (5_000_000, (48, 300, 128)),
     (50_000_000, (64, 400, 256)), (2_000_000_000, (64, 400, 256))],
)
def test_hnsw_table_by_corpus_size(n: int, expected: tuple[int, int, int]) -> None:
    p = hnsw_params_for(n)
    assert (p.m, p.ef_construction, p.ef_search) == expected


def test_hnsw_table_is_monotone() -> None:
    bounds = [b for b, _ in HNSW_TABLE]
    assert bounds == sorted(bounds)
    ms = [p.m for _, p in HNSW_TABLE]
    assert ms == sorted(ms)


def test_unknown_key_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[memory]\nefsearch = 10\n")
    with pytest.raises(ConfigError, match=r"memory\.'efsearch'|memory.efsearch|'efsearch'") as exc:
        Config.load(f, env=False)
    assert "ef_search" in str(exc.value)


def test_unknown_section(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[memroy]\nk = 3\n")
    with pytest.raises(ConfigError, match="memroy"):
        Config.load(f, env=False)


def test_wrong_type_and_range() -> None:
    with pytest.raises(ConfigError, match="memory.k must be int"):
        Config.from_dict({"memory": {"k": "many"}})
    with pytest.raises(ConfigError, match=r"memory.k must be in \[1, 64\]"):
        Config.from_dict({"memory": {"k": 65}})
    with pytest.raises(ConfigError, match="default_model"):
        Config.from_dict({"llm": {"models": ["gemma3-270m"], "default_model": "nope"}})
    with pytest.raises(ConfigError, match=r"router.explore must be in \[0, 1\]"):
        Config.from_dict({"router": {"explore": 1.5}})
    assert Config.from_dict({"router": {"explore": 0.1}}).router.explore == 0.1
    with pytest.raises(ConfigError, match="llm.deterministic needs llm.prefix_cache_mb = 0"):
        Config.from_dict({"llm": {"deterministic": True, "prefix_cache_mb": 64}})
    assert Config.from_dict({"llm": {"deterministic": True}}).llm.deterministic is True


def test_toml_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "/x"\n[llm]\nn_threads = 3\n')
    monkeypatch.setenv("RUVLLM_LLM__N_THREADS", "4")
    monkeypatch.setenv("RUVLLM_MEMORY__HNSW_AUTO", "true")
    cfg = Config.load(f)
    assert cfg.llm.n_threads == 4
    assert cfg.memory.hnsw_auto is True
    assert cfg.data_path == Path("/x")


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[llm\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        Config.load(f, env=False)


def test_presets_validate() -> None:
    assert preset("mobile").llm.default_model == "gemma3-270m"
    assert preset("server").memory.hnsw_auto
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("toaster")
