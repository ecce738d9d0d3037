"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard 2017,
"Universal adversarial perturbations"): one perturbation v, the same for every image, that
changes the model's prediction on most images.

Algorithm 1 of the paper, with DeepFool as the inner step::

    v ← 0
    repeat (at most ``max_passes`` passes over the data, in a seeded random order):
        for each image x_i whose prediction is not yet changed, k̂(clip(x_i + v)) = k̂(x_i):
            Δv_i ← DeepFool's (ℓ2) minimal perturbation at clip(x_i + v) away from k̂(x_i)
            v ← P_ξ(v + Δv_i)                    (only when DeepFool succeeded)
    until the fooling rate on the data reaches ``target_fooling_rate``

One change from the paper, measured to matter: the fooling rate is checked every
``check_every`` images, not only after each pass, and the best v seen is returned (the last one
is in ``final_perturbation``). On MNIST under ℓ∞ 0.3 the rate swings between under 10% and
about 70% within a single pass (each DeepFool step is large next to ξ), so the v left at the end
of a pass is a lottery ticket (docs/minimum-norm.md).

P_ξ is the projection onto the threat's ball alone (:meth:`~multirobust.threats.LpBall.
project_ball`): v ← clip(v, −ξ, ξ) for ℓ∞, v ← v · min(1, ξ/‖v‖₂) for ℓ2, the soft threshold of
Duchi et al. (2008) for ℓ1. As in the authors' code, the DeepFool steps are ℓ2 steps whatever
the ball (option ``deepfool_norm``); only the projection follows the threat. Perturbed images
are clipped to the box [0, 1]. The fooling rate is the fraction of images whose prediction changes,
k̂(clip(x + v)) ≠ k̂(x) — measured against the model's own clean predictions, not the labels
(Moosavi-Dezfooli et al. 2017, §3).

``batch_size`` images are checked and given their DeepFool steps together, at the current v;
their Δv_i are then added one after the other, each followed by the projection. With
``batch_size=1`` this is exactly the paper's sequential algorithm; larger batches are faster
and see a v that is at most one batch old.

Not a registered per-example attack: it returns one perturbation for a data set, not one
adversarial input per example, so it does not fit the :class:`~multirobust.attacks.Attack`
contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..models.state import attack_mode
from ..threats import LpBall, Threat, ball, lp_ball
from ..threats.base import BOX
from .base import check_logits, check_nonneg, check_positive_int
from .deepfool import deepfool

__all__ = ["UniversalResult", "fooling_rate", "project_universal", "universal_perturbation"]


@dataclass(frozen=True)
class UniversalResult:
    """What :func:`universal_perturbation` returns.

    Attributes:
        perturbation: the v with the highest fooling rate on the data at any check, shape
            (C, H, W) (one image's shape), inside the threat's ball.
        fooling_rate: fooling rate on the data at each check, in order.
        checked_at: images processed (over all passes) at each check.
        passes: passes over the data that were run.
        threat: the threat model, as text.
        deepfool_calls: images that were given a DeepFool step, over all passes.
        final_perturbation: v at the end (what the paper's algorithm returns).
        settings: the options used, JSON-ready.
    """

    perturbation: torch.Tensor
    fooling_rate: list[float]
    checked_at: list[int]
    passes: int
    threat: str
    deepfool_calls: int
    final_perturbation: torch.Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def best_fooling_rate(self) -> float:
        """Fooling rate of ``perturbation`` on the data (0 if no check ran)."""
        return max(self.fooling_rate, default=0.0)


def _images(data_or_x: Any, what: str) -> torch.Tensor:
    """The (N, C, H, W) images of a tensor (or of a dataset's ``images`` tensor), checked."""
    x = getattr(data_or_x, "images", data_or_x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{what} must be a tensor of images (or a dataset with an images tensor, such as an "
            f"ImageDataset), got {type(data_or_x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating-point images in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{what} must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < BOX[0] - 1e-6 or hi > BOX[1] + 1e-6:
        raise ValueError(f"{what} has values outside [0, 1] (min {lo:.4g}, max {hi:.4g})")
    return x.detach()


def project_universal(v: torch.Tensor, threat: LpBall) -> torch.Tensor:
    """P_ξ: the Euclidean projection of a perturbation v (any shape) onto the threat's ball.

    The box is not part of it: v is shared by all images, and each perturbed image is clipped.
    """
    return threat.project_ball(v.unsqueeze(0))[0]


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]
        )


def _check_perturbation(v: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"perturbation must be a tensor, got {type(v).__name__}")
    if tuple(v.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"perturbation has shape {tuple(v.shape)}, the images have shape {tuple(x.shape[1:])}"
        )
    if not bool(torch.isfinite(v).all()):
        raise ValueError("perturbation contains NaN or infinite values")
    return v.to(device=x.device, dtype=x.dtype)


def fooling_rate(
    model: nn.Module,
    data_or_x: torch.Tensor | Any,
    perturbation: torch.Tensor,
    *,
    batch_size: int = 500,
) -> float:
    """Fraction of images whose prediction changes when ``perturbation`` is added.

    fooling rate = mean_i [ k̂(clip(x_i + v, 0, 1)) ≠ k̂(x_i) ], k̂ the model's prediction
    (labels are not used). The model runs in eval mode; its state is restored.

    Shape: images (N, C, H, W), perturbation (C, H, W).
    """
    x = _images(data_or_x, "data_or_x")
    v = _check_perturbation(perturbation, x)
    check_positive_int("batch_size", batch_size)
    lo, hi = BOX
    with attack_mode(model) as m:
        clean = _predict(m, x, batch_size)
        pert = _predict(m, (x + v).clamp(lo, hi), batch_size)
    return float((clean != pert).sum()) / x.shape[0]


def universal_perturbation(
    model: nn.Module,
    data_or_x: torch.Tensor | Any,
    threat: Threat | str = "linf:0.3",
    *,
    max_passes: int = 5,
    target_fooling_rate: float = 0.8,
    overshoot: float = 0.02,
    deepfool_steps: int = 10,
    candidates: int = 10,
    deepfool_norm: str = "l2",
    batch_size: int = 32,
    check_every: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> UniversalResult:
    """A universal perturbation for ``model`` on the images of ``data_or_x`` (Algorithm 1).

    Args:
        model: an image classifier returning logits; run in eval mode, state restored.
        data_or_x: images (N, C, H, W) in [0, 1] (or a dataset with an ``images`` tensor).
        threat: an ℓp ball (object or text): the bound ξ on v.
        max_passes: passes over the data at most.
        target_fooling_rate: stop once the fooling rate on the data reaches this (1 − δ in the
            paper, which uses 0.8).
        overshoot: DeepFool's η.
        deepfool_steps: DeepFool's iterations per image at most (10 in the paper's code).
        candidates: DeepFool's K.
        deepfool_norm: norm of the DeepFool steps, one of ``threats.NORMS``: ``"l2"`` (the
            authors' code, for every ball) or ``"linf"`` (sign steps; slightly lower fooling
            rates on MNIST under ℓ∞ 0.3, see docs/minimum-norm.md).
        batch_size: images checked and given DeepFool steps together (1: the paper exactly).
        check_every: measure the fooling rate on the whole data after about this many images
            (rounded up to whole batches) and at the end of every pass; the best v so far is
            kept. Each check is one forward pass over the data.
        seed: order of the images in each pass.
        progress: show a progress bar.

    Returns:
        :class:`UniversalResult`; ``perturbation`` has the shape of one image.
    """
    x = _images(data_or_x, "data_or_x")
    xi = ball(threat, who="A universal perturbation")
    check_positive_int("max_passes", max_passes)
    check_positive_int("deepfool_steps", deepfool_steps)
    check_positive_int("batch_size", batch_size)
    check_positive_int("check_every", check_every)
    check_nonneg("overshoot", overshoot)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r} (must be an integer >= 0)")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2:
        raise ValueError(f"Invalid candidates: {candidates!r} (must be an integer >= 2)")
    ok = isinstance(target_fooling_rate, int | float) and not isinstance(target_fooling_rate, bool)
    if not ok or not 0.0 < target_fooling_rate <= 1.0:
        raise ValueError(
            f"Invalid target_fooling_rate: {target_fooling_rate!r} (must be in (0, 1])"
        )
    step_ball = lp_ball(deepfool_norm, 1.0, what="deepfool_norm")
    settings = {
        "threat": str(xi),
        "n": int(x.shape[0]),
        "max_passes": max_passes,
        "target_fooling_rate": float(target_fooling_rate),
        "overshoot": float(overshoot),
        "deepfool_steps": deepfool_steps,
        "candidates": candidates,
        "deepfool_norm": deepfool_norm,
        "batch_size": batch_size,
        "check_every": check_every,
        "seed": seed,
    }
    lo, hi = BOX
    n = x.shape[0]
    v = torch.zeros(x.shape[1:], device=x.device, dtype=x.dtype)
    best, best_rate = v.clone(), -1.0
    history: list[float] = []
    checked_at: list[int] = []
    calls = seen = since = passes = 0
    if xi.is_trivial:
        return UniversalResult(v, history, checked_at, 0, str(xi), 0, v.clone(), settings)
    generator = torch.Generator().manual_seed(seed)
    with attack_mode(model) as m:
        with torch.no_grad():
            check_logits(m(x[:batch_size]), min(batch_size, n))
        clean = _predict(m, x, 500)
        # Total: every pass allowed (the ETA is an upper bound); reaching the target fooling
        # rate early ends the bar at 100% there.
        bar = tqdm(total=max_passes * n, unit="img", disable=not progress)
        done = False
        for _ in range(max_passes):
            passes += 1
            bar.set_description(f"universal {xi} pass {passes}/{max_passes}", refresh=False)
            order = torch.randperm(n, generator=generator).to(x.device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xp = (x[idx] + v).clamp(lo, hi)
                with torch.no_grad():
                    alive = m(xp).argmax(1) == clean[idx]
                if bool(alive.any()):
                    rows = alive.nonzero().flatten()
                    out = deepfool(
                        m,
                        xp[rows],
                        clean[idx][rows],
                        norm=step_ball,
                        steps=deepfool_steps,
                        overshoot=overshoot,
                        candidates=candidates,
                    )
                    calls += rows.numel()
                    steps_taken = out.x_adv - xp[rows]
                    for j in out.found.nonzero().flatten().tolist():
                        v = project_universal(v + steps_taken[j], xi)
                seen += idx.numel()
                since += idx.numel()
                bar.update(idx.numel())
                if since >= check_every or start + batch_size >= n:
                    since = 0
                    changed = _predict(m, (x + v).clamp(lo, hi), 500) != clean
                    rate = float(changed.sum()) / n
                    history.append(rate)
                    checked_at.append(seen)
                    if rate > best_rate:
                        best, best_rate = v.clone(), rate
                    bar.set_postfix(fooling=f"{rate:.1%}", best=f"{best_rate:.1%}")
                    if rate >= target_fooling_rate:
                        done = True
                        break
            if done:
                break
        bar.total = bar.n
        bar.refresh()
        bar.close()
    return UniversalResult(best, history, checked_at, passes, str(xi), calls, v, settings)
