"""Noise augmentation: the training that makes a base classifier good under smoothing noise.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML
2019, Section 4: train the base classifier ``f`` on ``x + η`` with ``η`` drawn from the noise
the smoothed classifier will use (Gaussian for ℓ2; uniform or Laplace for ℓ1 as in Yang et al.
2020), so that ``f`` is accurate under that noise and ``p_A`` is large. The noisy inputs are
not clipped to [0, 1], exactly as the smoothed classifier sees them at certification.

    loss = noise_loss(model, x, y, "gaussian:0.25", generator=g)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..certify.noise import Noise, parse_noise

__all__ = ["noise_loss"]


def noise_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: Noise | str = "gaussian:0.25",
    *,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
    **_: Any,
) -> torch.Tensor:
    """Cross-entropy of ``model`` on ``x + η``, ``η`` drawn from ``noise``.

    Args:
        model: classifier returning logits (in whatever mode the caller trains it).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: labels ``(N,)``.
        noise: a :class:`~multirobust.certify.noise.Noise` or text (``"gaussian:0.25"``,
            ``"uniform:1"``, ``"laplace:0.5"``).
        generator: source of the noise (on ``x``'s device).
        stats: receives ``"adv_logits"``, the logits on the noisy batch (detached).

    Returns:
        The mean cross-entropy ``E[−log softmax(f(x + η))_y]`` over the batch.
    """
    dist = parse_noise(noise)
    eta = dist.sample(x.shape, like=x, generator=generator)
    logits = model(x + eta)
    if stats is not None:
        stats["adv_logits"] = logits.detach()
    return F.cross_entropy(logits, y)
