"""One attack per threat model over a dataset: clean and robust accuracy, batch by batch.

What ``multirobust attack`` computes: for each threat the attack it names (``auto``: PGD for
ℓp balls, a grid search for spatial ones, the affine attack for affine sets) runs on every
example, and the union counts an example robust only when no threat broke it. Unlike
``evaluate`` it runs one attack, not an ensemble, and has no checks or report page.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import attacks
from ..atomic import write_atomic
from ..threats import Affine, Spatial, Threat, Union

__all__ = ["attack_table", "default_attack", "run_attack", "save_attack_result"]


def default_attack(threat: Threat) -> str:
    """The attack used for ``--attack auto``: PGD for ℓp balls, grid search for spatial."""
    members = threat.threats if isinstance(threat, Union) else (threat,)
    if all(isinstance(t, Spatial) for t in members):
        return "spatial-grid"
    if isinstance(threat, Affine):
        return "affine"
    if any(isinstance(t, Spatial) for t in members):
        raise ValueError(
            f"No single attack covers {threat}: evaluate its members as separate --threat options"
        )
    return "pgd"


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat_list: list[Threat],
    attack_name: str,
    options: dict[str, Any],
    *,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Clean and robust accuracy of ``model`` on (x, y) under each threat, batch by batch.

    Returns a JSON-ready dict plus ``"_x_adv"`` (threat text -> adversarial inputs) and
    ``"_robust"`` (threat text -> per-example bool) for callers that keep them.
    """
    n = x.shape[0]
    with torch.no_grad():
        correct = torch.cat(
            [
                model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]
                for i in range(0, n, batch_size)
            ]
        )
    per_threat: dict[str, Any] = {}
    x_adv_all: dict[str, torch.Tensor] = {}
    robust_all: dict[str, torch.Tensor] = {}
    chosen = {
        str(t): default_attack(t) if attack_name == "auto" else attack_name for t in threat_list
    }
    # An option goes to every attack that has it (steps=100 means nothing to a grid search);
    # one that no attack in this run takes is a mistake.
    fields = {n: {f.name for f in dataclasses.fields(attacks.get(n))} for n in set(chosen.values())}
    unused = sorted(k for k in options if not any(k in f for f in fields.values()))
    if unused:
        raise ValueError(
            f"Unknown option(s) {', '.join(unused)} for attack(s) {', '.join(sorted(fields))}"
        )
    for threat in threat_list:
        name = chosen[str(threat)]
        mine = {k: v for k, v in options.items() if k in fields[name]}
        attack = attacks.create(name, threat=threat, seed=seed, **mine)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        robust = torch.zeros(n, dtype=torch.bool)
        x_adv = x.clone()
        norms = torch.full((n,), float("nan"))
        start = time.perf_counter()
        queries = 0
        bar = tqdm(total=n, desc=str(threat), unit="img", disable=not progress, leave=False)
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            res = attack(model, x[sl], y[sl], generator=generator)
            robust[sl] = ~res.success
            x_adv[sl] = res.x_adv
            norms[sl] = res.norm.float().cpu()
            queries += res.queries
            bar.update(res.x_adv.shape[0])
        bar.close()
        per_threat[str(threat)] = {
            "attack": name,
            "robust_accuracy": float(robust.float().mean()),
            "max_norm": float(norms.nan_to_num(0).max()) if n else 0.0,
            "seconds": time.perf_counter() - start,
            "queries_per_example": queries / max(n, 1),
        }
        x_adv_all[str(threat)] = x_adv
        robust_all[str(threat)] = robust
    union = torch.stack(list(robust_all.values())).all(0) if robust_all else correct
    return {
        "n": n,
        "clean_accuracy": float(correct.float().mean()),
        "threats": per_threat,
        "union_accuracy": float(union.float().mean()),
        "_x_adv": x_adv_all,
        "_robust": robust_all,
    }


def attack_table(result: dict[str, Any]) -> str:
    """The result of :func:`run_attack` as a plain-text table (one row per threat)."""
    lines = [
        f"{'threat':<30} {'attack':<14} {'robust acc':>10} {'max norm':>9} {'seconds':>8}",
        f"{'(clean)':<30} {'':<14} {result['clean_accuracy']:>10.2%}",
    ]
    for text, row in result["threats"].items():
        lines.append(
            f"{text:<30} {row['attack']:<14} {row['robust_accuracy']:>10.2%} "
            f"{row['max_norm']:>9.4g} {row['seconds']:>8.1f}"
        )
    if len(result["threats"]) > 1:
        lines.append(
            f"{'union (worst case per example)':<30} {'':<14} {result['union_accuracy']:>10.2%}"
        )
    return "\n".join(lines)


def save_attack_result(result: dict[str, Any], out: Path, stem: str = "attack") -> None:
    """Write ``OUT/stem.json`` and a readable ``OUT/stem.md``, each atomically."""
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    write_atomic(out / f"{stem}.json", json.dumps(public, indent=2))
    write_atomic(
        out / f"{stem}.md",
        f"# multirobust {stem}\n\n```\n{attack_table(result)}\n```\n\n"
        f"Settings:\n\n```json\n{json.dumps(public.get('settings', {}), indent=2)}\n```\n",
    )
