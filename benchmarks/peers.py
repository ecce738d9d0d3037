"""multirobust side by side with torchattacks, Foolbox 3 and IBM ART, and the bare loop.

Same model, same images, matched settings (steps, step size, random start, loss), one process,
runs interleaved and repeated; the table gives images per second, the ratio to the bare
hand-written loop (bare time / attack time: 1.0 = no overhead beyond the passes themselves) and
robust accuracy (lower = stronger; for minimum-norm attacks also the median ℓ2 distortion).

    python benchmarks/peers.py [--checkpoint CKPT] [--n 1000] [--repeats 3]
                               [--json out.json] [--markdown out.md] [--only pgd-linf,fgsm]

Peers come from the `bench` extra (`bash scripts/setup-venv.sh test,bench`); a peer that is not
installed is reported as missing, not silently dropped. Without --checkpoint a small_cnn is
trained for one epoch on 20,000 MNIST images (MULTIROBUST_DATA, else ../shared/data).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multirobust import attacks

PEERS = ("torchattacks", "foolbox", "art")


@dataclass(frozen=True)
class Case:
    """One matched attack setting."""

    key: str
    title: str
    norm: str  # "linf" or "l2"
    eps: float
    steps: int
    step_size: float
    random_start: bool


CASES = {
    "fgsm": Case("fgsm", "FGSM linf 0.3", "linf", 0.3, 1, 0.3, False),
    "pgd-linf": Case("pgd-linf", "PGD-40 linf 0.3 (a=0.01)", "linf", 0.3, 40, 0.01, True),
    "pgd-l2": Case("pgd-l2", "PGD-40 l2 2.0 (a=0.1)", "l2", 2.0, 40, 0.1, True),
}

Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def available_peers() -> dict[str, bool]:
    """Which peer libraries import here."""
    mods = {"torchattacks": "torchattacks", "foolbox": "foolbox", "art": "art"}
    return {k: importlib.util.find_spec(m) is not None for k, m in mods.items()}


# ----------------------------------------------------------------------------- the bare loop
def bare(case: Case, generator_seed: int = 0) -> Runner:
    """The shortest correct loop doing the case's forward+backward passes."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(generator_seed)
        x_adv = x.clone()
        if case.random_start:
            if case.norm == "linf":
                x_adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * case.eps).clamp(0, 1)
            else:
                d = torch.randn(x.shape, generator=g)
                d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * case.eps
                x_adv = (x + d * torch.rand(x.shape[0], generator=g).view(-1, 1, 1, 1)).clamp(0, 1)
        for _ in range(case.steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if case.norm == "linf":
                    x_adv = x_adv + case.step_size * grad.sign()
                    x_adv = torch.min(torch.max(x_adv, x - case.eps), x + case.eps)
                else:
                    gn = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    x_adv = x_adv + case.step_size * grad / gn
                    d = x_adv - x
                    dn = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                    x_adv = x + d * torch.clamp(case.eps / dn.clamp_min(1e-12), max=1.0)
                x_adv = x_adv.clamp(0, 1)
        return x_adv.detach()

    return run


# ----------------------------------------------------------------------------- multirobust
def ours(case: Case, early_stop: bool) -> Runner:
    name = "fgsm" if case.key == "fgsm" else "pgd"
    opts: dict[str, object] = {"step_size": case.step_size, "random_start": case.random_start}
    if name == "pgd":
        opts.update(steps=case.steps, early_stop=early_stop)
    atk = attacks.create(name, threat=f"{case.norm}:{case.eps}", **opts)
    return lambda model, x, y: atk(model, x, y).x_adv


# ----------------------------------------------------------------------------- peers
def torchattacks_runner(case: Case) -> Runner:
    import torchattacks

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if case.key == "fgsm":
            atk = torchattacks.FGSM(model, eps=case.eps)
        elif case.norm == "linf":
            atk = torchattacks.PGD(
                model,
                eps=case.eps,
                alpha=case.step_size,
                steps=case.steps,
                random_start=case.random_start,
            )
        else:
            atk = torchattacks.PGDL2(
                model,
                eps=case.eps,
                alpha=case.step_size,
                steps=case.steps,
                random_start=case.random_start,
            )
        return atk(x, y)

    return run


def foolbox_runner(case: Case) -> Runner:
    import foolbox as fb

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        if case.key == "fgsm":
            atk = fb.attacks.FGSM(random_start=False)
        elif case.norm == "linf":
            atk = fb.attacks.LinfPGD(
                abs_stepsize=case.step_size, steps=case.steps, random_start=case.random_start
            )
        else:
            atk = fb.attacks.L2PGD(
                abs_stepsize=case.step_size, steps=case.steps, random_start=case.random_start
            )
        _, clipped, _ = atk(fmodel, x, y, epsilons=case.eps)
        return clipped

    return run


def art_runner(case: Case) -> Runner:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clf = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        norm = np.inf if case.norm == "linf" else 2
        if case.key == "fgsm":
            atk = FastGradientMethod(clf, norm=norm, eps=case.eps, batch_size=x.shape[0])
        else:
            atk = ProjectedGradientDescentPyTorch(
                clf,
                norm=norm,
                eps=case.eps,
                eps_step=case.step_size,
                max_iter=case.steps,
                num_random_init=1 if case.random_start else 0,
                batch_size=x.shape[0],
                verbose=False,
            )
        return torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))

    return run


def runners(case: Case, peers: dict[str, bool]) -> dict[str, Runner]:
    out: dict[str, Runner] = {"bare loop": bare(case)}
    out["multirobust"] = ours(case, early_stop=False)
    if case.key != "fgsm":
        out["multirobust (early stop)"] = ours(case, early_stop=True)
    builders = {"torchattacks": torchattacks_runner, "foolbox": foolbox_runner, "art": art_runner}
    for peer, ok in peers.items():
        if ok:
            out[peer] = builders[peer](case)
    return out


# ----------------------------------------------------------------------------- measurement
def measure(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cases: list[Case], repeats: int = 3
) -> list[dict[str, object]]:
    """Time every runner of every case (interleaved, median of ``repeats``), plus strength."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    peers = available_peers()
    rows: list[dict[str, object]] = []
    for case in cases:
        rs = runners(case, peers)
        results = {name: fn(model, x, y) for name, fn in rs.items()}  # warm-up + strength
        times: dict[str, list[float]] = {name: [] for name in rs}
        for _ in range(repeats):
            for name, fn in rs.items():
                start = time.perf_counter()
                fn(model, x, y)
                times[name].append(time.perf_counter() - start)
        bare_t = statistics.median(times["bare loop"])
        for name in rs:
            x_adv = results[name]
            with torch.no_grad():
                robust = float((model(x_adv).argmax(1) == y).float().mean())
            delta = (x_adv - x).flatten(1)
            size = delta.abs().amax(1) if case.norm == "linf" else delta.norm(dim=1)
            t = statistics.median(times[name])
            rows.append(
                {
                    "case": case.title,
                    "library": name,
                    "median_seconds": t,
                    "images_per_second": x.shape[0] / t,
                    "speed_vs_bare": bare_t / t,
                    "robust_accuracy": robust,
                    "max_norm": float(size.max()),
                    "all_seconds": times[name],
                }
            )
    for peer, ok in peers.items():
        if not ok:
            rows.append({"case": "all", "library": peer, "missing": True})
    return rows


def markdown(rows: list[dict[str, object]], header: str) -> str:
    lines = [
        header,
        "",
        "| case | library | median s | img/s | speed vs bare | robust acc | max norm |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("missing"):
            lines.append(f"| — | {r['library']} | not installed | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r['library']} | {r['median_seconds']:.3f} | "
            f"{r['images_per_second']:.0f} | {r['speed_vs_bare']:.2f} | "
            f"{r['robust_accuracy']:.1%} | {r['max_norm']:.4g} |"
        )
    return "\n".join(lines)


def main() -> None:
    from multirobust import data, models
    from multirobust.training import train_standard

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    os.environ.setdefault("MULTIROBUST_DATA", str(shared))
    if args.checkpoint:
        model = models.load(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = models.for_dataset("small_cnn", "mnist")
        train_standard(model, data.load("mnist", "train", limit=20000), epochs=1, progress=False)
    test = data.load("mnist", "test", limit=args.n)
    cases = [CASES[k] for k in args.only.split(",")]
    rows = measure(model, test.images, test.labels, cases, repeats=args.repeats)
    header = (
        f"{args.n} MNIST test images, small_cnn, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}, "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}"
    )
    text = markdown(rows, header)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
