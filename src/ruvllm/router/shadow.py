"""Shadow labels: the oracle's phase 1 on served queries, so the router keeps learning from use.

With ``router.shadow = r`` (FastGRNN router, learning on) the orchestrator's background worker
has every other installed model answer a share r of the served questions the cascade checks
exactly (``cascade.exact_check``) too, with the same retrieved context, context budget and
sampling as the served answer. Those are requests for code that name their symbol, and questions
for a signature that the served prompt's docs write. Each answer, the served one included, is
scored by that check (``cascade.check_quality``: does its code call the symbol asked for; how
well do its parameter names match the doc's signature), and the question's label is the model
with the best utility U = Q − λ·L[s] − μ·C, the formula every oracle label is made with
(``oracle.utility_table``; L the generation's latency, C = params[B] · tokens / 1000). Other
questions are not labelled: on the real labels' stored answers neither grounding nor the LLM
judge's rubric picks the gold-checked best model much more often than chance, while the code
check agrees on 94% of code answers and the signature check on every signature answer it covers
(``bench/router_online.py``, docs/router.md).

The label is what a training label is, with the exact check in place of running the snippet, so
it serves twice: the online learner trains on it as a known target (``Experience.target``), and the
router's pattern history (``router/history.py``) counts it as a win for that model on the
question's pattern. The cost is one extra generation per other model on the sampled queries,
off the request path but on the same cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ruvllm.errors import InvalidInputError
from ruvllm.router.oracle import OracleConfig, utility_table

LAMBDA = OracleConfig.lam  # the oracle's defaults: a shadow label means what a training label means
MU = OracleConfig.mu


@dataclass(frozen=True)
class ShadowRun:
    """One model's answer to the question: judged quality in [0, 1], generation latency, cost."""

    model: str
    quality: float
    latency_ms: float
    cost: float


@dataclass(frozen=True)
class ShadowLabel:
    best: str
    runs: tuple[ShadowRun, ...]
    utilities: tuple[float, ...]  # per run, in the runs' order

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "runs": [{**asdict(r), "utility": round(u, 4)}
                                            for r, u in zip(self.runs, self.utilities, strict=True)]}


def label_runs(runs: Sequence[ShadowRun], lam: float = LAMBDA, mu: float = MU) -> ShadowLabel:
    """The run with the best utility (ties: the first, i.e. the served answer)."""
    if len(runs) < 2:
        raise InvalidInputError(f"a shadow label compares at least 2 models' answers, got {len(runs)}")
    if len({r.model for r in runs}) != len(runs):
        raise InvalidInputError(f"a shadow label needs one answer per model, got {[r.model for r in runs]}")
    for r in runs:
        if not (0.0 <= r.quality <= 1.0 and r.latency_ms >= 0 and r.cost >= 0):
            raise InvalidInputError(f"shadow run of {r.model}: quality must be in [0, 1], latency and cost >= 0")
    u, best, _ = utility_table(np.array([[r.quality] for r in runs]), np.array([[r.latency_ms] for r in runs]),
                               np.array([[r.cost] for r in runs]), lam, mu)
    return ShadowLabel(runs[best].model, tuple(runs), tuple(float(x) for x in u[:, 0]))
