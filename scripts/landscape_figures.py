"""The figures of docs/landscapes.md: input- and weight-space landscapes of the zoo's models.

    python scripts/landscape_figures.py [--out docs/img/landscapes] [--example 0]
        [--models standard,pgd-linf,max,msd] [--points 51] [--weight-n 1000]
        [--weight-2d-points 21] [--weight-2d-n 500] [--json OUT]

Per model, one figure ``input-<model>.png``: the cross-entropy on the plane of the steepest
ascent and a random orthogonal direction (top) and the predicted class (bottom) around test
image ``--example`` under linf:0.3, l2:2 and l1:10 (grid ±1.5 ε). ``traps.png``: the same
example under linf:0.3 for zoo/standard.pt and two traps around it (quantised input, saturated
logits). ``weights.png``: the weight-space curves of all models along one filter-normalised
direction each (clean loss and accuracy on ``--weight-n`` test images, adversarial ℓ∞ 0.3 on
the first 100, PGD-10), and the 2-D surfaces on ``--weight-2d-n`` images. PNGs are reduced to a
64-colour palette to keep the repository small. The numbers behind the figures go to ``--json``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from multirobust import data, landscape, models, pages
from multirobust.landscape.plots import class_axes, surface_axes, weight_figure

_ROOT = Path(__file__).resolve().parents[1]
THREATS = ["linf:0.3", "l2:2", "l1:10"]


def _save(fig: Any, path: Path, dpi: int = 72) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pages.pyplot().close(fig)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    img = img.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    return path.stat().st_size


def _panel(surfaces: list[tuple[str, landscape.InputSurface]], title: str) -> Any:
    plt = pages.pyplot()
    cols = len(surfaces)
    fig, axes = plt.subplots(2, cols, figsize=(3.3 * cols, 6.2), squeeze=False)
    for c, (label, s) in enumerate(surfaces):
        surface_axes(axes[0][c], s, 0)
        axes[0][c].set_title(f"{label}: cross-entropy", fontsize=9)
        if c:
            axes[0][c].set_ylabel("")
        class_axes(axes[1][c], s, 0, 10)
        axes[1][c].set_title(f"{label}: predicted class", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(hspace=0.35, wspace=0.5)
    return fig


def _stats(model: Any, s: landscape.InputSurface) -> dict[str, Any]:
    inside = s.inside[0]
    wrong = (s.pred[0] != s.labels[0]) & inside
    e = landscape.masking_evidence(model, s).examples[0]
    return {
        "source": s.source[0],
        "ce_at_x": float(s.center["ce"][0]),
        "max_ce_in_ball": float(s.values["ce"][0][inside].max()),
        "misclassified_share_in_ball": float(wrong.sum() / max(1, inside.sum())),
        "grid_finds_error": e.broken,
        "roughness": e.roughness,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(_ROOT / "docs" / "img" / "landscapes"))
    ap.add_argument("--example", type=int, default=0)
    ap.add_argument("--models", default="standard,pgd-linf,max,msd")
    ap.add_argument("--points", type=int, default=51)
    ap.add_argument("--weight-n", type=int, default=1000)
    ap.add_argument("--weight-points", type=int, default=51)
    ap.add_argument("--weight-2d-points", type=int, default=21)
    ap.add_argument("--weight-2d-n", type=int, default=500)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--cache",
        default=None,
        help="Folder for the computed grids (npz); grids already there are reused, so the "
        "figures can be redrawn without recomputing them.",
    )
    args = ap.parse_args(argv)
    cache = Path(args.cache) if args.cache else None

    def cached(key: str, make: Any, cls: Any) -> Any:
        path = cache / f"{key}.npz" if cache else None
        if path is not None and path.exists():
            arrays = landscape.load_npz(path)
            return cls.from_arrays(arrays, json.loads(str(arrays["settings_json"])))
        value = make()
        if path is not None:
            arrays = value.arrays()
            arrays["settings_json"] = np.array(json.dumps(value.settings))
            landscape.save_npz(path, arrays)
        return value

    out = Path(args.out)
    test = data.load("mnist", "test", limit=max(args.weight_n, args.example + 1))
    x, y = (
        test.images[args.example : args.example + 1],
        test.labels[args.example : args.example + 1],
    )
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    result: dict[str, Any] = {"example": args.example, "label": int(y[0]), "models": {}}
    curves: list[tuple[str, landscape.WeightSurface]] = []
    grids: list[tuple[str, landscape.WeightSurface]] = []
    for name in names:
        model = models.load(_ROOT / "zoo" / f"{name}.pt")
        start = time.perf_counter()
        surfaces = [
            (
                t,
                cached(
                    f"input-{name}-{t.replace(':', '-')}",
                    lambda t=t, model=model: landscape.input_surface(
                        model, x, y, t, points=args.points, progress=False
                    ),
                    landscape.InputSurface,
                ),
            )
            for t in THREATS
        ]
        size = _save(
            _panel(surfaces, f"zoo/{name}.pt, test image {args.example} (label {int(y[0])})"),
            out / f"input-{name}.png",
        )
        entry: dict[str, Any] = {
            "input": {t: _stats(model, s) for t, s in surfaces},
            "input_png_bytes": size,
            "input_seconds": time.perf_counter() - start,
        }
        start = time.perf_counter()
        curve = cached(
            f"weights-1d-{name}",
            lambda model=model: landscape.weight_surface(
                model,
                (test.images[: args.weight_n], test.labels[: args.weight_n]),
                dims=1,
                points=args.weight_points,
                threat="linf:0.3",
                adv_examples=100,
                adv_steps=10,
                progress=False,
            ),
            landscape.WeightSurface,
        )
        grid = cached(
            f"weights-2d-{name}",
            lambda model=model: landscape.weight_surface(
                model,
                (test.images[: args.weight_2d_n], test.labels[: args.weight_2d_n]),
                dims=2,
                points=args.weight_2d_points,
                progress=False,
            ),
            landscape.WeightSurface,
        )
        curves.append((name, curve))
        grids.append((name, grid))
        entry["weight"] = {
            "seconds": time.perf_counter() - start,
            "loss_at_theta": curve.centre()[0],
            "accuracy_at_theta": curve.centre()[1],
            "loss_at_alpha": {
                f"{a:+.1f}": float(curve.loss[i])
                for i, a in enumerate(curve.alpha)
                if abs(round(a * 2) - a * 2) < 1e-9
            },
            "accuracy_at_alpha": {
                f"{a:+.1f}": float(curve.accuracy[i])
                for i, a in enumerate(curve.alpha)
                if abs(round(a * 2) - a * 2) < 1e-9
            },
            "adv_accuracy_at_alpha": {
                f"{a:+.1f}": float(curve.adv_accuracy[i])  # type: ignore[index]
                for i, a in enumerate(curve.alpha)
                if abs(round(a * 2) - a * 2) < 1e-9
            },
            "max_loss_2d": float(np.max(grid.loss)),
            "min_accuracy_2d": float(np.min(grid.accuracy)),
        }
        result["models"][name] = entry
        print(name, json.dumps(entry["input"]), flush=True)
    result["weights_png_bytes"] = _save(weight_figure(curves + grids), out / "weights.png")

    base = models.load(_ROOT / "zoo" / "standard.pt")
    traps = [("standard", base)] + [
        (f"{t} trap", landscape.make_trap(t, base)) for t in ("quantised", "saturated")
    ]
    surfaces = [
        (
            label,
            cached(
                f"trap-{label.replace(' ', '-')}",
                lambda m=m: landscape.input_surface(
                    m, x, y, "linf:0.3", points=args.points, progress=False
                ),
                landscape.InputSurface,
            ),
        )
        for label, m in traps
    ]
    result["traps"] = {
        label: _stats(m, s) for (label, m), (_, s) in zip(traps, surfaces, strict=True)
    }
    result["traps_png_bytes"] = _save(
        _panel(surfaces, f"linf:0.3, test image {args.example}: zoo/standard.pt and two traps"),
        out / "traps.png",
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
