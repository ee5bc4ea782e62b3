"""Answer quality: reference metrics and a reference-free grounding score.

- ``exact_match`` and ``token_f1``: SQuAD-style, when a gold answer exists.
- ``grounding``: the share of the answer's content words that appear in the context the
  model was given; a cheap check that an answer is drawn from its sources and not invented.
  It is the write-back gate until the LLM-as-judge (issue 6) replaces it.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|\d+")
STOPWORDS = frozenset(
    """
    a an the is are was were be been being of to in on for and or not it its this that these those with
    as by at from if then else when which who what how why do does did can could should would will may
    might you your we our they their he she his her i me my so than such there here into out up down
    over also any all some no yes only just
    """.split()
)
REFUSALS = ("i don't know", "i do not know", "cannot answer", "no information", "not mentioned")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def content_words(text: str) -> list[str]:
    return [w.strip(".").lower() for w in _WORD.findall(text) if w.strip(".").lower() not in STOPWORDS]


def grounding(answer: str, contexts: list[str]) -> float:
    """Share of the answer's content words found in the contexts, in [0, 1]."""
    words = content_words(answer)
    if not words:
        return 0.0
    if any(r in answer.lower() for r in REFUSALS):
        return 0.0
    vocab = set(content_words(" ".join(contexts)))
    return sum(w in vocab for w in words) / len(words)
