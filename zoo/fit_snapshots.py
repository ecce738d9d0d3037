"""Train from a TOML config and keep the weights of every epoch (``OUT/epoch-N.pt``).

``multirobust train`` keeps the last, best and final weights; a curve of robustness against
the epochs spent needs every epoch's. This runs the same ``fit`` loop and copies each
epoch's ``checkpoint.pt`` as it is written (a resumed run redoes and re-copies an
interrupted epoch).

    python zoo/fit_snapshots.py zoo/configs/eat-ft.toml [--out runs/zoo/eat-ft] [--resume]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from multirobust.training import fit, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", default=None, help="output folder (default: the config's)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, out=args.out, progress=False if args.quiet else None)
    out = Path(cfg.out)

    def keep(epoch: int, step: int) -> None:
        # Called after every step: once epoch e is under way, epoch e − 1's checkpoint exists.
        done = epoch - 1
        target = out / f"epoch-{done}.pt"
        if done >= 1 and not target.exists() and (out / "checkpoint.pt").exists():
            shutil.copyfile(out / "checkpoint.pt", target)

    result = fit(cfg, resume=args.resume, on_batch=keep)
    last = len(result.history)
    shutil.copyfile(out / "checkpoint.pt", out / f"epoch-{last}.pt")
    print(f"{cfg.method}: {last} epoch(s), snapshots in {out}")


if __name__ == "__main__":
    main()
