"""Affine combinations on a zoo model: the members, the affine set, and robustness against λ.

    python zoo/affine_curve.py [--model max] [--n 100] [--a linf:0.3] [--b l1:10]
        [--preset standard] [--out runs/strength/affine]

Evaluates the two members and ``affine(A,B)`` with ``multirobust.evaluate`` (the preset's
ensembles: the members' own, and for the affine threat APGD-CE and APGD-T at each λ with the
members' black-box searches at the endpoints), applies the carry-over rule (an example broken
under a member is broken under the affine set), and runs :func:`affine_curve` with the preset's
affine attacks for the figure of Tramèr & Boneh (2019): robust accuracy at each λ, the
endpoints joined with the members' outcomes. Writes OUT/affine.json and OUT/affine.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models
from multirobust.atomic import write_atomic, write_json_atomic
from multirobust.attacks.affine import affine_curve, carry_over
from multirobust.evaluation import evaluate, presets
from multirobust.threats import parse

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="max")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--a", default="linf:0.3")
    parser.add_argument("--b", default="l1:10")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--out", type=Path, default=Path("runs/strength/affine"))
    args = parser.parse_args()
    model = models.load(ROOT / "zoo" / f"{args.model}.pt").eval()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    affine = f"affine({args.a},{args.b})"
    start = time.perf_counter()
    report = evaluate(
        model, x, y, threats=[args.a, args.b, affine], preset=args.preset, progress=False
    )
    seconds = time.perf_counter() - start
    robust = {k: torch.tensor(report.threats[k].robust) for k in (args.a, args.b, affine)}
    carried = carry_over(robust[affine], [robust[args.a], robust[args.b]])
    union = robust[args.a] & robust[args.b]
    print(f"evaluate: {seconds:.0f} s", flush=True)
    for key, value in [*robust.items(), ("union of the members", union)]:
        print(f"{key}: {value.float().mean():.1%}", flush=True)
    print(f"{affine} with carry-over: {carried.float().mean():.1%}", flush=True)

    preset = presets.get(args.preset)
    threat = parse(affine)
    specs = preset.attacks_for(threat, 10)
    curve_robust = None
    lambdas: tuple[float, ...] = ()
    start = time.perf_counter()
    for spec in specs:
        atk = attacks.create(spec.attack, threat=threat, **spec.options)
        assert isinstance(atk, attacks.get("affine"))
        curve = affine_curve(atk, model, x, y, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
        lambdas = curve.lambdas
        curve_robust = curve.robust if curve_robust is None else curve_robust & curve.robust
        print(f"curve with {spec.label}: {[f'{a:.1%}' for a in curve.accuracy()]}", flush=True)
    assert curve_robust is not None
    curve = type(curve)(affine, lambdas, curve_robust).with_members(robust[args.a], robust[args.b])
    curve_seconds = time.perf_counter() - start
    acc = curve.accuracy()
    lines = [
        f"zoo/{args.model}.pt, first {args.n} MNIST test images, preset {args.preset}",
        "",
        "| threat | robust accuracy |",
        "|---|---:|",
        f"| {args.a} | {robust[args.a].float().mean():.1%} |",
        f"| {args.b} | {robust[args.b].float().mean():.1%} |",
        f"| union of the two | {union.float().mean():.1%} |",
        f"| {affine}, the affine attack alone | {robust[affine].float().mean():.1%} |",
        f"| {affine}, with the members carried over | {carried.float().mean():.1%} |",
        "",
        "| λ | " + " | ".join(f"{v:g}" for v in lambdas) + " |",
        "|---|" + "---:|" * len(lambdas),
        "| robust accuracy | " + " | ".join(f"{a:.1%}" for a in acc) + " |",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "affine.md", "\n".join(lines) + "\n")
    write_json_atomic(
        args.out / "affine.json",
        {
            "model": args.model,
            "n": args.n,
            "preset": args.preset,
            "robust": {k: v.tolist() for k, v in robust.items()},
            "carried_over": carried.tolist(),
            "lambdas": list(lambdas),
            "curve_accuracy": acc,
            "seconds": {"evaluate": seconds, "curve": curve_seconds},
        },
    )


if __name__ == "__main__":
    main()
