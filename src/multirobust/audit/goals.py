"""The white-box goal part: confidence reduction, targeted and source→target attacks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import atomic, attacks
from ..attacks.goals import Goal
from ..privacy import logits_of
from .result import AuditContext, PartResult

__all__ = ["GOALS", "run_goals"]

log = logging.getLogger(__name__)

GOALS = ("confidence-reduction", "targeted", "source-target")
"""The goals beyond misclassification (which the evasion part measures)."""


def _goal(name: str, ctx: AuditContext) -> Goal:
    cfg = ctx.config
    if name == "confidence-reduction":
        return attacks.ReduceConfidence(cfg.confidence)
    if name == "targeted":
        return attacks.RandomTarget()
    return attacks.SourceToTarget(*cfg.pair)


def _attacked(name: str, ctx: AuditContext, correct: torch.Tensor) -> torch.Tensor:
    """The examples a goal is scored on: those the model classifies correctly (and, for
    source→target, of the source class)."""
    if name == "source-target":
        return correct & (ctx.test.labels == ctx.config.pair[0])
    return correct


def run_goals(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """PGD (the registry's ``pgd``, ``goal_steps`` steps, one random start) under every threat
    it supports, once per goal of :data:`GOALS`; the success rate counts the correctly
    classified examples the goal applies to. Writes ``goals.json``.

    The evasion part's ensemble is stronger; these rates are lower bounds of what a
    white-box adversary with each goal reaches.
    """
    cfg = ctx.config
    x, y = ctx.test.images, ctx.test.labels
    pred = logits_of(ctx.model, x, batch_size=cfg.batch_size).argmax(1)
    correct = pred == y
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    jobs = []
    for threat in cfg.threats:
        try:
            attack = attacks.create("pgd", threat=threat, steps=cfg.goal_steps)
        except ValueError as err:
            skipped[threat] = str(err)
            continue
        jobs += [(threat, attack, goal) for goal in GOALS]
    bar = tqdm(jobs, desc="goals", unit="attack", disable=not cfg.progress, leave=False)
    for threat, attack, name in bar:
        scored = _attacked(name, ctx, correct)
        success = torch.zeros_like(scored)
        gen = ctx.generator()
        for s in range(0, len(x), cfg.batch_size):
            res = attack(ctx.model, x[s : s + cfg.batch_size], y[s : s + cfg.batch_size],
                         goal=_goal(name, ctx), generator=gen)  # fmt: skip
            success[s : s + cfg.batch_size] = res.success
        count = int(scored.sum())
        rows.append(
            {
                "threat": threat,
                "goal": name,
                "attacked": count,
                "successes": int((success & scored).sum()),
                "success_rate": float((success & scored).sum()) / count if count else None,
            }
        )
    atomic.write_json_atomic(
        folder / "goals.json",
        {
            "attack": "pgd",
            "steps": cfg.goal_steps,
            "confidence": cfg.confidence,
            "pair": list(cfg.pair),
            "n": len(y),
            "clean_correct": int(correct.sum()),
            "results": rows,
            "unsupported": skipped,
        },
    )
    if not rows:
        return PartResult(
            part="goals",
            status="not-assessed",
            reason="PGD supports none of the threat models: " + "; ".join(skipped.values()),
            evidence=["goals/goals.json"],
        )
    return PartResult(
        part="goals",
        status="done",
        summary={"results": rows, "unsupported": sorted(skipped)},
        evidence=["goals/goals.json"],
    )
