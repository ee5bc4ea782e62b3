"""Corpora to ingest: the Python standard library's own documentation, and text files.

Why the standard library's docstrings: they are on every machine that runs ruvllm (no
download, no licence question), they are real technical prose a user can check against
what they know, and questions about them ("what does json.dumps do?") have answers that a
small model can only give well when retrieval finds the right docstring.

A corpus is a list of ``Doc``: text plus where it came from, and links to other docs of the
same corpus by key (``Follows`` between consecutive chunks of one docstring, ``SameTopic``
from a member to its module or class). The orchestrator embeds and stores them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ruvllm.errors import InvalidInputError
from ruvllm.memory.schema import EdgeType

CHUNK_CHARS = 1000
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".markdown", ".text"}

# Widely used modules with good docstrings. Importing them has no side effects.
STDLIB_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "asyncio", "base64", "bisect", "calendar", "collections",
    "collections.abc", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions",
    "functools", "getpass", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging",
    "logging.handlers", "math", "mimetypes", "multiprocessing", "operator", "os", "os.path",
    "pathlib", "pickle", "platform", "pprint", "queue", "random", "re", "sched", "secrets",
    "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "sqlite3", "ssl", "statistics",
    "string", "struct", "subprocess", "sys", "tarfile", "tempfile", "textwrap", "threading",
    "time", "timeit", "tomllib", "traceback", "typing", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "weakref", "xml.etree.ElementTree", "zipfile", "zlib",
)


@dataclass
class Doc:
    key: str  # unique within the corpus
    text: str
    source: str  # "stdlib:json.dumps" or a file path
    domain: str = ""
    tags: list[str] = field(default_factory=list)
    links: list[tuple[str, EdgeType, float]] = field(default_factory=list)  # (other key, rel, weight)


def chunk_text(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Split on blank lines, then pack paragraphs into chunks of at most ``limit`` chars."""
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    chunks: list[str] = []
    current = ""
    for para in paragraphs:
        while len(para) > limit:  # a single huge paragraph: cut at a space near the limit
            cut = para.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            if current:
                chunks.append(current)
                current = ""
            chunks.append(para[:cut].strip())
            para = para[cut:].strip()
        if current and len(current) + 2 + len(para) > limit:
            chunks.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def _docs_for(qualname: str, header: str, doc: str, domain: str, tags: list[str],
              parent: str | None, parent_weight: float, signature: str = "") -> list[Doc]:
    # Chunk 0 is a short summary (header, first paragraph, signature): a focused vector for
    # "what does X do" questions. The rest of the docstring follows in chunks linked by Follows.
    # The signature goes after the prose: a long signature first dilutes the embedding.
    first, _, rest = doc.strip().partition("\n\n")
    out: list[Doc] = []
    for i, chunk in enumerate([first[:CHUNK_CHARS], *chunk_text(rest)]):
        key = f"{qualname}#{i}"
        if i == 0:
            text = f"{header}\n{chunk}" + (f"\nSignature: {qualname}{signature}" if signature else "")
        else:
            text = f"{qualname} (continued):\n{chunk}"
        d = Doc(key=key, text=text, source=f"stdlib:{qualname}", domain=domain, tags=list(tags))
        if i > 0:
            d.links.append((f"{qualname}#{i - 1}", EdgeType.FOLLOWS, 1.0))
        elif parent is not None:
            d.links.append((f"{parent}#0", EdgeType.SAME_TOPIC, parent_weight))
        out.append(d)
    return out


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def _signature(obj: object) -> str:
    """The call signature, stable across processes: a default like ``<function f at 0x7f…>``
    loses its address, or the same docstring would read differently in every run."""
    try:
        return _ADDRESS.sub(">", str(inspect.signature(obj)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"


def stdlib_docs(modules: tuple[str, ...] | list[str] | None = None) -> list[Doc]:
    """Module, class, function and method docstrings of ``modules`` (default: STDLIB_MODULES)."""
    names = list(modules) if modules else list(STDLIB_MODULES)
    docs: list[Doc] = []
    seen: set[str] = set()
    for modname in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(modname)
        except ImportError as exc:
            raise InvalidInputError(f"cannot import standard-library module {modname!r}: {exc}") from None
        mdoc = inspect.getdoc(mod)
        if not mdoc:
            continue
        docs += _docs_for(modname, f"Module {modname}.", mdoc, modname, ["module"], None, 0.0)
        seen.add(modname)
        public = getattr(mod, "__all__", None)
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or (public is not None and name not in public):
                continue
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) not in (modname, None) and public is None:
                continue  # re-exported from elsewhere
            qual = f"{modname}.{name}"
            odoc = inspect.getdoc(obj)
            if not odoc or qual in seen:
                continue
            seen.add(qual)
            kind = "class" if inspect.isclass(obj) else "function"
            header = f"{kind.capitalize()} {qual} (module {modname})."
            docs += _docs_for(qual, header, odoc, modname, [kind], modname, 0.5, _signature(obj))
            if not inspect.isclass(obj):
                continue
            for mname, meth in sorted(vars(obj).items()):
                if mname.startswith("_") or not callable(meth):
                    continue
                mqual = f"{qual}.{mname}"
                mdoc_ = inspect.getdoc(meth)
                if not mdoc_ or mqual in seen or mdoc_ == odoc:
                    continue
                seen.add(mqual)
                header = f"Method {mqual} (class {qual}, module {modname})."
                docs += _docs_for(mqual, header, mdoc_, modname, ["method"], qual, 0.8, _signature(meth))
    return docs


def iter_text_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and not any(part.startswith(".") for part in p.parts):
            yield p


def file_docs(path: str | Path) -> list[Doc]:
    """Text files (.txt .md .rst) under ``path``, chunked by paragraph."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InvalidInputError(f"{root} does not exist; give a text file or a folder of .txt/.md/.rst files")
    docs: list[Doc] = []
    for file in iter_text_files(root):
        raw = file.read_bytes()
        if b"\x00" in raw[:4096]:
            if root.is_file():
                raise InvalidInputError(f"{file} looks binary; ruvllm ingests text files (.txt, .md, .rst)")
            continue
        text = raw.decode("utf-8", errors="replace")
        domain = file.stem
        for i, chunk in enumerate(chunk_text(text)):
            key = f"{file}#{i}"
            d = Doc(key=key, text=chunk, source=str(file), domain=domain, tags=["file"])
            if i > 0:
                d.links.append((f"{file}#{i - 1}", EdgeType.FOLLOWS, 1.0))
            docs.append(d)
    if not docs:
        raise InvalidInputError(f"no text found under {root}; ruvllm ingests .txt, .md and .rst files")
    return docs


def available_stdlib_modules() -> list[str]:
    """All importable top-level stdlib module names (for --modules help)."""
    import sys

    return sorted(n for n in sys.stdlib_module_names if not n.startswith("_")) or [
        m.name for m in pkgutil.iter_modules()
    ]
