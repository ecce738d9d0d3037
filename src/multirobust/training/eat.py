"""E-AT: adversarial training for several ℓp threats at the price of one.

Croce & Hein, "Adversarial robustness against multiple and single lp-threat models via quick
fine-tuning of robust classifiers", ICML 2022. Per batch, one threat t is drawn and the batch
is trained on APGD examples of that threat only, so a step costs what single-threat training
costs, whatever the number of threats. The draw follows the running robust error of each
threat on the training batches it was used for:

    e_t = 1 − (robust training examples under t) / (training examples attacked under t),
    P(t) = e_t / Σ_s e_s,

counted from the start of the run (uniform until every threat has been drawn once, and when
every e_t is 0). The threat the model is weakest against is trained most. Croce & Hein
train on the two extreme norms, ℓ∞ and ℓ1: the convex hull of their balls covers much of the
intermediate ℓ2 ball, which "comes along" (their Figure 1); :func:`extreme_threats` picks
them from a longer list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.apgd_train import apgd_perturb
from ..threats import L1Ball, LpBall
from .mode import attack_mode
from .objectives import ThreatLike, _check_steps, _record, as_lp_balls

__all__ = ["EAT", "extreme_threats"]


def extreme_threats(threats: ThreatLike | Sequence[ThreatLike]) -> list[LpBall]:
    """The threats with the smallest and the largest p (ℓ1 and ℓ∞ of ℓ∞, ℓ2, ℓ1), in order.

    With a single norm, all the threats are returned.
    """
    tms = as_lp_balls(threats)
    low, high = min(t.p for t in tms), max(t.p for t in tms)
    return [t for t in tms if t.p in (low, high)]


def _scale(threat: LpBall, factor: float) -> LpBall:
    if factor >= 1.0:
        return threat
    if isinstance(threat, L1Ball):
        return L1Ball(threat.eps * factor, sparsity=threat.sparsity)
    return type(threat)(threat.eps * factor)


class EAT:
    """Extreme-norm adversarial training (Croce & Hein 2022), with its sampling state.

    Each call of :meth:`loss` draws one threat t with probability :meth:`probabilities`,
    crafts APGD examples under t (:func:`multirobust.attacks.apgd_train.apgd_perturb`, with
    adaptive sparsity under ℓ1), adds the batch's robust count to t's statistics and returns
    the cross-entropy at the adversarial examples.

    Cost per batch: ``steps + 2`` forward and ``steps + 1`` backward passes (APGD skips the
    last backward; one training pass), against ``steps + 1`` / ``steps + 1`` for PGD-AT.

    Args:
        threats: the ℓp balls to draw from (objects or text); Croce & Hein use ℓ∞ and ℓ1.
        steps: APGD iterations (>= 1); Croce & Hein use 10.

    Example::

        eat = EAT(["linf:0.3", "l1:10"])
        for x, y in loader:
            loss = eat.loss(model, x, y, generator=g)
            opt.zero_grad(); loss.backward(); opt.step()
    """

    def __init__(self, threats: ThreatLike | Sequence[ThreatLike], *, steps: int = 10) -> None:
        self.threats = as_lp_balls(threats)
        self.steps = _check_steps(steps)
        count = len(self.threats)
        self.robust = torch.zeros(count, dtype=torch.float64)
        self.seen = torch.zeros(count, dtype=torch.float64)

    def probabilities(self) -> torch.Tensor:
        """P(t) = e_t / Σ_s e_s from the running robust errors e_t; (T,) float64, sums to 1."""
        count = len(self.threats)
        uniform = torch.full((count,), 1.0 / count, dtype=torch.float64)
        if bool((self.seen == 0).any()):
            return uniform
        errors = 1.0 - self.robust / self.seen
        total = errors.sum()
        return uniform if float(total) <= 0 else errors / total

    def robust_errors(self) -> torch.Tensor:
        """Running robust error e_t of each threat on its training batches (NaN before any)."""
        return torch.where(self.seen > 0, 1.0 - self.robust / self.seen.clamp_min(1), torch.nan)

    def draw(self, generator: torch.Generator | None = None) -> int:
        """Index of the threat for the next batch, drawn from :meth:`probabilities`."""
        device = generator.device if generator is not None else torch.device("cpu")
        u = float(torch.rand((), generator=generator, device=device))
        cumulative = self.probabilities().cumsum(0)
        # min(): float rounding may leave the last cumulative value a hair below u.
        return min(int((cumulative <= u).sum()), len(self.threats) - 1)

    def update(self, index: int, robust: int, seen: int) -> None:
        """Add one batch's outcome: ``robust`` of ``seen`` examples resisted threat ``index``."""
        if not 0 <= robust <= seen:
            raise ValueError(
                f"Invalid batch outcome: {robust} robust of {seen} (need 0 <= robust <= seen)"
            )
        self.robust[index] += robust
        self.seen[index] += seen

    def loss(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        eps_scale: float = 1.0,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Draw a threat, attack the batch under it, update the statistics; return the loss.

        Args:
            model: the classifier (in the mode the caller trains it).
            x: images in [0, 1], (N, C, H, W).
            y: labels, (N,).
            generator: draws the threat (and nothing else: APGD starts at x).
            eps_scale: factor on every ε (the fit loop's ε warm-up), in (0, 1].
            stats: optional dict receiving ``"adv_logits"`` and ``"threat_index"`` (N,).

        Returns:
            The scalar cross-entropy at the adversarial examples.
        """
        pick = self.draw(generator)
        threat = _scale(self.threats[pick], eps_scale)
        x = x.detach()
        with attack_mode(model):
            x_adv, robust, _ = apgd_perturb(model, x, y, threat, steps=self.steps)
        self.update(pick, int(robust.sum()), int(robust.numel()))
        logits = model(x_adv)
        _record(stats, adv_logits=logits, threat_index=torch.full_like(y, pick))
        return F.cross_entropy(logits, y)

    def state_dict(self) -> dict[str, Any]:
        """The running statistics, for checkpoints."""
        return {"robust": self.robust.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        robust = torch.as_tensor(state["robust"], dtype=torch.float64)
        seen = torch.as_tensor(state["seen"], dtype=torch.float64)
        if robust.shape != self.robust.shape or seen.shape != self.seen.shape:
            raise ValueError(
                f"E-AT state for {robust.numel()} threat(s) does not fit {len(self.threats)}"
            )
        self.robust, self.seen = robust.clone(), seen.clone()
