import pytest

from ruvllm.llm.prompt import ContextItem, build_prompt, clean_answer


def words(text: str) -> int:
    return len(text.split())


def items() -> list[ContextItem]:
    return [
        ContextItem("a", "alpha " * 50, 0.9, "s:a"),
        ContextItem("b", "beta " * 200, 0.8, "s:b"),
        ContextItem("c", "gamma " * 10, 0.7, "s:c"),
    ]


def test_budget_is_respected_best_first_and_skips_what_does_not_fit() -> None:
    built = build_prompt("q?", items(), style="completion", context_budget=100, count_tokens=words)
    assert [c.node_id for c in built.used] == ["a", "c"]
    assert built.prompt.endswith("Question: q?\nAnswer:")
    assert "[1] (s:a)" in built.prompt and "[2] (s:c)" in built.prompt and "beta" not in built.prompt


def test_chat_style_puts_context_in_the_user_turn() -> None:
    built = build_prompt("q?", items(), style="chat", context_budget=1000, count_tokens=words)
    assert [m.role for m in built.messages] == ["system", "user"]
    assert "beta" in built.messages[1].content and len(built.used) == 3


def test_no_context() -> None:
    built = build_prompt("q?", [], style="completion", context_budget=100, count_tokens=words)
    assert "(no context found)" in built.prompt and built.used == []


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (" It serializes obj.", "It serializes obj."),
        ("\n[1] (stdlib:json.dumps) Function json.dumps.\nSerialize obj.\n[2] (x) other",
         "Function json.dumps.\nSerialize obj."),
        ("[3] Serialize obj.", "Serialize obj."),
        ("Use a list [1, 2].", "Use a list [1, 2]."),
        ("", ""),
    ],
)
def test_clean_answer_drops_recited_markers(raw: str, want: str) -> None:
    assert clean_answer(raw) == want


def test_completion_style_puts_each_context_item_on_one_line() -> None:
    """A base model recites a context line and stops at the next marker: with the docstring's
    heading on a line of its own it answered with the heading alone."""
    doc = ContextItem("d", "Function textwrap.indent (module textwrap).\nAdd 'prefix' to lines.\n\nMore.", 0.9,
                      "stdlib:textwrap.indent")
    built = build_prompt("q?", [doc], style="completion", context_budget=100, count_tokens=words)
    assert ("[1] (stdlib:textwrap.indent) Function textwrap.indent (module textwrap). Add 'prefix' to lines. More.\n"
            in built.prompt)
    chat = build_prompt("q?", [doc], style="chat", context_budget=100, count_tokens=words)
    assert "(module textwrap).\nAdd 'prefix'" in chat.messages[1].content  # instruct models keep the layout
