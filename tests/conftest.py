"""Shared fixtures. Tests marked ``model`` load the real encoder and real GGUF models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
