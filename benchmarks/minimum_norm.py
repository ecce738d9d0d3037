"""C&W-ℓ2 and DeepFool on MNIST: multirobust against a bare loop of the very same passes.

Each attack runs once under a counting wrapper that records every forward pass (its batch size)
and every backward pass through that forward's output. The bare reference then replays exactly
those passes — same number, same batch sizes, no attack logic at all — on the same model, so
the ratio (bare time / our time) isolates what our bookkeeping costs: 1.0 means nothing beyond
the passes themselves. Runs are interleaved and repeated; medians are compared.

    python benchmarks/minimum_norm.py [--checkpoint CKPT] [--n 100] [--steps 100]
        [--binary-search-steps 5] [--repeats 3] [--json OUT.json] [--md OUT.md]

Without a checkpoint a small_cnn is trained for one epoch on 20,000 MNIST training images
(the test suite's fixture recipe). Needs MULTIROBUST_DATA (or ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multirobust import attacks, data, models
from multirobust.training import train_standard


class PassCounter(nn.Module):
    """Records ``[batch_size, backward_passes]`` for every forward call of ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.events: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        record = [int(x.shape[0]), 0]
        self.events.append(record)
        if out.requires_grad:

            def count(grad: torch.Tensor, record: list[int] = record) -> None:
                record[1] += 1

            out.register_hook(count)
        return out


def bare_replay(model: nn.Module, x: torch.Tensor, events: list[list[int]]) -> None:
    """The reference: the same forward and backward passes, with nothing else."""
    for batch, backwards in events:
        xb = x[:batch]
        if backwards == 0:
            with torch.no_grad():
                model(xb)
            continue
        xg = xb.clone().requires_grad_(True)
        out = model(xg)
        for j in range(backwards):
            torch.autograd.grad(out[:, j % out.shape[1]].sum(), xg, retain_graph=j + 1 < backwards)


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _summary(events: list[list[int]]) -> dict[str, int]:
    return {
        "forward_passes": len(events),
        "backward_passes": sum(b for _, b in events),
        "forward_examples": sum(n for n, _ in events),
        "backward_examples": sum(n * b for n, b in events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=100, help="MNIST test images")
    parser.add_argument("--steps", type=int, default=100, help="C&W optimiser steps per search")
    parser.add_argument("--binary-search-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))

    if args.checkpoint:
        model = models.load(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = models.for_dataset("small_cnn", "mnist")
        train = data.load("mnist", "train", limit=20000)
        train_standard(model, train, epochs=1, seed=0, progress=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = data.load("mnist", "test", limit=args.n)
    x, y = test.images, test.labels

    cw = {"steps": args.steps, "binary_search_steps": args.binary_search_steps}
    runs: dict[str, attacks.MinimumNormAttack] = {
        "cw-l2 (early abort)": attacks.create_minimum_norm("cw-l2", **cw),
        "cw-l2 (all steps)": attacks.create_minimum_norm("cw-l2", abort_early=False, **cw),
        "deepfool-l2": attacks.create_minimum_norm("deepfool-l2"),
        "deepfool-linf": attacks.create_minimum_norm("deepfool-linf"),
    }
    counts: dict[str, list[list[int]]] = {}
    quality: dict[str, dict[str, Any]] = {}
    for name, atk in runs.items():
        counter = PassCounter(model)
        res = atk(counter, x, y)
        counts[name] = counter.events
        broken = res.found & (res.distance > 0)
        quality[name] = {
            "success_rate": float(res.found.float().mean()),
            "median_norm": float(res.distance[broken].median()) if bool(broken.any()) else None,
        }

    jobs: dict[str, Callable[[], Any]] = {}
    for name, atk in runs.items():
        jobs[name] = lambda atk=atk: atk(model, x, y)
        jobs[f"{name} — bare replay"] = lambda ev=counts[name]: bare_replay(model, x, ev)
    for fn in jobs.values():  # warm-up (also pays torch.optim's one-time import)
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for key, fn in jobs.items():
            times[key].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    print(
        f"Minimum-norm attacks on {args.n} MNIST images, small_cnn, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats; C&W {args.steps} steps × "
        f"{args.binary_search_steps} searches"
    )
    header = (
        f"{'attack':<22} {'fwd':>6} {'bwd':>6} {'ours s':>8} {'bare s':>8} {'bare/ours':>9} "
        f"{'success':>8} {'median norm':>11}"
    )
    print(header)
    rows = []
    for name in runs:
        c = _summary(counts[name])
        ours, bare = med[name], med[f"{name} — bare replay"]
        q = quality[name]
        norm = "–" if q["median_norm"] is None else f"{q['median_norm']:.4f}"
        print(
            f"{name:<22} {c['forward_passes']:>6} {c['backward_passes']:>6} {ours:>8.3f} "
            f"{bare:>8.3f} {bare / ours:>9.3f} {q['success_rate']:>8.0%} {norm:>11}"
        )
        rows.append(
            {
                "attack": name,
                **c,
                "median_seconds": ours,
                "bare_median_seconds": bare,
                "all_seconds": times[name],
                "bare_all_seconds": times[f"{name} — bare replay"],
                "speed_vs_bare": bare / ours,
                **q,
            }
        )
    meta = {
        "benchmark": "minimum_norm",
        "n": args.n,
        "cw_steps": args.steps,
        "cw_binary_search_steps": args.binary_search_steps,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(meta, indent=2))
    if args.md:
        lines = [
            f"# Minimum-norm attacks: multirobust vs the same passes bare ({args.n} MNIST images)",
            "",
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.repeats} repeats, C&W {args.steps} steps × "
            f"{args.binary_search_steps} searches.",
            "",
            "| attack | forward | backward | ours (s) | bare (s) | bare/ours | success "
            "| median norm |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            norm = "–" if r["median_norm"] is None else f"{r['median_norm']:.4f}"
            lines.append(
                f"| {r['attack']} | {r['forward_passes']} | {r['backward_passes']} | "
                f"{r['median_seconds']:.3f} | {r['bare_median_seconds']:.3f} | "
                f"{r['speed_vs_bare']:.3f} | {r['success_rate']:.0%} | {norm} |"
            )
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
