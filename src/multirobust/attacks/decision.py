"""The label oracle of decision-based attacks: the goal check φ, with a query budget per example.

A decision-based attack (HopSkipJump, RayS) sees one bit per query: whether the model's
*predicted label* at a point meets the adversary's goal (another class than the true one, or the
target). :class:`LabelOracle` answers that bit for a batch of points, each belonging to one of the
attack's examples, and keeps the count of queries spent on each example so that every example
stops at its own budget however many of its points a step sends at once.
"""

from __future__ import annotations

import torch

from .base import Context


class LabelOracle:
    """φ(points, rows): does the predicted label at each point meet its example's goal?

    Args:
        ctx: the attack's context (its model, goal and examples).
        budget: queries each example may spend.
        batch_size: points sent to the model at once (bounds memory; the count is unaffected).

    Attributes:
        used: (N,) long, queries spent on each example so far.
    """

    def __init__(self, ctx: Context, budget: int, batch_size: int) -> None:
        self.ctx = ctx
        self.budget = budget
        self.batch_size = batch_size
        self.used = torch.zeros(ctx.x.shape[0], dtype=torch.long, device=ctx.x.device)

    def remaining(self) -> torch.Tensor:
        """(N,) queries each example may still spend."""
        return (self.budget - self.used).clamp_min(0)

    def __call__(self, points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(M,) bool: the goal holds at ``points`` (M, ...) for the examples ``rows`` (M,).

        A row may repeat (several points of one example); each point costs its example one query.
        """
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=points.device)
        out = []
        with torch.no_grad():
            for i in range(0, rows.numel(), self.batch_size):
                logits = self.ctx.model(points[i : i + self.batch_size])
                out.append(self.ctx.met(logits, rows[i : i + self.batch_size]))
        self.used.index_add_(0, rows, torch.ones_like(rows))
        return torch.cat(out)
