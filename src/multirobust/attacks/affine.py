"""Attack on affine combinations of two ℓp balls (Tramèr & Boneh 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch

from ..threats import Affine, AffineParams, LpBall, Threat, ThreatParams
from .base import Attack, Context, check_positive_int
from .gradients import input_gradient
from .registry import register


@register("affine")
@dataclass(frozen=True, kw_only=True)
class AffineAttack(Attack):
    """PGD on both parts of λ·δa + (1−λ)·δb, for each λ of a grid, keeping per example the worst.

    For a fixed λ the set is the Minkowski sum λ·A + (1−λ)·B, so each part takes its own
    steepest-ascent step on the shared gradient and its own projection:
    δa ← Π_A(δa + α_a·s_A(∇)), δb ← Π_B(δb + α_b·s_B(∇)). Both parts are projected with the
    box, so the combination x + λ·δa + (1−λ)·δb (a convex combination of two points in the box)
    is in the box too, and ``params = (λ, δa, δb)`` certifies membership.

    Args:
        lambdas: number of evenly spaced λ in [0, 1] (0 and 1 are the two balls alone).
        steps: PGD steps per λ.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (Affine,)
    lambdas: int = 5
    steps: int = 40
    loss: Any = None
    random_start: bool = True

    def _validate(self) -> None:
        check_positive_int("lambdas", self.lambdas)
        check_positive_int("steps", self.steps)

    def _one_lambda(
        self, ctx: Context, lam: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = _affine(ctx).a, _affine(ctx).b
        x = ctx.x
        if self.random_start:
            da = a.random_init(x, ctx.generator) - x
            db = b.random_init(x, ctx.generator) - x
        else:
            da, db = torch.zeros_like(x), torch.zeros_like(x)
        alpha_a, alpha_b = a.default_step_size(self.steps), b.default_step_size(self.steps)
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        keep_a, keep_b = da.clone(), db.clone()
        view = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(self.steps):
            x_adv = x + lam * da + (1 - lam) * db
            grad, logits, _ = input_gradient(ctx.model, x_adv, ctx.y, ctx.loss, ctx.targets)
            with torch.no_grad():
                hit = ctx.met(logits) & ~found
                keep_a = torch.where(hit.view(view), da, keep_a)
                keep_b = torch.where(hit.view(view), db, keep_b)
                found |= hit
                if lam > 0:
                    da = _step(a, x, da, grad, alpha_a)
                if lam < 1:
                    db = _step(b, x, db, grad, alpha_b)
        da = torch.where(found.view(view), keep_a, da)
        db = torch.where(found.view(view), keep_b, db)
        return da, db, found, x + lam * da + (1 - lam) * db

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        x = ctx.x
        n = x.shape[0]
        best = (
            torch.zeros(n, device=x.device, dtype=x.dtype),
            torch.zeros_like(x),
            torch.zeros_like(x),
        )
        best_loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        grid = torch.linspace(0.0, 1.0, self.lambdas) if self.lambdas > 1 else torch.tensor([0.5])
        for lam in grid.tolist():
            da, db, hit, x_adv = self._one_lambda(ctx, lam)
            with torch.no_grad():
                value = ctx.objective(ctx.model(x_adv))
            better = (hit & ~found) | (~found & ~hit & (value > best_loss))
            lam_t = torch.full((n,), lam, device=x.device, dtype=x.dtype)
            view = (-1,) + (1,) * (x.dim() - 1)
            best = (
                torch.where(better, lam_t, best[0]),
                torch.where(better.view(view), da, best[1]),
                torch.where(better.view(view), db, best[2]),
            )
            best_loss = torch.where(better, value, best_loss)
            found |= hit
        lam_best, da, db = best
        return _affine(ctx).combine(x, lam_best, da, db), AffineParams(lam_best, da, db)


def _affine(ctx: Context) -> Affine:
    # supported_threats = (Affine,): the contract has checked the threat's kind already.
    return cast(Affine, ctx.threat)


def _step(
    ball: LpBall, x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor, alpha: float
) -> torch.Tensor:
    """One steepest-ascent step of one part, projected onto its ball ∩ box."""
    moved = x + delta + alpha * ball.steepest_ascent(grad, x + delta)
    return ball.project(moved, x) - x
