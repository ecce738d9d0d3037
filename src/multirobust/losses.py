"""Attack losses, all maximised by the attacker, per example: name -> callable.

Every loss has the signature ``loss(logits, y, targets=None) -> (N,)``. With ``targets`` it is
the targeted form: still maximised, it rises as the target class wins. The sign flip lives here,
so attacks only ever ascend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F


class Loss(Protocol):
    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def _other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``, per example."""
    masked = logits.scatter(1, cls.unsqueeze(1), float("-inf"))
    return masked.amax(1)


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the true class; targeted: minus the cross-entropy of the target."""
    if targets is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, targets, reduction="none")


def margin(
    logits: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    confidence: float = 0.0,
) -> torch.Tensor:
    """Carlini–Wagner margin (f6, 2017) with confidence κ, to maximise.

    Untargeted: min(max_{i≠y} z_i − z_y, κ). Targeted: min(z_t − max_{i≠t} z_i, κ).
    Capping at κ stops the attack from pushing examples that are already κ past the boundary.
    """
    if targets is None:
        value = _other_max(logits, y) - logits.gather(1, y.unsqueeze(1)).squeeze(1)
    else:
        value = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - _other_max(logits, targets)
    return value.clamp(max=confidence) if confidence != float("inf") else value


def dlr(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), scale-invariant, to maximise.

    Untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3).
    Targeted:   −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2).
    π orders the logits decreasingly. Needs ≥ 3 classes (≥ 4 targeted).
    """
    srt = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    if targets is None:
        if logits.shape[1] < 3:
            raise ValueError("The DLR loss needs at least 3 classes")
        return -(z_y - _other_max(logits, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)
    if logits.shape[1] < 4:
        raise ValueError("The targeted DLR loss needs at least 4 classes")
    z_t = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


# ---------------------------------------------------------------- Carlini & Wagner's f1–f7
#
# Carlini & Wagner (2017, §V.A) compare seven objectives f with f(x') ≤ 0 when the attack has
# succeeded, to *minimise*. Here each is registered as a loss to *maximise*, −f, so PGD, APGD and
# C&W use them like every other loss. Targeted at t they are the paper's:
#
#   f1 = −log₂ F_t − 1                         f2 = (max_{i≠t} F_i − F_t)⁺
#   f3 = softplus(max_{i≠t} F_i − F_t) − log 2  f4 = (0.5 − F_t)⁺
#   f5 = log(2 − 2·F_t)                        f6 = (max_{i≠t} Z_i − Z_t)⁺
#   f7 = softplus(max_{i≠t} Z_i − Z_t) − log 2
#
# with F the softmax and Z the logits. Two are printed differently in the paper and are written
# here in the form that has the property the paper asks of every f (f ≤ 0 ⇒ class t):
# f1 is printed "−loss_{F,t}(x') + 1" with loss_{F,t} the cross-entropy −log F_t, which *rises* as
# t wins; the cross-entropy minus 1 with log₂ is ≤ 0 exactly when F_t ≥ 1/2 (natural logs would
# stop at F_t ≥ 1/e, which does not make t the top class). f5 is printed "−log(2F_t − 2)", the log
# of a negative number; log(2 − 2F_t) is ≤ 0 exactly when F_t ≥ 1/2, like f4, and unbounded
# below, unlike f1.
#
# Untargeted forms: the probability of the target F_t becomes the probability of any wrong class
# 1 − F_y, and the target's margin max_{i≠t} − t becomes the true class's lead y − max_{i≠y}:
#
#   f1 = −log₂(1 − F_y) − 1    f2 = (F_y − max_{i≠y} F_i)⁺    f3 = softplus(F_y − max F_i) − log 2
#   f4 = (F_y − 0.5)⁺          f5 = log(2·F_y)                f6, f7 likewise on the logits.
#
# Every form is computed from log-softmax values (log F and log(1 − F) by logsumexp), so none
# underflows to log 0 on confident models.

_LOG2 = math.log(2.0)


def _log_probs(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P_good, log(1 − P_good)): P_good = F_t targeted, 1 − F_y untargeted."""
    cls = y if targets is None else targets
    logp = logits.log_softmax(1)
    log_in = logp.gather(1, cls.unsqueeze(1)).squeeze(1)
    log_out = logp.scatter(1, cls.unsqueeze(1), float("-inf")).logsumexp(1)
    return (log_in, log_out) if targets is not None else (log_out, log_in)


def _lead(values: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """How far the attack is from its goal: max_{i≠t} v_i − v_t, or v_y − max_{i≠y} v_i."""
    if targets is None:
        return values.gather(1, y.unsqueeze(1)).squeeze(1) - _other_max(values, y)
    return _other_max(values, targets) - values.gather(1, targets.unsqueeze(1)).squeeze(1)


def cw_f1(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f1 = log₂ P_good + 1 (C&W 2017's cross-entropy objective), to maximise."""
    log_good, _ = _log_probs(logits, y, targets)
    return log_good / _LOG2 + 1.0


def cw_f2(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f2 = −(probability lead)⁺, to maximise."""
    return -_lead(logits.softmax(1), y, targets).clamp_min(0.0)


def cw_f3(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f3 = log 2 − softplus(probability lead), to maximise."""
    return _LOG2 - F.softplus(_lead(logits.softmax(1), y, targets))


def cw_f4(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f4 = −(0.5 − P_good)⁺, to maximise."""
    log_good, _ = _log_probs(logits, y, targets)
    return -(0.5 - log_good.exp()).clamp_min(0.0)


def cw_f5(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f5 = −log(2 − 2·P_good) = −log 2 − log(1 − P_good), to maximise."""
    _, log_bad = _log_probs(logits, y, targets)
    return -_LOG2 - log_bad


def cw_f6(
    logits: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    confidence: float = 0.0,
) -> torch.Tensor:
    """−f6 = −max(logit lead, −κ): the Carlini–Wagner margin, the same as ``margin``."""
    return margin(logits, y, targets, confidence=confidence)


def cw_f7(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−f7 = log 2 − softplus(logit lead), to maximise."""
    return _LOG2 - F.softplus(_lead(logits, y, targets))


#: The seven objectives of Carlini & Wagner (2017), by the paper's names.
CW_OBJECTIVES: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5", "f6", "f7")


_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy,
    "margin": margin,
    "cw": margin,
    "dlr": dlr,
    "f1": cw_f1,
    "f2": cw_f2,
    "f3": cw_f3,
    "f4": cw_f4,
    "f5": cw_f5,
    "f6": cw_f6,
    "f7": cw_f7,
}


def names() -> list[str]:
    """Registered loss names."""
    return sorted(_LOSSES)


def get(name: str | Callable[..., torch.Tensor], **options: float) -> Loss:
    """The loss registered as ``name`` (or a callable, returned as is), with ``options`` bound.

    ``get("margin", confidence=5.0)`` is the C&W margin with κ = 5.
    """
    if callable(name):
        return name  # type: ignore[return-value]
    try:
        fn = _LOSSES[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r} (available: {', '.join(names())})") from None
    if not options:
        return fn  # type: ignore[return-value]

    def bound(
        logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        return fn(logits, y, targets, **options)

    return bound
