"""The per-example worst case over a union of threat models: one wrapper for every attack.

``attacks.create("pgd", threat="union(linf:0.3,l2:2)")`` builds a :class:`UnionAttack` holding
one PGD per member. Its ``_run`` attacks the members in the order given (cheapest first is the
caller's choice): each member attacks only the examples no earlier member broke, and an example
keeps, per member tried, the first result that meets the goal, else the one of highest loss. The
contract around it (validation, mode, goal, final check) is the ordinary one, run once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import losses
from ..threats import ThreatParams, UnionParams, place_params, select_params
from .base import Attack, Context


@dataclass(frozen=True, kw_only=True)
class UnionAttack(Attack):
    """One attack per member of a union threat model; per example the worst member wins.

    Args:
        attacks: the member attacks, one per member of ``threat`` and in the same order.
        threat: the union.
    """

    takes_unions: ClassVar[bool] = True

    attacks: tuple[Attack, ...] = ()

    def _validate(self) -> None:
        members = self.threat_model.members()
        if len(self.attacks) != len(members) or any(
            a.threat_model != m for a, m in zip(self.attacks, members, strict=False)
        ):
            raise ValueError(
                f"UnionAttack needs one attack per member of {self.threat_model}, in order"
            )

    @property
    def label(self) -> str:
        return "+".join(dict.fromkeys(a.label for a in self.attacks))

    def _loss_fn(self) -> losses.Loss:
        return self.attacks[0]._loss_fn()

    def with_options(self, **changes: Any) -> UnionAttack:
        """A copy with the options changed in every member attack."""
        return dataclasses.replace(
            self, attacks=tuple(a.with_options(**changes) for a in self.attacks)
        )

    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        n, dev = ctx.x.shape[0], ctx.x.device
        x_adv = ctx.x.clone()
        index = torch.zeros(n, dtype=torch.long, device=dev)
        best_loss = torch.full((n,), float("-inf"), device=dev, dtype=ctx.x.dtype)
        won = torch.zeros(n, dtype=torch.bool, device=dev)
        every = torch.arange(n, device=dev)
        found: list[ThreatParams | None] = []
        for i, attack in enumerate(self.attacks):
            threat = attack.threat_model
            rows = every[~won] if i else every
            found.append(None)
            if threat.is_trivial or rows.numel() == 0:
                continue
            sub = dataclasses.replace(ctx.subset(rows), threat=threat)
            cand, params = attack._run(sub)
            cand = threat.project(cand, sub.x, params)
            with torch.no_grad():
                logits = ctx.model(cand)
            hit = sub.met(logits)
            cand_loss = sub.objective(logits)
            better = hit | (~won[rows] & (cand_loss > best_loss[rows]))
            take = rows[better]
            x_adv[take] = cand[better]
            index[take] = i
            best_loss[take] = cand_loss[better]
            won[rows] |= hit
            found[i] = place_params(select_params(params, better), take, n)
        return x_adv, UnionParams(index, tuple(found))
