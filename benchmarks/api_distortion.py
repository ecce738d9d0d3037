"""Median ℓ2 distortion of HopSkipJump through a label-only API against C&W's white-box minimum.

    python benchmarks/api_distortion.py REPORT.json --checkpoint zoo/standard.pt [--json OUT]

REPORT.json is a `multirobust attack --remote` report of ``hopskipjump`` under ``l2:100`` with
``--option early_stop=false`` (every example spends its whole budget shrinking the
perturbation). For each budget of the report, the median over the clean-correct examples of the
smallest ℓ2 norm among the queries that changed the label (Chen et al. 2020 plot the same curve),
next to the per-example minimum C&W-ℓ2 finds with gradients (``cw-l2``, defaults) on the same
images, and the ratio HSJ / C&W per example (median).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from multirobust import attacks, data, models
from multirobust.api.lockstep import norm_at
from multirobust.api.report import RemoteReport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = RemoteReport.from_json(args.report)
    s = report.settings
    runs = [r for r in report.runs if r.attack == "hopskipjump" and r.threat.startswith("l2:")]
    if not runs:
        raise SystemExit("the report has no hopskipjump run under an ℓ2 threat")
    ds = data.load(s["dataset"], s["split"], limit=s["offset"] + s["n"])
    x, y = ds.images[s["offset"] :], ds.labels[s["offset"] :]
    model = models.load(args.checkpoint)
    t0 = time.perf_counter()
    # The minimum-norm contract: per example the smallest perturbation C&W found (inf if none).
    cw = attacks.create_minimum_norm("cw-l2")(model, x, y)
    cw_seconds = time.perf_counter() - t0
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).tolist()
    cw_norm = [float(v) if ok else math.inf for v, ok in zip(cw.distance, correct, strict=True)]
    out = {"n": len(correct), "clean_correct": sum(correct), "cw_seconds": cw_seconds, "runs": []}
    cw_med = statistics.median([v for v, ok in zip(cw_norm, correct, strict=True) if ok])
    print(
        f"C&W-ℓ2 (white-box, defaults): median minimal ℓ2 {cw_med:.3f} over "
        f"{sum(correct)} clean-correct images ({cw_seconds:.0f} s)"
    )
    out["cw_median"] = cw_med
    for run in runs:
        row = {"source": run.source, "output": run.output, "budgets": {}}
        for b in report.budgets:
            hsj = [norm_at(t, b) for t, ok in zip(run.traces, correct, strict=True) if ok]
            ratios = [
                h / c
                for h, c, ok in zip(
                    (norm_at(t, b) for t in run.traces), cw_norm, correct, strict=True
                )
                if ok and math.isfinite(c)
            ]
            med = statistics.median(hsj)
            ratio = statistics.median(ratios)
            row["budgets"][str(b)] = {"median": med, "median_ratio_to_cw": ratio}
            print(
                f"HSJ ({run.output}) within {b:>6,} queries: median ℓ2 {med:.3f}  "
                f"(median ratio to C&W {ratio:.2f})"
            )
        out["runs"].append(row)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
