"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
fool deep neural networks"), multi-class, ℓ2 and ℓ∞, batched over examples, box-aware.

At each iteration the classifier is linearised around the current point x_i. For every candidate
class k (the ``candidates`` − 1 classes other than y with the largest clean logits):

    f'_k = Z_k(x_i) − Z_y(x_i),   w'_k = ∇Z_k(x_i) − ∇Z_y(x_i)   (box-blocked coordinates zeroed)
    l̂   = argmin_k |f'_k| / ‖w'_k‖_q           (q = 2 for ℓ2; q = 1, the dual norm, for ℓ∞)
    r_i = |f'_l̂| / ‖w'_l̂‖₂² · w'_l̂              (ℓ2)
    r_i = |f'_l̂| / ‖w'_l̂‖₁ · sign(w'_l̂)         (ℓ∞)
    R_{i+1} = clip(x_0 + R_i + r_i, 0, 1) − x_0,    x_{i+1} = clip(x_0 + (1 + η) · R_{i+1}, 0, 1)

r_i is the smallest step (in the threat's norm) onto the nearest linearised decision boundary;
for an affine classifier one step with η = 0 lands exactly on the closest boundary. With targets
the only boundary considered is the one between the target t and the strongest other class j:
f' = Z_t − Z_j, w' = ∇Z_t − ∇Z_j.

Box: a coordinate at 0 whose gradient points down (or at 1, up) cannot follow the linear model,
so it is removed from w' before the step is computed (the remaining coordinates then carry the
whole step), and the accumulated perturbation R is kept inside the box. Without this, on
images with many saturated pixels (MNIST) most of each step is spent on pixels the clip undoes
and DeepFool crawls along the box.

Margin: "meets the goal" means meets it by a margin, so that a returned success survives
re-evaluation in a batch of another size (whose rounding differs). Untargeted: the best other
logit exceeds Z_y by more than m; targeted: Z_t exceeds every other logit by more than m, with

    m = √ε_dtype · max(1, max_k |Z_k|)     (ε_dtype: machine epsilon; 3.5e-4 · scale in float32)

i.e. half the significant digits of the logits — far above the rounding of a forward pass, far
below any distance that matters (on MNIST it adds ~10⁻³ to an ℓ2 distance of ~1.6). Each
linearised step aims 2m past the boundary (|f'| + 2m instead of |f'|), so that with η = 0 an
affine classifier is still crossed in one step. A goal that is not a change of class
(``ReduceConfidence``) is used as given.

Refinement (``refine_steps`` > 0, on by default in the attacks): the iterations stop at the
first iterate past the boundary, which with box-aware steps is often well past it. For each
example that met the goal, a batched bisection over t ∈ [0, 1] on x_0 + t·(x_adv − x_0) keeps the
smallest t whose point still meets the goal (by the margin); after s steps it is within 2⁻ˢ of
the crossing along that ray. x_0 and x_adv are in the box and in the ball (both convex, the ball
centred at x_0), so every point of the ray is too. The overshoot η only drives the iterations
(it makes them cross sooner); it is *not* applied again to the refined point, because the margin
m already keeps it on the adversarial side and a (1 + η) factor would undo the refinement. With
``refine_steps=0`` the function returns the first iterate meeting the goal, as before.

Cost: each iteration is one forward pass and K − 1 backward passes of the live examples;
examples leave the batch as soon as they meet the goal. The refinement adds ``refine_steps``
forward passes of the examples that met it (no backward pass, no host sync).

Minimum-norm contract: the attacks return, per example, the first point meeting the goal
(refined) and whether one was found (:class:`~.base.MinimumNormResult`: ``distance`` is its norm,
``inf`` where none was found). ``attacks.create("deepfool-l2", threat="l2:2")`` runs it within
the budget ε instead (projected onto the ball, then evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..threats import L2Ball, LinfBall, LpBall, Threat, lp_ball, movable_in_box
from ..threats.base import BOX, flat
from .base import Context, MinimumNormAttack, check_nonneg, check_nonneg_int, check_positive_int
from .goals import GoalFn
from .registry import register

_TINY = 1e-12  # keeps |f'| / ‖w'‖ finite when a gradient vanishes (the step is then 0)


def goal_margin(logits: torch.Tensor) -> torch.Tensor:
    """(N,) the margin m = √ε · max(1, max_k |Z_k|) by which a goal must be met (see module)."""
    rtol = torch.finfo(logits.dtype).eps ** 0.5
    return rtol * logits.detach().abs().amax(1).clamp_min(1.0)


def _gap(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(N,) Z_cls − max_{k ≠ cls} Z_k."""
    own = logits.gather(1, cls.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, cls.unsqueeze(1), float("-inf")).amax(1)
    return own - other


@dataclass(frozen=True)
class DeepFoolOutput:
    """What :func:`deepfool` returns.

    Attributes:
        x_adv: (N, ...) the first iterate meeting the goal (refined towards x, see
            ``refine_steps``), or the last iterate.
        found: (N,) bool, the goal was met (by the margin) at ``x_adv``.
        iterations: (N,) linearisation steps each example took (0 if it met the goal at x).
        forward_passes: batched forward passes run, the refinement's included.
        backward_passes: batched backward passes run.
    """

    x_adv: torch.Tensor
    found: torch.Tensor
    iterations: torch.Tensor
    forward_passes: int
    backward_passes: int


def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str | LpBall = "l2",
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    targets: torch.Tensor | None = None,
    goal_met: GoalFn | None = None,
    refine_steps: int = 0,
    margin: bool = True,
) -> DeepFoolOutput:
    """DeepFool as a plain function (no validation, no mode switching), for other algorithms.

    Universal perturbations call it with ``x`` = the currently perturbed images and ``y`` = the
    model's predictions on the clean images.

    Args:
        model: returns logits (N, C); the caller sets its mode and parameter flags.
        x: starting points (N, ...) in [0, 1].
        y: (N,) classes to move away from (untargeted) — true labels or clean predictions.
        norm: the norm of the steps: an ℓp ball (its radius is not used) or its name
            (``"l2"``, ``"linf"``, ``"l1"``); the step onto the linearised boundary is the ball's
            :meth:`~multirobust.threats.LpBall.boundary_step`.
        steps: linearisation steps at most.
        overshoot: η ≥ 0.
        candidates: K ≥ 2, classes considered (y included), chosen by the logits at ``x``.
        targets: (N,) target classes for a targeted attack, or None.
        goal_met: ``met(logits, rows) -> (N,) bool`` for the examples ``rows``; default:
            argmax ≠ y (untargeted) or argmax = target. It is tightened by the margin m of
            :func:`goal_margin` (the true class beaten, or the target winning, by more than m).
        refine_steps: bisection steps towards x along the ray to each success (0 = none, the
            default here; the attacks default to 12).
        margin: tighten the goal by the margin m (for misclassification and targets; pass False
            for another goal, such as ``ReduceConfidence``, which is then used as given).

    Returns:
        :class:`DeepFoolOutput`.
    """
    geometry = norm if isinstance(norm, LpBall) else lp_ball(norm, 1.0)
    if goal_met is None:
        if targets is None:
            goal_met = lambda logits, rows: logits.argmax(1) != y[rows]  # noqa: E731
        else:
            goal_met = lambda logits, rows: logits.argmax(1) == targets[rows]  # noqa: E731
    base_goal = goal_met

    def met(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The goal, met by more than the margin (a tie or near-tie is not a success)."""
        if not margin:
            return base_goal(logits, rows)
        m = goal_margin(logits)
        if targets is None:
            by_margin = -_gap(logits, y[rows]) > m
        else:
            by_margin = _gap(logits, targets[rows]) > m
        return base_goal(logits, rows) & by_margin

    lo, hi = BOX
    n, dev = x.shape[0], x.device
    x = x.detach()
    out = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    live = torch.arange(n, device=dev)
    x0, ys, ts = x, y, targets
    r_tot = torch.zeros_like(x0)
    xa = x0.clone()
    cand: torch.Tensor | None = None
    scale = 1.0 + overshoot
    forward = backward = 0
    for i in range(steps + 1):
        xg = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            forward += 1
            lg = logits.detach()
            # One host sync per iteration (each costs K − 1 backward passes): examples meeting
            # the goal keep this point and leave the batch before their gradients are computed.
            done = met(lg, live)
            keep: torch.Tensor | None = None
            if bool(done.any()):
                fin = done.nonzero().flatten()
                out[live[fin]] = xa[fin]
                found[live[fin]] = True
                keep = (~done).nonzero().flatten()
                live, x0, ys, xa, r_tot = live[keep], x0[keep], ys[keep], xa[keep], r_tot[keep]
                ts = None if ts is None else ts[keep]
                cand = None if cand is None else cand[keep]
                logits, lg = logits[keep], lg[keep]
            if live.numel() == 0 or i == steps:
                break  # the last forward pass only checks the goal
            if ts is None:
                if cand is None:
                    # The candidate classes are fixed by the first logits (the paper's top-k).
                    k = min(candidates, lg.shape[1]) - 1
                    cand = lg.scatter(1, ys.unsqueeze(1), float("-inf")).topk(k, dim=1).indices
                plus, minus = cand, ys.unsqueeze(1).expand_as(cand)
            else:
                other = lg.scatter(1, ts.unsqueeze(1), float("-inf")).argmax(1)
                plus, minus = ts.unsqueeze(1), other.unsqueeze(1)
            diffs = logits.gather(1, plus) - logits.gather(1, minus)  # (N, K), < 0 before
            grads = []
            for j in range(diffs.shape[1]):
                (gj,) = torch.autograd.grad(
                    diffs[:, j].sum(), xg, retain_graph=j + 1 < diffs.shape[1]
                )
                backward += 1
                grads.append(flat(gj if keep is None else gj[keep]))
        with torch.no_grad():
            d = diffs.detach()
            g_all = movable_in_box(torch.stack(grads, dim=1), flat(xa).unsqueeze(1))  # (N, K, D)
            dual_norms = torch.linalg.vector_norm(g_all, ord=geometry.dual, dim=2)
            dist = d.abs() / dual_norms.clamp_min(_TINY)
            best = dist.argmin(1)
            # Aim 2m past the linearised boundary, so that the goal test (margin m) passes.
            d_best = d.gather(1, best.unsqueeze(1)).squeeze(1).abs()
            if margin:
                d_best = d_best + 2 * goal_margin(lg)
            g_best = g_all[torch.arange(best.numel(), device=dev), best]
            r = geometry.boundary_step(d_best, g_best).view_as(r_tot)
            # Accumulate inside the box, so that moving back from a face takes effect at once.
            r_tot = (x0 + r_tot + r).clamp(lo, hi) - x0
            xa = (x0 + scale * r_tot).clamp(lo, hi)
            iterations[live] += 1
    out[live] = xa.detach()
    if refine_steps > 0:
        wins = found.nonzero().flatten()
        if wins.numel():
            out[wins] = _refine(model, x[wins], out[wins], wins, met, refine_steps)
            forward += refine_steps
    return DeepFoolOutput(
        x_adv=out,
        found=found,
        iterations=iterations,
        forward_passes=forward,
        backward_passes=backward,
    )


def _refine(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    rows: torch.Tensor,
    met: GoalFn,
    steps: int,
) -> torch.Tensor:
    """Bisection over t ∈ [0, 1] on x + t·(x_adv − x), batched: the point at the smallest t seen
    whose goal is met (t = 1, i.e. ``x_adv``, meets it). One forward pass per step, no sync."""
    delta = x_adv - x
    shape = (-1,) + (1,) * (x.dim() - 1)
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    with torch.no_grad():
        # The very points whose goal test passed are kept (x_adv itself while none has).
        best = x_adv
        for _ in range(steps):
            mid = (lo + hi) / 2
            point = (x + mid.view(shape) * delta).clamp(*BOX)  # the clamp only undoes rounding
            ok = met(model(point), rows)
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
            best = torch.where(ok.view(shape), point, best)
        return best


@dataclass(frozen=True, kw_only=True)
class _DeepFoolBase(MinimumNormAttack):
    """Shared options; subclasses fix the norm through ``supported_threats``."""

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    refine_steps: int = 12

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_nonneg_int("refine_steps", self.refine_steps)
        check_nonneg("overshoot", self.overshoot)
        c = self.candidates
        if not (isinstance(c, int) and not isinstance(c, bool) and c >= 2):
            raise ValueError(f"Invalid candidates: {c!r} (must be an integer >= 2)")

    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        res = deepfool(
            ctx.model,
            ctx.x,
            ctx.y,
            norm=ctx.ball,
            steps=self.steps,
            overshoot=float(self.overshoot),
            candidates=self.candidates,
            targets=ctx.targets,
            goal_met=ctx.goal_met,
            refine_steps=self.refine_steps,
            margin=ctx.decision,
        )
        return res.x_adv, res.found


@register("deepfool-l2")
@dataclass(frozen=True, kw_only=True)
class DeepFoolL2(_DeepFoolBase):
    """DeepFool under ℓ2 (Moosavi-Dezfooli et al. 2016), multi-class, batched, box-aware.

    Step: r_i = |f'_l̂| / ‖w'_l̂‖₂² · w'_l̂ towards the closest linearised boundary
    l̂ = argmin_k |f'_k| / ‖w'_k‖₂; x_{i+1} = clip(x_0 + (1 + η)·Σ r_j, 0, 1).

    Args:
        steps: linearisation steps at most (each one forward and K − 1 backward passes).
        overshoot: η ≥ 0, the relative overshoot that carries the point past the boundary.
        candidates: K ≥ 2, how many classes (the true one included) are considered, chosen by
            the clean logits (10 in the paper).
        refine_steps: bisection steps along the ray from x to each success, keeping the closest
            point that still meets the goal (0 = off: the first iterate past the boundary). The
            overshoot is not re-applied to the refined point; a margin on the logits (see the
            module) keeps it adversarial. Each step is one forward pass of the successes.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L2Ball,)


@register("deepfool-linf")
@dataclass(frozen=True, kw_only=True)
class DeepFoolLinf(_DeepFoolBase):
    """DeepFool under ℓ∞ (Moosavi-Dezfooli et al. 2016, §3.3 with p = ∞), multi-class, batched.

    Step: r_i = |f'_l̂| / ‖w'_l̂‖₁ · sign(w'_l̂) towards the closest linearised boundary in ℓ∞,
    l̂ = argmin_k |f'_k| / ‖w'_k‖₁ (ℓ1 is the dual norm of ℓ∞);
    x_{i+1} = clip(x_0 + (1 + η)·Σ r_j, 0, 1).

    Args:
        steps: linearisation steps at most (each one forward and K − 1 backward passes).
        overshoot: η ≥ 0, the relative overshoot that carries the point past the boundary.
        candidates: K ≥ 2, how many classes (the true one included) are considered.
        refine_steps: bisection steps along the ray from x to each success, keeping the closest
            point that still meets the goal (0 = off). The overshoot is not re-applied to the
            refined point (see :class:`DeepFoolL2`).
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall,)
