"""bench/router.py's label-ceiling helpers: the pattern lookup and paraphrase agreement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from bench.router import paraphrase_agreement, pattern_lookup


def rec(id_: str, qtype: str, best: int, utility: list[list[float]], split: str = "train") -> SimpleNamespace:
    return SimpleNamespace(id=id_, query_type=qtype, best_model=best, utility=utility, split=split)


def test_pattern_lookup_takes_the_best_mean_utility_of_the_training_paraphrases() -> None:
    train = [
        rec("json.dumps:code:0", "code", 1, [[0.1, 0.0], [0.9, 0.2], [0.6, 0.1]]),
        rec("json.dumps:code:1", "code", 2, [[0.1, 0.0], [0.5, 0.2], [0.6, 0.7]]),
        rec("json.loads:howto:0", "howto", 0, [[0.9, 0.0], [0.1, 0.2], [0.3, 0.1]]),
    ]
    seen = [rec("json.dumps:code:2", "code", 0, [[1, 0], [0, 0], [0, 0]], "test_seen"),
            rec("json.loads:howto:1", "howto", 0, [[1, 0], [0, 0], [0, 0]], "test_seen"),
            rec("json.loads:code:0", "code", 0, [[1, 0], [0, 0], [0, 0]], "test_seen")]
    m, c, ok = pattern_lookup(train, seen)
    # json.dumps/code: the mean table's best is (model 1, ctx 0) = 0.7, ahead of (2, 0) = 0.6 and (2, 1) = 0.4,
    # though the two training labels (1 and 2) tie
    assert (m[0], c[0]) == (1, 0)
    assert (m[1], c[1]) == (0, 0)
    assert ok.tolist() == [True, True, False]  # json.loads/code has no training paraphrase


def test_paraphrase_agreement_counts_pairs_within_a_pattern() -> None:
    recs = [rec("a.f:code:0", "code", 1, []), rec("a.f:code:1", "code", 1, []), rec("a.f:code:2", "code", 2, []),
            rec("a.g:code:0", "code", 0, [])]
    got = paraphrase_agreement(recs)
    assert got["pairs"] == 3  # a.f has three questions, a.g one
    assert np.isclose(got["same_model"], 1 / 3)
    assert np.isnan(paraphrase_agreement(recs[3:])["same_model"])
