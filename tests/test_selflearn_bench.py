"""The self-learning bench's pure parts: the stream's recurrence structure, windowing and the
write-back / recall arithmetic. No model, no encoder (well under a second)."""

from __future__ import annotations

import statistics

import pytest
from bench.selflearn import (
    Fact,
    build_stream,
    make_facts,
    paired,
    phase_summary,
    recall_rates,
    repeat_stability,
    windowed,
    writeback_rate,
)

from ruvllm.memory.writeback import named_symbols


def _facts(n: int) -> list[Fact]:
    return [Fact(f"m.f{i}", "m", (f"What does m.f{i} do?", f"What is m.f{i} used for?", f"Tell me what m.f{i} does."),
                 f"gold {i}", f"context {i}") for i in range(n)]


def test_stream_recurs_and_paraphrases_in_order() -> None:
    facts = _facts(12)
    stream = build_stream(facts, seed=3, repeat_paraphrase=0.5)
    assert [it.position for it in stream] == list(range(len(stream)))
    by_fact: dict[str, list] = {}
    for it in stream:
        by_fact.setdefault(it.fact, []).append(it)
    assert set(by_fact) == {f.id for f in facts}
    n_para_repeats = 0
    for f in facts:
        occ = by_fact[f.id]
        kinds = [it.kind for it in occ]
        assert kinds[:4] == ["first", "paraphrase", "paraphrase", "repeat"], kinds
        assert len(occ) in (4, 5)
        assert occ[0].question == f.questions[0] and occ[0].variant == 0
        assert {occ[1].variant, occ[2].variant} == {1, 2}  # both paraphrases, each once
        assert occ[1].question != occ[0].question and occ[2].question != occ[0].question
        assert occ[3].question == occ[0].question  # an exact repeat of the original
        if len(occ) == 5:  # an exact repeat of a paraphrase asked earlier
            n_para_repeats += 1
            assert occ[4].kind == "repeat" and occ[4].variant in (1, 2)
            assert occ[4].question in (occ[1].question, occ[2].question)
        assert all(it.gold == f.gold for it in occ)
        assert [it.position for it in occ] == sorted(it.position for it in occ)  # later in time
    assert 0 < n_para_repeats < len(facts)
    # interleaved: some fact is introduced after another fact has already recurred
    first_pos = {f: occ[0].position for f, occ in by_fact.items()}
    recur_pos = min(occ[1].position for occ in by_fact.values())
    assert max(first_pos.values()) > recur_pos
    # seeded: same seed, same stream; another seed, another order
    assert build_stream(facts, seed=3) == stream
    assert [it.question for it in build_stream(facts, seed=4)] != [it.question for it in stream]


def test_make_facts_uses_three_phrasings_of_one_symbol() -> None:
    facts = make_facts(["json", "textwrap"], 5, seed=0)
    assert len(facts) == 5 and len({f.id for f in facts}) == 5
    for f in facts:
        assert len(f.questions) == 3 and len(set(f.questions)) == 3
        assert all(named_symbols(q) == frozenset({f.id}) for q in f.questions)  # recall needs the same symbol
        assert len(f.gold.split()) >= 4
        assert " ".join(f.context.split()).startswith(" ".join(f.gold.split())[:30])  # gold opens the context
    assert make_facts(["json", "textwrap"], 5, seed=0) == facts


def test_windowed_bins_and_skips_missing() -> None:
    pos = list(range(10))
    vals: list[float | None] = [1.0, 3.0, None, 5.0, 7.0, None, None, None, 2.0, 4.0]
    w = windowed(pos, vals, 4)
    # the None values of window 1 are skipped; the last window (8-11) is centred on its nominal span
    assert w == [(1.5, 3.0, 3), (5.5, 7.0, 1), (9.5, 3.0, 2)]
    assert windowed(pos, [float(p) for p in pos], 5, agg=statistics.median) == [(2.0, 2.0, 5), (7.0, 7.0, 5)]
    assert windowed([0, 1], [None, None], 2) == []
    with pytest.raises(ValueError):
        windowed(pos, vals, 0)


def test_writeback_rate_counts_stored_over_answered() -> None:
    actions = ["inserted", "recalled", "skipped", "merged", "recalled", "skipped", "skipped", "inserted", None,
               "recalled"]
    r = writeback_rate(actions)
    assert r["stored"] == 3 and r["answered"] == 10 and r["generated"] == 7
    assert r["rate"] == pytest.approx(0.3) and r["rate_of_generated"] == pytest.approx(3 / 7)
    assert r["counts"] == {"inserted": 2, "recalled": 3, "skipped": 3, "merged": 1, "none": 1}
    assert writeback_rate([])["rate"] == 0.0


def test_recall_rates_and_phases() -> None:
    recs = [
        {"kind": "first", "recalled": False, "position": 0, "f1": 0.5, "wall_ms": 1000.0},
        {"kind": "paraphrase", "recalled": True, "wrong_recall": True, "position": 1, "f1": 0.0, "wall_ms": 10.0},
        {"kind": "paraphrase", "recalled": False, "position": 2, "f1": 1.0, "wall_ms": 3000.0, "judge": 4.0},
        {"kind": "repeat", "recalled": True, "wrong_recall": False, "position": 3, "f1": 0.5, "wall_ms": 20.0},
    ]
    r = recall_rates(recs)
    assert r["first"] == {"n": 1, "recalled": 0, "rate": 0.0, "wrong": 0}
    assert r["paraphrase"] == {"n": 2, "recalled": 1, "rate": 0.5, "wrong": 1}
    assert r["repeat"]["rate"] == 1.0 and r["repeat"]["wrong"] == 0
    ph = phase_summary(recs, 4)
    assert ph["early"]["n"] == 1 and ph["late"]["n"] == 1 and ph["all"]["n"] == 4
    assert ph["all"]["f1_mean"] == pytest.approx(0.5) and ph["all"]["generated"] == 2
    assert ph["all"]["latency_ms_median"] == pytest.approx(510.0)  # (20 + 1000) / 2
    assert ph["all"]["judge_mean"] == 4.0 and ph["all"]["judged"] == 1
    assert ph["early"]["judge_mean"] is None


def test_paired_and_repeat_stability() -> None:
    def rec(arm: str, pos: int, q: str, ans: str, f1: float, recalled: bool = False) -> dict:
        return {"arm": arm, "position": pos, "question": q, "answer": ans, "f1": f1, "recalled": recalled}

    recs = [rec("on", 0, "a?", "x", 0.5), rec("off", 0, "a?", "x", 0.5),
            rec("on", 1, "a?", "x", 0.5, recalled=True), rec("off", 1, "a?", "y  z", 0.8),
            rec("on", 2, "b?", "w", 0.9), rec("off", 2, "b?", "v", 0.1),
            rec("off", 3, "a?", "x", 0.5)]
    pr = paired(recs)
    assert pr["on_recalled"] == {"n": 1, "f1_on": 0.5, "f1_off": 0.8, "on_better": 0, "off_better": 1,
                                 "same_answer": 0}
    assert pr["both_generated"]["n"] == 2 and pr["both_generated"]["on_better"] == 1
    assert pr["both_generated"]["same_answer"] == 1
    assert repeat_stability(recs, "off") == {"same": 1, "different": 1}  # "y  z" at 1 differs, "x" at 3 same
    assert repeat_stability(recs, "on") == {"same": 1, "different": 0}
