"""APGD under ℓ1 on zoo models: SLIDE's fixed sparsity against APGD-ℓ1's adaptive sparsity
(Croce & Hein 2021), without and with the 3ε → 2ε → ε schedule; robust accuracy (lower is a
stronger attack) and seconds, side by side on the same images.

    python benchmarks/apgd_l1_strength.py [--models pgd-l1 max msd] [--n 100] [--eps 10]
        [--steps 100] [--out runs/strength/apgd_l1]

Writes OUT/apgd_l1.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models
from multirobust.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "APGD, SLIDE's fixed 1% step": {"adaptive_sparsity": False},
    "APGD-ℓ1 adaptive, one radius": {"use_largereps": False},
    "APGD-ℓ1 adaptive, 3ε→2ε→ε": {"use_largereps": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pgd-l1", "max", "msd"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/strength/apgd_l1"))
    args = parser.parse_args()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    rows = []
    for name in args.models:
        model = models.load(ROOT / "zoo" / f"{name}.pt")
        for label, options in VARIANTS.items():
            attack = attacks.create("apgd", threat=f"l1:{args.eps:g}", steps=args.steps, **options)
            start = time.perf_counter()
            res = attack(model, x, y, generator=torch.Generator().manual_seed(0))
            rows.append(
                {
                    "model": name,
                    "attack": label,
                    "robust": int(res.robust.sum()),
                    "n": args.n,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(f"{name:8s} {label:32s} {rows[-1]['robust']:4d}/{args.n}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "apgd_l1.json", {"settings": vars(args) | {"out": str(args.out)}, "rows": rows}
    )
    print("\n| model | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for name in args.models:
        cells = [
            f"{r['robust'] / r['n']:.0%} ({r['seconds']:.0f} s)" for r in rows if r["model"] == name
        ]
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
