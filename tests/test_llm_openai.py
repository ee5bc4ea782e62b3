"""The OpenAI-compatible backend against a real server on loopback (llama-cpp-python's own)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ruvllm.errors import BackendError, InvalidInputError
from ruvllm.llm.base import ChatMessage, Generator, SamplingParams
from ruvllm.llm.openai_compat import OpenAIGenerator, estimate_tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with Qwen2.5-Coder-0.5B on a free loopback port."""
    pytest.importorskip("sse_starlette", reason="needs llama-cpp-python[server]")
    model = registry.path("qwen2.5-coder-0.5b")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "qwen",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "2",
             "--n_threads_batch", "2"],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ},
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(base + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def remote(server: str) -> Iterator[OpenAIGenerator]:
    gen = OpenAIGenerator("qwen-remote", base_url=server, model="qwen", timeout=60, max_retries=0)
    yield gen
    gen.close()


@pytest.mark.model
def test_models_and_protocol(remote: OpenAIGenerator) -> None:
    assert isinstance(remote, Generator)
    assert "qwen" in remote.probe()


@pytest.mark.model
def test_chat_stream_and_completion(remote: OpenAIGenerator) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0)
    msgs = [ChatMessage("user", "Write a Python function that adds two numbers.")]
    out = remote.chat(msgs, params)
    assert out.completion_tokens > 0 and out.prompt_tokens > 0 and out.text
    pieces = list(remote.stream_chat(msgs, params))
    assert len(pieces) > 1
    # streamed and whole answers agree at the start (later tokens may differ: the server re-uses
    # its KV cache differently, and near-ties in greedy argmax can flip)
    assert "".join(pieces)[:8] == out.text[:8]
    comp = remote.complete("def fibonacci(n):", SamplingParams(max_tokens=6))
    assert comp.completion_tokens > 0 and comp.finish_reason in ("stop", "length")
    assert "".join(remote.stream_complete("import os\n", SamplingParams(max_tokens=4)))


@pytest.mark.model
def test_token_count_from_server(remote: OpenAIGenerator, qwen: Any) -> None:
    text = "What does json.dumps do with a dict?"
    assert remote.count_tokens(text) == qwen.count_tokens(text)
    assert remote.tokenizer == "server:/extras/tokenize"


@pytest.mark.model
def test_bad_sampling_is_refused_before_the_wire(remote: OpenAIGenerator) -> None:
    with pytest.raises(InvalidInputError):
        remote.chat([ChatMessage("user", "hi")], SamplingParams(temperature=-1))


@pytest.mark.model
def test_unknown_model_is_a_clear_error(server: str) -> None:
    # llama-cpp-python's server answers whatever model is named; a 404 from a stricter server is mapped too
    gen = OpenAIGenerator("x", base_url=server, model="qwen", max_retries=0)
    try:
        with pytest.raises(BackendError, match="HTTP 404"):
            gen._call(lambda: gen._client.get("/nope", cast_to=object))
    finally:
        gen.close()


def test_server_down_is_a_clear_error_with_attempts() -> None:
    port = _free_port()  # nothing listens here
    gen = OpenAIGenerator("down", base_url=f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=2)
    try:
        with pytest.raises(BackendError) as err:
            gen.chat([ChatMessage("user", "hi")], SamplingParams(max_tokens=4))
        msg = str(err.value)
        assert f"127.0.0.1:{port}" in msg and "cannot reach" in msg
        assert "3 attempts (llm.max_retries = 2)" in msg
        with pytest.raises(BackendError, match="cannot reach"):
            list(gen.stream_chat([ChatMessage("user", "hi")], SamplingParams(max_tokens=4)))
        assert gen.count_tokens("hello world") == estimate_tokens("hello world") == 4  # documented fallback
        assert gen.tokenizer == "estimate"
    finally:
        gen.close()


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        time.sleep(3)
        try:
            self.send_response(200)
            self.end_headers()
        except OSError:
            pass

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


def test_slow_server_times_out_with_a_clear_error() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gen = OpenAIGenerator("slow", base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", timeout=0.3,
                          max_retries=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendError) as err:
            gen.complete("hi", SamplingParams(max_tokens=4))
        assert "did not answer within 0.3s after 2 attempts" in str(err.value)
        assert "llm.timeout" in str(err.value)
        assert time.monotonic() - t0 < 5
    finally:
        gen.close()
        srv.shutdown()


class _Broken(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b'{"error": {"message": "the model exploded", "type": "server_error"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_server_error_is_a_clear_error() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    gen = OpenAIGenerator("broken", base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", max_retries=1)
    try:
        with pytest.raises(BackendError, match=r"HTTP 500 after 2 attempts.*the model exploded"):
            gen.chat([ChatMessage("user", "hi")], SamplingParams(max_tokens=4))
    finally:
        gen.close()
        srv.shutdown()


def test_bad_config_is_refused() -> None:
    with pytest.raises(BackendError, match="base_url"):
        OpenAIGenerator("x", base_url="localhost:8000")
    with pytest.raises(BackendError, match="timeout"):
        OpenAIGenerator("x", base_url="http://127.0.0.1:1/v1", timeout=0)


def test_estimate_is_on_the_high_side() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 30) == 10
    assert Path(__file__).exists()


def test_pool_builds_the_openai_backend_from_config(tmp_path: Path) -> None:
    from ruvllm.config import LLMConfig
    from ruvllm.llm import ModelPool, Registry

    cfg: Any = LLMConfig()
    cfg.backend, cfg.base_url, cfg.model, cfg.max_retries = "openai", f"http://127.0.0.1:{_free_port()}/v1", "m", 0
    pool = ModelPool(Registry(tmp_path), cfg)
    try:
        gen = pool.get("qwen2.5-coder-0.5b")
        assert isinstance(gen, OpenAIGenerator) and gen.model == "m" and gen.n_ctx == cfg.n_ctx
        assert pool.get("qwen2.5-coder-0.5b") is gen  # shared, not rebuilt
    finally:
        pool.close()


@pytest.mark.model
def test_ruvllm_answers_through_the_server_with_no_local_weights(server: str, embedder: Any, tmp_path: Path) -> None:
    """With llm.backend = "openai" the models are the ones the server serves, whatever is on disk:
    the query is answered over HTTP, and a name the server does not serve is refused with what it
    does serve (before, installed_models() looked for local GGUFs only)."""
    from ruvllm.config import Config
    from ruvllm.errors import ModelNotFoundError
    from ruvllm.orchestrator import RuvLLM

    def make(remote_id: str) -> RuvLLM:
        return RuvLLM(Config.load(env=False, data_dir=str(tmp_path / remote_id), **{
            "llm.backend": "openai", "llm.base_url": server, "llm.model": remote_id, "llm.max_retries": 0,
            "llm.models": ["qwen2.5-coder-0.5b"], "llm.default_model": "qwen2.5-coder-0.5b",
            "llm.models_dir": str(tmp_path / "no-weights")}), embedder=embedder)

    rv = make("qwen")
    try:
        assert isinstance(rv.pool.get("qwen2.5-coder-0.5b"), OpenAIGenerator)
        assert rv.installed_models() == ["qwen2.5-coder-0.5b"]
        rv.ingest_stdlib(["json"])
        resp = rv.query("What does json.dumps do?", max_tokens=24, writeback=False)
        assert resp.model == "qwen2.5-coder-0.5b" and resp.answer and resp.usage["completion_tokens"] > 0
    finally:
        rv.close()
    rv = make("not-served")
    try:
        assert rv.installed_models() == []
        with pytest.raises(ModelNotFoundError, match=r"serves \['qwen'\]"):
            rv.query("What does json.dumps do?", max_tokens=8)
    finally:
        rv.close()
