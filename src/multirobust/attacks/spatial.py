"""Spatial attacks: exhaustive grid search and random worst-of-k (Engstrom et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..threats import Spatial, Threat
from .base import Attack, Context, check_positive_int
from .registry import register


def _worst_over(ctx: Context, candidates: torch.Tensor, chunk: int) -> tuple[torch.Tensor, Any]:
    """Evaluate every parameter row of ``candidates`` (N, K, 3); keep per example the first that
    meets the goal, else the one with the highest loss. Examples stop being evaluated once
    broken (checked every ``chunk`` candidates)."""
    threat = ctx.threat
    assert isinstance(threat, Spatial)
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
    return threat.apply(ctx.x, best_params), best_params


@register("spatial-grid")
@dataclass(frozen=True, kw_only=True)
class SpatialGrid(Attack):
    """Exhaustive search over a grid of rotations × translations (Engstrom et al. 2019).

    Args:
        rotations: evenly spaced angles in [−max_rotation, max_rotation] (31 in the paper).
        translations: evenly spaced shifts per axis in [−max_translation, max_translation] (5).
    """

    name = "spatial-grid"
    rotations: int = 31
    translations: int = 5
    loss: Any = "ce"

    def _validate(self) -> None:
        check_positive_int("rotations", self.rotations)
        check_positive_int("translations", self.translations)

    @classmethod
    def supports(cls, threat: Threat) -> bool:
        return isinstance(threat, Spatial)

    @classmethod
    def supported_description(cls) -> str:
        return "supported: spatial threats"

    def _run(self, ctx: Context) -> tuple[torch.Tensor, Any]:
        assert isinstance(ctx.threat, Spatial)
        grid = ctx.threat.grid(self.rotations, self.translations, device=ctx.x.device)
        grid = grid.to(ctx.x.dtype)
        candidates = grid.unsqueeze(0).expand(ctx.x.shape[0], -1, -1)
        return _worst_over(ctx, candidates, chunk=25)


@register("spatial-random")
@dataclass(frozen=True, kw_only=True)
class SpatialRandom(SpatialGrid):
    """Worst of ``trials`` random rotations and translations per example (Engstrom et al. 2019)."""

    name = "spatial-random"
    trials: int = 10

    def _validate(self) -> None:
        check_positive_int("trials", self.trials)

    def _run(self, ctx: Context) -> tuple[torch.Tensor, Any]:
        assert isinstance(ctx.threat, Spatial)
        n = ctx.x.shape[0]
        params = ctx.threat.random_params(n * self.trials, ctx.generator, device=ctx.x.device)
        candidates = params.reshape(n, self.trials, 3).to(ctx.x.dtype)
        return _worst_over(ctx, candidates, chunk=5)
