"""Counting forward and backward passes through a model, per example.

The cost of an attack is measured in passes of single examples through the model: a batch of
``n`` costs ``n`` forward passes, and ``n`` backward passes when a gradient flows back through
its output. This is the unit of AutoAttack's cost model (Croce & Hein 2020), which is how
``benchmarks/autoattack_cost.py`` compares the ensembles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class PassCounter(nn.Module):
    """Wraps ``model`` and counts single-example forward and backward passes through it.

    A backward pass is counted when a gradient reaches the wrapped model's output (through a
    tensor hook), so forwards under ``torch.no_grad()`` and outputs never differentiated cost
    no backward pass. The wrapper adds no host synchronisation and changes no result.

    Attributes:
        forward_passes: examples passed forward so far.
        backward_passes: examples whose output received a gradient so far.
        listener: called with the batch size after every forward pass when set (the
            evaluation's progress inside an attack, :mod:`~.progress`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_passes = 0
        self.backward_passes = 0
        self.listener: Callable[[int], object] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.forward_passes += n
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(self._on_backward(n))
        if self.listener is not None:
            self.listener(n)
        return out  # type: ignore[no-any-return]

    def _on_backward(self, n: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            self.backward_passes += n

        return hook

    def counts(self) -> tuple[int, int]:
        """``(forward_passes, backward_passes)`` so far."""
        return self.forward_passes, self.backward_passes

    def reset(self) -> None:
        """Set both counts back to 0."""
        self.forward_passes = self.backward_passes = 0
