"""The OpenAI-compatible backend: a model served by vLLM, llama.cpp's server or llama-cpp-python's.

``OpenAIGenerator`` implements the ``Generator`` protocol over the ``openai`` client
(``/v1/completions`` and ``/v1/chat/completions``, streaming by SSE). The client's logic is
kept apart from its transport (as in httpx): pass ``http_client`` to swap the transport in a
test. Every failure becomes a ``ruvllm.errors`` error with a message a user can act on:

* server down → ``BackendError`` naming the URL and how many attempts were made;
* slow server → ``BackendError`` naming the timeout (``llm.timeout``) and the attempts;
* HTTP error  → ``BackendError`` with the status and the server's message
  (a context-length 400 → ``ContextOverflowError``).

Token counting asks the server when it can: llama-cpp-python's ``/extras/tokenize``,
llama.cpp's and vLLM's ``/tokenize``. A server with none of these gets an estimate of
``ceil(utf-8 bytes / 3)`` tokens — deliberately on the high side (English BPE averages about
4 bytes a token), so a context budget built on it does not overflow. ``tokenizer`` in
``extra`` of each ``Generation`` says which was used.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx  # the HTTP client the openai package is built on (an httpx fork)

from ruvllm.errors import BackendError, ContextOverflowError, RuvLLMError
from ruvllm.llm.base import ChatMessage, Generation, PromptStyle, SamplingParams

ESTIMATE_BYTES_PER_TOKEN = 3.0


class _AttemptCounter:
    """An httpx request hook that counts requests (first try + retries) on this thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def reset(self) -> None:
        self._local.n = 0

    @property
    def n(self) -> int:
        return int(getattr(self._local, "n", 0))

    def __call__(self, request: httpx.Request) -> None:
        self._local.n = self.n + 1


class OpenAIGenerator:
    """A model behind an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str = "",
        api_key: str = "",
        timeout: float = 60.0,
        max_retries: int = 2,
        n_ctx: int = 0,
        prompt_style: PromptStyle = "chat",
        http_client: httpx.Client | None = None,
    ):
        import openai

        if not base_url.startswith(("http://", "https://")):
            raise BackendError(
                f"llm.base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if timeout <= 0 or max_retries < 0:
            raise BackendError(f"llm.timeout must be > 0 and llm.max_retries >= 0, got {timeout}, {max_retries}")
        self.name = name
        self.model = model or name
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.prompt_style: PromptStyle = prompt_style
        self._attempts = _AttemptCounter()
        self._http = http_client or httpx.Client(timeout=self.timeout)
        self._http.event_hooks.setdefault("request", []).append(self._attempts)
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key or "sk-no-key-required", timeout=self.timeout,
            max_retries=self.max_retries, http_client=self._http,
        )
        self._root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self._tokenize_route: str | None = None  # discovered on first count_tokens
        self.n_ctx = n_ctx or 4096  # refined by probe() when the server reports it

    # ---- server metadata -----------------------------------------------------------
    def probe(self) -> list[str]:
        """The server's model ids (``/v1/models``); also learns the context size when reported."""
        page = self._call(lambda: self._client.models.list())
        ids = []
        for m in page.data:
            ids.append(m.id)
            extra = m.model_extra or {}
            meta = extra.get("meta") or {}
            n = extra.get("max_model_len") or meta.get("n_ctx") or meta.get("n_ctx_train")  # vLLM | llama.cpp
            if m.id == self.model and isinstance(n, int) and n > 0:
                self.n_ctx = n
        return ids

    def count_tokens(self, text: str) -> int:
        if self._tokenize_route is None:
            self._tokenize_route = self._discover_tokenize(text)
        if self._tokenize_route == "estimate":
            return estimate_tokens(text)
        n = self._tokenize(self._tokenize_route, text)
        return n if n is not None else estimate_tokens(text)

    @property
    def tokenizer(self) -> str:
        """'server:<route>' or 'estimate' (after the first ``count_tokens``); '' before."""
        r = self._tokenize_route
        return "" if r is None else ("estimate" if r == "estimate" else f"server:{r}")

    def _discover_tokenize(self, text: str) -> str:
        for route in ("/extras/tokenize", "/tokenize"):
            if self._tokenize(route, text) is not None:
                return route
        return "estimate"

    def _tokenize(self, route: str, text: str) -> int | None:
        # one body that each server reads its own field from: llama-cpp-python | llama.cpp | vLLM
        body = {"input": text, "content": text, "prompt": text, "model": self.model}
        try:
            r = self._http.post(self._root + route, json=body, timeout=self.timeout)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        try:
            data = r.json()
        except ValueError:
            return None
        if isinstance(data.get("count"), int):
            return int(data["count"])
        toks = data.get("tokens")
        return len(toks) if isinstance(toks, list) else None

    # ---- generation ------------------------------------------------------------------
    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        params.validate()
        t0 = time.perf_counter()
        out = self._call(lambda: self._client.completions.create(model=self.model, prompt=prompt, **_sampling(params)))
        total = (time.perf_counter() - t0) * 1000.0
        choice = out.choices[0]
        return self._generation(choice.text or "", out.usage, choice.finish_reason, total)

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Generation:
        params.validate()
        msgs: Any = [m.to_dict() for m in messages]
        t0 = time.perf_counter()
        out = self._call(lambda: self._client.chat.completions.create(model=self.model, messages=msgs,
                                                                      **_sampling(params)))
        total = (time.perf_counter() - t0) * 1000.0
        choice = out.choices[0]
        return self._generation(choice.message.content or "", out.usage, choice.finish_reason, total)

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        params.validate()
        stream = self._call(lambda: self._client.completions.create(model=self.model, prompt=prompt, stream=True,
                                                                    **_sampling(params)))
        for chunk in self._iter(stream):
            if chunk.choices and chunk.choices[0].text:
                yield chunk.choices[0].text

    def stream_chat(self, messages: list[ChatMessage], params: SamplingParams) -> Iterator[str]:
        params.validate()
        msgs: Any = [m.to_dict() for m in messages]
        stream = self._call(lambda: self._client.chat.completions.create(model=self.model, messages=msgs, stream=True,
                                                                         **_sampling(params)))
        for chunk in self._iter(stream):
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def close(self) -> None:
        self._client.close()
        self._http.close()

    # ---- internals -------------------------------------------------------------------
    def _generation(self, text: str, usage: Any, finish: str | None, total_ms: float) -> Generation:
        return Generation(
            text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0),
            finish or "stop", total_ms=total_ms, model=self.name,
        )

    def _call(self, fn: Any) -> Any:
        self._attempts.reset()
        try:
            return fn()
        except Exception as exc:  # mapped to one clear error; anything else re-raised as is
            raise self._map(exc) from None

    def _iter(self, stream: Any) -> Iterator[Any]:
        try:
            yield from stream
        except Exception as exc:
            raise self._map(exc) from None

    def _map(self, exc: Exception) -> Exception:
        import openai

        tries = max(self._attempts.n, 1)
        attempts = f"{tries} attempt{'s' if tries != 1 else ''} (llm.max_retries = {self.max_retries})"
        if isinstance(exc, RuvLLMError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(
                f"the server at {self.base_url} did not answer within {self.timeout:g}s after {attempts}; "
                "raise llm.timeout or check the server's load"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return BackendError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} after {attempts}: {cause}; "
                "is it running? check llm.base_url"
            )
        if isinstance(exc, openai.APIStatusError):
            msg = _server_message(exc)
            if exc.status_code == 400 and ("context" in msg.lower() or "too long" in msg.lower()):
                return ContextOverflowError(f"model {self.name} at {self.base_url}: {msg}; shorten the prompt")
            hint = {401: "check llm.api_key", 403: "check llm.api_key", 404: f"check llm.model ({self.model!r})"}.get(
                exc.status_code, "see the server's log")
            return BackendError(
                f"the server at {self.base_url} answered HTTP {exc.status_code} after {attempts}: {msg}; {hint}"
            )
        if isinstance(exc, openai.OpenAIError):
            return BackendError(f"the server at {self.base_url} failed: {exc}")
        return exc


def estimate_tokens(text: str) -> int:
    """A high-side token estimate for servers that cannot tokenize: ceil(utf-8 bytes / 3)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / ESTIMATE_BYTES_PER_TOKEN)) if text else 0


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return str(getattr(exc, "message", exc))[:500]


def _sampling(params: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
    }
    if params.stop:
        out["stop"] = list(params.stop)
    return out
