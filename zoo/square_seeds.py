"""Square's run-to-run spread: ours and the reference AutoAttack's, several seeds, same examples.

    python zoo/square_seeds.py --model pgd-linf --threat l2:2 --seeds 0 1 2

The examples are those still robust in our evaluation of the reference comparison
(``runs/strength/reference/ours-MODEL.json``, made by ``zoo/reference_autoattack.py --side
ours``), so each run asks what Square alone still breaks after everything else. Both sides run
5,000 queries with p_init 0.8 on AutoAttack's standard schedule (``rescale_schedule=False``).
AutoAttack is cloned outside the repository (``--reference``, as in reference_autoattack.py).
Prints, per side and seed, which examples (indices in the first N test images) were broken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pgd-linf")
    parser.add_argument("--threat", default="l2:2", choices=["linf:0.3", "l2:2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--side", choices=["ours", "autoattack", "both"], default="both")
    parser.add_argument("--reference", type=Path, default=Path("/work/ref/auto-attack"))
    parser.add_argument("--ours", type=Path, default=Path("runs/strength/reference"))
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    report = json.loads((args.ours / f"ours-{args.model}.json").read_text())
    robust = report[args.threat]["robust"]
    test = data.load("mnist", "test", limit=len(robust))
    rows = torch.tensor([i for i, r in enumerate(robust) if r])
    x, y = test.images[rows], test.labels[rows]
    model = models.load(args.zoo / f"{args.model}.pt").eval()
    kind, eps_text = args.threat.split(":")
    eps, p = float(eps_text), (float("inf") if kind == "linf" else 2.0)
    sides = ["ours", "autoattack"] if args.side == "both" else [args.side]
    union: dict[str, set[int]] = {s: set() for s in sides}
    for side in sides:
        for seed in args.seeds:
            start = time.perf_counter()
            if side == "ours":
                square = attacks.create(
                    "square", threat=args.threat, steps=5000, rescale_schedule=False, seed=seed
                )
                x_adv = square(model, x, y).x_adv
            else:
                if str(args.reference) not in sys.path:
                    sys.path.insert(0, str(args.reference))
                from autoattack.square import SquareAttack  # noqa: PLC0415 - outside the project

                reference = SquareAttack(
                    model,
                    p_init=0.8,
                    n_queries=5000,
                    eps=eps,
                    norm={"linf": "Linf", "l2": "L2"}[kind],
                    n_restarts=1,
                    seed=seed,
                    device="cpu",
                    resc_schedule=False,
                )
                x_adv = reference.perturb(x, y)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            norm = torch.linalg.vector_norm((x_adv - x).flatten(1), ord=p, dim=1)
            broken = rows[wrong & (norm <= eps * (1 + 1e-5))].tolist()
            union[side] |= set(broken)
            print(
                f"{side} seed {seed}: broke {len(broken)} of {len(rows)} {broken} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    for side, found in union.items():
        print(f"{side}, all seeds: {len(found)} distinct {sorted(found)}")


if __name__ == "__main__":
    main()
