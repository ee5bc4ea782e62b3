"""LFM2 proven: a tiny random-weight LFM2-architecture GGUF runs through the default backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ruvllm.llm.base import ChatMessage, SamplingParams
from ruvllm.llm.lfm2 import TinyLFM2, write_tiny_lfm2

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny_lfm2(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("lfm2") / "tiny-lfm2-Q8_0.gguf"
    return write_tiny_lfm2(dest, registry.path("qwen2.5-coder-0.5b"))


@pytest.fixture(scope="module")
def lfm2_gen(tiny_lfm2: Path) -> Iterator[Any]:
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator("tiny-lfm2", tiny_lfm2, n_ctx=512, n_threads=2)
    yield gen
    gen.close()


def test_header_has_short_convolutions_and_gqa(tiny_lfm2: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(str(tiny_lfm2), "r")
    assert reader.get_field("general.architecture").contents() == "lfm2"  # type: ignore[union-attr]
    kv_heads = reader.get_field("lfm2.attention.head_count_kv").contents()  # type: ignore[union-attr]
    cfg = TinyLFM2()
    assert kv_heads == [cfg.n_head_kv if k == "a" else 0 for k in cfg.layers]
    assert 0 < cfg.n_head_kv < cfg.n_head  # grouped-query attention
    names = {t.name for t in reader.tensors}
    assert {"blk.0.shortconv.conv.weight", "blk.0.shortconv.in_proj.weight", "blk.2.attn_k_norm.weight"} <= names
    assert tiny_lfm2.stat().st_size < 32 << 20


def test_lfm2_generates_through_the_default_backend(lfm2_gen: Any) -> None:
    assert lfm2_gen.architecture == "lfm2"
    params = SamplingParams(max_tokens=12, temperature=0.0)
    out = lfm2_gen.complete("def add(a, b):", params)
    assert out.completion_tokens > 0
    assert out.prompt_tokens > 0
    assert out.text
    again = lfm2_gen.complete("def add(a, b):", params)
    assert again.text == out.text  # greedy decoding is deterministic through the conv state


def test_lfm2_chat_and_stream(lfm2_gen: Any) -> None:
    chat = lfm2_gen.chat([ChatMessage("user", "hello")], SamplingParams(max_tokens=6))
    assert chat.completion_tokens > 0
    pieces = list(lfm2_gen.stream_complete("import os\n", SamplingParams(max_tokens=6)))
    assert pieces and all(isinstance(p, str) for p in pieces)


def test_lfm2_file_is_picked_up_by_the_registry(tiny_lfm2: Path, tmp_path: Path) -> None:
    from ruvllm.llm import Registry

    reg = Registry(tmp_path, extra={"my-lfm2": str(tiny_lfm2)})
    assert reg.path("my-lfm2") == tiny_lfm2
    # a real LFM2 file dropped into the models dir under its usual name is found by family name
    import shutil

    shutil.copy(tiny_lfm2, tmp_path / "LFM2-350M-Q8_0.gguf")
    assert Registry(tmp_path).path("lfm2-350m") == tmp_path / "LFM2-350M-Q8_0.gguf"
