"""``RuvLLM``: one query, end to end (DESIGN.md), wired from a ``Config``.

    text → embed → memory.search → graph.expand → rank → route → generate → judge → write-back

This module wires parts together and measures each stage; the algorithms live in the parts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ruvllm import judge
from ruvllm.config import Config
from ruvllm.datadir import open_data_dir, write_json_atomic
from ruvllm.embedding import Embedder, make_embedder
from ruvllm.errors import ConfigError, ContextOverflowError, InvalidInputError, ModelNotFoundError, NotFoundError
from ruvllm.ingest import Doc, file_docs, stdlib_docs
from ruvllm.llm import ModelPool, Registry
from ruvllm.llm.base import Generation, Generator, SamplingParams
from ruvllm.llm.prompt import BuiltPrompt, ContextItem, build_prompt, clean_answer
from ruvllm.memory import WriteBack
from ruvllm.memory.backends import open_memory
from ruvllm.memory.checks import MAX_K
from ruvllm.memory.schema import Edge, EdgeMetadata, Node, NodeMetadata, NodeType
from ruvllm.memory.writeback import SUPERSEDED_TAG, named_symbols, parse_qa
from ruvllm.router import cascade
from ruvllm.router.base import Decision, RouteInput, Router
from ruvllm.router.cascade import CascadePolicy
from ruvllm.router.fastgrnn_router import FastGRNNRouter, feature_input_from_search
from ruvllm.router.history import pattern_key
from ruvllm.router.rules import RuleRouter
from ruvllm.telemetry import Stopwatch

if TYPE_CHECKING:
    from ruvllm.router.shadow import ShadowLabel

log = logging.getLogger(__name__)

RECENT_REQUESTS = 1024  # responses kept in memory so feedback can refer to them
MAX_QUERY_CHARS = 64_000  # beyond this no configured context window can hold the question
HOP_DISCOUNT = 0.9  # a neighbour reached in h hops keeps 0.9**h of its similarity
# A source whose name the question spells out ("What does json.dumps do?") gets this much
# added to its similarity: dense encoders blur identifiers, and a named symbol is the best
# evidence of what the user means. Measured on the demo: json.dumps moves from 2nd to 1st.
NAME_BOOST = 0.25
INGEST_BATCH = 256
MAX_ANCHOR_ROWS = 2000  # training rows the online router is anchored on (learning.anchor)

ProgressFn = Callable[[int, int], None]


@dataclass
class Source:
    node_id: str
    score: float
    type: str
    source: str
    snippet: str
    hop: int = 0


@dataclass
class QueryResponse:
    request_id: str
    question: str
    answer: str
    model: str
    decision: Decision
    sources: list[Source]
    latency_ms: dict[str, float]
    total_ms: float
    quality: float  # grounding of the answer in its sources, [0, 1]
    writeback: dict[str, Any] | None
    usage: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StreamEvent:
    type: str  # "start" | "token" | "done"
    request_id: str
    text: str = ""
    decision: Decision | None = None
    sources: list[Source] | None = None
    response: QueryResponse | None = None


@dataclass
class _Plan:
    request_id: str
    question: str
    qvec: np.ndarray
    decision: Decision
    gen: Generator | None  # None: answered from memory
    params: SamplingParams
    built: BuiltPrompt
    sw: Stopwatch
    ranked: list[ContextItem] = field(default_factory=list)
    forced: bool = False  # the caller chose the model: no escalation
    features: Any = None  # the router's FeatureInput
    x: np.ndarray | None = None  # the FastGRNN router's 128-d input, as it routed on it (for learning)
    recalled: str | None = None  # a stored answer to the same question


@dataclass
class IngestReport:
    docs: int
    inserted: int
    skipped: int
    edges: int
    seconds: float


class RuvLLM:
    """The Python API. ``RuvLLM(config).query("...")`` returns a ``QueryResponse``."""

    def __init__(self, config: Config | None = None, *, embedder: Embedder | None = None):
        self.config = config or Config.load()
        self.data_dir = open_data_dir(self.config.data_path)
        mc = self.config.memory
        self.memory = open_memory(mc, self.data_dir)  # memory.backend: embedded | pgvector
        self.writeback = WriteBack(self.memory, self.config.writeback)
        self.registry = Registry(self.config.models_path, extra=self.config.llm.paths)
        self.pool = ModelPool(self.registry, self.config.llm)
        self._embedder = embedder
        self._router: Router | None = None
        self._served: frozenset[str] | None = None  # model ids an OpenAI-compatible server lists
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, QueryResponse] = OrderedDict()  # request id → response, for feedback
        self._closed = False
        self._bg: Any = None  # learning.BackgroundWorker, started on the first answer when learning is on
        self._online: Any = None  # learning.RouterOnline when the router is a FastGRNN
        self._judge: Any = None
        # request id → (router features, model, propensity) of a routed answer, so feedback can reach the router
        self._routed: OrderedDict[str, tuple[Any, str, float]] = OrderedDict()
        self._shadow_rng = random.Random(self.config.llm.seed)  # which answers get shadow-labelled (router.shadow)
        self._shadow_labels = 0
        self._shadow_errors = 0
        self._anchor_tried = False
        self._history_unsaved = 0  # shadow wins added to the pattern history since it was last saved

    # ---- parts, created on first use ---------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.config.embedding, self.config.models_path)
            if self._embedder.dim != self.config.memory.dim:
                raise InvalidInputError(
                    f"embedder dimension {self._embedder.dim} != memory.dim {self.config.memory.dim}; "
                    "set memory.dim to match the encoder"
                )
            return self._embedder

    def installed_models(self) -> list[str]:
        """The configured models that can answer: GGUFs on disk, or with ``llm.backend = "openai"``
        the ones the server lists at /v1/models (asked once; a server that is down is an error)."""
        llm = self.config.llm
        if llm.backend != "openai":
            return [m for m in llm.models if self.registry.is_installed(m)]
        if self._served is None:
            gen = self.pool.get(llm.models[0])
            self._served = frozenset(gen.probe())  # type: ignore[attr-defined]
        return [m for m in llm.models if (llm.model or m) in self._served]

    @property
    def router(self) -> Router:
        if self._router is None:
            models = self.installed_models()
            if not models:
                reasons = []
                if self.config.llm.backend == "openai":
                    reasons.append(f"the server at {self.config.llm.base_url} serves {sorted(self._served or ())}; "
                                   "set llm.model to one of them or serve the configured names")
                for name in self.config.llm.models if self.config.llm.backend != "openai" else ():
                    try:
                        self.registry.path(name)
                    except ModelNotFoundError as exc:
                        reasons.append(str(exc))
                raise ModelNotFoundError(
                    f"none of the configured models {self.config.llm.models} is installed ("
                    + "; ".join(reasons) + "); run `make demo` or see `ruvllm models`"
                )
            if self.config.router.kind == "fastgrnn":
                # default: where `ruvllm router train` saves it inside this data dir
                path = Path(self.config.router.model_path or self.data_dir / "router" / "router")
                if not (path.exists() or path.with_suffix(".npz").exists()):
                    raise ConfigError(f"router.kind = 'fastgrnn' but there is no trained router at {path}; "
                                      "run `ruvllm router train` or set router.model_path")
                self._router = FastGRNNRouter.load(path, models=models, max_context=self.config.llm.n_ctx,
                                                   epsilon=self.config.router.explore, seed=self.config.llm.seed)
            else:
                self._router = RuleRouter(models, self._model_sizes(), max_context=self.config.llm.n_ctx)
        return self._router

    # ---- ingest --------------------------------------------------------------------
    def ingest_stdlib(self, modules: Sequence[str] | None = None, progress: ProgressFn | None = None) -> IngestReport:
        return self.ingest_docs(stdlib_docs(list(modules) if modules else None), progress)

    def ingest_path(self, path: str | Path, progress: ProgressFn | None = None) -> IngestReport:
        return self.ingest_docs(file_docs(path), progress)

    def ingest_docs(self, docs: Sequence[Doc], progress: ProgressFn | None = None) -> IngestReport:
        """Embed and store ``docs`` in batches; docs whose key was ingested before are skipped."""
        sw = Stopwatch()
        manifest_path = self.data_dir / "ingested.json"
        key_to_id: dict[str, str] = _read_manifest(manifest_path)
        todo = [d for d in docs if d.key not in key_to_id]
        inserted = edges = 0
        if progress:
            progress(0, len(todo))
        for start in range(0, len(todo), INGEST_BATCH):
            batch = todo[start : start + INGEST_BATCH]
            vectors = self.embedder.embed([d.text for d in batch])  # (b, dim)
            nodes: list[Node] = []
            new_edges: list[Edge] = []
            for doc, vec in zip(batch, vectors, strict=True):
                node = Node(
                    text=doc.text, vector=vec, type=NodeType.DOCUMENT, source=doc.source,
                    metadata=NodeMetadata(tags=doc.tags, domain=doc.domain),
                )
                key_to_id[doc.key] = node.id
                nodes.append(node)
                for other, rel, weight in doc.links:
                    if other in key_to_id:
                        new_edges.append(Edge(
                            src=node.id, dst=key_to_id[other], rel=rel, weight=weight,
                            metadata=EdgeMetadata(created_by="ingest"),
                        ))
            self.memory.add_many(nodes, new_edges)  # committed before we record it as ingested
            write_json_atomic(manifest_path, key_to_id)
            inserted += len(nodes)
            edges += len(new_edges)
            if progress:
                progress(min(start + len(batch), len(todo)), len(todo))
        return IngestReport(len(docs), inserted, len(docs) - len(todo), edges, sw.total_ms() / 1000.0)

    # ---- query ---------------------------------------------------------------------
    def query(
        self,
        text: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        writeback: bool | None = None,
        session_id: str | None = None,
    ) -> QueryResponse:
        """Answer ``text`` from memory with the routed model; returns the whole typed response."""
        plan = self._plan(text, model=model, max_tokens=max_tokens, session_id=session_id)
        if plan.recalled is not None:
            return self._finish(plan, Generation(plan.recalled, 0, 0, "stop", model="memory"), False)
        assert plan.gen is not None
        with plan.sw.stage("generate"):
            out = _generate(plan.gen, plan.built, plan.params)
        if (nxt := self._escalation(plan, clean_answer(out.text))) is not None:
            plan = self._replan(plan, nxt)
            assert plan.gen is not None
            with plan.sw.stage("generate_escalated"):
                out = _generate(plan.gen, plan.built, plan.params)
        return self._finish(plan, out, writeback)

    def _stored_answer(self, question: str, hits: Sequence[Any]) -> tuple[Any, str] | None:
        """The best hit if it is a trusted stored answer to this very question, with its answer text."""
        threshold = self.config.writeback.dup_similarity
        for h in hits[:3]:
            n = h.node
            if (n.type == NodeType.QUERY and h.score >= threshold and n.metadata.confidence >= 0.5
                    and SUPERSEDED_TAG not in n.metadata.tags):
                stored_q, answer = parse_qa(n.text)
                if answer.strip() and named_symbols(stored_q) == named_symbols(question):
                    return h, answer.strip()
        return None

    def _cascade_policy(self) -> CascadePolicy:
        """An empty answer always escalates one step; with ``router.cascade`` a weakly grounded
        answer, or one that says it does not know, escalates too."""
        return CascadePolicy.from_router_config(self.config.router)

    def _model_sizes(self) -> dict[str, float]:
        return {m: float(self.registry.spec(m).params_m) for m in self.installed_models()}

    def _escalation(self, plan: _Plan, answer: str) -> Decision | None:
        """The next larger model's decision when the answer fails its check (never for a forced model)."""
        if plan.forced:
            return None
        quality = (cascade.check_quality(plan.question, answer, [c.text for c in plan.built.used])
                   if self.config.router.cascade else None)
        sizes = self._model_sizes()
        return cascade.escalate(plan.decision, answer, quality, list(sizes), sizes, self._cascade_policy())

    def _replan(self, plan: _Plan, decision: Decision) -> _Plan:
        """The same retrieved context, prompted for the escalated model."""
        with plan.sw.stage("load"):
            gen = self.pool.get(decision.model)
        with plan.sw.stage("prompt"):
            built = self._build(plan.question, plan.ranked, decision, gen, plan.params)
        return dataclasses.replace(plan, decision=decision, gen=gen, built=built)

    def stream(
        self,
        text: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        writeback: bool | None = None,
        session_id: str | None = None,
    ) -> Iterator[StreamEvent]:
        """Like ``query``, token by token: a ``start`` event (decision + sources), ``token``
        events, then ``done`` with the full ``QueryResponse`` (after judge and write-back)."""
        plan = self._plan(text, model=model, max_tokens=max_tokens, session_id=session_id)
        yield StreamEvent("start", request_id=plan.request_id, decision=plan.decision,
                          sources=_sources(plan.built.used))
        if plan.recalled is not None:
            yield StreamEvent("token", request_id=plan.request_id, text=plan.recalled)
            done = self._finish(plan, Generation(plan.recalled, 0, 0, "stop", model="memory"), False)
            yield StreamEvent("done", request_id=plan.request_id, response=done)
            return
        assert plan.gen is not None
        pieces: list[str] = []
        t0 = time.perf_counter()
        ttft = 0.0
        with plan.sw.stage("generate"):
            for piece in _stream(plan.gen, plan.built, plan.params):
                if not pieces:
                    ttft = (time.perf_counter() - t0) * 1000.0
                pieces.append(piece)
                yield StreamEvent("token", request_id=plan.request_id, text=piece)
        answer = "".join(pieces)
        out = Generation(
            text=answer, prompt_tokens=plan.built.prompt_tokens,
            completion_tokens=plan.gen.count_tokens(answer) if answer else 0,
            finish_reason="stop", ttft_ms=ttft, model=plan.gen.name,
        )
        yield StreamEvent("done", request_id=plan.request_id, response=self._finish(plan, out, writeback))

    def _plan(self, text: str, *, model: str | None, max_tokens: int | None, session_id: str | None) -> _Plan:
        """Everything before generation: retrieve, expand, rank, route, build the prompt."""
        question = _check_question(text)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or not 1 <= max_tokens <= self.config.llm.n_ctx // 2):
            raise InvalidInputError(f"max_tokens must be an integer in [1, {self.config.llm.n_ctx // 2}]")
        sw = Stopwatch()
        mc = self.config.memory
        if self._embedder is None:
            with sw.stage("load_encoder"):  # first query of a process: not part of "embed"
                _ = self.embedder
        with sw.stage("embed"):
            qvec = self.embedder.embed([question])[0]  # (dim,)
        with sw.stage("search"):
            hits = self.memory.search(qvec, k=mc.k) if self.memory.count() else []
            seeds = _with_documents(self.memory, qvec, hits, mc.k)  # the router's features keep `hits`
        with sw.stage("expand"):
            expanded = (
                self.memory.expand([h.node.id for h in seeds], hops=mc.hops, min_weight=mc.min_edge_weight,
                                   limit=mc.max_expanded)
                if seeds and mc.hops > 0 else []
            )
        with sw.stage("rank"):
            ranked = _rank(question, qvec, seeds, expanded)
        found = self._stored_answer(question, hits) if model is None and self.config.writeback.recall else None
        if found is not None:
            hit, answer = found
            decision = Decision("memory", 0, 0.0, 1.0, round(float(hit.score), 4),
                                reason=f"answered from memory: a stored answer to this question (cosine "
                                       f"{hit.score:.3f})")
            item = ContextItem(hit.node.id, hit.node.text, float(hit.score), hit.node.source, hit.node.type.value)
            return _Plan(uuid.uuid4().hex, question, qvec, decision, None, SamplingParams(),
                         BuiltPrompt("chat", used=[item]), sw, ranked, False, None, recalled=answer)
        with sw.stage("route"):
            features = feature_input_from_search(question, qvec, hits, ranked, k_requested=mc.k)
            inp = RouteInput(
                query=question, n_query_tokens=int(len(question.split()) * 1.3) + 1,
                top_score=hits[0].score if hits else 0.0, n_hits=len(hits), features=features,
                session_id=session_id,
            )
            x = None
            if isinstance(self.router, FastGRNNRouter):  # featurize once: the online learner learns on this x
                x = self.router.featurize(inp)
                inp = dataclasses.replace(inp, features=x)
            decision = self.router.route(inp)
            decision = self._apply_overrides(decision, model)
        with sw.stage("load"):
            gen = self.pool.get(decision.model)
        params = SamplingParams(
            max_tokens=max_tokens or self.config.llm.max_tokens, temperature=decision.temperature,
            top_p=decision.top_p, seed=self.config.llm.seed,
        ).validate()
        with sw.stage("prompt"):
            built = self._build(question, ranked, decision, gen, params)
        return _Plan(uuid.uuid4().hex, question, qvec, decision, gen, params, built, sw, ranked, model is not None,
                     features, x=x)

    def _finish(self, plan: _Plan, out: Generation, writeback: bool | None) -> QueryResponse:
        """Everything after generation: judge, write-back, the response."""
        sw, built = plan.sw, plan.built
        answer = clean_answer(out.text)
        with sw.stage("judge"):
            quality = judge.grounding(answer, [c.text for c in built.used])
        wb: dict[str, Any] | None = None
        if plan.recalled is not None:  # feedback on this answer goes to the stored node it came from
            wb = {"action": "recalled", "node_id": built.used[0].node_id, "reason": plan.decision.reason}
        elif writeback if writeback is not None else self.config.writeback.enabled:
            with sw.stage("writeback"):
                res = self.writeback.write_answer(
                    plan.question, answer, plan.qvec, [c.node_id for c in built.used],
                    [c.score for c in built.used], quality, domain=_domain_of(built.used),
                    created_by=f"ruvllm:{plan.decision.model}",
                )
                wb = {"action": res.action, "node_id": res.node_id, "reason": res.reason}
        resp = QueryResponse(
            request_id=plan.request_id, question=plan.question, answer=answer, model=plan.decision.model,
            decision=plan.decision, sources=_sources(built.used),
            latency_ms={k: round(v, 2) for k, v in sw.stages.items()}, total_ms=round(sw.total_ms(), 2),
            quality=round(quality, 3), writeback=wb,
            usage={"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens},
        )
        self._remember(resp)
        if self.config.learning.enabled and plan.gen is not None:  # a recalled answer made no routing choice
            self._learn_later(plan, resp)
        return resp

    # ---- learning, off the request path ------------------------------------------------
    def _learn_later(self, plan: _Plan, resp: QueryResponse) -> None:
        """Queue judge → experience log → router update; never blocks the answer."""
        if self._bg is None:
            from ruvllm.learning.learner import BackgroundWorker

            with self._lock:
                if self._bg is None:
                    self._start_online()
                    self._bg = BackgroundWorker(self._after_answer, maxsize=self.config.learning.queue_size,
                                                on_close=self._online.close if self._online else None)
        x = None
        if self._online is not None:
            x = plan.x  # what the router routed on, its history slots as they were then
            if x is None:  # defensive: every plan the FastGRNN routed carries its x
                assert isinstance(self._router, FastGRNNRouter)
                x = self._router.featurize(RouteInput(plan.question, 0, 0.0, 0, features=plan.features))
            if not plan.forced:  # the router chose this model: feedback on the answer is feedback on that choice
                with self._lock:
                    self._routed[resp.request_id] = (x, resp.model, _propensity(resp))
                    while len(self._routed) > RECENT_REQUESTS:
                        self._routed.popitem(last=False)
        self._bg.submit((resp, [c.text for c in plan.built.used], x, plan))

    def _start_online(self) -> None:
        router = self.router
        if isinstance(router, FastGRNNRouter):
            from ruvllm.learning.router_online import RouterOnline, RouterOnlineConfig

            lc = self.config.learning
            cfg = RouterOnlineConfig(replay_capacity=lc.replay_size, ewc_lambda=lc.ewc_lambda)
            self._online = RouterOnline(router.params, cfg, on_publish=lambda p: setattr(router, "params", p))

    def _after_answer(self, item: tuple[Any, ...]) -> None:
        if not self._anchor_tried:  # on the worker, before the first experience: off the request path
            self._anchor_tried = True
            self._anchor_online()
        if item[0] == "feedback":  # (tag, request id, features, model, score, propensity, question): a user's verdict
            _, rid, x, model, score, propensity, question = item
            self._online.feedback(x, model, score, propensity=propensity, text=question, request_id=rid)
            return
        resp, contexts, x, plan = item
        quality, judged_by = self._judged(resp.question, resp.answer, contexts)
        label = None
        if x is not None and self._shadow_due(plan, contexts):
            try:
                label = self._shadow_label(plan, resp, contexts, quality)
            except Exception as exc:  # a failed extra run must not cost the served answer's experience
                self._shadow_errors += 1
                log.warning("shadow label of request %s failed: %s", resp.request_id, exc)
        record = {
            "request_id": resp.request_id, "time": time.time(), "question": resp.question, "model": resp.model,
            "decision": resp.decision.to_dict(), "quality": quality, "judged_by": judged_by,
            "latency_ms": resp.total_ms, "completion_tokens": resp.usage.get("completion_tokens", 0),
        }
        if label is not None:
            record["shadow"] = {**label.to_dict(),
                                "pattern": pattern_key(plan.question, getattr(plan.features, "top_hit", "") or "")}
        _append_jsonl(self.data_dir / "experiences.jsonl", record)
        if self._online is not None and x is not None:
            self._online.observe(self._online.experience(
                x, resp.model, quality, text=resp.question, propensity=_propensity(resp),
                request_id=resp.request_id, target=label.best if label is not None else None))
        if label is not None:
            self._grow_history(plan, label.best)

    def _anchor_online(self) -> None:
        """``learning.anchor``: anchor the online router on its own training rows
        (``RouterOnline.add_anchor``: EWC on the trained weights, replay seeded, and a publish gate
        on the rows' utility regret). The rows are the labelled set named by ``train_report.json``
        beside the checkpoint, at most ``MAX_ANCHOR_ROWS`` of its training split (seeded sample).
        When it cannot be read, or was made for other models, the learner runs unanchored and the
        log says why."""
        online, router = self._online, self._router
        path = getattr(router, "path", None)
        if online is None or path is None or not self.config.learning.anchor:
            return
        from ruvllm.errors import RuvLLMError
        from ruvllm.learning.router_online import anchor_experiences
        from ruvllm.router.base import RouteInput
        from ruvllm.router.oracle import load_labelled

        report = Path(path).parent / "train_report.json"
        try:
            labelled = Path(json.loads(report.read_text())["labelled"])
            if not labelled.is_absolute() and not labelled.exists():  # a relative path from another cwd
                labelled = report.parent / labelled.name
            records = [r for r in load_labelled(labelled) if r.split == "train"]
        except (OSError, KeyError, TypeError, ValueError, RuvLLMError) as exc:
            log.warning("learning: the router's training rows cannot be read (%s: %s); the online router runs "
                        "unanchored", report, exc)
            return
        if not records or list(records[0].models) != list(online.models):
            log.warning("learning: %s holds no training rows for the router's models %s; the online router runs "
                        "unanchored", labelled, online.models)
            return
        if len(records) > MAX_ANCHOR_ROWS:
            keep = np.random.default_rng(0).choice(len(records), size=MAX_ANCHOR_ROWS, replace=False)
            records = [records[int(i)] for i in sorted(keep)]
        featurize = router.featurize  # type: ignore[union-attr]
        try:
            online.add_anchor(anchor_experiences(
                lambda r: featurize(RouteInput(r.query, 0, 0.0, 0, features=r.feature_input())), records))
        except (ValueError, TypeError, RuvLLMError) as exc:  # rows that do not fit the router: say so, go on
            log.warning("learning: %s does not fit the router (%s); the online router runs unanchored", labelled, exc)
            return
        log.info("learning: the online router is anchored on %d training rows of %s", len(records), labelled)

    def _judged(self, question: str, answer: str, contexts: list[str]) -> tuple[float, str]:
        """(quality, judged by) of a served answer, for the experience log and the online router.

        An exact check when one applies (``cascade.exact_check``): a request for code naming its
        symbol (does the answer's code call it?), a question for a signature its docs write (the
        answer's parameter names against it). Otherwise, with ``learning.judge_model`` set, the
        judge's yes/no verdict against the docs the question names (``cascade.reference_docs``;
        P(yes)), then, when the backend cannot give one, its rubric score; else, or when the judge's
        reply is unusable, the answer's grounding in its contexts. Measured on the real answers
        (docs/router.md): which model each picks is the gold-checked oracle's on 94% (code), 83%
        (signatures), 69% (the verdict on the other types, 48 questions), 33% (the rubric, 24) and
        15–30% (grounding) of answer sets."""
        quality = cascade.check_quality(question, answer, contexts)
        kind = cascade.exact_check(question, contexts)
        name = self.config.learning.judge_model
        if kind != "grounding" or not name or not answer:
            return quality, _JUDGED_BY[kind]
        if self._judge is None:
            from ruvllm.judge_llm import LLMJudge

            self._judge = LLMJudge(self.pool.get(name))
        verdict = self._judge.verdict(question, answer, cascade.reference_docs(question, contexts))
        if verdict is not None:
            return verdict, f"verdict:{name}"
        scored = self._judge.score(question, answer, contexts)  # a backend without next-token probabilities
        if scored is not None:  # an unusable reply is counted by the judge, and grounding stands
            return scored.quality, f"judge:{name}"
        return quality, _JUDGED_BY[kind]

    def _shadow_due(self, plan: _Plan, contexts: list[str]) -> bool:
        """Only a question the cascade checks exactly (``cascade.exact_check``: a request for code
        naming its symbol, or a question for a signature its served ``contexts`` write), drawn with probability
        ``router.shadow``, unless the router's pattern history already holds
        ``router.shadow_per_pattern`` wins for its pattern. On other questions grounding and the LLM
        judge's rubric pick the gold-checked oracle's model no more often than chance, and its
        verdict is wrong one time in three (docs/router.md), so their labels would teach the router
        noise; the exact checks agree with the oracle on 94% of code answers and 100% of checked
        signature answers."""
        rc = self.config.router
        if rc.shadow <= 0 or self._shadow_rng.random() >= rc.shadow:
            return False
        if cascade.exact_check(plan.question, contexts) == "grounding":
            return False
        history = getattr(self._router, "history", None)
        if history is None or rc.shadow_per_pattern <= 0:
            return True
        return history.count(plan.question, getattr(plan.features, "top_hit", "") or "") < rc.shadow_per_pattern

    def _shadow_label(self, plan: _Plan, resp: QueryResponse, docs: list[str],
                      served_quality: float) -> ShadowLabel | None:
        """``router.shadow``: every other model the router can choose answers the same question
        with the same context budget and sampling; every answer is scored by the cascade's exact
        check (``cascade.check_quality``) against the served prompt's ``docs``, whatever judge is
        configured: the only checks measured to rank models. The served answer's score is
        ``served_quality``, which ``_judged`` made with that same check (an exact check outranks any
        judge there). The best utility is the question's label (``router/shadow.py``). None when
        the router has no other model."""
        from ruvllm.router.fastgrnn_router import FastGRNNRouter
        from ruvllm.router.shadow import ShadowRun, label_runs

        router = self.router
        assert isinstance(router, FastGRNNRouter)
        others = [m for m in router.models if m != resp.model]
        if not others or resp.model not in router.models:
            return None
        stages = resp.latency_ms
        served_ms = stages.get("generate_escalated", stages.get("generate", resp.total_ms))
        tokens = resp.usage.get("prompt_tokens", 0) + resp.usage.get("completion_tokens", 0)
        runs = [ShadowRun(resp.model, served_quality, served_ms, self._cost(resp.model, tokens))]
        for m in others:
            gen = self.pool.get(m)
            built = self._build(plan.question, plan.ranked, dataclasses.replace(plan.decision, model=m), gen,
                                plan.params)
            t0 = time.perf_counter()
            out = _generate(gen, built, plan.params)
            ms = out.total_ms or (time.perf_counter() - t0) * 1000.0
            q = cascade.check_quality(plan.question, clean_answer(out.text), docs)
            runs.append(ShadowRun(m, q, ms, self._cost(m, out.prompt_tokens + out.completion_tokens)))
        label = label_runs(runs)
        self._shadow_labels += 1
        return label

    def _cost(self, model: str, tokens: int) -> float:
        """The oracle's cost unit: parameters in billions × tokens in thousands."""
        return float(self.registry.spec(model).params_m) / 1000.0 * tokens / 1000.0

    def _grow_history(self, plan: _Plan, best: str) -> None:
        """A shadow label is a win for ``best`` on the question's pattern, when the router reads a
        pattern history. The wins learnt in use are saved beside the checkpoint's table
        (``<model>_history_online.json``, atomic) after each one, so a killed process loses none; a
        save that fails is tried again with the next win and on close."""
        router = self._router
        history = getattr(router, "history", None)
        if history is None or best not in history.models:
            return
        history.add(plan.question, history.models.index(best), getattr(plan.features, "top_hit", "") or "",
                    online=True)
        self._history_unsaved += 1
        self._save_history()

    def _save_history(self) -> None:
        history, path = getattr(self._router, "history", None), getattr(self._router, "path", None)
        if history is not None and self._history_unsaved and path is not None:
            history.save_online(path)
            self._history_unsaved = 0

    def learning_stats(self) -> dict[str, Any]:
        bg = self._bg
        out: dict[str, Any] = {"enabled": self.config.learning.enabled}
        if bg is not None:
            out.update(submitted=bg.submitted, processed=bg.processed, dropped=bg.dropped, errors=bg.errors)
        if self._judge is not None:
            out["judge"] = self._judge.stats()
        if self._online is not None:
            out["router_publishes"] = self._online.publishes
            # training rows the online router is anchored on, and publishes its utility gate refused
            out["router_anchored"] = self._online.anchored
            out["router_gate_rejections"] = self._online.gate_rejections
        if self.config.router.shadow > 0:
            out["shadow_labels"] = self._shadow_labels
            out["shadow_errors"] = self._shadow_errors
        return out

    # ---- feedback ------------------------------------------------------------------
    def feedback(self, request_id: str, score: float, *, comment: str = "") -> dict[str, Any]:
        """A user's judgement of an earlier answer: ``score`` in [0, 1] (1 = good).

        A bad score on an answer that was written back lowers that node's confidence
        (history is kept); the event is appended to ``feedback.jsonl``. When the router chose the
        model and learns online (FastGRNN, learning on), the score also goes, on the background
        worker, to ``RouterOnline.feedback``: a bad one pushes the router away from that model for
        such queries, a good one pulls it closer (``"router": "queued"`` in the returned event).
        """
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise InvalidInputError(f"feedback score must be a number in [0, 1], got {score!r}")
        with self._lock:
            resp = self._recent.get(request_id)
        if resp is None:
            raise NotFoundError(f"no recent request with id {request_id!r} (feedback applies to this process's "
                                f"last {RECENT_REQUESTS} answers)")
        event = {"request_id": request_id, "score": float(score), "comment": comment, "time": time.time(),
                 "model": resp.model, "question": resp.question, "quality": resp.quality}
        node_id = resp.writeback.get("node_id") if resp.writeback else None
        if node_id:
            node = self.memory.get(node_id)
            blended = 0.5 * node.metadata.confidence + 0.5 * float(score)
            self.memory.update(node_id, confidence=round(blended, 4))
            event["node_id"] = node_id
        with self._lock:
            routed = self._routed.get(request_id)
        if routed is not None and self._online is not None and self._bg is not None:
            x, model, propensity = routed
            if self._bg.submit(("feedback", request_id, x, model, float(score), propensity, resp.question)):
                event["router"] = "queued"
        _append_jsonl(self.data_dir / "feedback.jsonl", event)
        return event

    def _remember(self, resp: QueryResponse) -> None:
        with self._lock:
            self._recent[resp.request_id] = resp
            while len(self._recent) > RECENT_REQUESTS:
                self._recent.popitem(last=False)

    def _apply_overrides(self, decision: Decision, model: str | None) -> Decision:
        if model is not None:
            self.registry.spec(model)  # unknown name → ModelNotFoundError listing the available ones
            if model not in self.installed_models():
                raise ModelNotFoundError(f"model {model!r} is not installed; see `ruvllm models`")
            return Decision(model, decision.context_tokens, decision.temperature, decision.top_p,
                            decision.confidence, reason=f"model chosen by the caller ({decision.reason})")
        sizes = self._model_sizes()
        return cascade.fallback(decision, list(sizes), sizes, self._cascade_policy())

    def _build(self, question: str, ranked: list[ContextItem], decision: Decision, gen: Generator,
               params: SamplingParams) -> BuiltPrompt:
        q_tokens = gen.count_tokens(question)
        room = gen.n_ctx - params.max_tokens - q_tokens - 64  # 64: instructions and template
        if room < 0:
            raise ContextOverflowError(
                f"the question is {q_tokens} tokens; model {gen.name}'s context window is {gen.n_ctx} tokens "
                f"with {params.max_tokens} kept for the answer: shorten the question or raise llm.n_ctx"
            )
        budget = min(decision.context_tokens, room)
        if gen.prompt_style == "completion":
            ranked = _without_stored_answers(ranked)
        return build_prompt(question, ranked, style=gen.prompt_style, context_budget=budget,
                            count_tokens=gen.count_tokens)

    # ---- misc ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "memory": self.memory.stats(),
            "models": {
                "configured": self.config.llm.models,
                "installed": self.installed_models(),
                "loaded": self.pool.loaded(),
            },
            "router": self.config.router.kind,
            "learning": self.learning_stats(),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bg is not None:
            self._bg.close()  # drain: every queued experience is judged and logged before we stop
        try:
            self._save_history()
        except OSError as exc:  # e.g. a full disk: the memory store must still close cleanly
            log.warning("could not save the router's pattern history learnt in use: %s", exc)
        self.pool.close()
        self.memory.close()

    def __enter__(self) -> RuvLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _check_question(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"the question must be a string, got {type(text).__name__}")
    question = text.strip()
    if not question:
        raise InvalidInputError('the question is empty; ask something, e.g. ruvllm ask "What does json.dumps do?"')
    if len(question) > MAX_QUERY_CHARS:
        raise ContextOverflowError(
            f"the question is {len(question)} characters, over the {MAX_QUERY_CHARS}-character limit "
            "(no configured context window holds it); shorten it"
        )
    return question


def _rank(question: str, qvec: np.ndarray, hits: Sequence[Any], expanded: Sequence[Any]) -> list[ContextItem]:
    """Retrieved nodes by similarity; graph neighbours by their own similarity, discounted per hop;
    a source the question names explicitly is lifted by ``NAME_BOOST``. A stored answer (Query
    node) enters only when its question names the same symbols as this one."""
    named = named_symbols(question)
    items: dict[str, ContextItem] = {}
    for h in hits:
        n = h.node
        if n.type == NodeType.QUERY and named_symbols(parse_qa(n.text)[0]) != named:
            continue  # another question's stored answer: a small model copies it as if it were this one's
        items[n.id] = ContextItem(n.id, n.text, float(h.score), n.source, n.type.value, 0)
    for e in expanded:
        n = e.node
        if n.id in items or (n.type == NodeType.QUERY and named_symbols(parse_qa(n.text)[0]) != named):
            continue
        sim = float(np.dot(qvec, n.vector) / (np.linalg.norm(n.vector) * np.linalg.norm(qvec) + 1e-9))
        items[n.id] = ContextItem(n.id, n.text, sim * HOP_DISCOUNT ** e.hop, n.source, n.type.value, e.hop)
    if named:
        for item in items.values():
            if item.source.rpartition(":")[2] in named:
                item.score += NAME_BOOST
    return sorted(items.values(), key=lambda c: -c.score)


def _with_documents(memory: Any, qvec: np.ndarray, hits: list[Any], k: int) -> list[Any]:
    """``hits``, plus as many further documents as stored answers (Query nodes) took of the k
    places: a stored answer to another question is left out of the context, and a base model is
    shown none (``_without_stored_answers``), so without these the context shrank as memory
    filled, and the memory-on arm of bench/selflearn.py answered first askings worse than the
    memory-off arm with the same model. One deeper search, only when a stored answer is a hit."""
    n_docs = sum(h.node.type != NodeType.QUERY for h in hits)
    if n_docs == len(hits) or len(hits) < k:  # no stored answers, or fewer nodes than k in memory
        return hits
    deeper = memory.search(qvec, k=min(MAX_K, 3 * k))
    seen = {h.node.id for h in hits}
    extra = [h for h in deeper if h.node.id not in seen and h.node.type != NodeType.QUERY]
    return [*hits, *extra[: k - n_docs]]


def _without_stored_answers(ranked: list[ContextItem]) -> list[ContextItem]:
    """A base model's context: the documents, without stored answers (Query nodes).

    A base model recites its context. bench/selflearn.py measured what stored answers do to
    gemma-270m's prompt: shown as "Q: … A: …" it recited the pair (11 of 82 generated answers),
    and where both arms generated, the arm with stored answers in its context scored lower (token
    F1 0.28 vs 0.37; 0.30 vs 0.36 with the bare answer shown instead of the pair). Without them,
    and with ``_with_documents`` keeping the k documents, the two arms tie (0.351 vs 0.350). A
    stored answer that matches the question is served by recall before any model runs; instruct
    models still see stored answers as context."""
    return [c for c in ranked if c.type != NodeType.QUERY.value]


def _generate(gen: Generator, built: BuiltPrompt, params: SamplingParams) -> Generation:
    if built.style == "completion":
        t0 = time.perf_counter()
        ttft = 0.0
        pieces: list[str] = []
        for piece in _stream(gen, built, params):
            if not pieces:
                ttft = (time.perf_counter() - t0) * 1000.0
            pieces.append(piece)
        text = "".join(pieces)
        return Generation(text, built.prompt_tokens, gen.count_tokens(text) if text else 0, "stop", ttft_ms=ttft,
                          total_ms=(time.perf_counter() - t0) * 1000.0, model=gen.name)
    return gen.chat(built.messages, params)


def _stream(gen: Generator, built: BuiltPrompt, params: SamplingParams) -> Iterator[str]:
    if built.style == "completion":
        return _until_blank_line(gen, built, params)
    return gen.stream_chat(built.messages, params)


def _until_blank_line(gen: Generator, built: BuiltPrompt, params: SamplingParams) -> Iterator[str]:
    """A base model's answer ends at its first blank line *after* some text: passing "\n\n" to
    llama.cpp as a stop would end the many answers that begin with one, empty. Leaving the loop
    closes the generator, which stops llama.cpp."""
    stops = tuple(s for s in built.stop if s.strip())
    p = SamplingParams(params.max_tokens, params.temperature, params.top_p, stops, params.seed)
    text = ""
    for piece in gen.stream_complete(built.prompt, p):
        before = len(text)
        text += piece
        body_start = len(text) - len(text.lstrip())
        cut = text.find("\n\n", body_start) if body_start < len(text) else -1
        if cut >= 0:
            if cut > before:
                yield text[before:cut]
            return
        yield piece


def _sources(used: Sequence[ContextItem]) -> list[Source]:
    return [Source(c.node_id, round(c.score, 4), c.type, c.source, _snippet(c.text), c.hop) for c in used]


_JUDGED_BY = {"code": "code check", "signature": "signature check", "grounding": "grounding"}


def _propensity(resp: QueryResponse) -> float:
    """P(the router picks the model that answered): the decision's own, unless a fallback or an
    escalation replaced the model (a deterministic rule: 1)."""
    d = resp.decision
    return float(d.propensity) if d.model == resp.model else 1.0


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _snippet(text: str, n: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _domain_of(used: Sequence[ContextItem]) -> str:
    return used[0].source.removeprefix("stdlib:").split(".")[0] if used else ""


def _read_manifest(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        from ruvllm.errors import DataDirError

        raise DataDirError(f"{path} is corrupt; move it away to re-ingest from scratch") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
