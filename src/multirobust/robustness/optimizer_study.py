"""The inner-optimiser study: one penalised attack run once per inner optimiser.

Carlini–Wagner minimises ‖δ‖ + c·f(x + δ) with an inner gradient optimiser (Adam in the paper);
the study runs the same attack on the same model, images and seed with each optimiser of
``attacks.optimizers.OPTIMIZERS`` and compares robust accuracy, the norms of the perturbations
found, time and forward passes. ``multirobust optimizer-study`` writes ``study.json`` and
``study.html`` from :func:`optimizer_study`, :func:`study_table` and :func:`study_html`.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import attacks, threats
from ..atomic import write_atomic
from ..attacks.optimizers import OPTIMIZERS
from ..models.counting import ForwardCounter
from ..pages import esc, figure_png, img, page, pyplot, show_image, signed_channel, table
from ..threats import LpBall

__all__ = ["optimizer_study", "study_html", "study_table", "write_study"]


def optimizer_study(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str = "cw-l2",
    threat: str | LpBall | None = None,
    optimizers: tuple[str, ...] = OPTIMIZERS,
    options: dict[str, Any] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``attack`` once per optimiser on the same model and images.

    Returns a JSON-ready dict (``clean_accuracy``, ``rows`` with per optimiser: robust accuracy,
    success rate, median / mean perturbation norm over the correctly classified examples the
    attack broke, seconds, forward passes per example, per-example norms) plus ``"_x_adv"``
    (optimiser -> adversarial inputs) for the pictures.
    """
    cls = attacks.get(attack)
    fields = {f.name for f in dataclasses.fields(cls)}
    if "optimizer" not in fields:
        penalised = [n for n in attacks.names() if "optimizer" in _fields(n)]
        raise ValueError(
            f"Attack {attack!r} has no optimizer option (attacks that have one: "
            f"{', '.join(penalised)})"
        )
    unknown = sorted(set(optimizers) - set(OPTIMIZERS))
    if unknown or not optimizers:
        raise ValueError(
            f"Unknown optimizer(s) {', '.join(unknown) or '(none given)'} "
            f"(must be among {', '.join(OPTIMIZERS)})"
        )
    options = dict(options or {})
    if "optimizer" in options:
        raise ValueError("Do not pass optimizer as an option: the study runs each of --optimizers")
    if threat is None:
        threat = _default_threat(cls)
    tm = threats.parse(threat)
    n = x.shape[0]
    with torch.no_grad():
        correct = torch.cat(
            [
                model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]
                for i in range(0, n, batch_size)
            ]
        )
    rows: list[dict[str, Any]] = []
    x_adv_all: dict[str, torch.Tensor] = {}
    made = [
        attacks.create(attack, threat=tm, optimizer=o, seed=seed, **options) for o in optimizers
    ]
    budget = [_passes_per_example(a) for a in made]
    # The bar counts forward passes of single examples (at most `budget` per example and
    # optimiser), so it moves with the attack's iterations inside each batch; a batch that
    # ends early (examples broken, runs stopped) jumps to its share. Its ETA is an upper bound.
    bar = tqdm(
        total=n * sum(budget),
        desc="optimizer study",
        unit=" passes",
        unit_scale=True,
        disable=not progress,
    )
    share = {"left": 0}

    def counted(rows: int) -> None:
        step = min(rows, share["left"])
        share["left"] -= step
        if step:
            bar.update(step)

    watched = ForwardCounter(model, counted)
    for k, (name, atk) in enumerate(zip(optimizers, made, strict=True)):
        generator = torch.Generator(device=x.device).manual_seed(seed)
        success = torch.zeros(n, dtype=torch.bool)
        norms = torch.zeros(n)
        x_adv = x.clone()
        queries = 0
        bar.set_description(f"{attack} {name} ({k + 1}/{len(optimizers)})")
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            rows_here = x[sl].shape[0]
            share["left"] = rows_here * budget[k]
            res = atk(watched, x[sl], y[sl], generator=generator)
            bar.update(share["left"])  # the passes this batch did not need
            share["left"] = 0
            success[sl] = res.success.cpu()
            norms[sl] = res.norm.float().cpu()
            x_adv[sl] = res.x_adv
            queries += res.queries
        seconds = time.perf_counter() - start
        broken = (success & correct.cpu()).nonzero().flatten()
        broken_norms = [float(norms[i]) for i in broken]
        rows.append(
            {
                "optimizer": name,
                "learning_rate": getattr(atk, "lr", None),
                "robust_accuracy": int((~success).sum()) / max(n, 1),
                "success_rate": int(success.sum()) / max(n, 1),
                "broken": len(broken_norms),
                "median_norm": statistics.median(broken_norms) if broken_norms else None,
                "mean_norm": statistics.fmean(broken_norms) if broken_norms else None,
                "seconds": seconds,
                "queries_per_example": queries / max(n, 1),
                "norms": [float(v) for v in norms],
                "success": [bool(v) for v in success],
            }
        )
        x_adv_all[name] = x_adv
    bar.close()
    return {
        "attack": attack,
        "threat": str(tm),
        "n": n,
        "clean_accuracy": int(correct.sum()) / max(n, 1),
        "options": options,
        "rows": rows,
        "_x_adv": x_adv_all,
    }


def _passes_per_example(atk: attacks.Attack) -> int:
    """Forward passes one example may take: ``steps`` per search step or trial, plus the
    base's clean and final passes (of the minimum-norm attack inside a budget wrapper)."""
    inner = getattr(atk, "attack", atk)  # WithinBudget(attack=C&W, ...) runs C&W's loop
    steps = int(getattr(inner, "steps", 1))
    searches = int(
        getattr(inner, "binary_search_steps", 0) or getattr(inner, "search_steps", 0) or 1
    )
    return steps * searches + 2


def _fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(attacks.get(name))}


def _default_threat(cls: type[attacks.Attack] | type[attacks.MinimumNormAttack]) -> str:
    """ℓ2 2 or ℓ∞ 0.3 (the MNIST conventions), whichever the attack supports."""
    for text in ("l2:2", "linf:0.3"):
        if cls.supports(threats.parse(text)):
            return text
    raise ValueError(f"Pass --threat: no default threat for attack {cls.name!r}")


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def study_table(result: dict[str, Any]) -> str:
    """The study as a plain-text table."""
    lines = [
        f"{result['attack']} under {result['threat']} on {result['n']} images "
        f"(clean accuracy {result['clean_accuracy']:.2%})",
        f"{'optimizer':<9} {'lr':>7} {'robust acc':>10} {'median norm':>11} {'mean norm':>9} "
        f"{'seconds':>8} {'passes/img':>10}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['optimizer']:<9} {_fmt(r['learning_rate'], '.3g'):>7} "
            f"{r['robust_accuracy']:>10.2%} {_fmt(r['median_norm'], '.4f'):>11} "
            f"{_fmt(r['mean_norm'], '.4f'):>9} {r['seconds']:>8.1f} "
            f"{r['queries_per_example']:>10.1f}"
        )
    return "\n".join(lines)


def _study_figures(result: dict[str, Any], x: torch.Tensor, examples: int) -> list[bytes]:
    plt = pyplot()
    rows = result["rows"]
    names = [r["optimizer"] for r in rows]
    figs: list[bytes] = []

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    axes[0].bar(names, [100 * r["robust_accuracy"] for r in rows], color="#4c72b0")
    axes[0].set_ylabel("robust accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[1].bar(names, [r["median_norm"] or 0.0 for r in rows], color="#dd8452")
    axes[1].set_ylabel(f"median {result['threat'].split(':')[0]} norm (broken)")
    axes[2].bar(names, [r["seconds"] for r in rows], color="#55a868")
    axes[2].set_ylabel("run time (s)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)
    figs.append(figure_png(fig))

    fig, ax = plt.subplots(figsize=(6.5, 3.3))
    broken = [
        [v for v, s in zip(r["norms"], r["success"], strict=True) if s and v > 0] for r in rows
    ]
    if any(broken):
        ax.boxplot([b or [float("nan")] for b in broken])
        ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("perturbation norm of broken examples")
    ax.grid(axis="y", alpha=0.3)
    figs.append(figure_png(fig))

    k = min(examples, x.shape[0])
    if k:
        deltas = {n: result["_x_adv"][n][:k] - x[:k] for n in names}
        scale = max(float(d.abs().max()) for d in deltas.values()) or 1.0
        fig, axes = plt.subplots(
            len(names) + 1, k, figsize=(1.3 * k, 1.35 * (len(names) + 1)), squeeze=False
        )
        for j in range(k):
            show_image(axes[0, j], x[j], cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_ylabel("clean", fontsize=8)
        for i, name in enumerate(names, start=1):
            row = rows[i - 1]
            for j in range(k):
                show_image(
                    axes[i, j],
                    signed_channel(deltas[name][j]),
                    cmap="seismic",
                    vmin=-scale,
                    vmax=scale,
                )
                ok = row["success"][j]
                axes[i, j].set_title(
                    f"{row['norms'][j]:.2f}" + ("" if ok else " ✗"),
                    fontsize=7,
                    color="black" if ok else "#b00",
                )
            axes[i, 0].set_ylabel(name, fontsize=8)
        figs.append(figure_png(fig))
    return figs


def study_html(result: dict[str, Any], x: torch.Tensor, examples: int = 8) -> str:
    """The study as one self-contained HTML page (inline CSS, PNGs as base64 data URIs)."""
    figs = _study_figures(result, x, examples)
    rows = [
        [
            r["optimizer"],
            _fmt(r["learning_rate"], ".3g"),
            f"{100 * r['robust_accuracy']:.2f}%",
            r["broken"],
            _fmt(r["median_norm"], ".4f"),
            _fmt(r["mean_norm"], ".4f"),
            f"{r['seconds']:.2f}",
            f"{r['queries_per_example']:.1f}",
        ]
        for r in result["rows"]
    ]
    header = [
        "optimizer",
        "lr",
        "robust accuracy",
        "broken",
        "median norm",
        "mean norm",
        "seconds",
        "forward passes / image",
    ]
    settings = {k: v for k, v in result.items() if not k.startswith("_") and k != "rows"}
    body = (
        f"<h1>Inner optimiser study: {esc(result['attack'])} under {esc(result['threat'])}</h1>"
        f"<p>{result['n']} images, clean accuracy {100 * result['clean_accuracy']:.2f}%. "
        "The same attack, model, images and seed for every optimiser; only the inner "
        "optimiser (and its default step size) changes. Norms are over the correctly "
        "classified images the attack broke.</p>"
        + table(header, rows, numeric=range(1, 8))
        + f"<h2>Summary</h2>{img(figs[0], 'summary')}"
        f"<h2>Norms of the broken examples</h2>{img(figs[1], 'norms')}"
        + (
            "<h2>Perturbations</h2><p class=muted>x_adv − x (red +, blue −, one colour scale "
            "for all); the title is the perturbation's norm, ✗ where the attack failed.</p>"
            + img(figs[2], "perturbations")
            if len(figs) > 2
            else ""
        )
        + f"<h2>Settings</h2><pre>{esc(json.dumps(settings, indent=2))}</pre>"
    )
    return page(f"multirobust optimizer study: {result['attack']}", body)


def write_study(result: dict[str, Any], x: torch.Tensor, out: Path, examples: int = 8) -> None:
    """Write ``out/study.json`` and ``out/study.html``, each atomically."""
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    write_atomic(out / "study.json", json.dumps(public, indent=2))
    write_atomic(out / "study.html", study_html(result, x, examples))
