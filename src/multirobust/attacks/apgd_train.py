"""APGD as a plain function for training loops: a fixed number of passes, no early stop.

The evaluation attack (``apgd``) stops on broken examples, restarts, and re-evaluates the
gradient when it halves its step; its cost depends on the data. Inside adversarial training
the cost must be known in advance (the training-cost benchmark checks it) and the training
point is the highest-loss iterate, not the first misclassified one. This is the training
variant of Croce & Hein (2022, "Adversarial robustness against multiple and single lp-threat
models via quick fine-tuning of robust classifiers"), with:

- ℓ∞ and ℓ2 (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks"): step η = 2ε, momentum 0.75, and at the
  checkpoints w_j the step halves (and the iterate returns to the best point, with the
  gradient stored there) where fewer than ρ of the last steps increased the loss or where
  neither η nor the best loss changed since the last checkpoint.
- ℓ1 with adaptive sparsity (Croce & Hein 2021, "Mind the box: l1-APGD for sparse
  adversarial attacks on image classifiers"): the step moves the k coordinates of largest
  |gradient| that the box lets move, sign-valued and ℓ1-normalised, then the exact
  projection onto the ℓ1 ball ∩ box. k starts at 5% of the coordinates; every
  max(1, ⌊0.04·steps⌋) iterations k becomes ‖x_best − x‖₀ / 1.5, and the step η (from ε)
  is reset to ε with a restart from the best point where the best point's sparsity fell by
  more than 5%, and divided by 1.5 otherwise, within [ε/10, ε].

Cost: ``steps + 1`` forward and ``steps`` backward passes over the batch (the last iterate
needs no gradient), whatever the data.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..threats import LpBall, parse
from ..threats.base import BOX, _flat
from .apgd import _checkpoints
from .gradients import input_gradient

__all__ = ["TrainingAPGD", "apgd_perturb"]


class TrainingAPGD(NamedTuple):
    """What :func:`apgd_perturb` returns.

    Attributes:
        x_adv: the iterate with the highest cross-entropy per example (N, ...), detached.
        robust: (N,) bool, the model classified every iterate correctly.
        loss: (N,) the cross-entropy at ``x_adv`` (MAX picks the worst threat with it, at no
            extra pass).
    """

    x_adv: torch.Tensor
    robust: torch.Tensor
    loss: torch.Tensor


# Croce & Hein's constants (the same in the evaluation attack for ℓ∞/ℓ2).
_RHO = 0.75
_MOMENTUM = 0.75
# ℓ1 adaptive sparsity (training values of Croce & Hein 2022).
_L1_INIT_FRACTION = 0.05
_L1_SPARSITY_DIVISOR = 1.5
_L1_STEP_DIVISOR = 1.5
_L1_MIN_STEP = 0.1  # × ε
_L1_RESET_RATIO = 0.95


def _sparse_sign_direction(
    grad: torch.Tensor, x_adv: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """Per example, sign(grad) on its k largest movable |grad| coordinates, ℓ1-normalised.

    A coordinate is movable unless it sits on the box face the gradient pushes against
    (moving it would be undone by the projection). ``k`` (N,) long, clamped to [1, d].
    """
    lo, hi = BOX
    blocked = ((x_adv <= lo) & (grad < 0)) | ((x_adv >= hi) & (grad > 0))
    g = _flat(grad.masked_fill(blocked, 0.0))
    n, d = g.shape
    mag = g.abs()
    kk = k.clamp(1, d)
    # The k-th largest |g| per example: sort once, gather at k − 1.
    ordered = mag.sort(dim=1, descending=True).values
    thresh = ordered.gather(1, (kk - 1).unsqueeze(1))
    e = torch.where((mag >= thresh) & (mag > 0), g.sign(), torch.zeros_like(g))
    e = e / e.abs().sum(1, keepdim=True).clamp_min(1.0)
    return e.view_as(grad)


def apgd_perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: LpBall | str,
    *,
    steps: int = 10,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> TrainingAPGD:
    """APGD on the cross-entropy with a fixed cost, for adversarial training.

    No validation and no mode switching: the caller holds the model in ``attack_mode``
    (eval mode, frozen parameters), as the training objectives do.

    Args:
        model: the classifier (returns logits).
        x: clean inputs in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threat: an ℓp ball, object or text (``"l1:10"``).
        steps: iterations (>= 1).
        random_start: start from a uniform point of the ball instead of x (Croce & Hein start
            at x in training).
        generator: random source of the start.

    Returns:
        :class:`TrainingAPGD` ``(x_adv, robust, loss)``: the iterate with the highest
        cross-entropy per example (inside the ball and the box), True where the model
        classified every iterate correctly (the robust training examples E-AT counts), and
        the cross-entropy at ``x_adv``.

    Shape: x (N, ...), y (N,) -> (N, ...), (N,), (N,).
    """
    tm = parse(threat)
    if not isinstance(tm, LpBall):
        raise ValueError(f"APGD needs an ℓp ball, got {tm}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid steps: {steps!r} (must be an integer >= 1)")
    x = x.detach()
    n = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)
    x_cur = tm.random_init(x, generator) if random_start else x.clone()
    grad, logits, f_cur = input_gradient(model, x_cur, y)
    robust = logits.argmax(1) == y
    if tm.eps == 0:
        return TrainingAPGD(x.clone(), robust, f_cur)
    x_best, f_best, g_best = x_cur.clone(), f_cur.clone(), grad.clone()
    sparse = tm.p == 1
    if sparse:
        d = x[0].numel()
        every = max(1, int(0.04 * steps))
        checks = set(range(every, steps + 1, every))
        fraction = torch.full((n,), _L1_INIT_FRACTION, device=x.device, dtype=x.dtype)
        eta = torch.full((n,), tm.eps, device=x.device, dtype=x.dtype)
        sp_old = torch.full((n,), float(d), device=x.device, dtype=x.dtype)
    else:
        checks = set(_checkpoints(steps))
        eta = torch.full((n,), 2.0 * tm.eps, device=x.device, dtype=x.dtype)
        increases = torch.zeros(n, device=x.device, dtype=x.dtype)
        eta_at_check, f_best_at_check = eta.clone(), f_best.clone()
        last_check = 0
    x_prev = x_cur.clone()
    for i in range(steps):
        with torch.no_grad():
            if sparse:
                k = torch.ceil(fraction * d).to(torch.long)
                step = eta.view(view) * _sparse_sign_direction(grad, x_cur, k)
                x_new = tm.project(x_cur + step, x)
            else:
                z = tm.project(x_cur + eta.view(view) * tm.steepest_ascent(grad, x_cur), x)
                a = _MOMENTUM if i > 0 else 1.0
                x_new = tm.project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x)
            x_prev = x_cur
        if i < steps - 1:
            grad, logits, f_new = input_gradient(model, x_new, y)
        else:  # the last iterate only needs its loss: save one backward pass
            with torch.no_grad():
                logits = model(x_new)
                f_new = F.cross_entropy(logits, y, reduction="none")
        with torch.no_grad():
            robust = robust & (logits.argmax(1) == y)
            if not sparse:
                increases += (f_new > f_cur).to(increases.dtype)
            improved = f_new > f_best
            x_best = torch.where(improved.view(view), x_new, x_best)
            g_best = torch.where(improved.view(view), grad, g_best)
            f_best = torch.where(improved, f_new, f_best)
            x_cur, f_cur = x_new, f_new
            if i + 1 not in checks or i == steps - 1:
                continue
            if sparse:
                sp_cur = (_flat(x_best - x) != 0).sum(1).to(x.dtype)
                reset = sp_cur / sp_old < _L1_RESET_RATIO
                fraction = sp_cur / d / _L1_SPARSITY_DIVISOR
                eta = torch.where(reset, torch.full_like(eta, tm.eps), eta / _L1_STEP_DIVISOR)
                eta = eta.clamp(_L1_MIN_STEP * tm.eps, tm.eps)
                sp_old = sp_cur
                back = reset
            else:
                span = i + 1 - last_check
                back = (increases < _RHO * span) | (
                    (eta == eta_at_check) & (f_best == f_best_at_check)
                )
                eta_at_check, f_best_at_check = eta.clone(), f_best.clone()
                eta = torch.where(back, eta / 2, eta)
                increases.zero_()
                last_check = i + 1
            # Restart from the best point with the gradient stored there: no extra pass.
            x_cur = torch.where(back.view(view), x_best, x_cur)
            f_cur = torch.where(back, f_best, f_cur)
            grad = torch.where(back.view(view), g_best, grad)
    return TrainingAPGD(x_best.detach(), robust, f_best)
