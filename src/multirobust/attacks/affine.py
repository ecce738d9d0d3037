"""Attack on affine combinations of two ℓp balls (Tramèr & Boneh 2019), λ by λ, with APGD.

The set is S = {λ·δa + (1−λ)·δb : λ ∈ [0, 1], δa ∈ A, δb ∈ B}. It contains A (λ = 1) and B
(λ = 0), so its robust accuracy can never exceed either member's; an attack on it must be at
least as strong as the members' own attacks at the endpoints and explore the mixtures between.
For each λ of a grid:

* λ = 1 and λ = 0 (``endpoints``): the member's own attack under its ball: APGD (for ℓ1,
  APGD-ℓ1 with adaptive sparsity and the 3ε → 2ε → ε schedule), and with ``queries`` > 0 the
  member's black-box search (Square for ℓ∞ and ℓ2, sparse-rs for ℓ1);
* 0 < λ < 1: APGD on the pair (δa, δb), each part taking its own steepest-ascent step on its
  share of the gradient (λ∇ and (1−λ)∇) and its own exact projection onto its ball ∩ box; the
  combination x + λδa + (1−λ)δb, a convex combination of two points of the box, is then in
  the box too, and ``params = (λ, δa, δb)`` certifies membership.

With ``target_classes`` > 0 every APGD run is APGD-T (the targeted DLR loss against each of the
most likely wrong classes in turn), else it maximises ``loss``. Examples broken at one λ are not
attacked at the next. :func:`affine_curve` runs each λ on every example, for the figure of
robust accuracy against λ; :func:`carry_over` applies the rule that an example broken under a
member is broken under the affine set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn

from .. import losses
from ..threats import Affine, AffineParams, LpBall, Threat, ThreatParams
from .apgd import apgd_l1_largereps, apgd_l1_run, apgd_run
from .base import Attack, Context, check_nonneg_int, check_positive_int
from .goals import goal_of
from .registry import create, get, register


class _Pair(LpBall):
    """Both parts of an affine combination at a fixed λ, stacked: z = (x + δa, x + δb).

    Seen by :func:`apgd_run` as one threat with ε = 1: its step 2·s(∇) moves each part by twice
    its own radius along its own steepest-ascent direction (once its radius for an ℓ1 part, as
    APGD does under ℓ1), and its projection is the two exact projections.
    """

    name = "pair"

    def __init__(self, a: LpBall, b: LpBall) -> None:
        super().__init__(1.0)
        self.a, self.b = a, b

    def __str__(self) -> str:
        return f"pair({self.a},{self.b})"

    @staticmethod
    def _scale(ball: LpBall) -> float:
        return ball.eps * (0.5 if ball.p == 1 else 1.0)

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        return torch.stack(
            [self.a.project(x_adv[:, 0], x[:, 0]), self.b.project(x_adv[:, 1], x[:, 1])], 1
        )

    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        za = None if x_adv is None else x_adv[:, 0]
        zb = None if x_adv is None else x_adv[:, 1]
        return torch.stack(
            [
                self._scale(self.a) * self.a.steepest_ascent(grad[:, 0], za),
                self._scale(self.b) * self.b.steepest_ascent(grad[:, 1], zb),
            ],
            1,
        )

    def random_init(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.stack(
            [self.a.random_init(x[:, 0], generator), self.b.random_init(x[:, 1], generator)], 1
        )

    def _project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # project() is overridden

    def _sample_delta(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError  # random_init() is overridden

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # only project() is used

    def boundary_step(self, gap: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # not a minimum-norm geometry


class _Mixed(nn.Module):
    """The model seen through the pair: f(λ·z_a + (1 − λ)·z_b)."""

    def __init__(self, model: nn.Module, lam: float) -> None:
        super().__init__()
        self.model, self.lam = model, lam

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(self.lam * z[:, 0] + (1 - self.lam) * z[:, 1])


@register("affine")
@dataclass(frozen=True, kw_only=True)
class AffineAttack(Attack):
    """APGD (and the members' black-box searches) on λ·δa + (1−λ)·δb over a grid of λ.

    Args:
        lambdas: number of evenly spaced λ in [0, 1] (0 and 1 are the two balls alone).
        grid: explicit λ values in [0, 1] instead (``lambdas`` is then ignored).
        steps: APGD iterations per run.
        loss: loss of the untargeted APGD runs ("ce", "dlr", ...).
        target_classes: > 0 makes every APGD run APGD-T, targeted DLR against that many most
            likely wrong classes in turn (9 in AutoAttack); 0 runs the untargeted ``loss``.
        queries: query budget of the members' black-box searches at λ = 0 and λ = 1 (Square,
            sparse-rs; 5000 in the presets); 0 skips them.
        endpoints: at λ = 0 and 1 run the member's own attacks under its ball (APGD-ℓ1 with
            adaptive sparsity and ``use_largereps`` for an ℓ1 member) instead of the pair
            APGD. Turn off only when the members' outcomes are carried over anyway.
        random_start: start APGD from a random point (a sparse Gaussian one for ℓ1) or from x.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (Affine,)
    lambdas: int = 5
    grid: Any = None
    steps: int = 100
    loss: Any = None
    target_classes: int = 0
    queries: int = 0
    endpoints: bool = True
    random_start: bool = True

    def _validate(self) -> None:
        check_positive_int("lambdas", self.lambdas)
        check_positive_int("steps", self.steps)
        check_nonneg_int("target_classes", self.target_classes)
        check_nonneg_int("queries", self.queries)
        for flag in ("endpoints", "random_start"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"Invalid {flag}: {getattr(self, flag)!r} (must be True or False)")
        if self.grid is not None:
            try:
                values = tuple(float(v) for v in self.grid)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Invalid grid: {self.grid!r} (must be a sequence of λ in [0, 1])"
                ) from None
            if not values or not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"Invalid grid: {self.grid!r} (must be a sequence of λ in [0, 1])")
            object.__setattr__(self, "grid", values)

    def lambda_values(self) -> tuple[float, ...]:
        """The λ grid, in the order the attack tries it."""
        if self.grid is not None:
            return tuple(self.grid)
        if self.lambdas == 1:
            return (0.5,)
        return tuple(i / (self.lambdas - 1) for i in range(self.lambdas))

    # ------------------------------------------------------------------ one APGD run
    def _apgd(self, ctx: Context, ball: LpBall, *, pair: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run in ``ctx`` (whose threat is ``ball``): ℓ1 members get APGD-ℓ1."""
        if not pair and ball.p == 1:
            if self.random_start:
                return apgd_l1_largereps(ctx, ctx.generator, steps=self.steps)
            _, out, hit = apgd_l1_run(ctx, ctx.x.clone(), steps=self.steps, from_point=True)
            return out, hit
        start = ball.random_init(ctx.x, ctx.generator) if self.random_start else ctx.x.clone()
        return apgd_run(ctx, start, steps=self.steps)

    def _white_box(self, ctx: Context, ball: LpBall, *, pair: bool) -> torch.Tensor:
        """APGD, or APGD-T over the top classes; returns the points found (broken or best)."""
        if self.target_classes == 0 or ctx.targets is not None:
            return self._apgd(ctx, ball, pair=pair)[0]
        with torch.no_grad():
            logits = ctx.model(ctx.x)
        order = logits.scatter(1, ctx.y.unsqueeze(1), float("-inf")).argsort(1, descending=True)
        targeted_loss = losses.get("dlr")
        out = ctx.x.clone()
        found = torch.zeros(ctx.x.shape[0], dtype=torch.bool, device=ctx.x.device)
        for j in range(min(self.target_classes, logits.shape[1] - 1)):
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            sub = ctx.subset(rows)
            sub = dataclasses.replace(sub, targets=order[rows, j], loss=targeted_loss)
            cand, _ = self._apgd(sub, ball, pair=pair)
            with torch.no_grad():
                hit = ctx.subset(rows).met(ctx.model(cand))
            out[rows[hit]] = cand[hit]
            if j == 0:
                out[rows[~hit]] = cand[~hit]
            found[rows] |= hit
        return out

    # ------------------------------------------------------------------ one λ
    def _at_lambda(self, ctx: Context, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack at one λ. Returns (δa, δb) for the examples of ``ctx``."""
        a, b = _affine(ctx).a, _affine(ctx).b
        x = ctx.x
        if self.endpoints and lam in (0.0, 1.0):
            ball = a if lam == 1.0 else b
            member = dataclasses.replace(ctx, threat=ball)
            x_adv = self._white_box(member, ball, pair=False)
            if self.queries > 0:
                x_adv = self._black_box(member, ball, x_adv)
            # The member attack's points are in its ball; projecting costs nothing and makes
            # the parameters exact to the last bit.
            delta = ball.project(x_adv, x) - x
            zero = torch.zeros_like(x)
            return (delta, zero) if lam == 1.0 else (zero, delta)
        pair = _Pair(a, b)
        stacked = dataclasses.replace(
            ctx, model=_Mixed(ctx.model, lam), x=torch.stack([x, x], 1), threat=pair
        )
        z = self._white_box(stacked, pair, pair=True)
        return z[:, 0] - x, z[:, 1] - x

    def _black_box(self, ctx: Context, ball: LpBall, x_adv: torch.Tensor) -> torch.Tensor:
        """The member's score-based search on the examples APGD left unbroken."""
        with torch.no_grad():
            rows = (~ctx.met(ctx.model(x_adv))).nonzero().flatten()
        if rows.numel() == 0:
            return x_adv
        for name in ("square", "sparse-rs"):
            cls = get(name)
            if not cls.supports(ball) or (name == "square" and ctx.x.dim() != 4):
                continue
            search = create(name, threat=ball, steps=self.queries, seed=self.seed)
            sub = ctx.subset(rows)
            goal = goal_of(sub.targets, sub.threshold)
            res = search(ctx.model, sub.x, sub.y, goal=goal, generator=ctx.generator)
            with torch.no_grad():
                hit = sub.met(ctx.model(res.x_adv))
            x_adv = x_adv.clone()
            x_adv[rows[hit]] = res.x_adv[hit]
        return x_adv

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        threat = _affine(ctx)
        x = ctx.x
        n = x.shape[0]
        lam_best = torch.zeros(n, device=x.device, dtype=x.dtype)
        da_best, db_best = torch.zeros_like(x), torch.zeros_like(x)
        best_loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for lam in self.lambda_values():
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            sub = ctx.subset(rows)
            da, db = self._at_lambda(sub, lam)
            lam_t = torch.full((rows.numel(),), lam, device=x.device, dtype=x.dtype)
            with torch.no_grad():
                logits = ctx.model(threat.combine(sub.x, lam_t, da, db))
                hit = sub.met(logits)
                value = sub.objective(logits)
            better = hit | (value > best_loss[rows])
            take = rows[better]
            lam_best[take] = lam
            da_best[take] = da[better]
            db_best[take] = db[better]
            best_loss[take] = value[better]
            found[rows] |= hit
        params = AffineParams(lam_best, da_best, db_best)
        return threat.combine(x, lam_best, da_best, db_best), params


def _affine(ctx: Context) -> Affine:
    # supported_threats = (Affine,): the contract has checked the threat's kind already.
    return cast(Affine, ctx.threat)


@dataclass(frozen=True)
class LambdaCurve:
    """Robustness under an affine threat, λ by λ: Tramèr & Boneh's (2019) figure.

    Attributes:
        threat: the affine threat, as text.
        lambdas: the λ values, increasing.
        robust: (L, N) bool: example i withstood the attack at λ_l.
    """

    threat: str
    lambdas: tuple[float, ...]
    robust: torch.Tensor

    def accuracy(self) -> list[float]:
        """Robust accuracy at each λ (over all N examples, clean-incorrect ones count as
        broken)."""
        return self.robust.to(torch.float64).mean(1).tolist()

    def robust_overall(self) -> torch.Tensor:
        """(N,) bool: robust at every λ of the grid (the affine set's number on this grid)."""
        return self.robust.all(0)

    def with_members(self, robust_a: torch.Tensor, robust_b: torch.Tensor) -> LambdaCurve:
        """The curve after :func:`carry_over`: λ = 1 is the member A, λ = 0 the member B."""
        robust = self.robust.clone()
        for i, lam in enumerate(self.lambdas):
            if lam == 1.0:
                robust[i] &= robust_a.to(robust.device)
            if lam == 0.0:
                robust[i] &= robust_b.to(robust.device)
        return LambdaCurve(self.threat, self.lambdas, robust)


def affine_curve(
    attack: AffineAttack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    targets: torch.Tensor | str | None = None,
    generator: torch.Generator | None = None,
) -> LambdaCurve:
    """Run ``attack`` at each λ of its grid on every example: robustness against λ.

    Each λ is a full, separately validated attack (``attack.with_options(grid=(λ,))``), so the
    curve's numbers are what the affine attack alone would report at that λ. Costs one attack
    per λ on all examples (the registered attack skips examples broken at an earlier λ).
    """
    lambdas = tuple(sorted(attack.lambda_values()))
    rows = []
    for lam in lambdas:
        one = attack.with_options(grid=(lam,))
        gen = None
        if generator is not None:
            gen = torch.Generator(device=generator.device).manual_seed(
                int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            )
        rows.append(one(model, x, y, targets=targets, generator=gen).robust)
    return LambdaCurve(str(attack.threat_model), lambdas, torch.stack(rows))


def carry_over(affine_robust: torch.Tensor, member_robust: Sequence[torch.Tensor]) -> torch.Tensor:
    """An example broken under a member is broken under the affine set (which contains it).

    Args:
        affine_robust: (N,) bool, the affine attack's verdict.
        member_robust: the members' (N,) bool verdicts on the same examples (A and B).

    Returns:
        (N,) bool: robust under the affine set only if robust under it and under every member,
        so that its accuracy is ≤ each member's and ≤ their union's by construction.
    """
    out = affine_robust.clone()
    for robust in member_robust:
        if robust.shape != affine_robust.shape:
            raise ValueError(
                f"Member verdicts must have shape {tuple(affine_robust.shape)}, got "
                f"{tuple(robust.shape)}"
            )
        out &= robust.to(out.device)
    return out


__all__ = ["AffineAttack", "LambdaCurve", "affine_curve", "carry_over"]
