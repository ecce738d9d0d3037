"""Carlini & Wagner's seven objectives on a zoo model: which finds the smallest ℓ2 perturbation.

    python benchmarks/objective_study.py [--checkpoint zoo/standard.pt] [--n 100]
        [--targeting random|untargeted] [--steps 100] [--search 5] [--out runs/objective_study]

Runs ``cw-l2`` with each objective f1 … f7 (multirobust.losses; Carlini & Wagner 2017, §V.A) on
the first N MNIST test images the model classifies correctly, with the same random target per
example for every objective (the paper's "average case"), and prints success rate, mean and
median ℓ2 of the perturbations found, the mean over the examples every objective broke, seconds
and forward passes per example. Writes OUT/objective_study.json and OUT/objective_study.md.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from multirobust import data, models
from multirobust.atomic import write_atomic, write_json_atomic
from multirobust.robustness.objective_study import objective_study, rows_to_json, rows_to_markdown

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "zoo" / "standard.pt")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--targeting", choices=["random", "untargeted"], default="random")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--search", type=int, default=5, help="binary search steps over c")
    parser.add_argument("--out", type=Path, default=Path("runs/objective_study"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    model = models.load(args.checkpoint).eval()
    test = data.load("mnist", "test", limit=args.n)
    rows = objective_study(
        model,
        test.images,
        test.labels,
        targeting=args.targeting,
        steps=args.steps,
        binary_search_steps=args.search,
        progress=not args.quiet,
    )
    lines = rows_to_markdown(rows)
    header = (
        f"cw-l2 on {args.checkpoint.name}, first {args.n} MNIST test images, "
        f"{args.targeting} targets, {args.steps} steps × {args.search} values of c; "
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s)"
    )
    print(header)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "objective_study.md", header + "\n\n" + "\n".join(lines) + "\n")
    write_json_atomic(
        args.out / "objective_study.json",
        {
            "checkpoint": str(args.checkpoint),
            "n": args.n,
            "targeting": args.targeting,
            "steps": args.steps,
            "binary_search_steps": args.search,
            "rows": rows_to_json(rows),
        },
    )


if __name__ == "__main__":
    main()
