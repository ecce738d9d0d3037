"""Square attack (Andriushchenko et al. 2020): score-based black-box random search, ℓ∞ and ℓ2.

Only the model's outputs are used, never its gradients, so masked or obfuscated gradients do
not protect a model from it. Each iteration proposes a change of the current perturbation inside
one random square window per example and keeps it where the margin loss improves:

    δ' = update(δ, window),   δ ← δ' if L(x + δ') > L(x + δ),

with L the margin loss max_{i≠y} z_i − z_y (to maximise). The window's side shrinks with the
schedule p(k) of the paper (p_init halved at iterations 10, 50, 200, 500, 1000, 2000, 4000,
6000, 8000 of 10,000, rescaled to the query budget).
"""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import L2Ball, LinfBall, Threat, ThreatParams
from .base import Attack, Context, check_positive_int
from .registry import register

# Iterations (out of 10,000) after which p is halved again: Andriushchenko et al., Alg. 1.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, step: int, steps: int, rescale: bool = True) -> float:
    """Fraction of pixels the square covers at iteration ``step`` of ``steps``: halved after
    the iterations of :data:`_SCHEDULE`, counted out of 10,000 (``rescale``: the schedule is
    stretched to the budget) or as they are (AutoAttack's standard version runs its 5,000
    queries this way, ``resc_schedule=False``, so squares stay larger for longer)."""
    k = int(step / steps * 10000) if rescale else step
    halvings = sum(1 for t in _SCHEDULE if k > t)
    return p_init / (2**halvings)


@functools.lru_cache(maxsize=64)
def _rect_pattern(h: int, w: int) -> torch.Tensor:
    """Concentric rectangles with weights 1/(r+1)², ℓ2-normalised: a cheap bump (h, w)."""
    out = torch.zeros(h, w, dtype=torch.float64)
    ch, cw = h // 2, w // 2
    for r in range(max(ch, cw) + 1):
        out[max(ch - r, 0) : min(ch + r + 1, h), max(cw - r, 0) : min(cw + r + 1, w)] += (
            1.0 / (r + 1) ** 2
        )
    return out / out.norm().clamp_min(1e-12)


@functools.lru_cache(maxsize=64)
def square_pattern(s: int) -> torch.Tensor:
    """The ℓ2 update pattern of side ``s``: a positive bump above a negative one, unit norm."""
    top = s // 2
    out = torch.zeros(s, s, dtype=torch.float64)
    if top:
        out[:top] = _rect_pattern(top, s)
    out[top:] = -_rect_pattern(s - top, s)
    return out / out.norm().clamp_min(1e-12)


def _window_index(
    n: int, side: int, h: int, w: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random top-left corners: row and column indices (N, side) of one window per example."""
    r0 = torch.randint(0, h - side + 1, (n, 1), generator=generator, device=device)
    c0 = torch.randint(0, w - side + 1, (n, 1), generator=generator, device=device)
    ar = torch.arange(side, device=device).unsqueeze(0)
    return r0 + ar, c0 + ar


def _gather(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Windows (N, C, s, s) of ``t`` (N, C, H, W) at per-example ``rows``/``cols`` (N, s)."""
    n, c = t.shape[:2]
    i = torch.arange(n, device=t.device).view(n, 1, 1, 1)
    k = torch.arange(c, device=t.device).view(1, c, 1, 1)
    return t[i, k, rows.view(n, 1, -1, 1), cols.view(n, 1, 1, -1)]


def _scatter(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, value: torch.Tensor) -> None:
    """Write ``value`` (N, C, s, s) into the windows of ``t`` in place."""
    n, c = t.shape[:2]
    i = torch.arange(n, device=t.device).view(n, 1, 1, 1)
    k = torch.arange(c, device=t.device).view(1, c, 1, 1)
    t[i, k, rows.view(n, 1, -1, 1), cols.view(n, 1, 1, -1)] = value


def _signs(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def _l2_normalise(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta * (eps / norm)


class RandomSearch(Attack):
    """Base of the score-based random searches (Square, sparse-rs): restarts around ``_search``.

    A subclass declares ``steps`` (queries per run), ``p_init`` (the schedule's starting
    fraction) and ``restarts``, and writes ``_search(ctx)``, one run from a fresh random start
    returning (points, their loss, goal met); each restart attacks only the examples no earlier
    run broke, and an example keeps the point of highest loss over the runs.
    """

    steps: int
    p_init: float
    restarts: int

    def _validate(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if not isinstance(self.p_init, int | float) or not 0 < self.p_init <= 1:
            raise ValueError(f"Invalid p_init: {self.p_init!r} (must be in (0, 1])")

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        x_adv = ctx.x.clone()
        best = torch.full((ctx.x.shape[0],), float("-inf"), device=ctx.x.device, dtype=ctx.x.dtype)
        found = torch.zeros(ctx.x.shape[0], dtype=torch.bool, device=ctx.x.device)
        for _ in range(self.restarts):
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            cand, loss, hit = self._search(ctx.subset(rows))
            take = hit | (loss > best[rows])
            x_adv[rows[take]] = cand[take]
            best[rows[take]] = loss[take]
            found[rows] |= hit
        return x_adv, None

    @abstractmethod
    def _search(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random-search run. Returns (best points, their loss, goal met)."""


@register("square")
@dataclass(frozen=True, kw_only=True)
class Square(RandomSearch):
    """Square attack (Andriushchenko et al., ECCV 2020): black-box random search, ℓ∞ and ℓ2.

    ℓ∞: start from vertical stripes of ±ε; each iteration sets one random square per example
    (side ⌈√(p·H·W)⌉) to a random ±ε per channel. ℓ2: start from a grid of ±bumps scaled to
    ε; each iteration moves the mass of a second random window into a new bump at the first one,
    keeping ‖δ‖₂ = ε. Proposals are accepted only where the loss improves, and examples that
    meet the goal stop being queried (the batch shrinks every iteration).

    Args:
        steps: query budget: iterations (model evaluations) per example and restart (5000 in
            AutoAttack).
        p_init: initial fraction of pixels changed per iteration (0.8 in AutoAttack).
        restarts: independent runs for the examples not yet broken.
        loss: loss to maximise; None is the margin loss (a callable or a registered name).
        rescale_schedule: stretch p's halving points (iterations 10, 50, ... out of 10,000) to
            ``steps``; False counts them in iterations as they are, as AutoAttack's standard
            version does with its 5,000 queries.

    Shape:
        images (N, C, H, W) only.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LinfBall, L2Ball)
    default_loss: ClassVar[str] = "margin"
    steps: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: Any = None
    rescale_schedule: bool = True

    def _validate(self) -> None:
        super()._validate()
        if not isinstance(self.rescale_schedule, bool):
            raise ValueError(
                f"Invalid rescale_schedule: {self.rescale_schedule!r} (must be True or False)"
            )

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        if ctx.x.dim() != 4:
            raise ValueError(
                f"The square attack needs images of shape (N, C, H, W), got {tuple(ctx.x.shape)}"
            )
        return super()._run(ctx)

    def _search(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random-search run. Returns (best points, their loss, goal met)."""
        threat = ctx.ball
        x, g = ctx.x, ctx.generator
        n, c, h, w = x.shape
        # The paper has one proposal distribution per norm: ±ε squares for ℓ∞ (p = ∞) and
        # mass-preserving bumps for ℓ2; supported_threats admits only these two balls.
        linf = math.isinf(threat.p)
        eps = threat.eps
        if linf:
            delta = eps * _signs((n, c, 1, w), x, g).expand(n, c, h, w)
            x_best = (x + delta).clamp(0.0, 1.0)
        else:
            x_best = (x + _l2_normalise(self._l2_init(x, g), eps)).clamp(0.0, 1.0)
        with torch.no_grad():
            logits = ctx.model(x_best)
        loss = ctx.objective(logits)
        found = ctx.met(logits)

        out, out_loss, out_found = x_best.clone(), loss.clone(), found.clone()
        live = (~found).nonzero().flatten()
        c_live, xb, lb = ctx.subset(live), x_best[live], loss[live]
        for step in range(self.steps):
            if live.numel() == 0:
                break
            p = p_schedule(self.p_init, step, self.steps, self.rescale_schedule)
            x0 = c_live.x
            if linf:
                side = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
                rows, cols = _window_index(live.numel(), side, h, w, g, x.device)
                delta = xb - x0
                signs = eps * _signs((live.numel(), c, 1, 1), x0, g)
                _scatter(delta, rows, cols, signs.expand(-1, -1, side, side))
                x_new = (x0 + delta).clamp(0.0, 1.0)
            else:
                x_new = self._l2_step(x0, xb, p, eps, g)
            with torch.no_grad():
                logits = c_live.model(x_new)
            new_loss = c_live.objective(logits)
            hit = c_live.met(logits)
            better = hit | (new_loss > lb)
            xb = torch.where(better.view(-1, 1, 1, 1), x_new, xb)
            lb = torch.where(better, new_loss, lb)
            # Broken examples are done: write them out and stop querying them.
            done = hit.nonzero().flatten()
            if done.numel():
                out[live[done]] = xb[done]
                out_loss[live[done]] = lb[done]
                out_found[live[done]] = True
                keep = (~hit).nonzero().flatten()
                live, xb, lb = live[keep], xb[keep], lb[keep]
                c_live = ctx.subset(live)
        out[live] = xb
        out_loss[live] = lb
        return out, out_loss, out_found

    @staticmethod
    def _l2_init(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A 5 × 5 grid of bumps, each split in a positive and a negative half along a random
        axis, with random signs per example and channel (unnormalised), as in the reference
        implementation (its ``eta`` transposes at random at every cell)."""
        n, c, h, w = x.shape
        side = max(h // 5, 1)
        delta = torch.zeros_like(x)
        top, left = (h - side * 5) // 2, (w - side * 5) // 2
        pattern = square_pattern(side).to(device=x.device, dtype=x.dtype)
        for i in range(5):
            for j in range(5):
                r, q = top + i * side, left + j * side
                if r < 0 or q < 0 or r + side > h or q + side > w:
                    continue
                flip = torch.rand(n, 1, 1, 1, generator=g, device=x.device) < 0.5
                cell = torch.where(flip, pattern.t(), pattern)
                sign = _signs((n, c, 1, 1), x, g)
                delta[:, :, r : r + side, q : q + side] += sign * cell
        return delta

    @staticmethod
    def _l2_step(
        x0: torch.Tensor, xb: torch.Tensor, p: float, eps: float, g: torch.Generator
    ) -> torch.Tensor:
        """Propose: move the perturbation's mass in window 2 into a fresh bump at window 1."""
        n, c, h, w = x0.shape
        side = max(int(round(math.sqrt(p * h * w))), 3)
        side = min(side + (1 - side % 2), h, w)  # odd sides, as in the paper
        delta = xb - x0
        r1, c1 = _window_index(n, side, h, w, g, x0.device)
        r2, c2 = _window_index(n, side, h, w, g, x0.device)
        mask = torch.zeros(n, 1, h, w, device=x0.device, dtype=x0.dtype)
        ones = torch.ones(n, 1, side, side, device=x0.device, dtype=x0.dtype)
        _scatter(mask, r1, c1, ones)
        _scatter(mask, r2, c2, ones)
        norm_image = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        # Mass (per channel) available inside both windows, plus what is left of the budget.
        norm_windows = (delta * mask).pow(2).sum((2, 3), keepdim=True).sqrt()
        old = _gather(delta, r1, c1)
        old = old / (old.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-10)
        # Randomly transposed pattern, per example.
        pattern = square_pattern(side).to(device=x0.device, dtype=x0.dtype)
        flip = torch.rand(n, 1, 1, 1, generator=g, device=x0.device) < 0.5
        pattern = torch.where(flip, pattern.t(), pattern)
        new = pattern * _signs((n, c, 1, 1), x0, g) + old
        budget = ((eps**2 - norm_image.pow(2)).clamp_min(0.0) / c + norm_windows.pow(2)).sqrt()
        new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
        _scatter(delta, r2, c2, torch.zeros_like(new))
        _scatter(delta, r1, c1, new)
        return (x0 + _l2_normalise(delta, eps)).clamp(0.0, 1.0)
