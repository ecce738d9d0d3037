"""What breaks the blocked-gradient trap's last examples: the fallbacks measured side by side.

    python zoo/blocked_fallbacks.py --step diag       # the trap and its twin, standard preset
    python zoo/blocked_fallbacks.py --step square     # a longer Square on what the trap kept
    python zoo/blocked_fallbacks.py --step transfer   # distilled surrogates, longer distillation
    python zoo/blocked_fallbacks.py --step spsa       # SPSA on the examples only the twin broke

The trap is ``zoo/pgd-linf.pt`` behind a layer that passes the input on and returns a zero
gradient (``landscape.make_trap("blocked", ...)``), first ``--n`` MNIST test images, ℓ∞ 0.3.
``diag`` evaluates the trap and the undefended twin with the standard preset as it stood before
the masked-gradient run (``masked_queries=0``, one APGD-T run per target, no landscape grid)
and writes, per example, who is robust and which attack broke it, and the examples only the
twin's gradients break, to ``--out``/diag.json; the other steps read it and try one fallback
each on the examples the trap kept robust (or, for SPSA, on the twin-only ones), printing how
many each breaks and which.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multirobust import attacks, data, landscape, models, threats
from multirobust.attacks.transfer import distill_surrogate
from multirobust.evaluation import evaluate, presets

ZOO = Path(__file__).resolve().parent
THREAT = "linf:0.3"


def diag(model: nn.Module, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, out: Path) -> None:
    # The standard preset before 2026-12-03's changes: no masked run, one APGD-T run per target.
    before = presets.get("standard").with_options(masked_queries=0, targeted_restarts=None)
    common: dict[str, Any] = dict(
        threats=[THREAT], preset=before, batch_size=500, seed=0, progress=False
    )
    t0 = time.time()
    rep = evaluate(trap, x, y, landscapes=0, **common)
    tr = rep.threats[THREAT]
    print("trap", rep.robust_accuracy, round(time.time() - t0), flush=True)
    twin = evaluate(model, x, y, run_checks=False, **common)
    tw = twin.threats[THREAT]
    only = [i for i in range(len(y)) if tr.robust[i] and not tw.robust[i]]
    print("twin", twin.robust_accuracy, "only the twin breaks:", only, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "trap_robust": list(map(bool, tr.robust)),
        "twin_robust": list(map(bool, tw.robust)),
        "only_twin": only,
        "trap_broken_by": tr.broken_by,
        "twin_broken_by": tw.broken_by,
    }
    (out / "diag.json").write_text(json.dumps(result) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", choices=["diag", "square", "transfer", "spsa"], required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("runs/strength/blocked"))
    args = ap.parse_args()
    model = models.load(ZOO / "pgd-linf.pt").eval()
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    trap = landscape.make_trap("blocked", model)
    if args.step == "diag":
        diag(model, trap, x, y, args.out)
        return
    d = json.loads((args.out / "diag.json").read_text())
    rob = torch.tensor(d["trap_robust"])
    only = d["only_twin"]
    idx = rob.nonzero().flatten()
    if args.step == "square":
        # Square only queries the model, so the trap and the twin are the same to it.
        few = [({"restarts": 10, "rescale_schedule": False}, seed) for seed in (0, 1)] + [
            ({"steps": 20000, "restarts": 3}, seed) for seed in (0, 1)
        ]
        for opts, seed in few:
            r = attacks.create("square", threat=THREAT, seed=seed, **opts)(model, x[only], y[only])
            hit = [i for i, s in zip(only, r.success.tolist(), strict=True) if s]
            print("square", opts, "seed", seed, "on the twin-only examples", only, "broke", hit)
        t0 = time.time()
        r = attacks.create("square", threat=THREAT, steps=20000, restarts=3, seed=0)(
            model, x[idx], y[idx]
        )
        br = idx[r.success].tolist()
        print("square 20000 x 3: broke", len(br), br, "of them only the twin's:",
              [i for i in only if i in br], "the twin leaves robust:",
              [i for i in br if d["twin_robust"][i]], round(time.time() - t0), "s")  # fmt: skip
    elif args.step == "transfer":
        thr = threats.ball(THREAT, who="blocked_fallbacks")
        for steps, samples in [(300, 8), (2000, 8), (2000, 32)]:
            gen = torch.Generator().manual_seed(0)
            sur = distill_surrogate(
                trap, x, threat=thr, samples=samples, steps=steps, generator=gen
            )
            with torch.no_grad():
                agree = (sur(x).argmax(1) == model(x).argmax(1)).float().mean().item()
            for loss in ["ce", "margin"]:
                r = attacks.create("apgd", threat=THREAT, steps=100, loss=loss)(sur, x[rob], y[rob])
                with torch.no_grad():
                    br = trap(r.x_adv).argmax(1) != y[rob]
                hit = idx[br].tolist()
                print(f"distilled {steps} steps, {samples} samples, APGD-{loss}: agreement "
                      f"{agree:.3f}, broke {int(br.sum())} of {int(rob.sum())}, only-twin ones "
                      f"{[i for i in only if i in hit]}", flush=True)  # fmt: skip
    else:
        first = slice(0, 40)
        t0 = time.time()
        r = attacks.create("spsa", threat=THREAT)(trap, x[first], y[first])
        seconds = time.time() - t0
        bare = attacks.create("apgd", threat=THREAT)(model, x[first], y[first])
        spsa_acc, apgd_acc = r.robust.float().mean(), bare.robust.float().mean()
        print(f"first 40: SPSA (defaults) on the trap {spsa_acc:.1%} robust ({seconds:.0f} s), "
              f"APGD on the bare model {apgd_acc:.1%}")  # fmt: skip
        xs, ys = x[only], y[only]
        settings: list[dict[str, Any]] = [{}, {"samples": 512}, {"steps": 300}, {"lr": 0.03},
                    {"samples": 512, "steps": 300},
                    {"random_start": True, "samples": 256, "steps": 200}]  # fmt: skip
        for opts in settings:
            t0 = time.time()
            r = attacks.create("spsa", threat=THREAT, **opts)(trap, xs, ys)
            print("spsa", opts, "robust", r.robust.tolist(), "margin",
                  [round(v, 3) for v in r.loss.tolist()], round(time.time() - t0), "s",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
