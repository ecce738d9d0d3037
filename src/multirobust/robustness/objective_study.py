"""Which of Carlini & Wagner's seven objectives finds the smallest perturbation (their Table III).

Carlini & Wagner (2017, §V.A) compare seven objectives f1–f7 for their ℓ2 attack, all with the
same optimiser and search over c, by the mean distance of the adversarial examples found and the
success rate. :func:`objective_study` does the same on any model with ``cw-l2``
(``objective=f1`` … ``f7``; the exact forms are in :mod:`multirobust.losses`), targeted at a
random wrong class per example ("average case", the paper's middle column) or untargeted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import attacks, losses

TARGETING = ("random", "untargeted")


@dataclass(frozen=True)
class ObjectiveRow:
    """One objective's result on the correctly classified examples.

    Attributes:
        objective: "f1" … "f7".
        success_rate: fraction of the examples the attack broke (reached the target).
        mean_l2, median_l2: ℓ2 norm of the perturbations found, over the broken examples.
        mean_l2_common: mean ℓ2 over the examples every objective broke (a paired comparison).
        seconds: wall-clock time of the attack.
        forward_passes: forward passes per example.
        norms: per-example ℓ2 norm (inf where the attack failed).
    """

    objective: str
    success_rate: float
    mean_l2: float
    median_l2: float
    mean_l2_common: float
    seconds: float
    forward_passes: float
    norms: list[float] = field(repr=False)


def objective_study(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    objectives: tuple[str, ...] = losses.CW_OBJECTIVES,
    targeting: str = "random",
    steps: int = 100,
    binary_search_steps: int = 5,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[ObjectiveRow]:
    """Run ``cw-l2`` once per objective on the same examples and targets.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: images (N, ...); y: labels (N,). Only the correctly classified ones are attacked.
        objectives: names among f1 … f7.
        targeting: ``"random"`` (one random wrong class per example, the same for every
            objective) or ``"untargeted"``.
        steps, binary_search_steps: the C&W budget per objective.
        options: further ``cw-l2`` options (optimizer, learning_rate, initial_const, ...).
        seed: seed of the targets and of the attacks.
        progress: show a progress bar.

    Returns:
        One :class:`ObjectiveRow` per objective, in the order given.
    """
    unknown = [o for o in objectives if o not in losses.CW_OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(
            f"Unknown objective(s) {', '.join(unknown) or '(none given)'} (must be among "
            f"{', '.join(losses.CW_OBJECTIVES)})"
        )
    if targeting not in TARGETING:
        allowed = ", ".join(TARGETING)
        raise ValueError(f"Invalid targeting: {targeting!r} (must be one of {allowed})")
    options = dict(options or {})
    for reserved in ("objective", "threat", "steps", "binary_search_steps"):
        if reserved in options:
            raise ValueError(f"Do not pass {reserved} in options: the study sets it")
    with torch.no_grad():
        logits = model(x)
    keep = (logits.argmax(1) == y).nonzero().flatten()
    if keep.numel() == 0:
        raise ValueError("The model misclassifies every example: nothing to attack")
    xs, ys = x[keep], y[keep]
    targets = None
    if targeting == "random":
        g = torch.Generator(device=x.device).manual_seed(seed)
        r = torch.randint(0, logits.shape[1] - 1, (ys.shape[0],), generator=g, device=x.device)
        targets = r + (r >= ys).long()
    # ℓ2 radius no perturbation in the box exceeds: a pure minimum-norm search.
    radius = math.sqrt(xs[0].numel()) + 1.0
    norms: dict[str, torch.Tensor] = {}
    timing: dict[str, tuple[float, float]] = {}
    bar = tqdm(total=len(objectives), desc="objective study", disable=not progress)
    for name in objectives:
        atk = attacks.create(
            "cw-l2",
            threat=f"l2:{radius}",
            steps=steps,
            binary_search_steps=binary_search_steps,
            objective=name,
            seed=seed,
            **options,
        )
        start = time.perf_counter()
        res = atk(model, xs, ys, targets=targets)
        seconds = time.perf_counter() - start
        norms[name] = torch.where(res.success, res.norm, torch.full_like(res.norm, math.inf))
        timing[name] = (seconds, res.queries / xs.shape[0])
        bar.update()
    bar.close()
    common = torch.stack([torch.isfinite(v) for v in norms.values()]).all(0)
    rows = []
    for name in objectives:
        v = norms[name]
        ok = torch.isfinite(v)
        found = v[ok]
        rows.append(
            ObjectiveRow(
                objective=name,
                success_rate=float(ok.float().mean()),
                mean_l2=float(found.mean()) if found.numel() else math.nan,
                median_l2=float(found.median()) if found.numel() else math.nan,
                mean_l2_common=float(v[common].mean()) if bool(common.any()) else math.nan,
                seconds=timing[name][0],
                forward_passes=timing[name][1],
                norms=v.tolist(),
            )
        )
    return rows


def rows_to_markdown(rows: list[ObjectiveRow]) -> list[str]:
    """The study as a markdown table (the paper's columns, plus the paired mean)."""
    lines = [
        "| objective | success | mean ℓ2 | median ℓ2 | mean ℓ2 (all broke) | seconds "
        "| forward passes / example |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.objective} | {r.success_rate:.1%} | {r.mean_l2:.3f} | {r.median_l2:.3f} "
            f"| {r.mean_l2_common:.3f} | {r.seconds:.0f} | {r.forward_passes:.0f} |"
        )
    return lines


def rows_to_json(rows: list[ObjectiveRow]) -> list[dict[str, Any]]:
    """JSON-ready dicts (inf and NaN as None)."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    out = []
    for r in rows:
        d = {k: clean(v) for k, v in asdict(r).items()}
        d["norms"] = [clean(v) for v in r.norms]
        out.append(d)
    return out
