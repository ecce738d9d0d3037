"""Masked-gradient traps on a zoo model: what the plain attacks report against what an adversary
who knows the trick gets, with the attack-level fixes (EOT, transfer) in between.

    python zoo/strength_traps.py [--model pgd-linf] [--n 100] [--threat linf:0.3]
        [--out runs/strength/traps]

Two traps around ``zoo/MODEL.pt``:

* ``noise``: N(0, 0.1²) noise added to the input at every call. Robustness is judged by the
  majority of 20 calls (``multirobust.attacks.eot.robust_over_calls``) and, stricter, by all 20.
  Rows: APGD-CE (100 steps) and APGD-DLR without EOT, then both with ``eot_samples=20``.
* ``zero-gradient``: a layer that passes the input on and returns a zero gradient. Rows:
  APGD-CE (100 steps), then Square (5000 queries) on what it left, i.e. what the standard
  preset's white-box and black-box members achieve; then a transfer attack from the undefended
  twin, and from a surrogate distilled from the trap's outputs on 2000 training images; the
  "truth" row is APGD-CE + APGD-T on the bare model.

Each row is the robust accuracy after that attack and every attack above it in the block (the
per-example worst case, as an evaluation counts it). Writes OUT/traps.json and OUT/traps.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models
from multirobust.atomic import write_atomic, write_json_atomic
from multirobust.attacks.eot import robust_over_calls
from multirobust.attacks.transfer import distill_surrogate
from multirobust.threats import parse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _traps import GaussianNoise, ZeroGradient  # noqa: E402


def _row(rows: list[dict], trap: str, label: str, robust: torch.Tensor, start: float) -> None:
    rows.append(
        {
            "trap": trap,
            "attack": label,
            "robust_accuracy": float(robust.float().mean()),
            "seconds": time.perf_counter() - start,
        }
    )
    print(f"{trap:14s} {label:55s} {rows[-1]['robust_accuracy']:.1%}", flush=True)


def noise_block(base, x, y, threat, rows):
    trap = GaussianNoise(base, sigma=0.1, seed=0)
    votes = 20
    clean = robust_over_calls(trap, x, y, calls=votes)
    clean_all = robust_over_calls(trap, x, y, calls=votes, rule="all")
    _row(rows, "noise", "clean (majority of 20 calls)", clean, time.perf_counter())
    for eot in (1, 20):
        robust, strict = clean.clone(), clean_all.clone()
        start = time.perf_counter()
        for loss in ("ce", "dlr"):
            atk = attacks.create("apgd", threat=threat, steps=100, loss=loss, eot_samples=eot)
            res = atk(trap, x, y)
            robust &= robust_over_calls(trap, res.x_adv, y, calls=votes)
            strict &= robust_over_calls(trap, res.x_adv, y, calls=votes, rule="all")
            tag = f"APGD-CE{' + DLR' if loss == 'dlr' else ''}, eot_samples={eot}"
            _row(rows, "noise", f"{tag} (majority)", robust, start)
            _row(rows, "noise", f"{tag} (all 20 calls)", strict, start)


def zero_gradient_block(base, x, y, threat, rows, seed):
    trap = ZeroGradient(base)
    with torch.no_grad():
        robust = base(x).argmax(1) == y
    _row(rows, "zero-gradient", "clean", robust, time.perf_counter())
    start = time.perf_counter()
    robust &= attacks.create("apgd", threat=threat, steps=100)(trap, x, y).robust
    _row(rows, "zero-gradient", "APGD-CE", robust, start)
    rows_left = robust.nonzero().flatten()
    res = attacks.create("square", threat=threat, steps=5000)(trap, x[rows_left], y[rows_left])
    robust[rows_left] &= res.robust
    _row(rows, "zero-gradient", "+ Square 5000 (the standard preset's members)", robust, start)
    before_transfer = robust.clone()
    twin = attacks.create("transfer", threat=threat, surrogate=base, steps=100)
    robust &= twin(trap, x, y).robust
    _row(rows, "zero-gradient", "+ transfer from the undefended twin", robust, start)
    start = time.perf_counter()
    pool = data.load("mnist", "train", limit=2000).images
    gen = torch.Generator().manual_seed(seed)
    surrogate = distill_surrogate(
        trap, pool, threat=parse(threat), samples=2, steps=1500, generator=gen
    )
    distilled = attacks.create("transfer", threat=threat, surrogate=surrogate, steps=100)
    alone = before_transfer & distilled(trap, x, y).robust
    _row(rows, "zero-gradient", "+ transfer from a distilled surrogate (no twin)", alone, start)
    start = time.perf_counter()
    truth = attacks.create("apgd", threat=threat, steps=100)(base, x, y).robust
    with torch.no_grad():
        truth &= base(x).argmax(1) == y
    truth &= attacks.create("apgd-t", threat=threat, steps=100)(base, x, y).robust
    _row(rows, "zero-gradient", "truth: APGD-CE + APGD-T on the bare model", truth, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pgd-linf")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threat", default="linf:0.3")
    parser.add_argument("--traps", nargs="+", default=["noise", "zero-gradient"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/strength/traps"))
    args = parser.parse_args()
    base = models.load(ROOT / "zoo" / f"{args.model}.pt").eval()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    rows: list[dict] = []
    if "noise" in args.traps:
        noise_block(base, x, y, args.threat, rows)
    if "zero-gradient" in args.traps:
        zero_gradient_block(base, x, y, args.threat, rows, args.seed)
    lines = ["| trap | attacks (cumulative) | robust accuracy | seconds |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['trap']} | {r['attack']} | {r['robust_accuracy']:.1%} | {r['seconds']:.0f} |"
        for r in rows
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    header = f"zoo/{args.model}.pt, first {args.n} MNIST test images, {args.threat}"
    write_atomic(args.out / "traps.md", header + "\n\n" + "\n".join(lines) + "\n")
    write_json_atomic(
        args.out / "traps.json",
        {"model": args.model, "n": args.n, "threat": args.threat, "rows": rows},
    )
    print(header)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
