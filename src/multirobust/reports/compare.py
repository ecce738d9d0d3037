"""The accuracy/robustness trade-off across models (Su et al. 2018, "Is Robustness the Cost of
Accuracy?").

Each evaluation report places one model on two kinds of axes: clean accuracy against union
robust accuracy, and clean accuracy against the median minimal distortion (for each norm the
reports measured). On each plot the Pareto frontier joins the models no other model beats on
both axes, and a fitted curve shows the trend:

* union robust accuracy: least-squares line  r = a + b · acc;
* median minimal distortion: least squares of  d = a + b · ln(1 − acc)  — Su et al. found the
  ℓ2 and ℓ∞ distortions of ImageNet models to scale linearly with the logarithm of the
  classification error. A clean accuracy of 1 would make ln(0); the error is floored at
  0.5 / n (half an example).

Both fits are written in the units of the plot's axes (accuracies in %). A fit needs at least
``MIN_FIT_MODELS`` (4) models with different clean accuracies: a line through two or three
points fits them (nearly) exactly and says nothing about a trend, so with fewer no fit is drawn
and a warning says why. Reports evaluated on different numbers of examples, with different
presets or under different threat models are compared with a warning that names them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_atomic, write_bytes_atomic
from ..evaluation.report import EvaluationReport
from ..pages import esc, figure_png, img, page, pyplot

__all__ = [
    "MIN_FIT_MODELS",
    "CompareError",
    "Model",
    "compare",
    "fit_distortion",
    "fit_union",
    "load_models",
    "load_report",
    "pareto_front",
    "summarise",
]


#: The fewest models a trend line is fitted through (two points always give R² = 1).
MIN_FIT_MODELS = 4


class CompareError(ValueError):
    """A report cannot be read or compared; the message names the file."""


@dataclass
class Model:
    """One model's numbers, read from its evaluation report."""

    label: str
    path: str
    clean_accuracy: float
    union_accuracy: float
    robust_accuracy: dict[str, float]
    min_distortion: dict[str, float]
    threats: list[str]
    dataset: str | None
    n: int
    report: EvaluationReport
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "clean_accuracy": self.clean_accuracy,
            "union_accuracy": self.union_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "min_distortion": {k: _finite_or_text(v) for k, v in self.min_distortion.items()},
            "threats": self.threats,
            "dataset": self.dataset,
            "n": self.n,
            "preset": self.preset,
        }


def _finite_or_text(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def load_report(path: str | os.PathLike[str]) -> tuple[EvaluationReport, Path]:
    """The report at ``path``: a report.json file or a run folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
        if not p.is_file():
            raise CompareError(
                f"{path} is a folder without report.json (run `multirobust evaluate --out "
                f"{path}` first, or pass the report file)"
            )
    elif not p.is_file():
        raise CompareError(f"{path}: no such report file or run folder")
    try:
        return EvaluationReport.from_json(p), p
    except (ValueError, KeyError, TypeError) as err:
        raise CompareError(f"{p} is not a multirobust evaluation report: {err}") from None


def _label(report: EvaluationReport, path: Path) -> str:
    """The run folder's name; for a loose report file, the checkpoint's or the file's stem."""
    if path.name == "report.json" and path.parent.name:
        return path.parent.name
    ckpt = report.settings.get("checkpoint")
    return Path(ckpt).stem if ckpt else path.stem


def load_models(paths: list[str | os.PathLike[str]]) -> list[Model]:
    """Read every report; duplicate labels get ``#2``, ``#3`` suffixes."""
    if not paths:
        raise CompareError("No reports given (pass report.json files or run folders)")
    models: list[Model] = []
    seen: dict[str, int] = {}
    for raw in paths:
        report, path = load_report(raw)
        label = _label(report, path)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        preset = report.settings.get("preset")
        models.append(
            Model(
                label=label,
                path=str(path),
                clean_accuracy=float(report.clean_accuracy),
                union_accuracy=float(report.union_accuracy),
                robust_accuracy=dict(report.robust_accuracy),
                min_distortion={
                    k: float(v["median"]) for k, v in report.minimal_distortion.items()
                },
                threats=list(report.settings.get("threats", list(report.threats))),
                dataset=report.settings.get("dataset"),
                n=int(report.n),
                report=report,
                preset=preset.get("name") if isinstance(preset, dict) else preset,
            )
        )
    return models


def pareto_front(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the points no other point matches or beats on both coordinates (higher is
    better on both), ordered by increasing x. Non-finite points are left out."""
    pts = [(x, y, i) for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    pts = [p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1])]
    front = []
    for x, y, i in pts:
        dominated = any((x2 >= x and y2 >= y and (x2 > x or y2 > y)) for x2, y2, j in pts if j != i)
        if not dominated:
            front.append((x, y, i))
    return [i for _, _, i in sorted(front)]


def _least_squares(u: np.ndarray, v: np.ndarray) -> dict[str, float] | None:
    """v ≈ a + b·u by least squares, with R²; None with fewer than ``MIN_FIT_MODELS`` points
    or fewer than two distinct values of u."""
    if u.size < MIN_FIT_MODELS or np.unique(u).size < 2:
        return None
    b, a = np.polyfit(u, v, 1)
    pred = a + b * u
    ss_tot = float(((v - v.mean()) ** 2).sum())
    r2 = 1.0 - float(((v - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"a": float(a), "b": float(b), "r2": r2, "models": int(u.size)}


def _error(acc: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - acc, 0.5 / np.maximum(n, 1))


def fit_union(models: list[Model]) -> dict[str, Any] | None:
    """Least-squares line union (%) = a + b · clean (%), in the units of the plot's axes.

    Returns:
        ``{"form", "a", "b", "r2", "models"}``, or None with fewer than ``MIN_FIT_MODELS``
        models or a single clean accuracy.
    """
    acc = np.array([100.0 * m.clean_accuracy for m in models])
    rob = np.array([100.0 * m.union_accuracy for m in models])
    fit = _least_squares(acc, rob)
    return None if fit is None else {"form": "union (%) = a + b * clean (%)", **fit}


def fit_distortion(models: list[Model], norm: str) -> dict[str, Any] | None:
    """Least squares of median distortion = a + b · ln(1 − clean (%) / 100) (Su et al. 2018).

    The distortion is in the norm's own units (the plot's y axis), the clean accuracy in %
    (its x axis); ``1 − clean/100`` is the error rate, floored at half an example.

    Returns:
        ``{"form", "a", "b", "r2", "models"}``, or None with fewer than ``MIN_FIT_MODELS``
        models that have a finite median or a single clean accuracy.
    """
    have = [m for m in models if math.isfinite(m.min_distortion.get(norm, math.nan))]
    acc = np.array([m.clean_accuracy for m in have])
    dist = np.array([m.min_distortion[norm] for m in have])
    err = _error(acc, np.array([m.n for m in have]))
    fit = _least_squares(np.log(err), dist)
    return None if fit is None else {"form": "median = a + b * ln(1 - clean (%) / 100)", **fit}


def _grouped(models: list[Model], key: Any) -> str:
    """``value (label, label); value (label)`` for the models grouped by ``key(model)``."""
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(str(key(m)), []).append(m.label)
    return "; ".join(f"{value} ({', '.join(labels)})" for value, labels in groups.items())


def _warnings(models: list[Model]) -> list[str]:
    """What makes these reports less comparable than they look, in words."""
    warnings = []
    if len({tuple(sorted(m.threats)) for m in models}) > 1:
        warnings.append(
            "The reports were evaluated under different threat models, so their union robust "
            "accuracies are not directly comparable: "
            + _grouped(models, lambda m: ", ".join(m.threats) or "none")
            + "."
        )
    if len({m.dataset for m in models}) > 1:
        warnings.append(
            "The reports come from different datasets: " + _grouped(models, lambda m: m.dataset)
        )
    if len({m.n for m in models}) > 1:
        worst = 100 * math.sqrt(0.25 / max(min(m.n for m in models), 1))
        warnings.append(
            "The reports were evaluated on different numbers of examples: "
            + _grouped(models, lambda m: f"n = {m.n}")
            + f". Their accuracies are not equally precise (a standard error of up to "
            f"{worst:.1f} points at the smallest n)."
        )
    if len({m.preset for m in models}) > 1:
        warnings.append(
            "The reports were evaluated with different attack presets: "
            + _grouped(models, lambda m: m.preset or "unknown")
            + ". A weaker preset (quick) gives upper bounds on robust accuracy, so its "
            "models look more robust than the others."
        )
    if len(models) < MIN_FIT_MODELS:
        warnings.append(
            f"{len(models)} model(s): no trend line is fitted (a fit needs at least "
            f"{MIN_FIT_MODELS} models; through fewer points a line fits almost exactly and "
            "says nothing about a trend)."
        )
    elif len({m.clean_accuracy for m in models}) < 2:
        warnings.append("Every model has the same clean accuracy: no trend line is fitted.")
    return warnings


def summarise(models: list[Model]) -> dict[str, Any]:
    """Everything compare.json holds: models, Pareto frontiers, fits, warnings."""
    norms = sorted({k for m in models for k in m.min_distortion})
    acc = [m.clean_accuracy for m in models]
    return {
        "format": "multirobust-compare",
        "version": 2,
        "models": [m.to_dict() for m in models],
        "threats": _all_threats(models),
        "pareto": {
            "union": [
                models[i].label for i in pareto_front(acc, [m.union_accuracy for m in models])
            ],
            "min_distortion": {
                norm: [
                    models[i].label
                    for i in pareto_front(
                        acc, [m.min_distortion.get(norm, math.nan) for m in models]
                    )
                ]
                for norm in norms
            },
        },
        "fits": {
            "union": fit_union(models),
            "min_distortion": {norm: fit_distortion(models, norm) for norm in norms},
        },
        "min_fit_models": MIN_FIT_MODELS,
        "warnings": _warnings(models),
    }


def _all_threats(models: list[Model]) -> list[str]:
    """Every threat any report was evaluated under, in first-seen order."""
    seen: dict[str, None] = {}
    for m in models:
        for t in [*m.threats, *m.robust_accuracy]:
            seen.setdefault(t, None)
    return list(seen)


def _signed(b: float) -> str:
    return f"+ {b:.3g}" if b >= 0 else f"− {-b:.3g}"


def _figure(models: list[Model], summary: dict[str, Any]) -> Any:
    plt = pyplot()
    norms = sorted(summary["fits"]["min_distortion"])
    panels = 1 + len(norms)
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.0), squeeze=False)
    acc = np.array([m.clean_accuracy for m in models])

    def draw(
        ax: Any, ys: np.ndarray, front: list[str], fit: dict[str, Any] | None, kind: str
    ) -> None:
        """Scatter, labels, frontier and fit; union values are plotted in percent."""
        ok = np.isfinite(ys)
        ax.scatter(100 * acc[ok], ys[ok], color="#4c72b0", zorder=3)
        for m, x, y in zip(models, acc, ys, strict=True):
            if math.isfinite(y):
                ax.annotate(
                    m.label, (100 * x, y), fontsize=8, xytext=(4, 4), textcoords="offset points"
                )
        idx = [i for i, m in enumerate(models) if m.label in front]
        if len(idx) > 1:
            order = sorted(idx, key=lambda i: acc[i])
            ax.plot(100 * acc[order], ys[order], "--", color="#c44e52", label="Pareto frontier")
        if fit is not None:
            grid = np.linspace(acc[ok].min(), acc[ok].max(), 100)
            if kind == "union":  # fitted in % on both axes
                line = fit["a"] + fit["b"] * 100 * grid
                text = f"fit: {fit['a']:.3g} {_signed(fit['b'])}·clean"
            else:
                n = max(m.n for m in models)
                line = fit["a"] + fit["b"] * np.log(_error(grid, np.full_like(grid, n)))
                text = f"fit: {fit['a']:.3g} {_signed(fit['b'])}·ln(1 − clean/100)"
            ax.plot(100 * grid, line, color="#55a868", label=f"{text} (R²={fit['r2']:.2f})")
        ax.set_xlabel("clean accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)

    union = np.array([100 * m.union_accuracy for m in models])
    draw(axes[0, 0], union, summary["pareto"]["union"], summary["fits"]["union"], "union")
    axes[0, 0].set_ylabel("union robust accuracy (%)")
    axes[0, 0].set_ylim(-2, 102)
    axes[0, 0].set_title("clean vs union robust accuracy")
    for k, norm in enumerate(norms, 1):
        ys = np.array([m.min_distortion.get(norm, math.nan) for m in models])
        draw(
            axes[0, k],
            ys,
            summary["pareto"]["min_distortion"][norm],
            summary["fits"]["min_distortion"][norm],
            "distortion",
        )
        axes[0, k].set_ylabel(f"median minimal {norm} distortion")
        axes[0, k].set_title(f"clean accuracy vs minimal {norm} distortion")
    fig.tight_layout()
    return fig


#: What the comparison page adds to the shared CSS (:data:`multirobust.pages.CSS`).
_CSS = """
body{max-width:1200px}
.warn{border-left:4px solid #d9822b;background:#fff7ec;padding:.5em 1em;margin:.6em 0}
"""


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "inf (most examples never broken)"


def _render(models: list[Model], summary: dict[str, Any], png: bytes) -> str:
    norms = sorted(summary["fits"]["min_distortion"])
    threats = summary["threats"]
    head = "<tr><th>model</th><th>dataset</th><th>n</th><th>preset</th><th>clean accuracy</th>"
    head += "".join(f"<th>robust accuracy {esc(t)}</th>" for t in threats)
    head += "<th>union robust accuracy</th>"
    head += "".join(f"<th>median minimal {esc(k)} distortion</th>" for k in norms)
    head += "<th>on a Pareto frontier</th></tr>"
    rows = []
    for i, m in enumerate(models):
        fronts = []
        if m.label in summary["pareto"]["union"]:
            fronts.append("union")
        fronts += [k for k in norms if m.label in summary["pareto"]["min_distortion"][k]]
        per_threat = "".join(
            f'<td class="num" id="model-{i}-robust-{esc(t)}">'
            + (f"{100 * m.robust_accuracy[t]:.2f}%" if t in m.robust_accuracy else "—")
            + "</td>"
            for t in threats
        )
        cells = "".join(
            f'<td class="num" id="model-{i}-median-{esc(k)}">'
            + (_fmt(m.min_distortion[k]) if k in m.min_distortion else "—")
            + "</td>"
            for k in norms
        )
        rows.append(
            f'<tr><td id="model-{i}-label">{esc(m.label)}</td><td>{esc(m.dataset or "—")}</td>'
            f'<td class="num" id="model-{i}-n">{m.n}</td>'
            f'<td id="model-{i}-preset">{esc(m.preset or "—")}</td>'
            f'<td class="num" id="model-{i}-clean">{100 * m.clean_accuracy:.2f}%</td>'
            f"{per_threat}"
            f'<td class="num" id="model-{i}-union">{100 * m.union_accuracy:.2f}%</td>'
            f"{cells}<td>{esc(', '.join(fronts))}</td></tr>"
        )
    fits = []
    drawn = []
    for name, fit, kind in [("union robust accuracy", summary["fits"]["union"], "union")] + [
        (f"median minimal {k} distortion", summary["fits"]["min_distortion"][k], "distortion")
        for k in norms
    ]:
        if fit is None:
            fits.append(
                f"<tr><td>{esc(name)}</td><td colspan=3>not fitted (needs at least "
                f"{MIN_FIT_MODELS} models with different clean accuracies)</td></tr>"
            )
            continue
        drawn.append(kind)
        fits.append(
            f"<tr><td>{esc(name)}</td><td><code>{esc(fit['form'])}</code></td>"
            f'<td class="num">a = {fit["a"]:.4g}, b = {fit["b"]:.4g}</td>'
            f'<td class="num">R² = {fit["r2"]:.3f} over {fit["models"]} models</td></tr>'
        )
    notes = []
    if "union" in drawn:
        notes.append("Union: least-squares line through the models, with both accuracies in %.")
    if "distortion" in drawn:
        notes.append(
            "Minimal distortion: least squares of the median against ln(1 − clean/100), after "
            "Su et al. (2018), who found distortions to scale linearly with the logarithm of "
            "the classification error (the error is floored at half an example)."
        )
    medians = (
        '<p class="muted">Medians of the minimal distortion are over all evaluated examples '
        "(0 for misclassified ones).</p>"
        if norms
        else ""
    )
    warnings = "".join(f'<div class="warn">{esc(w)}</div>' for w in summary["warnings"])
    body = f"""<h1>Accuracy and robustness of {len(models)} model(s)</h1>
{warnings}
{img(png, "clean accuracy against robustness")}
<h2>Models</h2><table id="models">{head}{"".join(rows)}</table>
<p class="muted">A model is on a Pareto frontier when no other model has both a higher or equal
clean accuracy and a higher or equal robustness (one of them strictly).</p>
{medians}
<h2>Fitted trade-off curves</h2><table id="fits">{"".join(fits)}</table>
{f'<p class="muted" id="fit-notes">{" ".join(notes)}</p>' if notes else ""}
"""
    return page("multirobust model comparison", body, css=_CSS)


def compare(
    paths: list[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> tuple[list[Model], dict[str, Any]]:
    """Read the reports at ``paths`` and write ``out``/compare.{html,png,json}.

    Returns:
        The models and the summary written to compare.json.
    """
    models = load_models(paths)
    summary = summarise(models)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = figure_png(_figure(models, summary))
    write_bytes_atomic(out_dir / "compare.png", png)
    write_atomic(out_dir / "compare.json", json.dumps(summary, indent=1))
    write_atomic(out_dir / "compare.html", _render(models, summary, png))
    return models, summary
