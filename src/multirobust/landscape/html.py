"""HTML for landscapes: a section any report can embed, and its figures as PNG/SVG files.

:func:`render_section` is what the evaluation report embeds (given the grids it computed);
``multirobust landscape`` wraps the same section in a page of its own. Everything is built with
:mod:`multirobust.pages`, so it looks like and escapes text like every other report.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import pages
from .input_space import InputSlice, InputSurface
from .masking import ExampleEvidence, MaskingEvidence
from .plots import example_figure, weight_figure
from .weight_space import WeightSurface

__all__ = ["LandscapeFigure", "build_figures", "evidence_table", "render_section", "slug"]


@dataclass
class LandscapeFigure:
    """A rendered figure: file stem, caption, PNG bytes and (optionally) SVG bytes."""

    name: str
    caption: str
    png: bytes
    svg: bytes | None = None


def slug(text: str) -> str:
    """A file-name-safe form of a threat's text: ``linf:8/255`` -> ``linf-8_255``."""
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", text.replace("/", "_")).strip("-")


def _render(fig: Any, name: str, caption: str, svg: bool, dpi: int) -> LandscapeFigure:
    svg_bytes = None
    if svg:
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        svg_bytes = buf.getvalue()
    return LandscapeFigure(name, caption, pages.figure_png(fig, dpi=dpi), svg_bytes)


def _num_classes(surfaces: Sequence[InputSurface]) -> int:
    top = max((int(s.pred.max()) for s in surfaces if s.pred.size), default=0)
    top = max([top] + [int(s.labels.max()) for s in surfaces if s.labels.size])
    return max(10, top + 1)


def _order(surface: InputSurface, ev: MaskingEvidence | None, limit: int) -> list[int]:
    """Examples to draw: those the grid broke first, then the rest, at most ``limit``."""
    broken: list[int] = []
    if ev is not None:
        pos = {e.index: k for k, e in enumerate(ev.examples)}
        broken = [pos[i] for i in ev.broken_index if i in pos]
    rest = [k for k in range(surface.n) if k not in broken]
    return (broken + rest)[:limit]


def build_figures(
    surfaces: Sequence[InputSurface],
    *,
    evidence: Sequence[MaskingEvidence | None] = (),
    slices: Sequence[InputSlice | None] = (),
    weights: Mapping[str, WeightSurface] | None = None,
    indices: Sequence[Sequence[int]] = (),
    num_classes: int | None = None,
    max_examples: int = 4,
    three_d: bool = True,
    svg: bool = False,
    dpi: int = 90,
) -> list[LandscapeFigure]:
    """Render the figures of :func:`render_section`.

    Args:
        surfaces: input surfaces, one per threat.
        evidence: masking evidence aligned with ``surfaces`` (or None entries); its examples
            are matched to the surface's by position.
        slices: 1-D slices aligned with ``surfaces`` (same examples), or None entries.
        weights: weight-space surfaces by model label (drawn on one figure).
        indices: per surface, the dataset index of each example (for captions and names);
            default: the evidence's indices when it covers the surface's examples, else 0…N−1.
        num_classes: classes in the class maps (default: from the grids, at least 10).
        max_examples: examples drawn per threat (the grid's broken ones first).
        three_d: include the 3-D surface panel.
        svg: also render SVG.
        dpi: PNG resolution.
    """
    nc = num_classes or (_num_classes(surfaces) if surfaces else 10)
    out: list[LandscapeFigure] = []
    for s_pos, surface in enumerate(surfaces):
        ev = evidence[s_pos] if s_pos < len(evidence) else None
        slc = slices[s_pos] if s_pos < len(slices) else None
        if s_pos < len(indices):
            idx = list(indices[s_pos])
        elif ev is not None and len(ev.examples) == surface.n:
            idx = [e.index for e in ev.examples]  # the evidence was read from this surface
        else:
            idx = list(range(surface.n))
        by_pos: dict[int, ExampleEvidence] = {}
        if ev is not None:
            # Evidence may cover a subset of the surface's examples (the still-robust ones).
            by_index = {e.index: e for e in ev.examples}
            by_pos = {k: by_index[i] for k, i in enumerate(idx) if i in by_index}
        for k in (
            _order(surface, ev, max_examples)
            if ev is not None
            else range(min(surface.n, max_examples))
        ):
            e = by_pos.get(k)
            title = f"{surface.threat}, example {idx[k]} (label {int(surface.labels[k])})"
            if e is not None and e.broken:
                title += ": the grid breaks it"
            fig = example_figure(
                surface, k, num_classes=nc, slc=slc, evidence=e, three_d=three_d, title=title
            )
            caption = (
                f"{surface.threat}, example {idx[k]}: {surface.loss} over the plane of the "
                f"steepest-ascent direction ({surface.source[k]}) and a random orthogonal one "
                "(units of ε; the black line is the ball's boundary, hatched: outside), the "
                "predicted class"
                + (", the loss surface" if three_d else "")
                + (" and the loss on the line to the attack's point" if slc is not None else "")
                + (". Red star: a misclassified point inside the ball." if e and e.broken else ".")
            )
            out.append(_render(fig, f"{slug(surface.threat)}-example-{idx[k]}", caption, svg, dpi))
    if weights:
        fig = weight_figure(weights)
        caption = (
            "Weight space: loss and accuracy at θ + α·d (+ β·e) with filter-normalised random "
            "directions (Li et al. 2018)."
        )
        out.append(_render(fig, "weights", caption, svg, dpi))
    return out


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}"


def evidence_table(ev: MaskingEvidence) -> str:
    """One row per example: grid's best loss vs the attack's, broken or not, roughness."""
    rows = []
    for e in ev.examples:
        rows.append(
            [
                e.index,
                e.label,
                e.source,
                _num(e.grid_max_loss),
                _num(e.attack_loss),
                "—" if e.grid_beats_attack is None else ("yes" if e.grid_beats_attack else "no"),
                "BROKEN" if e.broken else ("no" if e.clean_correct else "misclassified"),
                _num(e.roughness, 2),
            ]
        )
    return pages.table(
        [
            "example",
            "label",
            "direction",
            f"grid max {ev.loss} (in ball)",
            f"attack {ev.loss}",
            "grid > attack",
            "grid finds an error",
            "roughness",
        ],
        rows,
        table_id=f"evidence-{slug(ev.threat)}",
        numeric=[0, 3, 4, 7],
    )


def render_section(
    surfaces: Sequence[InputSurface],
    *,
    evidence: Sequence[MaskingEvidence | None] = (),
    slices: Sequence[InputSlice | None] = (),
    weights: Mapping[str, WeightSurface] | None = None,
    indices: Sequence[Sequence[int]] = (),
    num_classes: int | None = None,
    max_examples: int = 4,
    figures: Sequence[LandscapeFigure] | None = None,
    heading: str = "Loss landscapes",
) -> str:
    """An HTML section (``<section id="landscapes">``) with the landscapes of one model.

    Per threat: the masking evidence (a notice when the grid broke examples, the table), then
    one figure per drawn example; then the weight-space figure. Arguments as for
    :func:`build_figures`; pass ``figures`` when they were already rendered.
    """
    figs = list(
        figures
        if figures is not None
        else build_figures(
            surfaces,
            evidence=evidence,
            slices=slices,
            weights=weights,
            indices=indices,
            num_classes=num_classes,
            max_examples=max_examples,
        )
    )
    parts = [f'<section id="landscapes"><h2>{pages.esc(heading)}</h2>']
    parts.append(
        '<p class="muted">Input space: the loss on the plane through each example spanned by '
        "the threat's steepest-ascent direction (a) and a random orthogonal direction (b), "
        "both of unit length in the threat's norm, so the ball's boundary along each axis is "
        "at ±1. Points outside the input box are clipped to it. Roughness = 1 − (best loss "
        "increase along the gradient direction) / (best increase anywhere in the ball on the "
        "grid): 0 for a smooth, locally linear loss; near 1 where gradients point nowhere.</p>"
    )
    for s_pos, surface in enumerate(surfaces):
        parts.append(f"<h3>{pages.esc(surface.threat)}</h3>")
        ev = evidence[s_pos] if s_pos < len(evidence) else None
        if ev is not None:
            if ev.fired:
                parts.append(
                    f'<div class="check"><b>{pages.esc(ev.threat)}: the grid found misclassified '
                    f"inputs inside the ball for {len(ev.broken_index)} of {len(ev.examples)} "
                    "example(s) the attacks left robust</b> (examples "
                    f"{pages.esc(', '.join(str(i) for i in ev.broken_index))}).</div>"
                )
            elif ev.examples:
                k = len(ev.examples)
                parts.append(
                    f'<div class="ok">{pages.esc(ev.threat)}: the grid found no misclassified '
                    f"input inside the ball for the {k} example{'s' if k != 1 else ''} the "
                    "attacks left robust.</div>"
                )
            else:
                parts.append(
                    '<p class="muted">The attacks broke every example: no robust example for '
                    "the grid to search.</p>"
                )
            if ev.examples:
                parts.append(evidence_table(ev))
        prefix = f"{slug(surface.threat)}-example-"
        for fig in figs:
            if fig.name.startswith(prefix):
                parts.append(
                    f"<figure>{pages.img(fig.png, fig.caption)}"
                    f'<figcaption class="muted">{pages.esc(fig.caption)}</figcaption></figure>'
                )
    for fig in figs:
        if fig.name == "weights":
            parts.append("<h3>Weight space</h3>")
            parts.append(
                f"<figure>{pages.img(fig.png, fig.caption)}"
                f'<figcaption class="muted">{pages.esc(fig.caption)}</figcaption></figure>'
            )
            if weights:
                rows = [
                    [
                        name,
                        ws.dims,
                        len(ws.alpha),
                        ws.examples,
                        _num(ws.centre()[0]),
                        pages.pct(ws.centre()[1]),
                        _num(float(np.max(ws.loss))),
                    ]
                    for name, ws in weights.items()
                ]
                parts.append(
                    pages.table(
                        [
                            "model",
                            "dims",
                            "points/axis",
                            "examples",
                            "loss at θ",
                            "accuracy at θ",
                            "max loss",
                        ],
                        rows,
                        table_id="weight-space",
                        numeric=[1, 2, 3, 4, 5, 6],
                    )
                )
    parts.append("</section>")
    return "".join(parts)
