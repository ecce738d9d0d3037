"""Sparse random search for the ℓ1 ball ∩ box: the black-box ℓ1 member of the presets.

The vertices of {δ : ‖δ‖₁ ≤ ε, x + δ ∈ [0, 1]^d} move few coordinates all the way to a face of
the box, so the search looks for *which* coordinates to move rather than by how much, as
Sparse-RS does for ℓ0 (Croce et al., AAAI 2022). Each example keeps an ordered list of
K = ⌈2ε⌉ coordinates; the perturbation sends them, in list order, to the farther end of the box
(0 or 1, a change of at least 1/2 each) until the ℓ1 budget is spent, the last one partly:

    δ_i = (t_i − x_i) · clip((ε − c_<i) / |t_i − x_i|, 0, 1),   t_i = 1 if x_i < 1/2 else 0,

with c_<i the cost of the coordinates before i in the list. Each iteration replaces a random
fraction p of the list by fresh random coordinates, p following the Square attack's schedule
(``p_init`` halved at iterations 10, 50, 200, ... of 10,000, rescaled to the budget), and keeps
the proposal where the margin loss does not decrease. Ties are accepted: on a model whose
gradients are masked by thresholding (ℓ∞-trained MNIST models), most single changes do not move
the logits at all, and walking across those plateaus is what finds the few coordinates that do.
Only the model's outputs are used, never its gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..threats import L1Ball, Threat
from .base import Context
from .registry import register
from .square import RandomSearch, p_schedule


def _first_occurrence(index: torch.Tensor) -> torch.Tensor:
    """(N, K) bool: entry k is the first occurrence of its value in its row."""
    ordered, order = index.sort(dim=1, stable=True)
    repeat = torch.zeros_like(index, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = torch.empty_like(repeat)
    first.scatter_(1, order, ~repeat)
    return first


def sparse_delta(x_flat: torch.Tensor, coords: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation (N, D) of an ordered coordinate list ``coords`` (N, K), ‖δ‖₁ ≤ ε.

    Listed coordinates go to the farther end of [0, 1] in list order until ``eps`` is spent;
    a coordinate listed twice counts once (its later entries do nothing).
    """
    picked = x_flat.gather(1, coords)
    change = torch.where(picked < 0.5, 1.0 - picked, -picked)
    cost = change.abs() * _first_occurrence(coords)
    before = cost.cumsum(1) - cost
    frac = ((eps - before) / cost.clamp_min(1e-12)).clamp(0.0, 1.0)
    delta = torch.zeros_like(x_flat)
    # scatter_add: a repeated coordinate adds 0, whatever order the writes happen in.
    return delta.scatter_add_(1, coords, change * frac * (cost > 0))


@register("sparse-rs")
@dataclass(frozen=True, kw_only=True)
class SparseRS(RandomSearch):
    """Score-based black-box random search over sparse ℓ1 perturbations (ℓ1 balls only).

    Keeps, per example, a list of ⌈2ε⌉ coordinates pushed to the farther end of the box in
    order until the ℓ1 budget is spent; each iteration resamples a fraction of the list and
    keeps the proposal where the margin loss does not decrease (see the module docstring).
    Examples that meet the goal stop being queried.

    Args:
        steps: query budget: iterations (model evaluations) per example and restart.
        p_init: initial fraction of the list resampled per iteration (0.3, as Sparse-RS).
        restarts: independent runs for the examples not yet broken.
        loss: loss to maximise; None is the margin loss (a callable or a registered name).

    Shape:
        any (N, ...) input; coordinates are the flattened features.
    """

    supported_threats: ClassVar[tuple[type[Threat], ...]] = (L1Ball,)
    default_loss: ClassVar[str] = "margin"
    steps: int = 5000
    p_init: float = 0.3
    restarts: int = 1
    loss: Any = None

    def _search(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One random-search run. Returns (best points, their loss, goal met)."""
        threat = ctx.ball
        eps, g, dev = threat.eps, ctx.generator, ctx.x.device
        shape = ctx.x.shape
        flat = ctx.x.reshape(shape[0], -1)
        n, d = flat.shape
        k_list = min(max(math.ceil(2 * eps), 1), d)

        def point(x_flat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
            return (x_flat + sparse_delta(x_flat, coords, eps)).reshape(-1, *shape[1:])

        coords = torch.randint(0, d, (n, k_list), generator=g, device=dev)
        x_best = point(flat, coords)
        with torch.no_grad():
            logits = ctx.model(x_best)
        loss = ctx.objective(logits)
        found = ctx.met(logits)

        out, out_loss, out_found = x_best.clone(), loss.clone(), found.clone()
        live = (~found).nonzero().flatten()
        c_live, xf, cl, lb = ctx.subset(live), flat[live], coords[live], loss[live]
        for step in range(self.steps):
            if live.numel() == 0:
                break
            m = live.numel()
            k = max(1, round(p_schedule(self.p_init, step, self.steps) * k_list))
            slots = torch.rand(m, k_list, generator=g, device=dev).argsort(1)[:, :k]
            fresh = torch.randint(0, d, (m, k), generator=g, device=dev)
            proposal = cl.scatter(1, slots, fresh)
            x_new = point(xf, proposal)
            with torch.no_grad():
                logits = c_live.model(x_new)
            new_loss = c_live.objective(logits)
            hit = c_live.met(logits)
            keep_new = hit | (new_loss >= lb)
            cl = torch.where(keep_new.unsqueeze(1), proposal, cl)
            lb = torch.where(keep_new, new_loss, lb)
            done = hit.nonzero().flatten()
            if done.numel():
                out[live[done]] = x_new[done]
                out_loss[live[done]] = new_loss[done]
                out_found[live[done]] = True
                rest = (~hit).nonzero().flatten()
                live, xf, cl, lb = live[rest], xf[rest], cl[rest], lb[rest]
                c_live = ctx.subset(live)
        if live.numel():
            out[live] = point(xf, cl)
            out_loss[live] = lb
        return out, out_loss, out_found
