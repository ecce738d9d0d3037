"""Combinations of threat models: the union (per-example worst case) and affine combinations."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .base import (
    Threat,
    ThreatParams,
    flat,
    per_example,
    place_params,
    require_params,
    select_params,
)
from .lp import LinfBall, LpBall


@dataclass(frozen=True)
class UnionParams(ThreatParams):
    """Which member each example was attacked under (``index``, (N,)) and every member's
    parameters for the whole batch (``None`` for ℓp members)."""

    index: torch.Tensor
    members: tuple[ThreatParams | None, ...]

    def select(self, rows: torch.Tensor) -> UnionParams:
        return UnionParams(self.index[rows], tuple(select_params(p, rows) for p in self.members))

    def place(self, rows: torch.Tensor, n: int) -> UnionParams:
        index = self.index.new_zeros(n)
        index[rows] = self.index
        return UnionParams(index, tuple(place_params(p, rows, n) for p in self.members))

    def member_index(self) -> torch.Tensor | None:
        return self.index


@dataclass(frozen=True)
class AffineParams(ThreatParams):
    """A decomposition λ·δa + (1−λ)·δb per example: ``lam`` (N,), ``delta_a``, ``delta_b``
    (N, ...)."""

    lam: torch.Tensor
    delta_a: torch.Tensor
    delta_b: torch.Tensor

    def select(self, rows: torch.Tensor) -> AffineParams:
        return AffineParams(self.lam[rows], self.delta_a[rows], self.delta_b[rows])

    def place(self, rows: torch.Tensor, n: int) -> AffineParams:
        lam = self.lam.new_zeros(n)
        da = self.delta_a.new_zeros((n, *self.delta_a.shape[1:]))
        db = self.delta_b.new_zeros((n, *self.delta_b.shape[1:]))
        lam[rows], da[rows], db[rows] = self.lam, self.delta_a, self.delta_b
        return AffineParams(lam, da, db)


class Union(Threat):
    """The adversary picks, per example, any one member threat model.

    Robust accuracy under a union is the fraction of examples that withstand every member.
    """

    syntax = "union(T1,T2,...)"

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
        return f"{self.name}(" + ",".join(str(t) for t in self.threats) + ")"

    @classmethod
    def from_members(cls, members: list[Threat], where: str) -> Threat:
        return cls(members)

    def __iter__(self) -> Iterator[Threat]:
        return iter(self.threats)

    def __len__(self) -> int:
        return len(self.threats)

    def members(self) -> tuple[Threat, ...]:
        return self.threats

    @property
    def is_trivial(self) -> bool:
        return all(t.is_trivial for t in self.threats)

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: ThreatParams | None = None,
    ) -> torch.Tensor:
        """Member of the union: in the member that ``params.index`` names, certified by that
        member's parameters. Without params, contained if any member recognises it."""
        result = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if params is None:
            for t in self.threats:
                result |= t.contains(x_adv, x, atol)
            return result
        p = require_params(self, params, UnionParams)
        for i, t in enumerate(self.threats):
            mine = p.index.to(x.device) == i
            result |= mine & t.contains(x_adv, x, atol, p.members[i])
        return result

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        """Per example, the projection onto the member ``params.index`` names; without params
        (ℓp members only) the nearest of the members' projections, which is the Euclidean
        projection onto the union."""
        if params is not None:
            p = require_params(self, params, UnionParams)
            out = x_adv
            for i, t in enumerate(self.threats):
                mine = per_example(p.index.to(x.device) == i, x)
                out = torch.where(mine, t.project(x_adv, x, p.members[i]), out)
            return out
        if not all(t.additive for t in self.threats):
            raise ValueError(
                f"Threat {self} needs UnionParams to project (it has a parameterised member)"
            )
        best = x_adv
        best_dist = torch.full((x.shape[0],), math.inf, device=x.device, dtype=torch.float64)
        for t in self.threats:
            cand = t.project(x_adv, x)
            dist = flat(cand.to(torch.float64) - x_adv.to(torch.float64)).norm(dim=1)
            closer = dist < best_dist
            best = torch.where(per_example(closer, x), cand, best)
            best_dist = torch.where(closer, dist, best_dist)
        return best

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ThreatParams | None]:
        """A uniformly random member per example, and a random point of it."""
        index = torch.randint(
            0, len(self.threats), (x.shape[0],), generator=generator, device=x.device
        )
        out = x.clone()
        params: list[ThreatParams | None] = []
        for i, t in enumerate(self.threats):
            point, p = t.sample(x, generator)
            out = torch.where(per_example(index == i, x), point, out)
            params.append(p)
        return out, UnionParams(index, tuple(params))

    def norm(self, delta: torch.Tensor, params: ThreatParams | None = None) -> torch.Tensor:
        """Per example, the norm of the member ``params.index`` names (NaN without params or for
        members without a norm)."""
        out = super().norm(delta)
        if params is None:
            return out
        p = require_params(self, params, UnionParams)
        for i, t in enumerate(self.threats):
            out = torch.where(p.index.to(delta.device) == i, t.norm(delta, p.members[i]), out)
        return out

    def params_row(self, params: ThreatParams | None, index: int) -> list[float] | None:
        """The row of the member example ``index`` was attacked under."""
        p = require_params(self, params, UnionParams)
        i = int(p.index[index])
        return self.threats[i].params_row(p.members[i], index)


class Affine(Threat):
    """Affine combinations of two ℓp balls (Tramèr & Boneh 2019): {λ·δa + (1−λ)·δb}, λ ∈ [0, 1].

    A member is ``clip(x + λ·δa + (1−λ)·δb, 0, 1)`` with ``δa`` in ``a``'s ball and ``δb`` in
    ``b``'s. Clipping to the box shrinks each coordinate toward 0, which keeps both parts in their
    balls, so clipped points stay in the set.
    """

    syntax = "affine(T1,T2)"

    def __init__(self, a: Threat, b: Threat) -> None:
        if not isinstance(a, LpBall) or not isinstance(b, LpBall):
            bad = b if isinstance(a, LpBall) else a
            raise ValueError(f"Affine combines two ℓp balls, got {bad!s}")
        self.a: LpBall = a
        self.b: LpBall = b

    def __str__(self) -> str:
        return f"{self.name}({self.a},{self.b})"

    @classmethod
    def from_members(cls, members: list[Threat], where: str) -> Threat:
        if len(members) != 2:
            raise ValueError(f"Invalid threat {where!r}: affine takes exactly two threats")
        return cls(members[0], members[1])

    def subsets(self) -> tuple[Threat, ...]:
        # λ = 1 is the ball a, λ = 0 the ball b, each at its own ε.
        return (self.a, self.b)

    @property
    def is_trivial(self) -> bool:
        return self.a.is_trivial and self.b.is_trivial

    def combine(
        self, x: torch.Tensor, lam: torch.Tensor, delta_a: torch.Tensor, delta_b: torch.Tensor
    ) -> torch.Tensor:
        """The input ``clip(x + λ·δa + (1−λ)·δb)``; ``lam`` is per example (N,)."""
        lam = per_example(lam.to(x.dtype), x)
        return (x + lam * delta_a + (1 - lam) * delta_b).clamp(0.0, 1.0)

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        """The member ``params`` describe, after clipping λ to [0, 1] and projecting each part
        onto its own ball ∩ box."""
        p = require_params(self, params, AffineParams)
        lam = p.lam.clamp(0.0, 1.0)
        da = self.a.project(x + p.delta_a, x) - x
        db = self.b.project(x + p.delta_b, x) - x
        return self.combine(x, lam, da, db).to(x_adv.dtype)

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ThreatParams | None]:
        """λ uniform in [0, 1] and a random point of each ball, per example."""
        lam = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        da = self.a.random_init(x, generator) - x
        db = self.b.random_init(x, generator) - x
        return self.combine(x, lam, da, db), AffineParams(lam, da, db)

    def params_row(self, params: ThreatParams | None, index: int) -> list[float] | None:
        """``[λ]`` of example ``index``."""
        return [float(require_params(self, params, AffineParams).lam[index])]

    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: ThreatParams | None = None,
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
            p = require_params(self, params, AffineParams)
            lam, da, db = p.lam, p.delta_a, p.delta_b
            lam64 = lam.to(torch.float64)
            ok_lam = (lam64 >= -atol) & (lam64 <= 1 + atol)
            ok_a = self.a.norm(da) <= self.a.eps * (1 + atol) + atol
            ok_b = self.b.norm(db) <= self.b.eps * (1 + atol) + atol
            unclipped = (
                x.to(torch.float64)
                + per_example(lam64, delta) * da.to(torch.float64)
                + (1 - per_example(lam64, delta)) * db.to(torch.float64)
            )
            # Clipping may only move a coordinate toward x (shrink), never past it.
            recon = unclipped.clamp(0.0, 1.0)
            close = (flat(recon) - flat(x_adv.to(torch.float64))).abs().amax(1) <= max(atol, 1e-5)
            return box & ok_lam & ok_a & ok_b & close
        linf, other = (self.a, self.b) if isinstance(self.a, LinfBall) else (self.b, self.a)
        if not isinstance(linf, LinfBall):
            return self.a.contains(x_adv, x, atol) | self.b.contains(x_adv, x, atol)
        mag = flat(delta).abs()

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
