"""Trap models: a trained classifier behind a defence that only masks its gradients.

Each wraps an ordinary model (kept as ``.model``, the undefended twin an informed adversary
attacks instead) and changes what gradient-based attacks see, not what the classifier decides
(up to the trick itself). They exist so that the masking evidence, the evaluation's checks and
the documentation can be shown at work on models whose true robustness is known:

- :class:`QuantisedInput` rounds the input to ``levels`` grey levels: the gradient is zero
  almost everywhere (an adversary who knows it uses BPDA: the identity in the backward pass).
- :class:`GradientBlock` passes the input on unchanged and returns a zero gradient (a
  custom autograd function): the same decision as the twin, no gradient signal at all.
- :class:`SaturatedLogits` multiplies the logits by a large factor: the softmax saturates and
  cross-entropy gradients underflow to exactly zero in float32 (an adversary rescales the logits
  or uses a margin loss).
- :class:`GaussianNoise` adds N(0, σ²) noise to the input at every call (σ = 0.1 by default):
  outputs change between identical calls and single gradients are noisy (an adversary uses
  expectation over transformation, EOT).

Athalye, Carlini & Wagner 2018 ("Obfuscated gradients give a false sense of security")
describe the three families: shattered (quantisation, blocking), stochastic (noise) and
vanishing/exploding gradients (saturation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = [
    "GaussianNoise",
    "GradientBlock",
    "QuantisedInput",
    "SaturatedLogits",
    "TRAPS",
    "make_trap",
]


class _ZeroGradient(torch.autograd.Function):
    """Identity forward, zero backward: the input gradient exists and is exactly 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


class QuantisedInput(nn.Module):
    """``model(round(x · (levels − 1)) / (levels − 1))``: zero gradient almost everywhere.

    Args:
        model: the classifier behind the quantiser (``.model``).
        levels: number of grey levels kept (>= 2); 256 is 8-bit colour depth.
    """

    def __init__(self, model: nn.Module, levels: int = 256) -> None:
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
            raise ValueError(f"Invalid levels: {levels!r} (must be an integer >= 2)")
        self.model = model
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.levels - 1
        return self.model(torch.round(x * scale) / scale)


class GradientBlock(nn.Module):
    """``model(x)`` behind a layer that passes ``x`` on and returns a zero gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_ZeroGradient.apply(x))


class SaturatedLogits(nn.Module):
    """``scale · model(x)``: same decisions, a softmax that saturates (CE gradients underflow).

    Args:
        model: the classifier (``.model``).
        scale: factor on the logits (> 0); 1e4 makes float32 cross-entropy exactly 0 on
            confidently classified inputs.
    """

    def __init__(self, model: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"Invalid scale: {scale!r} (must be a finite number > 0)")
        self.model = model
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


class GaussianNoise(nn.Module):
    """``model(x + σ·n)`` with fresh n ~ N(0, I) at every call (not clipped to the box).

    The noise comes from the module's own ``torch.Generator`` (seeded by ``seed``, one per
    device), so a run is reproducible from the seed while every call still differs.

    Args:
        model: the classifier (``.model``).
        sigma: noise standard deviation (> 0), in input units ([0, 1] images).
        seed: seed of the noise generator.
    """

    def __init__(self, model: nn.Module, sigma: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if not math.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"Invalid sigma: {sigma!r} (must be a finite number > 0)")
        self.model = model
        self.sigma = float(sigma)
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device).manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(
            x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype
        )
        return self.model(x + self.sigma * noise)


#: Trap names (for scripts and the command line) -> their classes.
TRAPS: dict[str, type[nn.Module]] = {
    "quantised": QuantisedInput,
    "blocked": GradientBlock,
    "saturated": SaturatedLogits,
    "noisy": GaussianNoise,
}


def make_trap(name: str, model: nn.Module, **options: Any) -> nn.Module:
    """Wrap ``model`` in the trap called ``name`` (see :data:`TRAPS`), in eval mode."""
    try:
        cls = TRAPS[name]
    except KeyError:
        raise ValueError(f"Unknown trap {name!r} (available: {', '.join(sorted(TRAPS))})") from None
    return cls(model, **options).eval()
