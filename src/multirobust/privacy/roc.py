"""ROC curves of membership scores, TPR at low FPR, and thresholds chosen on shadow models."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Roc", "roc_curve", "threshold_at_fpr"]


@dataclass(frozen=True)
class Roc:
    """A ROC curve: the attack's (FPR, TPR) at every threshold, from strictest to loosest.

    Attributes:
        fpr: false-positive rates, ascending, from 0 to 1.
        tpr: true-positive rates at the same thresholds.
        thresholds: the score thresholds (predict "member" when score >= threshold).
        members: number of members scored.
        non_members: number of non-members scored.
    """

    fpr: torch.Tensor
    tpr: torch.Tensor
    thresholds: torch.Tensor
    members: int
    non_members: int

    @property
    def auc(self) -> float:
        """Area under the curve (trapezoids)."""
        return float(torch.trapezoid(self.tpr, self.fpr))

    @property
    def accuracy(self) -> float:
        """Best balanced accuracy over thresholds: ``max (1 − FPR + TPR) / 2``."""
        return float(((1 - self.fpr + self.tpr) / 2).max())

    def tpr_at(self, fpr: float) -> float:
        """The highest TPR at a threshold whose FPR is at most ``fpr`` (an oracle threshold:
        picked with the target's own membership labels; how papers report it)."""
        ok = self.fpr <= fpr + 1e-12
        return float(self.tpr[ok].max()) if bool(ok.any()) else 0.0


def roc_curve(scores: torch.Tensor, members: torch.Tensor) -> Roc:
    """The ROC curve of ``scores`` (higher: more likely a member) against the truth.

    Ties are kept together: all examples with the same score switch at the same threshold.

    Shape: scores ``(N,)``, members ``(N,)`` bool.

    Raises:
        ValueError: without both members and non-members, or with non-finite scores.
    """
    s = scores.double().flatten()
    m = members.bool().flatten()
    if len(s) != len(m):
        raise ValueError(f"{len(s)} scores but {len(m)} membership labels (must match)")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("Membership scores must be finite")
    pos, neg = int(m.sum()), int((~m).sum())
    if pos == 0 or neg == 0:
        raise ValueError(f"A ROC curve needs members and non-members (got {pos} and {neg})")
    order = torch.argsort(s, descending=True, stable=True)
    s, m = s[order], m[order]
    tp = torch.cumsum(m.double(), 0)
    fp = torch.cumsum((~m).double(), 0)
    # The last position of each run of equal scores: thresholds between distinct values.
    last = torch.ones(len(s), dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    return Roc(
        fpr=torch.cat([zero, fp[last] / neg]),
        tpr=torch.cat([zero, tp[last] / pos]),
        thresholds=torch.cat([torch.tensor([float("inf")], dtype=torch.float64), s[last]]),
        members=pos,
        non_members=neg,
    )


def threshold_at_fpr(non_member_scores: torch.Tensor, fpr: float) -> float:
    """The smallest threshold at which at most a fraction ``fpr`` of these non-members score
    at or above it: the threshold an attacker calibrates on shadow models' non-members.

    Returns:
        ``τ`` such that ``mean(score >= τ) <= fpr`` over ``non_member_scores``; predicting
        "member" when ``score >= τ``.
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"Invalid fpr: {fpr!r} (must be in (0, 1))")
    s = non_member_scores.double().flatten().sort(descending=True).values
    if len(s) == 0:
        raise ValueError("No non-member scores to calibrate a threshold on")
    k = int(fpr * len(s))  # at most k non-members may be at or above τ
    if k >= len(s):
        return float(s[-1])
    # Just above the (k+1)-th largest score: the k largest pass (ties with it do not).
    return float(torch.nextafter(s[k], torch.tensor(float("inf"), dtype=torch.float64)))
