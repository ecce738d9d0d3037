"""PGD-40 ℓ∞ on 1000 MNIST images: multirobust against a bare hand-written PyTorch loop.

Both do 40 forward+backward passes on the same model and images in the same process; runs are
interleaved and repeated, and the median of each is compared. The ratio (bare time / our time)
is the figure of merit: 1.0 means no overhead beyond the passes themselves.

    python benchmarks/pgd_speed.py [--checkpoint CKPT] [--n 1000] [--repeats 5] [--json OUT]

Without a checkpoint a small_cnn is trained for one epoch on 20,000 MNIST images first, so that
the early-stopping figure reflects a real model. Needs MULTIROBUST_DATA (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from multirobust import attacks, data, models
from multirobust.training import train_standard

EPS, STEPS = 0.3, 40
ALPHA = 2.5 * EPS / STEPS


def bare_pgd(model, x, y, generator):
    """The reference: the shortest correct PGD loop, no checks, no bookkeeping."""
    x_adv = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * EPS).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * grad.sign(), x - EPS), x + EPS)
        x_adv = x_adv.clamp(0, 1)
    return x_adv


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))

    if args.checkpoint:
        model = models.load(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = models.for_dataset("small_cnn", "mnist")
        train_standard(model, data.load("mnist", "train", limit=20000), epochs=1, progress=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels

    full = attacks.create("pgd", threat=f"linf:{EPS}", steps=STEPS, early_stop=False)
    early = full.with_options(early_stop=True)
    runs = {
        "bare loop": lambda: bare_pgd(model, x, y, torch.Generator().manual_seed(0)),
        "multirobust pgd (all 40 steps)": lambda: full(model, x, y),
        "multirobust pgd (early stop)": lambda: early(model, x, y),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    x_bare = bare_pgd(model, x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        robust = {
            "bare loop": float((model(x_bare).argmax(1) == y).float().mean()),
            "multirobust pgd (all 40 steps)": float(full(model, x, y).robust.float().mean()),
            "multirobust pgd (early stop)": float(early(model, x, y).robust.float().mean()),
        }
    bare = med["bare loop"]
    print(
        f"PGD-{STEPS} linf {EPS} on {args.n} MNIST images, small_cnn, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    print(f"{'run':<34} {'median s':>9} {'img/s':>8} {'speed vs bare':>14} {'robust acc':>11}")
    rows = []
    for name in runs:
        ratio = bare / med[name]
        print(
            f"{name:<34} {med[name]:>9.3f} {args.n / med[name]:>8.0f} {ratio:>14.3f} "
            f"{robust[name]:>11.2%}"
        )
        rows.append(
            {
                "run": name,
                "median_seconds": med[name],
                "all_seconds": times[name],
                "speed_vs_bare": ratio,
                "robust_accuracy": robust[name],
            }
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "pgd_speed",
                    "n": args.n,
                    "steps": STEPS,
                    "eps": EPS,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "machine": platform.machine(),
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
