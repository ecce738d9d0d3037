"""Our standard preset next to the reference AutoAttack on the same zoo models and images.

    python zoo/reference_autoattack.py --side autoattack   # the independent adversary
    python zoo/reference_autoattack.py --side ours         # multirobust's standard preset
    python zoo/reference_autoattack.py --side advlib       # adv_lib's ℓ1 attacks (optional)
    python zoo/reference_autoattack.py --side table        # all, side by side

AutoAttack (Croce & Hein 2020; github.com/fra31/auto-attack) is not part of multirobust and is
never vendored: clone it anywhere outside the repository and pass ``--reference DIR`` (default
``/work/ref/auto-attack``). Its ``standard`` version is run per threat: for ℓ∞ and ℓ2 APGD-CE,
APGD-T (9 targets), FAB-T (9 targets) and Square (5000 queries); for ℓ1 APGD-CE with
``use_largereps`` and 5 restarts, APGD-T (5 targets, ``use_largereps``), FAB-T and ℓ1 Square.
Ours is ``multirobust.evaluate(..., preset="standard")`` on the same images. ``--side advlib``
runs adv_lib's ℓ1 attacks (Rony & Ben Ayed, PyPI ``adv-lib``; installed outside the project,
e.g. ``pip install --no-deps --target DIR adv-lib==0.2.8``, passed as ``--advlib DIR``): the
minimum-norm FMN (1000 steps), ALMA (ℓ1, 1000 steps) and PDPGD (ℓ1, 500 steps); an example
counts as broken at ℓ1 10 when any of them finds an adversarial point within ℓ1 10 in the box.
Its package imports ``torchvision`` and ``visdom`` for parts these attacks do not use; empty
stand-ins are put in their place. Each side writes
one JSON file per model (per-example robustness per threat, seconds) into ``--out``, so the
runs can be made at different times and resumed model by model; ``--side table`` prints the
robust accuracies and, per model and threat, how many examples one side breaks and the other
does not. ``--seed S`` runs either side under another seed (its run-to-run spread) and
``--threats T ...`` either side for some threats only (``--side ours --preset thorough
--threats l2:2``); write those to another ``--out``. The table compares the threats both sides
ran, and the union only when both ran all three.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from multirobust import data, models
from multirobust.atomic import write_json_atomic

MODELS = ["max", "msd", "pgd-linf", "pgd-l1", "standard", "pgd-l2", "avg", "random"]
THREATS = ["linf:0.3", "l2:2", "l1:10"]
_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}


def _norm(delta: torch.Tensor, kind: str) -> torch.Tensor:
    flat = delta.flatten(1)
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0}[kind]
    return torch.linalg.vector_norm(flat, ord=p, dim=1)


def run_autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: str,
    reference: Path,
    seed: int = 0,
) -> dict:
    """AutoAttack's standard version under ``threat``: per-example robustness and its log."""
    if str(reference) not in sys.path:
        sys.path.insert(0, str(reference))
    from autoattack import AutoAttack  # noqa: PLC0415 - lives outside the project on purpose

    kind, eps_text = threat.split(":")
    eps = float(eps_text)
    adversary = AutoAttack(
        model, norm=_NORM[kind], eps=eps, version="standard", device="cpu", seed=seed, verbose=True
    )
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        x_adv = adversary.run_standard_evaluation(x, y, bs=len(x))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        correct = model(x_adv).argmax(1) == y
    norms = _norm(x_adv - x, kind)
    # An example counts as broken only if AutoAttack's point is inside the ball and the box.
    inside = (norms <= eps * (1 + 1e-5) + 1e-6) & (x_adv.flatten(1).min(1).values >= 0)
    inside &= x_adv.flatten(1).max(1).values <= 1
    robust = correct | ~inside
    return {
        "robust": robust.tolist(),
        "seconds": seconds,
        "outside": int((~inside).sum()),
        "log": log.getvalue().splitlines(),
    }


def run_advlib(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, advlib: Path) -> dict:
    """adv_lib's minimum-norm ℓ1 attacks; broken at ℓ1 10 if any finds a point within it."""
    import types

    for name in ("torchvision", "torchvision.models", "visdom"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]  # type: ignore[attr-defined]
    sys.modules["visdom"].Visdom = object  # type: ignore[attr-defined]
    if str(advlib) not in sys.path:
        sys.path.insert(0, str(advlib))
    from adv_lib.attacks import alma, fmn, pdpgd  # noqa: PLC0415 - outside the project

    runs = {
        "fmn": lambda: fmn(model, x, y, norm=1, steps=1000),
        "alma": lambda: alma(model, x, y, distance="l1", num_steps=1000),
        "pdpgd": lambda: pdpgd(model, x, y, norm=1, num_steps=500),
    }
    robust = torch.ones(len(x), dtype=torch.bool)
    out: dict = {"l1:10": {}}
    for label, call in runs.items():
        start = time.perf_counter()
        x_adv = call().detach()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != y
        norm = _norm(x_adv - x, "l1")
        inside = (x_adv.flatten(1).min(1).values >= 0) & (x_adv.flatten(1).max(1).values <= 1)
        broken = wrong & inside & (norm <= 10 * (1 + 1e-5))
        robust &= ~broken
        out["l1:10"][label] = {"broken": int(broken.sum()), "seconds": seconds}
        print(f"  adv_lib {label}: breaks {int(broken.sum())} ({seconds:.0f} s)", flush=True)
    with torch.no_grad():
        robust &= model(x).argmax(1) == y
    out["l1:10"]["robust"] = robust.tolist()
    return out


def run_ours(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    preset: str,
    threats: list[str] = THREATS,
    seed: int = 0,
) -> dict:
    """multirobust's evaluation with ``preset`` under ``threats`` at once, seeded with ``seed``."""
    from multirobust.evaluation import evaluate

    start = time.perf_counter()
    report = evaluate(model, x, y, threats=threats, preset=preset, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    out: dict = {"seconds": seconds, "preset": preset, "checks": [c.name for c in report.checks]}
    for threat in threats:
        t = report.threats[threat]
        out[threat] = {"robust": list(t.robust), "broken_counts": t.broken_counts()}
    return out


def _load(out: Path, side: str, name: str) -> dict | None:
    path = out / f"{side}-{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(out: Path, names: list[str]) -> list[str]:
    """Markdown rows: robust accuracy of both sides per model and threat, and the union."""
    lines = [
        "| model | threat | ours | AutoAttack | ours − AA (points) | only AA breaks "
        "| only we break |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        ours, ref = _load(out, "ours", name), _load(out, "autoattack", name)
        if ours is None or ref is None:
            lines.append(f"| `{name}` | (missing: run --side ours and --side autoattack) ||||||")
            continue
        # A run of some threats only (--threats) is compared on those; the union needs all.
        shared = [t for t in THREATS if t in ref and t in ours]
        if not shared:
            lines.append(f"| `{name}` | (no threat run by both sides) ||||||")
            continue
        union_o = union_r = None
        for threat in [*shared, "union"] if shared == THREATS else shared:
            if threat == "union":
                o, r = union_o, union_r
            else:
                o = torch.tensor(ours[threat]["robust"])
                r = torch.tensor(ref[threat]["robust"])
                union_o = o if union_o is None else union_o & o
                union_r = r if union_r is None else union_r & r
            assert o is not None and r is not None
            a, b = o.float().mean().item(), r.float().mean().item()
            lines.append(
                f"| `{name}` | {threat} | {a:.1%} | {b:.1%} | {100 * (a - b):+.1f} "
                f"| {int((o & ~r).sum())} | {int((~o & r).sum())} |"
            )
        adv = _load(out, "advlib", name)
        if adv is not None:
            o = torch.tensor(ours["l1:10"]["robust"])
            r = torch.tensor(adv["l1:10"]["robust"])
            a, b = o.float().mean().item(), r.float().mean().item()
            lines.append(
                f"| `{name}` | l1:10 (adv_lib FMN, ALMA, PDPGD) | {a:.1%} | {b:.1%} "
                f"| {100 * (a - b):+.1f} | {int((o & ~r).sum())} | {int((~o & r).sum())} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["autoattack", "ours", "advlib", "table"], required=True)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--reference", type=Path, default=Path("/work/ref/auto-attack"))
    parser.add_argument("--advlib", type=Path, default=Path("/work/ref/advlib"))
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--out", type=Path, default=Path("runs/strength/reference"))
    parser.add_argument("--resume", action="store_true", help="skip models already written")
    parser.add_argument(
        "--seed", type=int, default=0, help="either side's seed (its run-to-run spread; 0 above)"
    )
    parser.add_argument(
        "--threats", nargs="+", default=THREATS, choices=THREATS, help="some threats only"
    )
    args = parser.parse_args()
    if args.side == "table":
        print("\n".join(table(args.out, args.models)))
        return
    if args.side == "autoattack" and not (args.reference / "autoattack").is_dir():
        raise SystemExit(
            f"AutoAttack not found under {args.reference}: clone github.com/fra31/auto-attack "
            "there (outside this repository), or pass --reference DIR"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    for name in args.models:
        path = args.out / f"{args.side}-{name}.json"
        if args.resume and path.exists():
            print(f"{name}: already in {path}", flush=True)
            continue
        model = models.load(args.zoo / f"{name}.pt").eval()
        result: dict = {"model": name, "n": args.n, "torch": torch.__version__}
        if args.side == "autoattack":
            result["seed"] = args.seed
            for threat in args.threats:
                result[threat] = run_autoattack(model, x, y, threat, args.reference, args.seed)
                acc = sum(result[threat]["robust"]) / args.n
                print(
                    f"{name} {threat}: AutoAttack {acc:.1%} ({result[threat]['seconds']:.0f} s)",
                    flush=True,
                )
        elif args.side == "advlib":
            result.update(run_advlib(model, x, y, args.advlib))
            acc = sum(result["l1:10"]["robust"]) / args.n
            print(f"{name} l1:10: adv_lib {acc:.1%}", flush=True)
        else:
            result["seed"] = args.seed
            result.update(run_ours(model, x, y, args.preset, args.threats, args.seed))
            accs = ", ".join(f"{t} {sum(result[t]['robust']) / args.n:.1%}" for t in args.threats)
            print(f"{name}: ours {accs} ({result['seconds']:.0f} s)", flush=True)
        write_json_atomic(path, result)


if __name__ == "__main__":
    main()
