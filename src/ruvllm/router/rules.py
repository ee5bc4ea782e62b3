"""The first router: a few transparent rules.

It is the baseline the FastGRNN router (``router/fastgrnn_router.py``) has to beat:
short factual questions that retrieval answers well go to the smallest model with a small
context; open questions ("how", "why", "explain", "compare", several clauses) or weak
retrieval go to the largest installed model with more context. Greedy decoding for
factual questions keeps answers reproducible.
"""

from __future__ import annotations

import re

from ruvllm.router.base import CONTEXT_BINS, Decision, RouteInput

OPEN_WORDS = re.compile(r"\b(how|why|explain|compare|difference|versus|vs\.?|design|example|steps?)\b", re.I)


class RuleRouter:
    def __init__(self, models: list[str], sizes: dict[str, float], max_context: int):
        """``models``: the installed candidates; ``sizes``: parameter counts, to order them."""
        if not models:
            raise ValueError("RuleRouter needs at least one model")
        self.models = sorted(models, key=lambda m: sizes.get(m, 0.0))
        self.max_context = max_context

    def route(self, inp: RouteInput) -> Decision:
        small, large = self.models[0], self.models[-1]
        words = len(inp.query.split())
        open_ended = bool(OPEN_WORDS.search(inp.query)) or words > 25 or inp.query.count(",") >= 2
        weak_retrieval = inp.n_hits == 0 or inp.top_score < 0.35
        if open_ended or weak_retrieval:
            model, ctx, temp, reason = large, 1024, 0.2, "open-ended or weakly grounded → largest model"
        else:
            model, ctx, temp, reason = small, 512, 0.0, "short factual with strong retrieval → smallest model"
        if len(self.models) == 1:
            reason = "only one model configured"
        ctx = max(b for b in CONTEXT_BINS if b <= max(self.max_context, CONTEXT_BINS[0]) and b <= ctx)
        # Rules carry no learned uncertainty: confidence is how clear-cut the rule's inputs were.
        margin = abs(inp.top_score - 0.35) if inp.n_hits else 0.5
        confidence = 1.0 if len(self.models) == 1 else round(min(1.0, 0.5 + margin), 3)
        return Decision(
            model=model, context_tokens=ctx, temperature=temp, top_p=0.9 if temp > 0 else 1.0,
            confidence=confidence, reason=reason,
        )
