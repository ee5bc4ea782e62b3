"""Per-type answer quality for the oracle labels (``router.quality``): code answers executed under
limits, how-to answers checked for the gold function, F1 otherwise; and relabelling stored answers
(``oracle.requality``, ``pipeline.relabel_file``, ``ruvllm router relabel``) without the models."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ruvllm.errors import InvalidInputError
from ruvllm.judge import token_f1
from ruvllm.router.cli import router_app
from ruvllm.router.oracle import LabelledRecord, load_labelled, relabel, requality, save_labelled
from ruvllm.router.pipeline import label_distribution, relabel_file
from ruvllm.router.quality import (
    ExecLimits,
    answer_quality,
    code_quality,
    extract_code,
    gold_parameters,
    howto_quality,
    run_python,
    signature_quality,
    symbol_of,
    symbol_use,
)

FAST = ExecLimits(timeout_s=1.5, cpu_s=2)
SYM = "base64.b32encode"
GOOD = ("Here is a snippet:\n```python\nimport base64\nencoded = base64.b32encode(b'Hello')\nprint(encoded)\n```\n"
        "This prints the base32 bytes.")
# gemma3-270m's real answer to "Show a code snippet calling base64.b32encode." (token F1 0.62 vs the gold)
RECITAL = ("\n[1] (base64.b32hexencode) base64.b32hexencode(s) (module base64). Encode the bytes-like objects "
           "using base32hex and return a bytes object.\n[2] (base64.b32encode)")


def fence(code: str) -> str:
    return f"Sure:\n```python\n{code}\n```\n"


# -------------------------------------------------------------------------------- code


def test_correct_snippet_scores_one() -> None:
    assert code_quality(GOOD, SYM, FAST) == 1.0


def test_snippet_that_raises_scores_half() -> None:
    # calls the symbol with a str, which b32encode rejects (TypeError)
    assert code_quality(fence("import base64\nbase64.b32encode('text')"), SYM, FAST) == 0.5


def test_snippet_that_never_calls_the_symbol_scores_zero_or_a_quarter() -> None:
    assert code_quality(fence("import base64\nprint(base64.b64encode(b'x'))"), SYM, FAST) == 0.0
    # imports it but never calls it: a mention
    assert code_quality(fence("from base64 import b32encode\nprint('hi')"), SYM, FAST) == 0.25
    assert code_quality(fence("import base64\nf = base64.b32encode\nprint(f)"), SYM, FAST) == 0.25


def test_recital_of_the_docs_and_prose_score_zero() -> None:
    assert token_f1(RECITAL, "base64.b32encode(s): Encode the bytes-like objects using base32 and return a "
                             "bytes object.") > 0.5  # what the old measure rewarded
    assert code_quality(RECITAL, SYM, FAST) == 0.0
    assert code_quality("Use base64.b32encode to encode bytes.", SYM, FAST) == 0.0
    assert code_quality("", SYM, FAST) == 0.0


def test_infinite_loop_is_killed_by_the_timeout() -> None:
    t0 = time.perf_counter()
    res = run_python("import base64\nwhile True:\n    base64.b32encode(b'x')\n", FAST)
    assert res.timed_out and not res.ok and time.perf_counter() - t0 < 5
    assert code_quality(fence("import base64\nwhile True:\n    base64.b32encode(b'y')"), SYM, FAST) == 0.5


def test_import_aliases_resolve() -> None:
    assert symbol_use("from base64 import b32encode as enc\nenc(b'x')", SYM) == (True, True)
    assert symbol_use("import base64 as b\nb.b32encode(b'x')", SYM) == (True, True)
    assert symbol_use("import os.path\nos.path.join('a', 'b')", "os.path.join") == (True, True)
    assert symbol_use("from os import path\npath.join('a')", "os.path.join") == (True, True)
    assert symbol_use("import base64\nbase64.b32decode(b'x')", SYM) == (False, False)
    # an exception class is used by catching or raising it
    assert symbol_use("import json\ntry:\n    json.loads('{')\nexcept json.JSONDecodeError:\n    pass",
                      "json.JSONDecodeError") == (True, True)
    assert code_quality(fence("from base64 import b32encode as enc\nprint(enc(b'x'))"), SYM, FAST) == 1.0


def test_code_cut_off_by_the_token_limit_runs_its_parsing_prefix() -> None:
    cut = "Example:\n```python\nimport base64\nprint(base64.b32encode(b'ab'))\nx = base64.b32encode(b'"
    assert extract_code(cut) == "import base64\nprint(base64.b32encode(b'ab'))"
    assert code_quality(cut, SYM, FAST) == 1.0
    # an open block is closed with `pass`; the call inside it counts
    cut2 = fence("import json\ntry:\n    json.loads('{}')\nexcept json.JSONDecodeError as e:\n    print(f\"")[:-5]
    assert code_quality(cut2, "json.JSONDecodeError", FAST) == 1.0
    # cut before the call: it never makes it
    assert code_quality("```python\nimport base64\ndata = b'x'\nenc = base64.b32enc", SYM, FAST) == 0.0


def test_unfenced_answer_counts_only_if_it_is_code() -> None:
    assert extract_code("import base64\nbase64.b32encode(b'x')") is not None
    assert extract_code(">>> import base64\n>>> base64.b32encode(b'x')\nb'PA======'") is not None
    assert extract_code("Sure") is None  # a bare name parses, but is prose
    assert extract_code("```bash\npip install foo\n```") is None


def test_sandbox_refuses_writes_outside_its_directory_processes_and_sockets(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    res = run_python(f"open({str(target)!r}, 'w').write('x')", FAST)
    assert not res.ok and "refused" in res.stderr_tail and not target.exists()
    for code in ("import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                 "import os\nos.fork()", f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 "import socket\nsocket.create_connection(('127.0.0.1', 9))"):
        res = run_python(code, FAST)
        assert not res.ok and "refused by the labelling sandbox" in res.stderr_tail, code
    assert tmp_path.exists()
    # inside its own directory it may write and read; the directory is fresh and removed afterwards
    res = run_python("import os\nassert os.listdir('.') == ['snippet.py'] or sorted(os.listdir('.')) == "
                     "['snippet.py', 'stderr', 'stdout']\nopen('a.txt', 'w').write('x')\n"
                     "print(open('a.txt').read(), os.getcwd())", FAST)
    assert res.ok, res.stderr_tail


def test_sandbox_limits_memory_and_closes_stdin() -> None:
    res = run_python("x = bytearray(2_000_000_000)", FAST)
    assert not res.ok and "MemoryError" in res.stderr_tail
    res = run_python("open('big', 'wb').write(b'x' * 2_000_000)", FAST)  # RLIMIT_FSIZE 1 MB
    assert not res.ok
    assert run_python("import resource as r\nassert r.getrlimit(r.RLIMIT_AS) == (512 << 20, 512 << 20)\n"
                      "assert r.getrlimit(r.RLIMIT_CPU)[0] == 2 and r.getrlimit(r.RLIMIT_NPROC) == (0, 0)", FAST).ok
    res = run_python("input()", FAST)
    assert not res.ok and "EOFError" in res.stderr_tail
    assert run_python("import sys\nassert sys.flags.isolated\nassert __name__ == '__main__'", FAST).ok


# -------------------------------------------------------------------------------- how-to


def test_howto_names_the_gold_function() -> None:
    gold = "base64.b32hexencode"
    assert howto_quality("You should use the `base64.b32hexencode` function.", gold) == 1.0
    assert howto_quality("Use BASE64.B32HEXENCODE.", gold) == 1.0  # case-blind
    assert howto_quality("Call `b32hexencode` on the bytes.", gold) == 1.0  # short name in code form
    assert howto_quality("from base64 import b32hexencode", gold) == 1.0
    # a sibling only: a wrong function is a wrong answer
    assert howto_quality("You should use the `base64.b32encode` function.", gold) == 0.0
    # a hedge / a recital of several candidates: 1/k
    assert howto_quality("Use base64.b32hexencode or base64.b32encode.", gold) == 0.5
    recital = ("[1] (base64.b32hexencode) base64.b32hexencode(s) (module base64). Encode …\n"
               "[2] (base64.b32encode) base64.b32encode(s) …\n[3] (binascii.hexlify) hashlib.new(name)")
    assert howto_quality(recital, gold) == pytest.approx(1 / 3)
    assert howto_quality("The function you should use is [1].", gold) == 0.0
    # module names and file names are not candidate functions
    assert howto_quality("Use base64.b32hexencode from base64 (see os.path and data.txt).", gold) == 1.0


# The real models' answers below are from bench/results/router-real3 (2026-12-02); the judge's verdict
# on each is in the comment: it ranked the wrong answers above the right ones.
B32DEC = "b32decode(s, casefold=False, map01=None)"


def test_gold_parameters_reads_the_inspect_signature() -> None:
    assert gold_parameters(B32DEC) == ["s", "casefold", "map01"]
    assert gold_parameters("blake2s(data=b'', /, *, digest_size=32, key=b'', **kw)") == \
        ["data", "digest_size", "key", "kw"]
    assert gold_parameters("Dialect()") == []
    assert gold_parameters("defaultdict(...)") is None  # a builtin without an inspectable signature
    assert gold_parameters("crc32(data, value=0, /) -> int") == ["data", "value"]


@pytest.mark.parametrize(("answer", "gold", "symbol", "want"), [
    # a written signature: its names against the gold's
    ("The signature of `itertools.dropwhile` is `dropwhile(predicate, iterable, /)`.",
     "dropwhile(predicate, iterable, /)", "itertools.dropwhile", 1.0),
    ("base64.b16encode(s, casefold=False) (module base64).", "b16encode(s)", "base64.b16encode", 2 / 3),
    ("The signature of csv.excel_tab is `csv.excel_tab()`.", "excel_tab()", "csv.excel_tab", 1.0),
    # judge 0.52 and 0.39: right
    ("The csv.Dialect class takes no arguments.", "Dialect()", "csv.Dialect", 1.0),
    ("The csv.Sniffer class accepts no parameters.", "Sniffer()", "csv.Sniffer", 1.0),
    # judge 0.79 and 0.82: wrong
    ("The `csv.Dialect` constructor takes two arguments: `delimiter` and `quotechar`.", "Dialect()", "csv.Dialect",
     0.0),
    ("The csv.Sniffer class accepts a single parameter, which is the file object to be sniffed.", "Sniffer()",
     "csv.Sniffer", 0.0),
    # prose: named parameters, listed ones that are not parameters cost precision
    ("base64.b32decode takes three arguments: s, casefold, and map01.", B32DEC, "base64.b32decode", 1.0),
    ("shutil.chown takes two arguments: `path` and `user`.", "chown(path, user=None, group=None)", "shutil.chown",
     0.8),
    ("The parameters that `csv.get_dialect` accepts are `name` and `module`.", "get_dialect(name)",
     "csv.get_dialect", 2 / 3),
    ("The `uuid.uuid1` function accepts two parameters: `namespace` and `name`.",
     "uuid1(node=None, clock_seq=None)", "uuid.uuid1", 0.0),
    # one-letter names count where they cannot be the article
    ("operator.countOf takes two arguments: a and b.", "countOf(a, b, /)", "operator.countOf", 1.0),
    ("operator.countOf takes a sequence and a value.", "countOf(a, b, /)", "operator.countOf", 0.0),
    # a wrong count on top of right names halves; the right count alone earns 0.25
    ("base64.b16encode takes two arguments: a bytes-like object or ASCII string s.", "b16encode(s)",
     "base64.b16encode", 0.5),
    ("base64.b16encode accepts a single parameter, which is the bytes-like object to be encoded.", "b16encode(s)",
     "base64.b16encode", 0.25),
    # an example call with values is not a signature; the prose after it decides
    ("Call it as `fnmatch.filter(['a.py'], '*.py')`; it takes two arguments: names and pat.",
     "filter(names, pat)", "fnmatch.filter", 1.0),
    ("The signature is `__init__(max_size=0, mode='w+b')`.", "TemporaryFile(mode='w+b')", "tempfile.TemporaryFile",
     2 / 3),
])
def test_signature_quality_scores_the_parameter_names(answer: str, gold: str, symbol: str, want: float) -> None:
    assert signature_quality(answer, gold, symbol) == pytest.approx(want)


def test_signature_questions_without_a_signature_fall_back() -> None:
    """A gold without a signature (``(...)``) has no exact check: the verdict, else F1, scores it."""
    assert signature_quality("It takes a default factory.", "defaultdict(...)", "collections.defaultdict") is None
    assert answer_quality("signature", "It takes a default factory.", "defaultdict(...)", "collections.defaultdict",
                          verdict=lambda q, a, g: 0.7) == 0.7
    # with a signature the verdict is not asked
    assert answer_quality("signature", "operator.add takes two arguments, a and b.", "add(a, b, /)", "operator.add",
                          verdict=lambda q, a, g: 0.1) == 1.0


def test_answer_quality_dispatches_by_type() -> None:
    gold = "Encode the bytes-like object s using Base16 and return a bytes object."
    ans = "It encodes a bytes-like object using Base16."
    assert answer_quality("definition", ans, gold, "base64.b16encode") == token_f1(ans, gold)
    assert answer_quality("explain", ans, gold, "base64.b16encode") == token_f1(ans, gold)
    assert answer_quality("howto", "Use `base64.b16encode`.", "Use base64.b16encode: …", "base64.b16encode") == 1.0
    assert answer_quality("code", RECITAL, "…", SYM, FAST) == 0.0
    assert symbol_of("os.path.join:code:1") == "os.path.join"
    with pytest.raises(InvalidInputError):
        symbol_of("no-colons")


def test_a_judges_verdict_replaces_f1_where_there_is_no_check_of_its_own() -> None:
    """The verdict (question, answer, gold) scores definition/explain/...; code and how-to keep their
    checks; an unusable verdict (None) falls back to F1; an empty answer is not sent to the judge."""
    gold = "Encode the bytes-like object s using Base16 and return a bytes object."
    asked: list[tuple[str, str, str]] = []

    def verdict(question: str, answer: str, ref: str) -> float | None:
        asked.append((question, answer, ref))
        return None if "unsure" in answer else 0.9

    q = "What does base64.b16encode do?"
    assert answer_quality("definition", "It encodes to hex.", gold, "base64.b16encode", question=q,
                          verdict=verdict) == 0.9
    assert asked == [(q, "It encodes to hex.", gold)]
    assert answer_quality("explain", "unsure bytes", gold, "base64.b16encode", verdict=verdict) == \
        token_f1("unsure bytes", gold)
    assert answer_quality("code", RECITAL, "…", SYM, FAST, verdict=verdict) == 0.0
    assert answer_quality("howto", "Use `base64.b16encode`.", "…", "base64.b16encode", verdict=verdict) == 1.0
    assert answer_quality("definition", "  ", gold, "base64.b16encode", verdict=verdict) == 0.0
    assert len(asked) == 2


# -------------------------------------------------------------------------------- relabelling


def _record(rid: str, qtype: str, answers: list[list[str]], split: str = "train") -> LabelledRecord:
    lat = [[1000.0, 1200.0], [3000.0, 3500.0]]
    cost = [[0.05, 0.1], [0.2, 0.4]]
    q0 = [[token_f1(a, "base64.b32encode(s): Encode the bytes-like objects using base32") for a in row]
          for row in answers]
    rec = LabelledRecord(id=rid, session="s", split=split, query="Show a code snippet calling base64.b32encode.",
                         query_type=qtype, gold="base64.b32encode(s): Encode the bytes-like objects using base32",
                         models=["base", "coder"], context_bins=[256, 1024], quality=q0, latency_ms=lat, cost=cost,
                         utility=[[0.0] * 2] * 2, best_model=0, best_context=0, temperature=0.2, top_p=0.95,
                         label_source="real", answers=answers)
    return relabel(rec, 0.02, 0.02)


def test_requality_turns_the_inverted_code_label_around() -> None:
    rec = _record("base64.b32encode:code:1", "code", [[RECITAL, RECITAL], [GOOD, GOOD]])
    assert rec.best_model == 0  # the recital wins under token F1
    new = requality(rec, 0.02, 0.02, FAST)
    assert new.quality == [[0.0, 0.0], [1.0, 1.0]]
    assert new.best_model == 1 and new.best_context == 0
    assert new.latency_ms == rec.latency_ms and new.cost == rec.cost and new.answers == rec.answers
    u = np.asarray(new.utility)
    assert u[1, 0] == pytest.approx(1.0 - 0.02 * 3.0 - 0.02 * 0.2, abs=1e-5)  # U = Q − λL − μC
    with pytest.raises(InvalidInputError):
        requality(replace(rec, answers=[]), 0.02, 0.02)


def test_relabel_file_and_cli_report_the_distribution(tmp_path: Path) -> None:
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    recs = [_record("base64.b32encode:code:1", "code", [[RECITAL, RECITAL], [GOOD, GOOD]]),
            _record("base64.b32encode:howto:0", "howto",
                    [["Use base64.b32decode.", "Use base64.b32decode."], ["Use `base64.b32encode`.", "x"]]),
            _record("base64.b32encode:definition:0", "definition", [["Encode the bytes-like objects", ""],
                                                                   ["no idea", "no idea"]])]
    save_labelled(recs, src_dir / "labelled_real.jsonl")
    (src_dir / "labels_info.json").write_text(json.dumps({"labels": "real", "lambda_per_s": 0.02,
                                                          "mu_per_cost_unit": 0.02, "n_docs": 9}))
    before = label_distribution(recs)
    assert before["code"] == {"base": 1, "coder": 0} and before["all"] == {"base": 3, "coder": 0}
    with pytest.raises(InvalidInputError):
        relabel_file(src_dir / "labelled_real.jsonl", src_dir / "other.jsonl")
    res = CliRunner().invoke(router_app, ["relabel", str(src_dir / "labelled_real.jsonl"),
                                          str(out_dir / "labelled_real.jsonl"), "--timeout", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 of 3 labels" in " ".join(res.output.split())
    info = json.loads((out_dir / "labels_info.json").read_text())
    assert info["n_docs"] == 9 and info["quality_measure"] == "per-type-v2"
    assert info["label_distribution_before"]["all"] == {"base": 3, "coder": 0}
    assert info["label_distribution_after"]["code"] == {"base": 0, "coder": 1}
    assert info["label_distribution_after"]["howto"] == {"base": 0, "coder": 1}
    assert info["label_distribution_after"]["definition"] == {"base": 1, "coder": 0}  # F1, unchanged
    back = load_labelled(out_dir / "labelled_real.jsonl")
    assert [r.best_model for r in back] == [1, 1, 0]
    assert json.loads((src_dir / "labels_info.json").read_text()).get("quality_measure") is None  # source kept


def test_relabel_reuses_the_quality_of_unchanged_records_and_measures_the_rest(tmp_path: Path) -> None:
    """--reuse: a grown labelled set is measured only where it is new. A record whose answers changed is
    measured again; a reuse file measured another way is refused."""
    src_dir, first, second = tmp_path / "src", tmp_path / "first", tmp_path / "second"
    code = _record("base64.b32encode:code:1", "code", [[RECITAL, RECITAL], [GOOD, GOOD]])
    howto = _record("base64.b32encode:howto:0", "howto",
                    [["Use base64.b32decode.", "x"], ["Use `base64.b32encode`.", "x"]])
    save_labelled([code, howto], src_dir / "labelled_real.jsonl")
    relabel_file(src_dir / "labelled_real.jsonl", first / "labelled_real.jsonl", limits=FAST)
    measured = {r.id: r for r in load_labelled(first / "labelled_real.jsonl")}
    # mark the first run's Q so a reused value is told from a measured one
    marked = [replace(r, quality=[[0.5, 0.5], [0.25, 0.25]]) for r in measured.values()]
    save_labelled(marked, first / "labelled_real.jsonl")
    grown = [code, replace(howto, answers=[["Use `base64.b32encode`.", "x"], ["Use `base64.b32encode`.", "x"]]),
             _record("base64.b32encode:code:2", "code", [[GOOD, GOOD], [RECITAL, RECITAL]])]
    save_labelled(grown, src_dir / "labelled_real.jsonl")
    res = CliRunner().invoke(router_app, ["relabel", str(src_dir / "labelled_real.jsonl"),
                                          str(second / "labelled_real.jsonl"), "--timeout", "2",
                                          "--reuse", str(first / "labelled_real.jsonl")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    got = {r.id: r for r in load_labelled(second / "labelled_real.jsonl")}
    assert got[code.id].quality == [[0.5, 0.5], [0.25, 0.25]]  # reused, unchanged answers
    assert got[code.id].best_model == 0  # and its labels recomputed from the reused Q
    assert got[howto.id].quality[0] == [1.0, 0.0]  # its answers changed: measured again
    assert got["base64.b32encode:code:2"].quality == [[1.0, 1.0], [0.0, 0.0]]  # new: measured
    info = json.loads((second / "labels_info.json").read_text())
    assert info["quality_reused"] == 1 and info["quality_reused_from"].endswith("first/labelled_real.jsonl")
    with pytest.raises(InvalidInputError, match="cannot be reused"):  # measured without a judge; this run judges
        relabel_file(src_dir / "labelled_real.jsonl", tmp_path / "third" / "labelled_real.jsonl", limits=FAST,
                     reuse=first / "labelled_real.jsonl", verdict=lambda q, a, g: 1.0, judge_model="some-judge")

