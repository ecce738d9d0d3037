"""Sequential CERTIFY against Cohen et al.'s fixed-n CERTIFY: samples spent, certified accuracy.

Both certify the same MNIST test images with the same smoothed classifier at the same level α:
the fixed procedure with n estimation samples per image, the sequential one
(:meth:`multirobust.certify.Smooth.certify_sequential`) with at most n, stopping once the target
radii are decided. Printed: the certified accuracy of each at every target radius, and the mean
noisy samples per image (selection included) with their ratio.

    python benchmarks/certify_sequential.py --checkpoint runs/noise/model.pt [--images 100]
        [--n 100000] [--noise gaussian:0.25] [--radii 0.25,0.5,0.75] [--json OUT]

Needs MULTIROBUST_DATA (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from multirobust import data, models
from multirobust.certify import Smooth, parse_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--noise", default="gaussian:0.25")
    parser.add_argument("--radii", default="0.25,0.5,0.75")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    model = models.load(args.checkpoint).eval()
    test = data.load("mnist", "test", limit=args.images)
    radii = [float(r) for r in args.radii.split(",")]
    smooth = Smooth(model, parse_noise(args.noise), batch_size=args.batch_size)
    labels = test.labels.tolist()

    t0 = time.perf_counter()
    fixed = smooth.certify(
        test.images,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        generator=torch.Generator().manual_seed(0),
    )
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = smooth.certify_sequential(
        test.images,
        radii,
        n0=args.n0,
        n_max=args.n,
        alpha=args.alpha,
        futility_alpha=args.alpha,
        generator=torch.Generator().manual_seed(0),
    )
    t_seq = time.perf_counter() - t0

    rows = []
    for r in radii:
        rows.append(
            {
                "radius": r,
                "fixed": fixed.certified_accuracy(labels, r),
                "sequential": seq.certified_accuracy(labels, r),
            }
        )
    mean_fixed = sum(fixed.samples) / len(fixed.samples)
    mean_seq = sum(seq.samples) / len(seq.samples)
    print(f"{args.images} MNIST test images, {smooth.noise}, alpha {args.alpha}, n {args.n}")
    print(f"{'radius':>8} {'fixed n':>10} {'sequential':>11}")
    for row in rows:
        print(f"{row['radius']:>8.3g} {row['fixed']:>10.2%} {row['sequential']:>11.2%}")
    print(
        f"mean samples per image: fixed {mean_fixed:,.0f}, sequential {mean_seq:,.0f} "
        f"({mean_fixed / mean_seq:.1f}x fewer); time {t_fixed:.0f} s vs {t_seq:.0f} s"
    )
    disagree = [
        i
        for i in range(len(labels))
        for r in radii
        if (fixed.prediction[i] == labels[i] and fixed.radius[i] >= r)
        != (seq.prediction[i] == labels[i] and seq.radius[i] >= r)
    ]
    print(f"(image, radius) decisions that differ: {len(disagree)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "mean_samples_fixed": mean_fixed,
                    "mean_samples_sequential": mean_seq,
                    "seconds_fixed": t_fixed,
                    "seconds_sequential": t_seq,
                    "samples_sequential": seq.samples,
                    "radius_fixed": fixed.radius,
                    "radius_sequential": seq.radius,
                    "differing_decisions": len(disagree),
                    "cap_fixed": fixed.cap,
                    "cap_sequential": seq.cap,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
