"""FAB, the fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), for ℓ∞, ℓ2 and ℓ1, untargeted and targeted.

FAB looks for the smallest perturbation that changes the decision. At the current point x_k it
linearises the decision boundary between the true class y and each other class j,

    f_j(z) − f_y(z) ≈ Δ_j + ∇_j · (z − x_k),   Δ_j = f_j(x_k) − f_y(x_k),  ∇_j = ∇(f_j − f_y)(x_k),

picks the class whose linear boundary is closest, dist_j = |Δ_j| / ‖∇_j‖_q (q the dual norm),
and projects both x_k and the original x onto that hyperplane ∩ the box, exactly, in the threat's
norm (:func:`project_onto_hyperplane`): d_k and d_0. The step biases towards the original point,
which is what keeps the perturbation small:

    α = min(‖d_k‖ / (‖d_k‖ + ‖d_0‖), α_max),
    x_{k+1} = clip((1 − α)(x_k + η·d_k) + α(x + η·d_0), 0, 1),

with the overshoot η slightly above 1. Whenever x_{k+1} is adversarial it is recorded if it is
the smallest so far, and the iterate steps back towards x: x_{k+1} ← x + β(x_{k+1} − x). FAB-T
(AutoAttack's standard member) runs the targeted version against each of the most likely wrong
classes in turn, one backward pass per step instead of one per class.

:func:`fab_minimum_norm` is the attack as a minimum-norm search (the smallest perturbation found
per example), registered under the minimum-norm contract as ``fab-linf``, ``fab-l2`` and
``fab-l1``; the registered ``fab`` and ``fab-t`` are its fixed-ε forms, which succeed when the
perturbation found is within ε. Defaults are AutoAttack's: 100 steps, α_max = 0.1, η = 1.05,
β = 0.9, restarts from a random point at half the radius (the smaller of ε and the best norm so
far).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..threats import L1Ball, L2Ball, LinfBall, Threat, ThreatParams
from ..threats.base import BOX
from .base import (
    Attack,
    Context,
    MinimumNormAttack,
    check_nonneg_int,
    check_positive,
    check_positive_int,
)
from .goals import GoalFn
from .registry import register


def _dual(p: float) -> float:
    """q with 1/p + 1/q = 1."""
    if p == math.inf:
        return 1.0
    if p == 1.0:
        return math.inf
    return p / (p - 1.0)


def project_onto_hyperplane(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest ‖d‖_p with w·d = c and t + d in the box, exactly, for p ∈ {∞, 2, 1}.

    With s = sign(w) flipped so that c ≥ 0, coordinate i can add at most a_i·u_i to w·d
    (a_i = |w_i|, u_i the room from t_i to the box face in direction s_i). The solutions are

        ℓ2: d_i = s_i·min(λ·a_i, u_i)    (KKT: the unconstrained λ·w, clipped to the box)
        ℓ∞: d_i = s_i·min(r, u_i)        (every free coordinate at the radius r)
        ℓ1: the largest a_i first, each to its face, the last one partly (fractional knapsack)

    with λ, r the root of the increasing piecewise-linear w·d = c, found on the sorted breakpoints
    by cumulative sums (no iteration). When even the whole box cannot reach the hyperplane, d is
    the box corner that comes closest (every coordinate with w_i ≠ 0 at its face).

    Args:
        t: points (N, D) in the box.
        w: normals (N, D).
        c: (N,) right-hand sides: the hyperplane is w·(t + d) = w·t + c.
        p: the norm, ``math.inf``, 2 or 1.

    Returns:
        ``(d, reachable)``: d (N, D) in t's dtype, and (N,) bool: the hyperplane meets the box.
    """
    if p not in (math.inf, 2.0, 1.0):
        raise ValueError(f"Invalid p: {p!r} (must be inf, 2 or 1)")
    dtype = t.dtype
    t64, w64, c64 = t.to(torch.float64), w.to(torch.float64), c.to(torch.float64)
    flip = c64 < 0
    w64 = torch.where(flip.unsqueeze(1), -w64, w64)
    c64 = c64.abs()
    lo, hi = BOX
    a = w64.abs()
    s = w64.sign()
    room = torch.where(w64 > 0, hi - t64, torch.where(w64 < 0, t64 - lo, torch.zeros_like(t64)))
    room = room.clamp_min(0.0)
    cap = a * room  # the most coordinate i can add to w·d
    total = cap.sum(1)
    reachable = total >= c64
    if p == 1.0:
        order = a.argsort(dim=1, descending=True)
        cap_s = cap.gather(1, order)
        before = cap_s.cumsum(1) - cap_s
        # Coordinate at sorted position j takes what is still missing, at most its cap.
        take = (c64.unsqueeze(1) - before).clamp(min=0.0)
        take = torch.minimum(take, cap_s)
        a_s = a.gather(1, order)
        mag_s = torch.where(a_s > 0, take / a_s.clamp_min(1e-300), torch.zeros_like(take))
        mag = torch.zeros_like(mag_s).scatter(1, order, mag_s)
    else:
        # Contribution of coordinate i at level λ: min(λ·q_i, cap_i), q = a² (ℓ2) or a (ℓ∞).
        q = a * a if p == 2.0 else a
        inf = torch.full_like(q, math.inf)
        bp = torch.where(q > 0, cap / q.clamp_min(1e-300), inf)
        order = bp.argsort(dim=1)
        bp_s, cap_s, q_s = bp.gather(1, order), cap.gather(1, order), q.gather(1, order)
        capped = cap_s.cumsum(1) - cap_s  # Σ caps of the coordinates before (already full)
        slope = q_s.flip(1).cumsum(1).flip(1)  # Σ q of this and later coordinates (still free)
        value = torch.where(slope > 0, capped + bp_s * slope, capped)
        k = (value >= c64.unsqueeze(1)).to(torch.int64).argmax(dim=1, keepdim=True)
        level = (c64.unsqueeze(1) - capped.gather(1, k)) / slope.gather(1, k).clamp_min(1e-300)
        level = torch.where(reachable.unsqueeze(1), level.clamp_min(0.0), inf[:, :1])
        contrib = torch.minimum(level * q, cap)
        mag = torch.where(a > 0, contrib / a.clamp_min(1e-300), torch.zeros_like(a))
    mag = torch.where(reachable.unsqueeze(1), mag, room * (a > 0))
    d = s * mag
    d = torch.where((c64 == 0).unsqueeze(1), torch.zeros_like(d), d)
    # cap / a · a is room only up to rounding: keep t + d in the box exactly.
    d = (t64 + d).clamp(lo, hi) - t64
    return d.to(dtype), reachable


def _lp_norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def _boundary_linearisation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    against_label: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Δ (N, K) and ∇ (N, K, D) of f_j − f_r at x for K candidate boundaries, and the logits.

    Untargeted: r = y and j runs over the C − 1 other classes (one backward pass each).
    Targeted: j = t, so K = 1 (one backward pass). With ``against_label`` (FAB-T, whose goal is
    any misclassification) r = y always, as in AutoAttack: the boundary between the label and
    the target. Otherwise (the goal is the target itself) r is the strongest other class at x:
    r = y while y leads; once another class leads, FAB keeps going towards the target's region.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        n, classes = logits.shape
        if targets is not None:
            others = targets.unsqueeze(1)
            ref = (
                y if against_label else logits.detach().scatter(1, others, float("-inf")).argmax(1)
            )
        else:
            ar = torch.arange(classes, device=x.device).expand(n, classes)
            others = ar[ar != y.unsqueeze(1)].view(n, classes - 1)
            ref = y
        rows = torch.arange(n, device=x.device)
        grads = []
        for k in range(others.shape[1]):
            diff = logits[rows, others[:, k]] - logits[rows, ref]
            (g,) = torch.autograd.grad(diff.sum(), xg, retain_graph=k + 1 < others.shape[1])
            grads.append(g.flatten(1))
    logits = logits.detach()
    delta = logits.gather(1, others) - logits.gather(1, ref.unsqueeze(1))
    return delta, torch.stack(grads, 1), logits


def fab_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    p: float,
    x_start: torch.Tensor,
    *,
    steps: int,
    targets: torch.Tensor | None = None,
    goal_met: GoalFn | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    against_label: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``x_start`` (see the module docstring for the update).

    Args:
        model: classifier returning logits, in eval mode, parameters frozen.
        x: original points (N, ...); y: their labels (N,).
        p: the norm minimised (``math.inf``, 2 or 1).
        x_start: first iterate (N, ...), x itself or a random point near it.
        targets: (N,) target classes for the targeted version; None for the untargeted one.
        goal_met: ``goal_met(logits, rows)`` says which examples ``rows`` are adversarial;
            by default misclassified (untargeted) or classified as the target.
        against_label: with ``targets``, linearise f_t − f_y at every step (FAB-T: the target
            only steers a search for any misclassification) instead of f_t against the
            strongest other class (a search for the target itself).

    Returns:
        ``(x_best, norm)``: the smallest adversarial point found and its ‖·‖_p (inf and x
        where none was found).
    """
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    if goal_met is None:
        if targets is None:
            goal_met = lambda logits, r: logits.argmax(1) != y[r]  # noqa: E731
        else:
            goal_met = lambda logits, r: logits.argmax(1) == targets[r]  # noqa: E731
    q = _dual(p)
    x0 = x.flatten(1)
    xk = x_start.detach().flatten(1).clone()
    best = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    x_best = x0.clone()
    shape = x.shape
    for _ in range(steps):
        delta, grads, _ = _boundary_linearisation(model, xk.view(shape), y, targets, against_label)
        dist = delta.abs() / torch.linalg.vector_norm(grads, ord=q, dim=2).clamp_min(1e-12)
        j = dist.argmin(1)
        w = grads[rows, j]
        df = delta[rows, j]
        # Hyperplane through the linearised boundary: w·z = w·x_k − Δ.
        d1, _ = project_onto_hyperplane(xk, w, -df, p)
        d0, _ = project_onto_hyperplane(x0, w, (w * (xk - x0)).sum(1) - df, p)
        a1 = _lp_norm(d1, p).clamp_min(1e-8)
        a0 = _lp_norm(d0, p).clamp_min(1e-8)
        alpha = (a1 / (a1 + a0)).clamp(0.0, alpha_max).unsqueeze(1)
        xk = ((1 - alpha) * (xk + eta * d1) + alpha * (x0 + eta * d0)).clamp(*BOX)
        with torch.no_grad():
            adv = goal_met(model(xk.view(shape)), rows)
        norm = _lp_norm(xk - x0, p)
        better = adv & (norm < best)
        best = torch.where(better, norm, best)
        x_best = torch.where(better.unsqueeze(1), xk, x_best)
        xk = torch.where(adv.unsqueeze(1), x0 + beta * (xk - x0), xk)
    return x_best.view(shape), best


def _random_start(
    x: torch.Tensor, p: float, radius: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x + r·t/‖t‖_p (t uniform in [−1, 1] for ℓ∞, Gaussian otherwise), clipped to the box."""
    if p == math.inf:
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    t = t / _lp_norm(t, p).clamp_min(1e-12).view((-1,) + (1,) * (x.dim() - 1))
    return (x + radius.view((-1,) + (1,) * (x.dim() - 1)) * t).clamp(*BOX)


def fab_minimum_norm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    p: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    targets: torch.Tensor | None = None,
    target_classes: int = 0,
    init_radius: float | None = None,
    generator: torch.Generator | None = None,
    goal_met: GoalFn | None = None,
    stop_at: float | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    clean_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAB as a minimum-norm attack: the smallest adversarial perturbation found per example.

    Args:
        model: classifier returning logits, in eval mode with frozen parameters (the attack
            contract's ``attack_mode``).
        x: inputs (N, ...) in the box; y: labels (N,).
        p: the norm minimised: ``math.inf``, 2 or 1.
        steps: iterations per run (100 in AutoAttack).
        restarts: runs per target (or untargeted); the first from x, later ones from a random
            point at half the smaller of ``init_radius`` and the best norm found so far.
        targets: (N,) target classes: a targeted attack on those.
        target_classes: without ``targets``: 0 runs untargeted FAB; k > 0 runs FAB-T, targeted
            at each of the k most likely wrong classes at x in turn (AutoAttack: 9).
        init_radius: radius of the random restarts (the threat's ε in the fixed-ε attacks); the
            best norm so far when None.
        generator: randomness of the restarts.
        goal_met: ``goal_met(logits, rows)``: which examples are adversarial (default:
            misclassified, or classified as the target with ``targets``).
        stop_at: examples whose best norm is ≤ this leave before the next run (the fixed-ε
            attacks pass ε); None keeps improving every example through every run.
        clean_logits: the model's output at x when the caller has it (saves a forward pass).

    Returns:
        ``(x_adv, norm)``: (N, ...) the smallest adversarial point found (x where none was) and
        (N,) its ‖x_adv − x‖_p (inf where none was found).
    """
    n = x.shape[0]
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    clean = clean_logits
    if clean is None:
        with torch.no_grad():
            clean = model(x)
    classes = clean.shape[1]
    best = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    x_best = x.clone()
    # FAB-T: targets chosen here only steer a search for any misclassification.
    steered = targets is None and target_classes > 0
    if targets is not None:
        plan: list[torch.Tensor | None] = [targets]
    elif target_classes > 0:
        order = clean.scatter(1, y.unsqueeze(1), float("-inf")).argsort(1, descending=True)
        plan = [order[:, j] for j in range(min(target_classes, classes - 1))]
    else:
        plan = [None]

    # FAB-T's runs aim at a target but, like APGD-T, count misclassification as success.
    judge: GoalFn
    if goal_met is not None:
        judge = goal_met
    elif targets is not None:
        judge = lambda logits, r: logits.argmax(1) == targets[r]  # noqa: E731
    else:
        judge = lambda logits, r: logits.argmax(1) != y[r]  # noqa: E731

    for tgt in plan:
        for r in range(restarts):
            todo = (
                best > stop_at if stop_at is not None else torch.ones_like(best, dtype=torch.bool)
            )
            rows = todo.nonzero().flatten()
            if rows.numel() == 0:
                return x_best, best
            xs, ys = x[rows], y[rows]
            if r == 0:
                start = xs
            else:
                radius = best[rows]
                if init_radius is not None:
                    radius = radius.clamp(max=init_radius)
                radius = torch.where(torch.isfinite(radius), radius, torch.ones_like(radius))
                start = _random_start(xs, p, radius / 2, generator)
            cand, norm = fab_run(
                model,
                xs,
                ys,
                p,
                start,
                steps=steps,
                targets=None if tgt is None else tgt[rows],
                goal_met=_restrict(judge, rows),
                alpha_max=alpha_max,
                eta=eta,
                beta=beta,
                against_label=steered,
            )
            better = norm < best[rows]
            best[rows[better]] = norm[better]
            x_best[rows[better]] = cand[better]
    return x_best, best


def _restrict(goal: GoalFn, rows: torch.Tensor) -> GoalFn:
    """``goal`` for a sub-batch whose row r is row ``rows[r]`` of the whole batch."""
    return lambda logits, r: goal(logits, rows[r])


@dataclass(frozen=True, kw_only=True)
class _FABOptions:
    """FAB's options, shared by the fixed-ε and the minimum-norm forms."""

    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def _check_fab(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        check_positive("eta", self.eta)
        for name in ("alpha_max", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be in [0, 1])")

    def _search(
        self, ctx: Context, target_classes: int, eps: float | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`fab_minimum_norm` on the examples of ``ctx`` under ``ctx.ball``'s norm;
        ``eps`` (fixed-ε forms) sets the restarts' radius and lets examples within it stop."""
        return fab_minimum_norm(
            ctx.model,
            ctx.x,
            ctx.y,
            ctx.ball.p,
            steps=self.steps,
            restarts=self.restarts,
            targets=ctx.targets,
            target_classes=target_classes if ctx.targets is None else 0,
            init_radius=eps,
            generator=ctx.generator,
            goal_met=ctx.goal_met,
            stop_at=eps,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
            clean_logits=ctx.clean_logits,
        )


@register("fab")
@dataclass(frozen=True, kw_only=True)
class FAB(_FABOptions, Attack):
    """FAB (Croce & Hein 2020) under an ℓ∞, ℓ2 or ℓ1 ball: succeeds when the smallest
    perturbation it finds is within ε (see :func:`fab_minimum_norm` for the search).

    Args:
        steps: iterations per run (100 in AutoAttack).
        restarts: runs; the first from x, the others from random points at half the radius.
        alpha_max: the largest bias towards the original point (0.1).
        eta: overshoot of the projection step (1.05).
        beta: backward step after an adversarial iterate (0.9).
    """

    def _validate(self) -> None:
        self._check_fab()

    def _target_classes(self) -> int:
        return 0

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        x_adv, _ = self._search(ctx, self._target_classes(), ctx.ball.eps)
        return x_adv, None


@register("fab-t")
@dataclass(frozen=True, kw_only=True)
class FABTargeted(FAB):
    """FAB-T (AutoAttack's standard member): targeted FAB against each of the
    ``target_classes`` most likely wrong classes in turn, success meaning misclassification
    within ε. With explicit ``targets`` it is a plain targeted FAB on those.
    """

    target_classes: int = 9

    def _validate(self) -> None:
        super()._validate()
        check_positive_int("target_classes", self.target_classes)

    def _target_classes(self) -> int:
        return self.target_classes


@dataclass(frozen=True, kw_only=True)
class _FABMinimumNorm(_FABOptions, MinimumNormAttack):
    """FAB as a minimum-norm attack: per example the smallest perturbation found; subclasses
    fix the norm through ``supported_threats``.

    Args:
        steps, restarts, alpha_max, eta, beta: as for :class:`FAB`; restarts after the first
            start at half the best norm found so far.
        target_classes: 0 runs untargeted FAB (C − 1 backward passes per step); k > 0 runs
            FAB-T against the k most likely wrong classes (one backward pass per step each).
    """

    # Per example: steps × (C − 1) backward passes untargeted, steps per target for FAB-T;
    # about C&W's budget, so searches run it after C&W.
    cost: ClassVar[int] = 200
    target_classes: int = 0

    def _validate(self) -> None:
        self._check_fab()
        check_nonneg_int("target_classes", self.target_classes)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv, norm = self._search(ctx, self.target_classes, None)
        return x_adv, torch.isfinite(norm)


@register("fab-linf")
@dataclass(frozen=True, kw_only=True)
class FABLinf(_FABMinimumNorm):
    """FAB minimising the ℓ∞ norm (Croce & Hein 2020); see :class:`_FABMinimumNorm`."""

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall,)


@register("fab-l2")
@dataclass(frozen=True, kw_only=True)
class FABL2(_FABMinimumNorm):
    """FAB minimising the ℓ2 norm (Croce & Hein 2020); see :class:`_FABMinimumNorm`."""

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L2Ball,)


@register("fab-l1")
@dataclass(frozen=True, kw_only=True)
class FABL1(_FABMinimumNorm):
    """FAB minimising the ℓ1 norm (Croce & Hein 2020); see :class:`_FABMinimumNorm`."""

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L1Ball,)


__all__ = [
    "FAB",
    "FABL1",
    "FABL2",
    "FABLinf",
    "FABTargeted",
    "fab_minimum_norm",
    "fab_run",
    "project_onto_hyperplane",
]
