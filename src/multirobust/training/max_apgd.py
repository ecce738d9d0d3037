"""MAX with APGD examples: the per-example worst threat, at a few strong steps per threat.

Tramèr & Boneh's MAX ("Adversarial Training and Robustness for Multiple Perturbations",
NeurIPS 2019) trains on the worst of the threats' adversarial examples, per example. With
k-step PGD per threat it costs T·k attack steps per batch, T times single-threat training.
APGD (Croce & Hein 2020; ℓ1 with adaptive sparsity, Croce & Hein 2021) reaches a higher loss
in fewer steps, so k can shrink with T: with T = 3 threats and k = 3 steps a batch costs
about what 10-step PGD on one threat costs. The worst threat is picked from the losses APGD
already computed at its best points, so the choice costs no pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.apgd_train import apgd_perturb
from .mode import attack_mode
from .objectives import ThreatLike, _check_steps, _record, as_lp_balls

__all__ = ["max_apgd_loss"]


def max_apgd_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 3,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """MAX over ℓp threats with ``steps``-step APGD examples.

    For each threat t, x'_t = APGD_t(x) (the highest-loss iterate, from x); per example
    x* = x'_{t*}, t* = argmax_t CE(f(x'_t), y); the loss is (1/N) Σ CE(f(x*_i), y_i).
    Cost per batch: T·(k + 1) + 1 forward and T·k + 1 backward passes.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text), or one ``union(...)``.
        steps: APGD iterations per threat (>= 1).
        generator: unused (APGD starts at x); accepted for a uniform interface.
        stats: optional dict receiving ``"adv_logits"`` and ``"threat_index"`` (N,).

    Returns:
        The scalar loss.
    """
    del generator
    tms = as_lp_balls(threats)
    steps = _check_steps(steps)
    x = x.detach()
    with attack_mode(model):
        results = [apgd_perturb(model, x, y, t, steps=steps) for t in tms]
    with torch.no_grad():
        index = torch.stack([r.loss for r in results]).argmax(0)
        stacked = torch.stack([r.x_adv for r in results])
        x_adv = stacked[index, torch.arange(x.shape[0], device=x.device)]
    logits = model(x_adv)
    _record(stats, adv_logits=logits, threat_index=index)
    return F.cross_entropy(logits, y)
