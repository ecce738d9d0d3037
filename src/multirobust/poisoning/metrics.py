"""Backdoor metrics in BackdoorBench's columns: clean accuracy, ASR and robust accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset
from ..models import model_state
from .base import BackdoorAttack

__all__ = ["BackdoorMetrics", "backdoor_metrics", "predict"]


@dataclass(frozen=True)
class BackdoorMetrics:
    """A model's behaviour on clean and on triggered test inputs.

    Attributes:
        clean_accuracy: accuracy on the clean test set (BackdoorBench's C-Acc).
        attack_success_rate: fraction of the triggered inputs classified as the backdoor's
            target (ASR). For all-to-one, only inputs whose true class is not the target count.
        robust_accuracy: fraction of the same triggered inputs still classified as their true
            class (R-Acc).
        n_clean: clean test inputs.
        n_triggered: triggered test inputs.
    """

    clean_accuracy: float
    attack_success_rate: float
    robust_accuracy: float
    n_clean: int
    n_triggered: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return asdict(self)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes of ``model`` (in eval mode, restored after).

    Shape: ``(N, C, H, W)`` -> ``(N,)`` int64.
    """
    out = []
    with model_state(model):
        for start in range(0, len(x), batch_size):
            out.append(model(x[start : start + batch_size]).argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def backdoor_metrics(
    model: nn.Module, test: ImageDataset, attack: BackdoorAttack, *, batch_size: int = 1000
) -> BackdoorMetrics:
    """Clean accuracy, attack success rate and robust accuracy of ``model`` on ``test``.

    Args:
        model: the classifier (its mode is restored).
        test: clean test set.
        attack: the backdoor whose trigger and target define the triggered inputs.
        batch_size: inputs per forward pass.

    Returns:
        :class:`BackdoorMetrics`.
    """
    triggered = attack.triggered(test)
    clean_pred = predict(model, test.images, batch_size)
    trig_pred = predict(model, triggered.images, batch_size)
    n_t = max(len(triggered.labels), 1)
    return BackdoorMetrics(
        clean_accuracy=float((clean_pred == test.labels).float().mean()),
        attack_success_rate=float((trig_pred == triggered.targets).sum()) / n_t,
        robust_accuracy=float((trig_pred == triggered.labels).sum()) / n_t,
        n_clean=len(test),
        n_triggered=len(triggered.labels),
    )
