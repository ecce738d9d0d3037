"""PGD-40 ℓ∞ on 1000 MNIST images: multirobust against a bare hand-written PyTorch loop.

Both do 40 forward+backward passes on the same model and images in the same process; runs are
interleaved and repeated, and the median of each is compared. The ratio (bare time / our time)
is the figure of merit: 1.0 means no overhead beyond the passes themselves.

    python benchmarks/pgd_speed.py [--checkpoint CKPT] [--n 1000] [--repeats 5] [--json OUT]
        [--device auto|cpu|cuda] [--arch small_cnn|preact_resnet18] [--autocast bf16]
        [--channels-last]

Without a checkpoint a small_cnn is trained for one epoch on 20,000 MNIST images first, so that
the early-stopping figure reflects a real model. Needs MULTIROBUST_DATA (or ../shared/data).

``--arch preact_resnet18`` times the CIFAR-sized network (3×32×32 inputs) with freshly
initialised weights on uniform random images labelled with its own predictions (CIFAR-10 is not
on these machines): the speed figures are the network's, the robust accuracy and the early-stop
figure mean nothing there.
``--autocast bf16`` runs both loops under ``torch.autocast`` with bfloat16; ``--channels-last``
puts the model and the images in channels-last memory format. Both apply to the bare loop too,
so the ratio stays like for like.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from multirobust import attacks, data, models
from multirobust.evaluation.passes import PassCounter
from multirobust.training import train_standard

EPS, STEPS = 0.3, 40
ALPHA = 2.5 * EPS / STEPS


def bare_pgd(model, x, y, generator):
    """The reference: the shortest correct PGD loop, no checks, no bookkeeping."""
    noise = torch.rand(x.shape, generator=generator).to(x.device)
    x_adv = (x + (noise * 2 - 1) * EPS).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * grad.sign(), x - EPS), x + EPS)
        x_adv = x_adv.clamp(0, 1)
    return x_adv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _precision(device: torch.device, autocast: str | None) -> Iterator[None]:
    if autocast is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K")
    parser.add_argument("--arch", default="small_cnn", choices=["small_cnn", "preact_resnet18"])
    parser.add_argument("--autocast", choices=["bf16"], default=None)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    device = _device(args.device)
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))

    if args.checkpoint:
        model = models.load(args.checkpoint)
        dataset = "mnist"
    elif args.arch == "preact_resnet18":
        torch.manual_seed(0)
        model = models.for_dataset("preact_resnet18", "cifar10")
        dataset = "random 3x32x32"
    else:
        torch.manual_seed(0)
        model = models.for_dataset("small_cnn", "mnist")
        train_standard(model, data.load("mnist", "train", limit=20000), epochs=1, progress=False)
        dataset = "mnist"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dataset == "mnist":
        test = data.load("mnist", "test", limit=args.n)
        x, y = test.images, test.labels
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.n, 3, 32, 32, generator=g)
        # Labels = the untrained network's own predictions, so that every image is attacked
        # (with random labels multirobust would skip the misclassified ones and look faster).
        with torch.no_grad():
            y = model(x).argmax(1)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    x, y = x.to(device=device, memory_format=fmt), y.to(device)
    amp = args.autocast

    full = attacks.create("pgd", threat=f"linf:{EPS}", steps=STEPS, early_stop=False)
    early = full.with_options(early_stop=True)

    def under(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with _precision(device, amp):
                return fn()

        return run

    runs = {
        "bare loop": under(lambda: bare_pgd(model, x, y, torch.Generator().manual_seed(0))),
        "multirobust pgd (all 40 steps)": under(lambda: full(model, x, y)),
        "multirobust pgd (early stop)": under(lambda: early(model, x, y)),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_time(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    x_bare = runs["bare loop"]()
    with torch.no_grad():
        robust = {
            "bare loop": float((model(x_bare).argmax(1) == y).float().mean()),
            "multirobust pgd (all 40 steps)": float(
                runs["multirobust pgd (all 40 steps)"]().robust.float().mean()
            ),
            "multirobust pgd (early stop)": float(
                runs["multirobust pgd (early stop)"]().robust.float().mean()
            ),
        }
    # Like for like: the same passes, the same points. Counted once, outside the timing.
    passes: dict[str, list[float]] = {}
    for name, fn in (
        ("bare loop", lambda m: bare_pgd(m, x, y, torch.Generator().manual_seed(0))),
        ("multirobust pgd (all 40 steps)", lambda m: full(m, x, y)),
        ("multirobust pgd (early stop)", lambda m: early(m, x, y)),
    ):
        counter = PassCounter(model)
        with _precision(device, amp):
            fn(counter)
        passes[name] = [p / args.n for p in counter.counts()]
    with _precision(device, amp):
        x_ours = runs["multirobust pgd (all 40 steps)"]().x_adv
    agreement = float((x_ours.float() - x_bare.float()).abs().max())
    bare = med["bare loop"]
    setting = (
        f"{args.arch if not args.checkpoint else 'checkpoint'} on {dataset}, {device}, "
        f"{'bf16 autocast' if amp else 'fp32'}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}"
    )
    print(
        f"PGD-{STEPS} linf {EPS} on {args.n} images, {setting}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    )
    print(
        f"{'run':<34} {'median s':>9} {'img/s':>8} {'speed vs bare':>14} {'robust acc':>11} "
        f"{'fwd+bwd / image':>16}"
    )
    rows = []
    for name in runs:
        ratio = bare / med[name]
        fwd, bwd = passes[name]
        print(
            f"{name:<34} {med[name]:>9.3f} {args.n / med[name]:>8.0f} {ratio:>14.3f} "
            f"{robust[name]:>11.2%} {fwd:>8.1f}+{bwd:<7.1f}"
        )
        rows.append(
            {
                "run": name,
                "median_seconds": med[name],
                "all_seconds": times[name],
                "speed_vs_bare": ratio,
                "robust_accuracy": robust[name],
                "forward_passes_per_image": passes[name][0],
                "backward_passes_per_image": passes[name][1],
            }
        )
    print(f"largest difference between the bare loop's and multirobust's points: {agreement:.2e}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "pgd_speed",
                    "setting": setting,
                    "device": str(device),
                    "n": args.n,
                    "steps": STEPS,
                    "eps": EPS,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "machine": platform.machine(),
                    "rows": rows,
                    "max_abs_difference_bare_vs_all_steps": agreement,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
