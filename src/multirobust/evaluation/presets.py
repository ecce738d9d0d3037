"""Attack ensembles per threat model, from quick to thorough, cheapest attack first.

The ``standard`` preset follows AutoAttack's standard suite (Croce & Hein 2020) for ℓp balls:
APGD with cross-entropy, targeted APGD with the DLR loss over the top 9 classes, then a
black-box attack with 5000 queries, so that masked gradients cannot hide a weakness: Square
(Andriushchenko et al. 2020) for ℓ∞ and ℓ2, and for ℓ1 the sparse random search of
:mod:`multirobust.attacks.sparse_rs` (AutoAttack's ℓ1 suite has no black-box member, and ℓ1 is
where ℓ∞-trained MNIST models hide most behind masked gradients: see docs/results.md). FAB-T is
not included (multirobust has no FAB); Croce & Hein report that it changes AutoAttack's numbers
by at most a few tenths of a percent. Spatial threats get the exhaustive grid of Engstrom et al.
(2019); affine threats the affine PGD of Tramèr & Boneh (2019).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import attacks
from ..threats import Threat


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an ensemble: a label for reports, a registered name and its options."""

    label: str
    attack: str
    options: dict[str, Any]
    white_box: bool = True

    def build(self, threat: Threat, seed: int = 0) -> attacks.Attack:
        """The attack object under ``threat``."""
        return attacks.create(self.attack, threat=threat, seed=seed, **self.options)


@dataclass(frozen=True)
class Preset:
    """Budgets of an attack ensemble.

    Args:
        name: label shown in reports.
        steps: iterations of the white-box attacks (APGD) per restart.
        restarts: random restarts of the white-box attacks.
        target_classes: classes tried by targeted APGD-DLR (0 disables it).
        queries: query budget of the black-box attack (Square, or sparse-rs for ℓ1; 0 disables
            it).
        square_restarts: restarts of the black-box attack.
        rotations, translations: grid of the spatial search.
        affine_lambdas, affine_steps: λ grid and PGD steps of the affine attack.
    """

    name: str
    steps: int = 100
    restarts: int = 1
    target_classes: int = 9
    queries: int = 5000
    square_restarts: int = 1
    rotations: int = 31
    translations: int = 5
    affine_lambdas: int = 5
    affine_steps: int = 100

    def with_options(self, **changes: Any) -> Preset:
        """A copy with some budgets changed, e.g. ``get("standard").with_options(steps=20)``."""
        return dataclasses.replace(self, **changes)

    def candidates(self, num_classes: int) -> list[AttackSpec]:
        """Every attack of the preset, cheapest first; each threat keeps those supporting it."""
        runs = {"steps": self.steps, "restarts": self.restarts}
        specs = [AttackSpec("apgd-ce", "apgd", {"loss": "ce", **runs})]
        # The targeted DLR loss needs at least 4 classes, the untargeted one 3.
        if self.target_classes > 0 and num_classes >= 4:
            target = {"target_classes": min(self.target_classes, num_classes - 1)}
            specs.append(AttackSpec("apgd-t", "apgd-t", {**runs, **target}))
        elif num_classes >= 3:
            specs.append(AttackSpec("apgd-dlr", "apgd", {"loss": "dlr", **runs}))
        # The black-box member: Square for ℓ∞ and ℓ2, sparse random search for ℓ1.
        if self.queries > 0:
            budget = {"steps": self.queries, "restarts": self.square_restarts}
            specs += [
                AttackSpec("square", "square", budget, white_box=False),
                AttackSpec("sparse-rs", "sparse-rs", budget, white_box=False),
            ]
        grid = {"rotations": self.rotations, "translations": self.translations}
        specs.append(AttackSpec("spatial-grid", "spatial-grid", grid, white_box=False))
        affine = {"lambdas": self.affine_lambdas, "steps": self.affine_steps}
        specs.append(AttackSpec("affine-ce", "affine", {**affine, "loss": "ce"}))
        if num_classes >= 3:
            specs.append(AttackSpec("affine-dlr", "affine", {**affine, "loss": "dlr"}))
        return specs

    def attacks_for(self, threat: Threat, num_classes: int) -> list[AttackSpec]:
        """The ensemble for one (non-union) threat model, cheapest first: the preset's attacks
        that support it."""
        if threat.members() != (threat,):
            raise ValueError(
                f"No attack ensemble for threat {threat}: list the members of a union as "
                "separate threats (the union of all threats is always reported)"
            )
        specs = [s for s in self.candidates(num_classes) if attacks.get(s.attack).supports(threat)]
        if not specs:
            raise ValueError(f"No attack of the {self.name!r} preset supports threat {threat}")
        return specs


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        steps=25,
        target_classes=3,
        queries=300,
        rotations=11,
        translations=3,
        affine_lambdas=3,
        affine_steps=25,
    ),
    "standard": Preset("standard"),
    "thorough": Preset(
        "thorough",
        steps=200,
        restarts=3,
        queries=10000,
        square_restarts=2,
        rotations=61,
        translations=7,
        affine_lambdas=9,
        affine_steps=200,
    ),
}


def get(preset: str | Preset) -> Preset:
    """The preset named ``preset`` ("quick", "standard", "thorough"), or ``preset`` itself."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown preset {preset!r} (available: {', '.join(PRESETS)}, or a Preset object)"
        ) from None
