"""Figures of landscapes: contour, class map, 3-D surface, 1-D slice, weight-space curves.

Each function returns a matplotlib figure (Agg backend, via :func:`multirobust.pages.pyplot`);
:func:`multirobust.pages.figure_png` / ``figure_svg`` render it. Axes are in units of ε for input
surfaces (the ball's boundary along each axis is at ±1) and in units of the filter-normalised
direction for weight surfaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import pages
from .input_space import InputSlice, InputSurface
from .masking import ExampleEvidence
from .weight_space import WeightSurface

__all__ = [
    "class_colours",
    "example_figure",
    "slice_axes",
    "surface_axes",
    "weight_figure",
]

_LOSS_LABEL = {"ce": "cross-entropy", "margin": "logit margin", "dlr": "DLR"}


def class_colours(num_classes: int) -> list[Any]:
    """One fixed colour per class (the same class has the same colour in every class map)."""
    plt = pages.pyplot()
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [cmap(c % cmap.N) for c in range(num_classes)]


def _grid(surface: InputSurface) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(surface.alpha, surface.beta, indexing="ij")


def _ball(ax: Any, surface: InputSurface, k: int) -> None:
    """The ball's boundary as a black line and the outside hatched."""
    a, b = _grid(surface)
    inside = surface.inside[k].astype(float)
    if 0 < inside.mean() < 1:
        ax.contour(a, b, inside, levels=[0.5], colors="k", linewidths=1.2)
        ax.contourf(a, b, inside, levels=[-0.5, 0.5], colors="none", hatches=["///"])
    ax.plot([0], [0], marker="o", color="w", markeredgecolor="k", markersize=5)


def surface_axes(
    ax: Any,
    surface: InputSurface,
    k: int,
    *,
    loss: str | None = None,
    evidence: ExampleEvidence | None = None,
) -> Any:
    """Filled contours of the loss of example ``k`` on ``ax``; returns the contour set."""
    plt = pages.pyplot()
    name = loss or surface.loss
    a, b = _grid(surface)
    z = surface.values[name][k]
    cs = ax.contourf(a, b, z, levels=20, cmap="viridis")
    plt.colorbar(cs, ax=ax, fraction=0.046, pad=0.04)
    _ball(ax, surface, k)
    if evidence is not None and evidence.point is not None:
        ax.plot(*evidence.point, marker="*", color="r", markersize=12, markeredgecolor="k")
    ax.set_xlabel("a: steepest ascent (× ε)")
    ax.set_ylabel("b: random ⊥ (× ε)")
    ax.set_title(f"{_LOSS_LABEL.get(name, name)}", fontsize=9)
    ax.set_aspect("equal")
    return cs


def class_axes(ax: Any, surface: InputSurface, k: int, num_classes: int) -> None:
    """The predicted class over the grid of example ``k``, one fixed colour per class."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = class_colours(num_classes)
    r = surface.radius
    ax.imshow(
        surface.pred[k].T,
        origin="lower",
        extent=(-r, r, -r, r),
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=num_classes - 0.5,
        interpolation="nearest",
    )
    _ball(ax, surface, k)
    present = sorted({int(c) for c in np.unique(surface.pred[k])})
    handles = [
        Patch(color=colours[c], label=f"{c}" + (" (true)" if c == surface.labels[k] else ""))
        for c in present
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.8)
    ax.set_xlabel("a (× ε)")
    ax.set_title("predicted class", fontsize=9)


def slice_axes(ax: Any, slc: InputSlice, k: int, *, loss: str = "ce") -> None:
    """Loss along the line to the adversarial example (t = 1), misclassified part shaded."""
    t = slc.t
    ax.plot(t, slc.values[loss][k], color="C0", label=_LOSS_LABEL.get(loss, loss))
    wrong = slc.pred[k] != slc.labels[k]
    lo, hi = ax.get_ylim() if wrong.any() else (0, 0)
    if wrong.any():
        ax.fill_between(t, lo, hi, where=wrong, color="C3", alpha=0.15, label="misclassified")
    if slc.threat is not None and not slc.inside[k].all():
        ax.fill_between(
            t, lo, hi, where=~slc.inside[k], color="0.5", alpha=0.15, label="outside the ball"
        )
    ax.axvline(1.0, color="k", linestyle="--", linewidth=0.8)
    ax.set_xlabel("t (x + t·(x_adv − x); x_adv at t = 1)")
    ax.set_title("slice to the attack's point", fontsize=9)
    ax.legend(fontsize=7)


def example_figure(
    surface: InputSurface,
    k: int,
    *,
    num_classes: int,
    slc: InputSlice | None = None,
    evidence: ExampleEvidence | None = None,
    three_d: bool = True,
    title: str | None = None,
) -> Any:
    """One example in one row: loss contours, class map, 3-D loss surface, the 1-D slice."""
    plt = pages.pyplot()
    panels = 2 + int(three_d) + int(slc is not None)
    fig = plt.figure(figsize=(3.6 * panels, 3.3))
    pos = 1
    ax = fig.add_subplot(1, panels, pos)
    surface_axes(ax, surface, k, evidence=evidence)
    pos += 1
    class_axes(fig.add_subplot(1, panels, pos), surface, k, num_classes)
    if three_d:
        pos += 1
        ax3 = fig.add_subplot(1, panels, pos, projection="3d")
        a, b = _grid(surface)
        ax3.plot_surface(a, b, surface.values[surface.loss][k], cmap="viridis", linewidth=0)
        ax3.set_xlabel("a")
        ax3.set_ylabel("b")
        ax3.set_title(_LOSS_LABEL.get(surface.loss, surface.loss), fontsize=9)
    if slc is not None:
        pos += 1
        slice_axes(fig.add_subplot(1, panels, pos), slc, k)
    fig.suptitle(title or f"{surface.threat}, label {int(surface.labels[k])}", fontsize=10)
    # Fixed spacing instead of tight_layout: the layout pass costs as much as drawing the figure.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.17, top=0.82, wspace=0.4)
    return fig


def weight_figure(
    surfaces: Mapping[str, WeightSurface] | Sequence[tuple[str, WeightSurface]],
) -> Any:
    """Weight-space landscapes of one or more models on one figure.

    1-D curves: loss and accuracy against α, one line per model (adversarial ones dashed).
    2-D surfaces: one contour panel per model.
    """
    plt = pages.pyplot()
    items = list(surfaces.items()) if isinstance(surfaces, Mapping) else list(surfaces)
    if not items:
        raise ValueError("No weight surfaces to draw")
    curves = [(name, s) for name, s in items if s.dims == 1]
    grids = [(name, s) for name, s in items if s.dims == 2]
    panels = (2 if curves else 0) + len(grids)
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig, grid_axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.4 * rows), squeeze=False)
    axes = [ax for row in grid_axes for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    if curves:
        ax_l, ax_a = axes[0], axes[1]
        for c, (name, s) in enumerate(curves):
            ax_l.plot(s.alpha, s.loss, color=f"C{c}", label=name)
            ax_a.plot(s.alpha, 100 * s.accuracy, color=f"C{c}", label=name)
            if s.adv_loss is not None and s.adv_accuracy is not None:
                adv = f"{name} ({s.settings.get('threat')})"
                ax_l.plot(s.alpha, s.adv_loss, color=f"C{c}", linestyle="--", label=adv)
                ax_a.plot(s.alpha, 100 * s.adv_accuracy, color=f"C{c}", linestyle="--", label=adv)
        ax_l.set_yscale("log")
        ax_l.set_xlabel("α (filter-normalised direction)")
        ax_l.set_title("loss", fontsize=9)
        ax_a.set_xlabel("α")
        ax_a.set_ylim(0, 100)
        ax_a.set_title("accuracy (%)", fontsize=9)
        ax_l.legend(fontsize=7)
        axes = axes[2:]
    for ax, (name, s) in zip(axes[: len(grids)], grids, strict=True):
        assert s.beta is not None
        a, b = np.meshgrid(s.alpha, s.beta, indexing="ij")
        # Log levels: the loss grows by orders of magnitude away from the minimum.
        z = np.log10(np.maximum(s.loss, 1e-8))
        cs = ax.contour(a, b, z, levels=15, cmap="viridis")
        ax.clabel(cs, fontsize=6, fmt="%.1f")
        ax.plot([0], [0], marker="o", color="k", markersize=4)
        ax.set_title(f"{name}: log10 loss", fontsize=9)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig
