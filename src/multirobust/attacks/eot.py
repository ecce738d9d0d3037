"""Judging a randomised model: its predictions over repeated calls, and robustness by a rule.

A model that draws fresh randomness at every call (input noise, random resizing, dropout at test
time) answers the same input differently, so one forward pass neither breaks nor certifies an
example. The attacks average gradients over calls (``eot_samples``, see
:func:`multirobust.attacks.gradients.input_gradient`); this module is the other half of
expectation over transformation (Athalye et al. 2018): the verdict on an adversarial input is
taken over ``calls`` predictions, by a stated rule.
"""

from __future__ import annotations

import torch
from torch import nn

RULES = ("majority", "all", "any")


def predictions_over_calls(
    model: nn.Module, x: torch.Tensor, calls: int, *, batch_size: int | None = None
) -> torch.Tensor:
    """The model's predicted class at ``x`` on each of ``calls`` calls.

    Args:
        model: a classifier returning logits; called ``calls`` times without gradients.
        x: inputs (N, ...).
        calls: number of calls r ≥ 1.
        batch_size: examples per call (all at once when None).

    Returns:
        (r, N) long tensor of predicted classes.
    """
    if not isinstance(calls, int) or isinstance(calls, bool) or calls < 1:
        raise ValueError(f"Invalid calls: {calls!r} (must be an integer >= 1)")
    step = x.shape[0] if batch_size is None else batch_size
    if step < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (must be >= 1)")
    out = torch.empty((calls, x.shape[0]), dtype=torch.long, device=x.device)
    with torch.no_grad():
        for r in range(calls):
            for i in range(0, x.shape[0], step):
                out[r, i : i + step] = model(x[i : i + step]).argmax(1)
    return out


def correct_fraction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    calls: int,
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """(N,) fraction of ``calls`` calls on which the model classifies ``x`` as ``y``."""
    preds = predictions_over_calls(model, x, calls, batch_size=batch_size)
    return (preds == y.unsqueeze(0)).to(torch.float64).mean(0)


def robust_over_calls(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    calls: int = 20,
    rule: str = "majority",
    batch_size: int | None = None,
) -> torch.Tensor:
    """(N,) bool: is the model right at ``x`` by ``rule`` over ``calls`` repeated predictions?

    Rules (r = ``calls``, c = the number of correct calls):
        ``"majority"``: c > r/2 — the model's vote; what a user who queries once sees most of the
            time. The default, and the rule for robust accuracy of a randomised model.
        ``"all"``: c = r — robust only if no call is fooled (an adversary with r tries wins on
            any miss): the strict number.
        ``"any"``: c ≥ 1 — broken only if every call is fooled: the lenient number.

    Args:
        model: classifier returning logits.
        x: (possibly adversarial) inputs (N, ...).
        y: true labels (N,).
        calls: r ≥ 1.
        rule: one of ``majority``, ``all``, ``any``.
        batch_size: examples per call (all at once when None).
    """
    if rule not in RULES:
        raise ValueError(f"Invalid rule: {rule!r} (must be one of {', '.join(RULES)})")
    frac = correct_fraction(model, x, y, calls, batch_size=batch_size)
    if rule == "majority":
        return frac > 0.5
    if rule == "all":
        return frac == 1.0
    return frac > 0.0
