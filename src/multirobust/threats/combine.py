"""Combinations of threat models: the union (per-example worst case) and affine combinations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch

from .base import Threat, _flat, _per_example
from .lp import LinfBall, LpBall


class Union(Threat):
    """The adversary picks, per example, any one member threat model.

    Robust accuracy under a union is the fraction of examples that withstand every member.
    """

    def __init__(self, threats: Sequence[Threat]) -> None:
        members = list(threats)
        if len(members) < 1:
            raise ValueError("Union needs at least one threat model")
        for t in members:
            if not isinstance(t, Threat):
                raise TypeError(f"Union members must be threat models, got {type(t).__name__}")
            if isinstance(t, Union):
                raise ValueError("Nested unions: list the members of the inner union instead")
        self.threats: tuple[Threat, ...] = tuple(members)

    def __str__(self) -> str:
        return "union(" + ",".join(str(t) for t in self.threats) + ")"

    def __iter__(self) -> Iterator[Threat]:
        return iter(self.threats)

    def __len__(self) -> int:
        return len(self.threats)

    @property
    def is_trivial(self) -> bool:
        return all(t.is_trivial for t in self.threats)

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: object | None = None,
    ) -> torch.Tensor:
        """Member of the union: in the member that ``params = (index, member_params)`` names.

        Without params, an example counts as contained if any member recognises it.
        """
        if params is None:
            result = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            for t in self.threats:
                result |= t.contains(x_adv, x, atol)
            return result
        index, member_params = cast(tuple[torch.Tensor, list[Any]], params)
        result = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for i, t in enumerate(self.threats):
            mine = index.to(x.device) == i
            result |= mine & t.contains(x_adv, x, atol, member_params[i])
        return result


class Affine(Threat):
    """Affine combinations of two ℓp balls (Tramèr & Boneh 2019): {λ·δa + (1−λ)·δb}, λ ∈ [0, 1].

    A member is ``clip(x + λ·δa + (1−λ)·δb, 0, 1)`` with ``δa`` in ``a``'s ball and ``δb`` in
    ``b``'s. Clipping to the box shrinks each coordinate toward 0, which keeps both parts in their
    balls, so clipped points stay in the set.
    """

    def __init__(self, a: Threat, b: Threat) -> None:
        for t in (a, b):
            if not isinstance(t, LpBall):
                raise ValueError(f"Affine combines two ℓp balls, got {t!s}")
        self.a: LpBall = a  # type: ignore[assignment]
        self.b: LpBall = b  # type: ignore[assignment]

    def __str__(self) -> str:
        return f"affine({self.a},{self.b})"

    @property
    def is_trivial(self) -> bool:
        return self.a.is_trivial and self.b.is_trivial

    def combine(
        self, x: torch.Tensor, lam: torch.Tensor, delta_a: torch.Tensor, delta_b: torch.Tensor
    ) -> torch.Tensor:
        """The input ``clip(x + λ·δa + (1−λ)·δb)``; ``lam`` is per example (N,)."""
        lam = _per_example(lam.to(x.dtype), x)
        return (x + lam * delta_a + (1 - lam) * delta_b).clamp(0.0, 1.0)

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: object | None = None,
    ) -> torch.Tensor:
        """Membership, exact when one part is ℓ∞; otherwise certified by ``params``.

        ``params = (lam, delta_a, delta_b)`` certifies a decomposition. Without params: for ℓ∞
        combined with ℓp the test is exact (the ℓp part needed after spending λ·ε∞ per coordinate
        is a soft-threshold, convex in λ, minimised by ternary search); for other pairs, being in
        either ball (a subset of the set) is what can be certified.
        """
        box = self.in_box(x_adv, atol)
        delta = x_adv.to(torch.float64) - x.to(torch.float64)
        if params is not None:
            lam, da, db = cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], params)
            lam64 = lam.to(torch.float64)
            ok_lam = (lam64 >= -atol) & (lam64 <= 1 + atol)
            ok_a = self.a.norm(da) <= self.a.eps * (1 + atol) + atol
            ok_b = self.b.norm(db) <= self.b.eps * (1 + atol) + atol
            unclipped = (
                x.to(torch.float64)
                + _per_example(lam64, delta) * da.to(torch.float64)
                + (1 - _per_example(lam64, delta)) * db.to(torch.float64)
            )
            # Clipping may only move a coordinate toward x (shrink), never past it.
            recon = unclipped.clamp(0.0, 1.0)
            close = (_flat(recon) - _flat(x_adv.to(torch.float64))).abs().amax(1) <= max(atol, 1e-5)
            return box & ok_lam & ok_a & ok_b & close
        linf, other = (self.a, self.b) if isinstance(self.a, LinfBall) else (self.b, self.a)
        if not isinstance(linf, LinfBall):
            return self.a.contains(x_adv, x, atol) | self.b.contains(x_adv, x, atol)
        mag = _flat(delta).abs()

        def excess(lam: torch.Tensor) -> torch.Tensor:
            rest = (mag - lam.unsqueeze(1) * linf.eps).clamp_min(0.0)
            need = torch.linalg.vector_norm(rest, ord=other.p, dim=1)
            return need - (1 - lam) * other.eps

        lo = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        hi = torch.ones_like(lo)
        for _ in range(60):
            m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            left = excess(m1) <= excess(m2)
            hi = torch.where(left, m2, hi)
            lo = torch.where(left, lo, m1)
        best = torch.minimum(
            excess((lo + hi) / 2), torch.minimum(excess(lo * 0), excess(hi * 0 + 1))
        )
        scale = max(linf.eps, other.eps, 1.0)
        return box & (best <= atol * scale)
