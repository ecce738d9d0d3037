"""The cost of each training method relative to standard training, against its pass count.

Every method of ``multirobust.training.methods()`` trains the same freshly initialised model
on the same ``--batches`` MNIST batches, through the same ``BatchStep`` the fit loop uses;
methods are interleaved within each of ``--repeats`` rounds and the median time of each is
compared with standard training's. Next to it: the theoretical number of forward and backward
passes per batch (in units of one pass over the batch) and the number counted for real with
hooks on the model, and the expected cost ratio (F + 2B) / 3 under the usual rule that a
backward pass costs about two forward passes.

    python benchmarks/training_cost.py [--batches 20] [--batch-size 128] [--steps 10]
        [--method-steps max-apgd=3] [--replays 4] [--threats linf:0.3,l2:2,l1:10]
        [--repeats 3] [--methods pgd,max] [--json OUT.json] [--markdown OUT.md]

k = --steps, m = --replays, T = the number of --threats (used by max, avg, random, msd and
eat; the single-threat methods use the first). Free-AT replays each batch m times, so one of its
epochs costs about m standard epochs; Shafahi et al. run epochs/m of them. Ensemble training
draws its FGSM examples from an untrained copy of the architecture (the cost does not depend
on the source's weights). Input-only backward passes (attack steps) skip the weight
gradients, so attacks cost somewhat less than the pass count says. Needs MULTIROBUST_DATA
(or ../shared/data).
"""

from __future__ import annotations

import argparse
import copy
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

from multirobust import data, models
from multirobust.training import TrainConfig, get_method, methods

Theory = Callable[[int, int, int], tuple[int, int, str]]

# (forward passes, backward passes, how) per batch, in units of one pass over the N examples;
# arguments: k steps, m replays, T threats.
THEORY: dict[str, Theory] = {
    "standard": lambda k, m, t: (1, 1, "1 fwd+bwd"),
    "pgd": lambda k, m, t: (k + 1, k + 1, "k attack steps + 1 training pass"),
    "free": lambda k, m, t: (m, m, "m replays, one fwd+bwd each for weights and δ"),
    "fast": lambda k, m, t: (2, 2, "1 FGSM step + 1 training pass"),
    "trades": lambda k, m, t: (
        k + 3,
        k + 2,
        "clean fwd (no grad) + k KL steps + fwd on x and x' + bwd through both",
    ),
    "max": lambda k, m, t: (
        t * k + t + 1,
        t * k + 1,
        "T·k attack steps + fwd over T·N to pick the worst + 1 training pass",
    ),
    "avg": lambda k, m, t: (t * k + t, t * k + t, "T·k attack steps + training on T·N"),
    "random": lambda k, m, t: (k + 1, k + 1, "k attack steps (one threat) + 1 training pass"),
    "msd": lambda k, m, t: (
        k * (t + 1) + 1,
        k + 1,
        "k × (1 fwd+bwd + fwd over T·N candidates) + 1 training pass",
    ),
    "eat": lambda k, m, t: (
        k + 2,
        k + 1,
        "k APGD steps on one drawn threat (no backward at the last) + 1 training pass",
    ),
    "max-apgd": lambda k, m, t: (
        t * (k + 1) + 1,
        t * k + 1,
        "T × k APGD steps (worst picked from APGD's losses) + 1 training pass",
    ),
    "ensemble": lambda k, m, t: (3, 3, "FGSM on a source model + training on 2N (clean+adv)"),
    "distillation": lambda k, m, t: (
        3,
        2,
        "teacher fwd+bwd at T + teacher soft labels (no grad) + student fwd+bwd",
    ),
}


def theory(name: str, steps: int, replays: int, n_threats: int) -> dict[str, Any]:
    """Theoretical passes per batch of method ``name`` and its expected cost vs standard.

    A method registered after this table was written has no theory: its values are None.
    """
    if name not in THEORY:
        return {"forward": None, "backward": None, "passes": None, "how": "no theory yet"}
    f, b, how = THEORY[name](steps, replays, n_threats)
    return {"forward": f, "backward": b, "passes": (f + 2 * b) / 3, "how": how}


class PassCounter:
    """Counts forward and backward passes through modules, in units of ``per`` examples.

    A forward hook adds the output's batch size; when the output requires a gradient, a
    tensor hook on it adds the batch size again when the backward pass reaches it.
    """

    def __init__(self, modules: list[nn.Module], per: int) -> None:
        self.per = per
        self.forward = 0
        self.backward = 0
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        n = output.shape[0]
        self.forward += n
        if output.requires_grad:

            def on_grad(grad: torch.Tensor) -> None:
                self.backward += grad.shape[0]

            output.register_hook(on_grad)

    def counts(self, batches: int) -> tuple[float, float]:
        """(forward, backward) passes per batch."""
        scale = self.per * batches
        return self.forward / scale, self.backward / scale

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _run(
    name: str,
    init: nn.Module,
    static: list[nn.Module],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    args: argparse.Namespace,
    count: bool = False,
) -> tuple[float, tuple[float, float] | None]:
    """Train a copy of ``init`` on ``batches`` with method ``name``; seconds (and pass counts)."""
    model = copy.deepcopy(init).train()
    # Methods that take several threats get them all; the single-threat ones the first.
    several = get_method(name).threat_count[1] != 1
    threats = args.threats if several else args.threats[:1]
    cfg = TrainConfig(
        arch=args.arch,
        method=name,
        threats=list(threats),
        steps=args.method_steps.get(name, args.steps),
        replays=args.replays,
        batch_size=args.batch_size,
        progress=False,
    )
    step = get_method(name).build(cfg, static)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    # Count every network the step runs: the model, the static models, and any model the
    # step owns (distillation's teacher).
    own = [v for v in vars(step).values() if isinstance(v, nn.Module)]
    counter = PassCounter([model, *static, *own], per=args.batch_size) if count else None
    start = time.perf_counter()
    for x, y in batches:
        step(model, opt, x, y, gen)
    seconds = time.perf_counter() - start
    if counter is None:
        return seconds, None
    counter.remove()
    return seconds, counter.counts(len(batches))


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per method: theory, counted passes, median seconds and cost vs standard."""
    names = args.methods
    train = data.load("mnist", "train", limit=args.batches * args.batch_size)
    if len(train) < args.batches * args.batch_size:
        raise SystemExit(f"only {len(train)} training images for {args.batches} batches")
    batches = list(train.loader(args.batch_size))
    torch.manual_seed(0)
    init = models.for_dataset(args.arch, "mnist")
    torch.manual_seed(1)
    static = [models.for_dataset(args.arch, "mnist").eval()]
    counted = {n: _run(n, init, static, batches, args, count=True)[1] for n in names}  # warm-up
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for n in names:
            times[n].append(_run(n, init, static, batches, args)[0])
    med = {n: statistics.median(v) for n, v in times.items()}
    base = med.get("standard")
    rows = []
    for n in names:
        th = theory(n, args.method_steps.get(n, args.steps), args.replays, len(args.threats))
        fwd, bwd = counted[n] or (float("nan"), float("nan"))
        rel = med[n] / base if base else None
        rows.append(
            {
                "method": n,
                "steps": args.method_steps.get(n, args.steps),
                "theory_forward": th["forward"],
                "theory_backward": th["backward"],
                "theory_passes": th["passes"],
                "how": th["how"],
                "counted_forward": fwd,
                "counted_backward": bwd,
                "median_seconds": med[n],
                "all_seconds": times[n],
                "ms_per_batch": 1000 * med[n] / len(batches),
                "cost_vs_standard": rel,
                "cost_over_theory": None if rel is None or not th["passes"] else rel / th["passes"],
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    """The rows as a Markdown table under ``header``."""
    lines = [
        header,
        "",
        "| method | theory fwd / bwd | counted fwd / bwd | theory cost | ms / batch "
        "| measured cost vs standard | measured / theory | measured vs pgd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    steps = [r["steps"] for r in rows]
    usual = max(set(steps), key=steps.count)
    pgd = next((r["median_seconds"] for r in rows if r["method"] == "pgd"), None)
    for r in rows:
        vs_pgd = "—" if pgd is None else f"{r['median_seconds'] / pgd:.2f}×"
        name = r["method"] if r["steps"] == usual else f"{r['method']} (k={r['steps']})"
        rel = "—" if r["cost_vs_standard"] is None else f"{r['cost_vs_standard']:.2f}×"
        ratio = "—" if r["cost_over_theory"] is None else f"{r['cost_over_theory']:.2f}"
        passes = "?" if r["theory_passes"] is None else f"{r['theory_passes']:.2f}×"
        th = (
            "?"
            if r["theory_forward"] is None
            else (f"{r['theory_forward']} / {r['theory_backward']}")
        )
        lines.append(
            f"| {name} | {th} | {r['counted_forward']:g} / {r['counted_backward']:g} "
            f"| {passes} | {r['ms_per_batch']:.1f} | {rel} | {ratio} | {vs_pgd} |"
        )
    lines += ["", "Theory (per batch, in passes over the batch):", ""]
    lines += [f"- {r['method']}: {r['how']}" for r in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="training batches per method")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="k: attack steps")
    parser.add_argument(
        "--method-steps",
        action="append",
        default=[],
        metavar="NAME=K",
        help="k for one method (repeatable), e.g. max-apgd=3 next to pgd at --steps 10",
    )
    parser.add_argument("--replays", type=int, default=4, help="m: Free-AT replays")
    parser.add_argument(
        "--threats",
        default="linf:0.3,l2:2,l1:10",
        help="comma-separated ℓp balls for max/avg/random/msd (the first for the others)",
    )
    parser.add_argument("--methods", default=",".join(methods()), help="comma-separated")
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    args.threats = [t.strip() for t in args.threats.split(",") if t.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    per: dict[str, int] = {}
    for item in args.method_steps:
        name, _, value = item.partition("=")
        if name not in methods() or not value.isdigit() or int(value) < 1:
            parser.error(f"--method-steps {item!r}: need NAME=K with a method name and K >= 1")
        per[name] = int(value)
    args.method_steps = per
    unknown = [m for m in args.methods if m not in methods()]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)} (available: {', '.join(methods())})")
    for name in ("batches", "batch_size", "steps", "replays", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.threats:
        parser.error("--threats needs at least one threat model")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args)
    header = (
        f"Training cost per batch, {args.arch} on MNIST, batch {args.batch_size}, "
        f"{args.batches} batches, k={args.steps}, m={args.replays}, "
        f"T={len(args.threats)} ({', '.join(args.threats)}), median of {args.repeats}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    table = markdown(rows, header)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "training_cost",
                    "arch": args.arch,
                    "batch_size": args.batch_size,
                    "batches": args.batches,
                    "steps": args.steps,
                    "replays": args.replays,
                    "threats": args.threats,
                    "repeats": args.repeats,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "machine": platform.machine(),
                    "rows": rows,
                },
                indent=2,
            )
        )
    return rows


if __name__ == "__main__":
    main()
