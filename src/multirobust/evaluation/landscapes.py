"""The landscape pass of ``evaluate(landscapes=K)``: a grid search of the ball around examples
the attacks left robust, counted in the numbers when it breaks them.

For each ℓp threat the first ``K`` still-robust examples get an input surface on the plane of the
threat's steepest-ascent direction and a random orthogonal one, out to the ball's boundary
(:func:`multirobust.landscape.landscape_check`, radius 1). A grid point inside the ball that the
model misclassifies (re-checked with ``threat.contains`` and fresh forward passes) breaks the
example: it is counted as broken by ``"landscape"`` under that threat (and so in the union), and
the ``landscape-beats-attacks`` check fires with the examples. The grid does not need the
model's gradient to be right (a zero or non-finite one falls back to finite differences), which
is what makes it an independent adversary on models that mask gradients (Athalye et al. 2018).

The report gains the landscape section (:func:`multirobust.landscape.render_section`: the masking
evidence per threat, roughness, and the figures of up to 4 examples per threat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..landscape import landscape_check, render_section
from ..landscape.input_space import InputSurface
from ..landscape.masking import CHECK_NAME, MaskingEvidence
from ..threats import Threat
from .report import Check, EvaluationReport

__all__ = ["LANDSCAPE_ATTACK", "LandscapePass", "landscape_pass", "apply_landscape_pass"]

#: The ``broken_by`` label of examples the grid broke.
LANDSCAPE_ATTACK = "landscape"


@dataclass
class LandscapePass:
    """What the landscape pass found, ready to apply to a report on every rank.

    Attributes:
        broken: threat text -> [(example index, norm of the grid's perturbation)].
        checks: the ``landscape-beats-attacks`` checks that fired.
        ran: the threats whose ball the grid searched (for the report's list of checks run).
        html: the report's landscape section ("" when no threat had a robust example).
        summary: threat text -> the masking evidence as JSON (``MaskingEvidence.to_dict``).
    """

    broken: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    html: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


def landscape_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: list[Threat],
    report: EvaluationReport,
    *,
    examples: int,
    points: int = 21,
    seed: int = 0,
    batch_size: int = 1024,
    num_classes: int | None = None,
    progress: bool = False,
) -> LandscapePass:
    """Search the ball of each ℓp threat around its first ``examples`` still-robust examples.

    Args:
        model: the model the attacks ran on (eval mode, frozen: inside ``attack_mode``).
        x, y: every evaluated example (N, C, H, W) and label (N,).
        threats: the evaluated threats; only the ℓp balls (``additive``) with ε > 0 have a grid.
        report: the assembled report (read only here; see :func:`apply_landscape_pass`).
        examples: how many still-robust examples per threat (the first ones), ≥ 1.
        points: grid points per axis (G² forward passes per example).
        seed: seed of the random direction.
        batch_size: grid points per forward pass.
        num_classes: for the class-map colours.
        progress: show the grid's progress bar.

    Returns:
        A :class:`LandscapePass`.
    """
    found = LandscapePass()
    surfaces: list[InputSurface] = []
    evidence: list[MaskingEvidence | None] = []
    rows_of: list[list[int]] = []
    for t in threats:
        if not t.additive or t.is_trivial:
            continue
        key = str(t)
        rows = [i for i, r in enumerate(report.threats[key].robust) if r][:examples]
        if not rows:
            continue
        idx = torch.tensor(rows, device=x.device)
        ev: MaskingEvidence = landscape_check(
            model,
            x[idx],
            y[idx],
            t,
            indices=rows,
            points=points,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        assert ev.surface is not None  # landscape_check keeps the surface it read
        surfaces.append(ev.surface)
        found.ran.append(key)
        evidence.append(ev)
        rows_of.append(rows)
        found.summary[key] = ev.to_dict()
        if ev.broken_index:
            x_ref = torch.stack([x[i] for i in ev.broken_index])
            x_broken = torch.as_tensor(ev.x_broken).to(device=x.device, dtype=x.dtype)
            norms = t.norm(x_broken - x_ref).tolist()
            found.broken[key] = list(zip(ev.broken_index, norms, strict=True))
        fields = ev.check_fields()
        if fields is not None:
            found.checks.append(Check(**fields))
    if surfaces:
        found.html = render_section(
            surfaces,
            evidence=evidence,
            indices=rows_of,
            num_classes=num_classes,
            heading="Loss landscapes (examples the attacks left robust)",
        )
    return found


def apply_landscape_pass(report: EvaluationReport, found: LandscapePass) -> None:
    """Count the grid's breaks in ``report`` (per threat and union), add its checks and section."""
    for key, broken in found.broken.items():
        outcome = report.threats[key]
        if LANDSCAPE_ATTACK not in outcome.attacks:
            outcome.attacks.append(LANDSCAPE_ATTACK)
        for i, norm in broken:
            outcome.robust[i] = False
            outcome.broken_by[i] = LANDSCAPE_ATTACK
            outcome.norm[i] = float(norm)
        report.robust_accuracy[key] = outcome.robust_accuracy
    report.union_accuracy = sum(report.union_robust) / max(report.n, 1)
    report.checks += found.checks
    report.checks_run += [{"name": CHECK_NAME, "threat": key} for key in found.ran]
    report.landscapes = {"html": found.html, "evidence": found.summary}
