"""Transfer check for docs/results.md: ℓ1 and ℓ2 examples crafted on other zoo models.

    python zoo/transfer.py runs/zoo-eval/standard-500 [--n 500]

For each threat (ℓ1 10, ℓ2 2), APGD-CE (100 steps, seed 0) crafts adversarial examples on each
source model (standard, pgd-l1, pgd-l2, max); each target model is then counted robust on an
example only if its evaluation report says robust *and* none of the examples transferred from
the other sources fools it. Prints the per-threat accuracy before and after, and the ℓp union
(ℓ∞ 0.3, ℓ2 2, ℓ1 10) with the transfer-augmented number in place of the evaluated one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from multirobust import attacks, data, models

SOURCES = ["standard", "pgd-l1", "pgd-l2", "max"]
TARGETS = ["pgd-linf", "pgd-l2", "pgd-l1", "max", "avg", "msd", "random"]
LP = ["linf:0.3", "l2:2", "l1:10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    zoo = {name: models.load(args.zoo / f"{name}.pt") for name in {*SOURCES, *TARGETS}}
    reports = {t: json.loads((args.reports / t / "report.json").read_text()) for t in TARGETS}
    evaluated = {
        t: {k: torch.tensor(reports[t]["threats"][k]["robust"]) for k in LP} for t in TARGETS
    }
    augmented = {t: dict(evaluated[t]) for t in TARGETS}
    print("| threat | target | evaluated | with transfer | newly broken |")
    print("|---|---|---:|---:|---:|")
    for threat in ["l1:10", "l2:2"]:
        make = attacks.create("apgd", threat=threat, steps=100, loss="ce", seed=0)
        crafted = {s: make(zoo[s], x, y).x_adv for s in SOURCES}
        for t in TARGETS:
            robust = evaluated[t][threat]
            fooled = torch.zeros_like(robust)
            with torch.no_grad():
                for s, x_adv in crafted.items():
                    if s != t:
                        fooled |= zoo[t](x_adv).argmax(1) != y
            augmented[t][threat] = robust & ~fooled
            print(
                f"| {threat} | `{t}` | {robust.float().mean():.1%} "
                f"| {augmented[t][threat].float().mean():.1%} | {int((robust & fooled).sum())} |"
            )
    print()
    print("| target | union ℓp evaluated | union ℓp with transfer |")
    print("|---|---:|---:|")
    for t in TARGETS:
        before = torch.stack([evaluated[t][k] for k in LP]).all(0).float().mean()
        after = torch.stack([augmented[t][k] for k in LP]).all(0).float().mean()
        print(f"| `{t}` | {before:.1%} | {after:.1%} |")


if __name__ == "__main__":
    main()
