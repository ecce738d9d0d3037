"""FAB-T alone, ours against the reference AutoAttack's, on the same zoo model and images.

    python zoo/fab_reference.py --model pgd-linf --n 200

Both sides run FAB-T as AutoAttack's standard version does (9 target classes, 100 steps, one
run per target, from the clean image) under ℓ2 2, ℓ∞ 0.3 and ℓ1 10 on the first N MNIST test
images, and count the examples broken: misclassified within ε (a clean mistake counts as broken
on both sides). AutoAttack is cloned outside the repository (``--reference``, as in
reference_autoattack.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models

THREATS = ["l2:2", "linf:0.3", "l1:10"]
_NORM = {"linf": ("Linf", float("inf")), "l2": ("L2", 2.0), "l1": ("L1", 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pgd-linf")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--side", choices=["ours", "autoattack", "both"], default="both")
    parser.add_argument("--reference", type=Path, default=Path("/work/ref/auto-attack"))
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    model = models.load(args.zoo / f"{args.model}.pt").eval()
    sides = ["ours", "autoattack"] if args.side == "both" else [args.side]
    for threat in THREATS:
        kind, eps_text = threat.split(":")
        eps = float(eps_text)
        name, p = _NORM[kind]
        for side in sides:
            start = time.perf_counter()
            if side == "ours":
                x_adv = attacks.create("fab-t", threat=threat, target_classes=9)(model, x, y).x_adv
            else:
                if str(args.reference) not in sys.path:
                    sys.path.insert(0, str(args.reference))
                from autoattack import AutoAttack  # noqa: PLC0415 - outside the project

                reference = AutoAttack(
                    model, norm=name, eps=eps, version="standard", device="cpu", seed=0,
                    verbose=False,
                )  # fmt: skip
                reference.attacks_to_run = ["fab-t"]
                x_adv = reference.run_standard_evaluation(x, y, bs=len(x))
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            norm = torch.linalg.vector_norm((x_adv - x).flatten(1), ord=p, dim=1)
            broken = wrong & (norm <= eps * (1 + 1e-5))
            print(
                f"{args.model} {threat} {side}: FAB-T breaks {int(broken.sum())} of {len(x)} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
