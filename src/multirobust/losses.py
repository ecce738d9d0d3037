"""Attack losses, all maximised by the attacker, per example: name -> callable.

Every loss has the signature ``loss(logits, y, targets=None) -> (N,)``. With ``targets`` it is
the targeted form: still maximised, it rises as the target class wins. The sign flip lives here,
so attacks only ever ascend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F


class Loss(Protocol):
    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``, per example."""
    masked = logits.scatter(1, cls.unsqueeze(1), float("-inf"))
    return masked.amax(1)


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the true class; targeted: minus the cross-entropy of the target."""
    if targets is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, targets, reduction="none")


def margin(
    logits: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    confidence: float = 0.0,
) -> torch.Tensor:
    """Carlini–Wagner margin (f6, 2017) with confidence κ, to maximise.

    Untargeted: min(max_{i≠y} z_i − z_y, κ). Targeted: min(z_t − max_{i≠t} z_i, κ).
    Capping at κ stops the attack from pushing examples that are already κ past the boundary.
    """
    if targets is None:
        value = _other_max(logits, y) - logits.gather(1, y.unsqueeze(1)).squeeze(1)
    else:
        value = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - _other_max(logits, targets)
    return value.clamp(max=confidence) if confidence != float("inf") else value


def dlr(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), scale-invariant, to maximise.

    Untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3).
    Targeted:   −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2).
    π orders the logits decreasingly. Needs ≥ 3 classes (≥ 4 targeted).
    """
    srt = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    if targets is None:
        if logits.shape[1] < 3:
            raise ValueError("The DLR loss needs at least 3 classes")
        return -(z_y - _other_max(logits, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)
    if logits.shape[1] < 4:
        raise ValueError("The targeted DLR loss needs at least 4 classes")
    z_t = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy,
    "margin": margin,
    "cw": margin,
    "dlr": dlr,
}


def names() -> list[str]:
    """Registered loss names."""
    return sorted(_LOSSES)


def get(name: str | Callable[..., torch.Tensor], **options: float) -> Loss:
    """The loss registered as ``name`` (or a callable, returned as is), with ``options`` bound.

    ``get("margin", confidence=5.0)`` is the C&W margin with κ = 5.
    """
    if callable(name):
        return name  # type: ignore[return-value]
    try:
        fn = _LOSSES[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r} (available: {', '.join(names())})") from None
    if not options:
        return fn  # type: ignore[return-value]

    def bound(
        logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        return fn(logits, y, targets, **options)

    return bound
