"""Loss surfaces in input space: a 2-D grid on the plane of :mod:`.plane` and 1-D slices.

For each example x (label y) and an ℓp threat of radius ε, the surface is

    L(a, b) = ℓ(f(clip(x + ε(a·u + b·v))), y),   a, b ∈ {−R, …, R} (G values each),

with u the threat's steepest-ascent direction at x and v a random direction orthogonal to it
(both of unit threat norm), R = ``radius`` (1.5 by default: the picture reaches past the ball),
``clip`` the input box [0, 1] (points outside the box are clipped to it, and flagged in
``clipped``) and ℓ the cross-entropy, the logit margin max_{i≠y} z_i − z_y and optionally DLR.
The predicted class over the same grid gives the class map; ``inside`` marks the points in the
threat's ball (``threat.norm`` of the clipped point's perturbation with ``contains``' tolerance,
see ``_grid.in_ball``; box clipping that brings a point back into the ball counts).
Goodfellow et al. 2015, Engstrom et al. 2018 and Athalye et al. 2018 use such pictures to tell a
smooth loss from a masked one.

Cost: N·G² forward passes in batches of ``batch_size`` points, built on the fly; a 51×51 grid for
8 examples is 20,808 forward passes and one gradient per example.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import attack_mode
from ..threats import Threat
from ._common import (
    as_batch,
    check_points,
    check_positive,
    check_positive_int,
    cpu_generator,
    loss_fn,
    loss_names,
    lp_threat,
)
from ._grid import clean_logits, evaluate_points, plane_builder, plane_points
from .plane import ascent_plane

__all__ = ["InputSlice", "InputSurface", "input_slice", "input_surface"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass
class InputSurface:
    """Losses and predicted classes on the plane {clip(x + ε(a·u + b·v))} around each example.

    Attributes:
        threat: text form of the threat model (``linf:0.3``).
        eps: its radius ε.
        loss: the loss whose input gradient gave the ascent direction u.
        alpha: (G,) coordinates a along u, in units of ε.
        beta: (G,) coordinates b along v, in units of ε.
        labels: (N,) true labels.
        values: loss name -> (N, G, G); ``values[name][n, i, j]`` is at a = alpha[i],
            b = beta[j]. Always ``ce`` and ``margin`` (> 0 where misclassified).
        pred: (N, G, G) predicted classes.
        inside: (N, G, G) the point lies in the threat's ball (and the box).
        clipped: (N, G, G) the box clipped the point.
        center: loss name -> (N,) values at x itself.
        center_pred: (N,) predicted class at x.
        x, u, v: (N, C, H, W) the clean inputs and the two directions (unit threat norm).
        source: per example, where u came from (see :data:`.plane.SOURCES`).
        settings: how it was made (seed, batch size, fallbacks), JSON-ready.

    Shape:
        Every grid array is indexed ``[example, alpha index, beta index]``.
    """

    threat: str
    eps: float
    loss: str
    alpha: np.ndarray
    beta: np.ndarray
    labels: np.ndarray
    values: dict[str, np.ndarray]
    pred: np.ndarray
    inside: np.ndarray
    clipped: np.ndarray
    center: dict[str, np.ndarray]
    center_pred: np.ndarray
    x: np.ndarray
    u: np.ndarray
    v: np.ndarray
    source: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.labels.shape[0])

    @property
    def radius(self) -> float:
        """Half-width R of the grid, in units of ε."""
        return float(self.alpha[-1])

    def point(self, example: int, i: int, j: int) -> torch.Tensor:
        """The grid point at (alpha[i], beta[j]) of ``example``, rebuilt exactly, (C, H, W) CPU."""
        ca = torch.tensor([self.eps * float(self.alpha[i])], dtype=torch.from_numpy(self.x).dtype)
        cb = torch.tensor([self.eps * float(self.beta[j])], dtype=ca.dtype)
        sl = slice(example, example + 1)
        pts, _ = plane_points(
            torch.from_numpy(self.x[sl]),
            torch.from_numpy(self.u[sl]),
            torch.from_numpy(self.v[sl]),
            ca,
            cb,
        )
        return pts[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as a plain numpy array (no objects: loadable with ``allow_pickle=False``)."""
        out: dict[str, np.ndarray] = {
            "kind": np.array("input-surface"),
            "threat": np.array(self.threat),
            "eps": np.array(self.eps),
            "loss": np.array(self.loss),
            "alpha": self.alpha,
            "beta": self.beta,
            "labels": self.labels,
            "pred": self.pred,
            "inside": self.inside,
            "clipped": self.clipped,
            "center_pred": self.center_pred,
            "x": self.x,
            "u": self.u,
            "v": self.v,
            "source": np.array(self.source, dtype=str),
            "loss_names": np.array(list(self.values), dtype=str),
        }
        for name, value in self.values.items():
            out[f"value_{name}"] = value
            out[f"center_{name}"] = self.center[name]
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, settings: dict[str, Any] | None = None) -> InputSurface:
        """Rebuild from :meth:`arrays` (a dict or an ``np.load`` result)."""
        names = [str(s) for s in arrays["loss_names"]]
        return cls(
            threat=str(arrays["threat"]),
            eps=float(arrays["eps"]),
            loss=str(arrays["loss"]),
            alpha=np.asarray(arrays["alpha"]),
            beta=np.asarray(arrays["beta"]),
            labels=np.asarray(arrays["labels"]),
            values={k: np.asarray(arrays[f"value_{k}"]) for k in names},
            pred=np.asarray(arrays["pred"]),
            inside=np.asarray(arrays["inside"]),
            clipped=np.asarray(arrays["clipped"]),
            center={k: np.asarray(arrays[f"center_{k}"]) for k in names},
            center_pred=np.asarray(arrays["center_pred"]),
            x=np.asarray(arrays["x"]),
            u=np.asarray(arrays["u"]),
            v=np.asarray(arrays["v"]),
            source=[str(s) for s in arrays["source"]],
            settings=dict(settings or {}),
        )

    def select(self, rows: Sequence[int]) -> InputSurface:
        """The surface of the examples at positions ``rows`` only."""
        r = np.asarray(list(rows), dtype=np.int64)
        return InputSurface(
            threat=self.threat,
            eps=self.eps,
            loss=self.loss,
            alpha=self.alpha,
            beta=self.beta,
            labels=self.labels[r],
            values={k: v[r] for k, v in self.values.items()},
            pred=self.pred[r],
            inside=self.inside[r],
            clipped=self.clipped[r],
            center={k: v[r] for k, v in self.center.items()},
            center_pred=self.center_pred[r],
            x=self.x[r],
            u=self.u[r],
            v=self.v[r],
            source=[self.source[int(i)] for i in r],
            settings=dict(self.settings),
        )

    @classmethod
    def concat(cls, parts: Sequence[InputSurface]) -> InputSurface:
        """One surface from several over the same threat, grid and losses (examples stacked)."""
        if not parts:
            raise ValueError("Nothing to concatenate: no surfaces given")
        first = parts[0]
        for p in parts[1:]:
            if (
                p.threat != first.threat
                or p.loss != first.loss
                or not np.array_equal(p.alpha, first.alpha)
                or not np.array_equal(p.beta, first.beta)
                or list(p.values) != list(first.values)
            ):
                raise ValueError(
                    "Surfaces differ in threat, loss or grid and cannot be concatenated: "
                    f"{first.threat}/{first.loss}/{len(first.alpha)} vs "
                    f"{p.threat}/{p.loss}/{len(p.alpha)}"
                )

        def cat(get: Any) -> np.ndarray:
            return np.concatenate([get(p) for p in parts])

        return cls(
            threat=first.threat,
            eps=first.eps,
            loss=first.loss,
            alpha=first.alpha,
            beta=first.beta,
            labels=cat(lambda p: p.labels),
            values={k: cat(lambda p, k=k: p.values[k]) for k in first.values},
            pred=cat(lambda p: p.pred),
            inside=cat(lambda p: p.inside),
            clipped=cat(lambda p: p.clipped),
            center={k: cat(lambda p, k=k: p.center[k]) for k in first.center},
            center_pred=cat(lambda p: p.center_pred),
            x=cat(lambda p: p.x),
            u=cat(lambda p: p.u),
            v=cat(lambda p: p.v),
            source=[s for p in parts for s in p.source],
            settings=dict(first.settings),
        )


def input_surface(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | int,
    threat: Threat | str,
    *,
    points: int = 51,
    radius: float = 1.5,
    loss: str = "ce",
    losses: Sequence[str] = (),
    direction: torch.Tensor | None = None,
    direction_model: nn.Module | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    fd_samples: int = 200,
    fd_sigma: float = 0.05,
    progress: bool = True,
) -> InputSurface:
    """The loss surface of ``model`` around each example on a G×G grid (see the module doc).

    Args:
        model: classifier returning logits for [0, 1] inputs; its mode and parameter flags are
            restored afterwards.
        x: one example (C, H, W) or a batch (N, C, H, W), in [0, 1].
        y: its label (int) or labels (N,).
        threat: an ℓp ball (``LinfBall``/``L2Ball``/``L1Ball`` or text such as ``"l2:2"``).
        points: G, grid points per axis (>= 2).
        radius: R > 0, the grid's half-width in units of ε (1.5–2 shows the ball and beyond).
        loss: the loss whose gradient gives the ascent direction (``ce``, ``margin``, ``dlr``).
        losses: further losses to record over the grid (``ce`` and ``margin`` always are).
        direction: (N, ...) use s(direction) instead of the gradient for u.
        direction_model: take u from this model's gradient (a surrogate or undefended twin).
        generator: CPU ``torch.Generator`` for the random direction; else one seeded by ``seed``.
        seed: seed used when ``generator`` is None.
        batch_size: grid points per forward pass.
        fd_samples, fd_sigma: the finite-difference fallback for zero gradients
            (:func:`.plane.finite_difference_gradient`); ``fd_samples=0`` skips it.
        progress: show a progress bar over the grid points.

    Returns:
        An :class:`InputSurface`.

    Shape:
        x (N, C, H, W) -> grids (N, G, G).
    """
    tm = lp_threat(threat, "input_surface")
    g = check_points("points", points)
    r = check_positive("radius", radius)
    check_positive_int("batch_size", batch_size)
    loss_fn(loss)
    names = loss_names(loss, losses)
    if not isinstance(fd_samples, int) or isinstance(fd_samples, bool) or fd_samples < 0:
        raise ValueError(f"Invalid fd_samples: {fd_samples!r} (must be an integer >= 0)")
    check_positive("fd_sigma", fd_sigma)
    xb, yb = as_batch(x, y)
    gen = cpu_generator(generator, seed)
    alpha = np.linspace(-r, r, g)
    beta = np.linspace(-r, r, g)
    with ExitStack() as stack:
        stack.enter_context(attack_mode(model))
        if direction_model is not None:
            # Entered after the model's: a twin inside the model is restored first, then all.
            stack.enter_context(attack_mode(direction_model))
        logits = clean_logits(model, xb, yb)
        plane = ascent_plane(
            model,
            xb,
            yb,
            tm,
            loss=loss,
            generator=gen,
            direction=direction,
            direction_model=direction_model,
            fd_samples=fd_samples,
            fd_sigma=float(fd_sigma),
            batch_size=batch_size,
        )
        # Point k = i·G + j of an example is at (alpha[i], beta[j]).
        ca = torch.tensor(tm.eps * alpha, dtype=xb.dtype).to(xb.device).repeat_interleave(g)
        cb = torch.tensor(tm.eps * beta, dtype=xb.dtype).to(xb.device).repeat(g)
        gg = g * g
        build = plane_builder(xb, yb, plane.u, plane.v, ca, cb, tm)
        grid = evaluate_points(
            model,
            build,
            xb.shape[0] * gg,
            device=xb.device,
            dtype=xb.dtype,
            names=names,
            batch_size=batch_size,
            progress=progress,
            desc=f"input surface {tm}",
        )
    shape = (xb.shape[0], g, g)
    return InputSurface(
        threat=str(tm),
        eps=tm.eps,
        loss=loss,
        alpha=alpha,
        beta=beta,
        labels=_np(yb),
        values={k: val.reshape(shape) for k, val in grid.values.items()},
        pred=grid.pred.reshape(shape),
        inside=grid.inside.reshape(shape),
        clipped=grid.clipped.reshape(shape),
        center={k: _np(loss_fn(k)(logits, yb)) for k in names},
        center_pred=_np(logits.argmax(1)),
        x=_np(xb),
        u=_np(plane.u),
        v=_np(plane.v),
        source=plane.source,
        settings={
            "seed": None if generator is not None else int(seed),
            "batch_size": batch_size,
            "fd_samples": fd_samples,
            "fd_sigma": float(fd_sigma),
            "direction": "given"
            if direction is not None
            else ("direction_model" if direction_model is not None else "gradient"),
        },
    )


@dataclass
class InputSlice:
    """Losses along the segment from x towards an end point: clip(x + t·(x_end − x)).

    Attributes:
        threat: text of the threat used to mark ``inside`` (None: no marks).
        t: (P,) positions; t = 0 is x, t = 1 is x_end.
        labels: (N,) true labels.
        values: loss name -> (N, P).
        pred: (N, P) predicted classes.
        inside: (N, P) the point lies in the threat's ball (all True without a threat).
        clipped: (N, P) the box clipped the point.
        end_norm: (N,) ‖x_end − x‖ in the threat's norm (NaN without a threat).
    """

    threat: str | None
    t: np.ndarray
    labels: np.ndarray
    values: dict[str, np.ndarray]
    pred: np.ndarray
    inside: np.ndarray
    clipped: np.ndarray
    end_norm: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as a plain numpy array (loadable with ``allow_pickle=False``)."""
        out: dict[str, np.ndarray] = {
            "kind": np.array("input-slice"),
            "threat": np.array("" if self.threat is None else self.threat),
            "t": self.t,
            "labels": self.labels,
            "pred": self.pred,
            "inside": self.inside,
            "clipped": self.clipped,
            "end_norm": self.end_norm,
            "loss_names": np.array(list(self.values), dtype=str),
        }
        for name, value in self.values.items():
            out[f"value_{name}"] = value
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> InputSlice:
        """Rebuild from :meth:`arrays`."""
        names = [str(s) for s in arrays["loss_names"]]
        threat = str(arrays["threat"])
        return cls(
            threat=threat or None,
            t=np.asarray(arrays["t"]),
            labels=np.asarray(arrays["labels"]),
            values={k: np.asarray(arrays[f"value_{k}"]) for k in names},
            pred=np.asarray(arrays["pred"]),
            inside=np.asarray(arrays["inside"]),
            clipped=np.asarray(arrays["clipped"]),
            end_norm=np.asarray(arrays["end_norm"]),
        )

    @classmethod
    def concat(cls, parts: Sequence[InputSlice]) -> InputSlice:
        """One slice object from several over the same threat and positions t."""
        if not parts:
            raise ValueError("Nothing to concatenate: no slices given")
        first = parts[0]
        for p in parts[1:]:
            if p.threat != first.threat or not np.array_equal(p.t, first.t):
                raise ValueError("Slices differ in threat or positions and cannot be concatenated")

        def cat(get: Any) -> np.ndarray:
            return np.concatenate([get(p) for p in parts])

        return cls(
            threat=first.threat,
            t=first.t,
            labels=cat(lambda p: p.labels),
            values={k: cat(lambda p, k=k: p.values[k]) for k in first.values},
            pred=cat(lambda p: p.pred),
            inside=cat(lambda p: p.inside),
            clipped=cat(lambda p: p.clipped),
            end_norm=cat(lambda p: p.end_norm),
        )


def input_slice(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | int,
    x_end: torch.Tensor,
    threat: Threat | str | None = None,
    *,
    points: int = 101,
    t_range: tuple[float, float] = (-0.5, 1.5),
    losses: Sequence[str] = (),
    batch_size: int = 1024,
    progress: bool = True,
) -> InputSlice:
    """The loss along the line from x through ``x_end`` (e.g. the evaluation's adversarial
    example): ℓ(f(clip(x + t·(x_end − x))), y) for P values of t in ``t_range``.

    Args:
        model: classifier; mode and flags restored afterwards.
        x: (C, H, W) or (N, C, H, W) clean inputs; y: label(s).
        x_end: end points, same shape as x, in [0, 1].
        threat: an ℓp ball to mark which points it contains (optional).
        points: P >= 2.
        t_range: (t_min, t_max), t_min < t_max; the default shows a margin on both sides.
        losses: extra losses (``ce`` and ``margin`` always).
        batch_size: points per forward pass.
        progress: progress bar.

    Shape:
        x (N, C, H, W) -> (N, P).
    """
    tm = lp_threat(threat, "input_slice") if threat is not None else None
    p = check_points("points", points)
    check_positive_int("batch_size", batch_size)
    names = loss_names("ce", losses)
    lo, hi = (float(t) for t in t_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"Invalid t_range: {t_range!r} (must be finite with t_min < t_max)")
    xb, yb = as_batch(x, y)
    if not isinstance(x_end, torch.Tensor):
        raise TypeError(f"x_end must be a torch.Tensor, got {type(x_end).__name__}")
    if x_end.numel() != xb.numel():
        raise ValueError(f"x_end has shape {tuple(x_end.shape)}, expected {tuple(xb.shape)} like x")
    xe = x_end.detach().to(xb.device, xb.dtype).reshape(xb.shape)
    t = np.linspace(lo, hi, p)
    t_all = torch.tensor(t, dtype=xb.dtype).to(xb.device)
    d = xe - xb
    build = plane_builder(xb, yb, d, d, t_all, torch.zeros_like(t_all), tm)

    with attack_mode(model):
        clean_logits(model, xb, yb)
        grid = evaluate_points(
            model,
            build,
            xb.shape[0] * p,
            device=xb.device,
            dtype=xb.dtype,
            names=names,
            batch_size=batch_size,
            progress=progress,
            desc="input slice",
        )
    shape = (xb.shape[0], p)
    end_norm = _np(tm.norm(d)) if tm is not None else np.full(xb.shape[0], np.nan)
    return InputSlice(
        threat=None if tm is None else str(tm),
        t=t,
        labels=_np(yb),
        values={k: val.reshape(shape) for k, val in grid.values.items()},
        pred=grid.pred.reshape(shape),
        inside=grid.inside.reshape(shape),
        clipped=grid.clipped.reshape(shape),
        end_norm=end_norm,
    )
