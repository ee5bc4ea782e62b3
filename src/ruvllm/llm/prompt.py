"""Build the prompt from ranked context within a token budget.

Base models (``completion`` style, e.g. Gemma 3 270M) get a plain
"Context: … Question: … Answer:" prompt; instruct models (``chat`` style) get a system
message and the same context in the user turn, formatted by the GGUF's chat template.
Context items are taken best first while they fit the budget; the ones that made it are
the answer's sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ruvllm.llm.base import ChatMessage, PromptStyle

SYSTEM_PROMPT = (
    "You answer questions about Python and its standard library. Use only the numbered context. "
    "Answer in one to three sentences. If the context does not contain the answer, say you don't know."
)
COMPLETION_HEADER = "Answer the question in one or two sentences using the context.\n\nContext:\n"
# A base model that starts a new question has stopped answering.
COMPLETION_STOP: tuple[str, ...] = ("\n\n", "\nQuestion:", "\nContext:")
# A small base model often answers by reciting a context line ("[1] (stdlib:json.dumps) Function
# json.dumps ... Serialize obj to a JSON formatted str.") and then the next one: keep the recited
# text, drop the line marker and whatever follows the next marker.
_MARKER = re.compile(r"^\s*\[\d+\]\s*(?:\([^)\n]*\)\s*)?")
TEMPLATE_OVERHEAD_TOKENS = 24  # chat-template special tokens and role markers


@dataclass
class ContextItem:
    node_id: str
    text: str
    score: float
    source: str = ""
    type: str = "Document"
    hop: int = 0


@dataclass
class BuiltPrompt:
    style: PromptStyle
    prompt: str = ""  # completion style
    messages: list[ChatMessage] = field(default_factory=list)  # chat style
    used: list[ContextItem] = field(default_factory=list)
    prompt_tokens: int = 0
    stop: tuple[str, ...] = ()


def _line(i: int, item: ContextItem, *, flat: bool = False) -> str:
    """One numbered context item. ``flat`` puts it on one line: a small base model answers by
    reciting a context line and stops at the next marker, so a docstring whose first line is a
    heading ("Function textwrap.indent (module textwrap).") gave the heading alone as the answer;
    on one line the recital carries the description too."""
    label = item.source or item.type
    text = " ".join(item.text.split()) if flat else item.text.strip()
    return f"[{i}] ({label}) {text}\n"


def build_prompt(
    question: str,
    contexts: Sequence[ContextItem],
    *,
    style: PromptStyle,
    context_budget: int,
    count_tokens: Callable[[str], int],
) -> BuiltPrompt:
    """Pack ``contexts`` (best first) into at most ``context_budget`` tokens of context."""
    used: list[ContextItem] = []
    lines: list[str] = []
    spent = 0
    for item in contexts:
        line = _line(len(lines) + 1, item, flat=style == "completion")
        cost = count_tokens(line)
        if spent + cost > context_budget:
            continue  # a later, shorter item may still fit
        lines.append(line)
        used.append(item)
        spent += cost
    context_block = "".join(lines) if lines else "(no context found)\n"
    if style == "completion":
        prompt = f"{COMPLETION_HEADER}{context_block}\nQuestion: {question.strip()}\nAnswer:"
        return BuiltPrompt(style, prompt=prompt, used=used, prompt_tokens=count_tokens(prompt),
                           stop=COMPLETION_STOP)
    user = f"Context:\n{context_block}\nQuestion: {question.strip()}"
    messages = [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", user)]
    tokens = count_tokens(SYSTEM_PROMPT) + count_tokens(user) + TEMPLATE_OVERHEAD_TOKENS
    return BuiltPrompt(style, messages=messages, used=used, prompt_tokens=tokens)


def clean_answer(text: str) -> str:
    """The answer without recited context markers (see ``_MARKER``)."""
    answer = _MARKER.sub("", text.strip())
    cut = answer.find("\n[")
    return (answer[:cut] if cut > 0 else answer).strip()
