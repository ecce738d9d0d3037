"""APGD-T's run-to-run spread: ours next to the reference AutoAttack's, seed by seed.

    python zoo/apgdt_spread.py --models avg random --threat l2:2 --seeds 4 \
        [--n 200] [--reference /work/ref/auto-attack] [--json OUT]

On the first ``--n`` MNIST test images, the examples that AutoAttack's APGD-CE (seed 0, 100
steps) leaves robust are attacked by AutoAttack's APGD-T and by ``multirobust``'s ``apgd-t``
with the same settings (100 steps, 1 restart, the 9 most likely wrong classes) under seeds
0 … ``--seeds`` − 1. It prints, per seed, which examples each breaks. docs/strength.md uses it to
tell a weaker attack (fewer examples broken on average) from the spread of one run (different
examples under different seeds). AutoAttack is not part of multirobust: clone
github.com/fra31/auto-attack outside the repository and pass ``--reference DIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from multirobust import data, models
from multirobust.atomic import write_json_atomic
from multirobust.attacks import create
from multirobust.threats import LpBall
from multirobust.threats import parse as parse_threat

_NORM = {"linf": "Linf", "l2": "L2"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["avg", "random"])
    ap.add_argument("--threat", default="l2:2", help="linf:EPS or l2:EPS")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--reference", type=Path, default=Path("/work/ref/auto-attack"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        threat = parse_threat(args.threat)  # a malformed radius is named before any work starts
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if not isinstance(threat, LpBall) or threat.name not in _NORM:
        raise SystemExit(f"--threat must be linf:EPS or l2:EPS, not {args.threat!r}")
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, not {args.seeds}")
    if not (args.reference / "autoattack").is_dir():
        raise SystemExit(
            f"AutoAttack not found under {args.reference}: clone github.com/fra31/auto-attack "
            "there (outside this repository), or pass --reference DIR"
        )
    sys.path.insert(0, str(args.reference))
    from autoattack.autopgd_base import (  # noqa: PLC0415 - outside the project on purpose
        APGDAttack,
        APGDAttack_targeted,
    )

    kind, eps = threat.name, float(threat.eps)
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    result: dict = {"n": args.n, "threat": args.threat, "torch": torch.__version__, "models": {}}
    for name in args.models:
        model = models.load(args.zoo / f"{name}.pt").eval()
        with torch.no_grad():
            correct = (model(x).argmax(1) == y).nonzero().flatten()
        ce = APGDAttack(model, norm=_NORM[kind], eps=eps, n_iter=100, seed=0, device="cpu")
        x_ce = ce.perturb(x[correct], y[correct])
        with torch.no_grad():
            left = correct[model(x_ce).argmax(1) == y[correct]]
        xs, ys = x[left], y[left]
        runs = []
        for seed in range(args.seeds):
            reference = APGDAttack_targeted(
                model, norm=_NORM[kind], eps=eps, n_iter=100, n_restarts=1, seed=seed, device="cpu"
            )
            reference.n_target_classes = 9
            start = time.perf_counter()
            x_ref = reference.perturb(xs, ys)
            ref_seconds = time.perf_counter() - start
            ours = create(
                "apgd-t", threat=args.threat, steps=100, restarts=1, target_classes=9, seed=seed
            )
            start = time.perf_counter()
            x_ours = ours(model, xs, ys).x_adv
            ours_seconds = time.perf_counter() - start
            with torch.no_grad():
                broken_ref = left[model(x_ref).argmax(1) != ys].tolist()
                broken_ours = left[model(x_ours).argmax(1) != ys].tolist()
            runs.append(
                {
                    "seed": seed,
                    "autoattack": broken_ref,
                    "ours": broken_ours,
                    "seconds": {"autoattack": ref_seconds, "ours": ours_seconds},
                }
            )
            print(
                f"{name} {args.threat} seed {seed}: AutoAttack APGD-T breaks {len(broken_ref)} "
                f"{broken_ref} ({ref_seconds:.0f} s); ours {len(broken_ours)} {broken_ours} "
                f"({ours_seconds:.0f} s)",
                flush=True,
            )
        result["models"][name] = {"left_by_apgd_ce": len(left), "runs": runs}
        if args.json:
            write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
