"""Peak memory of PGD at batch 1000: it must not grow with the number of steps.

An attack that keeps the autograd graph (or any per-step tensor) alive across steps needs
memory proportional to the steps; ours frees everything of a step before the next. Each
measurement runs in a fresh subprocess so that peaks do not mix:

* on CPU the figure is the process's peak resident set (``VmHWM``) minus its resident set
  just before the attack (model, data and the PyTorch runtime already loaded);
* on CUDA it is ``torch.cuda.max_memory_allocated`` during the attack, above what was
  allocated before it.

For each threat it prints the peak for 5, 10, 20 and 40 steps, and the growth from 5 to 40
steps (≈ 0 MiB when nothing is kept across steps). Early stopping is off so that every
example stays in the batch for all steps (the worst case).

    python benchmarks/memory.py [--n 1000] [--steps 5 10 20 40] [--device cpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

THREATS = ("linf:0.3", "l2:2", "l1:10")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this measurement needs Linux)")


def worker(threat: str, steps: int, n: int, device: str) -> dict[str, float]:
    """One measurement (runs in its own process)."""
    import torch

    from multirobust import attacks, data, models

    torch.manual_seed(0)
    test = data.load("mnist", "test", limit=n)
    model = models.for_dataset("small_cnn", "mnist").to(device).eval()
    x, y = test.images.to(device), test.labels.to(device)
    atk = attacks.create("pgd", threat=threat, steps=steps, early_stop=False, seed=0)
    atk(model, x[:8], y[:8])  # warm-up: lazy initialisations are not the attack's memory
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        atk(model, x, y)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_kib("VmRSS") * 1024
        atk(model, x, y)
        peak = _rss_kib("VmHWM") * 1024 - base
    return {"threat": threat, "steps": steps, "n": n, "peak_mib": peak / 2**20}


def measure(threats, steps_list, n: int, device: str) -> list[dict[str, float]]:
    rows = []
    for threat in threats:
        for steps in steps_list:
            cmd = [sys.executable, __file__, "--worker", threat, str(steps), str(n), device]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        threat, steps, n, device = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(worker(threat, steps, n, device)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--threat", action="append", help="default: linf:0.3, l2:2, l1:10")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))
    rows = measure(args.threat or THREATS, args.steps, args.n, args.device)
    print(f"PGD peak memory above the loaded model and data, batch {args.n}, {args.device}")
    print(f"{'threat':<10}" + "".join(f"{f'{s} steps':>13}" for s in args.steps) + "     growth")
    by_threat: dict[str, list[dict[str, float]]] = {}
    for r in rows:
        by_threat.setdefault(str(r["threat"]), []).append(r)
    summary = {}
    for threat, rs in by_threat.items():
        growth = rs[-1]["peak_mib"] - rs[0]["peak_mib"]
        summary[threat] = growth
        cells = "".join(f"{r['peak_mib']:9.1f} MiB" for r in rs)
        print(f"{threat:<10}{cells}   {growth:+8.1f} MiB")
    if args.json:
        payload = {
            "device": args.device,
            "machine": platform.platform(),
            "rows": rows,
            "growth_mib": summary,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
