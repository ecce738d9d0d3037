"""The input gradient: one forward and one backward pass, shared by every gradient attack.

Attacks, training objectives and checks all need ∇ₓ ℓ(f(x), y) without touching the model's
parameter gradients; this is the one function that computes it.
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-example loss with respect to the input.

    Args:
        model: returns logits; its parameters should not require gradients (``attack_mode``),
            else their ``.grad`` is left untouched anyway (``autograd.grad`` only).
        x: inputs (N, ...).
        y: labels (N,).
        loss_fn: per-example loss ``loss(logits, y, targets) -> (N,)``; cross-entropy if None.
        targets: target classes for targeted losses.

    Returns:
        ``(grad, logits, loss)``: grad (N, ...) like ``x``, detached logits (N, C), and the
        detached per-example loss (N,).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if loss_fn is None:
            value = F.cross_entropy(logits, y, reduction="none")
        else:
            value = loss_fn(logits, y, targets)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return grad, logits.detach(), value.detach()
