"""HTTP service: the OpenAI-compatible API plus ruvllm's own routes, over one shared ``RuvLLM``.

Routes
    POST /v1/chat/completions   OpenAI chat (JSON or SSE ``stream: true``); the last user message is the question
    GET  /v1/models             ``ruvllm`` (the router decides) and every installed model
    POST /v1/embeddings         the memory's sentence encoder (``encoding_format`` float or base64)
    POST /query                 the full ``QueryResponse`` as JSON
    POST /feedback              ``{"request_id", "score": 0..1}`` or ``{"request_id", "label": "good"|"bad"}``
    POST /session               a session id to pass as ``session_id``
    GET  /stats  /health  /metrics

Every answer carries ``ruvllm: {request_id, decision, sources, latency_ms, ...}`` in its body and
``x-ruvllm-request-id`` / ``x-ruvllm-model`` headers; OpenAI clients ignore both.

Concurrency: the machine has few cores and one model call already uses them all, so every model
call (generation and embedding) passes through one ``FairGate``: ``slots`` at a time, the rest wait
in FIFO order, and when ``max_queue`` are waiting a request is turned away at once with 503 and
``Retry-After``. Model calls run in a dedicated thread pool, never on the event loop.

Shutdown (SIGTERM/SIGINT): stop accepting, ``/health`` says ``draining``, in-flight requests finish
(up to the request timeout), then ``RuvLLM.close()`` saves the index. Every write-back is committed
to the store before its answer is sent, so nothing acknowledged is lost even on ``kill -9``.

This module maps HTTP to the Python API and back; it holds no query logic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ruvllm import metrics
from ruvllm.config import Config
from ruvllm.errors import InvalidInputError, ModelNotFoundError, NotFoundError, RuvLLMError

log = logging.getLogger("ruvllm.server")

ROUTER_MODEL = "ruvllm"  # model id meaning "let the router decide"
EMBEDDING_MODEL = "ruvllm-embedding"  # model id of the memory's sentence encoder
DEFAULT_SLOTS = 1
DEFAULT_MAX_QUEUE = 16
MAX_EMBED_INPUTS = 256
MAX_SESSIONS = 10_000
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
OPEN_PATHS = frozenset({"/health"})  # reachable without the API key (load balancers probe it)


# --------------------------------------------------------------------------------------
# errors specific to serving
# --------------------------------------------------------------------------------------


class ServiceUnavailableError(RuvLLMError):
    """Not ready yet, draining for shutdown, or the generation queue is full. Retry later."""

    http_status = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(ServiceUnavailableError):
    code = "queue_full"


class RequestTimeoutError(RuvLLMError):
    http_status = 504
    code = "timeout"


class ClientGoneError(RuvLLMError):
    http_status = 499  # nginx's "client closed request": nobody reads it
    code = "client_closed_request"


class AuthError(RuvLLMError):
    http_status = 401
    code = "invalid_api_key"


class PayloadTooLargeError(RuvLLMError):
    http_status = 413
    code = "request_too_large"


_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error",
    504: "timeout_error",
}


def error_body(status: int, message: str, code: str) -> dict[str, Any]:
    """The OpenAI error shape."""
    etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def _ruvllm_error_response(exc: RuvLLMError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServiceUnavailableError) else None
    return error_response(exc.http_status, str(exc), exc.code, headers)


# --------------------------------------------------------------------------------------
# fair admission: FIFO slots with a bounded wait queue
# --------------------------------------------------------------------------------------


class FairGate:
    """``slots`` holders at a time; up to ``max_queue`` waiters served first come, first served.

    Lives on the event loop (not thread-safe by design): ``acquire`` is awaited by request
    handlers, ``release`` is called from a future's done-callback, which runs on the loop.
    A released slot passes straight to the oldest waiter, so a newcomer cannot overtake.
    """

    def __init__(self, slots: int = DEFAULT_SLOTS, max_queue: int = DEFAULT_MAX_QUEUE):
        if slots < 1 or max_queue < 0:
            raise ValueError("slots must be >= 1 and max_queue >= 0")
        self.slots = slots
        self.max_queue = max_queue
        self.free = slots
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._service_s = 2.0  # moving average of how long a slot is held, for Retry-After

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def in_use(self) -> int:
        return self.slots - self.free

    def retry_after(self) -> int:
        """Seconds until a new request would likely get a slot."""
        return max(1, math.ceil(self._service_s * (self.waiting + 1) / self.slots))

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            self._report()
            return
        if self.waiting >= self.max_queue:
            metrics.observe_rejection("queue_full")
            raise QueueFullError(
                f"the server is busy ({self.in_use} running, {self.waiting} waiting); retry in about "
                f"{self.retry_after()} s", retry_after=self.retry_after(),
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._report()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we gave up: pass it on
            else:
                fut.cancel()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            self._report()

    def release(self, held_s: float | None = None) -> None:
        if held_s is not None:
            self._service_s = 0.8 * self._service_s + 0.2 * held_s
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the oldest waiter
                self._report()
                return
        self.free = min(self.slots, self.free + 1)
        self._report()

    def _report(self) -> None:
        metrics.set_queue(self.waiting, self.in_use)


# --------------------------------------------------------------------------------------
# request bodies
# --------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class RuvllmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    writeback: bool | None = None
    session_id: str | None = None


class ChatCompletionRequest(_Body):
    model: str = ROUTER_MODEL
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    session_id: str | None = None  # extension, also accepted inside "ruvllm" or as x-ruvllm-session-id
    writeback: bool | None = None
    ruvllm: RuvllmOptions | None = None


class EmbeddingRequest(_Body):
    model: str = EMBEDDING_MODEL
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class QueryRequest(_Body):
    question: str | None = None
    text: str | None = None  # alias of question
    model: str | None = None
    max_tokens: int | None = None
    writeback: bool | None = None
    session_id: str | None = None


class FeedbackRequest(_Body):
    request_id: str
    score: float | None = None
    label: Literal["good", "bad"] | None = None
    comment: str = Field(default="", max_length=4000)


# --------------------------------------------------------------------------------------
# state shared by the routes
# --------------------------------------------------------------------------------------

RvFactory = Callable[[Config], Any]


def _default_factory(config: Config) -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ruvllm.orchestrator import RuvLLM

    return RuvLLM(config)


@dataclass
class ServerOptions:
    slots: int = DEFAULT_SLOTS
    max_queue: int = DEFAULT_MAX_QUEUE
    preload: bool = True  # load every installed model before reporting ready
    ingest_stdlib: list[str] = field(default_factory=list)  # modules to ingest before ready


class ServerState:
    def __init__(self, config: Config, options: ServerOptions, factory: RvFactory):
        self.config = config
        self.options = options
        self.factory = factory
        self.rv: Any = None
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.started = time.time()
        self.gate = FairGate(options.slots, options.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=options.slots, thread_name_prefix="ruvllm-model")
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.load_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    # ---- readiness ---------------------------------------------------------------
    def require_ready(self) -> Any:
        if self.draining:
            metrics.observe_rejection("draining")
            raise ServiceUnavailableError("the server is shutting down; retry against another instance", 5)
        if not self.ready:
            if self.load_error:
                raise ServiceUnavailableError(f"the server failed to start: {self.load_error}", 30)
            raise ServiceUnavailableError("the server is still loading models and the index; retry shortly", 2)
        return self.rv

    def load(self) -> None:
        """Blocking: open memory, load the encoder, router and models (runs in a worker thread)."""
        rv = self.factory(self.config)
        self.rv = rv
        if self.options.ingest_stdlib:
            report = rv.ingest_stdlib(self.options.ingest_stdlib)
            log.info("ingested %s new documents (%s already present)", report.inserted, report.skipped)
        rv.embedder.embed(["warm up"])
        _ = rv.router  # raises when no configured model is installed
        if self.options.preload:
            for name in rv.installed_models():
                rv.pool.get(name)
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        rv = self.rv
        if rv is None:
            return
        with contextlib.suppress(Exception):
            metrics.set_memory_nodes(int(rv.memory.count()))
        with contextlib.suppress(Exception):
            metrics.update_from_stats(rv.stats())

    # ---- sessions ----------------------------------------------------------------
    def new_session(self) -> dict[str, Any]:
        sid = "sess-" + uuid.uuid4().hex
        info = {"session_id": sid, "created": int(time.time()), "queries": 0}
        with self._lock:
            self.sessions[sid] = info
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return info

    def check_session(self, sid: str | None) -> str | None:
        if sid is None:
            return None
        if not isinstance(sid, str) or not SESSION_RE.match(sid):
            raise InvalidInputError("session_id must be 1-128 characters of letters, digits, '_', '-', '.', ':'")
        with self._lock:
            info = self.sessions.get(sid)
            if info is None:
                raise NotFoundError(f"unknown session {sid!r}; create one with POST /session")
            info["queries"] += 1
            self.sessions.move_to_end(sid)
        return sid

    # ---- running model work --------------------------------------------------------
    async def run_model(self, fn: Callable[[], Any], timeout_s: float, request: Request | None = None) -> Any:
        """Run blocking ``fn`` in the model pool, after waiting fairly for a slot.

        On timeout the caller gets 504 at once; the call itself cannot be interrupted, so it keeps
        its slot until it returns (the CPU is never oversubscribed). A client that hung up while
        queued gives its slot straight back.
        """
        deadline = time.monotonic() + timeout_s
        await self._acquire(deadline)
        if request is not None and await request.is_disconnected():
            self.gate.release()
            raise ClientGoneError("the client closed the connection while queued")
        fut = self._submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            metrics.observe_rejection("timeout")
            raise RequestTimeoutError(f"the request took longer than {timeout_s:g} s; retry, or ask for fewer "
                                      "tokens (max_tokens)") from None

    async def _acquire(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(self.gate.acquire(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            metrics.observe_rejection("timeout")
            raise RequestTimeoutError("timed out waiting for a free generation slot; retry later") from None

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Start ``fn`` in the model pool; the gate slot (already held) is released when it returns."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        fut = loop.run_in_executor(self.executor, fn)
        fut.add_done_callback(lambda _f: self.gate.release(time.monotonic() - t0))
        return fut


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.ruvllm
    return state


# --------------------------------------------------------------------------------------
# ASGI middleware: API key, body size limit, metrics (pure ASGI so streams pass through)
# --------------------------------------------------------------------------------------


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, api_key: str, max_body: int):
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status_holder = [500]

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
            await send(message)

        try:
            rejection = self._check(scope)
            if rejection is not None:
                await rejection(scope, receive, send_wrapped)
                return
            await self.app(scope, self._limited(receive), send_wrapped)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            metrics.observe_request(template, scope.get("method", "?"), status_holder[0], time.perf_counter() - t0)

    def _check(self, scope: Scope) -> ASGIApp | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope.get("path") not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                      AuthError.code, {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return self._too_large()
            except ValueError:
                return error_response(400, "bad Content-Length header", "invalid_request")
        return None

    def _too_large_msg(self) -> str:
        return f"request body is larger than {self.max_body} bytes (server.max_request_bytes)"

    def _too_large(self) -> JSONResponse:
        return error_response(413, self._too_large_msg(), PayloadTooLargeError.code)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # a chunked body with no Content-Length
                    raise StarletteHTTPException(413, self._too_large_msg())
            return message

        return wrapped


# --------------------------------------------------------------------------------------
# response shaping
# --------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Dataclasses (and anything nested) → JSON-ready values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _extension(resp: Any) -> dict[str, Any]:
    """The ``ruvllm`` block added to OpenAI-shaped answers."""
    return {
        "request_id": resp.request_id,
        "decision": _plain(resp.decision),
        "sources": _plain(resp.sources),
        "latency_ms": _plain(resp.latency_ms),
        "total_ms": resp.total_ms,
        "quality": resp.quality,
        "writeback": _plain(resp.writeback),
        "cache_hit": metrics.is_cache_hit(resp),
    }


def _headers(request_id: str, model: str) -> dict[str, str]:
    return {"x-ruvllm-request-id": request_id, "x-ruvllm-model": model}


def _usage(resp: Any) -> dict[str, int]:
    p = int(resp.usage.get("prompt_tokens", 0))
    c = int(resp.usage.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _message_text(msg: ChatMessageIn) -> str:
    content = msg.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInputError(f"only text content parts are supported, got type {part.get('type')!r}")
        parts.append(part["text"])
    return "\n".join(parts)


def _question(req: ChatCompletionRequest) -> str:
    for msg in reversed(req.messages):
        if msg.role == "user":
            text = _message_text(msg)
            if not text.strip():
                raise InvalidInputError("the last user message is empty; put the question in it")
            return text
    raise InvalidInputError("messages must contain a user message: the last one is the question")


def _model_arg(state: ServerState, rv: Any, model: str | None) -> str | None:
    """``ruvllm``/None → the router decides; an installed model name → that model; else 404."""
    if model is None or model == ROUTER_MODEL:
        return None
    installed = rv.installed_models()
    if model not in installed:
        raise ModelNotFoundError(
            f"model {model!r} does not exist or is not installed; available: {[ROUTER_MODEL, *installed]} "
            "(GET /v1/models)"
        )
    return model


# --------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------


def create_app(
    config: Config | None = None, *, options: ServerOptions | None = None, factory: RvFactory | None = None
) -> FastAPI:
    """The ASGI app. ``factory(config)`` builds the ``RuvLLM`` (in a worker thread, at startup)."""
    config = config or Config.load()
    options = options or ServerOptions(slots=config.server.slots, max_queue=config.server.max_queue)
    state = ServerState(config, options, factory or _default_factory)
    timeout_s = float(config.server.request_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.set_ready(False)
        state.load_task = asyncio.create_task(_load(state))
        try:
            yield
        finally:
            await _shutdown(state)

    app = FastAPI(title="ruvllm", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.ruvllm = state

    # ---- errors in the OpenAI shape -------------------------------------------------
    @app.exception_handler(RuvLLMError)
    async def _on_ruvllm_error(request: Request, exc: RuvLLMError) -> JSONResponse:
        return _ruvllm_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{loc or 'body'}: {err.get('msg')}")
        return error_response(400, "invalid request: " + "; ".join(problems), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: PayloadTooLargeError.code}.get(
            exc.status_code, "http_error")
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(exc.status_code, msg, code, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error")

    # ---- health, stats, metrics, sessions --------------------------------------------
    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.load_error:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})
        return JSONResponse({
            "status": "ok", "models": state.rv.installed_models(), "loaded": state.rv.pool.loaded(),
            "uptime_s": round(time.time() - state.started, 1),
        })

    @app.get("/stats")
    async def stats(request: Request) -> JSONResponse:
        rv = state.require_ready()
        data = await asyncio.to_thread(rv.stats)
        data["server"] = {
            "queue_waiting": state.gate.waiting, "in_flight": state.gate.in_use, "slots": state.gate.slots,
            "max_queue": state.gate.max_queue, "sessions": len(state.sessions),
            "uptime_s": round(time.time() - state.started, 1),
        }
        return JSONResponse(_plain(data))

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        await asyncio.to_thread(state.refresh_gauges)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/session")
    async def session(request: Request) -> JSONResponse:
        state.require_ready()
        return JSONResponse(state.new_session())

    # ---- OpenAI-compatible -----------------------------------------------------------
    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        rv = state.require_ready()
        created = int(state.started)
        ids = [ROUTER_MODEL, *rv.installed_models(), EMBEDDING_MODEL]
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "ruvllm"} for m in ids
        ]})

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
        rv = state.require_ready()
        if body.model not in (EMBEDDING_MODEL, ROUTER_MODEL):
            raise ModelNotFoundError(f"embedding model {body.model!r} does not exist; use {EMBEDDING_MODEL!r}")
        raw = [body.input] if isinstance(body.input, str) else list(body.input)
        if not raw or not all(isinstance(t, str) for t in raw):
            raise InvalidInputError("input must be a non-empty string or a list of strings (token ids are not "
                                    "supported)")
        texts: list[str] = [str(t) for t in raw]
        if len(texts) > MAX_EMBED_INPUTS:
            raise InvalidInputError(f"at most {MAX_EMBED_INPUTS} inputs per request, got {len(texts)}")
        if any(not t.strip() for t in texts):
            raise InvalidInputError("inputs must not be empty strings")
        dim = int(state.config.memory.dim)
        if body.dimensions is not None and body.dimensions != dim:
            raise InvalidInputError(f"dimensions must be {dim} (the encoder's size) or left out")
        vectors = await state.run_model(lambda: rv.embedder.embed(list(texts)), timeout_s)  # (n, dim)
        vectors = np.asarray(vectors, dtype=np.float32)
        data = []
        for i, vec in enumerate(vectors):
            emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
                        if body.encoding_format == "base64" else [float(x) for x in vec])
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n_tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": EMBEDDING_MODEL,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        rv = state.require_ready()
        if body.n not in (None, 1):
            raise InvalidInputError("n must be 1 (one answer per request)")
        question = _question(body)
        model = _model_arg(state, rv, body.model)
        opts = body.ruvllm or RuvllmOptions()
        session_id = state.check_session(
            opts.session_id or body.session_id or request.headers.get("x-ruvllm-session-id")
        )
        writeback = opts.writeback if opts.writeback is not None else body.writeback
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        kwargs = {"model": model, "max_tokens": max_tokens, "writeback": writeback, "session_id": session_id}
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return await _stream_chat(state, rv, question, kwargs, include_usage, timeout_s)
        resp = await state.run_model(lambda: rv.query(question, **kwargs), timeout_s, request)
        metrics.observe_response(resp)
        payload = {
            "id": f"chatcmpl-{resp.request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": resp.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": resp.answer},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(resp),
            "system_fingerprint": None,
            "ruvllm": _extension(resp),
        }
        return JSONResponse(payload, headers=_headers(resp.request_id, resp.model))

    # ---- ruvllm's own ---------------------------------------------------------------
    @app.post("/query")
    async def query(body: QueryRequest, request: Request) -> JSONResponse:
        rv = state.require_ready()
        question = body.question if body.question is not None else body.text
        if question is None:
            raise InvalidInputError('give the question as {"question": "..."}')
        model = _model_arg(state, rv, body.model)
        session_id = state.check_session(body.session_id or request.headers.get("x-ruvllm-session-id"))
        resp = await state.run_model(
            lambda: rv.query(question, model=model, max_tokens=body.max_tokens, writeback=body.writeback,
                             session_id=session_id),
            timeout_s, request,
        )
        metrics.observe_response(resp)
        data = _plain(resp.to_dict())
        data["cache_hit"] = metrics.is_cache_hit(resp)
        return JSONResponse(data, headers=_headers(resp.request_id, resp.model))

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest, request: Request) -> JSONResponse:
        rv = state.require_ready()
        if (body.score is None) == (body.label is None):
            raise InvalidInputError('give exactly one of "score" (a number in [0, 1]) or "label" ("good"/"bad")')
        score = body.score if body.score is not None else (1.0 if body.label == "good" else 0.0)
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise InvalidInputError(f"score must be a number in [0, 1], got {score}")
        event = await asyncio.to_thread(rv.feedback, body.request_id, score, comment=body.comment)
        metrics.observe_feedback(score)
        return JSONResponse({"ok": True, **_plain(event)})

    app.add_middleware(GuardMiddleware, api_key=config.server.api_key, max_body=int(config.server.max_request_bytes))
    return app


async def _load(state: ServerState) -> None:
    t0 = time.perf_counter()
    try:
        await asyncio.to_thread(state.load)
    except Exception as exc:  # reported by /health; the process stays up so the error can be read
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("startup failed: %s", state.load_error)
        return
    state.ready = True
    metrics.set_ready(True)
    log.info("ready in %.1f s", time.perf_counter() - t0)


async def _shutdown(state: ServerState) -> None:
    """After uvicorn has drained the connections: finish model work, then save and close."""
    state.draining = True
    state.ready = False
    metrics.set_ready(False)
    if state.load_task is not None and not state.load_task.done():
        with contextlib.suppress(Exception):
            await state.load_task  # a half-loaded RuvLLM is still closed properly below
    await asyncio.to_thread(state.executor.shutdown, True)  # work that outlived its request's timeout
    if state.rv is not None:
        await asyncio.to_thread(state.rv.close)
        log.info("closed: memory flushed and index saved")


async def _stream_chat(
    state: ServerState, rv: Any, question: str, kwargs: dict[str, Any], include_usage: bool, timeout_s: float
) -> Response:
    """SSE in the OpenAI chunk format. Decision and sources come before the first token, so an
    error in retrieval or routing is still a plain HTTP error; the headers carry the request id."""
    deadline = time.monotonic() + timeout_s
    await state._acquire(deadline)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is listening
            loop.call_soon_threadsafe(events.put_nowait, (kind, item))

    def produce() -> None:
        it: Iterator[Any] = rv.stream(question, **kwargs)
        try:
            for ev in it:
                if cancel.is_set():
                    break
                put("event", ev)
        except BaseException as exc:
            put("error", exc)
        finally:
            with contextlib.suppress(Exception):
                it.close()  # type: ignore[attr-defined]
            put("end", None)

    state._submit(produce)

    async def next_event() -> tuple[str, Any]:
        try:
            return await asyncio.wait_for(events.get(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            cancel.set()
            metrics.observe_rejection("timeout")
            raise RequestTimeoutError(f"the request took longer than {timeout_s:g} s") from None

    kind, first = await next_event()
    if kind == "error":
        cancel.set()
        raise first
    if kind == "end" or first.type != "start":
        raise RuvLLMError("the stream ended before it started")
    request_id = first.request_id
    model = first.decision.model if first.decision is not None else ROUTER_MODEL
    created = int(time.time())
    cid = f"chatcmpl-{request_id}"

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    async def body() -> AsyncIterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""}, None, ruvllm={
                "request_id": request_id, "decision": _plain(first.decision), "sources": _plain(first.sources)})
            while True:
                try:
                    kind, item = await next_event()
                except RequestTimeoutError as exc:
                    yield f"data: {json.dumps(error_body(504, str(exc), exc.code))}\n\n"
                    break
                if kind == "end":
                    break
                if kind == "error":
                    status = item.http_status if isinstance(item, RuvLLMError) else 500
                    code = item.code if isinstance(item, RuvLLMError) else "internal_error"
                    yield f"data: {json.dumps(error_body(status, str(item), code))}\n\n"
                    break
                if item.type == "token" and item.text:
                    yield chunk({"content": item.text}, None)
                elif item.type == "done" and item.response is not None:
                    resp = item.response
                    metrics.observe_response(resp)
                    yield chunk({}, "stop", ruvllm=_extension(resp))
                    if include_usage:
                        tail: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                                "model": model, "choices": [], "usage": _usage(resp)}
                        yield f"data: {json.dumps(tail)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # the client went away or we are done: stop generating

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={**_headers(request_id, model), "Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})


# --------------------------------------------------------------------------------------
# running it: `ruvllm serve` and `python -m ruvllm.server`
# --------------------------------------------------------------------------------------


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    options: ServerOptions | None = None,
    port_file: Path | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Run the server until SIGTERM/SIGINT; ``port=0`` picks a free port (written to ``port_file``)."""
    import uvicorn

    host = host or config.server.host
    port = config.server.port if port is None else port
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config, options=options)
    state: ServerState = app.state.ruvllm

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.draining = True  # /health turns 503 at once, new work is refused
            metrics.set_ready(False)
            super().handle_exit(sig, frame)

    uv_config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="on",
        timeout_graceful_shutdown=int(config.server.request_timeout_s) + 5, timeout_keep_alive=5,
    )
    server = _Server(uv_config)
    if port_file is not None:
        tmp = Path(str(port_file) + ".tmp")
        tmp.write_text(str(bound_port))
        tmp.replace(port_file)
    print(f"ruvllm serving on http://{host}:{bound_port} (health: /health, OpenAI base: /v1)", flush=True)
    # uvicorn re-raises the stop signal once it has shut down gracefully; exit 0 then, since nothing was lost
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    server.run(sockets=[sock])


def _exit_cleanly(sig: int, frame: Any) -> None:
    raise SystemExit(0)


def serve_command(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default: server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port; 0 picks a free one).")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RUVLLM_API_KEY", help="Require 'Authorization: Bearer <key>'.")
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="Requests that may wait for a model; more get 503 (default: server.max_queue).")
    ] = None,
    slots: Annotated[
        int | None, typer.Option(help="Model calls run at once (default: server.slots, 1 on a 2-core CPU).")
    ] = None,
    ingest_stdlib: Annotated[
        str | None, typer.Option(help="Comma-separated stdlib modules to ingest before serving.")
    ] = None,
    preload: Annotated[bool, typer.Option(help="Load every installed model before reporting ready.")] = True,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here once listening.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where memory and models live (default: user data dir or $RUVLLM_DATA_DIR).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML config file (see README).")] = None,
) -> None:
    """Serve the OpenAI-compatible HTTP API (chat, streaming, embeddings) plus /query, /feedback, /metrics."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if api_key is not None:
        overrides["server.api_key"] = api_key
    cfg = Config.load(config, **overrides)
    mods = [m.strip() for m in ingest_stdlib.split(",") if m.strip()] if ingest_stdlib else []
    opts = ServerOptions(slots=cfg.server.slots if slots is None else slots,
                         max_queue=cfg.server.max_queue if max_queue is None else max_queue,
                         preload=preload, ingest_stdlib=mods)
    serve(cfg, host=host, port=port, options=opts, port_file=port_file, log_level=log_level, access_log=access_log)


def main() -> None:
    import typer

    try:
        typer.run(serve_command)
    except RuvLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
