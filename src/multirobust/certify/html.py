"""The HTML page of a certification report: tables and certified-accuracy-vs-radius plots."""

from __future__ import annotations

import json
import math
from typing import Any

from .. import pages
from .report import CertificationReport, MethodResult

__all__ = ["render"]

_NORM_TITLE = {"linf": "ℓ∞", "l2": "ℓ2", "l1": "ℓ1"}


def _kinds(report: CertificationReport) -> list[str]:
    kinds: list[str] = []
    for t in report.threats:
        kind = t.split(":", 1)[0]
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _eps_of(report: CertificationReport, kind: str) -> list[float]:
    return [_parse(t) for t in report.threats if t.startswith(kind + ":")]


def _curve(method: MethodResult, kind: str, grid: list[float]) -> list[float] | None:
    radii = method.radius.get(kind)
    if radii is None:
        return None
    n = max(len(radii), 1)
    return [sum(1 for r in radii if r >= 0 and r >= g) / n for g in grid]


def _figure(report: CertificationReport, kind: str) -> str:
    plt = pages.pyplot()
    eps = _eps_of(report, kind)
    top = 2 * max(eps) if eps else 1.0
    emp = (report.empirical or {}).get("curves", {}).get(kind)
    if emp and emp["eps"]:
        top = max(top, max(emp["eps"]))
    grid = [top * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, m) in enumerate(report.methods.items()):
        color = colors[i % len(colors)]
        ys = _curve(m, kind, grid)
        if ys is not None:
            ax.step(
                grid, ys, where="post", color=color, label=f"{name} (certified, {m.classifier})"
            )
        mine = [t for t in report.threats if t.startswith(kind + ":") and t in m.certified]
        ax.plot(
            [_parse(t) for t in mine],
            [m.certified_accuracy[t] for t in mine],
            "o",
            color=color,
            label=None if ys is not None else f"{name} (certified, {m.classifier})",
        )
        cap = m.cap.get(kind)
        if cap is not None and math.isfinite(cap) and cap <= top:
            ax.axvline(cap, color=color, linestyle=":", linewidth=1)
            ax.annotate(f"cap {cap:.3g}", (cap, 0.02), color=color, fontsize=7, rotation=90)
    if emp and emp["eps"]:
        ax.plot(
            emp["eps"],
            emp["accuracy"],
            "k--",
            marker=".",
            label=f"empirical ({report.empirical['preset'] if report.empirical else ''}, base)",
        )
    ax.set_xlabel(f"radius ε ({_NORM_TITLE.get(kind, kind)})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", framealpha=0.85)
    ax.set_title(f"Certified accuracy against {_NORM_TITLE.get(kind, kind)} radius")
    return pages.img(
        pages.figure_png(fig),
        f"certified accuracy against {kind} radius",
        attrs=f'id="plot-{kind}"',
    )


def _parse(threat: str) -> float:
    _, _, v = threat.partition(":")
    num, _, den = v.partition("/")
    return float(num) / float(den) if den else float(num)


def _summary_table(report: CertificationReport) -> str:
    header = ["method", "certifies", *report.threats, "union", "abstained", "radius cap", "seconds"]
    rows: list[list[Any]] = []
    for name, m in report.methods.items():
        acc = m.certified_accuracy
        caps = ", ".join(f"{_NORM_TITLE.get(k, k)} {v:.4g}" for k, v in m.cap.items()) or "–"
        rows.append(
            [
                name,
                f"{m.classifier} classifier",
                *[pages.pct(acc[t]) if t in acc else "–" for t in report.threats],
                pages.pct(m.union_accuracy),
                "–" if m.abstain_rate is None else pages.pct(m.abstain_rate),
                caps,
                f"{m.seconds:.1f}",
            ]
        )
    if report.empirical is not None:
        e = report.empirical
        rows.append(
            [
                f"empirical ({e['preset']})",
                "base classifier (attacks: upper bound)",
                *[
                    pages.pct(e["robust_accuracy"][t]) if t in e["robust_accuracy"] else "–"
                    for t in report.threats
                ],
                pages.pct(e["union_accuracy"]),
                "–",
                "–",
                "",
            ]
        )
    numeric = list(range(2, 2 + len(report.threats) + 2))
    return pages.table(header, rows, table_id="certified", numeric=numeric)


def _smoothing_table(report: CertificationReport) -> str:
    rows = []
    for name, m in report.methods.items():
        if m.kind != "smoothing" or m.samples is None:
            continue
        s = m.settings
        total = sum(m.samples)
        rate = total / m.seconds if m.seconds > 0 else math.nan
        rows.append(
            [
                name,
                s.get("noise"),
                s.get("n0"),
                s.get("n"),
                s.get("alpha"),
                "sequential" if s.get("sequential") else "fixed n",
                f"{total / max(len(m.samples), 1):.0f}",
                f"{rate:,.0f}",
            ]
        )
    if not rows:
        return ""
    header = ["method", "noise", "n0", "n", "α", "procedure", "samples / example", "samples / s"]
    return "<h2>Randomized smoothing</h2>" + pages.table(
        header, rows, table_id="smoothing", numeric=[2, 3, 4, 6, 7]
    )


def render(report: CertificationReport) -> str:
    """The report as one self-contained HTML document."""
    parts = [
        "<h1>Certified robustness</h1>",
        f"<p>{report.n} examples; threats: {pages.esc(', '.join(report.threats))}. A certificate "
        "proves that no input in the ball changes the prediction (randomized smoothing: of the "
        "smoothed classifier, with probability at least 1 − α over the noise; bounds: of the "
        "network itself). The union is certified when every ball is. Attacks give an upper bound "
        "(empirical robust accuracy) on the same examples.</p>",
        "<h2>Certified accuracy</h2>",
        _summary_table(report),
    ]
    for c in report.checks:
        parts.append(
            f'<div class="check"><b>{pages.esc(c["name"])}</b>: {pages.esc(c["message"])}</div>'
        )
    if report.empirical is not None and not report.checks:
        parts.append(
            '<div class="ok">No base-classifier certificate was contradicted by an attack.</div>'
        )
    parts.append("<h2>Certified accuracy against radius</h2>")
    parts.append(
        "<p class=muted>Solid steps: certified accuracy of each method at every radius (a "
        "dotted vertical line marks a smoothing method's radius cap: no example can be "
        "certified beyond it with n samples at level α). Dots: the threats' ε. Dashed: "
        "empirical robust accuracy of the base network under attack.</p>"
    )
    for kind in _kinds(report):
        parts.append(_figure(report, kind))
    parts.append(_smoothing_table(report))
    parts.append("<h2>Settings</h2>")
    parts.append(f"<pre>{pages.esc(json.dumps(report.settings, indent=1))}</pre>")
    if report.timings:
        parts.append(
            pages.table(
                ["phase", "seconds"],
                [[k, f"{v:.1f}"] for k, v in report.timings.items()],
                table_id="timings",
                numeric=[1],
            )
        )
    return pages.page("multirobust certification", "".join(parts))
