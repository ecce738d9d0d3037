"""Held-out robust accuracy, and detection of catastrophic overfitting in fast training."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..attacks import pgd_perturb
from ..models.state import attack_mode
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
    single_step: bool = False,
    progress: bool = False,
    desc: str = "held-out",
) -> dict[str, float]:
    """Clean and PGD robust accuracy of ``model`` on a held-out set, per threat and for the union.

    The attack is a fixed PGD (cross-entropy, random start, ``steps`` steps, the threat's
    default step size) from a fresh generator seeded with ``seed``, so the same model gives
    the same numbers and the caller's random streams are not touched. The model's mode and
    ``requires_grad`` flags are restored. With ``single_step`` the accuracy under one
    steepest-ascent step of size ε from the clean input (FGSM for ℓ∞, FGM otherwise) is
    measured too: a model far more robust to it than to PGD has overfitted catastrophically.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text).
        steps: PGD steps.
        batch_size: examples per attack batch.
        seed: seed of the attack's generator.
        single_step: also measure the single-step accuracies.
        progress: show a bar (titled ``desc``) that moves after each attack on each batch;
            its total is examples × attacks.
        desc: the bar's title.

    Returns:
        ``{"clean": acc, "<threat text>": acc, ..., "union": acc}``; an example counts as
        robust for the union when no threat breaks it (clean-misclassified ones never count).
        With ``single_step``, also ``"fgsm[<threat text>]"`` per threat and ``"fgsm_union"``.
    """
    tms = as_lp_balls(threats)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    n = x.shape[0]
    correct = torch.zeros(n, dtype=torch.bool, device=x.device)
    robust = {str(t): torch.zeros(n, dtype=torch.bool, device=x.device) for t in tms}
    one_step = (
        {str(t): torch.zeros(n, dtype=torch.bool, device=x.device) for t in tms}
        if single_step
        else {}
    )
    attacks = len(tms) * (2 if single_step else 1)
    bar = tqdm(total=n * attacks, desc=desc, unit="img", disable=not progress, leave=False)
    with attack_mode(model), bar:
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            with torch.no_grad():
                correct[i : i + batch_size] = model(xb).argmax(1) == yb
            for t in tms:
                x_adv = pgd_perturb(model, xb, yb, t, steps=steps, generator=generator)
                with torch.no_grad():
                    robust[str(t)][i : i + batch_size] = model(x_adv).argmax(1) == yb
                bar.update(xb.shape[0])
                if single_step:
                    x_one = pgd_perturb(
                        model, xb, yb, t, steps=1, step_size=t.eps, random_start=False
                    )
                    with torch.no_grad():
                        one_step[str(t)][i : i + batch_size] = model(x_one).argmax(1) == yb
                    bar.update(xb.shape[0])
        bar.refresh()  # draw the last state (100%) even between display intervals
    out = {"clean": float(correct.float().mean()) if n else 0.0}
    out.update(_fractions(correct, robust, "{}", "union"))
    if single_step:
        out.update(_fractions(correct, one_step, "fgsm[{}]", "fgsm_union"))
    return out


def _fractions(
    correct: torch.Tensor, robust: dict[str, torch.Tensor], key: str, union_key: str
) -> dict[str, float]:
    """Per-threat accuracies (under ``key.format(threat)``) and the union's, counting only
    clean-correct examples as robust."""
    n = correct.shape[0]
    union = correct.clone()
    out = {}
    for text, ok in robust.items():
        ok = ok & correct
        union &= ok
        out[key.format(text)] = float(ok.float().mean()) if n else 0.0
    out[union_key] = float(union.float().mean()) if n else 0.0
    return out


class OverfittingDetector:
    """Flags catastrophic overfitting: held-out PGD robust accuracy collapsing during training.

    Fast FGSM training (Wong et al. 2020) can suddenly lose all robustness to PGD while becoming
    ever more robust to FGSM; Wong et al. watch PGD accuracy on a held-out batch and stop. Feed
    :meth:`update` each new PGD robust accuracy, and optionally the single-step (FGSM) accuracy
    of the same examples; it returns True (a collapse) when

        acc < best − ``drop``,   or   acc < ``floor``  (once ``best`` has reached ``floor``),
        or   single_step_acc − acc > ``gap``,

    and keeps ``best`` and ``best_index`` (the update number of the best value) so that the
    caller can keep the best checkpoint. The third rule is the definition of the phenomenon
    (robust to the single step, not to the iterated attack; Kim et al. 2021) and catches the
    collapse that comes before any PGD robustness was built: FGSM training at ε = 0.3 on MNIST
    goes to 99% FGSM accuracy with 2% under PGD, never having had more than 15% to lose.

    Args:
        drop: tolerated fall below the best accuracy so far, as a fraction (0.2 = 20 points).
        floor: optional absolute minimum, in [0, 1], enforced once it has been reached.
        gap: tolerated excess of the single-step accuracy over the PGD accuracy (a PGD-trained
            MNIST model shows about 0.15, a collapsed one 0.9).
    """

    def __init__(self, drop: float = 0.2, floor: float | None = None, gap: float = 0.5) -> None:
        for name, value in (("drop", drop), ("gap", gap)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be a fraction in (0, 1])")
        if floor is not None and (
            isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1
        ):
            raise ValueError(f"Invalid floor: {floor!r} (must be None or a fraction in [0, 1])")
        self.drop = float(drop)
        self.floor = None if floor is None else float(floor)
        self.gap = float(gap)
        self.best = -math.inf
        self.best_index = -1
        self.history: list[float] = []
        self.single_step_history: list[float | None] = []
        self.collapsed = False

    def update(self, accuracy: float, single_step_accuracy: float | None = None) -> bool:
        """Record one robust accuracy (a fraction in [0, 1]); return True on a collapse.

        Args:
            accuracy: the held-out PGD robust accuracy just measured.
            single_step_accuracy: the held-out single-step (FGSM) accuracy of the same
                examples, if measured.

        Returns:
            True when this value shows catastrophic overfitting (it stays recorded in
            ``collapsed``).
        """
        acc = float(accuracy)
        one = None if single_step_accuracy is None else float(single_step_accuracy)
        for name, value, given in (
            ("accuracy", acc, accuracy),
            ("single_step_accuracy", one, single_step_accuracy),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"Invalid {name}: {given!r} (must be a fraction in [0, 1])")
        self.history.append(acc)
        self.single_step_history.append(one)
        collapsed = (
            acc < self.best - self.drop
            or (self.floor is not None and self.best >= self.floor and acc < self.floor)
            or (one is not None and one - acc > self.gap)
        )
        if acc > self.best:
            self.best, self.best_index = acc, len(self.history) - 1
        self.collapsed = self.collapsed or collapsed
        return collapsed

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume: both histories and whether a collapse was seen."""
        return {
            "history": list(self.history),
            "single_step_history": list(self.single_step_history),
            "collapsed": self.collapsed,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned by replaying the history."""
        history = state.get("history", [])
        assert isinstance(history, list)
        single = state.get("single_step_history") or [None] * len(history)
        assert isinstance(single, list) and len(single) == len(history)
        self.best, self.best_index, self.history, self.collapsed = -math.inf, -1, [], False
        self.single_step_history = []
        for acc, one in zip(history, single, strict=True):
            self.update(float(acc), None if one is None else float(one))
        self.collapsed = bool(state.get("collapsed", self.collapsed))
