"""SPSA (Uesato et al. 2018): projected gradient ascent on gradients estimated from queries.

"Adversarial Risk and the Dangers of Evaluating Against Weak Attacks" (ICML 2018) showed that
defences whose gradients are masked (zero, noisy, or wrong) fall to an attack that never asks
the model for a gradient: the simultaneous perturbation stochastic approximation of Spall
(1992). Each step draws ``samples`` / 2 Rademacher directions u ∈ {−1, +1}^D, queries the loss
at x ± δu, and estimates

    ĝ = (1 / k) Σ_i [ℓ(x + δu_i) − ℓ(x − δu_i)] / (2δ) · u_i,

then takes an Adam step along ĝ and projects onto the threat's ball ∩ the box. With enough
samples the estimate follows the *function's* slope, whatever the model's backward pass says,
so a gradient-blocking layer, a straight-through mistake or a detached branch does not hide
it. Only forward passes are used (``samples`` + 1 per example and step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import L2Ball, LinfBall, Threat, ThreatParams
from .base import Attack, Context, check_positive, check_positive_int
from .registry import register

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


@register("spsa")
@dataclass(frozen=True, kw_only=True)
class SPSA(Attack):
    """SPSA attack (Uesato et al. 2018): Adam on finite-difference gradient estimates, ℓ∞ and ℓ2.

    The query points x ± δu are clipped to the box, so the model is never asked about an input
    outside it. An example leaves the batch as soon as its current point meets the goal; the
    point kept for the others is the one of highest loss seen.

    Args:
        steps: iterations (Uesato et al.: 100).
        samples: loss evaluations per example and iteration for the estimate (an even number:
            ``samples`` / 2 antithetic pairs; Uesato et al. use 8192 on CIFAR-10, cleverhans
            128).
        delta: finite-difference radius δ (0.01, as in the paper).
        lr: Adam's step size (0.01, as in the paper), in input units per coordinate.
        random_start: start from a random point of the ball instead of the clean input.
        loss: loss to maximise; None is the margin loss (the paper's logit difference).
        batch_size: query points per forward pass.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall, L2Ball)
    default_loss: ClassVar[str] = "margin"
    steps: int = 100
    samples: int = 128
    delta: float = 0.01
    lr: float = 0.01
    random_start: bool = False
    loss: Any = None
    batch_size: int = 8192

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("samples", self.samples)
        if self.samples % 2:
            raise ValueError(
                f"Invalid samples: {self.samples!r} (must be even: samples / 2 antithetic pairs)"
            )
        check_positive("delta", self.delta)
        check_positive("lr", self.lr)
        check_positive_int("batch_size", self.batch_size)
        if not isinstance(self.random_start, bool):
            raise ValueError(f"Invalid random_start: {self.random_start!r} (must be True or False)")

    def _losses(self, ctx: Context, points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The loss at ``points`` (R·S, ...) of examples ``rows`` (R,), S each: (R, S)."""
        per = points.shape[0] // rows.numel()
        y = ctx.y[rows].repeat_interleave(per)
        targets = None if ctx.targets is None else ctx.targets[rows].repeat_interleave(per)
        out = []
        with torch.no_grad():
            for i in range(0, points.shape[0], self.batch_size):
                part = slice(i, i + self.batch_size)
                logits = ctx.model(points[part])
                out.append(ctx.loss(logits, y[part], None if targets is None else targets[part]))
        return torch.cat(out).view(rows.numel(), per)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        threat = ctx.ball
        x, g = ctx.x, ctx.generator
        n = x.shape[0]
        x_adv = threat.random_init(x, g) if self.random_start else x.clone()
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        best = x_adv.clone()
        best_loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        pairs = self.samples // 2
        shape = x.shape[1:]
        for t in range(1, self.steps + 1):
            rows = (~done).nonzero().flatten()
            if rows.numel() == 0:
                break
            xa = x_adv[rows]
            bits = torch.randint(0, 2, (rows.numel(), pairs, *shape), generator=g, device=x.device)
            u = (2 * bits - 1).to(x.dtype)
            centre = xa.unsqueeze(1)
            plus = (centre + self.delta * u).clamp(0.0, 1.0)
            minus = (centre - self.delta * u).clamp(0.0, 1.0)
            values = self._losses(ctx, torch.cat([plus, minus], 1).flatten(0, 1), rows)
            slope = (values[:, :pairs] - values[:, pairs:]) / (2 * self.delta)
            grad = (slope.view(*slope.shape, *([1] * len(shape))) * u).mean(1)
            m[rows] = _BETA1 * m[rows] + (1 - _BETA1) * grad
            v[rows] = _BETA2 * v[rows] + (1 - _BETA2) * grad.square()
            m_hat = m[rows] / (1 - _BETA1**t)
            v_hat = v[rows] / (1 - _BETA2**t)
            step = xa + self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)
            xa = threat.project(step, x[rows])
            x_adv[rows] = xa
            with torch.no_grad():
                logits = ctx.model(xa)
            targets = None if ctx.targets is None else ctx.targets[rows]
            loss = ctx.loss(logits, ctx.y[rows], targets)
            hit = ctx.met(logits, rows)
            better = hit | (loss > best_loss[rows])
            best[rows[better]] = xa[better]
            best_loss[rows[better]] = loss[better]
            done[rows] |= hit
        return best, None
