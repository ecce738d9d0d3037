"""Masking evidence from input surfaces: grid points that beat the attacks, and roughness.

For examples the attacks left robust, an input surface (:func:`.input_surface`) searches a 2-D
slice of the ball exhaustively, without trusting the model's gradients beyond choosing the
plane. Three things come out, per example:

1. **The grid's best loss inside the ball** against the loss the attacks reached: if a plain
   grid search gets higher, the attack's optimiser did not find the maximum it was built for.
2. **A broken example**: a grid point inside the ball (``threat.contains``) that the model
   misclassifies, confirmed by fresh forward passes on the rebuilt point. The attacks missed
   it, so their robust accuracy is too high; the point is returned as the proof.
3. **Roughness**, defined on the surface's loss L (whose gradient gave the ascent direction u)
   with L₀ = L(x), the grid points I inside the ball and the ray R = {(a, b₀) ∈ I : a ≥ 0} along u
   (b₀ the grid's β closest to 0; exactly 0 for an odd number of points)::

       ΔL_best = max(0, max_{(a,b) ∈ I} L(a, b) − L₀)   the best increase anywhere in the plane
       ΔL_grad = max(0, max_{(a,b) ∈ R} L(a, b) − L₀)   the best increase along the gradient
       gradient_share = ΔL_grad / ΔL_best                (1 when ΔL_best ≤ 10⁻⁶·max(1, |L₀|))
       roughness = 1 − gradient_share

   When the model's gradient of the loss was zero or not finite (u came from a fallback, see
   :mod:`.plane`), the gradient gives no increase at all: ``gradient_share = 0``. On a locally
   linear loss the gradient direction is the best in the plane (for ℓ∞, ℓ2 and ℓ1 alike, since
   εu maximises the linear term over the whole ball), so roughness is 0; it nears 1 where
   the gradient points nowhere useful and some other direction raises the loss (Athalye et al.
   2018's shattered and vanishing gradients; Engstrom et al. 2018's picture of adversarial logit
   pairing).

The evaluation turns a non-empty ``broken_index`` into its ``landscape-beats-attacks`` check
(:meth:`MaskingEvidence.check_fields`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import attack_mode
from ..threats import Threat
from ._common import check_positive_int, loss_fn, lp_threat
from .input_space import InputSurface, input_surface

__all__ = [
    "CHECK_NAME",
    "ExampleEvidence",
    "MaskingEvidence",
    "landscape_check",
    "masking_evidence",
]

#: Name of the evaluation check this evidence feeds.
CHECK_NAME = "landscape-beats-attacks"


@dataclass
class ExampleEvidence:
    """What the grid found around one example.

    Attributes:
        index: the example's index (the caller's ``indices``, else its position).
        label: true label.
        clean_correct: the model classifies x correctly (otherwise nothing is "broken").
        source: where the plane's ascent direction came from (``gradient``, ...).
        grid_max_loss: highest surface loss over the grid points inside the ball.
        attack_loss: the loss the attacks reached (same loss), or None when not given.
        grid_beats_attack: grid_max_loss > attack_loss (relative margin 10⁻⁴), or None.
        broken: a confirmed misclassified grid point inside the ball.
        point: (a, b) of that point in units of ε, or None.
        point_margin: the logit margin there (> 0: misclassified), or None.
        gradient_share: ΔL_grad / ΔL_best (see the module docstring).
        roughness: 1 − gradient_share.
    """

    index: int
    label: int
    clean_correct: bool
    source: str
    grid_max_loss: float
    attack_loss: float | None
    grid_beats_attack: bool | None
    broken: bool
    point: tuple[float, float] | None
    point_margin: float | None
    gradient_share: float
    roughness: float


@dataclass
class MaskingEvidence:
    """The masking evidence of one threat over a sample of examples.

    Attributes:
        threat: text of the threat model.
        loss: the surface loss compared and used for roughness.
        examples: one :class:`ExampleEvidence` per example.
        broken_index: indices (``ExampleEvidence.index``) of the broken examples.
        x_broken: (M, C, H, W) their confirmed adversarial points, in ``broken_index`` order;
            each passes ``threat.contains`` and is misclassified.
        surface: the input surface the evidence was read from.
    """

    threat: str
    loss: str
    examples: list[ExampleEvidence]
    broken_index: list[int]
    x_broken: torch.Tensor
    surface: InputSurface | None = field(default=None, repr=False)

    @property
    def fired(self) -> bool:
        """True when the grid broke at least one example."""
        return bool(self.broken_index)

    def roughness(self) -> float:
        """Mean roughness over the clean-correct examples (NaN when there are none)."""
        vals = [e.roughness for e in self.examples if e.clean_correct]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary and per-example records (the points themselves excluded)."""
        beats = [e.grid_beats_attack for e in self.examples if e.grid_beats_attack is not None]
        rough = self.roughness()
        return {
            "threat": self.threat,
            "loss": self.loss,
            "examples": len(self.examples),
            "clean_correct": sum(e.clean_correct for e in self.examples),
            "broken": len(self.broken_index),
            "broken_index": list(self.broken_index),
            "grid_beats_attack": sum(bool(b) for b in beats) if beats else None,
            "mean_roughness": None if math.isnan(rough) else rough,
            "per_example": [_json_example(e) for e in self.examples],
        }

    def check_fields(self) -> dict[str, Any] | None:
        """``name``, ``message``, ``evidence`` and ``threat`` of the evaluation check, or None.

        ``evaluation.report.Check(**evidence.check_fields())`` builds the check.
        """
        if not self.fired:
            return None
        k, n = len(self.broken_index), len(self.examples)
        return {
            "name": CHECK_NAME,
            "message": (
                f"A grid search over a 2-D slice of the {self.threat} ball found misclassified "
                f"inputs for {k} of {n} examples the attacks left robust: the attacks' "
                "optimisation failed there (masked or rough gradients), so the robust accuracy "
                "was too high. The examples are counted as broken by 'landscape'."
            ),
            "evidence": {
                "examples": n,
                "broken": k,
                "broken_index": list(self.broken_index),
                "mean_roughness": _finite(self.roughness()),
                "sources": sorted({e.source for e in self.examples}),
            },
            "threat": self.threat,
        }


def _finite(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _json_example(e: ExampleEvidence) -> dict[str, Any]:
    return {
        "index": e.index,
        "label": e.label,
        "clean_correct": e.clean_correct,
        "source": e.source,
        "grid_max_loss": _finite(e.grid_max_loss),
        "attack_loss": None if e.attack_loss is None else _finite(e.attack_loss),
        "grid_beats_attack": e.grid_beats_attack,
        "broken": e.broken,
        "point": None if e.point is None else [float(e.point[0]), float(e.point[1])],
        "point_margin": None if e.point_margin is None else _finite(e.point_margin),
        "gradient_share": _finite(e.gradient_share),
        "roughness": _finite(e.roughness),
    }


def _share(surface: InputSurface, n: int) -> float:
    if surface.source[n] not in ("gradient", "given"):
        return 0.0
    values = surface.values[surface.loss][n]
    inside = surface.inside[n]
    l0 = float(surface.center[surface.loss][n])
    best = max(0.0, float(values[inside].max()) - l0) if inside.any() else 0.0
    if best <= 1e-6 * max(1.0, abs(l0)):
        return 1.0
    j0 = int(np.abs(surface.beta).argmin())
    ray = inside[:, j0] & (surface.alpha >= 0)
    along = max(0.0, float(values[ray, j0].max()) - l0) if ray.any() else 0.0
    return min(1.0, along / best)


def masking_evidence(
    model: nn.Module,
    surface: InputSurface,
    *,
    attack_loss: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    x_attack: torch.Tensor | None = None,
    indices: Sequence[int] | None = None,
    confirm_calls: int = 1,
    candidates: int = 5,
) -> MaskingEvidence:
    """Read the masking evidence from an input surface of examples the attacks left robust.

    Args:
        model: the classifier the surface was drawn for (for confirming broken points).
        surface: from :func:`.input_surface`; a radius of 1 puts all the grid's resolution
            inside the ball.
        attack_loss: (N,) the surface's loss (``surface.loss``) at the attacks' best points.
        x_attack: (N, C, H, W) the attacks' best points instead; the loss is computed there.
        indices: the examples' indices to report (default 0…N−1).
        confirm_calls: fresh forward passes that must all misclassify a grid point before it
            counts (raise it for randomised models).
        candidates: misclassified grid points tried per example, highest margin first, until
            one is confirmed.

    Returns:
        A :class:`MaskingEvidence`.
    """
    tm = lp_threat(surface.threat, "masking_evidence")
    check_positive_int("confirm_calls", confirm_calls)
    check_positive_int("candidates", candidates)
    n = surface.n
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(idx) != n:
        raise ValueError(f"indices has {len(idx)} entries for {n} examples")
    if attack_loss is not None and x_attack is not None:
        raise ValueError("Give attack_loss or x_attack, not both")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = torch.from_numpy(surface.x).dtype
    x = torch.from_numpy(surface.x).to(device)
    y = torch.from_numpy(surface.labels).to(device)
    fn = loss_fn(surface.loss)
    reached: list[float | None] = [None] * n
    with attack_mode(model):
        if x_attack is not None:
            if tuple(x_attack.shape) != tuple(x.shape):
                raise ValueError(
                    f"x_attack has shape {tuple(x_attack.shape)}, expected {tuple(x.shape)}"
                )
            with torch.no_grad():
                vals = fn(model(x_attack.to(device, dtype)), y)
            reached = [float(v) for v in vals.cpu()]
        elif attack_loss is not None:
            arr = np.asarray(
                attack_loss.detach().cpu()
                if isinstance(attack_loss, torch.Tensor)
                else attack_loss,
                dtype=np.float64,
            ).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"attack_loss has {arr.shape[0]} entries for {n} examples")
            reached = [float(v) for v in arr]
        records: list[ExampleEvidence] = []
        broken_index: list[int] = []
        points: list[torch.Tensor] = []
        values = surface.values[surface.loss]
        margins = surface.values["margin"]
        for k in range(n):
            label = int(surface.labels[k])
            correct = int(surface.center_pred[k]) == label
            inside = surface.inside[k]
            grid_max = float(values[k][inside].max()) if inside.any() else math.nan
            beats: bool | None = None
            if reached[k] is not None and math.isfinite(grid_max):
                ref = float(reached[k])  # type: ignore[arg-type]
                beats = grid_max > ref + 1e-4 * max(1.0, abs(ref))
            found = None
            if correct:
                wrong = inside & (surface.pred[k] != label)
                order = np.argsort(-np.where(wrong, margins[k], -np.inf), axis=None)
                for flat in order[: min(candidates, int(wrong.sum()))]:
                    i, j = divmod(int(flat), len(surface.beta))
                    p = surface.point(k, i, j).to(device).unsqueeze(0)
                    if not bool(tm.contains(p, x[k : k + 1]).all()):
                        continue
                    with torch.no_grad():
                        ok = all(int(model(p).argmax(1)) != label for _ in range(confirm_calls))
                    if ok:
                        found = (i, j, p[0])
                        break
            share = _share(surface, k)
            if found is not None:
                broken_index.append(idx[k])
                points.append(found[2].detach().cpu())
            records.append(
                ExampleEvidence(
                    index=idx[k],
                    label=label,
                    clean_correct=correct,
                    source=surface.source[k],
                    grid_max_loss=grid_max,
                    attack_loss=reached[k],
                    grid_beats_attack=beats,
                    broken=found is not None,
                    point=None
                    if found is None
                    else (float(surface.alpha[found[0]]), float(surface.beta[found[1]])),
                    point_margin=None if found is None else float(margins[k, found[0], found[1]]),
                    gradient_share=share,
                    roughness=1.0 - share,
                )
            )
    shape = (0,) + tuple(surface.x.shape[1:])
    return MaskingEvidence(
        threat=surface.threat,
        loss=surface.loss,
        examples=records,
        broken_index=broken_index,
        x_broken=torch.stack(points) if points else torch.zeros(shape, dtype=dtype),
        surface=surface,
    )


def landscape_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat | str,
    *,
    attack_loss: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    x_attack: torch.Tensor | None = None,
    indices: Sequence[int] | None = None,
    points: int = 51,
    radius: float = 1.0,
    loss: str = "ce",
    seed: int = 0,
    batch_size: int = 1024,
    confirm_calls: int = 1,
    progress: bool = True,
    **surface_options: Any,
) -> MaskingEvidence:
    """Draw the input surfaces of ``x`` (radius 1: the whole grid at the ball's scale) and read
    the masking evidence from them: :func:`.input_surface` then :func:`masking_evidence`.

    Args:
        model, x, y, threat: as for :func:`.input_surface` (x: still-robust examples).
        attack_loss, x_attack, indices, confirm_calls: as for :func:`masking_evidence`.
        points, radius, loss, seed, batch_size, progress: the grid (G², in units of ε).
        surface_options: further :func:`.input_surface` options (``direction_model``, ...).

    Returns:
        The :class:`MaskingEvidence`, with its ``surface``.
    """
    surface = input_surface(
        model,
        x,
        y,
        threat,
        points=points,
        radius=radius,
        loss=loss,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **surface_options,
    )
    return masking_evidence(
        model,
        surface,
        attack_loss=attack_loss,
        x_attack=x_attack,
        indices=indices,
        confirm_calls=confirm_calls,
    )
