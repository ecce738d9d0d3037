"""Robust accuracy against ε, reusing work across ε (Foolbox-style curves in one run).

The balls are nested (B(ε₁) ⊂ B(ε₂) for ε₁ < ε₂), so an example broken at a small ε is broken at
every larger one. The ε values are therefore swept in increasing order and each ε attacks only
the examples still robust at the previous one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..attacks.base import check_positive_int
from ..attacks.eot import robust_over_calls
from ..models.state import attack_mode
from ..threats import lp_ball
from . import distributed as _dist
from . import presets
from .checks import LogProbabilities, looks_like_probabilities, masked_gradients, two_calls
from .inputs import DataArg, as_tensors, on_model, stable_seed
from .report import Curve


def curve(
    model: nn.Module,
    data: DataArg,
    y: torch.Tensor | None = None,
    *,
    threat_type: str,
    eps_list: Sequence[float],
    preset: str | presets.Preset = "quick",
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
    distributed: bool = False,
    eot_samples: int | None = None,
) -> Curve:
    """Robust accuracy of ``model`` at each ε of ``eps_list`` for ``threat_type``.

    Args:
        model: classifier returning logits (probabilities are attacked through ``log p``).
        data: images in [0, 1] with ``y``, an ImageDataset or a DataLoader.
        threat_type: an ℓp norm, one of :data:`multirobust.threats.NORMS`.
        eps_list: radii (any order, ≥ 0); the curve is returned in increasing ε.
        preset: attack ensemble used at every ε ("quick" by default).
        distributed: share each attack's chunks of examples among the ranks of the
            initialised ``torch.distributed`` group (chunk k on rank k mod world size) and
            gather which examples broke; every rank gets the single-process curve.
        eot_samples: for a randomised model (outputs that change between two identical calls,
            tested first), the calls each white-box gradient is averaged over and each verdict
            (clean and adversarial) takes the majority of, as :func:`~.runner.evaluate` does;
            None: the preset's ``eot_samples``; 1: none. Unused for a deterministic model.

    Returns:
        A :class:`Curve` with accuracy[k] the fraction robust at eps[k] (ε = 0: clean accuracy).
    """
    lp_ball(threat_type, 0.0, what="threat_type")  # checked before any work
    if not eps_list:
        raise ValueError("eps_list is empty (give at least one ε)")
    eps_sorted = sorted(float(e) for e in eps_list)
    if eps_sorted[0] < 0:
        raise ValueError(f"Invalid eps: {eps_sorted[0]!r} (must be >= 0)")
    chosen = presets.get(preset)
    if eot_samples is not None:
        check_positive_int("eot_samples", eot_samples)
    shard = _dist.require(distributed)
    x, labels = as_tensors(data, y)
    x, labels = on_model(model, x, labels)
    start = time.perf_counter()
    with attack_mode(model):
        first, _, randomised = two_calls(model, x[:64])
        attacked = LogProbabilities(model) if looks_like_probabilities(first) else model
        # A randomised model: verdicts by the majority of `calls` predictions, EOT gradients.
        calls = 1
        if randomised:
            calls = chosen.eot_samples if eot_samples is None else eot_samples

        def right(inputs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
            if calls > 1:
                return robust_over_calls(attacked, inputs, truth, calls=calls)
            with torch.no_grad():
                return attacked(inputs).argmax(1) == truth

        robust = torch.cat(
            [
                right(x[i : i + batch_size], labels[i : i + batch_size])
                for i in range(0, x.shape[0], batch_size)
            ]
        )
        accuracy: list[float] = []
        classes = int(first.shape[1])
        ensembles = [
            chosen.attacks_for(lp_ball(threat_type, eps), classes) if eps > 0 else []
            for eps in eps_sorted
        ]
        if calls > 1:
            ensembles = [presets.with_eot(e, calls) for e in ensembles]
        # One step per attack at each ε (an ε = 0 point counts one): the bar moves after
        # every attack and reaches its total when the last ε's last attack is done.
        bar = tqdm(
            total=sum(max(len(e), 1) for e in ensembles),
            desc=f"curve {threat_type}",
            unit="attack",
            disable=not progress or not shard.is_main,
            leave=False,
        )
        for j, (eps, specs) in enumerate(zip(eps_sorted, ensembles, strict=True)):
            bar.set_description(f"curve {threat_type} ε={eps:g} ({j + 1}/{len(eps_sorted)})")
            if not specs:
                bar.update(1)
            if eps > 0:
                threat = lp_ball(threat_type, eps)
                broke: dict[str, int] = {}  # examples each attack broke at this ε
                for done, spec in enumerate(specs):
                    rows = robust.nonzero().flatten()
                    if rows.numel() == 0:
                        bar.update(len(specs) - done)  # nothing left to attack at this ε
                        break
                    if spec.follows is not None and not broke.get(spec.follows):
                        # As in the table: a black box runs again only after a run that broke
                        # something.
                        bar.update(1)
                        continue
                    if spec.masked_only:
                        # As in the table: only where the input gradient is masked.
                        rows = rows[masked_gradients(attacked, x[rows], labels[rows])]
                        if rows.numel() == 0:
                            bar.update(1)
                            continue
                    attack = spec.build(threat)
                    offsets = list(range(0, rows.numel(), batch_size))
                    broken: list[int] = []
                    for k in shard.batches(len(offsets)):
                        i = offsets[k]
                        sub = rows[i : i + batch_size]
                        gen = torch.Generator(device=x.device).manual_seed(
                            stable_seed(seed, "curve", threat, spec.label, i)
                        )
                        res = attack(attacked, x[sub], labels[sub], generator=gen)
                        success = res.success
                        if calls > 1:
                            success = ~right(res.x_adv, labels[sub])
                        broken += sub[success].tolist()
                    for part in _dist.all_gather(broken, shard):
                        robust[torch.tensor(part, dtype=torch.long, device=robust.device)] = False
                        broke[spec.label] = broke.get(spec.label, 0) + len(part)
                    bar.update(1)
            accuracy.append(float(robust.float().mean()))
        bar.refresh()  # the last state (100%), drawn even between display intervals
        bar.close()
    return Curve(
        threat_type=threat_type,
        eps=eps_sorted,
        accuracy=accuracy,
        preset=chosen.name,
        seconds=time.perf_counter() - start,
        n=int(x.shape[0]),
        eot_samples=calls,
    )
