"""Certified accuracy from published randomized-smoothing logs, next to ours.

    python zoo/published_smoothing.py LOG [LOG ...] --radii 0 0.25 0.5 0.75 1.0 --first 500

Each LOG is the tab-separated output of Cohen et al.'s ``certify.py`` (columns idx, label,
predict, radius, correct, time; predict −1 is an abstention), as published for instance in
github.com/jh-jeong/smoothing-consistency under ``data/certify/mnist/cohen/`` (Jeong & Shin,
NeurIPS 2020: LeNet trained with Gaussian noise, 90 epochs, certified with n = 100,000,
α = 0.001 on the whole MNIST test set, five seeds per σ). Fetch such a repository outside this
one and pass its files; nothing is downloaded. For each log and radius r the certified accuracy
is the share of examples predicted correctly with a radius ≥ r, on the whole log and on its
first ``--first`` examples (the images ``multirobust certify --n 500`` uses).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path


def read_log(path: Path) -> list[tuple[int, float, bool]]:
    """(idx, radius, correct) per row of a certify.py log."""
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows.append((int(row["idx"]), float(row["radius"]), row["correct"] == "1"))
    if not rows:
        raise SystemExit(f"{path}: no rows (is it a certify.py log?)")
    return rows


def certified(rows: list[tuple[int, float, bool]], radius: float) -> float:
    return sum(1 for _, r, ok in rows if ok and r >= radius) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path, nargs="+")
    parser.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--first", type=int, default=500)
    args = parser.parse_args()
    head = " | ".join(f"r={r:g}" for r in args.radii)
    print(f"| log | examples | {head} |")
    print("|---|---|" + "---:|" * len(args.radii))
    table: dict[str, list[list[float]]] = {"all": [], "first": []}
    for path in args.logs:
        rows = sorted(read_log(path), key=lambda t: t[0])
        for name, part in (("all", rows), ("first", rows[: args.first])):
            accs = [certified(part, r) for r in args.radii]
            table[name].append(accs)
            cells = " | ".join(f"{100 * a:.1f}" for a in accs)
            print(f"| {path.name} | {len(part)} | {cells} |")
    for name, runs in table.items():
        if len(runs) > 1:
            cols = list(zip(*runs, strict=True))
            cells = " | ".join(
                f"{100 * statistics.mean(c):.1f} ({100 * min(c):.1f}–{100 * max(c):.1f})"
                for c in cols
            )
            label = "whole logs" if name == "all" else f"first {args.first}"
            print(f"| mean (min–max) of {len(runs)}, {label} | | {cells} |")


if __name__ == "__main__":
    main()
