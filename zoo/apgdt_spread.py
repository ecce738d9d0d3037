"""APGD-T's run-to-run spread: ours next to the reference AutoAttack's, seed by seed.

    python zoo/apgdt_spread.py --models avg random --threat l2:2 --seeds 4 \
        [--n 200] [--reference /work/ref/auto-attack] [--json OUT] \
        [--runs R] [--near-miss-runs K] [--examples I ...] [--ours-only]

On the first ``--n`` MNIST test images, the examples that AutoAttack's APGD-CE (seed 0, 100
steps) leaves robust are attacked by AutoAttack's APGD-T and by ``multirobust``'s ``apgd-t``
with the same settings (100 steps, 1 restart, the 9 most likely wrong classes) under seeds
0 … ``--seeds`` − 1. It prints, per seed, which examples each breaks. docs/strength.md uses it to
tell a weaker attack (fewer examples broken on average) from the spread of one run (different
examples under different seeds). ``--runs R`` and ``--near-miss-runs K`` give our side R runs per
target and K near-miss runs (the standard preset: 2 and 3); ``--examples I ...`` attacks those
test examples instead (by index, APGD-CE skipped) and prints how many runs broke each;
``--ours-only`` leaves AutoAttack's APGD-T out. AutoAttack is not part of multirobust: clone
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
    ap.add_argument("--runs", type=int, default=1, help="our runs per target")
    ap.add_argument("--near-miss-runs", type=int, default=0, help="our near-miss runs")
    ap.add_argument("--examples", type=int, nargs="+", default=None, help="test indices")
    ap.add_argument("--ours-only", action="store_true", help="no AutoAttack APGD-T")
    args = ap.parse_args(argv)
    try:
        threat = parse_threat(args.threat)  # a malformed radius is named before any work starts
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if not isinstance(threat, LpBall) or threat.name not in _NORM:
        raise SystemExit(f"--threat must be linf:EPS or l2:EPS, not {args.threat!r}")
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, not {args.seeds}")
    if args.runs < 1 or args.near_miss_runs < 0:
        raise SystemExit("--runs must be at least 1 and --near-miss-runs at least 0")
    if args.examples and not all(0 <= i < args.n for i in args.examples):
        raise SystemExit(f"--examples must be test indices below --n {args.n}")
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
        if args.examples:
            left = torch.tensor(args.examples)
        else:
            with torch.no_grad():
                correct = (model(x).argmax(1) == y).nonzero().flatten()
            ce = APGDAttack(model, norm=_NORM[kind], eps=eps, n_iter=100, seed=0, device="cpu")
            x_ce = ce.perturb(x[correct], y[correct])
            with torch.no_grad():
                left = correct[model(x_ce).argmax(1) == y[correct]]
        xs, ys = x[left], y[left]
        runs = []
        for seed in range(args.seeds):
            start = time.perf_counter()
            if args.ours_only:
                x_ref = xs
            else:
                reference = APGDAttack_targeted(
                    model,
                    norm=_NORM[kind],
                    eps=eps,
                    n_iter=100,
                    n_restarts=1,
                    seed=seed,
                    device="cpu",
                )
                reference.n_target_classes = 9
                x_ref = reference.perturb(xs, ys)
            ref_seconds = time.perf_counter() - start
            ours = create(
                "apgd-t",
                threat=args.threat,
                steps=100,
                restarts=args.runs,
                near_miss_runs=args.near_miss_runs,
                target_classes=9,
                seed=seed,
            )
            start = time.perf_counter()
            x_ours = ours(model, xs, ys).x_adv
            ours_seconds = time.perf_counter() - start
            with torch.no_grad():
                broken_ref = left[model(x_ref).argmax(1) != ys].tolist()
                broken_ours = left[model(x_ours).argmax(1) != ys].tolist()
            run: dict = {"seed": seed, "ours": broken_ours, "seconds": {"ours": ours_seconds}}
            reference_text = ""
            if not args.ours_only:
                run["autoattack"] = broken_ref
                run["seconds"]["autoattack"] = ref_seconds
                reference_text = (
                    f"AutoAttack APGD-T breaks {len(broken_ref)} {broken_ref} "
                    f"({ref_seconds:.0f} s); "
                )
            runs.append(run)
            print(
                f"{name} {args.threat} seed {seed}: {reference_text}ours ({args.runs} run(s) per "
                f"target, {args.near_miss_runs} near-miss) {len(broken_ours)} {broken_ours} "
                f"({ours_seconds:.0f} s)",
                flush=True,
            )
        result["models"][name] = {"attacked": len(left), "runs": runs}
        if args.examples:
            for side in ("ours",) if args.ours_only else ("autoattack", "ours"):
                counts = {i: sum(i in r[side] for r in runs) for i in args.examples}
                print(f"{name} {side}: runs that broke each example of {args.seeds}: {counts}")
        if args.json:
            write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
