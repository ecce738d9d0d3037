"""Projected gradient descent (Madry et al. 2018) under any ℓp threat, and BIM.

Update rule, per step and example:  x ← Π_{B(x0, ε) ∩ [0,1]}( x + α · s(∇ℓ(x)) ),
with s the threat's steepest-ascent direction (sign for ℓ∞, ∇/‖∇‖₂ for ℓ2, SLIDE's sparse
direction for ℓ1) and Π the exact projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .. import losses
from ..threats import L1Ball, LpBall, Threat, ThreatParams, ball
from .base import Attack, Context, check_nonneg, check_positive, check_positive_int
from .goals import GoalFn
from .gradients import input_gradient
from .registry import register


def pgd_restart(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: LpBall,
    x_init: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    loss_fn: losses.Loss,
    targets: torch.Tensor | None = None,
    goal_met: GoalFn | None = None,
    check_every: int = 5,
    eot_samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of PGD from ``x_init``.

    With ``goal_met(logits, rows)``, an example is frozen at the first iterate that meets the goal
    and, every ``check_every`` steps, frozen examples leave the batch, so broken examples stop
    costing forward and backward passes. With ``eot_samples`` > 1 each gradient (and the goal
    test) is the mean over that many calls of a randomised model (EOT).

    Returns:
        ``(x_adv, found)``: the final (or first successful) iterate, and (N,) bool of successes.
    """
    n = x.shape[0]
    out = x_init.detach().clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    live = torch.arange(n, device=x.device)
    xa, x0, y0, t0 = out.clone(), x, y, targets
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    for step in range(steps):
        grad, logits, _ = input_gradient(model, xa, y0, loss_fn, t0, samples=eot_samples)
        with torch.no_grad():
            if goal_met is not None:
                done = done | goal_met(logits, live)
            moved = threat.step(xa, x0, grad, step_size)
            xa = torch.where(done.view((-1,) + (1,) * (xa.dim() - 1)), xa, moved)
        last = step == steps - 1
        if goal_met is not None and ((step + 1) % check_every == 0 or last):
            # One host sync every few steps to drop finished examples from the batch.
            fin = done.nonzero().flatten()
            if fin.numel():
                out[live[fin]] = xa[fin]
                found[live[fin]] = True
                keep = (~done).nonzero().flatten()
                live, xa, x0, y0, done = live[keep], xa[keep], x0[keep], y0[keep], done[keep]
                t0 = None if t0 is None else t0[keep]
            if live.numel() == 0:
                break
    out[live] = xa.detach()
    return out, found


def pgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: LpBall | str,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str | losses.Loss = "ce",
    random_start: bool = True,
    restarts: int = 1,
    targets: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    goal_met: GoalFn | None = None,
    eot_samples: int = 1,
) -> torch.Tensor:
    """PGD as a plain function, for training loops: no validation, no mode switching.

    The caller decides the model's mode (adversarial training attacks in eval mode; see
    ``multirobust.training``). Returns detached adversarial inputs.

    Shape: x (N, ...), y (N,) -> (N, ...).
    """
    tm = ball(threat, who="PGD")
    if tm.eps == 0:
        return x.detach().clone()
    loss_fn = losses.get(loss)
    alpha = tm.default_step_size(steps) if step_size is None else step_size
    x = x.detach()
    best = x.clone()
    best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    for r in range(restarts):
        if r:
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
        xs, ys = x[rows], y[rows]
        ts = None if targets is None else targets[rows]
        start = tm.random_init(xs, generator) if random_start else xs.clone()
        sub_goal = None if goal_met is None else (lambda lg, rr, rows=rows: goal_met(lg, rows[rr]))
        cand, hit = pgd_restart(
            model,
            xs,
            ys,
            tm,
            start,
            steps=steps,
            step_size=alpha,
            loss_fn=loss_fn,
            targets=ts,
            goal_met=sub_goal,
            eot_samples=eot_samples,
        )
        if restarts == 1:
            best[rows], found[rows] = cand, hit
            break
        with torch.no_grad():
            cand_logits = model(cand)
            cand_loss = loss_fn(cand_logits, ys, ts)
            if sub_goal is not None:
                # The run's last step is never tested inside it: a final iterate that meets the
                # goal is a success too, or a later restart with a higher loss that does not
                # meet it would replace it (what one restart alone would have reported broken).
                hit = hit | sub_goal(cand_logits, torch.arange(len(rows), device=x.device))
        better = hit | (cand_loss > best_loss[rows])
        best[rows[better]] = cand[better]
        best_loss[rows[better]] = cand_loss[better]
        found[rows] |= hit
    return best


@register("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """Projected gradient descent with random restarts (Madry et al. 2018), any loss, any ℓp ball.

    Under ℓ1 the steepest-ascent direction is SLIDE's (Tramèr & Boneh 2019), so PGD-ℓ1 is the
    sparse ℓ1 descent attack.

    Args:
        steps: gradient steps per restart.
        step_size: α; default from the threat (2.5·ε/steps; ε/10 or more for ℓ1).
        restarts: independent runs; later runs only attack examples not yet broken.
        random_start: start uniformly inside the ball (PGD) or at x (BIM).
        loss: name of a loss in ``multirobust.losses`` (ce, margin, dlr) or a callable; None
            is cross-entropy.
        early_stop: stop updating an example once it meets the goal.
        eot_samples: gradients averaged over this many calls of the model (expectation over
            transformation, for randomised models).
    """

    steps: int = 40
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Any = None
    early_stop: bool = True
    eot_samples: int = 1

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        check_positive_int("eot_samples", self.eot_samples)
        if self.step_size is not None:
            check_positive("step_size", self.step_size)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        x_adv = pgd_perturb(
            ctx.model,
            ctx.x,
            ctx.y,
            ctx.ball,
            steps=self.steps,
            step_size=self.step_size,
            loss=ctx.loss,
            random_start=self.random_start,
            restarts=self.restarts,
            targets=ctx.targets,
            generator=ctx.generator,
            goal_met=ctx.goal_met if self.early_stop else None,
            eot_samples=self.eot_samples,
        )
        return x_adv, None


@register("bim")
@dataclass(frozen=True, kw_only=True)
class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2017): PGD from the clean input, no restarts."""

    steps: int = 10
    random_start: bool = False


@register("slide")
@dataclass(frozen=True, kw_only=True)
class SLIDE(PGD):
    """Sparse ℓ1 descent (Tramèr & Boneh 2019): PGD under an ℓ1 ball with sparse steps.

    Each step moves only the coordinates whose |gradient| is in the top (100 − q)% (q is the
    ℓ1 threat's ``sparsity``, 99 by default), ignoring coordinates the box blocks, and is
    followed by the exact projection onto the ℓ1 ball ∩ box.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L1Ball,)
    steps: int = 50


@register("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """One steepest-ascent step (Goodfellow et al. 2015): FGSM under ℓ∞, FGM under ℓ2 / ℓ1.

    x_adv = Π(x0 + α · s(∇ℓ(x0))), with α = ε by default; with ``random_start`` the step starts
    from a random point of the ball (R+FGSM, Tramèr et al. 2018; Wong et al. 2020).
    """

    step_size: float | None = None
    random_start: bool = False
    loss: Any = None

    def _validate(self) -> None:
        if self.step_size is not None:
            check_nonneg("step_size", self.step_size)

    def _wants_clean_gradient(self) -> bool:
        # From the clean input the one gradient is the contract's clean pass: no second forward.
        return not self.random_start

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        threat = ctx.ball
        start = threat.random_init(ctx.x, ctx.generator) if self.random_start else ctx.x
        if ctx.clean_gradient is not None and not self.random_start:
            grad = ctx.clean_gradient()
        else:
            grad, _, _ = input_gradient(ctx.model, start, ctx.y, ctx.loss, ctx.targets)
        alpha = threat.eps if self.step_size is None else self.step_size
        return threat.step(start, ctx.x, grad, alpha), None


register("fgm")(FGSM)
