"""Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, and its targeted DLR form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import ThreatParams
from .base import Attack, Context, check_positive_int
from .gradients import input_gradient
from .registry import register


def _checkpoints(steps: int) -> list[int]:
    """Iterations w_j where the step size may be halved: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p if q <= 1})


def apgd_run(
    ctx: Context,
    x_init: torch.Tensor,
    *,
    steps: int,
    rho: float = 0.75,
    alpha: float = 0.75,
    early_stop: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run from ``x_init``. Returns (best point found, goal met at some iterate).

    z ← Π(x_k + η·s(∇f(x_k)));  x_{k+1} ← Π(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1})).
    At each checkpoint w_j, η halves (and x restarts from the best point) for examples where
    fewer than ρ of the last steps increased f, or where neither η nor the best f changed.
    Examples that meet the goal leave the batch at the next checkpoint (``early_stop``).
    """
    threat = ctx.ball
    n, x0_all = ctx.x.shape[0], ctx.x
    view = (-1,) + (1,) * (x0_all.dim() - 1)
    # ℓ1 steps are sparse and ℓ1-normalised: a full 2ε jump would spend the budget on a handful
    # of coordinates, so start at ε there.
    eta0 = (1.0 if threat.name == "l1" else 2.0) * threat.eps
    checkpoints = set(_checkpoints(steps))

    out = x_init.clone()
    found_all = torch.zeros(n, dtype=torch.bool, device=x0_all.device)
    live = torch.arange(n, device=x0_all.device)
    c = ctx
    x0 = x0_all
    eta = torch.full((n,), eta0, device=x0.device, dtype=x0.dtype)
    x_cur = x_init.clone()
    grad, logits, f_cur = input_gradient(c.model, x_cur, c.y, c.loss, c.targets)
    found = c.met(logits)
    x_best, f_best = x_cur.clone(), f_cur.clone()
    x_hit, x_prev = x_cur.clone(), x_cur.clone()
    increases = torch.zeros(n, device=x0.device)
    f_best_at_check, eta_at_check = f_best.clone(), eta.clone()
    last_check = 0
    for k in range(steps):
        with torch.no_grad():
            step = eta.view(view) * threat.steepest_ascent(grad, x_cur)
            z = threat.project(x_cur + step, x0)
            a = alpha if k > 0 else 1.0
            x_new = threat.project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x0)
            x_prev = x_cur
        grad_new, logits, f_new = input_gradient(c.model, x_new, c.y, c.loss, c.targets)
        with torch.no_grad():
            hit = c.met(logits)
            x_hit = torch.where((hit & ~found).view(view), x_new, x_hit)
            found = found | hit
            increases += (f_new > f_cur).to(increases.dtype)
            improved = f_new > f_best
            x_best = torch.where(improved.view(view), x_new, x_best)
            f_best = torch.where(improved, f_new, f_best)
            x_cur, f_cur, grad = x_new, f_new, grad_new
        if k + 1 not in checkpoints:
            continue
        with torch.no_grad():
            span = k + 1 - last_check
            halve = (increases < rho * span) | ((eta == eta_at_check) & (f_best == f_best_at_check))
            eta_at_check, f_best_at_check = eta.clone(), f_best.clone()
            eta = torch.where(halve, eta / 2, eta)
            x_cur = torch.where(halve.view(view), x_best, x_cur)
            increases.zero_()
            last_check = k + 1
        if early_stop and bool(found.any()):
            # One host sync per checkpoint: broken examples leave the batch.
            done = found.nonzero().flatten()
            out[live[done]] = x_hit[done]
            found_all[live[done]] = True
            keep = (~found).nonzero().flatten()
            live = live[keep]
            if live.numel() == 0:
                return out, found_all
            c = ctx.subset(live)
            x0 = c.x
            eta, x_cur, x_prev, f_cur, grad = (
                eta[keep],
                x_cur[keep],
                x_prev[keep],
                f_cur[keep],
                grad[keep],
            )
            x_best, f_best, x_hit, found = x_best[keep], f_best[keep], x_hit[keep], found[keep]
            halve, increases = halve[keep], increases[keep]
            eta_at_check, f_best_at_check = eta_at_check[keep], f_best_at_check[keep]
        if bool(halve.any()):
            # Halved examples restart from their best point: refresh its loss and gradient.
            grad_b, _, f_b = input_gradient(c.model, x_cur, c.y, c.loss, c.targets)
            grad = torch.where(halve.view(view), grad_b, grad)
            f_cur = torch.where(halve, f_b, f_cur)
    out[live] = torch.where(found.view(view), x_hit, x_best)
    found_all[live] = found
    return out, found_all


@register("apgd")
@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020) with the CE or DLR loss under ℓ∞, ℓ2 or ℓ1.

    Args:
        steps: iterations per restart (100 in AutoAttack).
        restarts: runs from random starts; later runs attack only unbroken examples.
        loss: "ce" or "dlr" (or any registered loss); None is cross-entropy.
        rho: fraction of improving steps below which the step size halves.
    """

    steps: int = 100
    restarts: int = 1
    loss: Any = None
    rho: float = 0.75

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if not 0 < self.rho <= 1:
            raise ValueError(f"Invalid rho: {self.rho!r} (must be in (0, 1])")

    def _restarts(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        threat = ctx.ball
        x_adv = ctx.x.clone()
        found = torch.zeros(ctx.x.shape[0], dtype=torch.bool, device=ctx.x.device)
        for r in range(self.restarts):
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            sub = ctx.subset(rows)
            start = threat.random_init(sub.x, ctx.generator)
            cand, hit = apgd_run(sub, start, steps=self.steps, rho=self.rho)
            # Later restarts replace earlier results only where they succeed.
            replace = hit | torch.full_like(hit, r == 0)
            x_adv[rows[replace]] = cand[replace]
            found[rows] |= hit
        return x_adv, found

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        return self._restarts(ctx)[0], None


@register("apgd-t")
@dataclass(frozen=True, kw_only=True)
class APGDTargeted(APGD):
    """Targeted APGD with the targeted DLR loss over the top classes (AutoAttack's APGD-T).

    Untargeted use: for each of the ``target_classes`` most likely wrong classes at the clean
    input, a targeted run on the examples not yet broken. With explicit ``targets`` it is a plain
    targeted attack on those.
    """

    default_loss: ClassVar[str] = "dlr"
    target_classes: int = 9

    def _validate(self) -> None:
        super()._validate()
        check_positive_int("target_classes", self.target_classes)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        if ctx.targets is not None:
            return self._restarts(ctx)[0], None
        with torch.no_grad():
            logits = ctx.model(ctx.x)
        order = logits.scatter(1, ctx.y.unsqueeze(1), float("-inf")).argsort(1, descending=True)
        n_targets = min(self.target_classes, logits.shape[1] - 1)
        x_adv = ctx.x.clone()
        found = torch.zeros(ctx.x.shape[0], dtype=torch.bool, device=ctx.x.device)
        for j in range(n_targets):
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            sub = ctx.subset(rows)
            targeted = Context(
                model=sub.model,
                x=sub.x,
                y=sub.y,
                targets=order[rows, j],
                generator=sub.generator,
                threat=sub.threat,
                loss=sub.loss,
                goal_met=sub.goal_met,
                counter=sub.counter,
            )
            cand, _ = self._restarts(targeted)
            # Success is judged by the caller's goal (misclassification), not by the target.
            with torch.no_grad():
                hit = sub.met(ctx.model(cand))
            x_adv[rows[hit]] = cand[hit]
            if j == 0:
                x_adv[rows[~hit]] = cand[~hit]
            found[rows] |= hit
        return x_adv, None
