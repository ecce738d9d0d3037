"""Tabulate the zoo's evaluation reports (zoo/evaluate.sh) as the Markdown table of docs/results.md.

    python zoo/results.py runs/zoo-eval/standard-1000 [--train-logs runs/zoo]

The ℓp union is the fraction of examples robust under ℓ∞, ℓ2 and ℓ1 at once (the threat
models of Tramèr & Boneh 2019 and Maini et al. 2020); "all" adds the spatial threat.
Seconds per epoch come from the training logs (log.csv of each run in --train-logs).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

ORDER = ["standard", "pgd-linf", "pgd-l2", "pgd-l1", "max", "avg", "msd", "random"]
LP = ["linf:0.3", "l2:2", "l1:10"]
SPATIAL = "spatial:30,3"


def _union(report: dict, keys: list[str]) -> float:
    n = int(report["n"])
    robust = [all(report["threats"][k]["robust"][i] for k in keys) for i in range(n)]
    return sum(robust) / n


def _epoch_seconds(log: Path) -> float | None:
    if not log.is_file():
        return None
    with log.open() as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["train_seconds"]) for r in rows) / len(rows) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path)
    parser.add_argument("--train-logs", type=Path, default=Path("runs/zoo"))
    args = parser.parse_args()
    rows = []
    for name in ORDER:
        path = args.reports / name / "report.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        acc = r["robust_accuracy"]
        rows.append(
            {
                "model": name,
                "n": r["n"],
                "clean": r["clean_accuracy"],
                **{k: acc[k] for k in LP + [SPATIAL]},
                "union_lp": _union(r, LP),
                "union_all": r["union_accuracy"],
                "seconds_per_epoch": _epoch_seconds(args.train_logs / name / "log.csv"),
                "checks": [c["name"] for c in r["checks"]],
            }
        )
    print(
        "| model | clean | ℓ∞ 0.3 | ℓ2 2 | ℓ1 10 | union ℓp | spatial 30°/3px | union all "
        "| s/epoch |"
    )
    print("|" + "---|" * 9)
    for row in rows:
        cells = [f"{100 * row[k]:.1f}" for k in ["clean", *LP, "union_lp", SPATIAL, "union_all"]]
        sec = row["seconds_per_epoch"]
        cells.append(f"{sec:.0f}" if sec is not None else "–")
        print(f"| `{row['model']}` | " + " | ".join(cells) + " |")
    (args.reports / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
