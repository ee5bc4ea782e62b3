"""The HTTP layer on its own: error shapes, auth, size limits, readiness, the fair queue, metrics.

No model is loaded here: the app is built with a ``factory`` that either never finishes loading
or fails the way a machine without models fails, so these tests only exercise what the server
itself decides. Answering queries is tested against a real server in ``test_server_e2e.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ruvllm import metrics
from ruvllm.config import Config
from ruvllm.errors import ModelNotFoundError
from ruvllm.server import FairGate, QueueFullError, ServerOptions, create_app, error_body

KEY = "sekret-key"


def _app(tmp_path: Any, factory: Any, **server: Any) -> Any:
    overrides = {f"server.{k}": v for k, v in server.items()}
    cfg = Config.load(env=False, data_dir=str(tmp_path), **overrides)
    return create_app(cfg, options=ServerOptions(preload=False), factory=factory)


@pytest.fixture()
def loading(tmp_path: Any) -> Iterator[TestClient]:
    """A server whose models are still loading (the factory blocks until the test ends)."""
    release = threading.Event()

    def factory(cfg: Config) -> Any:
        release.wait(30)
        raise ModelNotFoundError("test ended")

    app = _app(tmp_path, factory, api_key=KEY, max_request_bytes=2048)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client
        release.set()


def _assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and "code" in err
    if code is not None:
        assert err["code"] == code, err
    return err


def test_health_is_503_while_loading_and_queries_are_refused(loading: TestClient) -> None:
    r = loading.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert r.headers["retry-after"]
    r = loading.post("/v1/chat/completions", json={"model": "ruvllm", "messages": [{"role": "user", "content": "hi"}]})
    _assert_error(r, 503, "service_unavailable")
    assert int(r.headers["retry-after"]) >= 1


def test_health_reports_a_failed_start(tmp_path: Any) -> None:
    def factory(cfg: Config) -> Any:
        raise ModelNotFoundError("none of the configured models is installed")

    with TestClient(_app(tmp_path, factory)) as client:
        for _ in range(100):
            r = client.get("/health")
            if r.json()["status"] != "loading":
                break
            threading.Event().wait(0.02)
        assert r.status_code == 503
        assert r.json()["status"] == "error" and "is installed" in r.json()["error"]
        err = _assert_error(client.get("/v1/models"), 503)
        assert "failed to start" in err["message"]


def test_api_key_is_required_except_for_health(loading: TestClient) -> None:
    anon = {"Authorization": ""}
    err = _assert_error(loading.get("/v1/models", headers=anon), 401, "invalid_api_key")
    assert err["type"] == "authentication_error"
    _assert_error(loading.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _assert_error(loading.get("/metrics", headers={"Authorization": "Basic " + KEY}), 401)
    assert loading.get("/health", headers=anon).status_code == 503  # open, but not ready
    assert loading.get("/metrics").status_code == 200


def test_body_size_limit_gives_413(loading: TestClient) -> None:
    big = {"model": "ruvllm", "messages": [{"role": "user", "content": "x" * 5000}]}
    _assert_error(loading.post("/v1/chat/completions", json=big), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"question": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    _assert_error(loading.post("/query", content=chunks(), headers={"Content-Type": "application/json"}), 413)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "ruvllm"}),  # no messages
        ("/v1/chat/completions", {"model": "ruvllm", "messages": []}),
        ("/v1/chat/completions", {"model": "ruvllm", "messages": [{"content": "no role"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}),
        ("/v1/embeddings", {"model": "ruvllm-embedding"}),
        ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}),
        ("/feedback", {"score": 1}),
        ("/feedback", {"request_id": "r", "label": "meh"}),
    ],
)
def test_bad_bodies_are_400_in_the_openai_shape(loading: TestClient, path: str, body: dict[str, Any]) -> None:
    err = _assert_error(loading.post(path, json=body), 400, "invalid_request")
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("invalid request:")


def test_malformed_json_and_unknown_routes(loading: TestClient) -> None:
    r = loading.post("/query", content=b"{not json", headers={"Content-Type": "application/json"})
    _assert_error(r, 400, "invalid_request")
    _assert_error(loading.get("/v2/nothing"), 404, "not_found")
    _assert_error(loading.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_metrics_exposition(loading: TestClient) -> None:
    loading.get("/health")
    text = loading.get("/metrics").text
    for name in ("ruvllm_http_requests_total", "ruvllm_http_request_seconds_bucket", "ruvllm_ready",
                 "ruvllm_queue_depth", "ruvllm_memory_nodes"):
        assert name in text, name
    assert 'route="/health"' in text


def test_observe_response_counts_stages_decisions_and_writeback() -> None:
    d = SimpleNamespace(model="m1", confidence=0.8)
    r = SimpleNamespace(
        request_id="req-1", model="m1", decision=d, latency_ms={"embed": 3.0, "search": 0.4, "generate": 900.0},
        total_ms=910.0,
        writeback={"action": "inserted", "node_id": "n", "reason": ""},
        usage={"prompt_tokens": 100, "completion_tokens": 20}, quality=0.7,
    )
    def count() -> float:
        text = metrics.render()[0].decode()
        line = next(ln for ln in text.splitlines() if ln.startswith('ruvllm_router_decisions_total{model="m1"}'))
        return float(line.split()[-1])

    metrics.observe_response(r)
    before = count()
    metrics.observe_response(r)  # the same response again (orchestrator and server both report): counted once
    assert count() == before
    r.request_id = "req-2"
    r.latency_ms = {"embed": 3.0}  # no model call: a cache hit
    metrics.observe_response(r)
    assert count() == before + 1
    text = metrics.render()[0].decode()
    assert 'ruvllm_stage_seconds_count{stage="generate"}' in text
    assert 'ruvllm_router_decisions_total{model="m1"}' in text
    assert 'ruvllm_writeback_total{action="inserted"}' in text
    assert 'ruvllm_cache_total{result="hit"}' in text and 'ruvllm_cache_total{result="miss"}' in text
    assert 'ruvllm_queries_total{model="m1",path="cache"}' in text


def test_error_body_shape() -> None:
    assert error_body(404, "nope", "model_not_found") == {
        "error": {"message": "nope", "type": "not_found_error", "param": None, "code": "model_not_found"}
    }
    assert error_body(502, "x", "backend_error")["error"]["type"] == "server_error"


# ---- the fair gate ---------------------------------------------------------------------


def test_fair_gate_is_fifo_and_bounded() -> None:
    async def scenario() -> tuple[list[int], int]:
        gate = FairGate(slots=1, max_queue=3)
        order: list[int] = []
        await gate.acquire()  # held by "request 0"

        async def worker(i: int) -> None:
            await gate.acquire()
            order.append(i)
            await asyncio.sleep(0.001)
            gate.release(0.5)

        tasks = []
        for i in range(1, 4):
            tasks.append(asyncio.create_task(worker(i)))
            await asyncio.sleep(0)  # arrive in order
        await asyncio.sleep(0.01)
        assert gate.waiting == 3
        with pytest.raises(QueueFullError) as exc:
            await gate.acquire()
        retry = exc.value.retry_after
        gate.release()
        await asyncio.gather(*tasks)
        assert gate.free == 1 and gate.waiting == 0
        return order, retry

    order, retry = asyncio.run(scenario())
    assert order == [1, 2, 3]
    assert retry >= 1


def test_fair_gate_cancelled_waiter_does_not_leak_the_slot() -> None:
    async def scenario() -> int:
        gate = FairGate(slots=1, max_queue=4)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.release()
        await asyncio.wait_for(gate.acquire(), 1)  # the slot is free again, not lost to the cancelled waiter
        gate.release()
        return gate.free

    assert asyncio.run(scenario()) == 1


def test_update_from_stats_exports_memory_and_learning_numbers() -> None:
    metrics.update_from_stats({
        "memory": {"nodes": 57, "edges": 90, "cache": {"hits": 3, "misses": 9, "hit_rate": 0.25}, "path": "/x"},
        "learning": {"replay_size": 50, "replay_capacity": 200, "worker": {"queued": 2}},
    })
    text = metrics.render()[0].decode()
    assert "ruvllm_memory_nodes 57.0" in text
    assert 'ruvllm_memory_stat{name="cache.hits"} 3.0' in text and 'ruvllm_memory_stat{name="edges"} 90.0' in text
    assert "ruvllm_replay_fill 0.25" in text
    assert 'ruvllm_learning_stat{name="worker.queued"} 2.0' in text


def test_run_model_times_out_with_504_but_keeps_the_slot_until_the_call_returns(tmp_path: Any) -> None:
    from ruvllm.server import RequestTimeoutError, ServerState

    state = ServerState(Config.load(env=False, data_dir=str(tmp_path)), ServerOptions(), lambda cfg: None)
    done = threading.Event()

    def slow() -> str:
        done.wait(5)
        return "late"

    async def scenario() -> None:
        with pytest.raises(RequestTimeoutError) as exc:
            await state.run_model(slow, timeout_s=0.1)
        assert exc.value.http_status == 504
        assert state.gate.in_use == 1  # the blocking call still runs: nothing else may start
        with pytest.raises(RequestTimeoutError):  # waiting for the slot also counts against the timeout
            await state.run_model(lambda: "quick", timeout_s=0.1)
        done.set()
        assert await state.run_model(lambda: "quick", timeout_s=5) == "quick"
        assert state.gate.in_use == 0

    asyncio.run(scenario())
    state.executor.shutdown(wait=True)
