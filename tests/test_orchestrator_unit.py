"""How the orchestrator reads a base model's stream (a scripted generator stands in for llama.cpp
here; the real model runs the same path in test_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ruvllm.llm.base import SamplingParams
from ruvllm.llm.prompt import COMPLETION_STOP, BuiltPrompt
from ruvllm.orchestrator import _until_blank_line


class Scripted:
    """Yields fixed pieces; records the stops it was given."""

    name = "scripted"

    def __init__(self, pieces: list[str]):
        self.pieces = pieces
        self.stops: tuple[str, ...] = ()
        self.pulled = 0

    def stream_complete(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        self.stops = params.stop
        for p in self.pieces:
            self.pulled += 1
            yield p


@pytest.mark.parametrize(
    ("pieces", "want"),
    [
        (["\n", "\n", "It serial", "izes.", "\n\n", "Question: more"], "\n\nIt serializes."),
        (["It serializes.\n", "\nNext"], "It serializes.\n"),
        (["One line.", "\nTwo lines."], "One line.\nTwo lines."),
        (["\n\n"], "\n\n"),
    ],
)
def test_answer_ends_at_the_first_blank_line_after_text(pieces: list[str], want: str) -> None:
    gen = Scripted(pieces)
    built = BuiltPrompt("completion", prompt="Q", stop=COMPLETION_STOP)
    got = "".join(_until_blank_line(gen, built, SamplingParams(max_tokens=8)))  # type: ignore[arg-type]
    assert got == want
    assert "\n\n" not in gen.stops  # llama.cpp never sees the blank-line stop


def test_generation_stops_being_pulled_after_the_cut() -> None:
    gen = Scripted(["Answer.", "\n\n", "babble"] + ["x"] * 100)
    built = BuiltPrompt("completion", prompt="Q", stop=COMPLETION_STOP)
    list(_until_blank_line(gen, built, SamplingParams(max_tokens=8)))  # type: ignore[arg-type]
    assert gen.pulled == 2
