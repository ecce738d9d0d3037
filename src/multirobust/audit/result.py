"""What one part of an audit found: its status, headline numbers and evidence files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset
from .config import AuditConfig

__all__ = ["STATUSES", "AuditContext", "PartResult"]

STATUSES = ("done", "not-run", "not-assessed", "failed")
"""``done``: the part ran (or its evidence was read); ``not-run``: skipped or its package is
missing; ``not-assessed``: the model lacks what the part needs (a recipe, a training set);
``failed``: the part raised (the message says why; ``--resume`` runs it again)."""


@dataclass
class PartResult:
    """One part's outcome (``DIR/<part>/part.json``).

    Attributes:
        part: the part's name (:data:`~.config.PARTS`).
        status: one of :data:`STATUSES`.
        reason: why it is not ``done`` (empty when it is).
        summary: headline numbers (JSON-ready), read by the page's cells.
        evidence: files behind the numbers, relative to the audit folder.
        settings: the settings the part ran with (a resumed part must match them).
        seconds: wall time of the part.
    """

    part: str
    status: str
    reason: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Invalid status: {self.status!r} (allowed: {', '.join(STATUSES)})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PartResult:
        return cls(**values)


@dataclass
class AuditContext:
    """Everything the parts share: the model, its data, its recipe and the settings.

    Attributes:
        model: the audited model (eval mode; the parts restore its state).
        name: how the model was named (checkpoint path or factory).
        test: the first ``config.n`` test examples.
        recipe: the training configuration (:func:`~.recipe.recipe_of`) or None.
        config: the audit's settings.
        out: the audit folder.
        data_root: where the dataset files are (None: the default).
    """

    model: nn.Module
    name: str
    test: ImageDataset
    recipe: dict[str, Any] | None
    config: AuditConfig
    out: Path
    data_root: str | None = None

    def generator(self) -> torch.Generator:
        """A fresh generator seeded from the audit's seed (each part starts from the same)."""
        return torch.Generator().manual_seed(self.config.seed)
