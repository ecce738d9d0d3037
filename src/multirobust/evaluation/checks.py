"""Checks for evaluations that look stronger than they are (Carlini et al. 2019, §4–5).

Each check measures something and, when it fires, returns a :class:`Check` whose evidence holds
the measurement: gradients that are zero, vanishing, non-finite or absent; outputs that change
between identical calls; outputs that are probabilities; a black-box attack beating the
white-box ones; accuracy not reaching ~0 at a large ε; more steps still lowering accuracy;
results outside their threat model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..threats import LpBall
from .landscapes import LANDSCAPE_ATTACK
from .report import CATALOGUE as CATALOGUE  # the names of the checks below
from .report import Check

if TYPE_CHECKING:
    from .presets import AttackSpec
    from .report import ThreatOutcome

#: Gradient norms below this (per example, ℓ2 over the input) count as vanishing.
VANISHING = 1e-10
#: Fraction of probe examples with zero/vanishing gradients above which the check fires.
ZERO_FRACTION = 0.1
#: The checks that say the model's input gradient cannot be trusted: the evaluation answers
#: them with attacks that do without it (:func:`masked_fallback_check`).
MASKED_GRADIENT_CHECKS = ("no-gradient-path", "zero-gradients", "non-finite-gradients")


class LogProbabilities(nn.Module):
    """Wraps a model that outputs probabilities so that attacks see ``log p`` as logits.

    ``log p`` differs from the logits behind a softmax by a per-example constant, so the
    classifier and every margin are unchanged while cross-entropy and DLR work again.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x)
        return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


@dataclass
class Probe:
    """What a look at the model on a few clean inputs found, before any attack."""

    num_classes: int
    probabilities: bool
    gradients_available: bool
    checks: list[Check]
    #: Outputs changed between two identical calls (the ``randomised-model`` test).
    randomised: bool = False

    @property
    def ran(self) -> list[str]:
        """The names of the checks the probe ran (the gradient ones need a gradient path)."""
        names = ["randomised-model", "probability-outputs", "no-gradient-path"]
        if self.gradients_available:
            names += ["non-finite-gradients", "zero-gradients"]
        return names


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """Rows non-negative and summing to 1 (to 1e-3): softmax outputs, not logits."""
    return bool((logits >= 0).all()) and bool(((logits.sum(1) - 1).abs() < 1e-3).all())


def two_calls(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The model's outputs for two identical calls on ``x`` (no gradients) and whether they
    differ anywhere: the ``randomised-model`` test, shared by the evaluation and the curves."""
    with torch.no_grad():
        first = model(x)
        second = model(x)
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        return first, second, False
    return first, second, bool((first != second).any())


def probe_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Probe:
    """Run the pre-attack checks on a small batch ``x`` (N, ...) with labels ``y``.

    Fires ``probability-outputs``, ``randomised-model``, ``no-gradient-path``,
    ``zero-gradients`` and ``non-finite-gradients``.

    Returns:
        A :class:`Probe`; when ``probabilities`` is True the caller must attack
        :class:`LogProbabilities` (model) instead of the model.
    """
    checks: list[Check] = []
    first, second, randomised = two_calls(model, x)
    if not isinstance(first, torch.Tensor) or first.dim() != 2 or first.shape[0] != x.shape[0]:
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise ValueError(f"The model must return (N, C) logits, got {shape}")
    if not torch.isfinite(first).all():
        raise ValueError("The model returned NaN or infinite outputs on clean inputs")
    num_classes = first.shape[1]
    diff = float((first - second).abs().max())
    if randomised:
        agree = float((first.argmax(1) == second.argmax(1)).float().mean())
        checks.append(
            Check(
                "randomised-model",
                "The model's outputs change between identical calls: it is randomised, so "
                "single-sample gradients and predictions are noisy. Attack the expectation over "
                "transformations (EOT: average gradients over many calls) before trusting "
                "these numbers; the ensemble here does not average.",
                {"max_abs_difference": diff, "same_prediction_fraction": agree},
            )
        )
    probabilities = looks_like_probabilities(first)
    attacked = model
    if probabilities:
        checks.append(
            Check(
                "probability-outputs",
                "The model returns probabilities (non-negative rows summing to 1), not logits: "
                "a saturated softmax masks gradients. Attacks were run on log(p), which has "
                "the same predictions and margins; remove the final softmax from the model.",
                {
                    "min_output": float(first.min()),
                    "max_row_sum_error": float((first.sum(1) - 1).abs().max()),
                },
            )
        )
        attacked = LogProbabilities(model)
    correct = first.argmax(1) == y
    rows = correct.nonzero().flatten()
    if rows.numel() == 0:
        rows = torch.arange(x.shape[0], device=x.device)
    gradients_available = True
    xs = x[rows].detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = attacked(xs)
            loss = F.cross_entropy(logits, y[rows], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xs)
    except RuntimeError as err:
        gradients_available = False
        checks.append(
            Check(
                "no-gradient-path",
                "The loss has no gradient with respect to the input (the graph is cut, e.g. by "
                "detach() or a non-differentiable step). White-box attacks cannot run; the "
                "numbers rest on black-box attacks only and are an upper bound. Use BPDA or "
                "a differentiable approximation of the blocking layer.",
                {"error": str(err).splitlines()[0], "examples": int(rows.numel())},
            )
        )
        return Probe(num_classes, probabilities, gradients_available, checks, randomised)
    norms = grad.flatten(1).norm(dim=1)
    finite = torch.isfinite(grad.flatten(1)).all(1)
    n = int(rows.numel())
    zero = int((norms == 0).sum())
    vanishing = int(((norms > 0) & (norms < VANISHING)).sum())
    if int((~finite).sum()):
        checks.append(
            Check(
                "non-finite-gradients",
                "Input gradients contain NaN or infinity: gradient-based attacks break down and "
                "their failure is not robustness.",
                {"examples": n, "non_finite": int((~finite).sum())},
            )
        )
    if (zero + vanishing) / n > ZERO_FRACTION:
        fin = norms[finite]
        checks.append(
            Check(
                "zero-gradients",
                "The cross-entropy gradient with respect to the input is zero or vanishing for "
                "many clean examples (saturated softmax, quantisation or a gradient-blocking "
                "layer): gradient masking. Rely on scale-invariant losses (DLR), black-box "
                "attacks and BPDA, not on cross-entropy PGD.",
                {
                    "examples": n,
                    "zero": zero,
                    "vanishing": vanishing,
                    "threshold": VANISHING,
                    "median_norm": float(fin.median()) if fin.numel() else math.nan,
                },
            )
        )
    return Probe(num_classes, probabilities, gradients_available, checks, randomised)


def eot_check(check: Check, samples: int) -> Check:
    """The ``randomised-model`` check, saying what the evaluation did about it: EOT with
    ``samples`` gradient samples and verdicts by the majority of ``samples`` predictions
    (``samples`` = 1: nothing, as the caller asked)."""
    if samples <= 1:
        return check
    return Check(
        check.name,
        "The model's outputs change between identical calls: it is randomised. The evaluation "
        f"switched to expectation over transformation (EOT): the white-box attacks averaged "
        f"gradients over {samples} calls per step, and every verdict (clean and adversarial) is "
        f"the majority of {samples} predictions, so the numbers are those of the model's vote "
        "(attacks/eot.py, rule 'majority').",
        {**check.evidence, "eot_samples": samples, "verdict": f"majority of {samples} calls"},
        check.threat,
    )


def masked_fallback_check(
    check: Check,
    outcomes: Mapping[str, ThreatOutcome],
    ensembles: Mapping[str, Sequence[AttackSpec]],
    grid: Collection[str] = (),
) -> Check:
    """A masked-gradient check (:data:`MASKED_GRADIENT_CHECKS`) saying what the evaluation did
    about it: the attacks that do not use the model's gradient (the black-box searches, the
    transfer attack, the longer search run only where the gradient is masked, the landscape
    grid, run under the threats in ``grid``) and, per threat, how many examples each broke
    first."""
    broke: dict[str, dict[str, int]] = {}
    masked_only: dict[str, list[str]] = {}
    for key, outcome in outcomes.items():
        specs = ensembles.get(key, [])
        free = [s.label for s in specs if not s.white_box]
        if key in grid:
            free.append(LANDSCAPE_ATTACK)
        if not free:
            continue
        counts = Counter(b for b in outcome.broken_by if b in free)
        broke[key] = {label: counts.get(label, 0) for label in free}
        masked_only[key] = [s.label for s in specs if s.masked_only]
    if not broke:
        done = (
            " No attack that does without the model's gradient was run (the attacks given "
            "all use it), so the numbers rest on gradients the model hides: add a black-box "
            "or transfer attack."
        )
    else:
        per_threat = "; ".join(
            f"{key}: " + ", ".join(f"{label} {n}" for label, n in counts.items())
            for key, counts in broke.items()
        )
        extra = sorted({label for labels in masked_only.values() for label in labels})
        only = (
            f" On the examples whose gradient is masked it also ran {', '.join(extra)}."
            if extra
            else ""
        )
        searched = (
            " It searched a grid of each ball around the examples still robust (the landscape "
            "pass)."
            if grid
            else ""
        )
        done = (
            " What the evaluation did: it ran attacks that do not use the model's gradient."
            f"{only}{searched} Examples each of them broke first: {per_threat}. The numbers are "
            "still an upper bound: an adversary who knows the trick (BPDA, the undefended twin: "
            "pass it as surrogate=, --surrogate) may break more."
        )
    return Check(
        check.name,
        check.message + done,
        {**check.evidence, "gradient_free_broke": broke, "masked_only_attacks": masked_only},
        check.threat,
    )


def masked_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the cross-entropy input gradient at ``x`` is zero, vanishing (ℓ2 norm below
    :data:`VANISHING`) or non-finite; all True when the loss has no gradient path at all."""
    xs = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(xs), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xs)
    except RuntimeError:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    flat = grad.flatten(1)
    return ~torch.isfinite(flat).all(1) | (flat.norm(dim=1) < VANISHING)


def black_box_check(
    threat: str,
    broken_by: list[str | None],
    white_box: list[str],
    black_box: list[str],
    clean_correct: int,
    threshold: float = 0.01,
) -> Check | None:
    """``black-box-beats-white-box``: black-box attacks broke examples every white-box one missed.

    Black-box attacks run after the white-box ones, so every example they break is one the
    gradient-based attacks could not break. Fires above ``threshold`` of the clean-correct
    examples (and at least one).
    """
    if not white_box or not black_box:
        return None
    counts = {b: sum(1 for a in broken_by if a == b) for b in black_box}
    total = sum(counts.values())
    if total == 0 or total <= threshold * max(clean_correct, 1):
        return None
    return Check(
        "black-box-beats-white-box",
        "A black-box attack broke examples that every white-box attack failed on: the "
        "gradients are not informative (gradient masking), so white-box-only numbers for this "
        "model would overstate its robustness.",
        {
            "broken_by_black_box": counts,
            "white_box_attacks": white_box,
            "clean_correct": clean_correct,
            "fraction": total / max(clean_correct, 1),
        },
        threat,
    )


def large_eps_threat(ball: LpBall, dim: int) -> LpBall:
    """A ball of the same norm in which any classifier on [0, 1]^dim should be breakable: half
    the box's diameter, which reaches the grey image (every pixel 0.5) from any input, in every
    norm (ℓ∞ 0.5, ℓ2 ½√dim, ℓ1 ½·dim)."""
    return ball.with_eps(round(0.5 * ball.box_diameter(dim), 3))


def large_eps_check(
    threat: str, robust: int, total: int, attack: str, threshold: float = 0.1
) -> Check | None:
    """``large-eps-not-zero``: robust accuracy at a huge ε stays above ``threshold``."""
    if total == 0 or robust / total <= threshold:
        return None
    return Check(
        "large-eps-not-zero",
        "Robust accuracy does not fall to about 0 at a very large ε, where the adversary can "
        "reach an uninformative image: the attack is failing, not the model resisting. "
        "Suspect gradient masking or a bug in the evaluation.",
        {"attack": attack, "robust": robust, "examples": total, "accuracy": robust / total},
        threat,
    )


def more_steps_check(
    threat: str, attack: str, steps: int, broken: int, total: int, options: dict[str, Any]
) -> Check | None:
    """``more-steps-lower-accuracy``: 2× the steps broke examples the ensemble counted robust."""
    if broken == 0:
        return None
    return Check(
        "more-steps-lower-accuracy",
        "Running the strongest white-box attack with twice the steps broke examples counted "
        "robust: the attack had not converged, so the reported robust accuracy is an upper "
        "bound. Use the 'thorough' preset or more steps and restarts.",
        {
            "attack": attack,
            "steps": steps,
            "options": options,
            "subsample": total,
            "newly_broken": broken,
            "accuracy_drop_on_subsample": broken / max(total, 1),
        },
        threat,
    )


def outside_check(threat: str, counts: dict[str, int]) -> Check | None:
    """``outside-threat-model``: some attack results were not inside the threat model."""
    total = sum(counts.values())
    if total == 0:
        return None
    return Check(
        "outside-threat-model",
        "Some attack results were outside the threat model and were not counted: an attack or "
        "the threat model has a bug.",
        {"rejected_by_attack": counts},
        threat,
    )
