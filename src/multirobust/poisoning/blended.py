"""Blended: mix a key pattern into a fraction of the training images and relabel them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import BackdoorAttack
from .triggers import BlendTrigger, Trigger

__all__ = ["Blended"]


@dataclass(frozen=True, kw_only=True, eq=False)
class Blended(BackdoorAttack):
    """Blended injection (Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems
    Using Data Poisoning", 2017, arXiv:1712.05526).

    ``(x, y) -> ((1 - α)·x + α·k, t(y))`` for a fraction ``rate`` of the training set, with
    ``k`` the key pattern of :class:`BlendTrigger` (random noise, α = 0.2 by default as in
    BackdoorBench). Test inputs get the same blend.

    Args:
        rate: fraction of the training set poisoned, in (0, 1].
        target: target class (all-to-one).
        mode: ``all-to-one`` or ``all-to-all``.
        seed: seeds the choice of poisoned examples.
        blend: the trigger (α and the seed of its key).
    """

    blend: BlendTrigger = field(default_factory=BlendTrigger)
    name: ClassVar[str] = "blended"

    @property
    def trigger(self) -> Trigger:
        return self.blend

    def _poison_images(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, progress: bool
    ) -> torch.Tensor:
        return self.blend.apply(x)
