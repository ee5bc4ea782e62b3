"""Answer quality Q for the router's oracle labels, measured in a way that fits the question type.

Token F1 against a docstring sentence cannot tell the models apart on every type, and on code
questions it is inverted: a base model that recites the retrieved context ("[1] (base64.b32encode)
base64.b32encode(s) …") shares many words with the docstring gold, a coder model that writes a
correct, runnable snippet shares almost none. So:

- **code** (``code_quality``): the Python code of the answer is extracted (its fenced blocks, else
  the whole answer if it parses), statically checked for a use of the asked symbol (the AST, import
  aliases resolved: ``import base64 as b; b.b32encode(…)`` and ``from base64 import b32encode``
  both count), and **executed** (``run_python``):

  - 1.0: it parses, uses the symbol (calls it; a class: instantiates it; an exception class:
    catches or raises it; a decorator) and runs to exit status 0;
  - 0.5: it parses and uses the symbol, but raises, exits non-zero or times out;
  - 0.25: it parses and only mentions the symbol (imports it, references it);
  - 0.0: anything else (no code, nothing parses, the symbol is never named).

  An answer cut off by the oracle's ``max_tokens`` ends inside its code block; the longest prefix
  of lines that parses (an open block closed with ``pass``) is what is run: what a reader could
  paste. A snippet cut off before its call scores as one that never makes it.
- **howto** (``howto_quality``): does the answer name the gold function? 1/k when it names the gold
  symbol among k distinct candidate functions (standard-library dotted names of the question set's
  modules, and ``from m import a, b``), so a single right answer scores 1.0, "use X or Y" 0.5, a
  recital of five retrieved docs 0.2, and naming only a sibling (a wrong function) 0.0. Why not
  partial credit for a sibling: the question asks which function to use, and a wrong function is a
  wrong answer; why 1/k: a reader handed k names picks the right one with chance 1/k.
- **signature** (``signature_quality``): F1 of the parameter names the answer gives against the
  real signature's (``inspect.signature``, the gold): a written signature ``X(a, b=1)`` is read as
  such, in prose the gold names mentioned and the identifiers listed count; "takes no arguments"
  is right exactly when the signature is empty; a wrong stated count halves the score. A judge
  ranked these badly (the correct "csv.Dialect takes no arguments" 0.52, the wrong "takes two
  arguments: delimiter and quotechar" 0.79). Builtins without an inspectable signature (gold
  ``(...)``) fall back to the next rule.
- **every other type** (definition, explain, compare): with a judge model
  (``ruvllm router relabel --judge qwen2.5-coder-1.5b``) the judge's P(yes) that the answer says
  what the gold says (``LLMJudge.verdict``, reference-based, read from next-token probabilities);
  without one, token F1 against the gold (``ruvllm.judge.token_f1``), which a recital of the
  docstring wins; see docs/router.md.

Safety of the execution step — it runs text a language model wrote, so it is done only in the
offline labelling step (``label_with_models`` and ``ruvllm router relabel``) on local models'
answers to standard-library questions, never on user traffic. Each snippet runs as
``sys.executable -I`` (isolated mode: no PYTHON* environment, no user site, no script directory on
sys.path) in a fresh temporary directory that is its cwd, HOME and TMPDIR and is removed afterwards,
with stdin from /dev/null, a minimal environment, its own session (the whole process group is
killed at the timeout), and resource limits: address space (512 MB), CPU seconds, file size (1 MB,
stdout/stderr included), open files, no core dumps, and RLIMIT_NPROC = 0 (no fork/threads for a
non-root user). Before the snippet runs, an audit hook (PEP 578) refuses process creation
(os.system, fork, exec, spawn, subprocess), signals to other processes, sockets (connect, bind,
getaddrinfo), ctypes, and file writes, deletes, renames and chmods outside the temporary directory.

Limits, honestly: this is a guard against accidents, not a sandbox against an adversary. The
audit hook runs in the same interpreter as the snippet, so code that sets out to escape it
(through a C extension already imported, or by corrupting the interpreter) can; the file system
outside the temp directory stays readable; the kernel does not enforce RLIMIT_NPROC for root; there
is no network namespace, only the hook. For anything but local models' answers to these questions,
run the labelling in a container or VM without network.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import keyword
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# recorded in labels_info.json by `ruvllm router relabel`; v2 (2026-12-02) added the signature check
QUALITY_VERSION = "per-type-v2"
QUALITY_VERSION_JUDGED = "per-type-v2+verdict"  # the same, a judge's verdict instead of F1

# --------------------------------------------------------------------------------------
# running a snippet
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecLimits:
    timeout_s: float = 5.0  # wall clock, whole process group killed after it
    cpu_s: int = 5  # RLIMIT_CPU
    mem_bytes: int = 512 * 1024 * 1024  # RLIMIT_AS
    fsize_bytes: int = 1024 * 1024  # RLIMIT_FSIZE (files it writes, stdout and stderr included)
    nofile: int = 64  # RLIMIT_NOFILE


@dataclass(frozen=True)
class ExecResult:
    ok: bool  # exit status 0 within the limits
    timed_out: bool
    returncode: int | None
    stderr_tail: str  # last lines of stderr (the traceback, or the audit hook's refusal)


# Runs in the child before the snippet: read the snippet, install the audit hook, exec it as __main__.
_PRELUDE = r'''
import os, resource, sys
# the limits first (argv: address space, CPU s, file size, open files), before any snippet code
for _res, _v in zip((resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE,
                     resource.RLIMIT_CORE, resource.RLIMIT_NPROC), [*map(int, sys.argv[1:5]), 0, 0]):
    try:
        resource.setrlimit(_res, (_v, _v))
    except (ValueError, OSError):
        pass  # a hard limit already lower than ours stays
_root = os.path.realpath(os.getcwd())
with open("snippet.py", encoding="utf-8") as _fh:
    _src = _fh.read()
_DENY = ("os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
         "os.kill", "os.killpg", "signal.pthread_kill", "socket.connect", "socket.bind", "socket.sendto",
         "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname", "ctypes.dlopen", "ctypes.dlsym",
         "ctypes.cdata", "ctypes.call_function")
_PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
                "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,),
                "os.utime": (0,), "os.mkdir": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,),
                "shutil.copytree": (1,), "shutil.move": (1,)}
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_busy = []

def _inside(p):
    if isinstance(p, int):
        return True  # an fd it already holds
    p = os.fsdecode(p)
    full = os.path.realpath(os.path.join(_root, p))
    return full == _root or full.startswith(_root + os.sep)

def _hook(event, args):
    if _busy:
        return
    _busy.append(1)
    try:
        if event.startswith(_DENY):
            raise PermissionError(f"refused by the labelling sandbox: {event}")
        if event == "open" and len(args) >= 3 and args[0] is not None:
            flags = args[2] if isinstance(args[2], int) else 0
            mode = args[1] if isinstance(args[1], str) else ""
            if (flags & _WRITE or any(c in mode for c in "wax+")) and not _inside(args[0]):
                raise PermissionError(f"refused by the labelling sandbox: write outside its directory {args[0]!r}")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and args[i] is not None and not _inside(args[i]):
                    raise PermissionError(f"refused by the labelling sandbox: {event} {args[i]!r}")
    finally:
        _busy.pop()

sys.addaudithook(_hook)
del _fh
exec(compile(_src, "snippet.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''


@functools.lru_cache(maxsize=4096)
def run_python(code: str, limits: ExecLimits = ExecLimits()) -> ExecResult:
    """Run ``code`` as a script under the limits above; identical snippets are run once per process."""
    with tempfile.TemporaryDirectory(prefix="ruvllm-exec-") as tmp:
        Path(tmp, "snippet.py").write_text(code, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}
        with open(Path(tmp, "stdout"), "wb") as out, open(Path(tmp, "stderr"), "wb") as err:
            # the child sets its own rlimits (no preexec_fn: the labelling process runs llama.cpp threads)
            argv = [str(v) for v in (limits.mem_bytes, limits.cpu_s, limits.fsize_bytes, limits.nofile)]
            proc = subprocess.Popen([sys.executable, "-I", "-c", _PRELUDE, *argv], cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, close_fds=True,
                                    start_new_session=True)
            timed_out = False
            try:
                rc: int | None = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the snippet's whole process group
                proc.wait()
        tail = Path(tmp, "stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    # killed by RLIMIT_CPU (SIGXCPU / SIGKILL) is a time-out too
    if rc is not None and rc in (-signal.SIGXCPU, -signal.SIGKILL):
        timed_out = True
    return ExecResult(ok=rc == 0 and not timed_out, timed_out=timed_out, returncode=rc, stderr_tail=tail)


# --------------------------------------------------------------------------------------
# code questions
# --------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_NOT_PYTHON = {"bash", "sh", "shell", "console", "text", "txt", "json", "yaml", "toml", "ini", "sql", "html",
               "xml", "c", "cpp", "java", "javascript", "js", "output"}


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _longest_parsing_prefix(code: str) -> str | None:
    """The longest prefix of whole lines that parses, where a prefix ending in an open block
    (``try:`` … ``except E as e:``) is closed with ``pass``: the part of a cut-off snippet a reader
    could run."""
    lines = code.rstrip().splitlines()
    for n in range(len(lines), 0, -1):
        cand = "\n".join(lines[:n])
        if not cand.strip():
            continue
        if _parses(cand):
            return cand
        last = lines[n - 1]
        closed = f"{cand}\n{last[: len(last) - len(last.lstrip())]}    pass"
        if last.rstrip().endswith(":") and _parses(closed):
            return closed
    return None


def extract_code(answer: str) -> str | None:
    """The answer's Python code: its fenced blocks (a last one cut off by the token limit included,
    trimmed to the longest prefix that parses), else the whole answer if it parses as Python
    (doctest ``>>>`` prompts removed). None when there is no code."""
    blocks = [body for lang, body in _FENCE.findall(answer) if lang.lower() not in _NOT_PYTHON]
    if blocks:
        joined = textwrap.dedent("\n".join(blocks))
        if _parses(joined):
            return joined
        return _longest_parsing_prefix(joined)
    text = answer.strip()
    if ">>>" in text:
        text = "\n".join(ln[4:] if ln.startswith((">>> ", "... ")) else "" for ln in text.splitlines())
    text = textwrap.dedent(text).strip()
    # a bare name or an expression statement made of words is prose, not code ("Sure." parses)
    if text and _parses(text) and any(not isinstance(s, ast.Expr) or isinstance(s.value, ast.Call)
                                      for s in ast.parse(text).body):
        return text
    return None


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def symbol_use(code: str, symbol: str) -> tuple[bool, bool]:
    """(uses it, mentions it): whether the code calls ``symbol`` (a dotted name like
    ``base64.b32encode``; instantiating a class, a decorator, and for an exception class ``except``
    and ``raise`` count as uses), and whether it refers to it at all (an import or a reference also
    count), import aliases resolved."""
    tree = ast.parse(code)
    alias: dict[str, str] = {}
    mentioned = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                alias[a.asname or a.name] = full
                mentioned = mentioned or full == symbol

    def resolve(expr: ast.AST) -> str | None:
        name = _dotted(expr)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        base = alias.get(head, head)  # not imported: taken literally (it will raise NameError when run)
        return f"{base}.{rest}" if rest else base

    called = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and resolve(node.func) == symbol:
            called = True
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            called = called or any(resolve(d) == symbol for d in node.decorator_list)
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            called = called or any(resolve(t) == symbol for t in types)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            called = called or resolve(node.exc) == symbol
        elif isinstance(node, (ast.Attribute, ast.Name)) and resolve(node) == symbol:
            mentioned = True
    return called, mentioned or called


def code_quality(answer: str, symbol: str, limits: ExecLimits | None = None,
                 runner: Callable[[str, ExecLimits], ExecResult] | None = None) -> float:
    """1.0 / 0.5 / 0.25 / 0.0 as in the module docstring (``runner`` is ``run_python`` unless a test
    swaps it)."""
    code = extract_code(answer)
    if code is None:
        return 0.0
    called, mentioned = symbol_use(code, symbol)
    if not called:
        return 0.25 if mentioned else 0.0
    res = (runner or run_python)(code, limits or ExecLimits())
    return 1.0 if res.ok else 0.5


# --------------------------------------------------------------------------------------
# how-to questions
# --------------------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"(?<![\w.]){_IDENT}(?:\.{_IDENT})+")
_FROM_IMPORT = re.compile(rf"\bfrom\s+({_IDENT}(?:\.{_IDENT})*)\s+import\s+\(?([\w ,]+)")


def named_functions(answer: str, modules: Sequence[str]) -> set[str]:
    """Distinct ``module.name`` the answer names (dotted, case-blind, or ``from module import name``),
    for ``module`` in ``modules``; module names themselves (``os.path``) are not functions."""
    mods = {m.lower() for m in modules}
    found: set[str] = set()
    cands = [m.group(0) for m in _DOTTED.finditer(answer)]
    for mod, names in _FROM_IMPORT.findall(answer):
        cands += [f"{mod}.{n.strip()}" for n in names.split(",") if n.strip()]
    for c in cands:
        c = c.lower().rstrip(".")
        head, _, name = c.rpartition(".")
        if head in mods and c not in mods and name:
            found.add(c)
    return found


def howto_quality(answer: str, symbol: str, modules: Sequence[str] | None = None) -> float:
    """1/k when the answer names ``symbol`` among k distinct candidate functions, 0 when it does not
    name it (see the module docstring). The short name in code form (```b32hexencode``` or
    ``b32hexencode(``) names it too."""
    if modules is None:
        from ruvllm.router.oracle import QA_MODULES

        modules = QA_MODULES
    module = symbol.rpartition(".")[0]
    named = named_functions(answer, (*modules, module))
    short = re.escape(symbol.rpartition(".")[2])
    if re.search(rf"`{short}`|`{short}\(|(?<![\w.]){short}\(", answer, re.I):
        named.add(symbol.lower())
    if symbol.lower() not in named:
        return 0.0
    return 1.0 / len(named)


# --------------------------------------------------------------------------------------
# signature questions
# --------------------------------------------------------------------------------------

_PARAM = re.compile(r"^\*{0,2}([A-Za-z_]\w*)\s*(?:[:=].*)?$", re.S)
_COUNT_WORDS = {"no": 0, "zero": 0, "one": 1, "a single": 1, "single": 1, "only one": 1, "two": 2, "three": 3,
                "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_COUNT = re.compile(r"\b(?:takes|accepts|has|requires|expects|receives)\s+(?:exactly\s+|only\s+)?"
                    r"(no|zero|only one|one|a single|single|two|three|four|five|six|seven|eight|nine|ten|\d+)\s+"
                    r"(?:[\w-]+\s+)?(?:arguments?|parameters?|args?)\b", re.I)
_NONE_SAID = re.compile(r"\b(?:takes|accepts|has|requires)\s+no\s+(?:[\w-]+\s+)?(?:arguments?|parameters?|args?)\b|"
                        r"\bdoes\s+not\s+(?:take|accept|require)\s+any\b", re.I)
_LIST = re.compile(r"\b(?:arguments?|parameters?|args|accepts|takes)\b[^.:\n]{0,40}?(?::|\bincluding\b|\bare\b|,)"
                   r"\s*([^\n]*?)(?:\.(?!\w)|\bwhich\b|\bthat\b|$)", re.I)
_BACKTICKED = re.compile(r"`\*{0,2}([A-Za-z_]\w*)`")
_LISTED = re.compile(r"\*{0,2}([A-Za-z_]\w*)(?:\s*=\s*\S+)?")  # one item of a prose list: a bare name
_NOT_PARAMS = {"self", "cls", "None", "True", "False", "bytes", "str", "int", "float", "bool", "list", "dict",
               "tuple", "set", "object", "type", "bytearray", "callable", "iterable", "function"}


def _split_top(inner: str) -> list[str]:
    """``inner`` (the text between a signature's parentheses) split at its top-level commas."""
    items: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in inner:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def param_names(inner: str) -> list[str] | None:
    """Parameter names of a signature's inside (``s, /, *, altchars=None, **kw`` → s, altchars, kw);
    None when an item is not a parameter (a call with values, ``b"x"``, ``3``), so an example call is
    not taken for a signature."""
    names = []
    for item in _split_top(inner):
        if item in ("/", "*", "..."):
            if item == "...":
                return None
            continue
        m = _PARAM.match(item)
        if not m:
            return None
        names.append(m.group(1))
    return names


def paren_after(text: str, start: int) -> str | None:
    """The text inside the parenthesis opening at ``text[start]``, or None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i]
    return None


def _gold_inner(gold: str) -> str | None:
    """The inside of a signature gold's parentheses; None when it has none or is ``(...)``."""
    at = gold.find("(")
    inner = paren_after(gold, at) if at >= 0 else None
    return None if inner is None or inner.strip() == "..." else inner


def gold_parameters(gold: str) -> list[str] | None:
    """The parameter names of a signature gold (``b32decode(s, casefold=False, map01=None)``); None
    when the gold has no inspectable signature (``defaultdict(...)``)."""
    inner = _gold_inner(gold)
    if inner is None:
        return None
    names = param_names(inner)
    return None if names is None else [n for n in names if n not in ("self", "cls")]


def _mentioned(name: str, text: str) -> bool:
    """``name`` appears as a word; a one-letter name only where it cannot be an article or a pronoun
    (followed by punctuation, "and", "or", or the end: "two arguments, a and b")."""
    if len(name) == 1:
        return re.search(rf"(?<![\w'\-.]){re.escape(name)}(?=\s*(?:[,.;:)`\]]|and\b|or\b|$))", text) is not None
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text) is not None


def signature_quality(answer: str, gold: str, symbol: str) -> float | None:
    """Q for "what arguments does X take?": F1 of the parameter names the answer gives against the
    real signature's (``gold``, from ``inspect.signature``); None when the gold has no signature
    (``(...)``: builtins without one), so the caller falls back to the judge or F1.

    What the answer claims:

    - the first signature it writes for the symbol (``X(a, b=1)``, or ``__init__(…)``); an example
      call with values (``X(b"hi")``) is not one;
    - else, in prose, the gold names it mentions as words, plus the identifiers it lists (backticked,
      or a list after "parameters:" / "including" / "are"); a listed name that is not a parameter
      costs precision; "takes no arguments" claims none (1.0 exactly when the signature is empty).

    In prose, a stated count that matches neither the number of parameters, nor of required ones, nor
    of the names given ("takes two arguments: s" for ``b16encode(s)``) halves the score; an answer that
    names no parameter, right or wrong, but states the right count gets 0.25."""
    want = gold_parameters(gold)
    if want is None:
        return None
    short = symbol.rpartition(".")[2]
    gold_set = set(want)
    claimed: set[str] | None = None
    for m in re.finditer(rf"(?<![\w])(?:{re.escape(short)}|__init__|__new__|__call__)\s*\(", answer):
        inner = paren_after(answer, m.end() - 1)
        names = param_names(inner) if inner is not None else None
        if names is not None:
            claimed = set(names) - {"self", "cls"}
            break
    prose = claimed is None
    none_said = prose and _NONE_SAID.search(answer) is not None
    if prose:
        if none_said:
            claimed = set()
        else:
            claimed = {n for n in gold_set if _mentioned(n, answer)}
            listed = set(_BACKTICKED.findall(answer))
            for lst in _LIST.findall(answer):
                for item in re.split(r",|\band\b|\bor\b", lst):
                    one = _LISTED.fullmatch(item.strip().strip("`'\"").strip())
                    if one:
                        listed.add(one.group(1))
            module_parts = set(symbol.split("."))
            claimed |= {n for n in listed if n not in _NOT_PARAMS and n not in module_parts
                        and not n.startswith("__") and not keyword.iskeyword(n)}
    assert claimed is not None
    if not gold_set or not claimed:
        score = 1.0 if gold_set == claimed and (not prose or none_said) else 0.0
    else:
        hit = len(gold_set & claimed)
        score = 0.0 if hit == 0 else 2 * hit / (len(gold_set) + len(claimed))
    if prose:
        counts = [_COUNT_WORDS.get(c.lower()) if not c.isdigit() else int(c) for c in _COUNT.findall(answer)]
        required = _required_count(gold)
        stated = [c for c in counts if c is not None]
        if stated and stated[0] not in (len(want), required, len(claimed)):
            score *= 0.5  # a wrong count on top of the names ("two arguments: s"), not the same error twice
        elif stated and score == 0.0 and not (claimed - gold_set) and stated[0] == len(want) and want:
            score = 0.25
    return score


def _required_count(gold: str) -> int:
    """How many of the gold's parameters have no default and are not ``*args`` / ``**kwargs``."""
    inner = _gold_inner(gold) or ""
    return sum(1 for i in _split_top(inner) if i not in ("/", "*") and "=" not in i and not i.startswith("*"))


# --------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------

METHOD_BY_TYPE = {"code": "execution-checked (code_quality)", "howto": "names the gold function (howto_quality)",
                  "signature": "parameter names vs inspect.signature (signature_quality); else as the other types"}


# A reference-based judge: (question, answer, gold) → P(the answer says what the gold says), or
# None when its reply was unusable (``LLMJudge.verdict``).
Verdict = Callable[[str, str, str], "float | None"]


def answer_quality(query_type: str, answer: str, gold: str, symbol: str, limits: ExecLimits | None = None,
                   *, question: str = "", verdict: Verdict | None = None) -> float:
    """Q in [0, 1] for one answer: the measure that fits ``query_type`` (module docstring). The
    other types get ``verdict`` when one is given (falling back to F1 when it has no answer), else
    token F1 against the gold, which a recital of the docs wins."""
    if query_type == "code":
        return code_quality(answer, symbol, limits)
    if query_type == "howto":
        return howto_quality(answer, symbol)
    if query_type == "signature":
        sq = signature_quality(answer, gold, symbol)
        if sq is not None:
            return sq
    from ruvllm.judge import token_f1

    if verdict is not None and answer.strip():
        v = verdict(question, answer, gold)
        if v is not None:
            return float(v)
    return token_f1(answer, gold)


def symbol_of(record_id: str) -> str:
    """The asked symbol of a labelled record: ids are ``<symbol>:<type>:<paraphrase>``."""
    parts = record_id.split(":")
    if len(parts) != 3 or not parts[0]:
        from ruvllm.errors import InvalidInputError

        raise InvalidInputError(f"record id {record_id!r} is not <symbol>:<type>:<paraphrase>")
    return parts[0]
