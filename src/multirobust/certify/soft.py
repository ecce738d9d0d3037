"""A differentiable Monte-Carlo stand-in for the smoothed classifier, for attacking it.

Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers",
NeurIPS 2019 (SmoothAdv), attack the smoothed classifier through its soft version
``G(x) = E_η[softmax(f(x + η))]`` estimated with m noise draws:

    log Ĝ(x) = log( (1/m) Σ_i softmax(f(x + η_i)) ).

:class:`SmoothedSoft` returns ``log Ĝ(x)`` as its "logits", so every attack of
:mod:`multirobust.attacks` runs on it unchanged. The m draws are the same at every call (a
generator re-seeded with ``seed`` each time), which makes it a deterministic function that
attacks can optimise; whether an attack point really fools the smoothed classifier is then
decided by :meth:`multirobust.certify.Smooth.predict` with fresh noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .noise import Noise, parse_noise
from .stats import check_count

__all__ = ["SmoothedSoft"]


class SmoothedSoft(nn.Module):
    """``x ↦ log mean_i softmax(f(x + η_i))`` over ``samples`` fixed noise draws.

    Args:
        model: the base classifier ``f``.
        noise: the smoothing noise (``"gaussian:0.25"``, ...).
        samples: noise draws m per input.
        seed: seed of the draws (the same at every call).
        batch_size: noisy copies per forward pass of ``f``.

    Shape: ``(N, C, H, W) -> (N, num_classes)`` log-probabilities.
    """

    def __init__(
        self,
        model: nn.Module,
        noise: Noise | str,
        *,
        samples: int = 32,
        seed: int = 0,
        batch_size: int = 1000,
    ) -> None:
        super().__init__()
        self.model = model
        self.noise = parse_noise(noise)
        self.samples = check_count(samples, "samples")
        self.seed = int(seed)
        self.batch_size = check_count(batch_size, "batch_size")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the noise-averaged softmax of the base classifier."""
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        eta = self.noise.sample((self.samples, *x.shape[1:]), like=x, generator=gen)
        noisy = (x.unsqueeze(1) + eta.unsqueeze(0)).flatten(0, 1)
        probs = []
        for start in range(0, noisy.shape[0], self.batch_size):
            probs.append(self.model(noisy[start : start + self.batch_size]).softmax(1))
        p = torch.cat(probs).view(x.shape[0], self.samples, -1).mean(1)
        # A class no draw votes for would give log 0; the floor keeps gradients finite.
        return p.clamp_min(math.ulp(1.0)).log()
