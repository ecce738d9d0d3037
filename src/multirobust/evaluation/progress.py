"""Progress inside one attack: the evaluation's bar moves with the model's forward passes.

The evaluation's bar counts (example, attack) pairs. An attack on a batch of 500 examples can
run for minutes (APGD-T over 9 target classes, Square's 5,000 queries), so waiting for it to
return before moving the bar leaves the bar still for minutes. Every attack's work is passes
through the model, which the evaluation already counts (:class:`~.passes.PassCounter`): while
an attack runs, each forward pass moves the bar by its share of the passes the attack is
expected to make, and the rest of the attack's share is added when it returns.

The expected passes per attacked example come from the previous batch's run of the same attack
under the same threat (exact for fixed-budget attacks, close for early-stopping ones), and for
the first batch from the attack's budget options (:func:`guess_passes`). A guess can be wrong;
the bar never runs ahead of the attack: inside an attack it stops at :data:`CAP` of the
attack's share until the attack returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CAP", "PassEstimates", "WithinAttack", "guess_passes"]

#: The share of an attack's bar units that forward passes can fill before the attack returns.
CAP = 0.95

#: Options whose values multiply an attack's forward passes per example.
_MULTIPLIERS = (
    "steps",
    "restarts",
    "target_classes",
    "lambdas",
    "eot_samples",
    "rotations",
    "distill_samples",
)


def guess_passes(options: Mapping[str, Any]) -> float:
    """Forward passes per example an attack with these options is expected to make, from its
    budget alone: the product of its steps, restarts, target classes, λ values, EOT samples
    and grid sizes (a spatial grid tries ``rotations × translations²`` transforms), plus its
    black-box queries. At least 1.

    >>> guess_passes({"steps": 25, "restarts": 2, "target_classes": 3})
    150.0
    >>> guess_passes({"rotations": 11, "translations": 3})
    99.0
    """
    product = 1.0
    for key in _MULTIPLIERS:
        value = options.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            product *= float(value)
    translations = options.get("translations")
    if isinstance(translations, int) and not isinstance(translations, bool) and translations > 0:
        product *= float(translations) ** 2
    queries = options.get("queries")
    if isinstance(queries, int) and not isinstance(queries, bool) and queries > 0:
        product += float(queries)
    return max(product, 1.0)


class PassEstimates:
    """Forward passes per attacked example, per (threat, attack label), learnt batch by batch.

    ``expected`` returns the last observation for the pair, else ``guess_passes`` of the
    attack's options; ``observe`` records an attack's passes on a batch.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}

    def expected(self, threat: str, label: str, options: Mapping[str, Any]) -> float:
        """Expected forward passes per attacked example."""
        return self._seen.get((threat, label), guess_passes(options))

    def observe(self, threat: str, label: str, rows: int, forward_passes: int) -> None:
        """Record that the attack made ``forward_passes`` passes on ``rows`` examples."""
        if rows > 0 and forward_passes > 0:
            self._seen[(threat, label)] = forward_passes / rows


class WithinAttack:
    """Moves a bar by one attack's share while it runs, from its forward passes.

    Args:
        advance: the bar's update function (takes whole bar units).
        share: the bar units of the whole attack (the batch's size for the evaluation's bar).
        expected: the forward passes (examples through the model) the attack should make.

    The bar moves in whole units (a batch of 500 has 475 steps before the cap), so that its
    count stays an exact integer and ends at its total.
    """

    def __init__(self, advance: Callable[[int], object], share: int, expected: float):
        self._advance = advance
        self._share = int(share)
        self._expected = max(float(expected), 1.0)
        self._passes = 0
        self._moved = 0

    @property
    def moved(self) -> int:
        """Bar units moved so far."""
        return self._moved

    def __call__(self, passes: int) -> None:
        """``passes`` more examples went forward through the model."""
        self._passes += passes
        fraction = min(CAP, self._passes / self._expected)
        if not math.isfinite(fraction):
            return
        target = math.floor(self._share * fraction)
        if target > self._moved:
            step, self._moved = target - self._moved, target
            self._advance(step)

    def finish(self) -> None:
        """The attack returned: move the rest of its share."""
        rest = self._share - self._moved
        self._moved = self._share
        if rest > 0:
            self._advance(rest)
