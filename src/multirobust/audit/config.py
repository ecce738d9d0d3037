"""Settings of one audit (``audit.json``'s ``settings``; the flags of ``multirobust audit``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import threats as _threats
from ..evaluation import presets

__all__ = ["DEFAULT_THREATS", "PARTS", "AuditConfig", "AuditError"]

PARTS = ("evasion", "goals", "membership", "poisoning", "certify", "api")
"""The parts of an audit, in the order they run (cheapest evidence first)."""

DEFAULT_THREATS: dict[str, tuple[str, ...]] = {"mnist": ("linf:0.3", "l2:2", "l1:10")}
"""Threat models used when none are given: the project's MNIST budgets (docs/results.md)."""

# Settings that do not change what a finished part found: a resumed audit may differ in them.
_RESUME_FREE = ("progress",)


class AuditError(ValueError):
    """A bad audit setting or input, found before any part runs."""


@dataclass
class AuditConfig:
    """What one audit runs.

    Attributes:
        threats: threat models of the white-box evasion parts (text); empty: the dataset's
            defaults (:data:`DEFAULT_THREATS`).
        preset: attack ensemble of the evasion evaluation (``quick``, ``standard``,
            ``thorough``, or a :class:`~multirobust.evaluation.Preset`).
        n: test examples attacked by the evasion parts (the first n).
        batch_size: examples attacked together.
        seed: seed of every random choice.
        confidence: the confidence-reduction goal's threshold on the true class's probability.
        pair: the source→target goal's classes.
        goal_steps: PGD steps of the goal-specific attacks.
        membership_n: members and non-members each in the loss-threshold attack.
        shadows: a ``multirobust membership`` run folder whose shadow models LiRA uses.
        poison: :class:`~multirobust.poisoning.BackdoorConfig` settings that replace the
            audit's defaults (BadNets at 1%, the model's recipe) for the poisoning part.
        certify_dir, api_dir: existing result folders of ``multirobust certify`` and of an
            attack through the API, taken as evidence instead of running those parts.
        skip: parts not to run (shown as "not run: skipped").
        progress: show progress bars.
    """

    threats: list[str] = field(default_factory=list)
    preset: str | presets.Preset = "quick"
    n: int = 200
    batch_size: int = 500
    seed: int = 0
    confidence: float = 0.5
    pair: tuple[int, int] = (3, 8)
    goal_steps: int = 50
    membership_n: int = 1000
    shadows: str | None = None
    poison: dict[str, Any] = field(default_factory=dict)
    certify_dir: str | None = None
    api_dir: str | None = None
    skip: list[str] = field(default_factory=list)
    progress: bool = True

    def validate(self, dataset: str, num_classes: int) -> None:
        """Check every setting that needs no work; fills in the default threats.

        Raises:
            AuditError: naming the setting and what is allowed.
        """
        if not self.threats:
            if dataset not in DEFAULT_THREATS:
                raise AuditError(
                    f"No default threat models for dataset {dataset!r} (defaults exist for "
                    f"{', '.join(DEFAULT_THREATS)}): pass --threat, e.g. linf:8/255"
                )
            self.threats = list(DEFAULT_THREATS[dataset])
        for text in self.threats:
            try:
                _threats.parse(text)
            except (ValueError, TypeError) as err:
                raise AuditError(f"Invalid threat {text!r}: {err}") from None
        if isinstance(self.preset, str) and self.preset not in presets.PRESETS:
            raise AuditError(
                f"Invalid preset: {self.preset!r} (allowed: {', '.join(sorted(presets.PRESETS))})"
            )
        for name in ("n", "batch_size", "goal_steps", "membership_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AuditError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        if not 0.0 < self.confidence <= 1.0:
            raise AuditError(f"Invalid confidence: {self.confidence!r} (must be in (0, 1])")
        source, target = self.pair
        if source == target or not (0 <= source < num_classes and 0 <= target < num_classes):
            raise AuditError(
                f"Invalid pair: {source}:{target} (two different classes in 0..{num_classes - 1})"
            )
        unknown = sorted(set(self.skip) - set(PARTS))
        if unknown:
            raise AuditError(f"Invalid skip: {', '.join(unknown)} (parts: {', '.join(PARTS)})")
        for name in ("shadows", "certify_dir", "api_dir"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise AuditError(f"Invalid {name}: {folder} is not a folder")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = dataclasses.asdict(self)
        out["pair"] = list(self.pair)
        if not isinstance(self.preset, str):  # asdict expanded it: keep its fields, named
            out["preset"] = {"name": self.preset.name, **out["preset"]}
        return out

    def part_settings(self, part: str) -> dict[str, Any]:
        """The settings a part's result depends on (a resumed part must match them)."""
        keys = {
            "evasion": ("threats", "preset", "n", "batch_size", "seed"),
            "goals": ("threats", "n", "batch_size", "seed", "confidence", "pair", "goal_steps"),
            "membership": ("membership_n", "shadows", "seed"),
            "poisoning": ("poison", "seed"),
            "certify": ("certify_dir", "threats", "n", "seed"),
            "api": ("api_dir",),
        }[part]
        values = self.to_dict()
        return {k: values[k] for k in keys if k not in _RESUME_FREE}
