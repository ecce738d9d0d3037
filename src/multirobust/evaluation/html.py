"""Render an :class:`~.report.EvaluationReport` as one self-contained HTML page.

No network is needed to view it: the CSS is inline and the plots are PNG images embedded as
base64 data URIs (the shared pieces of :mod:`multirobust.pages`). This module reads a report but
never imports the report module at run time (the report imports it for ``to_html``).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pages import esc, figure_png, img, page, pct, pyplot, table
from ..threats import parse

if TYPE_CHECKING:
    from .report import EvaluationReport


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
        eot = f", EOT {c.eot_samples}" if c.eot_samples > 1 else ""
        ax.set_title(
            f"{c.threat_type} ({c.preset} preset{f', {c.n} examples' if c.n else ''}{eot})"
        )
        ax.grid(alpha=0.3)
    rows = [
        (
            c.threat_type,
            ", ".join(f"ε={e:g}: {pct(a)}" for e, a in zip(c.eps, c.accuracy, strict=True)),
        )
        for c in report.curves
    ]
    return _subsample_note(report) + _figure(fig) + table(["threat", "accuracy by ε"], rows)


def _subsample_note(report: EvaluationReport) -> str:
    """Which examples the curves rest on: a subsample has its own clean accuracy (ε = 0)."""
    sizes = sorted({c.n for c in report.curves if c.n})
    if not sizes:
        return (
            '<p class="muted" id="curve-sample">The number of examples behind the curves was '
            "not recorded.</p>"
        )
    if sizes == [report.n]:
        return (
            f'<p class="muted" id="curve-sample">The curves use all {report.n} evaluated '
            "examples, with the quick preset (upper bounds, like every robust accuracy).</p>"
        )
    at_zero = [c.accuracy[c.eps.index(0.0)] for c in report.curves if 0.0 in c.eps]
    zero = f" (their ε = 0 point, {pct(at_zero[0])}, is its clean accuracy)" if at_zero else ""
    return (
        f'<p class="warn" id="curve-sample">The curves use a subsample: the first '
        f"{' / '.join(map(str, sizes))} of the {report.n} evaluated examples{zero}, so they "
        f"can differ from the table above (clean {pct(report.clean_accuracy)} on all "
        f"{report.n}). They use the quick preset.</p>"
    )


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
    """(H, W) or (H, W, 3) uint8 pixels from a kept example's base64 C×H×W bytes."""
    arr = np.frombuffer(base64.b64decode(u8), dtype=np.uint8).reshape(shape)
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def _png(pixels: np.ndarray) -> bytes:
    """A PNG of (H, W) grey or (H, W, 3) RGB uint8 pixels (no matplotlib: one small image per
    cell of the examples table)."""
    h, w = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _perturbation(clean: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, float]:
    """δ = adv − clean (channels summed) as red (+) / blue (−) on white, scaled so the largest
    |δ| is full colour; returns the RGB pixels and the amplification."""
    delta = adv.astype(np.float64) - clean.astype(np.float64)
    if delta.ndim == 3:
        delta = delta.sum(2)
    peak = float(np.abs(delta).max())
    amp = 255.0 / peak if peak > 0 else 1.0
    v = np.clip(delta * amp / 255.0, -1.0, 1.0)
    fade = (255 * (1 - np.abs(v))).astype(np.uint8)
    full = np.full_like(fade, 255)
    rgb = np.where(
        (v >= 0)[..., None],
        np.stack([full, fade, fade], axis=-1),
        np.stack([fade, fade, full], axis=-1),
    )
    return rgb.astype(np.uint8), amp


_UNITS = {"rotation": "°", "translation": " px"}


def _size(threat: str, norm: float | None, params: list[float] | None) -> str:
    """An example's perturbation in the threat's own terms: ``‖δ‖ = 0.3`` for ℓp balls,
    ``rotation 12°, translation 2 px`` for spatial threats (the convention of every table)."""
    try:
        sizes = parse(threat).largest([norm], [params])
    except ValueError:
        sizes = {}
    if not sizes:
        return "size not recorded"
    return _words(sizes, threat)


def _words(sizes: dict[str, float], threat: str) -> str:
    kind = threat.split(":")[0]
    return ", ".join(
        f"‖δ‖{kind[1:] if kind.startswith('l') else ''} = {v:.4g}"
        if k == "norm"
        else f"{k} {v:.3g}{_UNITS.get(k, '')}"
        for k, v in sizes.items()
    )


def _examples(report: EvaluationReport, names: list[str]) -> str:
    """Clean images once (one column per example), then per threat the adversarial image, the
    amplified perturbation, true → predicted class with confidence, the attack and the size."""
    if not report.examples:
        return '<p class="muted">No example was broken, so there are no pictures.</p>'

    def label(k: int) -> str:
        return names[k] if 0 <= k < len(names) else str(k)

    columns: list[int] = []
    for e in report.examples:
        if e.index not in columns and len(columns) < 8:
            columns.append(e.index)
    by = {(e.threat, e.index): e for e in report.examples}
    first = {i: next(e for e in report.examples if e.index == i) for i in columns}
    pic = 'class="px" width="84" height="84"'
    head = "<tr><th></th>" + "".join(f"<th>example {i}</th>" for i in columns) + "</tr>"
    clean_row = "<tr><th>clean</th>"
    for i in columns:
        e = first[i]
        clean_row += (
            f"<td>{img(_png(_image(e.clean_u8, e.shape)), f'clean example {i}', attrs=pic)}"
            f'<div class="cap">true <b>{esc(label(e.label))}</b>, predicted '
            f"{esc(label(e.clean_pred))} ({100 * e.clean_conf:.0f}%)</div></td>"
        )
    rows = [head, clean_row + "</tr>"]
    for key, outcome in report.threats.items():
        cells = ""
        for i in columns:
            kept = by.get((key, i))
            if kept is None:
                if i < len(report.clean_correct) and not report.clean_correct[i]:
                    state = "misclassified without attack"
                elif i < len(outcome.robust) and outcome.robust[i]:
                    state = "not broken"
                else:
                    state = "broken (picture not kept)"
                cells += f'<td class="muted cap">{state}</td>'
                continue
            e = kept
            clean, adv = _image(e.clean_u8, e.shape), _image(e.adv_u8, e.shape)
            delta, amp = _perturbation(clean, adv)
            norm = outcome.norm[i] if i < len(outcome.norm) else None
            params = outcome.params[i] if i < len(outcome.params) else None
            cells += (
                f"<td>{img(_png(adv), f'adversarial example {i} under {key}', attrs=pic)}"
                f"<br>{img(_png(delta), f'perturbation of example {i} under {key}', attrs=pic)}"
                f'<div class="cap">{esc(label(e.label))} → <b class="bad">'
                f"{esc(label(e.adv_pred))}</b> ({100 * e.adv_conf:.0f}%)<br>"
                f"{esc(e.attack)}, {esc(_size(key, norm, params))}<br>"
                f'<span class="muted">perturbation ×{amp:.0f}</span></div></td>'
            )
        rows.append(f"<tr><th>{esc(key)}</th>{cells}</tr>")
    return (
        "<p>Top row: the clean images with their true class and the model's prediction. Then, "
        "per threat model: the adversarial image and its perturbation (adversarial − clean, "
        "channels summed, red where pixels got brighter and blue where darker, amplified so "
        "the largest change is full colour), true → predicted class with the model's "
        "confidence, the attack that broke it and the perturbation's size.</p>"
        f'<table id="examples">{"".join(rows)}</table>'
    )


def _cell(value: Any) -> str:
    """One value in words: numbers to 4 significant digits, lists joined, dicts as k=v."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "—"}[value]
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} = {_cell(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "—"
    return str(value)


def _rows(values: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings flattened to (key path, value in words) rows."""
    out: list[tuple[str, str]] = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(w, dict | list) for w in v.values()):
            out += _rows(v, path + " / ")
        elif isinstance(v, dict) and len(v) > 6:
            out += _rows(v, path + " / ")
        else:
            out.append((path, _cell(v)))
    return out


def _settings(report: EvaluationReport) -> str:
    settings = dict(report.settings)
    attacks = settings.pop("attacks", {})
    rows = _rows(settings)
    for threat, specs in attacks.items() if isinstance(attacks, dict) else []:
        text = "; ".join(
            f"{s.get('label')} ({s.get('attack')}: {_cell(s.get('options', {}))})"
            if isinstance(s, dict)
            else str(s)
            for s in specs
        )
        rows.append((f"attacks / {threat}", text))
    return (
        table(["setting", "value"], rows, table_id="settings-table")
        + '<details><summary>settings as JSON</summary><pre id="settings">'
        + esc(json.dumps(report.settings, indent=1))
        + "</pre></details>"
    )


def _checks_section(report: EvaluationReport) -> str:
    """Every check that ran: passed or fired, with the evidence as a table (JSON collapsed)."""
    from .report import CATALOGUE  # at call time: the report module imports this one

    fired: dict[tuple[str, str | None], list[Any]] = {}
    for c in report.checks:
        fired.setdefault((c.name, c.threat), []).append(c)
    ran = [(r["name"], r.get("threat")) for r in report.checks_run]
    ran += [k for k in fired if k not in ran]  # older reports recorded only the fired ones
    rows = []
    for name, threat in ran:
        what = CATALOGUE.get(name, "")
        status = (
            '<b class="bad">fired</b>'
            if (name, threat) in fired
            else '<span class="good">passed</span>'
        )
        rows.append(
            f"<tr><td>{status}</td><td><code>{esc(name)}</code></td><td>{esc(threat or 'model')}"
            f"</td><td>{esc(what)}</td></tr>"
        )
    listing = (
        '<table id="checks-table"><tr><th>status</th><th>check</th><th>on</th><th>verifies'
        "</th></tr>" + "".join(rows) + "</table>"
    )
    if not report.checks_run:
        listing += (
            '<p class="muted">This report did not record the checks that passed; only those '
            "that fired are listed.</p>"
        )
    details = "".join(
        f'<div class="check"><b>{esc(c.name)}</b>'
        + (f" — {esc(c.threat)}" if c.threat else "")
        + f"<p>{esc(c.message)}</p>"
        + table(["evidence", "value"], _rows(c.evidence))
        + "<details><summary>evidence as JSON</summary><pre>"
        + esc(json.dumps(c.evidence, indent=1))
        + "</pre></details></div>"
        for c in report.checks
    )
    return listing + details


def _checks_status(report: EvaluationReport) -> str:
    """One line for the top of the page: how many checks ran, passed and fired (which)."""
    names = sorted({c.name for c in report.checks})
    ran = len(report.checks_run)
    if ran:
        passed = ran - len({(c.name, c.threat) for c in report.checks})
        head = f"{ran} checks ran: {passed} passed, {ran - passed} fired"
    else:
        head = f"{len(report.checks)} check(s) fired"
    cls = "warn" if names else "ok"
    tail = f" ({', '.join(names)}): see Checks below" if names else ""
    return f'<div class="{cls}" id="checks-status"><b>Checks:</b> {esc(head + tail)}.</div>'


#: The phases of ``report.timings`` in words.
TIMING_WORDS = {
    "checks_before": "model checks before the attacks (outputs, gradients)",
    "attacks": "attacks (each threat's ensemble on every example)",
    "checks_after": "checks after the attacks (a very large ε, twice the steps)",
    "minimal_distortion": "minimal-distortion search",
    "curves": "accuracy-vs-ε curves",
    "total": "total",
}


def _timings(report: EvaluationReport) -> str:
    rows = [
        (TIMING_WORDS.get(k, k.replace("_", " ")), f"{v:.1f} s") for k, v in report.timings.items()
    ]
    rows += [(f"curve {c.threat_type}", f"{c.seconds:.1f} s") for c in report.curves if c.seconds]
    return table(["phase", "time"], rows, numeric=[1], table_id="timings")


def _model(settings: dict[str, Any]) -> str:
    name = settings.get("checkpoint") or settings.get("model") or "model not recorded"
    sha = settings.get("model_sha256")
    return str(name) + (f" (sha256 {str(sha)[:12]})" if sha else "")


def _preset(settings: dict[str, Any]) -> str:
    preset = settings.get("preset")
    name = preset.get("name") if isinstance(preset, dict) else preset
    return str(name or "not recorded")


#: Presets whose ensembles are deliberately small: their robust accuracies are loose.
WEAK_PRESETS = ("quick",)


def render(report: EvaluationReport) -> str:
    """The report as an HTML document (a string).

    The first screen holds the model, the dataset and preset, the clean, per-threat and union
    accuracies (robust ones marked as upper bounds) and the checks' status; the sections below
    hold the checks, curves, pictures, timings and settings.
    """
    settings = report.settings
    names = [str(v) for v in settings.get("class_names", [])]
    preset = _preset(settings)
    summary = [
        "<tr><th>threat model</th><th>accuracy</th><th>attacks (examples broken)</th>"
        "<th>largest perturbation</th><th>queries / example</th><th>time</th></tr>",
        f'<tr><td>clean (no attack)</td><td class="num" id="clean-cell">'
        f"{pct(report.clean_accuracy)}</td><td></td><td></td><td></td><td></td></tr>",
    ]
    for key, t in report.threats.items():
        counts = ", ".join(f"{esc(a)} ({c})" for a, c in t.broken_counts().items())
        largest = t.largest
        biggest = _words(largest, key) if largest else "none broken"
        summary.append(
            f'<tr><td>{esc(key)}</td><td class="num" id="robust-{esc(key)}">'
            f'<span class="ub" title="upper bound">≤ </span>{pct(report.robust_accuracy[key])}</td>'
            f'<td>{counts}</td><td class="num">{esc(biggest)}</td>'
            f'<td class="num">{t.queries / max(report.n, 1):.1f}</td>'
            f'<td class="num">{t.seconds:.1f} s</td></tr>'
        )
    summary.append(
        f'<tr><th>union (worst case per example)</th><th class="num" id="union-cell">'
        f'<span class="ub" title="upper bound">≤ </span>{pct(report.union_accuracy)}</th>'
        "<th></th><th></th><th></th><th></th></tr>"
    )
    dataset = settings.get("dataset")
    split = settings.get("split")
    data = f"{dataset} ({split})" if dataset and split else str(dataset or "tensors")
    weak = (
        f'<div class="warn" id="preset-warning">The <b>{esc(preset)}</b> preset runs a small '
        "attack ensemble: its robust accuracies are loose upper bounds that stronger attacks "
        "can lower. Use <code>--preset standard</code> or <code>thorough</code> for numbers "
        "to report.</div>"
        if preset in WEAK_PRESETS
        else ""
    )
    body = f"""<h1>multirobust evaluation report</h1>
<p class="meta">Model <b id="model">{esc(_model(settings))}</b> · data {esc(data)}, n = {report.n}
· preset <b id="preset">{esc(preset)}</b> · seed {esc(settings.get("seed", "—"))}</p>
{weak}
<p>Clean accuracy <b id="clean-accuracy">{pct(report.clean_accuracy)}</b>; union robust accuracy
<b id="union-accuracy">≤ {pct(report.union_accuracy)}</b> (upper bound).</p>
<table id="summary">{"".join(summary)}</table>
<p class="muted">Robust accuracies (≤) are upper bounds: an example counts as robust when no
attack of the ensemble broke it, and a stronger attack may still break it. The union counts
those robust under every threat model at once.</p>
{_checks_status(report)}
<h2>Checks (Carlini et al. 2019)</h2>{_checks_section(report)}
<h2>Robust accuracy against ε</h2>{_curves(report)}
{_minimal_distortion(report)}
<h2>Adversarial examples</h2>{_examples(report, names)}
{report.landscapes.get("html", "")}
<h2>Timings</h2>{_timings(report)}
<h2>Settings</h2>{_settings(report)}
"""
    return page("multirobust evaluation report", body, css=_CSS) + "\n"


_CSS = """
.meta{font-size:1.05em}.ub{color:#888}.bad{color:#b00}.good{color:#2a7a2a}
.warn{border-left:4px solid #d9822b;background:#fff7ec;padding:.4em 1em;margin:.6em 0}
img.px{image-rendering:pixelated;margin:1px;border:1px solid #ddd}
.cap{font-size:13px;line-height:1.3}#examples td{vertical-align:top;text-align:center}
details pre{max-height:30em}
"""
