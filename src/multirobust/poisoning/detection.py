"""What a poisoned-example detector returns, and its score against the poisoning record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .record import PoisonRecord

__all__ = ["Detection", "DetectionScore"]


@dataclass(frozen=True)
class DetectionScore:
    """A detector's flags against the truth.

    Attributes:
        precision: poisoned among flagged (1.0 when nothing is flagged: no false alarm).
        recall: flagged among poisoned (1.0 when nothing was poisoned).
        flagged: examples flagged.
        poisoned: examples poisoned.
        true_positives: poisoned examples flagged.
        flagged_fraction: flagged / dataset size.
        chance_precision: the precision of flagging at random (the poisoned fraction).
    """

    precision: float
    recall: float
    flagged: int
    poisoned: int
    true_positives: int
    flagged_fraction: float
    chance_precision: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class Detection:
    """The examples a detector flags as poisoned.

    Attributes:
        method: detector name.
        flagged: ``(N,)`` bool, True where the detector says "poisoned".
        scores: ``(N,)`` float, larger is more suspicious (comparable within a class).
        classes: per class, what the detector saw (sizes, statistics, its decision).
        params: the detector's settings.
    """

    method: str
    flagged: torch.Tensor
    scores: torch.Tensor
    classes: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def suspicious_classes(self) -> list[int]:
        """Classes in which something was flagged."""
        return [c["class"] for c in self.classes if c.get("flagged", 0) > 0]

    def evaluate(self, record: PoisonRecord | None) -> DetectionScore:
        """Precision and recall against ``record`` (None: a clean dataset, nothing poisoned)."""
        n = len(self.flagged)
        truth = torch.zeros(n, dtype=torch.bool) if record is None else record.mask
        if len(truth) != n:
            raise ValueError(
                f"The record covers {len(truth)} examples but the detection {n} (same dataset?)"
            )
        tp = int((self.flagged & truth).sum())
        nf, npois = int(self.flagged.sum()), int(truth.sum())
        return DetectionScore(
            precision=tp / nf if nf else 1.0,
            recall=tp / npois if npois else 1.0,
            flagged=nf,
            poisoned=npois,
            true_positives=tp,
            flagged_fraction=nf / max(n, 1),
            chance_precision=npois / max(n, 1),
        )

    def to_dict(self, record: PoisonRecord | None = None) -> dict[str, Any]:
        """JSON-ready summary (flagged indices included; scores are not)."""
        out: dict[str, Any] = {
            "method": self.method,
            "params": self.params,
            "flagged": int(self.flagged.sum()),
            "flagged_indices": self.flagged.nonzero().flatten().tolist(),
            "suspicious_classes": self.suspicious_classes,
            "classes": self.classes,
        }
        out["score"] = self.evaluate(record).to_dict()
        return out
