"""Spatial attacks: exhaustive grid search and random worst-of-k (Engstrom et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch

from ..threats import Spatial, SpatialParams, Threat, ThreatParams
from .base import Attack, Context, check_positive_int
from .registry import register


def _spatial(ctx: Context) -> Spatial:
    # supported_threats = (Spatial,): the contract has checked the threat's kind already.
    return cast(Spatial, ctx.threat)


def _worst_over(
    ctx: Context, candidates: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, ThreatParams | None]:
    """Evaluate every parameter row of ``candidates`` (N, K, 3); keep per example the first that
    meets the goal, else the one with the highest loss. Examples stop being evaluated once
    broken (checked every ``chunk`` candidates)."""
    threat = _spatial(ctx)
    n, k, _ = candidates.shape
    best_params = torch.zeros(n, 3, device=ctx.x.device, dtype=ctx.x.dtype)
    best_loss = torch.full((n,), float("-inf"), device=ctx.x.device, dtype=ctx.x.dtype)
    found = torch.zeros(n, dtype=torch.bool, device=ctx.x.device)
    live = torch.arange(n, device=ctx.x.device)
    with torch.no_grad():
        for j in range(k):
            params = candidates[live, j]
            logits = ctx.model(threat.apply(ctx.x[live], params))
            value = ctx.loss(
                logits, ctx.y[live], None if ctx.targets is None else ctx.targets[live]
            )
            hit = ctx.met(logits, live)
            better = hit | (value > best_loss[live])
            rows = live[better]
            best_params[rows] = params[better]
            best_loss[rows] = value[better]
            found[live] |= hit
            if (j + 1) % chunk == 0:
                live = live[~found[live]]
                if live.numel() == 0:
                    break
    return threat.apply(ctx.x, best_params), SpatialParams(best_params)


@register("spatial-grid")
@dataclass(frozen=True, kw_only=True)
class SpatialGrid(Attack):
    """Exhaustive search over a grid of rotations × translations (Engstrom et al. 2019).

    Args:
        rotations: evenly spaced angles in [−max_rotation, max_rotation] (31 in the paper).
        translations: evenly spaced shifts per axis in [−max_translation, max_translation] (5).
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (Spatial,)
    rotations: int = 31
    translations: int = 5
    loss: Any = None

    def _validate(self) -> None:
        check_positive_int("rotations", self.rotations)
        check_positive_int("translations", self.translations)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        grid = _spatial(ctx).grid(self.rotations, self.translations, device=ctx.x.device)
        grid = grid.to(ctx.x.dtype)
        candidates = grid.unsqueeze(0).expand(ctx.x.shape[0], -1, -1)
        return _worst_over(ctx, candidates, chunk=25)


@register("spatial-random")
@dataclass(frozen=True, kw_only=True)
class SpatialRandom(SpatialGrid):
    """Worst of ``trials`` random rotations and translations per example (Engstrom et al. 2019)."""

    trials: int = 10

    def _validate(self) -> None:
        check_positive_int("trials", self.trials)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        n = ctx.x.shape[0]
        params = _spatial(ctx).random_params(n * self.trials, ctx.generator, device=ctx.x.device)
        candidates = params.reshape(n, self.trials, 3).to(ctx.x.dtype)
        return _worst_over(ctx, candidates, chunk=5)
