"""A minimum-norm attack under a fixed budget: robust accuracy at ε from the smallest
perturbation found.

``attacks.create("cw-l2", threat="l2:2")`` builds ``WithinBudget(CarliniWagnerL2(), "l2:2")``,
an ordinary fixed-ε attack: the minimum-norm search runs with the budget ε in view (C&W ℓ∞
starts its τ at min(ε, 1)), and its answer — the smallest adversarial input where one was found,
the best effort elsewhere — is projected onto the ball ∩ box and evaluated by the contract. A
minimal perturbation larger than ε is shrunk to ε and then usually fails; one within ε is kept
exactly. For the distances themselves call the minimum-norm attack directly
(``attacks.create_minimum_norm("cw-l2")(model, x, y).distance``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .. import losses
from ..threats import Threat, ThreatParams
from .base import Attack, Context, MinimumNormAttack


@dataclass(frozen=True, kw_only=True)
class WithinBudget(Attack):
    """The fixed-ε attack of a minimum-norm attack (see the module).

    Args:
        attack: the minimum-norm attack.
        threat: an ℓp ball of the attack's norm.
    """

    attack: MinimumNormAttack

    @property
    def label(self) -> str:
        return self.attack.name

    def _supports(self, threat: Threat) -> bool:
        return self.attack.supports(threat)

    def _supported_description(self) -> str:
        return self.attack.supported_description()

    def _loss_fn(self) -> losses.Loss:
        return self.attack._loss_fn()

    def with_options(self, **changes: Any) -> WithinBudget:
        """A copy with options of the minimum-norm attack (or ``threat``) changed."""
        threat = changes.pop("threat", self.threat)
        seed = changes.get("seed", self.seed)
        return dataclasses.replace(
            self, threat=threat, seed=seed, attack=dataclasses.replace(self.attack, **changes)
        )

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        points, _ = self.attack._run(ctx)
        return points, None
