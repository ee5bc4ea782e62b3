"""The ``Generator`` protocol every LLM backend implements, and its value types.

A backend owns one loaded model. The orchestrator asks it to count tokens (for the
context budget) and to generate from either a plain completion prompt (base models) or
chat messages (instruct models, formatted with the chat template inside the GGUF).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ruvllm.errors import InvalidInputError

PromptStyle = Literal["completion", "chat"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 160
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    def validate(self) -> SamplingParams:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        for name, value, lo, hi in (("temperature", self.temperature, 0.0, 2.0), ("top_p", self.top_p, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInputError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
            if not lo <= value <= hi:
                raise InvalidInputError(f"{name} must be in [{lo}, {hi}], got {value}")
        return self


@dataclass
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str

    def to_dict(self) -> dict[str, str]:
        """The OpenAI / llama.cpp chat format."""
        return {"role": self.role, "content": self.content}


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    ttft_ms: float = 0.0  # time to first token
    total_ms: float = 0.0
    model: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class ScoresChoices(Protocol):
    """A backend that can read its next-token distribution (llama.cpp in-process): a judge scores
    with probabilities instead of one sampled token (see ``judge_llm.LLMJudge.verdict``)."""

    def choice_probs(self, prompt: str | list[ChatMessage], choices: tuple[str, ...]) -> dict[str, float]: ...


@runtime_checkable
class Generator(Protocol):
    """One loaded model."""

    name: str
    n_ctx: int
    prompt_style: PromptStyle

    def count_tokens(self, text: str) -> int: ...

    def complete(self, prompt: str, params: SamplingParams) -> Generation: ...

    def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Generation: ...

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]: ...

    def stream_chat(self, messages: list[ChatMessage], params: SamplingParams) -> Iterator[str]: ...

    def close(self) -> None: ...
