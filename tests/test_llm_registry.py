"""The model registry: names, paths, packaged assembly, clear errors (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruvllm.errors import ModelLoadError, ModelNotFoundError
from ruvllm.llm.registry import Registry, check_gguf


def test_unknown_model_lists_what_is_available(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        reg.spec("gpt-5")
    msg = str(info.value)
    assert "gpt-5" in msg and "gemma3-270m" in msg and "lfm2-350m" in msg


def test_lfm2_family_is_known_with_its_quantisations(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    for name in ("lfm2-350m", "lfm2-700m", "lfm2-1.2b", "lfm2-2.6b"):
        spec = reg.spec(name)
        assert spec.family == "lfm2" and set(spec.quants) == {"Q4_K_M", "Q5_K_M", "Q8_0"}
    sizes = [reg.spec(n).params_m for n in ("lfm2-350m", "lfm2-700m", "lfm2-1.2b", "lfm2-2.6b")]
    assert sizes == sorted(sizes)


def test_lfm2_not_installed_says_where_to_put_it(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert not reg.is_installed("lfm2-1.2b")
    with pytest.raises(ModelNotFoundError, match="LFM2-1.2B-Q4_K_M.gguf"):
        reg.path("lfm2-1.2b")


def test_lfm2_found_in_models_dir_under_any_published_quant(tmp_path: Path) -> None:
    f = tmp_path / "LFM2-350M-Q8_0.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    reg = Registry(tmp_path)
    assert reg.is_installed("lfm2-350m")
    assert reg.path("lfm2-350m") == f


def test_user_path_missing_and_not_gguf(tmp_path: Path) -> None:
    reg = Registry(tmp_path, extra={"mine": str(tmp_path / "missing-1.5B-Q5_K_M.gguf")})
    spec = reg.spec("mine")
    assert spec.params_m == 1500 and spec.quant == "Q5_K_M"
    assert not reg.is_installed("mine")
    with pytest.raises(ModelNotFoundError, match="missing-1.5B"):
        reg.path("mine")
    bad = tmp_path / "text.gguf"
    bad.write_text("hello, not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        check_gguf(bad)


@pytest.mark.model
def test_packaged_model_is_assembled_once_and_checked(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.is_installed("gemma3-270m")
    path = reg.path("gemma3-270m")
    assert path.is_file() and path.parent == tmp_path
    stamp = path.with_suffix(".gguf.sha256")
    assert stamp.read_text().strip() == reg.spec("gemma3-270m").sha256
    mtime = path.stat().st_mtime_ns
    assert reg.path("gemma3-270m") == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    assert not list(tmp_path.glob("*.part")), "no temporary file is left behind"


@pytest.mark.model
def test_a_tampered_stamp_forces_a_rebuild(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    path = reg.path("qwen2.5-coder-0.5b")
    path.with_suffix(".gguf.sha256").write_text("0" * 64)
    path.write_bytes(b"GGUF truncated")
    assert reg.path("qwen2.5-coder-0.5b").stat().st_size > 400_000_000
