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

A fit needs at least two models with different clean accuracies; otherwise none is drawn.
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
    """v ≈ a + b·u by least squares, with R²; None when u has fewer than 2 distinct values."""
    if u.size < 2 or np.unique(u).size < 2:
        return None
    b, a = np.polyfit(u, v, 1)
    pred = a + b * u
    ss_tot = float(((v - v.mean()) ** 2).sum())
    r2 = 1.0 - float(((v - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"a": float(a), "b": float(b), "r2": r2}


def _error(acc: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - acc, 0.5 / np.maximum(n, 1))


def fit_union(models: list[Model]) -> dict[str, Any] | None:
    """Least-squares line union = a + b · clean accuracy."""
    acc = np.array([m.clean_accuracy for m in models])
    rob = np.array([m.union_accuracy for m in models])
    fit = _least_squares(acc, rob)
    return None if fit is None else {"form": "union = a + b * clean_accuracy", **fit}


def fit_distortion(models: list[Model], norm: str) -> dict[str, Any] | None:
    """Least squares of median distortion = a + b · ln(1 − clean accuracy) (Su et al. 2018)."""
    have = [m for m in models if math.isfinite(m.min_distortion.get(norm, math.nan))]
    acc = np.array([m.clean_accuracy for m in have])
    dist = np.array([m.min_distortion[norm] for m in have])
    err = _error(acc, np.array([m.n for m in have]))
    fit = _least_squares(np.log(err), dist)
    return None if fit is None else {"form": "median = a + b * ln(1 - clean_accuracy)", **fit}


def summarise(models: list[Model]) -> dict[str, Any]:
    """Everything compare.json holds: models, Pareto frontiers, fits, warnings."""
    norms = sorted({k for m in models for k in m.min_distortion})
    acc = [m.clean_accuracy for m in models]
    warnings = []
    if len({tuple(sorted(m.threats)) for m in models}) > 1:
        warnings.append(
            "The reports were evaluated under different threat models: their union robust "
            "accuracies are not directly comparable."
        )
    if len({m.dataset for m in models}) > 1:
        warnings.append("The reports come from different datasets.")
    return {
        "format": "multirobust-compare",
        "version": 1,
        "models": [m.to_dict() for m in models],
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
        "warnings": warnings,
    }


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
        scale = 100.0 if kind == "union" else 1.0
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
            if kind == "union":
                line = fit["a"] + fit["b"] * grid
                text = f"fit: {fit['a']:.3g} {_signed(fit['b'])}·acc"
            else:
                n = max(m.n for m in models)
                line = fit["a"] + fit["b"] * np.log(_error(grid, np.full_like(grid, n)))
                text = f"fit: {fit['a']:.3g} {_signed(fit['b'])}·ln(1−acc)"
            ax.plot(100 * grid, scale * line, color="#55a868", label=f"{text} (R²={fit['r2']:.2f})")
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
    head = "<tr><th>model</th><th>dataset</th><th>n</th><th>clean accuracy</th>"
    head += "<th>union robust accuracy</th>"
    head += "".join(f"<th>median minimal {esc(k)} distortion</th>" for k in norms)
    head += "<th>threats</th><th>on a Pareto frontier</th></tr>"
    rows = []
    for i, m in enumerate(models):
        fronts = []
        if m.label in summary["pareto"]["union"]:
            fronts.append("union")
        fronts += [k for k in norms if m.label in summary["pareto"]["min_distortion"][k]]
        cells = "".join(
            f'<td class="num" id="model-{i}-median-{esc(k)}">'
            + (_fmt(m.min_distortion[k]) if k in m.min_distortion else "—")
            + "</td>"
            for k in norms
        )
        rows.append(
            f'<tr><td id="model-{i}-label">{esc(m.label)}</td><td>{esc(m.dataset or "—")}</td>'
            f'<td class="num">{m.n}</td>'
            f'<td class="num" id="model-{i}-clean">{100 * m.clean_accuracy:.2f}%</td>'
            f'<td class="num" id="model-{i}-union">{100 * m.union_accuracy:.2f}%</td>'
            f"{cells}<td>{esc(', '.join(m.threats))}</td><td>{esc(', '.join(fronts))}</td></tr>"
        )
    fits = []
    for name, fit in [("union", summary["fits"]["union"])] + [
        (f"median {k}", summary["fits"]["min_distortion"][k]) for k in norms
    ]:
        if fit is None:
            fits.append(
                f"<tr><td>{esc(name)}</td><td colspan=3>not fitted (needs two models with "
                "different clean accuracies)</td></tr>"
            )
        else:
            fits.append(
                f"<tr><td>{esc(name)}</td><td><code>{esc(fit['form'])}</code></td>"
                f'<td class="num">a = {fit["a"]:.4g}, b = {fit["b"]:.4g}</td>'
                f'<td class="num">R² = {fit["r2"]:.3f}</td></tr>'
            )
    warnings = "".join(f'<div class="warn">{esc(w)}</div>' for w in summary["warnings"])
    body = f"""<h1>Accuracy and robustness of {len(models)} model(s)</h1>
{warnings}
{img(png, "clean accuracy against robustness")}
<h2>Models</h2><table id="models">{head}{"".join(rows)}</table>
<p class="muted">A model is on a Pareto frontier when no other model has both a higher or equal
clean accuracy and a higher or equal robustness (one of them strictly). Medians of the minimal
distortion are over all evaluated examples (0 for misclassified ones).</p>
<h2>Fitted trade-off curves</h2><table id="fits">{"".join(fits)}</table>
<p class="muted">Union: least-squares line. Minimal distortion: least squares of the median
against ln(1 − clean accuracy), after Su et al. (2018), who found distortions to scale linearly
with the logarithm of the classification error (the error is floored at half an example).</p>
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
