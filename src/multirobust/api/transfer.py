"""Transfer attacks on a served model: craft on a surrogate, then one query per candidate.

The attacker holds a surrogate (a model of their own, or one extracted from the API with
:func:`multirobust.api.extract`) and runs a white-box attack on it; each adversarial candidate
costs one query to the victim, after one query for the clean image (an example the victim gets
wrong already is not attacked). Papernot et al. (2017), "Practical Black-Box Attacks against
Machine Learning", for the substitute-then-transfer pipeline.

The result is a list of :class:`~multirobust.api.lockstep.Trace`, like every attack run over
the API, so success rates at a query budget and the report treat it as any other attack: a
success is always at query 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import attacks
from ..threats import LpBall
from .lockstep import Trace

#: Options of the surrogate's attack unless given: 100 steps, and no early stop. An attack that
#: stops as soon as the surrogate is fooled leaves the candidate just across the surrogate's
#: boundary, where it transfers badly: PGD-100 from a surrogate extracted with 20,000 queries
#: fools zoo/standard.pt on 50% of 200 test images with early stopping and on 99.5% without.
DEFAULT_OPTIONS: dict[str, Any] = {"steps": 100, "early_stop": False}


def transfer_options(attack: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` over :data:`DEFAULT_OPTIONS`, keeping only the options ``attack`` has."""
    fields = {f.name for f in dataclasses.fields(attacks.get(attack))}
    merged = {k: v for k, v in DEFAULT_OPTIONS.items() if k in fields}
    return {**merged, **(options or {})}


def transfer_attack(
    surrogate: nn.Module,
    victim: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: Any = "linf:0.3",
    attack: str | attacks.Attack = "pgd",
    options: dict[str, Any] | None = None,
    targets: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> list[Trace]:
    """Craft on ``surrogate`` with a white-box attack, then check each candidate on ``victim``.

    Args:
        surrogate: a local model (gradients needed).
        victim: the model attacked (a :class:`~multirobust.api.RemoteModel` or a local model).
        x, y: examples (N, ...) in [0, 1] and labels.
        threat: the threat model (object or text); an ℓp ball.
        attack: a registered attack name (``pgd``, ``apgd``, ...) or an attack object.
        options: the attack's options when ``attack`` is a name, over
            :data:`DEFAULT_OPTIONS` (100 steps, no early stop).
        targets: (N,) target classes, or None.
        batch_size: examples crafted and sent together.
        seed: the attack's seed.

    Returns:
        One :class:`Trace` per example: 2 queries (clean, candidate), success at query 2.
    """
    if isinstance(attack, str):
        atk = attacks.create(attack, threat=threat, seed=seed, **transfer_options(attack, options))
    else:
        atk = attack
    ball = atk.threat_model
    if not isinstance(ball, LpBall):
        raise ValueError(f"transfer_attack needs an ℓp-ball threat, got {ball}")
    traces: list[Trace] = []
    n = x.shape[0]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    bar = tqdm(total=n, desc=f"transfer {atk.name}", unit="img", disable=not progress, leave=False)
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        tb = None if targets is None else targets[i : i + batch_size]
        crafted = atk(surrogate, xb, yb, targets=tb, generator=generator).x_adv
        with torch.no_grad():
            clean = victim(xb).argmax(1)
            adv = victim(crafted).argmax(1)
        clean_met = clean == tb if tb is not None else clean != yb
        adv_met = adv == tb if tb is not None else adv != yb
        norms = ball.norm(crafted - xb)
        for j in range(xb.shape[0]):
            hit = bool(adv_met[j]) and not bool(clean_met[j])
            norm = float(norms[j])
            traces.append(
                Trace(
                    index=i + j,
                    queries=2,
                    clean_met=bool(clean_met[j]),
                    first_success=2 if hit else (1 if bool(clean_met[j]) else None),
                    norm=norm if hit else None,
                    best=[(2, norm)] if bool(adv_met[j]) else [],
                    x_adv=crafted[j : j + 1] if hit else None,
                )
            )
        bar.update(xb.shape[0])
    bar.close()
    return traces
