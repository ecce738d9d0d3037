"""Attack ensembles per threat model, from quick to thorough, cheapest attack first.

The ``standard`` preset is AutoAttack's standard suite (Croce & Hein 2020) for ℓp balls plus
sparse-rs: APGD with cross-entropy, targeted APGD with the DLR loss over the top 9 classes (two
runs per class where AutoAttack has one, and 3 more towards the nearest class for the examples
left within a small margin of the boundary), FAB-T over the top 9 classes (Croce & Hein 2020), then
a black-box attack with 5000 queries, so that masked gradients cannot hide a weakness: Square
(Andriushchenko et al. 2020) for ℓ∞ and ℓ2, and for ℓ1 the sparse random search of
:mod:`multirobust.attacks.sparse_rs` (ℓ1 is where ℓ∞-trained MNIST models hide most behind
masked gradients: see docs/results.md). Under ℓ1 the APGD runs are APGD-ℓ1 with adaptive
sparsity and the 3ε → 2ε → ε schedule, as AutoAttack's ℓ1 version runs them: 5 restarts of
APGD-CE (Croce & Hein 2021); APGD-T goes over the top 9 classes (AutoAttack's ℓ1 version: 5).
Where the input gradient is masked, the black box runs once more with 20,000 queries × 3
restarts on those examples (``masked_queries``). Spatial threats get the exhaustive grid of
Engstrom et al. (2019); affine threats APGD at each λ of a grid (Tramèr & Boneh 2019) with the
members' losses, and their black-box searches at the endpoints (:mod:`multirobust.attacks.affine`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import attacks
from ..attacks.base import check_nonneg_int, check_positive_int
from ..threats import L1Ball, L2Ball, LinfBall, Threat


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an ensemble: a label for reports, a registered name and its options."""

    label: str
    attack: str
    options: dict[str, Any]
    white_box: bool = True
    #: Run only on the examples whose input gradient is zero or non-finite (the transfer
    #: fallback for masked gradients), not on every example still robust.
    masked_only: bool = False
    #: Run only on batches where the attack with this label broke at least one example (the
    #: black-box search's second run: where random search finds what gradients missed, one
    #: run of it is not enough; AutoAttack's own advice when Square lowers its number).
    follows: str | None = None
    #: Registry names of the threat kinds this spec is for (``("linf", "l2")``; None: every
    #: kind its attack supports), for options that differ between kinds (AutoAttack's ℓ1
    #: version restarts APGD more often).
    kinds: tuple[str, ...] | None = None

    def applies_to(self, threat: Threat) -> bool:
        """The spec's attack supports ``threat`` and ``kinds`` admits its kind."""
        if self.kinds is not None and threat.name not in self.kinds:
            return False
        return attacks.get(self.attack).supports(threat)

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
        targeted_restarts: APGD-T's runs per target class (later runs only on examples still
            robust); None: ``restarts``. AutoAttack's standard version runs 1; the standard
            preset runs 2, since one run's random start decides single examples either way
            (docs/strength.md, "The independent adversary").
        near_miss_runs: APGD-T's extra runs, towards the class it came closest to, on the
            examples it left robust within a scale-free margin of 0.1 of the boundary
            (:class:`~multirobust.attacks.apgd.APGDTargeted`; 0: none). The standard preset
            runs 3: such examples fall to some runs and not others, and they are few.
        queries: query budget of the black-box attack (Square, or sparse-rs for ℓ1; 0 disables
            it).
        square_restarts: restarts of the black-box attack.
        square_rescale: stretch Square's p schedule to its query budget (its default); False
            counts the schedule's iterations as they are, as AutoAttack's standard version
            does with 5,000 queries (the standard preset).
        black_box_again: at most this many more runs of the black-box attack (Square,
            sparse-rs), each with its own seed on the examples still robust, each only in a
            batch where the run before it broke an example that every earlier attack missed
            (labelled ``square-2``, ``square-3``, ...; 0: none). Random search that finds what
            gradients miss has not converged after one run; AutoAttack warns in that case and
            advises more runs. True counts as 1.
        masked_queries: where the model's input gradient is zero, vanishing or non-finite
            (a blocked or saturated gradient: the white-box attacks walk blind there), one more
            black-box run with this many queries per restart on those examples still robust,
            after every other black-box run (labelled ``square-masked``, ``sparse-rs-masked``;
            0: none). The longer search stands in for the gradients the model hides.
        masked_restarts: restarts of that run.
        rotations, translations: grid of the spatial search.
        affine_lambdas, affine_steps: λ grid and APGD steps of the affine attack.
        fab: FAB-T after APGD-T (AutoAttack's standard suite); off by default so that custom
            presets keep their cost.
        fab_target_classes: classes tried by FAB-T; None: ``target_classes`` (AutoAttack uses
            9 for both).
        fab_steps: FAB-T's iterations per target; None: ``steps`` (AutoAttack: 100 for both).
        l1_restarts: APGD-CE restarts under ℓ1 (AutoAttack's ℓ1 version: 5); None: ``restarts``.
        l1_target_classes: APGD-T's classes under ℓ1 (AutoAttack's ℓ1 version: 5; the standard
            preset: 9, as under ℓ∞ and ℓ2); None:
            ``target_classes``.
        eot_samples: for a randomised model (outputs that change between identical calls), the
            white-box attacks average gradients over this many calls (EOT, Athalye et al. 2018;
            AutoAttack's ``rand`` version: 20) and every verdict is the majority of this many
            predictions (:func:`multirobust.attacks.eot.robust_over_calls`). Unused for a
            deterministic model.
        transfer: add the transfer fallback (:mod:`multirobust.attacks.transfer`) after the
            white-box attacks, run only on examples whose input gradient is zero or non-finite:
            PGD on a surrogate distilled from the model's outputs, judged on the model.
        transfer_distill_steps: Adam steps of the surrogate's distillation.
        transfer_samples: distillation query points per example (the example and random points
            of the ball).
    """

    name: str
    steps: int = 100
    restarts: int = 1
    target_classes: int = 9
    targeted_restarts: int | None = None
    near_miss_runs: int = 0
    queries: int = 5000
    square_restarts: int = 1
    square_rescale: bool = True
    black_box_again: int = 0
    masked_queries: int = 0
    masked_restarts: int = 1
    rotations: int = 31
    translations: int = 5
    affine_lambdas: int = 5
    affine_steps: int = 100
    fab: bool = False
    fab_target_classes: int | None = None
    fab_steps: int | None = None
    l1_restarts: int | None = None
    l1_target_classes: int | None = None
    eot_samples: int = 20
    transfer: bool = True
    transfer_distill_steps: int = 300
    transfer_samples: int = 8

    @property
    def fab_classes(self) -> int:
        """FAB-T's number of target classes (``fab_target_classes`` or ``target_classes``)."""
        return self.target_classes if self.fab_target_classes is None else self.fab_target_classes

    @property
    def fab_iterations(self) -> int:
        """FAB-T's iterations per target (``fab_steps`` or ``steps``)."""
        return self.steps if self.fab_steps is None else self.fab_steps

    def __post_init__(self) -> None:
        again = self.black_box_again
        if not isinstance(again, int) or again < 0:
            raise ValueError(
                f"Invalid black_box_again: {again!r} (must be an integer >= 0, the most runs "
                "of the black-box attack after its first)"
            )
        if self.targeted_restarts is not None:
            check_positive_int("targeted_restarts", self.targeted_restarts)
        check_nonneg_int("near_miss_runs", self.near_miss_runs)
        check_nonneg_int("masked_queries", self.masked_queries)
        check_nonneg_int("masked_restarts", self.masked_restarts)
        if self.masked_queries and not self.masked_restarts:
            raise ValueError("Invalid masked_restarts: 0 (must be >= 1 when masked_queries > 0)")

    def with_options(self, **changes: Any) -> Preset:
        """A copy with some budgets changed, e.g. ``get("standard").with_options(steps=20)``."""
        return dataclasses.replace(self, **changes)

    def candidates(self, num_classes: int) -> list[AttackSpec]:
        """Every attack of the preset, cheapest first; each threat keeps those supporting it
        (and those whose ``kinds`` admit it)."""
        runs = {"steps": self.steps, "restarts": self.restarts}
        targeted_runs = {
            "steps": self.steps,
            "restarts": self.restarts if self.targeted_restarts is None else self.targeted_restarts,
        }
        if self.near_miss_runs:
            targeted_runs["near_miss_runs"] = self.near_miss_runs
        target = min(self.target_classes, num_classes - 1)
        # AutoAttack's ℓ1 version runs APGD-CE with 5 restarts and APGD-T over 5 classes (the
        # standard preset: 9, docs/strength.md).
        l1_runs = {
            "steps": self.steps,
            "restarts": self.restarts if self.l1_restarts is None else self.l1_restarts,
        }
        l1_target = (
            self.target_classes if self.l1_target_classes is None else self.l1_target_classes
        )
        l1_target = min(l1_target, num_classes - 1)
        dense, sparse = (LinfBall.name, L2Ball.name), (L1Ball.name,)
        specs = [
            AttackSpec("apgd-ce", "apgd", {"loss": "ce", **runs}, kinds=dense),
            AttackSpec("apgd-ce", "apgd", {"loss": "ce", **l1_runs}, kinds=sparse),
        ]
        # The targeted DLR loss needs at least 4 classes, the untargeted one 3.
        if self.target_classes > 0 and num_classes >= 4:
            specs += [
                AttackSpec(
                    "apgd-t", "apgd-t", {**targeted_runs, "target_classes": target}, kinds=dense
                ),
                AttackSpec(
                    "apgd-t", "apgd-t", {**targeted_runs, "target_classes": l1_target}, kinds=sparse
                ),
            ]
        elif num_classes >= 3:
            specs.append(AttackSpec("apgd-dlr", "apgd", {"loss": "dlr", **runs}))
        if self.fab and self.fab_classes > 0:
            fab = {
                "steps": self.fab_iterations,
                "target_classes": min(self.fab_classes, num_classes - 1),
            }
            specs.append(AttackSpec("fab-t", "fab-t", fab))
        # The black-box member: Square for ℓ∞ and ℓ2, sparse random search for ℓ1.
        if self.queries > 0:
            budget = {"steps": self.queries, "restarts": self.square_restarts}
            for label in ("square", "sparse-rs"):
                options = dict(budget)
                if label == "square" and not self.square_rescale:
                    options["rescale_schedule"] = False
                specs.append(AttackSpec(label, label, options, white_box=False))
                previous = label
                for run in range(2, int(self.black_box_again) + 2):
                    again = f"{label}-{run}"
                    specs.append(
                        AttackSpec(again, label, options, white_box=False, follows=previous)
                    )
                    previous = again
                if self.masked_queries > 0:
                    # Square's schedule stretched to the longer budget (its default).
                    longer = {"steps": self.masked_queries, "restarts": self.masked_restarts}
                    specs.append(
                        AttackSpec(
                            f"{label}-masked", label, longer, white_box=False, masked_only=True
                        )
                    )
        grid = {"rotations": self.rotations, "translations": self.translations}
        specs.append(AttackSpec("spatial-grid", "spatial-grid", grid, white_box=False))
        affine = {"lambdas": self.affine_lambdas, "steps": self.affine_steps}
        specs.append(AttackSpec("affine-ce", "affine", {**affine, "loss": "ce"}))
        # APGD-T at every λ, then the members' black-box searches at λ = 0 and 1.
        if self.target_classes > 0 and num_classes >= 4:
            targeted = {**affine, "target_classes": target, "queries": self.queries}
            specs.append(AttackSpec("affine-t", "affine", targeted))
        elif num_classes >= 3:
            specs.append(
                AttackSpec(
                    "affine-dlr", "affine", {**affine, "loss": "dlr", "queries": self.queries}
                )
            )
        return specs

    def transfer_spec(self, surrogate: Any = None) -> AttackSpec | None:
        """The fallback for masked gradients (None when ``transfer`` is off): PGD on a surrogate
        distilled from the model's outputs, judged on the model, run by the evaluation after
        the white-box attacks on the examples whose input gradient is zero or non-finite.

        With a ``surrogate`` model (the user's undefended twin of the model, or any model that
        imitates it), PGD on that model instead, on *every* example still robust after the
        white-box attacks (a transfer from a given twin costs one attack on it and can only
        lower the number), whether or not ``transfer`` is on.
        """
        if surrogate is not None:
            options = {"steps": self.steps, "surrogate": surrogate}
            return AttackSpec("transfer-surrogate", "transfer", options, white_box=False)
        if not self.transfer:
            return None
        options = {
            "steps": self.steps,
            "distill_steps": self.transfer_distill_steps,
            "distill_samples": self.transfer_samples,
        }
        return AttackSpec("transfer", "transfer", options, white_box=False, masked_only=True)

    def attacks_for(self, threat: Threat, num_classes: int) -> list[AttackSpec]:
        """The ensemble for one (non-union) threat model, cheapest first: the preset's attacks
        that support it."""
        if threat.members() != (threat,):
            raise ValueError(
                f"No attack ensemble for threat {threat}: list the members of a union as "
                "separate threats (the union of all threats is always reported)"
            )
        specs = [s for s in self.candidates(num_classes) if s.applies_to(threat)]
        if not specs:
            raise ValueError(f"No attack of the {self.name!r} preset supports threat {threat}")
        return specs

    def more_steps_attack(self, threat: Threat, num_classes: int) -> AttackSpec | None:
        """The attack the ``more-steps-lower-accuracy`` check reruns under ``threat``: the
        strongest white-box attack of the preset's ensemble with twice the steps
        (:func:`more_steps_spec`)."""
        return more_steps_spec(self.attacks_for(threat, num_classes))


def with_eot(ensemble: list[AttackSpec], samples: int) -> list[AttackSpec]:
    """The ensemble with ``eot_samples=samples`` on every attack that averages gradients over
    calls of the model (APGD, APGD-T, PGD); the others unchanged."""
    out = []
    for spec in ensemble:
        fields = {f.name for f in dataclasses.fields(attacks.get(spec.attack))}
        if "eot_samples" in fields and samples > 1:
            spec = dataclasses.replace(spec, options={**spec.options, "eot_samples": samples})
        out.append(spec)
    return out


#: Labels of the white-box attacks the more-steps check prefers, strongest first.
STRONGEST_WHITE_BOX = ("apgd-t", "affine-t", "apgd-dlr", "affine-dlr")


def more_steps_spec(ensemble: list[AttackSpec]) -> AttackSpec | None:
    """The spec the ``more-steps-lower-accuracy`` check reruns: the ensemble's strongest
    white-box attack with twice the steps and no black-box part.

    APGD-T (APGD-ℓ1 with adaptive sparsity under ℓ1), else the targeted affine attack, else
    the DLR variants, else the last white-box attack with a ``steps`` option; FAB-T, though
    later in the ensemble, is not it (its steps per target converge early; AutoAttack's
    strongest single attack is APGD-T). None when no white-box attack has steps (spatial).
    """
    white = [s for s in ensemble if s.white_box and "steps" in s.options]
    if not white:
        return None
    by_label = {s.label: s for s in white}
    spec = next((by_label[k] for k in STRONGEST_WHITE_BOX if k in by_label), white[-1])
    options = {**spec.options, "steps": 2 * int(spec.options["steps"])}
    if "queries" in options:
        options["queries"] = 0  # the check is about the white-box attack converging
    return dataclasses.replace(spec, options=options)


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
        eot_samples=10,
        transfer_distill_steps=100,
    ),
    "standard": Preset(
        "standard",
        fab=True,
        l1_restarts=5,
        l1_target_classes=9,
        black_box_again=3,
        square_rescale=False,
        targeted_restarts=2,
        near_miss_runs=3,
        masked_queries=20000,
        masked_restarts=3,
    ),
    "thorough": Preset(
        "thorough",
        fab=True,
        l1_restarts=5,
        l1_target_classes=9,
        steps=200,
        restarts=3,
        queries=10000,
        square_restarts=2,
        black_box_again=3,
        near_miss_runs=3,
        masked_queries=40000,
        masked_restarts=3,
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
