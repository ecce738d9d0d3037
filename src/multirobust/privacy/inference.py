"""Membership inference against one target model, with thresholds calibrated on shadow models.

Given the target's logits on a pool of examples, the shadow models' logits on the same pool and
which shadows trained on which example, every attack scores every example; the report gives
the target's ROC curve (threshold-free) and, at each requested false-positive rate, the TPR
reached with a threshold chosen from shadow models only: each shadow in turn plays the target
(its statistics against the other shadows), its non-members' scores are pooled, and the
threshold is the one that lets through that fraction of them. The target's own members are
never used to choose anything; the FPR the threshold reaches on the target is reported beside
the TPR, since it need not equal the one asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .lira import lira_offline, lira_online
from .roc import Roc, roc_curve, threshold_at_fpr
from .scores import logit_confidence, loss_score

__all__ = ["METHODS", "AttackOutcome", "MembershipResult", "membership_inference"]

METHODS = ("loss", "lira-offline", "lira-online")


@dataclass(frozen=True, eq=False)
class AttackOutcome:
    """One attack against the target.

    Attributes:
        method: ``loss`` (Yeom et al. 2018), ``lira-offline`` or ``lira-online``.
        scores: the target's per-example scores (larger: "member").
        roc: the target's ROC curve.
        operating_points: per requested FPR: the shadow-calibrated threshold, the TPR and the
            FPR it reaches on the target, and the oracle TPR at that FPR (read off the ROC).
    """

    method: str
    scores: torch.Tensor
    roc: Roc
    operating_points: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the ROC thinned to at most ~400 points, log-spaced in FPR)."""
        fpr, tpr = _thin(self.roc.fpr, self.roc.tpr)
        return {
            "method": self.method,
            "auc": self.roc.auc,
            "balanced_accuracy": self.roc.accuracy,
            "operating_points": self.operating_points,
            "roc": {"fpr": fpr, "tpr": tpr},
        }


def _thin(
    fpr: torch.Tensor, tpr: torch.Tensor, points: int = 400
) -> tuple[list[float], list[float]]:
    """The ROC at log-spaced FPRs (the upper envelope there), for JSON and plots."""
    grid = torch.logspace(-6, 0, points, dtype=torch.float64)
    keep = torch.searchsorted(fpr, grid, right=True) - 1
    keep = torch.unique(keep.clamp(0, len(fpr) - 1))
    return [float(v) for v in fpr[keep]], [float(v) for v in tpr[keep]]


@dataclass(frozen=True, eq=False)
class MembershipResult:
    """Every attack against one target.

    Attributes:
        outcomes: per method, its :class:`AttackOutcome`.
        members: target members scored.
        non_members: target non-members scored.
        shadows: shadow models used.
        fixed_variance: LiRA's variance choice.
    """

    outcomes: dict[str, AttackOutcome]
    members: int
    non_members: int
    shadows: int
    fixed_variance: bool

    def tpr(self, method: str, fpr: float) -> float:
        """The shadow-calibrated TPR of ``method`` at the requested ``fpr``."""
        for point in self.outcomes[method].operating_points:
            if abs(point["fpr"] - fpr) < 1e-15:
                return point["tpr"]
        raise KeyError(f"No operating point at FPR {fpr} for {method!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "members": self.members,
            "non_members": self.non_members,
            "shadows": self.shadows,
            "fixed_variance": self.fixed_variance,
            "attacks": {k: v.to_dict() for k, v in self.outcomes.items()},
        }


def _scores(
    method: str,
    target_phi: torch.Tensor,
    target_loss: torch.Tensor,
    shadow_phi: torch.Tensor,
    keep: torch.Tensor,
    fixed_variance: bool,
) -> torch.Tensor:
    if method == "loss":
        return target_loss
    if method == "lira-online":
        return lira_online(target_phi, shadow_phi, keep, fixed_variance=fixed_variance)
    return lira_offline(target_phi, shadow_phi, keep, fixed_variance=fixed_variance)


def membership_inference(
    target_logits: torch.Tensor,
    labels: torch.Tensor,
    members: torch.Tensor,
    shadow_logits: torch.Tensor,
    keep: torch.Tensor,
    *,
    methods: tuple[str, ...] | list[str] = METHODS,
    fprs: tuple[float, ...] | list[float] = (1e-3, 1e-4),
    fixed_variance: bool = True,
) -> MembershipResult:
    """Run the membership attacks against a target and calibrate thresholds on shadows.

    Args:
        target_logits: the target model's logits on the pool.
        labels: the pool's labels.
        members: True where the target trained on the example (used only to score the
            attack, never to choose a threshold).
        shadow_logits: every shadow model's logits on the pool.
        keep: True where the shadow trained on the example.
        methods: attacks to run (``loss``, ``lira-offline``, ``lira-online``).
        fprs: false-positive rates to report TPRs at, each in (0, 1).
        fixed_variance: LiRA with global variances (else per example).

    Returns:
        A :class:`MembershipResult`.

    Shape: target_logits ``(N, K)``, labels and members ``(N,)``, shadow_logits
    ``(M, N, K)``, keep ``(M, N)``.

    Raises:
        ValueError: unknown methods, FPRs outside (0, 1), mismatched shapes, fewer than 2
            shadow models.
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"Unknown membership attack {m!r} (available: {', '.join(METHODS)})")
    for a in fprs:
        if not 0.0 < a < 1.0:
            raise ValueError(f"Invalid fpr: {a!r} (must be in (0, 1))")
    n_shadows = shadow_logits.shape[0]
    if shadow_logits.dim() != 3 or shadow_logits.shape[1:] != target_logits.shape:
        raise ValueError(
            f"shadow logits {tuple(shadow_logits.shape)} must be (shadows,) + target logits "
            f"{tuple(target_logits.shape)}"
        )
    if keep.shape != shadow_logits.shape[:2]:
        raise ValueError(f"keep {tuple(keep.shape)} must be {tuple(shadow_logits.shape[:2])}")
    if n_shadows < 2:
        raise ValueError(f"Need at least 2 shadow models, got {n_shadows}")
    keep = keep.bool()
    members = members.bool()
    target_phi = logit_confidence(target_logits, labels)
    target_loss = loss_score(target_logits, labels)
    shadow_phi = logit_confidence(shadow_logits, labels.expand(n_shadows, -1))
    shadow_loss = loss_score(shadow_logits, labels.expand(n_shadows, -1))
    outcomes: dict[str, AttackOutcome] = {}
    for method in methods:
        scores = _scores(method, target_phi, target_loss, shadow_phi, keep, fixed_variance)
        # Each shadow plays the target against the others; its non-members calibrate τ.
        pooled = []
        for j in range(n_shadows):
            rest = [i for i in range(n_shadows) if i != j]
            sj = _scores(
                method,
                shadow_phi[j],
                shadow_loss[j],
                shadow_phi[rest],
                keep[rest],
                fixed_variance,
            )
            pooled.append(sj[~keep[j]])
        calib = torch.cat(pooled)
        roc = roc_curve(scores, members)
        points = []
        for a in fprs:
            tau = threshold_at_fpr(calib, a)
            hit = scores >= tau
            points.append(
                {
                    "fpr": float(a),
                    "threshold": tau,
                    "tpr": float(hit[members].double().mean()),
                    "achieved_fpr": float(hit[~members].double().mean()),
                    "oracle_tpr": roc.tpr_at(a),
                    "calibration_non_members": len(calib),
                }
            )
        outcomes[method] = AttackOutcome(
            method=method, scores=scores, roc=roc, operating_points=points
        )
    return MembershipResult(
        outcomes=outcomes,
        members=int(members.sum()),
        non_members=int((~members).sum()),
        shadows=n_shadows,
        fixed_variance=fixed_variance,
    )
