"""A model wrapper that reports every forward pass: progress inside an attack's batch.

An attack on a batch is one call that may run for minutes (C&W: thousands of forward and
backward passes); a progress bar updated per batch then sits still. Wrapped in
:class:`ForwardCounter`, the model tells the caller how many example rows each forward pass
took, so a bar can move with the attack's own iterations without the attack knowing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ForwardCounter"]


class ForwardCounter(nn.Module):
    """``model`` itself, calling ``on_forward(rows)`` before each forward pass.

    The wrapped model is a submodule: modes, ``requires_grad`` flags and parameters are the
    model's own, so attack_mode / model_state save and restore them as they would the model's.

    Args:
        model: the classifier.
        on_forward: called with the batch size (rows) of every forward pass.

    Shape:
        as ``model``.
    """

    def __init__(self, model: nn.Module, on_forward: Callable[[int], None]) -> None:
        super().__init__()
        self.model = model
        self._on_forward = on_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._on_forward(int(x.shape[0]))
        out: torch.Tensor = self.model(x)
        return out
