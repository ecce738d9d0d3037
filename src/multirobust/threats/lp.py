"""ℓ∞, ℓ2 and ℓ1 balls intersected with the input box, with exact Euclidean projections.

Every projection solves  min_z ½‖z − v‖²  s.t.  ‖z − x‖_p ≤ ε,  0 ≤ z ≤ 1  exactly (up to float
precision), not by rescaling then clipping, which is not the projection when the box is active.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar, TypeVar

import torch

from .base import BOX, Threat, ThreatParams, flat, movable_in_box, per_example
from .text import fmt, number

B = TypeVar("B", bound="LpBall")


def _check_eps(eps: float) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid eps: {eps!r} (must be a finite number >= 0)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid eps: {eps!r} (must be a finite number >= 0)")
    return value


#: Keeps |gap| / ‖grad‖ finite when a gradient vanishes (the step is then 0).
_TINY = 1e-12


def _box_limits(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate bounds on delta that keep x + delta in the box: lo = −x ≤ 0 ≤ hi = 1 − x."""
    lo, hi = BOX
    return lo - x, hi - x


class LpBall(Threat):
    """Base of the ℓp balls {x' : ‖x' − x‖_p ≤ eps} ∩ [0, 1]^d."""

    additive = True
    syntax = "NAME:EPS"
    #: The norm's order p, and its dual q (1/p + 1/q = 1), in which gradients are measured.
    p: ClassVar[float] = math.inf
    dual: ClassVar[float] = 1.0

    def __init__(self, eps: float) -> None:
        self.eps = _check_eps(eps)

    def __str__(self) -> str:
        return f"{self.name}:{fmt(self.eps)}"

    @classmethod
    def from_text(cls, args: str, where: str) -> Threat:
        return cls(number(args, where))

    def with_eps(self: B, eps: float) -> B:
        """The same kind of ball (same options) with radius ``eps``."""
        return type(self)(eps)

    @property
    def is_trivial(self) -> bool:
        return self.eps == 0.0

    @classmethod
    def box_diameter(cls, dim: int) -> float:
        """The largest distance between two points of [0, 1]^dim in this norm: dim^(1/p).

        A ball of this radius around any point of the box contains the whole box.
        """
        return float(dim) ** (1.0 / cls.p)

    def norm(self, delta: torch.Tensor, params: ThreatParams | None = None) -> torch.Tensor:
        """Per-example ℓp norm of ``delta`` (N,)."""
        return torch.linalg.vector_norm(flat(delta), ord=self.p, dim=1)

    def dual_norm(self, grad: torch.Tensor) -> torch.Tensor:
        """Per-example dual norm ‖grad‖_q (N,): the largest ⟨grad, d⟩ over the unit ball."""
        return torch.linalg.vector_norm(flat(grad), ord=self.dual, dim=1)

    @abstractmethod
    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of perturbations ``delta`` (N, ...) onto the ball alone, without
        the box (for a perturbation shared by many inputs, each clipped to the box after)."""

    @abstractmethod
    def boundary_step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The smallest perturbation r in this norm with ⟨grad, r⟩ = |gap| (DeepFool's step onto
        a linearised boundary): |gap| / ‖grad‖_q · s(grad), s the unit steepest-ascent direction.

        Shape: gap (N,), grad (N, D) -> (N, D).
        """

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: ThreatParams | None = None,
    ) -> torch.Tensor:
        # At least float32: its rounding (~1e-7 relative, even summed over a large image) is far
        # below any tolerance used here, and a float64 copy of the batch would cost more.
        dtype = torch.promote_types(x_adv.dtype, torch.float32)
        norms = self.norm(x_adv.to(dtype) - x.to(dtype))
        return (norms <= self.eps * (1 + atol) + atol) & self.in_box(x_adv, atol)

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        """Euclidean projection of ``x_adv`` onto the ball around ``x`` intersected with the box.

        Shape: x_adv, x (N, ...) -> (N, ...), dtype of x_adv.
        """
        delta = self._project_delta(x_adv - x, x)
        lo, hi = BOX
        # x + delta is in the box analytically; clamp removes the last float rounding.
        return (x + delta).clamp_(lo, hi)

    @abstractmethod
    def _project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project a perturbation onto {d : ‖d‖_p ≤ eps, 0 ≤ x + d ≤ 1}."""

    @abstractmethod
    def _sample_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random perturbation inside the ball (before the box)."""

    def sample_ball(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Perturbations uniform in the ball (not intersected with the box), one per row of
        ``x`` (only its shape, dtype and device are used)."""
        return self._sample_delta(x, generator)

    def random_init(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random point of the set around ``x``: uniform in the ball, projected to the box."""
        if self.eps == 0:
            return x.clone()
        return self.project(x + self._sample_delta(x, generator), x)

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ThreatParams | None]:
        """:meth:`random_init`; ℓp balls need no parameters."""
        return self.random_init(x, generator), None

    @abstractmethod
    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit-norm direction maximising ⟨grad, d⟩ over the unit ball of this norm.

        Args:
            grad: gradient of the loss w.r.t. the input, (N, ...).
            x_adv: current point; when given, coordinates that sit on the box face the gradient
                pushes against are ignored, so the step is not spent where it cannot move.
        """

    def step(
        self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, step_size: float
    ) -> torch.Tensor:
        """One projected steepest-ascent step: Π_{B(x, ε) ∩ box}(x_adv + α · s(grad)).

        The update rule of PGD, FGSM and every adversarial-training objective, written once.

        Args:
            x_adv: current iterate (N, ...).
            x: clean inputs, the centre of the ball (N, ...).
            grad: gradient of the loss at ``x_adv`` (N, ...).
            step_size: α, in this norm's units.
        """
        return self.project(x_adv + step_size * self.steepest_ascent(grad, x_adv), x)

    def default_step_size(self, steps: int) -> float:
        """Madry et al.'s rule of thumb: 2.5 ε / steps, enough to reach the boundary anywhere."""
        return 2.5 * self.eps / max(steps, 1)

    @staticmethod
    def _movable(grad: torch.Tensor, x_adv: torch.Tensor | None) -> torch.Tensor:
        """Zero the gradient where the box blocks the move it asks for."""
        return movable_in_box(grad, x_adv)


class LinfBall(LpBall):
    """ℓ∞ ball of radius eps: every coordinate moves by at most eps."""

    p = math.inf
    dual = 1.0
    syntax = "linf:EPS"

    def _project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lo, hi = _box_limits(x)
        # The set is a box, so the projection is coordinate-wise clipping, exactly.
        return torch.maximum(torch.minimum(delta, hi.clamp(max=self.eps)), lo.clamp(min=-self.eps))

    def _sample_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.eps

    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        # No box mask here: under ℓ∞ a blocked coordinate's move is undone by the clip in
        # project() without affecting any other coordinate, so masking would only cost time.
        return grad.sign()

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.clamp(-self.eps, self.eps)

    def boundary_step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        l1 = grad.abs().sum(1).clamp_min(_TINY)
        return (gap.abs() / l1).unsqueeze(1) * grad.sign()

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        lo, hi = BOX
        # One fused min/max instead of the generic path: this is the hottest call in ℓ∞ PGD.
        return torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps).clamp_(lo, hi)


class L2Ball(LpBall):
    """ℓ2 ball of radius eps."""

    p = 2.0
    dual = 2.0
    syntax = "l2:EPS"
    #: Active-set steps (exact once the capped set settles), then bisection on the bracket left.
    _active_set_steps = 5
    _bisection_steps = 3

    def _project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # KKT: the solution is clip(t·d, lo, hi) for the largest t in [0, 1] with
        # φ(t) = ‖clip(t·d)‖² ≤ eps². φ is increasing, so
        #   t ≥ eps/‖d‖          (clipping only shrinks: φ(t) ≤ t²‖d‖²), and
        #   t ≤ eps/‖clip(d)‖    (for t ≤ 1, min(t|d|, u) ≥ t·min(|d|, u)).
        # From the lower end, active-set steps solve φ's current quadratic piece
        # Σ_capped u² + t²·Σ_free d² = eps²: each lands at or below the root (capping can only
        # lower φ) and on it exactly once the capped set stops changing. A few bisection steps on
        # what is left of the bracket follow as a guarantee. No host syncs.
        lo, hi = _box_limits(x)
        eps2 = self.eps**2
        v = flat(delta)
        a = v.abs()
        cap = torch.where(v >= 0, flat(hi), -flat(lo)).clamp_min(0.0)
        a2, cap2 = a.pow(2), cap.pow(2)
        tiny = torch.finfo(delta.dtype).tiny
        norm2 = a2.sum(1)
        clip2 = torch.minimum(a2, cap2).sum(1)
        t_lo = (eps2 / norm2.clamp_min(tiny)).sqrt().clamp(max=1.0)
        t_hi = (eps2 / clip2.clamp_min(tiny)).sqrt().clamp(max=1.0)
        inside = clip2 <= eps2
        # On the CPU a host sync is free, so two shortcuts that give the very same answer apply
        # (on an accelerator the loops are cheap and a sync would stall the queue):
        # - where the rescaled point t_lo·d is already in the box, it is the projection
        #   (φ(t_lo) = eps², and φ only grows past t_lo): no loop at all;
        # - once an active-set step leaves t_lo unchanged, every later one does too (same
        #   capped set, same step), so the loop stops there.
        on_cpu = delta.device.type == "cpu"
        if on_cpu and bool((inside | (t_lo.unsqueeze(1) * a <= cap).all(1)).all()):
            t = torch.where(inside, torch.ones_like(t_lo), t_lo)
            return torch.maximum(torch.minimum(delta * per_example(t, delta), hi), lo)
        for _ in range(self._active_set_steps):
            capped = t_lo.unsqueeze(1) * a >= cap
            fixed = torch.where(capped, cap2, 0.0).sum(1)
            free = torch.where(capped, 0.0, a2).sum(1)
            step = ((eps2 - fixed).clamp_min(0.0) / free.clamp_min(tiny)).sqrt()
            t_next = torch.maximum(t_lo, torch.minimum(step, t_hi))
            if on_cpu and torch.equal(t_next, t_lo):
                break
            t_lo = t_next
        for _ in range(self._bisection_steps):
            t = (t_lo + t_hi) / 2
            phi = torch.minimum(t.unsqueeze(1).pow(2) * a2, cap2).sum(1)
            ok = phi <= eps2
            t_lo = torch.where(ok, t, t_lo)
            t_hi = torch.where(ok, t_hi, t)
        t = torch.where(inside, torch.ones_like(t_lo), t_lo)
        return torch.maximum(torch.minimum(delta * per_example(t, delta), hi), lo)

    def _sample_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        g = g / per_example(torch.linalg.vector_norm(flat(g), dim=1).clamp_min(1e-12), g)
        d = flat(g).shape[1]
        r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        return g * per_example(self.eps * r.pow(1.0 / d), g)

    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        g = self._movable(grad, x_adv)
        # Tiny but real gradients (saturated softmax: 1e-13 and below) must still give a unit
        # direction; only an exactly zero gradient gives zero.
        norm = torch.linalg.vector_norm(flat(g), dim=1).clamp_min(torch.finfo(g.dtype).tiny)
        return g / per_example(norm, g)

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(flat(delta), dim=1)
        scale = torch.where(
            norm > self.eps, self.eps / norm.clamp_min(_TINY), torch.ones_like(norm)
        )
        return delta * per_example(scale, delta)

    def boundary_step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        sq = grad.pow(2).sum(1).clamp_min(_TINY)
        return (gap.abs() / sq).unsqueeze(1) * grad


class L1Ball(LpBall):
    """ℓ1 ball of radius eps, with the exact sort-based projection and SLIDE's sparse ascent.

    Args:
        eps: radius.
        sparsity: percentile q of SLIDE (Tramèr & Boneh 2019): the ascent step moves the
            coordinates whose |gradient| is at or above the q-th percentile. q = 99 by default.
    """

    p = 1.0
    dual = math.inf
    syntax = "l1:EPS or l1:EPS,q=PERCENTILE"

    def __init__(self, eps: float, sparsity: float = 99.0) -> None:
        super().__init__(eps)
        if not 0.0 <= float(sparsity) < 100.0:
            raise ValueError(f"Invalid sparsity: {sparsity!r} (must be a percentile in [0, 100))")
        self.sparsity = float(sparsity)

    @classmethod
    def from_text(cls, args: str, where: str) -> Threat:
        if ",q=" in args:
            eps_text, _, q_text = args.partition(",q=")
            return cls(number(eps_text, where), sparsity=number(q_text, where))
        return cls(number(args, where))

    def with_eps(self, eps: float) -> L1Ball:
        return type(self)(eps, sparsity=self.sparsity)

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        # Duchi et al. (2008): soft-threshold |delta| by the τ ≥ 0 that leaves ℓ1 mass eps.
        v = flat(delta)
        a = v.abs()
        srt = a.sort(dim=1, descending=True).values
        ks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
        taus = (srt.cumsum(1) - self.eps) / ks
        k = (srt > taus).to(torch.int64).cumsum(1).argmax(1, keepdim=True)
        tau = taus.gather(1, k).clamp_min(0.0)
        out = v.sign() * (a - tau).clamp_min(0.0)
        out = torch.where((a.sum(1) <= self.eps).unsqueeze(1), v, out)
        return out.reshape(delta.shape)

    def boundary_step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        # All of the step on the largest |grad_i|: ⟨grad, r⟩ = |gap| at ‖r‖₁ = |gap| / ‖grad‖∞.
        mag = grad.abs()
        top = mag.argmax(1, keepdim=True)
        peak = mag.gather(1, top).clamp_min(_TINY)
        r = torch.zeros_like(grad)
        return r.scatter_(1, top, (gap.abs().unsqueeze(1) / peak) * grad.gather(1, top).sign())

    def _project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Solution: d_i = sign(v_i) · clip(|v_i| − τ, 0, u_i), u_i the room in v_i's direction,
        # τ ≥ 0 the root of f(τ) = Σ clip(|v_i| − τ, 0, u_i) = eps. f is piecewise linear and
        # decreasing with breakpoints |v_i| − u_i (coordinate leaves its cap) and |v_i| (reaches 0);
        # sorting the breakpoints gives f at every one of them by a cumulative sum, and the root
        # is found by linear interpolation on its segment (Duchi et al. 2008, made box-aware).
        shape, dtype = delta.shape, delta.dtype
        lo, hi = _box_limits(x)
        v = flat(delta).to(torch.float64)
        cap = torch.where(v >= 0, flat(hi), -flat(lo)).to(torch.float64).clamp_min(0.0)
        a = v.abs()
        clipped = torch.minimum(a, cap)
        inside = clipped.sum(1) <= self.eps

        points = torch.cat([a - cap, a], dim=1)
        # Slope of f changes by −1 when τ passes |v|−u (start shrinking), +1 when it passes |v|.
        change = torch.cat([-torch.ones_like(a), torch.ones_like(a)], dim=1)
        order = points.argsort(dim=1)
        bp = points.gather(1, order)
        slope = change.gather(1, order).cumsum(1)  # slope of f just right of each breakpoint
        gaps = bp.diff(dim=1)
        f0 = cap.sum(1, keepdim=True)  # f at the smallest breakpoint: every coordinate at its cap
        f = torch.cat([f0, f0 + (slope[:, :-1] * gaps).cumsum(1)], dim=1)
        # First breakpoint where f drops to ≤ eps; the root lies on the segment before it.
        below = f <= self.eps
        k = below.to(torch.int64).argmax(dim=1, keepdim=True).clamp_min(1)
        b0, f_0, s0 = bp.gather(1, k - 1), f.gather(1, k - 1), slope.gather(1, k - 1)
        tau = b0 + (f_0 - self.eps) / (-s0).clamp_min(1.0)
        tau = tau.clamp_min(0.0)
        out = v.sign() * torch.minimum((a - tau).clamp_min(0.0), cap)
        out = torch.where(inside.unsqueeze(1), v.sign() * clipped, out)
        return out.to(dtype).reshape(shape)

    def _sample_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Uniform in the ℓ1 ball: magnitudes from a Dirichlet(1,…,1) with one slack coordinate
        # (normalised exponentials), random signs.
        n, d = flat(x).shape
        e = torch.empty((n, d + 1), device=x.device, dtype=x.dtype).exponential_(
            generator=generator
        )
        mags = e[:, :d] / e.sum(1, keepdim=True)
        signs = torch.randint(0, 2, (n, d), generator=generator, device=x.device).to(x.dtype)
        return (self.eps * mags * (2 * signs - 1)).reshape(x.shape)

    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """SLIDE direction: signs of the top (100 − q)% coordinates of |grad|, ℓ1-normalised."""
        g = flat(self._movable(grad, x_adv))
        d = g.shape[1]
        # round() first: d·(100 − q)/100 = 1.0000000000000009 must give k = 1, not 2.
        k = max(1, math.ceil(round(d * (100.0 - self.sparsity) / 100.0, 9)))
        mag = g.abs()
        thresh = mag.topk(k, dim=1).values[:, -1:]
        e = torch.where((mag >= thresh) & (mag > 0), g.sign(), torch.zeros_like(g))
        e = e / e.abs().sum(1, keepdim=True).clamp_min(1.0)
        return e.reshape(grad.shape)

    def default_step_size(self, steps: int) -> float:
        # SLIDE moves few coordinates per step, so it needs more total travel than 2.5 ε: Tramèr &
        # Boneh use eps/10 per step (cleverhans: eps_iter=1.0 for eps=10).
        return max(self.eps / 10.0, 2.5 * self.eps / max(steps, 1))

    def __str__(self) -> str:
        base = super().__str__()
        return base if self.sparsity == 99.0 else f"{base},q={fmt(self.sparsity)}"
