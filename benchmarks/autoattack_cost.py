"""Cost of the ``standard`` evaluation preset next to AutoAttack's cost model, on an MNIST model.

Counts forward and backward passes per example (a batch of n is n passes) with a counting
wrapper around the model, and seconds, for ``multirobust.evaluate(..., preset="standard")``,
next to what AutoAttack's standard suite spends (Croce & Hein 2020, github.com/fra31/auto-attack):

* README, "standard version": untargeted APGD-CE (no restarts), targeted APGD-DLR (9 target
  classes), targeted FAB (9 target classes), Square Attack (5000 queries).
* autoattack.py: APGD and FAB run ``n_iter=100``; ``set_version('standard')`` sets 1 restart,
  9 target classes for APGD-T and FAB-T, ``n_queries=5000`` for Square.
* autopgd_base.py: one APGD iteration is one forward and one backward pass; every example of a
  run takes all 100 iterations. fab_base.py: one FAB iteration is a gradient (one forward, one
  backward) plus one forward pass to check the new point.

So an example robust to the whole suite costs AutoAttack 100 + 9·100 + 9·200 + 5000 = 7800
forward and 100 + 9·100 + 9·100 = 1900 backward passes (ℓ∞ and ℓ2; a few initial passes per run
are left out). Each attack runs only on examples still robust, so a broken example costs less:
the table applies the model to this run's outcomes (which attack broke each example), giving a
range because the number of target classes APGD-T needs and the queries Square needs are not
known from our run. multirobust's ``standard`` preset is the same suite for ℓ∞ and ℓ2: APGD-CE,
APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries).

    python benchmarks/autoattack_cost.py [--checkpoint CKPT] [--n 200] [--threat linf:0.3 ...]
        [--out runs/autoattack_cost]

Without a checkpoint a small_cnn is trained for one epoch on 20,000 MNIST images first. Writes
OUT/autoattack_cost.json and OUT/autoattack_cost.md. Needs MULTIROBUST_DATA (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from multirobust import data, models
from multirobust.evaluation import PRESETS, evaluate
from multirobust.evaluation.passes import PassCounter
from multirobust.training import train_standard

# AutoAttack standard (ℓ∞, ℓ2): per stage, (forward, backward) passes of one example in one run,
# and how many runs (target classes) a robust example goes through.
ITERS = 100
TARGETS = 9
SQUARE_QUERIES = 5000
AA_STAGES: dict[str, dict[str, int]] = {
    "apgd-ce": {"forward": ITERS, "backward": ITERS, "runs": 1},
    "apgd-t": {"forward": ITERS, "backward": ITERS, "runs": TARGETS},
    "fab-t": {"forward": 2 * ITERS, "backward": ITERS, "runs": TARGETS},
    "square": {"forward": SQUARE_QUERIES, "backward": 0, "runs": 1},
}


def autoattack_robust_example() -> dict[str, int]:
    """Passes AutoAttack's standard suite spends on an example that no attack breaks."""
    return {k: sum(s[k] * s["runs"] for s in AA_STAGES.values()) for k in ("forward", "backward")}


def autoattack_on_outcomes(broken_by: list[str | None], robust: list[bool]) -> dict[str, float]:
    """AutoAttack's cost model applied to per-example outcomes: mean passes per example, as a
    (low, high) range, assuming AutoAttack breaks each example at the same stage as we did.

    Not clean-correct: 0. Broken by APGD-CE: one full run. Broken by APGD-T: APGD-CE plus 1..9
    targeted runs. Broken by FAB-T: APGD-CE and APGD-T in full plus 1..9 FAB-T runs. Broken
    only by Square: APGD-CE, APGD-T and FAB-T in full plus 1..5000
    queries. Robust: everything.
    """
    ce, t, fab, sq = (AA_STAGES[k] for k in ("apgd-ce", "apgd-t", "fab-t", "square"))
    full_t = {k: t[k] * TARGETS for k in ("forward", "backward")}
    full_fab = {k: fab[k] * TARGETS for k in ("forward", "backward")}
    low = {"forward": 0.0, "backward": 0.0}
    high = {"forward": 0.0, "backward": 0.0}
    for b, r in zip(broken_by, robust, strict=True):
        for k in ("forward", "backward"):
            if r:
                cost = ce[k] + full_t[k] + full_fab[k] + sq[k]
                lo = hi = cost
            elif b == "apgd-ce":
                lo = hi = ce[k]
            elif b == "apgd-t":
                lo, hi = ce[k] + t[k], ce[k] + full_t[k]
            elif b == "fab-t":
                lo, hi = ce[k] + full_t[k] + fab[k], ce[k] + full_t[k] + full_fab[k]
            elif b == "square":
                lo = ce[k] + full_t[k] + full_fab[k] + (1 if k == "forward" else 0)
                hi = ce[k] + full_t[k] + full_fab[k] + sq[k]
            else:  # not clean-correct, or broken by an attack AutoAttack does not have
                lo = hi = 0
            low[k] += lo
            high[k] += hi
    n = max(len(robust), 1)
    return {
        "forward_low": low["forward"] / n,
        "forward_high": high["forward"] / n,
        "backward_low": low["backward"] / n,
        "backward_high": high["backward"] / n,
    }


def preset_robust_example(name: str = "standard") -> dict[str, int]:
    """Nominal passes our preset spends on an example that no attack breaks (ℓ∞/ℓ2, 10 classes)."""
    p = PRESETS[name]
    white = p.steps * p.restarts * (1 + min(p.target_classes, TARGETS))
    # FAB-T: per target and step one forward+backward pass and one forward pass (the check).
    fab = p.fab_iterations * min(p.fab_classes, TARGETS) if p.fab else 0
    return {"forward": white + 2 * fab + p.queries * p.square_restarts, "backward": white + fab}


def _model(checkpoint: str | None) -> torch.nn.Module:
    if checkpoint:
        return models.load(checkpoint).eval()
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist")
    train_standard(model, data.load("mnist", "train", limit=20000), epochs=1, progress=False)
    return model.eval()


def run(
    model: torch.nn.Module, n: int, threats: list[str], batch_size: int, seed: int
) -> dict[str, Any]:
    """Evaluate with the standard preset and collect passes, seconds and the cost model."""
    test = data.load("mnist", "test", limit=n)
    counted = PassCounter(model)
    start = time.perf_counter()
    report = evaluate(
        counted,
        test.images,
        test.labels,
        threats=threats,
        preset="standard",
        batch_size=batch_size,
        seed=seed,
        progress=False,
        run_checks=False,
    )
    total_seconds = time.perf_counter() - start
    rows = []
    for key, t in report.threats.items():
        rows.append(
            {
                "threat": key,
                "robust_accuracy": report.robust_accuracy[key],
                "broken_by": t.broken_counts(),
                "forward_per_example": t.forward_passes / report.n,
                "backward_per_example": t.backward_passes / report.n,
                "seconds": t.seconds,
                "autoattack_model_on_these_outcomes": autoattack_on_outcomes(t.broken_by, t.robust),
            }
        )
    return {
        "n": report.n,
        "clean_accuracy": report.clean_accuracy,
        "threats": rows,
        "all_passes_per_example": {
            "forward": counted.forward_passes / report.n,
            "backward": counted.backward_passes / report.n,
            "note": "every pass of the run, clean predictions and the pre-attack probe included",
        },
        "seconds_total": total_seconds,
        "robust_example": {
            "autoattack_standard": autoattack_robust_example(),
            "multirobust_standard_nominal": preset_robust_example("standard"),
        },
        "autoattack_stages": AA_STAGES,
        "settings": {
            "preset": "standard",
            "batch_size": batch_size,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown table of a result."""
    lines = [
        "| threat | robust acc | fwd / example | bwd / example | seconds | "
        "AutoAttack model, fwd / example | AutoAttack model, bwd / example |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["threats"]:
        aa = r["autoattack_model_on_these_outcomes"]
        lines.append(
            f"| {r['threat']} | {100 * r['robust_accuracy']:.1f}% | "
            f"{r['forward_per_example']:.0f} | {r['backward_per_example']:.0f} | "
            f"{r['seconds']:.1f} | {aa['forward_low']:.0f}–{aa['forward_high']:.0f} | "
            f"{aa['backward_low']:.0f}–{aa['backward_high']:.0f} |"
        )
    ours = result["robust_example"]["multirobust_standard_nominal"]
    theirs = result["robust_example"]["autoattack_standard"]
    lines += [
        "",
        f"An example no attack breaks: multirobust standard {ours['forward']} forward / "
        f"{ours['backward']} backward passes (nominal), AutoAttack standard {theirs['forward']} / "
        f"{theirs['backward']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument(
        "--threat",
        action="append",
        dest="threats",
        help="ℓ∞ or ℓ2 threat (repeatable; default linf:0.3, l2:2, linf:0.1)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/autoattack_cost"))
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"Invalid --n: {args.n} (must be >= 1)")
    threats = args.threats or ["linf:0.3", "l2:2", "linf:0.1"]
    bad = [t for t in threats if not t.startswith(("linf:", "l2:"))]
    if bad:
        parser.error(f"AutoAttack's cost model covers ℓ∞ and ℓ2 threats only, got {bad}")
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))

    result = run(_model(args.checkpoint), args.n, threats, args.batch_size, args.seed)
    result["settings"]["checkpoint"] = args.checkpoint
    text = table(result)
    print(
        f"standard preset on {result['n']} MNIST test images "
        f"(clean accuracy {100 * result['clean_accuracy']:.1f}%), "
        f"{result['seconds_total']:.1f} s in all\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "autoattack_cost.json").write_text(json.dumps(result, indent=2))
    (args.out / "autoattack_cost.md").write_text(
        "# Standard preset next to AutoAttack's cost model\n\n"
        f"Command: `python benchmarks/autoattack_cost.py --n {args.n} "
        + " ".join(f"--threat {t}" for t in threats)
        + "`\n\n"
        + text
        + "\n"
    )
    print(f"\nsaved {args.out / 'autoattack_cost.json'} and {args.out / 'autoattack_cost.md'}")


if __name__ == "__main__":
    main()
