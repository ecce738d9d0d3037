"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020): a decision-based attack, ℓ2 and ℓ∞.

Only the predicted label is used: each query answers φ(x') = +1 if the goal is met at x' (another
class than the true one, or the target), −1 otherwise. Starting from an adversarial point, the
attack walks along the decision boundary towards the clean input x:

1. *Boundary search.* Bisect between x and the current adversarial point x̃ until the interval
   is below θ (ℓ2: blend x + α(x̃ − x), α ∈ [0, 1], θ = γ / d^{3/2}; ℓ∞: clip x̃ − x to
   [−r, r], r ∈ [0, ‖x̃ − x‖∞], relative tolerance θ = γ / d²). The adversarial end is kept.
2. *Gradient direction at the boundary point x_t* from B_t = min(B₀√t, B_max) label queries:

       v = (1/B) Σ_b (φ(x_t + δ u_b) − φ̄) u_b,     u_b uniform on the unit ℓ2 sphere
                                                    (ℓ∞: uniform in the cube, normalised),

   with the baseline φ̄ = mean φ (dropped when every φ_b agrees) and δ = √d θ ‖x_t − x‖₂
   (ℓ∞: d θ ‖x_t − x‖∞; 0.1 at the first iteration).
3. *Geometric step.* ξ = ‖x_t − x‖ / √t, halved until x_t + ξ w is adversarial, with w = v/‖v‖₂
   (ℓ∞: w = sign v); then back to step 1 from the new point.

The first adversarial point is uniform noise (redrawn up to ``init_tries`` times). Every example
keeps its own query budget (``steps``), and the smallest adversarial perturbation found so far is
returned. With ``early_stop`` (the default) an example stops as soon as it is inside the threat's
ball, which is all a robust-accuracy evaluation needs; with ``early_stop=False`` every example
spends its whole budget shrinking the perturbation (minimal-distortion curves; give a radius no
perturbation can exceed, ``l2:100`` on MNIST or ``linf:1``, so the contract keeps the result).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import L2Ball, LinfBall, Threat
from .base import Attack, Context, check_positive, check_positive_int
from .decision import LabelOracle
from .registry import register

#: Halvings of the step size before an iteration gives up on moving (ξ shrinks by 2^−25).
_MAX_HALVINGS = 25
#: Bisection steps at most (float precision ends a search long before this).
_MAX_BISECTIONS = 64
#: Gradient-estimate points generated at once (bounds memory; the queries are unaffected).
_ESTIMATE_CHUNK = 8192


def _per_row(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(M,) -> (M, 1, ..., 1) broadcasting against ``like`` (M, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@register("hopskipjump")
@dataclass(frozen=True, kw_only=True)
class HopSkipJump(Attack):
    """HopSkipJump (Chen et al. 2020): label-only boundary walk with estimated gradients.

    Args:
        steps: query budget per example (label queries, initialisation included).
        init_evals: B₀, gradient-estimate queries at the first iteration (grows as √t).
        max_evals: B_max, the most gradient-estimate queries in one iteration.
        gamma: γ in the bisection tolerance θ = γ/d^{3/2} (ℓ2) or γ/d² (ℓ∞).
        init_tries: random uniform images tried per example to find a first adversarial point.
        batch_size: points per model call (memory only).
        early_stop: stop an example once its perturbation is inside the ball (False: minimise
            the distortion until the budget is spent).

    Shape:
        any (N, ...) input in [0, 1].
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L2Ball, LinfBall)
    steps: int = 10000
    init_evals: int = 100
    max_evals: int = 10000
    gamma: float = 1.0
    init_tries: int = 100
    batch_size: int = 1024
    early_stop: bool = True

    def _validate(self) -> None:
        for name in ("steps", "init_evals", "max_evals", "init_tries", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive("gamma", self.gamma)

    # ------------------------------------------------------------------ geometry per norm
    def _point(
        self, linf: bool, x: torch.Tensor, far: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The point at parameter ``t`` (M,) between x (t = 0) and ``far`` (M, ...).

        ℓ2: the blend x + t (far − x), t ∈ [0, 1]. ℓ∞: x + clip(far − x, −t, t), t a radius.
        """
        if linf:
            r = _per_row(t, x)
            return x + torch.maximum(torch.minimum(far - x, r), -r)
        return x + _per_row(t, x) * (far - x)

    def _boundary(
        self,
        oracle: LabelOracle,
        linf: bool,
        theta: float,
        x: torch.Tensor,
        far: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Bisect from each adversarial ``far`` towards ``x`` (both (M, ...)); keep the far side."""
        m = rows.numel()
        if linf:
            hi = (far - x).flatten(1).abs().amax(1)
            tol = theta * hi
        else:
            hi = torch.ones(m, device=x.device, dtype=x.dtype)
            tol = torch.full_like(hi, theta)
        lo = torch.zeros_like(hi)
        for _ in range(_MAX_BISECTIONS):
            act = ((hi - lo > tol) & (oracle.remaining()[rows] > 0)).nonzero().flatten()
            if act.numel() == 0:
                break
            mid = (lo[act] + hi[act]) / 2
            # Float precision reached: the midpoint no longer differs from an end.
            act_ok = (mid > lo[act]) & (mid < hi[act])
            act, mid = act[act_ok], mid[act_ok]
            if act.numel() == 0:
                break
            hit = oracle(self._point(linf, x[act], far[act], mid), rows[act])
            hi[act[hit]] = mid[hit]
            lo[act[~hit]] = mid[~hit]
        return self._point(linf, x, far, hi)

    def _direction(
        self,
        ctx: Context,
        oracle: LabelOracle,
        linf: bool,
        cur: torch.Tensor,
        rows: torch.Tensor,
        count: torch.Tensor,
        delta: torch.Tensor,
    ) -> torch.Tensor:
        """Unit (ℓ2) estimate of the direction towards the adversarial side at ``cur`` (M, ...).

        Example i spends ``count[i]`` queries on points cur_i + δ_i u (clipped to the box).
        """
        g = ctx.generator
        v = torch.zeros_like(cur)
        sizes = count.tolist()  # one host sync per iteration, for the grouping below
        # Examples in groups whose points fit in one chunk (an example is never split).
        start = 0
        m = rows.numel()
        while start < m:
            total, end = 0, start
            while end < m and (end == start or total + sizes[end] <= _ESTIMATE_CHUNK):
                total += sizes[end]
                end += 1
            idx = torch.arange(start, end, device=cur.device)
            owner = idx.repeat_interleave(count[start:end])
            shape = (owner.numel(), *cur.shape[1:])
            if linf:
                u = torch.rand(shape, generator=g, device=cur.device, dtype=cur.dtype) * 2 - 1
            else:
                u = torch.randn(shape, generator=g, device=cur.device, dtype=cur.dtype)
            u = u / _per_row(u.flatten(1).norm(dim=1).clamp_min(1e-12), u)
            base = cur[owner]
            step = _per_row(delta[owner], u)
            pts = (base + step * u).clamp(0.0, 1.0)
            u = (pts - base) / step  # the box may have shortened a probe
            phi = oracle(pts, rows[owner]).to(cur.dtype) * 2 - 1
            n_i = count[start:end].to(cur.dtype)
            mean = torch.zeros(end - start, device=cur.device, dtype=cur.dtype)
            mean.index_add_(0, owner - start, phi)
            mean = mean / n_i
            centred = torch.where(mean[owner - start].abs() == 1, phi, phi - mean[owner - start])
            acc = torch.zeros_like(cur[start:end])
            acc.index_add_(0, owner - start, _per_row(centred, u) * u)
            v[start:end] = acc / _per_row(n_i, acc)
            start = end
        return v / _per_row(v.flatten(1).norm(dim=1).clamp_min(1e-12), v)

    # ------------------------------------------------------------------ the attack
    def _run(self, ctx: Context) -> tuple[torch.Tensor, Any]:
        threat = ctx.ball
        linf = math.isinf(threat.p)
        x, g = ctx.x, ctx.generator
        n = x.shape[0]
        d = x[0].numel()
        theta = self.gamma / (d**2 if linf else d**1.5)
        stop_at = threat.eps if self.early_stop else -1.0
        oracle = LabelOracle(ctx, self.steps, self.batch_size)

        def dist(a: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return threat.norm(a - x[rows])

        # Initialisation: uniform noise until the goal is met.
        adv = x.clone()
        have = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.init_tries):
            rows = (~have & (oracle.remaining() > 0)).nonzero().flatten()
            if rows.numel() == 0:
                break
            noise = torch.rand(x[rows].shape, generator=g, device=x.device, dtype=x.dtype)
            hit = oracle(noise, rows)
            adv[rows[hit]] = noise[hit]
            have[rows[hit]] = True
        rows = have.nonzero().flatten()
        best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        if rows.numel():  # (no example may have found a starting point)
            adv[rows] = self._boundary(oracle, linf, theta, x[rows], adv[rows], rows)
            best_norm[rows] = dist(adv[rows], rows)
        best = adv.clone()

        t = 0
        while True:
            t += 1
            live = have & (oracle.remaining() > 0) & (best_norm > stop_at)
            rows = live.nonzero().flatten()
            if rows.numel() == 0:
                break
            cur = adv[rows]
            here = dist(cur, rows)
            if t == 1:
                delta = torch.full_like(here, 0.1)
            else:
                delta = (d * theta if linf else math.sqrt(d) * theta) * here
            evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            count = oracle.remaining()[rows].clamp_max(evals)
            v = self._direction(ctx, oracle, linf, cur, rows, count, delta)
            w = v.sign() if linf else v

            # Geometric step-size search: halve ξ until the step lands on the adversarial side.
            xi = here / math.sqrt(t)
            moved = cur.clone()
            ok = torch.zeros(rows.numel(), dtype=torch.bool, device=x.device)
            for _ in range(_MAX_HALVINGS):
                act = (~ok & (oracle.remaining()[rows] > 0)).nonzero().flatten()
                if act.numel() == 0:
                    break
                cand = (cur[act] + _per_row(xi[act], cur[act]) * w[act]).clamp(0.0, 1.0)
                hit = oracle(cand, rows[act])
                moved[act[hit]] = cand[hit]
                ok[act[hit]] = True
                xi[act[~hit]] /= 2
            new = cur.clone()
            if bool(ok.any()):
                sel = ok.nonzero().flatten()
                new[sel] = self._boundary(oracle, linf, theta, x[rows[sel]], moved[sel], rows[sel])
            adv[rows] = new
            new_norm = dist(new, rows)
            better = new_norm < best_norm[rows]
            best[rows[better]] = new[better]
            best_norm[rows[better]] = new_norm[better]
        return best, None
