"""Randomized-smoothing CERTIFY against a bare loop of the same batched forward passes.

For each image, ``Smooth.certify`` classifies n0 + n noisy copies in chunks of ``batch_size``
(drawing the noise from a generator, adding it, taking the argmax and counting). The bare loop
runs exactly the same forward passes on the same chunk sizes, on one noisy batch made
beforehand, and keeps nothing: the cost of the passes alone. Runs are interleaved and repeated
in one process; the ratio of the medians (bare time / our time) is the figure of merit (1.0: no
overhead beyond the passes). Throughput is in noisy samples per second.

    python benchmarks/certify_speed.py [--checkpoint zoo/standard.pt] [--images 3]
        [--n 10000] [--n0 100] [--batch-size 1000] [--repeats 3] [--noise gaussian:0.25]
        [--device auto|cpu|cuda] [--json OUT]

Needs MULTIROBUST_DATA (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from multirobust import data, models
from multirobust.certify import Smooth, parse_noise


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _chunks(total: int, batch: int) -> list[int]:
    return [min(batch, total - s) for s in range(0, total, batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="zoo/standard.pt")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", default="gaussian:0.25")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model = models.load(args.checkpoint).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = data.load("mnist", "test", limit=args.images)
    x = test.images.to(device)
    noise = parse_noise(args.noise)
    smooth = Smooth(model, noise, batch_size=args.batch_size)
    sizes = _chunks(args.n0, args.batch_size) + _chunks(args.n, args.batch_size)
    gen = torch.Generator(device=device).manual_seed(0)
    noisy = x[0] + noise.sample((args.batch_size, *x.shape[1:]), like=x, generator=gen)

    def ours() -> None:
        smooth.certify(
            x,
            n0=args.n0,
            n=args.n,
            generator=torch.Generator(device=device).manual_seed(1),
        )

    def bare() -> None:
        with torch.no_grad():
            for _ in range(x.shape[0]):
                for b in sizes:
                    model(noisy[:b])

    ours()  # warm-up (allocator, lazy initialisation)
    bare()
    t_ours, t_bare = [], []
    for _ in range(args.repeats):
        t_bare.append(_time(bare, device))
        t_ours.append(_time(ours, device))
    samples = x.shape[0] * (args.n0 + args.n)
    med_ours, med_bare = statistics.median(t_ours), statistics.median(t_bare)
    result = {
        "samples": samples,
        "batch_size": args.batch_size,
        "noise": str(noise),
        "ours_s": med_ours,
        "bare_s": med_bare,
        "ours_samples_per_s": samples / med_ours,
        "bare_samples_per_s": samples / med_bare,
        "ratio_bare_over_ours": med_bare / med_ours,
        "runs_ours": t_ours,
        "runs_bare": t_bare,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(
        f"{samples:,} noisy samples ({x.shape[0]} images × (n0 {args.n0} + n {args.n}), "
        f"batch {args.batch_size}, {noise}, {device}, {torch.get_num_threads()} thread(s))\n"
        f"  multirobust certify : {med_ours:8.2f} s  {samples / med_ours:12,.0f} samples/s\n"
        f"  bare forward loop   : {med_bare:8.2f} s  {samples / med_bare:12,.0f} samples/s\n"
        f"  ratio (bare / ours) : {med_bare / med_ours:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
