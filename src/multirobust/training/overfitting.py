"""Held-out robust accuracy, and detection of catastrophic overfitting in fast training."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..attacks import pgd_perturb
from .mode import attack_mode
from .objectives import ThreatLike, as_lp_balls

__all__ = ["OverfittingDetector", "robust_accuracy"]


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 20,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Clean and PGD robust accuracy of ``model`` on a held-out set, per threat and for the union.

    The attack is a fixed PGD (cross-entropy, random start, ``steps`` steps, the threat's
    default step size) from a fresh generator seeded with ``seed``, so the same model gives
    the same numbers and the caller's random streams are not touched. The model's mode and
    ``requires_grad`` flags are restored.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text).
        steps: PGD steps.
        batch_size: examples per attack batch.
        seed: seed of the attack's generator.

    Returns:
        ``{"clean": acc, "<threat text>": acc, ..., "union": acc}``; an example counts as
        robust for the union when no threat breaks it (clean-misclassified ones never count).
    """
    tms = as_lp_balls(threats)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    n = x.shape[0]
    correct = torch.zeros(n, dtype=torch.bool, device=x.device)
    robust = {str(t): torch.zeros(n, dtype=torch.bool, device=x.device) for t in tms}
    with attack_mode(model):
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            with torch.no_grad():
                correct[i : i + batch_size] = model(xb).argmax(1) == yb
            for t in tms:
                x_adv = pgd_perturb(model, xb, yb, t, steps=steps, generator=generator)
                with torch.no_grad():
                    robust[str(t)][i : i + batch_size] = model(x_adv).argmax(1) == yb
    out = {"clean": float(correct.float().mean()) if n else 0.0}
    union = correct.clone()
    for text, ok in robust.items():
        ok &= correct
        union &= ok
        out[text] = float(ok.float().mean()) if n else 0.0
    out["union"] = float(union.float().mean()) if n else 0.0
    return out


class OverfittingDetector:
    """Flags catastrophic overfitting: held-out PGD robust accuracy collapsing during training.

    Fast FGSM training (Wong et al. 2020) can suddenly lose all robustness to PGD while staying
    robust to FGSM; Wong et al. watch PGD accuracy on a held-out batch and stop. Feed
    :meth:`update` each new robust accuracy; it returns True (a collapse) when

        acc < best − ``drop``   or   acc < ``floor``  (once ``best`` has reached ``floor``),

    and keeps ``best`` and ``best_index`` (the update number of the best value) so that the
    caller can keep the best checkpoint.

    Args:
        drop: tolerated fall below the best accuracy so far, as a fraction (0.2 = 20 points).
        floor: optional absolute minimum, in [0, 1], enforced once it has been reached.
    """

    def __init__(self, drop: float = 0.2, floor: float | None = None) -> None:
        if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 < drop <= 1:
            raise ValueError(f"Invalid drop: {drop!r} (must be a fraction in (0, 1])")
        if floor is not None and (
            isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1
        ):
            raise ValueError(f"Invalid floor: {floor!r} (must be None or a fraction in [0, 1])")
        self.drop = float(drop)
        self.floor = None if floor is None else float(floor)
        self.best = -math.inf
        self.best_index = -1
        self.history: list[float] = []
        self.collapsed = False

    def update(self, accuracy: float) -> bool:
        """Record one robust accuracy (a fraction in [0, 1]); return True on a collapse.

        Args:
            accuracy: the held-out PGD robust accuracy just measured.

        Returns:
            True when this value shows catastrophic overfitting (it stays recorded in
            ``collapsed``).
        """
        acc = float(accuracy)
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"Invalid accuracy: {accuracy!r} (must be a fraction in [0, 1])")
        self.history.append(acc)
        collapsed = acc < self.best - self.drop or (
            self.floor is not None and self.best >= self.floor and acc < self.floor
        )
        if acc > self.best:
            self.best, self.best_index = acc, len(self.history) - 1
        self.collapsed = self.collapsed or collapsed
        return collapsed

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume: history, best, collapsed."""
        return {"history": list(self.history), "collapsed": self.collapsed}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned by replaying the history."""
        history = state.get("history", [])
        assert isinstance(history, list)
        self.best, self.best_index, self.history, self.collapsed = -math.inf, -1, [], False
        for acc in history:
            self.update(float(acc))
        self.collapsed = bool(state.get("collapsed", self.collapsed))
