"""Elastic Weight Consolidation (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018).

After learning on some data, the diagonal of the empirical Fisher information

    F_i = E_x [ (∂ log p(y|x; θ) / ∂θ_i)² ]        estimated from per-example gradients

says how much each parameter mattered. Later training adds the penalty

    (λ / 2) · Σ_i F_i (θ_i − θ*_i)²

which lets unimportant weights move freely and pins important ones near θ*. Online EWC keeps
one running Fisher instead of one per task, so memory stays constant however long the stream:

    F ← γ·F + F_new,   θ* ← θ      at every consolidation

Consolidations need no task labels: the learner calls ``consolidate`` on a fixed schedule
(every N updates) with a recent window of experiences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ruvllm.errors import InvalidInputError

# loss_fn(model, items) → the mean negative log-likelihood of ``items`` under ``model``
LossFn = Callable[[nn.Module, Sequence[Any]], torch.Tensor]


@dataclass
class EWCConfig:
    lam: float = 100.0  # λ: strength of the penalty; 0 turns EWC off
    gamma: float = 0.9  # decay of the old Fisher in online mode (1.0 = sum of all tasks)
    online: bool = True  # False: keep one (Fisher, anchor) pair per consolidation (classic EWC)
    fisher_samples: int = 200  # examples per Fisher estimate
    normalize: bool = True  # scale each new Fisher estimate to mean 1 (λ then means the same for any model)

    def validate(self) -> EWCConfig:
        if not self.lam >= 0:
            raise InvalidInputError(f"EWC lambda must be >= 0, got {self.lam}")
        if not 0.0 <= self.gamma <= 1.0:
            raise InvalidInputError(f"EWC gamma must be in [0, 1], got {self.gamma}")
        if self.fisher_samples < 1:
            raise InvalidInputError(f"EWC fisher_samples must be >= 1, got {self.fisher_samples}")
        return self


def diag_fisher(
    model: nn.Module, items: Sequence[Any], loss_fn: LossFn, normalize: bool = True
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean of squared per-example gradients of ``loss_fn``."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    if not items:
        return fisher
    was_training = model.training
    model.eval()
    for it in items:  # one example at a time: squared mean gradients would underestimate F
        model.zero_grad(set_to_none=True)
        loss_fn(model, [it]).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    for n in fisher:
        fisher[n] /= len(items)
    if normalize:
        total = sum(float(f.sum()) for f in fisher.values())
        count = sum(f.numel() for f in fisher.values())
        mean = total / max(count, 1)
        if mean > 0:
            fisher = {n: f / mean for n, f in fisher.items()}
    return fisher


class EWC:
    """Holds the consolidated Fisher(s) and anchor(s); ``penalty(model)`` is differentiable."""

    def __init__(self, cfg: EWCConfig | None = None):
        self.cfg = (cfg or EWCConfig()).validate()
        self.terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (fisher, anchor)
        self.consolidations = 0

    def consolidate(self, model: nn.Module, items: Sequence[Any], loss_fn: LossFn) -> None:
        """Estimate F on ``items`` at the current θ and fold it in; θ* ← θ."""
        sample = list(items)[-self.cfg.fisher_samples :]
        new = diag_fisher(model, sample, loss_fn, self.cfg.normalize)
        anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in new}
        if self.cfg.online and self.terms:
            old, _ = self.terms[0]
            fisher = {n: self.cfg.gamma * old[n] + new[n] for n in new}
            self.terms = [(fisher, anchor)]
        elif self.cfg.online:
            self.terms = [(new, anchor)]
        else:
            self.terms.append((new, anchor))
        self.consolidations += 1

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """(λ/2) Σ F (θ − θ*)², summed over the kept terms; 0 before the first consolidation."""
        pen = torch.zeros(())
        if not self.terms or self.cfg.lam == 0:
            return pen
        params = dict(model.named_parameters())
        for fisher, anchor in self.terms:
            for n, f in fisher.items():
                pen = pen + (f * (params[n] - anchor[n]) ** 2).sum()
        return 0.5 * self.cfg.lam * pen

    def state_dict(self) -> dict[str, Any]:
        return {"terms": [({k: v.clone() for k, v in f.items()}, {k: v.clone() for k, v in a.items()})
                          for f, a in self.terms], "consolidations": self.consolidations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.terms = [({k: v.clone() for k, v in f.items()}, {k: v.clone() for k, v in a.items()})
                      for f, a in state["terms"]]
        self.consolidations = int(state["consolidations"])
