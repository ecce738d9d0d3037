"""Check a zoo model's ℓ∞, ℓ2 and ℓ1 columns with adversaries that are not ours.

Issue 16 asks that every claim of docs/results.md hold under an independent adversary: the
reference AutoAttack (Croce & Hein 2020; standard version: APGD-CE, APGD-T, FAB-T, Square;
for ℓ1 APGD with adaptive sparsity) and adv_lib's ℓ1 attacks (FMN, Pintor et al. 2021, and
APGD-ℓ1). Neither is a dependency of multirobust: AutoAttack is read from a clone of its
public repository in an ignored folder (``--autoattack``, default ``$AUTOATTACK_DIR`` or
``/work/ref/auto-attack``), adv_lib from an installed ``adv-lib`` (``pip install --no-deps
adv-lib==0.2.8``; its optional visdom logger is stubbed when absent). The printed table puts
their robust accuracy on the same first N test images next to ours (``--ours``, the
``report.json`` of ``multirobust evaluate``) and the per-example worst case of all of them.

    python zoo/independent_check.py zoo/NAME.pt \
        --ours runs/zoo-eval/standard-1000/NAME/report.json [--n 1000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch

from multirobust import data, models

THREATS = {
    "linf:0.3": ("Linf", 0.3, float("inf")),
    "l2:2": ("L2", 2.0, 2.0),
    "l1:10": ("L1", 10.0, 1.0),
}


def _autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    batch_size: int,
    where: Path,
) -> torch.Tensor:
    """Per-example robustness under the reference AutoAttack, standard version."""
    if not (where / "autoattack").is_dir():
        raise SystemExit(
            f"AutoAttack not found in {where}: clone its public repository there "
            "(or pass --autoattack DIR / set AUTOATTACK_DIR)"
        )
    sys.path.insert(0, str(where))
    from autoattack import AutoAttack  # type: ignore[import-not-found]

    adversary = AutoAttack(model, norm=norm, eps=eps, version="standard", device="cpu")
    x_adv = adversary.run_standard_evaluation(x, y, bs=batch_size)
    with torch.no_grad():
        pred = torch.cat(
            [model(x_adv[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )
    p = float("inf") if norm == "Linf" else float(norm[1:])
    inside = torch.linalg.vector_norm((x_adv - x).flatten(1), ord=p, dim=1) <= eps * (1 + 1e-4)
    return ~((pred != y) & inside)


def _adv_lib_l1(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int
) -> torch.Tensor:
    """Per-example robustness under adv_lib's FMN-ℓ1 (minimum norm) and APGD-ℓ1 (at eps)."""
    if "visdom" not in sys.modules:
        try:
            import visdom  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:  # adv_lib imports it for an optional logger
            sys.modules["visdom"] = types.ModuleType("visdom")
    try:
        from adv_lib.attacks import apgd, fmn  # type: ignore[import-not-found]
    except ImportError as err:
        raise SystemExit(
            f"adv_lib unavailable ({err}): pip install --no-deps adv-lib==0.2.8"
        ) from None
    robust = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        ok = torch.ones(len(xb), dtype=torch.bool)
        for x_adv in (
            fmn(model, xb, yb, norm=1, steps=1000),
            apgd(model, xb, yb, eps=eps, norm=1, loss_function="ce"),
            apgd(model, xb, yb, eps=eps, norm=1, loss_function="dlr"),
        ):
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != yb
            inside = (x_adv - xb).flatten(1).abs().sum(1) <= eps * (1 + 1e-4)
            ok &= ~(wrong & inside)
        robust.append(ok)
    return torch.cat(robust)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--ours", type=Path, help="report.json of multirobust evaluate")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    default_aa = os.environ.get("AUTOATTACK_DIR", "/work/ref/auto-attack")
    parser.add_argument("--autoattack", type=Path, default=Path(default_aa))
    parser.add_argument("--skip-adv-lib", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model = models.load(args.checkpoint).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels
    ours = json.loads(args.ours.read_text()) if args.ours else None
    rows: dict[str, Any] = {}
    print(f"{args.checkpoint}, first {len(x)} MNIST test images")
    print("| threat | ours | AutoAttack (reference) | adv_lib ℓ1 | worst case of all |")
    print("|---|---:|---:|---:|---:|")
    for key, (norm, eps, _) in THREATS.items():
        aa = _autoattack(model, x, y, norm, eps, args.batch_size, args.autoattack)
        worst = aa.clone()
        ours_robust = None
        if ours is not None:
            ours_robust = torch.tensor(ours["threats"][key]["robust"][: len(x)], dtype=torch.bool)
            worst &= ours_robust
        lib = None
        if norm == "L1" and not args.skip_adv_lib:
            lib = _adv_lib_l1(model, x, y, eps, args.batch_size)
            worst &= lib

        def pct(t: torch.Tensor | None) -> str:
            return "–" if t is None else f"{100 * t.float().mean():.1f}"

        print(f"| {key} | {pct(ours_robust)} | {pct(aa)} | {pct(lib)} | {pct(worst)} |")
        rows[key] = {
            "ours": None if ours_robust is None else ours_robust.tolist(),
            "autoattack": aa.tolist(),
            "adv_lib": None if lib is None else lib.tolist(),
            "worst": worst.tolist(),
        }
    if args.json:
        args.json.write_text(
            json.dumps({"checkpoint": str(args.checkpoint), "n": len(x), "threats": rows})
        )
    return rows


if __name__ == "__main__":
    main()
