"""RayS (Chen & Gu, KDD 2020): a decision-based ℓ∞ attack searching over ray directions.

Only the predicted label is used. Along a sign direction s ∈ {−1, +1}^d the points
x(r, s) = clip(x + r s, 0, 1) are at ℓ∞ distance ≤ r from x, and the attack looks for the
direction whose decision-boundary radius

    g(s) = min { r ∈ [0, 1] : the goal is met at x(r, s) }

is smallest. The search is hierarchical: at level k the d coordinates (flattened) are cut into
2^k consecutive blocks, and each block in turn has its signs flipped in the best direction so
far, s'. One query at the current best radius r* tells whether g(s') < r* (the goal holds at
x(r*, s')); only then is g(s') bisected on [0, r*] to the tolerance ``tol`` and s' kept. A level
done, the blocks halve. The first direction tried is s = +1 everywhere, checked at r = 1 (the
box corner it points to).

Each example keeps its own query budget (``steps``) and its point x(r*, s*) is returned. With
``early_stop`` (the default) an example stops once r* ≤ ε; with ``early_stop=False`` the search
runs to the budget (minimal-distortion curves: give ``linf:1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import LinfBall, Threat
from .base import Attack, Context, check_positive, check_positive_int
from .decision import LabelOracle
from .registry import register


@register("rays")
@dataclass(frozen=True, kw_only=True)
class RayS(Attack):
    """RayS (Chen & Gu 2020): hard-label ℓ∞ attack by hierarchical sign-flip ray search.

    Args:
        steps: query budget per example (label queries).
        tol: precision of the radius bisection, in ℓ∞ units.
        batch_size: points per model call (memory only).
        early_stop: stop an example once r* ≤ ε (False: keep shrinking r* until the budget).

    Shape:
        any (N, ...) input in [0, 1]; blocks are runs of the flattened coordinates.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall,)
    steps: int = 10000
    tol: float = 1e-4
    batch_size: int = 1024
    early_stop: bool = True

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive("tol", self.tol)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, Any]:
        threat = ctx.ball
        eps = threat.eps if self.early_stop else -1.0
        x = ctx.x.flatten(1)
        n, d = x.shape
        oracle = LabelOracle(ctx, self.steps, self.batch_size)
        shape = ctx.x.shape[1:]

        def point(rows: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return (x[rows] + r.unsqueeze(1) * s).clamp(0.0, 1.0).view(-1, *shape)

        sign = torch.ones_like(x)
        radius = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        best = ctx.x.clone()
        level, block, first = 0, 0, True
        while True:
            rows = ((oracle.remaining() > 0) & (radius > eps)).nonzero().flatten()
            if rows.numel() == 0:
                break
            cand = sign[rows].clone()
            if first:
                first = False
            else:
                size = math.ceil(d / 2**level)
                start, end = block * size, min(d, (block + 1) * size)
                cand[:, start:end] *= -1
                block += 1
                if end >= d:
                    level, block = level + 1, 0
            # One query at the best radius so far (the corner, r = 1, before any is known).
            r_check = radius[rows].clamp(max=1.0)
            hit = oracle(point(rows, cand, r_check), rows)
            if not bool(hit.any()):
                continue
            rows, cand = rows[hit], cand[hit]
            hi = r_check[hit]
            lo = torch.zeros_like(hi)
            while True:
                # Stop at the tolerance, at the budget, or once inside the ball (fixed-ε goal met).
                act = (
                    ((hi - lo > self.tol) & (hi > eps) & (oracle.remaining()[rows] > 0))
                    .nonzero()
                    .flatten()
                )
                if act.numel() == 0:
                    break
                mid = (lo[act] + hi[act]) / 2
                won = oracle(point(rows[act], cand[act], mid), rows[act])
                hi[act[won]] = mid[won]
                lo[act[~won]] = mid[~won]
            better = hi < radius[rows]
            rows, cand, hi = rows[better], cand[better], hi[better]
            radius[rows] = hi
            sign[rows] = cand
            best[rows] = point(rows, cand, hi)
        return best, None
