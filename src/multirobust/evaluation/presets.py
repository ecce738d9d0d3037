"""Attack ensembles per threat model, from quick to thorough, cheapest attack first.

The ``standard`` preset is AutoAttack's standard suite (Croce & Hein 2020) for ℓp balls plus
sparse-rs: APGD with cross-entropy, targeted APGD with the DLR loss over the top 9 classes, FAB-T
over the top 9 classes (Croce & Hein 2020), then a black-box attack with 5000 queries, so that
masked gradients cannot hide a weakness: Square (Andriushchenko et al. 2020) for ℓ∞ and ℓ2, and
for ℓ1 the sparse random search of :mod:`multirobust.attacks.sparse_rs` (ℓ1 is where
ℓ∞-trained MNIST models hide most behind masked gradients: see docs/results.md). Under ℓ1 the
APGD runs are APGD-ℓ1 with adaptive sparsity and the 3ε → 2ε → ε schedule, as AutoAttack's ℓ1
version runs them: 5 restarts of APGD-CE, APGD-T over the top 5 classes (Croce & Hein 2021).
Spatial threats get the exhaustive grid of Engstrom et al. (2019); affine threats APGD at each λ
of a grid (Tramèr & Boneh 2019) with the members' losses, and their black-box searches at the
endpoints (:mod:`multirobust.attacks.affine`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import attacks
from ..threats import Affine, LpBall, Spatial, Threat


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
        affine_lambdas, affine_steps: λ grid and APGD steps of the affine attack.
        fab_target_classes: classes tried by FAB-T (0 disables it; AutoAttack: 9).
        fab_steps: FAB-T's iterations per target (AutoAttack: 100).
        l1_restarts: APGD-CE restarts under ℓ1 (AutoAttack's ℓ1 version: 5); None: ``restarts``.
        l1_target_classes: APGD-T's classes under ℓ1 (AutoAttack's ℓ1 version: 5); None:
            ``target_classes``.
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
    fab_target_classes: int = 0
    fab_steps: int = 100
    l1_restarts: int | None = None
    l1_target_classes: int | None = None

    def with_options(self, **changes: Any) -> Preset:
        """A copy with some budgets changed, e.g. ``get("standard").with_options(steps=20)``."""
        return dataclasses.replace(self, **changes)

    def more_steps_attack(self, threat: Threat, num_classes: int) -> AttackSpec | None:
        """The attack the ``more-steps-lower-accuracy`` check reruns: the preset's strongest
        white-box attack under ``threat`` with twice the steps.

        APGD-T for ℓp balls (APGD-ℓ1 with adaptive sparsity and ``use_largereps`` under ℓ1),
        APGD with DLR, else APGD-CE, where the model has too few classes for it; the targeted
        affine attack (without its black-box part) for affine threats; None for threats
        without a white-box attack (spatial). The evaluation's runner still picks the last
        white-box spec itself; it should call this instead (docs/strength.md).
        """
        white = [s for s in self.attacks_for(threat, num_classes) if s.white_box]
        if not white:
            return None
        by_label = {s.label: s for s in white}
        spec = next(
            (
                by_label[k]
                for k in ("apgd-t", "affine-t", "apgd-dlr", "affine-dlr")
                if k in by_label
            ),
            white[0],
        )
        options = {**spec.options, "steps": 2 * int(spec.options.get("steps", self.steps))}
        if "queries" in options:
            options["queries"] = 0  # the check is about the white-box attack converging
        return AttackSpec(f"{spec.label} (2× steps)", spec.attack, options)

    def attacks_for(self, threat: Threat, num_classes: int) -> list[AttackSpec]:
        """The ensemble for one (non-union) threat model, cheapest first."""
        if isinstance(threat, LpBall):
            l1 = threat.p == 1
            restarts = self.restarts
            targets = self.target_classes
            if l1:
                restarts = restarts if self.l1_restarts is None else self.l1_restarts
                targets = targets if self.l1_target_classes is None else self.l1_target_classes
            specs = [
                AttackSpec(
                    "apgd-ce",
                    "apgd",
                    {"loss": "ce", "steps": self.steps, "restarts": restarts},
                )
            ]
            # The targeted DLR loss needs at least 4 classes.
            if targets > 0 and num_classes >= 4:
                specs.append(
                    AttackSpec(
                        "apgd-t",
                        "apgd-t",
                        {
                            "steps": self.steps,
                            "restarts": self.restarts,
                            "target_classes": min(targets, num_classes - 1),
                        },
                    )
                )
            elif num_classes >= 3:
                specs.append(
                    AttackSpec(
                        "apgd-dlr",
                        "apgd",
                        {"loss": "dlr", "steps": self.steps, "restarts": self.restarts},
                    )
                )
            if self.fab_target_classes > 0:
                specs.append(
                    AttackSpec(
                        "fab-t",
                        "fab-t",
                        {
                            "steps": self.fab_steps,
                            "target_classes": min(self.fab_target_classes, num_classes - 1),
                        },
                    )
                )
            # The black-box member: Square for ℓ∞ and ℓ2, sparse random search for ℓ1.
            for black_box in ("square", "sparse-rs"):
                if self.queries > 0 and attacks.get(black_box).supports(threat):
                    specs.append(
                        AttackSpec(
                            black_box,
                            black_box,
                            {"steps": self.queries, "restarts": self.square_restarts},
                            white_box=False,
                        )
                    )
            return specs
        if isinstance(threat, Spatial):
            return [
                AttackSpec(
                    "spatial-grid",
                    "spatial-grid",
                    {"rotations": self.rotations, "translations": self.translations},
                    white_box=False,
                )
            ]
        if isinstance(threat, Affine):
            common = {"lambdas": self.affine_lambdas, "steps": self.affine_steps}
            specs = [AttackSpec("affine-ce", "affine", {**common, "loss": "ce"})]
            # APGD-T at every λ, then the members' black-box searches at λ = 0 and 1.
            if self.target_classes > 0 and num_classes >= 4:
                targeted = {"target_classes": min(self.target_classes, num_classes - 1)}
                specs.append(
                    AttackSpec(
                        "affine-t", "affine", {**common, **targeted, "queries": self.queries}
                    )
                )
            elif num_classes >= 3:
                specs.append(
                    AttackSpec(
                        "affine-dlr", "affine", {**common, "loss": "dlr", "queries": self.queries}
                    )
                )
            return specs
        raise ValueError(
            f"No attack ensemble for threat {threat} (supported: ℓp balls, spatial, affine; "
            "list the members of a union as separate threats)"
        )


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
    "standard": Preset("standard", fab_target_classes=9, l1_restarts=5, l1_target_classes=5),
    "thorough": Preset(
        "thorough",
        fab_target_classes=9,
        l1_restarts=5,
        l1_target_classes=9,
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
