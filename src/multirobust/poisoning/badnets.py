"""BadNets: stamp a patch on a fraction of the training images and relabel them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import BackdoorAttack
from .triggers import PatchTrigger, Trigger

__all__ = ["BadNets"]


@dataclass(frozen=True, kw_only=True, eq=False)
class BadNets(BackdoorAttack):
    """BadNets (Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model
    Supply Chain", 2017, arXiv:1708.06733).

    A fraction ``rate`` of the training examples gets the patch trigger and the backdoor's
    label: ``(x, y) -> (stamp(x), t(y))`` with ``t(y) = target`` (all-to-one, drawn from
    examples not already in the target class) or ``t(y) = (y + 1) mod K`` (all-to-all).

    Args:
        rate: fraction of the training set poisoned, in (0, 1].
        target: target class (all-to-one).
        mode: ``all-to-one`` or ``all-to-all``.
        seed: seeds the choice of poisoned examples.
        patch: the trigger (default: 3 x 3 white square, 1 pixel from the bottom-right corner).
    """

    patch: PatchTrigger = field(default_factory=PatchTrigger)
    name: ClassVar[str] = "badnets"

    @property
    def trigger(self) -> Trigger:
        return self.patch

    def _poison_images(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, progress: bool
    ) -> torch.Tensor:
        return self.patch.apply(x)
