"""Tabulate the zoo's evaluation reports (zoo/evaluate.sh) as the Markdown table of docs/results.md.

    python zoo/results.py runs/zoo-eval/standard-1000 [--zoo zoo] [--before OTHER_DIR]

The ℓp union is the fraction of examples robust under ℓ∞, ℓ2 and ℓ1 at once (the threat
models of Tramèr & Boneh 2019 and Maini et al. 2020); "all" adds the spatial threat.
Seconds per epoch are the mean ``train_seconds`` of the training history that every zoo
checkpoint carries in its metadata (the rows of the run's log.csv). A second table lists the
gradient-masking checks that fired, with their evidence; ``--before`` adds a third comparing the
ℓ1 and union columns with the reports of an earlier evaluation in another folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = [
    "standard",
    "pgd-linf",
    "pgd-l2",
    "pgd-l1",
    "max",
    "avg",
    "msd",
    "random",
    "eat-ft",
    "max-ft",
    "max-apgd-ft",
]
LP = ["linf:0.3", "l2:2", "l1:10"]
SPATIAL = "spatial:30,3"


def _union(report: dict, keys: list[str]) -> float:
    n = int(report["n"])
    robust = [all(report["threats"][k]["robust"][i] for k in keys) for i in range(n)]
    return sum(robust) / n


def _epoch_seconds(checkpoint: Path) -> float | None:
    if not checkpoint.is_file():
        return None
    from multirobust import models

    history = models.read_checkpoint(checkpoint)["metadata"].get("history") or []
    seconds = [float(r["train_seconds"]) for r in history]
    return sum(seconds) / len(seconds) if seconds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path)
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--before", type=Path, help="folder of an earlier evaluation's reports")
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
                "seconds_per_epoch": _epoch_seconds(args.zoo / f"{name}.pt"),
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
    print()
    _paired_table(args.reports)
    print()
    _checks_table(args.reports)
    if args.before is not None:
        print()
        _before_table(args.before, args.reports)


MULTI = ["max", "avg", "msd", "random", "eat-ft", "max-ft", "max-apgd-ft"]
SINGLE = ["pgd-linf", "pgd-l2", "pgd-l1"]


def _union_flags(report: dict, keys: list[str]) -> list[int]:
    return [int(all(report["threats"][k]["robust"][i] for k in keys)) for i in range(report["n"])]


def _paired(a: list[int], b: list[int]) -> tuple[float, float, float]:
    """Mean of the per-example difference a − b in points, with a 95% normal interval."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5 if n > 1 else 0.0
    half = 1.96 * sd / n**0.5
    return 100 * mean, 100 * (mean - half), 100 * (mean + half)


#: Pairs of multi-perturbation models compared on the union, first minus second.
PAIRS = [("avg", "max"), ("avg", "msd"), ("max", "msd"), ("avg", "random")]


def _paired_table(folder: Path) -> None:
    """Union ℓp of each multi-perturbation model minus the best single-threat model's, on the
    same examples: the mean paired difference with a 95% normal interval; then the same
    difference between pairs of multi-perturbation models."""
    reports = {
        name: json.loads((folder / name / "report.json").read_text())
        for name in MULTI + SINGLE
        if (folder / name / "report.json").is_file()
    }
    singles = [s for s in SINGLE if s in reports]
    if not singles:
        return
    best = max(singles, key=lambda s: _union(reports[s], LP))
    base = _union_flags(reports[best], LP)
    print(f"| model | union ℓp minus `{best}`'s (points) | 95% interval (paired) |")
    print("|---|---:|---|")
    for name in MULTI:
        if name not in reports:
            continue
        mean, lo, hi = _paired(_union_flags(reports[name], LP), base)
        print(f"| `{name}` | {mean:+.1f} | [{lo:+.1f}, {hi:+.1f}] |")
    pairs = [(a, b) for a, b in PAIRS if a in reports and b in reports]
    if pairs:
        print()
        cells = []
        for a, b in pairs:
            mean, lo, hi = _paired(_union_flags(reports[a], LP), _union_flags(reports[b], LP))
            cells.append(f"{a} − {b} {mean:+.1f} [{lo:+.1f}, {hi:+.1f}]")
        print("Union ℓp, paired: " + "; ".join(cells))


def _evidence(check: dict) -> str:
    ev = check.get("evidence", {})
    if "broken_by_black_box" in ev:
        broken = ", ".join(f"{k} broke {v}" for k, v in ev["broken_by_black_box"].items())
        missed = " and ".join(ev["white_box_attacks"])
        return f"{broken} that {missed} missed ({ev['clean_correct']} clean-correct)"
    return ", ".join(f"{k}={v}" for k, v in ev.items() if not isinstance(v, list | dict))


def _checks_table(folder: Path) -> None:
    print("| model | threat | check | evidence |")
    print("|---|---|---|---|")
    for name in ORDER:
        path = folder / name / "report.json"
        if path.is_file():
            for check in json.loads(path.read_text())["checks"]:
                cells = [f"`{name}`", check.get("threat", ""), check["name"], _evidence(check)]
                print("| " + " | ".join(cells) + " |")


def _before_table(before: Path, after: Path) -> None:
    print("| model | ℓ1 10 before | ℓ1 10 now | union ℓp before | union ℓp now |")
    print("|---|---:|---:|---:|---:|")
    for name in ORDER:
        old, new = before / name / "report.json", after / name / "report.json"
        if old.is_file() and new.is_file():
            a, b = json.loads(old.read_text()), json.loads(new.read_text())
            cells = [
                100 * a["robust_accuracy"]["l1:10"],
                100 * b["robust_accuracy"]["l1:10"],
                100 * _union(a, LP),
                100 * _union(b, LP),
            ]
            print(f"| `{name}` | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
