"""Evaluate a model on many input points in large batches: the engine of every input surface.

Grid points are never materialised all at once: a batch of points is made from its flat
indices, one example's run of points at a time by broadcasting (two fused multiply-adds, a clamp
and a min/max pass), so memory stays at one batch and the cost is that of the forward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..threats import LpBall
from ._common import loss_fn

#: ``build(start, stop) -> (points, labels, clipped, inside)`` for the flat point indices
#: start…stop−1: the inputs (B, ...), their labels (B,), whether the box clipped each (B,) and
#: whether each lies in the threat's ball (B,).
Builder = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

#: Tolerance of the ball test, the default of ``Threat.contains``.
ATOL = 1e-5


def _per_point(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def plane_points(
    x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """clip(x + ca·u + cb·v) and (B,) whether the box clipped it; ca, cb are (B,) in input units.

    x, u, v are (B, ...) or (1, ...) (broadcast over the B coefficients). The one formula behind
    every grid point, so a point can be rebuilt bit for bit later.
    """
    raw = torch.addcmul(torch.addcmul(x, _per_point(ca, x), u), _per_point(cb, x), v)
    lo, hi = torch.aminmax(raw.flatten(1), dim=1)
    return raw.clamp_(0.0, 1.0), (lo < 0.0) | (hi > 1.0)


def in_ball(threat: LpBall, points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B,) the points lie in the threat's ball: ‖p − x‖ ≤ ε(1 + atol) + atol, as ``contains``.

    Grid points are clamped to the box, so ``contains``' box test holds by construction; the
    norm is the threat's own (``threat.norm``), taken in the points' dtype instead of float64,
    which makes the test several times cheaper than ``contains`` and keeps the grid's cost at
    its forward passes. Every point reported as evidence is re-checked with ``contains``.
    """
    return threat.norm(points - centres) <= threat.eps * (1 + ATOL) + ATOL


def plane_builder(
    x: torch.Tensor,
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    ca: torch.Tensor,
    cb: torch.Tensor,
    threat: LpBall | None,
) -> Builder:
    """Points clip(x_e + ca_k·u_e + cb_k·v_e) for flat index e·P + k, P = len(ca).

    Args:
        x, u, v: (N, ...) clean inputs and the two directions of each example.
        y: (N,) labels.
        ca, cb: (P,) coefficients of every point of an example, in input units.
        threat: the ball for ``inside`` (None: every point counts as inside).
    """
    per = int(ca.shape[0])

    def build(
        start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pts, labels, clipped, inside = [], [], [], []
        f = start
        while f < stop:
            e, k0 = divmod(f, per)
            k1 = min(per, k0 + stop - f)
            xe = x[e : e + 1]
            p, c = plane_points(xe, u[e : e + 1], v[e : e + 1], ca[k0:k1], cb[k0:k1])
            pts.append(p)
            clipped.append(c)
            labels.append(y[e : e + 1].expand(k1 - k0))
            if threat is not None:
                inside.append(in_ball(threat, p, xe))
            else:
                inside.append(torch.ones(k1 - k0, dtype=torch.bool, device=x.device))
            f += k1 - k0
        if len(pts) == 1:
            return pts[0], labels[0], clipped[0], inside[0]
        return torch.cat(pts), torch.cat(labels), torch.cat(clipped), torch.cat(inside)

    return build


@dataclass
class GridValues:
    """Per point: each loss, the predicted class, inside the threat's ball, clipped by the box."""

    values: dict[str, np.ndarray]
    pred: np.ndarray
    inside: np.ndarray
    clipped: np.ndarray


def evaluate_points(
    model: nn.Module,
    build: Builder,
    total: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    names: Sequence[str],
    batch_size: int,
    progress: bool,
    desc: str,
) -> GridValues:
    """Forward ``total`` points in batches of ``batch_size``; the caller sets the model's mode.

    Results stay on the device until the end (no host sync per batch).
    """
    fns = {name: loss_fn(name) for name in names}
    values = {name: torch.empty(total, device=device, dtype=dtype) for name in names}
    pred = torch.empty(total, device=device, dtype=torch.int64)
    inside = torch.empty(total, device=device, dtype=torch.bool)
    clipped = torch.empty(total, device=device, dtype=torch.bool)
    with tqdm(total=total, desc=desc, unit="pt", disable=not progress, leave=False) as bar:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            with torch.no_grad():
                points, labels, was_clipped, is_inside = build(start, stop)
                logits = model(points)
                for name, fn in fns.items():
                    values[name][start:stop] = fn(logits, labels)
                pred[start:stop] = logits.argmax(1)
                inside[start:stop] = is_inside
                clipped[start:stop] = was_clipped
            bar.update(stop - start)
    return GridValues(
        values={k: v.cpu().numpy() for k, v in values.items()},
        pred=pred.cpu().numpy(),
        inside=inside.cpu().numpy(),
        clipped=clipped.cpu().numpy(),
    )


def clean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's logits on the clean inputs, checked to be (N, C) with labels in range.

    Run before any grid so that a model or label problem is reported before the long work.
    """
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"The model must return (N, C) logits, got {shape}")
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
        raise ValueError(
            f"Labels out of range: {int(y.min())}..{int(y.max())} "
            f"(the model has {logits.shape[1]} classes)"
        )
    return logits
