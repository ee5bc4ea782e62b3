"""Curriculum: train from simple factual queries towards multi-step ones.

Two parts:

- ``difficulty(text)`` in [0, 1]: a cheap, deterministic score of how many steps a query asks
  for. Short "what is / what does" lookups are easy; comparisons, explanations ("why", "how"),
  code requests and questions chaining several clauses are hard. An experience may carry its
  own difficulty (e.g. the number of graph hops its answer needed) and then that wins.
- ``competence(t)``: the competence-based schedule of Platanios et al. (2019),
  c(t) = min(1, sqrt(t·(1 − c0²)/T + c0²)). At step t the learner trains on items whose
  difficulty is ≤ c(t) (difficulty is already on a [0, 1] scale, so a stream needs no
  percentiles); after T steps everything is in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_LOOKUP = re.compile(r"^\s*(what\s+(is|are|does|do)|which|who|when|where|define|signature)\b", re.I)
_MULTI = re.compile(
    r"\b(compare|comparison|difference|differ|versus|vs\.?|why|explain|how\s+(do|can|would|should)|"
    r"step[- ]by[- ]step|then|after\s+that|write|implement|example|code|combine|both)\b", re.I)
_CLAUSE = re.compile(r"\b(and|or|but|then|while|if|because)\b|[,;]", re.I)


def difficulty(text: str) -> float:
    """Heuristic difficulty of a query in [0, 1]: 0 = one-fact lookup, 1 = multi-step."""
    t = text.strip()
    if not t:
        return 0.0
    words = len(t.split())
    score = min(words / 40.0, 1.0) * 0.3  # length
    score += min(len(_MULTI.findall(t)), 3) / 3.0 * 0.4  # multi-step markers
    score += min(len(_CLAUSE.findall(t)), 4) / 4.0 * 0.2  # clauses
    score += 0.1 * min(t.count("?"), 3) / 3.0 if t.count("?") > 1 else 0.0  # several questions
    if _LOOKUP.match(t) and not _MULTI.search(t):
        score *= 0.5  # a plain lookup
    return float(min(max(score, 0.0), 1.0))


def competence(step: int, total: int, c0: float = 0.2) -> float:
    """Share of the difficulty-sorted data available at ``step`` (square-root pacing)."""
    if total <= 0:
        return 1.0
    return float(min(1.0, math.sqrt(max(step, 0) * (1.0 - c0 * c0) / total + c0 * c0)))


@dataclass
class Curriculum:
    """Orders and paces items by difficulty. ``key`` maps an item to its difficulty."""

    key: Callable[[Any], float]
    warmup_steps: int = 2000  # T of the competence schedule; 0 = no pacing (ordering only)
    c0: float = 0.2

    def order(self, items: Sequence[T]) -> list[T]:
        """Easy → hard (stable, so equal difficulties keep their arrival order)."""
        return sorted(items, key=self.key)

    def admissible(self, items: Sequence[T], step: int) -> list[T]:
        """Items with difficulty ≤ ``competence(step)`` (at least the easiest one), easy → hard."""
        ordered = self.order(items)
        if self.warmup_steps <= 0 or not ordered:
            return ordered
        c = competence(step, self.warmup_steps, self.c0)
        return [it for i, it in enumerate(ordered) if i == 0 or self.key(it) <= c]
