"""Speed of loss landscapes: the input grid against the bare batched forward loop, and a
weight-space surface, timed.

Input space: ``landscape.input_surface`` on a G×G grid for N examples (N·G² forward passes plus
one clean pass and one gradient per example) against the bare loop over the same points,
already built in memory: ``for chunk in points.split(B): model(chunk)`` under ``no_grad``. The
two run interleaved in one process, ``--repeats`` times each; the ratio of the medians (bare /
ours) is the figure of merit: 1.0 means the landscape costs nothing beyond its forward passes.

Weight space: ``landscape.weight_surface`` (2-D) on the first ``--weight-n`` test images against
the bare loop of the same forward passes (every image at every grid point, no weight update) on a
``--weight-ratio-points`` grid, interleaved ``--weight-ratio-repeats`` times; then the full
``--weight-points`` surface, timed once (``--weight-points 0`` skips it).

Each phase reports wall time and the process's CPU time (``time.process_time``): on a shared,
loaded machine the wall times swing with the other jobs, the CPU times much less.

    python benchmarks/landscape_speed.py [--checkpoint zoo/standard.pt] [--n 8] [--points 51]
        [--threat linf:0.3] [--batch-size 1024] [--repeats 3]
        [--weight-points 51] [--weight-n 1000] [--weight-ratio-points 7] [--no-weight]
        [--no-input] [--progress] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multirobust import data, landscape, models, threats
from multirobust.landscape.input_space import plane_points

_ROOT = Path(__file__).resolve().parents[1]


def _grid_points(surface: landscape.InputSurface) -> torch.Tensor:
    """Every grid point of ``surface``, materialised (N·G², C, H, W), as the bare loop sees them."""
    g = len(surface.alpha)
    x, u, v = (torch.from_numpy(a) for a in (surface.x, surface.u, surface.v))
    n = x.shape[0]
    ex = torch.arange(n).repeat_interleave(g * g)
    rem = torch.arange(g * g).repeat(n)
    ca = torch.tensor(surface.eps * surface.alpha, dtype=x.dtype)[rem // g]
    cb = torch.tensor(surface.eps * surface.beta, dtype=x.dtype)[rem % g]
    pts, _ = plane_points(x[ex], u[ex], v[ex], ca, cb)
    return pts


def bare_forward(model: torch.nn.Module, points: torch.Tensor, batch_size: int) -> None:
    """The reference: forward passes over the points, nothing else."""
    with torch.no_grad():
        for chunk in points.split(batch_size):
            model(chunk)


def _input_speed(
    args: argparse.Namespace, model: torch.nn.Module, test: Any, result: dict[str, Any]
) -> None:
    x, y = test.images[: args.n], test.labels[: args.n]
    threat = threats.parse(args.threat)

    def ours() -> landscape.InputSurface:
        return landscape.input_surface(
            model, x, y, threat, points=args.points, batch_size=args.batch_size, progress=False
        )

    surface = ours()  # warm-up, and the points the bare loop replays
    points = _grid_points(surface)
    bare_forward(model, points[: args.batch_size], args.batch_size)
    t_ours, t_bare, c_ours, c_bare = [], [], [], []
    for _ in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()
        ours()
        t_ours.append(time.perf_counter() - start)
        c_ours.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        bare_forward(model, points, args.batch_size)
        t_bare.append(time.perf_counter() - start)
        c_bare.append(time.process_time() - cpu)
    n_points = int(points.shape[0])
    result["input"] = {
        "checkpoint": str(args.checkpoint),
        "threat": str(threat),
        "examples": args.n,
        "grid": f"{args.points}x{args.points}",
        "forward_passes": n_points,
        "batch_size": args.batch_size,
        "ours_seconds": t_ours,
        "bare_seconds": t_bare,
        "ours_cpu_seconds": c_ours,
        "bare_cpu_seconds": c_bare,
        "cpu_ratio_bare_over_ours": statistics.median(c_bare) / statistics.median(c_ours),
        "ours_points_per_second": n_points / statistics.median(t_ours),
        "bare_points_per_second": n_points / statistics.median(t_bare),
        "ratio_bare_over_ours": statistics.median(t_bare) / statistics.median(t_ours),
    }
    r = result["input"]
    print(
        f"input grid {r['grid']} x {args.n} examples ({n_points} forward passes, {threat}): "
        f"ours {statistics.median(t_ours):.2f} s ({r['ours_points_per_second']:.0f} points/s), "
        f"bare loop {statistics.median(t_bare):.2f} s ({r['bare_points_per_second']:.0f} "
        f"points/s); throughput ratio ours/bare = {r['ratio_bare_over_ours']:.3f} (wall), "
        f"{r['cpu_ratio_bare_over_ours']:.3f} (CPU time: {statistics.median(c_ours):.2f} s "
        f"vs {statistics.median(c_bare):.2f} s)"
    )


def _weight_speed(
    args: argparse.Namespace, model: torch.nn.Module, test: Any, result: dict[str, Any]
) -> None:
    wx, wy = test.images[: args.weight_n], test.labels[: args.weight_n]
    bs = args.weight_batch_size

    def ours(g: int, progress: bool = False) -> landscape.WeightSurface:
        return landscape.weight_surface(
            model, (wx, wy), dims=2, points=g, batch_size=bs, progress=progress
        )

    def bare(points: int) -> None:
        with torch.no_grad():
            for _ in range(points):
                for chunk in wx.split(bs):
                    model(chunk)

    # Side by side: a small grid and the bare loop of as many passes, interleaved.
    k = args.weight_ratio_points
    t_o, t_b, c_o, c_b = [], [], [], []
    for _ in range(args.weight_ratio_repeats):
        start, cpu = time.perf_counter(), time.process_time()
        ours(k)
        t_o.append(time.perf_counter() - start)
        c_o.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        bare(k * k)
        t_b.append(time.perf_counter() - start)
        c_b.append(time.process_time() - cpu)
    ratio = statistics.median(t_b) / statistics.median(t_o)
    cpu_ratio = statistics.median(c_b) / statistics.median(c_o)
    result["weight_ratio"] = {
        "grid": f"{k}x{k}",
        "examples": args.weight_n,
        "ours_seconds": t_o,
        "bare_seconds": t_b,
        "ours_cpu_seconds": c_o,
        "bare_cpu_seconds": c_b,
        "ratio_bare_over_ours": ratio,
        "cpu_ratio_bare_over_ours": cpu_ratio,
    }
    print(
        f"weight surface {k}x{k} on {args.weight_n} images against the bare loop of the same "
        f"{k * k * args.weight_n} forward passes, interleaved x{args.weight_ratio_repeats}: "
        f"ratio bare/ours = {ratio:.3f} (wall), {cpu_ratio:.3f} (CPU time: "
        f"{statistics.median(c_o):.2f} s vs {statistics.median(c_b):.2f} s)",
        flush=True,
    )
    if args.weight_points:
        g = args.weight_points
        start, cpu = time.perf_counter(), time.process_time()
        ws = ours(g, args.progress)
        t_weight = time.perf_counter() - start
        c_weight = time.process_time() - cpu
        result["weight"] = {
            "grid": f"{g}x{g}",
            "examples": args.weight_n,
            "forward_passes": g * g * args.weight_n,
            "seconds": t_weight,
            "cpu_seconds": c_weight,
            "loss_at_theta": ws.centre()[0],
            "max_loss": float(np.max(ws.loss)),
        }
        print(
            f"weight surface {g}x{g} on {args.weight_n} images ({g * g * args.weight_n} forward "
            f"passes): {t_weight:.1f} s wall, {c_weight:.1f} s CPU"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(_ROOT / "zoo" / "standard.pt"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--points", type=int, default=51)
    ap.add_argument("--threat", default="linf:0.3")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weight-points", type=int, default=51)
    ap.add_argument("--weight-n", type=int, default=1000)
    ap.add_argument(
        "--weight-ratio-points", type=int, default=7, help="grid of the side-by-side ratio"
    )
    ap.add_argument("--weight-ratio-repeats", type=int, default=3)
    ap.add_argument("--weight-batch-size", type=int, default=1000)
    ap.add_argument("--no-weight", action="store_true")
    ap.add_argument("--no-input", action="store_true")
    ap.add_argument("--progress", action="store_true", help="progress bar of the weight surface")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    model = models.load(args.checkpoint).eval()
    test = data.load("mnist", "test", limit=max(args.n, args.weight_n))
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    }
    if not args.no_input:
        _input_speed(args, model, test, result)
    if not args.no_weight:
        _weight_speed(args, model, test, result)
    print(result["machine"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
