"""Inner representations a backdoor leaves traces in: the penultimate layer and the last
convolution.

Detectors read the input of the final linear layer (the "penultimate activations" of Chen et al.
2018 and the "learned representation" of Tran et al. 2018); fine-pruning reads the channels of
the last convolution. Both are found by module type, so any architecture of
:mod:`multirobust.models` works, and read with forward hooks that are always removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..models import model_state

__all__ = ["channel_activity", "last_conv", "last_linear", "penultimate"]


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` module (the classifier head).

    Raises:
        ValueError: when the model has none.
    """
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer: the detectors read the input of the "
            "final linear layer"
        )
    return found[-1]


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last ``nn.Conv2d`` module.

    Raises:
        ValueError: when the model has none.
    """
    found = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d layer: fine-pruning prunes the channels of "
            "the last convolution"
        )
    return found[-1]


@contextmanager
def _capture(module: nn.Module, *, inputs: bool) -> Iterator[list[torch.Tensor]]:
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        store.append((args[0] if inputs else out).detach())

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The input of the final linear layer for every image, flattened.

    Shape: ``(N, C, H, W)`` -> ``(N, D)``.
    """
    head = last_linear(model)
    out = []
    with model_state(model), _capture(head, inputs=True) as store:
        for start in range(0, len(x), batch_size):
            store.clear()
            model(x[start : start + batch_size])
            out.append(store[-1].flatten(1))
    return torch.cat(out)


@torch.no_grad()
def channel_activity(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Mean activation of each channel of the last convolution over ``x``.

    The activation is ``relu`` of the convolution's output, averaged over images and positions
    (Liu et al. 2018 rank channels by their mean activation on clean data; with a ReLU network
    this is exactly the post-activation mean).

    Shape: ``(N, C, H, W)`` -> ``(K,)`` for a convolution with K output channels.
    """
    conv = last_conv(model)
    total = torch.zeros(conv.out_channels, dtype=torch.float64)
    count = 0
    with model_state(model), _capture(conv, inputs=False) as store:
        for start in range(0, len(x), batch_size):
            store.clear()
            model(x[start : start + batch_size])
            act = store[-1].clamp_min(0)
            total += act.sum(dim=(0, 2, 3)).double().cpu()
            count += act.shape[0] * act.shape[2] * act.shape[3]
    return (total / max(count, 1)).float()
