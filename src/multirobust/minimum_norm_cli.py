"""``multirobust optimizer-study`` and ``multirobust universal``.

``optimizer-study`` runs one penalised attack (Carlini–Wagner) once per inner optimiser on the
same model and images and writes ``study.json`` and a self-contained ``study.html``.
``universal`` computes a universal adversarial perturbation on training images, measures its
fooling rate on held-out images and writes ``universal.pt``, ``universal.json`` and
``universal.png``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import __version__, attacks, threats
from ._cliutil import dataset_of, load_data, load_model, parse_options
from .attacks.optimizers import OPTIMIZERS
from .attacks.universal import fooling_rate, universal_perturbation
from .threats import L2Ball, LinfBall, LpBall

__all__ = ["optimizer_study", "optimizer_study_cmd", "universal_cmd"]


# --------------------------------------------------------------------------- shared helpers


def _write(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a file is never half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _png_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _show(ax: Any, img: torch.Tensor, **kw: Any) -> None:
    """Draw a (C, H, W) tensor: one channel in gray (or ``cmap``), three as RGB."""
    arr = img.detach().float().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    ax.imshow(arr, **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def _signed(delta: torch.Tensor) -> torch.Tensor:
    """A perturbation as one channel to show with a diverging colour map (sum over channels)."""
    return delta.sum(0, keepdim=True) if delta.shape[0] > 1 else delta


# --------------------------------------------------------------------------- optimiser study


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
    bar = tqdm(total=n * len(optimizers), desc="optimizer study", disable=not progress)
    for name in optimizers:
        atk = attacks.create(attack, threat=tm, optimizer=name, seed=seed, **options)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        success = torch.zeros(n, dtype=torch.bool)
        norms = torch.zeros(n)
        x_adv = x.clone()
        queries = 0
        bar.set_postfix(optimizer=name)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            res = atk(model, x[sl], y[sl], generator=generator)
            success[sl] = res.success.cpu()
            norms[sl] = res.norm.float().cpu()
            x_adv[sl] = res.x_adv
            queries += res.queries
            bar.update(res.x_adv.shape[0])
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


def _fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(attacks.get(name))}


def _default_threat(cls: type[attacks.Attack]) -> str:
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
    plt = _pyplot()
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
    figs.append(_png_bytes(fig))

    fig, ax = plt.subplots(figsize=(6.5, 3.3))
    broken = [
        [v for v, s in zip(r["norms"], r["success"], strict=True) if s and v > 0] for r in rows
    ]
    if any(broken):
        ax.boxplot([b or [float("nan")] for b in broken])
        ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("perturbation norm of broken examples")
    ax.grid(axis="y", alpha=0.3)
    figs.append(_png_bytes(fig))

    k = min(examples, x.shape[0])
    if k:
        deltas = {n: result["_x_adv"][n][:k] - x[:k] for n in names}
        scale = max(float(d.abs().max()) for d in deltas.values()) or 1.0
        fig, axes = plt.subplots(
            len(names) + 1, k, figsize=(1.3 * k, 1.35 * (len(names) + 1)), squeeze=False
        )
        for j in range(k):
            _show(axes[0, j], x[j], cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_ylabel("clean", fontsize=8)
        for i, name in enumerate(names, start=1):
            row = rows[i - 1]
            for j in range(k):
                _show(
                    axes[i, j],
                    _signed(deltas[name][j]),
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
        figs.append(_png_bytes(fig))
    return figs


def study_html(result: dict[str, Any], x: torch.Tensor, examples: int = 8) -> str:
    """The study as one self-contained HTML page (inline CSS, PNGs as base64 data URIs)."""
    figs = _study_figures(result, x, examples)
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(r['optimizer'])}</td>"
        f"<td class=num>{_fmt(r['learning_rate'], '.3g')}</td>"
        f"<td class=num>{100 * r['robust_accuracy']:.2f}%</td>"
        f"<td class=num>{r['broken']}</td>"
        f"<td class=num>{_fmt(r['median_norm'], '.4f')}</td>"
        f"<td class=num>{_fmt(r['mean_norm'], '.4f')}</td>"
        f"<td class=num>{r['seconds']:.2f}</td>"
        f"<td class=num>{r['queries_per_example']:.1f}</td>"
        "</tr>"
        for r in result["rows"]
    )
    settings = {k: v for k, v in result.items() if not k.startswith("_") and k != "rows"}
    css = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;"
        "padding:0 1em}table{border-collapse:collapse}th,td{border:1px solid #ccc;"
        "padding:.3em .7em}th{background:#f3f3f3}td.num{text-align:right;"
        "font-variant-numeric:tabular-nums}img{max-width:100%}pre{background:#f6f6f6;"
        "padding:.8em}.muted{color:#666}"
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>multirobust optimizer study: {html.escape(result['attack'])}</title>"
        f"<style>{css}</style></head><body>"
        f"<h1>Inner optimiser study: {html.escape(result['attack'])} under "
        f"{html.escape(result['threat'])}</h1>"
        f"<p>{result['n']} images, clean accuracy {100 * result['clean_accuracy']:.2f}%. "
        "The same attack, model, images and seed for every optimiser; only the inner "
        "optimiser (and its default step size) changes. Norms are over the correctly "
        "classified images the attack broke.</p>"
        "<table><tr><th>optimizer</th><th>lr</th><th>robust accuracy</th><th>broken</th>"
        "<th>median norm</th><th>mean norm</th><th>seconds</th><th>forward passes / image</th>"
        f"</tr>{rows}</table>"
        f"<h2>Summary</h2>{_img_tag(figs[0], 'summary')}"
        f"<h2>Norms of the broken examples</h2>{_img_tag(figs[1], 'norms')}"
        + (
            "<h2>Perturbations</h2><p class=muted>x_adv − x (red +, blue −, one colour scale "
            "for all); the title is the perturbation's norm, ✗ where the attack failed.</p>"
            + _img_tag(figs[2], "perturbations")
            if len(figs) > 2
            else ""
        )
        + f"<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre>"
        "</body></html>"
    )


@click.command("optimizer-study")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--dataset", default=None, help="Dataset name (default: the checkpoint's).")
@click.option("--split", default="test", show_default=True)
@click.option(
    "--attack", "attack_name", default="cw-l2", show_default=True, help="cw-l2 or cw-linf."
)
@click.option(
    "--threat", "threat_text", default=None, help="Threat (default l2:2 for ℓ2, linf:0.3 for ℓ∞)."
)
@click.option(
    "--optimizers",
    default=",".join(OPTIMIZERS),
    show_default=True,
    help="Comma-separated optimisers to compare.",
)
@click.option(
    "--option", "option_pairs", multiple=True, help="Attack option KEY=VALUE, e.g. steps=200."
)
@click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--examples", type=click.IntRange(min=0), default=8, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-root", default=None, help="Data folder (default: $MULTIROBUST_DATA).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def optimizer_study_cmd(
    checkpoint: str,
    dataset: str | None,
    split: str,
    attack_name: str,
    threat_text: str | None,
    optimizers: str,
    option_pairs: tuple[str, ...],
    n: int,
    batch_size: int,
    examples: int,
    seed: int,
    data_root: str | None,
    out: str,
    quiet: bool,
) -> None:
    """Run a Carlini–Wagner attack once per inner optimiser; write study.json and study.html."""
    names = tuple(o.strip() for o in optimizers.split(",") if o.strip())
    options = parse_options(option_pairs)
    model = load_model(checkpoint)
    dataset = dataset_of(model, dataset)
    ds = load_data(dataset, split, n, data_root)
    try:
        result = optimizer_study(
            model,
            ds.images,
            ds.labels,
            attack=attack_name,
            threat=threat_text,
            optimizers=names,
            options=options,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    result["settings"] = {
        "checkpoint": str(checkpoint),
        "dataset": dataset,
        "split": split,
        "seed": seed,
        "batch_size": batch_size,
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    _write(out_dir / "study.json", lambda p: p.write_text(json.dumps(public, indent=2)))
    page = study_html(result, ds.images, examples)
    _write(out_dir / "study.html", lambda p: p.write_text(page, encoding="utf-8"))
    click.echo(study_table(result))
    click.echo(f"saved {out_dir / 'study.json'} and {out_dir / 'study.html'}")


# --------------------------------------------------------------------------- universal


def _universal_png(
    model: nn.Module, v: torch.Tensor, x: torch.Tensor, names: tuple[str, ...], k: int
) -> bytes:
    plt = _pyplot()
    k = min(k, x.shape[0])
    pert = (x[:k] + v).clamp(0, 1)
    with torch.no_grad():
        before = model(x[:k]).argmax(1).tolist()
        after = model(pert).argmax(1).tolist()
    fig, axes = plt.subplots(2, k + 1, figsize=(1.5 * (k + 1), 3.4), squeeze=False)
    scale = float(v.abs().max()) or 1.0
    _show(axes[0, 0], _signed(v), cmap="seismic", vmin=-scale, vmax=scale)
    axes[0, 0].set_title("perturbation", fontsize=8)
    axes[1, 0].axis("off")

    def label(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    for j in range(k):
        _show(axes[0, j + 1], x[j], cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(f"clean: {label(before[j])}", fontsize=8)
        _show(axes[1, j + 1], pert[j], cmap="gray", vmin=0, vmax=1)
        fooled = before[j] != after[j]
        axes[1, j + 1].set_title(
            f"→ {label(after[j])}", fontsize=8, color="#b00" if fooled else "black"
        )
    return _png_bytes(fig)


@click.command("universal")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--dataset", default=None, help="Dataset name (default: the checkpoint's).")
@click.option("--threat", "threat_text", default="linf:0.3", show_default=True)
@click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--n-test", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--max-passes", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--target-fooling-rate",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.8,
    show_default=True,
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--overshoot", type=click.FloatRange(min=0), default=0.02, show_default=True)
@click.option("--deepfool-norm", type=click.Choice(["l2", "linf"]), default="l2", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-root", default=None, help="Data folder (default: $MULTIROBUST_DATA).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def universal_cmd(
    checkpoint: str,
    dataset: str | None,
    threat_text: str,
    n_train: int,
    n_test: int,
    max_passes: int,
    target_fooling_rate: float,
    batch_size: int,
    overshoot: float,
    deepfool_norm: str,
    seed: int,
    data_root: str | None,
    out: str,
    quiet: bool,
) -> None:
    """Universal adversarial perturbation on training images; fooling rate on test images."""
    try:
        threat = threats.parse(threat_text)
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    if not isinstance(threat, LinfBall | L2Ball):
        raise click.ClickException(f"--threat must be an ℓ∞ or ℓ2 ball, got {threat}")
    model = load_model(checkpoint)
    dataset = dataset_of(model, dataset)
    train = load_data(dataset, "train", n_train, data_root)
    test = load_data(dataset, "test", n_test, data_root)
    start = time.perf_counter()
    try:
        res = universal_perturbation(
            model,
            train,
            threat,
            max_passes=max_passes,
            target_fooling_rate=target_fooling_rate,
            overshoot=overshoot,
            deepfool_norm=deepfool_norm,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    seconds = time.perf_counter() - start
    v = res.perturbation
    test_rate = fooling_rate(model, test, v)
    with torch.no_grad():
        n_test = test.images.shape[0]
        clean_acc = float((model(test.images).argmax(1) == test.labels).sum()) / n_test
        pert = model((test.images + v).clamp(0, 1)).argmax(1)
        pert_acc = float((pert == test.labels).sum()) / n_test
    summary = {
        "threat": res.threat,
        "fooling_rate_test": test_rate,
        "fooling_rate_train": res.best_fooling_rate,
        "fooling_rate_history": res.fooling_rate,
        "fooling_rate_checked_at": res.checked_at,
        "passes": res.passes,
        "deepfool_calls": res.deepfool_calls,
        "perturbation_norm": {
            "linf": float(v.abs().max()),
            "l2": float(torch.linalg.vector_norm(v)),
        },
        "test_accuracy_clean": clean_acc,
        "test_accuracy_perturbed": pert_acc,
        "seconds": seconds,
        "settings": {
            **res.settings,
            "checkpoint": str(checkpoint),
            "dataset": dataset,
            "n_train": train.images.shape[0],
            "n_test": test.images.shape[0],
            "multirobust": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "universal.pt", lambda p: torch.save(v.detach().cpu().clone(), p))
    _write(out_dir / "universal.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
    png = _universal_png(model, v, test.images, test.class_names, 8)
    _write(out_dir / "universal.png", lambda p: p.write_bytes(png))
    click.echo(
        f"universal perturbation under {res.threat}: fooling rate {res.best_fooling_rate:.1%} on "
        f"{train.images.shape[0]} training images, {test_rate:.1%} on {test.images.shape[0]} "
        f"held-out test images ({res.passes} pass(es), {seconds:.0f} s)"
    )
    click.echo(f"saved {out_dir / 'universal.pt'}, universal.json and universal.png")
