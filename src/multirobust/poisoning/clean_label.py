"""Label-consistent (clean-label) backdoor: hard target-class images plus the trigger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm import tqdm

from ..attacks import pgd_perturb
from ..data import ImageDataset
from ..models import attack_mode
from ..threats import LpBall, ball
from .base import BackdoorAttack
from .triggers import PatchTrigger, Trigger

__all__ = ["CleanLabel"]


@dataclass(frozen=True, kw_only=True, eq=False)
class CleanLabel(BackdoorAttack):
    """Label-consistent backdoor (Turner, Tsipras & Madry, "Label-Consistent Backdoor
    Attacks", 2019, arXiv:1912.02771).

    Only images of the target class are poisoned, and their labels stay correct, so a human
    inspecting the data sees nothing wrong. Each chosen image is first made hard to classify
    from its natural features by an untargeted adversarial perturbation against a surrogate
    model (Turner et al. use PGD on an adversarially trained model, whose perturbations change
    the image's semantics), then stamped with the trigger:

        x' = stamp(x + δ),   δ = argmax_{‖δ‖ ≤ ε} ℓ(f_sur(x + δ), y),   label y = target.

    The model then leans on the trigger to fit those examples, and learns "trigger ⇒ target".

    Args:
        rate: fraction of the whole training set poisoned, in (0, 1]; the poisoned examples
            all come from the target class, so the rate is at most that class's share.
        target: the target class (clean-label attacks are all-to-one).
        seed: seeds the choice of examples and the attack's random starts.
        surrogate: the model the perturbations are computed against (e.g. ``zoo/pgd-linf.pt``).
        threat: ℓp threat model of the perturbation (text or object), e.g. ``linf:0.3``.
        steps: PGD steps (random start, the threat's default step size, no early stop: every
            example climbs the loss for all steps, misclassified or not).
        batch_size: examples per attack batch.
        patch: the trigger (default: 3 x 3 checkerboard in the bottom-right corner).
    """

    surrogate: nn.Module
    threat: Any = "linf:0.3"
    steps: int = 40
    batch_size: int = 256
    patch: PatchTrigger = field(default_factory=lambda: PatchTrigger(pattern="checkerboard"))
    name: ClassVar[str] = "clean-label"
    flips_labels: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "all-to-one":
            raise ValueError(
                f"Invalid mode: {self.mode!r} (a clean-label attack is all-to-one: it only "
                "poisons images of the target class)"
            )
        if not isinstance(self.surrogate, nn.Module):
            raise ValueError(
                f"Invalid surrogate: {type(self.surrogate).__name__} (must be a torch nn.Module)"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or (self.batch_size < 1)
        ):
            raise ValueError(f"Invalid batch_size: {self.batch_size!r} (must be an integer >= 1)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"Invalid steps: {self.steps!r} (must be an integer >= 1)")
        self._threat()  # an unparsable or non-ℓp threat fails here

    def _threat(self) -> LpBall:
        try:
            return ball(self.threat, who="The clean-label perturbation")
        except ValueError as err:
            raise ValueError(f"Invalid threat: {self.threat!s} ({err})") from None

    @property
    def trigger(self) -> Trigger:
        return self.patch

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["threat"] = str(self.threat)
        out["surrogate"] = type(self.surrogate).__name__
        return out

    def _check_extra(self, dataset: ImageDataset) -> None:
        with torch.no_grad():
            out = self.surrogate.eval()(dataset.images[:1])
        if out.dim() != 2 or out.shape[1] != dataset.num_classes:
            raise ValueError(
                f"Invalid surrogate: it returns shape {tuple(out.shape)} for one image, expected "
                f"(1, {dataset.num_classes}) logits for dataset {dataset.name!r}"
            )

    def _poison_images(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, progress: bool
    ) -> torch.Tensor:
        threat = self._threat()
        out = torch.empty_like(x)
        bar = tqdm(total=len(x), desc="clean-label perturbations", unit="img", disable=not progress)
        # PGD as a plain function: examples the surrogate already gets wrong are perturbed too
        # (the attack contract would skip them), and none stops early.
        with attack_mode(self.surrogate):
            for start in range(0, len(x), self.batch_size):
                sl = slice(start, start + self.batch_size)
                out[sl] = pgd_perturb(
                    self.surrogate, x[sl], y[sl], threat, steps=self.steps, generator=generator
                )
                bar.update(len(x[sl]))
        bar.close()
        return self.patch.apply(out)
