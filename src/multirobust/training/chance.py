"""A training run stuck at chance: its loss stays at log(classes) and it predicts no better.

Adversarial training from scratch at a large ε can settle on the uniform prediction, where
the cross-entropy is log K for K classes whatever the input, the input gradient vanishes and
the attack has nothing to follow: the run then burns its whole budget without learning. The
fit loop checks every epoch with :func:`at_chance` and says what to change
(:func:`chance_advice`).
"""

from __future__ import annotations

import math

__all__ = ["CHANCE_ACCURACY_MARGIN", "CHANCE_LOSS_TOLERANCE", "at_chance", "chance_advice"]

#: Relative distance from log K within which the epoch's mean training loss counts as flat.
#: A stuck run sits at log K to within ~1% (2.311 and 2.310 against log 10 = 2.303 were
#: measured on MNIST); a learning one leaves that band within the first epoch.
CHANCE_LOSS_TOLERANCE = 0.03
#: Held-out clean accuracy below chance plus this share of the way from chance to 100%
#: (28% for K = 10, 60% for K = 2) confirms the run is stuck: an adversarial loss can stay
#: near log K at full ε while the clean accuracy already rises (Fast-AT on 2,000 MNIST images:
#: mean loss 2.307 with 59% clean accuracy), and that run is learning. Stuck runs measured
#: 8-14% for K = 10.
CHANCE_ACCURACY_MARGIN = 0.2


def at_chance(train_loss: float, clean_accuracy: float, num_classes: int) -> bool:
    """Whether an epoch learned nothing: mean training loss ≈ log K and clean accuracy ≈ 1/K.

    Args:
        train_loss: the epoch's mean training loss.
        clean_accuracy: held-out clean accuracy after the epoch, a fraction.
        num_classes: K, the number of classes.

    Returns:
        True when ``|train_loss − log K| ≤ 0.03·log K`` and
        ``clean_accuracy < 1/K + 0.2·(1 − 1/K)``.
    """
    if num_classes < 2 or not math.isfinite(train_loss):
        return False
    flat, chance = math.log(num_classes), 1.0 / num_classes
    return abs(
        train_loss - flat
    ) <= CHANCE_LOSS_TOLERANCE * flat and clean_accuracy < chance + CHANCE_ACCURACY_MARGIN * (
        1.0 - chance
    )


def chance_advice(
    *,
    epoch: int,
    train_loss: float,
    clean_accuracy: float,
    num_classes: int,
    method: str,
    eps_warmup: float,
    accepts_warmup: bool,
    lr: float,
) -> str:
    """The message that says a run is stuck at chance and which settings to change.

    Args:
        epoch: the epoch just finished (1-based).
        train_loss: its mean training loss.
        clean_accuracy: held-out clean accuracy, a fraction.
        num_classes: K.
        method: the training method's name.
        eps_warmup: the ε warm-up the run uses, in epochs.
        accepts_warmup: whether the method accepts a warm-up.
        lr: the peak learning rate.

    Returns:
        One paragraph: what was seen, then the changes to try, most likely first.
    """
    flat = math.log(num_classes)
    tries: list[str] = []
    if accepts_warmup:
        if eps_warmup <= 0:
            tries.append("ramp ε up with --eps-warmup 1.5 (epochs; it is 0 now)")
        else:
            tries.append(f"a longer ε warm-up (--eps-warmup, now {eps_warmup:g} epochs)")
    if method == "distillation":
        tries.append(
            "a lower temperature (temperature in a --config file; T = 100 softens the "
            "labels so much that short runs learn slowly)"
        )
    tries.append(f"a lower learning rate (--lr, now {lr:g})")
    if method not in ("standard", "distillation"):
        tries.append("a smaller ε (--threat) or fewer attack steps (--steps)")
    tries.append("more data or epochs (--limit, --epochs)")
    return (
        f"training is stuck at chance after epoch {epoch}: mean training loss {train_loss:.3f} "
        f"is log({num_classes}) = {flat:.3f} and held-out clean accuracy is "
        f"{clean_accuracy:.1%} (chance {1 / num_classes:.0%}); the model predicts the same "
        f"distribution for every input. Try {'; or '.join(tries)}."
    )
