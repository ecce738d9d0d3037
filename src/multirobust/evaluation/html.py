"""Render an :class:`~.report.EvaluationReport` as one self-contained HTML page.

No network is needed to view it: the CSS is inline and the plots are PNG images embedded as
base64 data URIs (the shared pieces of :mod:`multirobust.pages`). This module reads a report but
never imports the report module at run time (the report imports it for ``to_html``).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pages import esc, figure_png, img, page, pct, pyplot, table

if TYPE_CHECKING:
    from .report import AdversarialExample, EvaluationReport


def _figure(fig: Any) -> str:
    return img(figure_png(fig), "plot")


def _curves(report: EvaluationReport) -> str:
    if not report.curves:
        return '<p class="muted">No accuracy-vs-ε curves were computed for this report.</p>'
    plt = pyplot()
    fig, axes = plt.subplots(1, len(report.curves), figsize=(4.2 * len(report.curves), 3.2))
    axes = np.atleast_1d(axes)
    for ax, c in zip(axes, report.curves, strict=True):
        ax.plot(c.eps, [100 * a for a in c.accuracy], marker="o")
        ax.set_xlabel("ε")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{c.threat_type} ({c.preset} preset{f', {c.n} examples' if c.n else ''})")
        ax.grid(alpha=0.3)
    rows = [
        (
            c.threat_type,
            ", ".join(f"ε={e:g}: {pct(a)}" for e, a in zip(c.eps, c.accuracy, strict=True)),
        )
        for c in report.curves
    ]
    return _figure(fig) + table(["threat", "accuracy by ε"], rows)


def _minimal_distortion(report: EvaluationReport) -> str:
    """The optional minimal-distortion section: medians, a table and the distributions."""
    found = report.minimal_distortion
    if not found:
        return ""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.2))
    axes = np.atleast_1d(axes)
    rows = []
    for ax, (norm, md) in zip(axes, found.items(), strict=True):
        d = np.asarray(md["distances"], dtype=float)
        finite = d[np.isfinite(d) & (d > 0)]
        ax.hist(finite, bins=md["histogram"]["edges"], color="#4c72b0")
        if np.isfinite(md["median"]):
            ax.axvline(md["median"], color="#c44e52", label=f"median {md['median']:.3g}")
            ax.legend(fontsize=8)
        ax.set_xlabel(f"minimal {norm} distortion")
        ax.set_ylabel("examples")
        ax.set_title(f"{norm} ({100 * md['never_broken']:.0f}% never broken)")
        ax.grid(alpha=0.3)
        rows.append(
            f"<tr><td>{esc(norm)}</td>"
            f'<td class="num" id="min-distortion-{esc(norm)}">{md["median"]:.4g}</td>'
            f'<td class="num">{pct(md["misclassified"])}</td>'
            f'<td class="num">{pct(md["never_broken"])}</td>'
            f'<td class="num">{md["max_eps"]:.4g}</td>'
            f"<td>{esc(', '.join(md['attacks']))}</td></tr>"
        )
    return (
        "<h2>Minimal adversarial distortion</h2>"
        "<p>Per example, the norm of the smallest adversarial perturbation found (bisection over "
        "ε of a fixed-budget attack, plus minimum-norm attacks where available): 0 for examples "
        "misclassified without attack, never broken when no attack succeeded up to the largest "
        "ε searched. The median is over all examples. Distances are upper bounds on the true "
        "minimal distortion.</p>"
        '<table id="minimal-distortion"><tr><th>norm</th><th>median</th><th>misclassified</th>'
        "<th>never broken</th><th>largest ε searched</th><th>attacks</th></tr>"
        + "".join(rows)
        + "</table>"
        + _figure(fig)
    )


def _image(u8: str, shape: list[int]) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(u8), dtype=np.uint8).reshape(shape)
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def _grid(report: EvaluationReport, names: list[str]) -> str:
    if not report.examples:
        return '<p class="muted">No example was broken, so there are no pictures.</p>'
    plt = pyplot()

    def label(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    by_threat: dict[str, list[AdversarialExample]] = {}
    for e in report.examples:
        by_threat.setdefault(e.threat, []).append(e)
    cols = max(len(v) for v in by_threat.values())
    rows = 2 * len(by_threat)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.95 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (threat, exs) in enumerate(by_threat.items()):
        for c, e in enumerate(exs):
            for k, (u8, pred, conf) in enumerate(
                ((e.clean_u8, e.clean_pred, e.clean_conf), (e.adv_u8, e.adv_pred, e.adv_conf))
            ):
                ax = axes[2 * r + k, c]
                picture = _image(u8, e.shape)
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
                ax.set_title(
                    f"{100 * conf:.0f}% {label(pred)}",
                    fontsize=8,
                    color="black" if k == 0 else "#b00",
                )
        for k, text in enumerate((f"{threat}\nclean", "adversarial")):
            axes[2 * r + k, 0].text(
                -0.15,
                0.5,
                text,
                transform=axes[2 * r + k, 0].transAxes,
                ha="right",
                va="center",
                fontsize=8,
            )
    return (
        "<p>Each pair: the clean image with the model's prediction and confidence, and below it "
        "the adversarial image with the new prediction and confidence.</p>" + _figure(fig)
    )


def _largest(sizes: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sizes.items())


def render(report: EvaluationReport) -> str:
    """The report as an HTML document (a string)."""
    names = [str(v) for v in report.settings.get("class_names", [])]
    summary = [
        "<tr><th>threat model</th><th>robust accuracy</th><th>attacks (examples broken)</th>"
        "<th>largest perturbation</th><th>queries / example</th><th>seconds</th></tr>",
        f'<tr><td>clean</td><td class="num">{pct(report.clean_accuracy)}</td>'
        "<td></td><td></td><td></td><td></td></tr>",
    ]
    for key, t in report.threats.items():
        counts = ", ".join(f"{esc(a)} ({c})" for a, c in t.broken_counts().items())
        summary.append(
            f'<tr><td>{esc(key)}</td><td class="num">{pct(report.robust_accuracy[key])}</td>'
            f'<td>{counts}</td><td class="num">{esc(_largest(t.largest))}</td>'
            f'<td class="num">{t.queries / max(report.n, 1):.1f}</td>'
            f'<td class="num">{t.seconds:.1f}</td></tr>'
        )
    summary.append(
        f'<tr><th>union (worst case per example)</th><th class="num">'
        f"{pct(report.union_accuracy)}</th><th></th><th></th><th></th><th></th></tr>"
    )
    if report.checks:
        checks = "".join(
            f'<div class="check"><b>{esc(c.name)}</b>'
            + (f" — {esc(c.threat)}" if c.threat else "")
            + f"<p>{esc(c.message)}</p><pre>{esc(json.dumps(c.evidence, indent=1))}</pre></div>"
            for c in report.checks
        )
    else:
        checks = '<div class="ok">No check fired.</div>'
    timings = table(
        ["phase", "time"], [(k, f"{v:.1f} s") for k, v in report.timings.items()], numeric=[1]
    )
    body = f"""<h1>multirobust evaluation report</h1>
<p>{report.n} examples; clean accuracy <b id="clean-accuracy">{pct(report.clean_accuracy)}</b>;
union robust accuracy <b id="union-accuracy">{pct(report.union_accuracy)}</b>;
{len(report.checks)} check(s) fired.</p>
<h2>Summary</h2><table id="summary">{"".join(summary)}</table>
<p class="muted">Robust accuracy counts examples classified correctly under every attack of the
ensemble; the union counts those robust under every threat model at once.</p>
<h2>Checks (Carlini et al. 2019)</h2>{checks}
<h2>Robust accuracy against ε</h2>{_curves(report)}
{_minimal_distortion(report)}
<h2>Adversarial examples</h2>{_grid(report, names)}
{report.landscapes.get("html", "")}
<h2>Timings</h2>{timings}
<h2>Settings</h2><pre id="settings">{esc(json.dumps(report.settings, indent=1))}</pre>
"""
    return page("multirobust evaluation report", body) + "\n"
