"""A real ``ruvllm`` server process on loopback, driven by the ``openai`` client and by curl.

One server (real encoder, real GGUF models, SQLite + HNSW memory with a few stdlib modules) is
started for the module; the last test stops it with SIGTERM while a request is in flight and
checks, after a restart, that every write-back the server acknowledged is still there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from conftest import ROOT

pytestmark = pytest.mark.model

KEY = "test-key-123"
MODULES = "json,textwrap"
MAX_BODY = 20_000
MAX_QUEUE = 2


class Server:
    """``python -m ruvllm.server`` in a child process; ``start()`` waits for /health."""

    def __init__(self, data_dir: Path, log: Path):
        self.data_dir = data_dir
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 150) -> Server:
        port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, "RUVLLM_SERVER__MAX_REQUEST_BYTES": str(MAX_BODY)}
        cmd = [sys.executable, "-m", "ruvllm.server", "--host", "127.0.0.1", "--port", "0",
               "--port-file", str(port_file), "--data-dir", str(self.data_dir), "--api-key", KEY,
               "--ingest-stdlib", MODULES, "--max-queue", str(MAX_QUEUE), "--log-level", "warning"]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            assert self.proc.poll() is None, f"server exited early:\n{self.log.read_text()[-3000:]}"
            if port_file.exists() and not self.port:
                self.port = int(port_file.read_text())
            if self.port:
                try:
                    r = httpx.get(self.url + "/health", timeout=2)
                    if r.status_code == 200:
                        return self
                    assert r.json()["status"] in ("loading",), r.text
                except httpx.TransportError:
                    pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    srv = Server(root / "data", root / "server.log").start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


ACKED: list[str] = []  # node ids of write-backs the server acknowledged; checked after the restart


def _ack(ext: dict[str, Any]) -> None:
    wb = ext.get("writeback") or {}
    if wb.get("node_id"):
        ACKED.append(wb["node_id"])


def _curl(server: Server, *args: str, key: str | None = KEY) -> tuple[int, dict[str, str], str]:
    assert shutil.which("curl"), "curl is needed for this test"
    auth = ["-H", f"Authorization: Bearer {key}"] if key else []
    proc = subprocess.run(["curl", "-sS", "-i", "--max-time", "120", *auth, *args], capture_output=True, text=True,
                          timeout=130)
    assert proc.returncode == 0, proc.stderr
    head, _, body = proc.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


# ---- the OpenAI client ---------------------------------------------------------------------


def test_openai_chat_returns_answer_decision_sources_and_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="ruvllm", messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "What does json.dumps do?"}], max_tokens=16,
    )
    comp = raw.parse()
    assert comp.object == "chat.completion"
    assert comp.choices[0].message.role == "assistant" and comp.choices[0].message.content
    assert comp.usage is not None and comp.usage.completion_tokens > 0
    ext = (comp.model_extra or {})["ruvllm"]
    assert raw.headers["x-ruvllm-request-id"] == ext["request_id"] and comp.id.endswith(ext["request_id"])
    assert raw.headers["x-ruvllm-model"] == comp.model == ext["decision"]["model"]
    assert "stdlib:json.dumps" in [s["source"] for s in ext["sources"]]
    for stage in ("embed", "search", "route", "generate"):
        assert stage in ext["latency_ms"]
    _ack(ext)


def test_openai_streaming_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "What does textwrap.dedent do?"}],
        max_tokens=12, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    first_ext = (chunks[0].model_extra or {})["ruvllm"]
    assert first_ext["decision"]["model"] == "gemma3-270m" and first_ext["sources"]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    ext = (finals[0].model_extra or {})["ruvllm"]
    assert ext["request_id"] == first_ext["request_id"] and "generate" in ext["latency_ms"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    _ack(ext)


def test_openai_models_and_embeddings(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "ruvllm" and "gemma3-270m" in ids and "ruvllm-embedding" in ids
    texts = ["Serialize obj to a JSON formatted str.", "Remove common leading whitespace."]
    emb = client.embeddings.create(model="ruvllm-embedding", input=texts)  # the client asks for base64
    vecs = np.array([d.embedding for d in emb.data], dtype=np.float32)
    assert vecs.shape == (2, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    same = client.embeddings.create(model="ruvllm-embedding", input=texts[0], encoding_format="float")
    assert np.allclose(same.data[0].embedding, vecs[0], atol=1e-5)


def test_openai_client_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="ruvllm", messages=[{"role": "assistant", "content": "no question"}])
    assert "user message" in str(br.value)
    bad = openai.OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def _in_flight(http: httpx.Client) -> float:
    line = next(ln for ln in http.get("/metrics").text.splitlines() if ln.startswith("ruvllm_in_flight "))
    return float(line.split()[1])


def test_a_client_that_hangs_up_mid_stream_frees_the_model(server: Server, http: httpx.Client) -> None:
    body = {"model": "gemma3-270m", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Explain every function of the json module in detail."}]}
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c, \
            c.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [ln for _, ln in zip(range(6), lines, strict=False)]
        assert any('"content"' in ln for ln in got)
        assert _in_flight(http) == 1.0
    t0 = time.monotonic()  # closed after a few tokens; 400 tokens would take far longer than this
    while _in_flight(http) != 0.0:
        assert time.monotonic() - t0 < 10, "generation went on after the client left"
        time.sleep(0.1)


# ---- ruvllm's own routes ---------------------------------------------------------------------


def test_session_query_and_feedback(http: httpx.Client) -> None:
    sid = http.post("/session").json()["session_id"]
    r = http.post("/query", json={"question": "What does textwrap.fill do?", "max_tokens": 12, "session_id": sid})
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["answer"] and resp["decision"]["model"] and resp["request_id"] == r.headers["x-ruvllm-request-id"]
    _ack(resp)
    fb = http.post("/feedback", json={"request_id": resp["request_id"], "label": "good"})
    assert fb.status_code == 200 and fb.json()["score"] == 1.0
    fb = http.post("/feedback", json={"request_id": resp["request_id"], "score": 0.25, "comment": "meh"})
    assert fb.status_code == 200 and fb.json()["score"] == 0.25
    assert http.post("/feedback", json={"request_id": "nope", "score": 1}).status_code == 404
    assert http.post("/feedback", json={"request_id": resp["request_id"], "score": 3}).status_code == 400
    r = http.post("/query", json={"question": "x", "session_id": "sess-unknown"})
    assert r.status_code == 404 and "POST /session" in r.json()["error"]["message"]


def test_stats_and_metrics(http: httpx.Client) -> None:
    stats = http.get("/stats").json()
    assert stats["server"]["slots"] == 1 and stats["models"]["installed"]
    text = http.get("/metrics").text
    for needle in ('ruvllm_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}',
                   'ruvllm_stage_seconds_bucket{le="0.005",stage="search"}', "ruvllm_router_decisions_total{model=",
                   "ruvllm_writeback_total{action=", "ruvllm_cache_total{result=", "ruvllm_memory_nodes "):
        assert needle in text, needle
    nodes = next(ln for ln in text.splitlines() if ln.startswith("ruvllm_memory_nodes "))
    assert float(nodes.split()[1]) > 40


# ---- curl ----------------------------------------------------------------------------------


def test_curl_chat_stream_and_errors(server: Server) -> None:
    body = json.dumps({"model": "ruvllm", "messages": [{"role": "user", "content": "What does json.loads do?"}],
                       "max_tokens": 8})
    url = server.url + "/v1/chat/completions"
    status, headers, text = _curl(server, "-H", "Content-Type: application/json", "-d", body, url)
    assert status == 200 and headers["x-ruvllm-request-id"]
    data = json.loads(text)
    assert data["choices"][0]["message"]["content"], json.dumps(data)[:3000]
    _ack(data["ruvllm"])

    stream_body = json.dumps({**json.loads(body), "stream": True})
    status, headers, text = _curl(server, "-N", "-H", "Content-Type: application/json", "-d", stream_body, url)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [ln[len("data: "):] for ln in text.split("\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    _ack(json.loads(events[-2])["ruvllm"])

    status, _, text = _curl(server, url, "-d", body, key=None)
    assert status == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
    status, _, text = _curl(server, url, "-H", "Content-Type: application/json", "-d", "x" * (MAX_BODY + 1))
    assert status == 413 and json.loads(text)["error"]["type"] == "invalid_request_error"
    status, _, text = _curl(server, url, "-H", "Content-Type: application/json", "-d", '{"messages": 3}')
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_request"
    status, _, text = _curl(server, server.url + "/v1/embeddings", "-H", "Content-Type: application/json",
                            "-d", '{"model": "text-embedding-3-small", "input": "x"}')
    assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"
    status, _, text = _curl(server, server.url + "/health", key=None)
    assert status == 200 and json.loads(text)["status"] == "ok"


def test_full_queue_answers_503_with_retry_after(server: Server) -> None:
    """One generating + MAX_QUEUE waiting: the rest are turned away at once, not queued forever."""
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
            r = c.post(server.url + "/query", json={"question": f"What does json.JSONEncoder do? ({i})",
                                                    "max_tokens": 16, "writeback": False})
            with lock:
                results.append((r.status_code, r.headers.get("retry-after")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(MAX_QUEUE + 4)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(180)
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) >= MAX_QUEUE + 1, statuses
    busy = [ra for s, ra in results if s == 503]
    assert busy and all(ra is not None and int(ra) >= 1 for ra in busy), results


# ---- shutdown and restart (last: it stops the module's server) ------------------------------------


def test_sigterm_finishes_in_flight_work_and_keeps_every_acknowledged_writeback(
    server: Server, tmp_path: Path
) -> None:
    if not ACKED:  # run alone: have at least one answer written back first
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
            _ack(c.post(server.url + "/query", json={"question": "What does json.dumps do?", "max_tokens": 16}).json())
    assert ACKED, "at least one answer should have been written back"
    result: dict[str, Any] = {}

    def in_flight() -> None:
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
            r = c.post(server.url + "/query", json={"question": "How do I indent every line with textwrap?",
                                                    "max_tokens": 24})
            result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=in_flight)
    t.start()
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:  # wait until the request holds the generation slot
        text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
        if "ruvllm_in_flight 1.0" in text:
            break
        time.sleep(0.05)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):  # the listening socket is closed at once
        httpx.get(server.url + "/health", timeout=2)
    t.join(120)
    assert result.get("status") == 200, result
    _ack(result["body"])
    assert server.stop(timeout=60) == 0  # clean exit after memory.close()

    restarted = Server(server.data_dir, server.log).start()
    try:
        with httpx.Client(base_url=restarted.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            stats = c.get("/stats").json()
        assert stats["memory"]
    finally:
        assert restarted.stop() == 0
    # every acknowledged write-back is in the store, read by a fresh process after the restart
    script = (
        "import json,sys\nfrom ruvllm.config import Config\nfrom ruvllm.orchestrator import RuvLLM\n"
        f"rv = RuvLLM(Config.load(data_dir={str(server.data_dir)!r}))\n"
        "ids = json.loads(sys.argv[1]); missing = []\n"
        "for i in ids:\n"
        "    try: rv.memory.get(i)\n"
        "    except Exception: missing.append(i)\n"
        "rv.close(); print(json.dumps(missing))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(ACKED)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], f"lost acknowledged write-backs of {ACKED}"

