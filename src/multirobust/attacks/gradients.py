"""The input gradient: one forward and one backward pass, shared by every gradient attack.

Attacks, training objectives and checks all need ∇ₓ ℓ(f(x), y) without touching the model's
parameter gradients; this is the one function that computes it. For randomised models it also
computes the expectation over transformation (EOT, Athalye et al. 2018): the gradient, logits and
loss averaged over several calls of the model, so every gradient attack gets EOT by passing
``samples``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: losses.Loss | None = None,
    targets: torch.Tensor | None = None,
    *,
    samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-example loss with respect to the input.

    With ``samples`` = k > 1 it is the EOT estimate of Athalye et al. (2018) for a model that
    draws fresh randomness at every call (noise, random transformations, dropout left on):

        ĝ = (1/k) Σ_j ∇ₓ ℓ(f_j(x), y),   logits and loss averaged the same way,

    one forward and one backward pass per call (k calls, not one k-times larger batch, so the
    model draws its randomness exactly as it does for any other caller). AutoAttack's ``rand``
    version uses k = 20.

    Args:
        model: returns logits; its parameters should not require gradients (``attack_mode``),
            else their ``.grad`` is left untouched anyway (``autograd.grad`` only).
        x: inputs (N, ...).
        y: labels (N,).
        loss_fn: per-example loss ``loss(logits, y, targets) -> (N,)``; cross-entropy if None.
        targets: target classes for targeted losses.
        samples: calls averaged over (EOT); 1 is the plain gradient.

    Returns:
        ``(grad, logits, loss)``: grad (N, ...) like ``x``, detached logits (N, C), and the
        detached per-example loss (N,); with ``samples`` > 1, each the mean over the calls.
    """
    if samples == 1:
        return _one_gradient(model, x, y, loss_fn, targets)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"Invalid samples: {samples!r} (must be an integer >= 1)")
    grad, logits, value = _one_gradient(model, x, y, loss_fn, targets)
    for _ in range(samples - 1):
        g, lg, v = _one_gradient(model, x, y, loss_fn, targets)
        grad, logits, value = grad + g, logits + lg, value + v
    return grad / samples, logits / samples, value / samples


def _one_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: losses.Loss | None,
    targets: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss_fn is None:
            value = F.cross_entropy(logits, y, reduction="none")
        else:
            value = loss_fn(logits, y, targets)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad, logits.detach(), value.detach()
