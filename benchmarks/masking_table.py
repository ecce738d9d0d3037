"""The masking table: the reported robust accuracy of trap models against an informed adversary.

For each trap of :mod:`multirobust.landscape.traps` wrapped around a checkpoint (by default
``zoo/pgd-linf.pt``), on the first ``--n`` MNIST test images under ``--threat``:

- **reported**: ``evaluation.evaluate`` on the trap, as a user would run it (``--preset``), and
  the checks that fired;
- **+ landscape grid**: the reported number after the input-space grid
  (``landscape.landscape_check``) has searched the examples the evaluation left robust: what the
  evaluation reports once it runs the grid itself (the ``landscape-beats-attacks`` check);
- **informed adversary**: an adversary who knows the trick, on the same function:
  - ``quantised``: BPDA (Athalye et al. 2018): the forward pass rounds, the backward pass is
    the identity (straight-through), evaluated with the same preset;
  - ``blocked``: the gradient of the function the layer computes (the identity), i.e. the
    undefended twin, evaluated with the same preset — same decisions, real gradients;
  - ``saturated``: logits divided by the scale again (the twin), same preset;
  - ``noisy``: PGD with expectation over transformation (EOT, ``--eot`` gradient samples per step,
    ``--eot-steps`` steps, ``--eot-restarts``), its robust accuracy the mean correctness over
    ``--eot`` fresh calls of the noisy model at the adversarial points.

Every informed number is measured on the trap's own outputs (the BPDA and twin models compute the
same function as the trap; their adversarial points are re-checked on the trap), so the two
columns are comparable example by example.

    python benchmarks/masking_table.py [--checkpoint zoo/pgd-linf.pt] [--n 200]
        [--threat linf:0.3] [--preset standard] [--traps quantised,blocked,saturated,noisy]
        [--points 51] [--eot 20] [--eot-steps 100] [--eot-restarts 1] [--json OUT]

This needs ``multirobust.evaluation``; it is a script above the library, not part of it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multirobust import data, landscape, models, threats
from multirobust.attacks.gradients import input_gradient
from multirobust.evaluation import evaluate

_ROOT = Path(__file__).resolve().parents[1]


class BPDAQuantised(nn.Module):
    """The quantised trap's forward pass with an identity backward pass (straight-through)."""

    def __init__(self, trap: landscape.QuantisedInput) -> None:
        super().__init__()
        self.trap = trap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.trap.levels - 1
        q = torch.round(x * scale) / scale
        return self.trap.model(x + (q - x).detach())


def eot_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: threats.LpBall,
    *,
    samples: int,
    steps: int,
    restarts: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """PGD on the expected loss: each step's gradient is the mean over ``samples`` calls.

    x ← Π(x + α·s(mean_k ∇ℓ(f_k(x), y))), α = 2.5ε/steps; the restart whose point has the
    lowest mean correctness over ``samples`` calls is kept per example.
    """
    best = x.clone()
    best_acc = torch.full((x.shape[0],), 2.0)
    for _ in range(restarts):
        x_adv = threat.random_init(x, generator)
        for _ in range(steps):
            grad = torch.zeros_like(x)
            for _ in range(samples):
                g, _, _ = input_gradient(model, x_adv, y)
                grad += g
            x_adv = threat.step(x_adv, x, grad / samples, threat.default_step_size(steps))
        acc = expected_correct(model, x_adv, y, samples)
        better = acc < best_acc
        best[better], best_acc[better] = x_adv[better], acc[better]
    return best


def expected_correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, calls: int
) -> torch.Tensor:
    """(N,) fraction of ``calls`` fresh forward passes that classify each example correctly."""
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).float() for _ in range(calls))
    return torch.as_tensor(hits) / calls


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(_ROOT / "zoo" / "pgd-linf.pt"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threat", default="linf:0.3")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--traps", default="quantised,blocked,saturated,noisy")
    ap.add_argument("--points", type=int, default=51)
    ap.add_argument("--eot", type=int, default=20)
    ap.add_argument("--eot-steps", type=int, default=100)
    ap.add_argument("--eot-restarts", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    base = models.load(args.checkpoint).eval()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    threat = threats.ball(args.threat, who="masking_table")
    key = str(threat)
    rows: list[dict[str, Any]] = []
    for name in [t.strip() for t in args.traps.split(",") if t.strip()]:
        trap = landscape.make_trap(name, base)
        start = time.perf_counter()
        rep = evaluate(
            trap,
            x,
            y,
            threats=[key],
            preset=args.preset,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False,
        )
        reported = rep.robust_accuracy[key]
        robust = [i for i, r in enumerate(rep.threats[key].robust) if r]
        grid_broken: list[int] = []
        if robust:
            ev = landscape.landscape_check(
                trap,
                x[robust],
                y[robust],
                threat,
                indices=robust,
                points=args.points,
                seed=args.seed,
                progress=False,
                confirm_calls=args.eot if name == "noisy" else 1,
            )
            grid_broken = ev.broken_index
        with_grid = (len(robust) - len(grid_broken)) / len(y)
        if name == "noisy":
            gen = torch.Generator().manual_seed(args.seed)
            x_adv = eot_pgd(
                trap,
                x,
                y,
                threat,
                samples=args.eot,
                steps=args.eot_steps,
                restarts=args.eot_restarts,
                generator=gen,
            )
            assert bool(threat.contains(x_adv, x).all())
            informed = float(expected_correct(trap, x_adv, y, args.eot).mean())
            how = (
                f"EOT-PGD ({args.eot} samples, {args.eot_steps} steps), mean over {args.eot} calls"
            )
        else:
            adversary = {
                "quantised": BPDAQuantised(trap),  # type: ignore[arg-type]
                "blocked": base,
                "saturated": base,
            }[name]
            informed_rep = evaluate(
                adversary,
                x,
                y,
                threats=[key],
                preset=args.preset,
                batch_size=args.batch_size,
                seed=args.seed,
                progress=False,
                run_checks=False,
            )
            informed = informed_rep.robust_accuracy[key]
            how = {
                "quantised": "BPDA (straight-through rounding)",
                "blocked": "the identity's gradient (undefended twin)",
                "saturated": "logits rescaled (undefended twin)",
            }[name] + f", {args.preset} preset"
        rows.append(
            {
                "trap": name,
                "reported": reported,
                "checks": sorted({c.name for c in rep.checks}),
                # Which attack broke which example (first breaker), and how many each broke.
                "broken_counts": rep.threats[key].broken_counts(),
                "broken_by": list(rep.threats[key].broken_by),
                "with_landscape_grid": with_grid,
                "grid_broke": len(grid_broken),
                "informed": informed,
                "informed_adversary": how,
                "seconds": time.perf_counter() - start,
            }
        )
        r = rows[-1]
        print(
            f"{name:<10} reported {100 * reported:6.2f}%  + grid {100 * with_grid:6.2f}% "
            f"({len(grid_broken)} broken)  informed {100 * informed:6.2f}%  [{how}]  "
            f"checks: {', '.join(r['checks']) or '-'}",
            flush=True,
        )
    result = {
        "checkpoint": args.checkpoint,
        "n": args.n,
        "threat": key,
        "preset": args.preset,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
