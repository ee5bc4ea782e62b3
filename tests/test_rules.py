from ruvllm.router.base import CONTEXT_BINS, RouteInput
from ruvllm.router.rules import RuleRouter


def inp(q: str, top: float = 0.8, n: int = 8) -> RouteInput:
    return RouteInput(query=q, n_query_tokens=len(q.split()), top_score=top, n_hits=n)


def test_short_factual_goes_small_open_goes_large() -> None:
    r = RuleRouter(["big", "small"], {"big": 1500, "small": 270}, max_context=2048)
    d = r.route(inp("What does json.dumps return?"))
    assert d.model == "small" and d.temperature == 0.0 and d.context_tokens in CONTEXT_BINS
    d = r.route(inp("Explain how asyncio schedules coroutines"))
    assert d.model == "big"
    d = r.route(inp("What is zlib?", top=0.1))
    assert d.model == "big", "weak retrieval escalates"


def test_context_capped_by_window_and_single_model() -> None:
    r = RuleRouter(["only"], {"only": 1}, max_context=300)
    d = r.route(inp("Explain how x works"))
    assert d.model == "only" and d.context_tokens == 256 and d.confidence == 1.0
