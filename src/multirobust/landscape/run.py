"""``run_landscapes``: everything ``multirobust landscape`` computes, resumable, and its report.

Per threat and example (one unit, saved atomically as ``grids/<threat>/example-<i>.npz`` before
the next starts): APGD-CE for the adversarial example, the input surface, the 1-D slice towards
the attack's point. Then, over the examples the attack left robust, the masking evidence; and
optionally the weight-space curve and surface. With ``resume=True`` units whose file exists and
whose fingerprint (model weights, the example, every setting) matches are read back instead of
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import attacks, pages
from ..atomic import check_writable_dir, write_atomic, write_bytes_atomic, write_json_atomic
from ..threats import Threat
from ._common import check_points, check_positive, check_positive_int, loss_fn, lp_threat
from .html import build_figures, render_section, slug
from .input_space import InputSlice, InputSurface, input_slice, input_surface
from .masking import MaskingEvidence, masking_evidence
from .storage import load_npz, save_npz
from .weight_space import WeightSurface, weight_surface

log = logging.getLogger(__name__)

__all__ = ["LandscapeReport", "ThreatLandscape", "run_landscapes"]

FORMAT = "multirobust-landscape"
VERSION = 1


@dataclass
class ThreatLandscape:
    """The landscapes of the examples under one threat.

    Attributes:
        threat: text of the threat.
        indices: dataset index of each example.
        surface: their input surfaces.
        slice: the loss on the line from each example to the attack's point.
        x_adv: (N, C, H, W) the attack's points.
        attack_success: per example, APGD-CE broke it.
        evidence: masking evidence over the examples the attack left robust.
    """

    threat: str
    indices: list[int]
    surface: InputSurface
    slice: InputSlice
    x_adv: np.ndarray
    attack_success: list[bool]
    evidence: MaskingEvidence


@dataclass
class LandscapeReport:
    """What ``run_landscapes`` found: per threat, the landscapes; optionally weight space."""

    settings: dict[str, Any]
    threats: list[ThreatLandscape]
    weights: dict[str, WeightSurface] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the grids themselves are in the ``.npz`` files)."""
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "settings": self.settings}
        out["threats"] = []
        for t in self.threats:
            s = t.surface
            inside_max = [
                float(s.values[s.loss][k][s.inside[k]].max()) if s.inside[k].any() else None
                for k in range(s.n)
            ]
            out["threats"].append(
                {
                    "threat": t.threat,
                    "examples": t.indices,
                    "labels": [int(v) for v in s.labels],
                    "attack": "apgd-ce",
                    "attack_success": t.attack_success,
                    "direction_source": s.source,
                    "grid_max_loss_in_ball": inside_max,
                    "grid_misclassified_share_in_ball": [
                        float(((s.pred[k] != s.labels[k]) & s.inside[k]).sum())
                        / max(1, int(s.inside[k].sum()))
                        for k in range(s.n)
                    ],
                    "slice_end_norm": [float(v) for v in t.slice.end_norm],
                    "evidence": t.evidence.to_dict(),
                    "grids": f"grids/{slug(t.threat)}",
                }
            )
        out["weights"] = {
            name: {
                "dims": w.dims,
                "points": len(w.alpha),
                "span": [float(w.alpha[0]), float(w.alpha[-1])],
                "examples": w.examples,
                "loss_at_theta": w.centre()[0],
                "accuracy_at_theta": w.centre()[1],
                "max_loss": float(np.max(w.loss)),
                "min_accuracy": float(np.min(w.accuracy)),
                "settings": w.settings,
                "grid": f"grids/weights-{name}.npz",
            }
            for name, w in self.weights.items()
        }
        return out

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{'threat':<14} {'examples':>8} {'attack robust':>13} {'grid broke':>10} "
            f"{'roughness':>9}"
        ]
        for t in self.threats:
            robust = len(t.evidence.examples)
            rough = t.evidence.roughness()
            lines.append(
                f"{t.threat:<14} {len(t.indices):>8} {robust:>13} "
                f"{len(t.evidence.broken_index):>10} "
                f"{'—' if math.isnan(rough) else f'{rough:.2f}':>9}"
            )
            if t.evidence.fired:
                lines.append(
                    f"CHECK landscape-beats-attacks [{t.threat}]: the grid broke examples "
                    f"{t.evidence.broken_index} that APGD-CE left robust"
                )
        for name, w in self.weights.items():
            loss, acc = w.centre()
            lines.append(
                f"weight space {name}: loss {loss:.4g} at θ (accuracy {100 * acc:.2f}%), "
                f"max {float(np.max(w.loss)):.4g} on {len(w.alpha)} points/axis"
            )
        return "\n".join(lines)

    def to_html(self, figures: Sequence[Any] | None = None) -> str:
        """The page: settings, a summary table and the landscape section."""
        st = self.settings
        summary_rows = [
            [
                t.threat,
                len(t.indices),
                sum(t.attack_success),
                len(t.evidence.examples),
                len(t.evidence.broken_index),
                "—" if math.isnan(t.evidence.roughness()) else f"{t.evidence.roughness():.2f}",
            ]
            for t in self.threats
        ]
        body = [
            "<h1>multirobust landscape</h1>",
            f"<p>Checkpoint <code>{pages.esc(st.get('checkpoint', '(in memory)'))}</code>, "
            f"{pages.esc(st.get('dataset', ''))} {pages.esc(st.get('split', ''))}, "
            f"examples {pages.esc(', '.join(str(i) for i in st.get('indices', [])))}; grid "
            f"{st.get('points')}×{st.get('points')} over ±{st.get('radius')} ε, loss "
            f"{pages.esc(st.get('loss'))}; attack APGD-CE, {st.get('attack_steps')} steps.</p>",
            pages.table(
                [
                    "threat",
                    "examples",
                    "broken by APGD-CE",
                    "left robust",
                    "grid breaks (of those)",
                    "mean roughness",
                ],
                summary_rows,
                table_id="summary",
                numeric=[1, 2, 3, 4, 5],
            ),
            render_section(
                [t.surface for t in self.threats],
                evidence=[t.evidence for t in self.threats],
                slices=[t.slice for t in self.threats],
                weights=self.weights or None,
                indices=[t.indices for t in self.threats],
                max_examples=max((len(t.indices) for t in self.threats), default=1),
                figures=figures,
            ),
            "<h2>Settings</h2>",
            f"<pre>{pages.esc(json.dumps(st, indent=2))}</pre>",
        ]
        return pages.page("multirobust landscape", "".join(body))

    def write(self, out_dir: str | Path, *, svg: bool = True, dpi: int = 90) -> list[Path]:
        """Write ``landscape.json``, ``landscape.html`` and ``figures/*.png`` (and ``.svg``).

        Returns:
            The paths written.
        """
        out = Path(out_dir)
        figs = build_figures(
            [t.surface for t in self.threats],
            evidence=[t.evidence for t in self.threats],
            slices=[t.slice for t in self.threats],
            weights=self.weights or None,
            indices=[t.indices for t in self.threats],
            max_examples=max((len(t.indices) for t in self.threats), default=1),
            svg=svg,
            dpi=dpi,
        )
        written: list[Path] = []
        for fig in figs:
            path = out / "figures" / f"{fig.name}.png"
            write_bytes_atomic(path, fig.png)
            written.append(path)
            if fig.svg is not None:
                write_bytes_atomic(path.with_suffix(".svg"), fig.svg)
                written.append(path.with_suffix(".svg"))
        for t in self.threats:
            path = out / "grids" / slug(t.threat) / "evidence.npz"
            save_npz(
                path,
                {
                    "broken_index": np.asarray(t.evidence.broken_index, dtype=np.int64),
                    "x_broken": t.evidence.x_broken.numpy(),
                },
            )
            written.append(path)
        write_json_atomic(out / "landscape.json", self.to_dict())
        write_atomic(out / "landscape.html", self.to_html(figs))
        written += [out / "landscape.json", out / "landscape.html"]
        return written


def _sha(*arrays: np.ndarray | torch.Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        t = a.detach().cpu().contiguous().numpy() if isinstance(a, torch.Tensor) else a
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()[:16]


def _model_sha(model: nn.Module) -> str:
    return _sha(*(t for _, t in sorted(model.state_dict().items())))


def _load_unit(path: Path, fingerprint: dict[str, Any]) -> tuple[Any, ...] | None:
    """A saved unit if it exists and was made with the same fingerprint, else None."""
    if not path.exists():
        return None
    try:
        arrays = load_npz(path)
        saved = json.loads(str(arrays["fingerprint"]))
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring unreadable partial result %s: %s", path, err)
        return None
    if saved != fingerprint:
        log.warning("ignoring %s: made with other settings or another model", path)
        return None
    s = {k[2:]: v for k, v in arrays.items() if k.startswith("s_")}
    sl = {k[2:]: v for k, v in arrays.items() if k.startswith("l_")}
    surface = InputSurface.from_arrays(s, settings=json.loads(str(arrays["surface_settings"])))
    return surface, InputSlice.from_arrays(sl), arrays["x_adv"], bool(arrays["success"])


def run_landscapes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: Sequence[Threat | str],
    *,
    indices: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    points: int = 51,
    radius: float = 1.5,
    loss: str = "ce",
    attack_steps: int = 100,
    seed: int = 0,
    batch_size: int = 1024,
    weight_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_points: int = 51,
    weight_curve_points: int = 51,
    weight_threat: Threat | str | None = None,
    weight_adv_examples: int = 100,
    weight_adv_steps: int = 10,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> LandscapeReport:
    """Input landscapes of ``x`` under each threat (and weight space), saved unit by unit.

    Args:
        model: the classifier (restored afterwards).
        x, y: the examples (N, C, H, W) and labels (N,).
        threats: ℓp threats (objects or text).
        indices: dataset index of each example (for names; default 0…N−1).
        out_dir: where ``grids/`` go as they are computed (None: keep in memory only).
        resume: reuse units already in ``out_dir`` that match the current settings.
        points, radius, loss: the input grid (see :func:`.input_surface`).
        attack_steps: APGD-CE steps for the attack's point (slice end, masking reference).
        seed: base seed; example i uses ``seed + indices[i]`` so results do not depend on
            which other examples are in the run.
        batch_size: points per forward pass.
        weight_data: ``(images, labels)`` for the weight-space curve and surface (None: skip).
        weight_points: points per axis of the 2-D weight surface.
        weight_curve_points: points of the 1-D weight curve.
        weight_threat: also the adversarial loss on the 1-D curve (PGD, ``weight_adv_steps``
            steps on the first ``weight_adv_examples`` examples).
        settings: extra entries for the report's settings (checkpoint, dataset, ...).
        progress: progress bars.
    """
    tms = [lp_threat(t, "run_landscapes") for t in threats]
    if not tms:
        raise ValueError("No threats given (e.g. threats=['linf:0.3'])")
    check_points("points", points)
    check_positive("radius", radius)
    loss_fn(loss)
    check_positive_int("attack_steps", attack_steps)
    check_positive_int("batch_size", batch_size)
    if weight_data is not None:
        check_points("weight_points", weight_points)
        check_points("weight_curve_points", weight_curve_points)
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"Expected x (N, C, H, W) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    idx = list(range(x.shape[0])) if indices is None else [int(i) for i in indices]
    if len(idx) != x.shape[0]:
        raise ValueError(f"indices has {len(idx)} entries for {x.shape[0]} examples")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_writable_dir(out)
    model_sha = _model_sha(model)
    device = next(iter(model.parameters()), torch.zeros(())).device
    base = {
        "model_sha256": model_sha,
        "points": points,
        "radius": float(radius),
        "loss": loss,
        "attack": "apgd-ce",
        "attack_steps": attack_steps,
        "format": VERSION,
    }
    results: list[ThreatLandscape] = []
    units = [(tm, k) for tm in tms for k in range(len(idx))]
    with tqdm(total=len(units), desc="landscapes", unit="example", disable=not progress) as bar:
        for tm in tms:
            parts: list[tuple[InputSurface, InputSlice, np.ndarray, bool]] = []
            for k in range(len(idx)):
                xi, yi = x[k : k + 1].to(device), y[k : k + 1].to(device)
                fp = dict(
                    base,
                    threat=str(tm),
                    index=idx[k],
                    seed=seed + idx[k],
                    example_sha256=_sha(xi, yi),
                )
                path = (
                    out / "grids" / slug(str(tm)) / f"example-{idx[k]}.npz"
                    if out is not None
                    else None
                )
                unit = _load_unit(path, fp) if (resume and path is not None) else None
                if unit is None:
                    unit = _compute_unit(
                        model,
                        xi,
                        yi,
                        tm,
                        fp,
                        points,
                        radius,
                        loss,
                        attack_steps,
                        batch_size,
                        progress,
                    )
                    if path is not None:
                        u_surface, u_slice, u_adv, u_success = unit
                        arrays: dict[str, np.ndarray] = {
                            f"s_{key}": v for key, v in u_surface.arrays().items()
                        }
                        arrays.update({f"l_{key}": v for key, v in u_slice.arrays().items()})
                        arrays["x_adv"] = u_adv
                        arrays["success"] = np.array(u_success)
                        arrays["fingerprint"] = np.array(json.dumps(fp, sort_keys=True))
                        arrays["surface_settings"] = np.array(json.dumps(u_surface.settings))
                        save_npz(path, arrays)
                parts.append(unit)  # type: ignore[arg-type]
                bar.update(1)
            surface = InputSurface.concat([p[0] for p in parts])
            slc = InputSlice.concat([p[1] for p in parts])
            x_adv = np.concatenate([p[2] for p in parts])
            success = [bool(p[3]) for p in parts]
            robust = [k for k, s in enumerate(success) if not s]
            evidence = masking_evidence(
                model,
                surface.select(robust),
                x_attack=torch.from_numpy(x_adv[robust]),
                indices=[idx[k] for k in robust],
            )
            evidence.surface = None  # the full surface is kept in ThreatLandscape
            results.append(ThreatLandscape(str(tm), idx, surface, slc, x_adv, success, evidence))
    weights: dict[str, WeightSurface] = {}
    if weight_data is not None:
        wx, wy = weight_data
        wfp = dict(model_sha256=model_sha, data_sha256=_sha(wx, wy), seed=seed, format=VERSION)
        specs: list[tuple[str, dict[str, Any]]] = [
            (
                "1d",
                dict(
                    dims=1,
                    points=weight_curve_points,
                    threat=weight_threat,
                    adv_examples=weight_adv_examples,
                    adv_steps=weight_adv_steps,
                ),
            ),
            ("2d", dict(dims=2, points=weight_points)),
        ]
        for name, opts in specs:
            fp = dict(wfp, **{k: str(v) if k == "threat" else v for k, v in opts.items()})
            path = out / "grids" / f"weights-{name}.npz" if out is not None else None
            ws: WeightSurface | None = None
            if resume and path is not None and path.exists():
                arrays = load_npz(path)
                if json.loads(str(arrays.get("fingerprint", "null"))) == fp:
                    ws = WeightSurface.from_arrays(arrays, json.loads(str(arrays["settings"])))
            if ws is None:
                ws = weight_surface(
                    model, (wx, wy), seed=seed, batch_size=batch_size, progress=progress, **opts
                )
                if path is not None:
                    arrays = ws.arrays()
                    arrays["fingerprint"] = np.array(json.dumps(fp, sort_keys=True))
                    arrays["settings"] = np.array(json.dumps(ws.settings))
                    save_npz(path, arrays)
            weights[name] = ws
    report_settings = dict(settings or {})
    report_settings.update(
        {
            "threats": [str(t) for t in tms],
            "indices": idx,
            "points": points,
            "radius": float(radius),
            "loss": loss,
            "attack": "apgd-ce",
            "attack_steps": attack_steps,
            "seed": seed,
            "batch_size": batch_size,
            "model_sha256": model_sha,
            "box": "grid points outside [0, 1] are clipped to the box",
        }
    )
    if weight_data is not None:
        report_settings.update(
            {
                "weight_examples": int(weight_data[0].shape[0]),
                "weight_points": weight_points,
                "weight_curve_points": weight_curve_points,
                "weight_threat": None if weight_threat is None else str(weight_threat),
            }
        )
    return LandscapeReport(report_settings, results, weights)


def _compute_unit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Any,
    fp: dict[str, Any],
    points: int,
    radius: float,
    loss: str,
    attack_steps: int,
    batch_size: int,
    progress: bool,
) -> tuple[InputSurface, InputSlice, np.ndarray, bool]:
    attack = attacks.create("apgd", threat=threat, steps=attack_steps, seed=fp["seed"])
    res = attack(model, x, y)
    surface = input_surface(
        model,
        x,
        y,
        threat,
        points=points,
        radius=radius,
        loss=loss,
        seed=fp["seed"],
        batch_size=batch_size,
        progress=progress,
    )
    slc = input_slice(model, x, y, res.x_adv, threat, batch_size=batch_size, progress=False)
    return surface, slc, res.x_adv.detach().cpu().numpy(), bool(res.success[0])
