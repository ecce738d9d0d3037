"""multirobust side by side with torchattacks, Foolbox 3 and IBM ART, and the bare loop.

Same model, same images, matched settings (steps, step size, random start, loss), one process,
runs interleaved and repeated; the table gives images per second, the ratio to the bare
hand-written loop (bare time / attack time: 1.0 = no overhead beyond the passes themselves) and
strength: robust accuracy (lower = stronger) and, for the minimum-norm attacks (C&W ℓ2,
DeepFool), the success rate and the median distortion of the successful examples (lower =
stronger at equal success).

    python benchmarks/peers.py [--checkpoint CKPT] [--n 1000] [--n-min-norm 200] [--repeats 3]
                               [--json out.json] [--markdown out.md] [--only pgd-linf,cw-l2]

Minimum-norm attacks are unbounded: multirobust runs them through its minimum-norm contract
(``attacks.create_minimum_norm``, no radius); peers that need one get a radius no perturbation
in the box exceeds. They run on the first ``--n-min-norm`` images only, since some peers are
slow at them. An example
counts as a success only if it is classified correctly when clean and misclassified when the
returned point is evaluated again here; distortions are recomputed from the returned points.
A runner whose first (strength) run takes longer than ``--single-run-above`` seconds is timed
by that run alone (``timed_runs`` = 1 in the JSON, ``*`` in the table).

Peers come from the `bench` extra (`bash scripts/setup-venv.sh test,bench`); a peer that is not
installed is reported as missing, not silently dropped, and a peer without the attack is listed
as such. Without --checkpoint a small_cnn is trained for one epoch on 20,000 MNIST images
(MULTIROBUST_DATA, else ../shared/data).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
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
    """One matched attack setting.

    For the minimum-norm cases ``eps`` is a radius no perturbation in [0, 1] exceeds (l2 100,
    linf 1), for the peers that need one (multirobust's minimum-norm attacks take none),
    ``steps`` is the optimiser steps per value of c (C&W) or the linearisation steps at most
    (DeepFool), and ``step_size`` the Adam step size (C&W).
    """

    key: str
    title: str
    norm: str  # "linf" or "l2"
    eps: float
    steps: int
    step_size: float
    random_start: bool
    minimum_norm: bool = False
    binary_search_steps: int = 1  # C&W: values of c tried per example
    initial_const: float = 0.0  # C&W: the first c
    fixed_const: float = 0.0  # C&W: torchattacks' c (it has no search over c)
    confidence: float = 0.0  # C&W: κ
    overshoot: float = 0.0  # DeepFool: η
    candidates: int = 10  # DeepFool: classes considered, the true one included


CASES = {
    "fgsm": Case("fgsm", "FGSM linf 0.3", "linf", 0.3, 1, 0.3, False),
    "pgd-linf": Case("pgd-linf", "PGD-40 linf 0.3 (a=0.01)", "linf", 0.3, 40, 0.01, True),
    "pgd-l2": Case("pgd-l2", "PGD-40 l2 2.0 (a=0.1)", "l2", 2.0, 40, 0.1, True),
    "cw-l2": Case(
        "cw-l2",
        "C&W l2 5x100 (Adam 0.1, c0 0.01)",
        "l2",
        100.0,
        100,
        0.1,
        False,
        minimum_norm=True,
        binary_search_steps=5,
        initial_const=0.01,
        fixed_const=1.0,
    ),
    "deepfool-l2": Case(
        "deepfool-l2",
        "DeepFool l2 (50 steps, overshoot 0.02)",
        "l2",
        100.0,
        50,
        0.0,
        False,
        minimum_norm=True,
        overshoot=0.02,
    ),
    "deepfool-linf": Case(
        "deepfool-linf",
        "DeepFool linf (50 steps, overshoot 0.02)",
        "linf",
        1.0,
        50,
        0.0,
        False,
        minimum_norm=True,
        overshoot=0.02,
    ),
}

Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: Added to every DeepFool step's length in the bare loop (Foolbox's "numerical stability" term).
_DEEPFOOL_EXTRA = 1e-4


def available_peers() -> dict[str, bool]:
    """Which peer libraries import here."""
    mods = {"torchattacks": "torchattacks", "foolbox": "foolbox", "art": "art"}
    return {k: importlib.util.find_spec(m) is not None for k, m in mods.items()}


def sizes(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """(N,) ℓ∞ or ℓ2 norms of the perturbations ``delta`` (N, ...)."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


# ----------------------------------------------------------------------------- the bare loops
def bare(case: Case, generator_seed: int = 0) -> Runner:
    """The shortest correct loop doing the case's forward+backward passes."""
    if case.key.startswith("cw"):
        return bare_cw(case)
    if case.key.startswith("deepfool"):
        return bare_deepfool(case)

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


def bare_cw(case: Case) -> Runner:
    """C&W ℓ2 as in the paper, nothing more: binary_search_steps × steps Adam updates.

    The paper's map x' = (tanh w + 1)/2 from w0 = atanh((2x − 1)·(1 − 10⁻⁶)), the f6 margin, a
    constant step size, no early abort, the per-example search over c (×10 until a success,
    then bisection) and the smallest successful iterate kept: one forward and one backward pass
    per update and a few element-wise operations.
    """

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
        true = F.one_hot(y, model(x[:1]).shape[1]).bool()
        const = torch.full((n,), case.initial_const)
        lower, upper = torch.zeros(n), torch.full((n,), math.inf)
        best, best_d = x.clone(), torch.full((n,), math.inf)
        for _ in range(case.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=case.step_size)
            found = torch.zeros(n, dtype=torch.bool)
            for _ in range(case.steps):
                xa = (torch.tanh(w) + 1) / 2
                logits = model(xa)
                real = logits.gather(1, y.unsqueeze(1)).squeeze(1)
                other = logits.masked_fill(true, -math.inf).amax(1)
                marg = real - other
                dist = (xa - x).flatten(1).pow(2).sum(1)
                loss = (dist + const * (marg + case.confidence).clamp_min(0)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    adv = marg <= -case.confidence if case.confidence > 0 else marg < 0
                    better = adv & (dist < best_d)
                    best_d = torch.where(better, dist, best_d)
                    best = torch.where(better.view(-1, 1, 1, 1), xa, best)
                    found |= adv
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper.isinf(), const * 10, (lower + upper) / 2)
        return best.detach()

    return run


def bare_deepfool(case: Case) -> Runner:
    """Multi-class DeepFool as in the paper, batched: per iteration one forward pass of the
    whole batch and K − 1 backward passes (candidates by the clean logits), the accumulated
    step scaled by 1 + η and clipped to the box; finished examples are frozen but stay in the
    batch; it stops when all are misclassified or after ``steps`` iterations. No box awareness.

    Each step is made :data:`_DEEPFOOL_EXTRA` longer than the linearised distance, as in
    Foolbox: without it the clip to [0, 1] undoes part of every step on MNIST, the iterates
    approach the boundary geometrically without crossing it, and about 40% of the images are
    still correctly classified after 50 steps (the multiplicative overshoot does not help).
    """

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xa, r_tot = x.clone(), torch.zeros_like(x)
        cand: torch.Tensor | None = None
        for i in range(case.steps + 1):
            xg = xa.clone().requires_grad_(True)
            logits = model(xg)
            done = logits.argmax(1) != y
            if bool(done.all()) or i == case.steps:
                break
            lg = logits.detach()
            if cand is None:
                k = min(case.candidates, lg.shape[1]) - 1
                cand = lg.scatter(1, y.unsqueeze(1), -math.inf).topk(k, dim=1).indices
            diffs = logits.gather(1, cand) - logits.gather(1, y.unsqueeze(1))
            grads = []
            for j in range(diffs.shape[1]):
                retain = j + 1 < diffs.shape[1]
                (gj,) = torch.autograd.grad(diffs[:, j].sum(), xg, retain_graph=retain)
                grads.append(gj.flatten(1))
            with torch.no_grad():
                g, d = torch.stack(grads, 1), diffs.detach().abs()
                rows = torch.arange(x.shape[0])
                size = g.norm(dim=2) if case.norm == "l2" else g.abs().sum(2)  # dual norm
                dist = d / size.clamp_min(1e-12)
                best = dist.argmin(1)
                gb, length = g[rows, best], dist[rows, best] + _DEEPFOOL_EXTRA
                if case.norm == "l2":
                    r = (length / gb.norm(dim=1).clamp_min(1e-12)).unsqueeze(1) * gb
                else:
                    r = length.unsqueeze(1) * gb.sign()
                live = (~done).view(-1, 1, 1, 1)
                r_tot = r_tot + r.view_as(x) * live
                xa = torch.where(live, (x + (1 + case.overshoot) * r_tot).clamp(0, 1), xa)
        return xa.detach()

    return run


# ----------------------------------------------------------------------------- multirobust
def ours(case: Case, variant: str = "") -> Runner:
    """multirobust's attack for ``case``; ``variant`` picks the early-stop or paper-like rows.

    Minimum-norm cases use the minimum-norm contract (no radius); the others the fixed-ε one.
    """
    if case.minimum_norm:
        if case.key.startswith("cw"):
            opts: dict[str, object] = {
                "steps": case.steps,
                "binary_search_steps": case.binary_search_steps,
                "learning_rate": case.step_size,
                "initial_const": case.initial_const,
                "confidence": case.confidence,
            }
            if variant == "paper":
                opts.update(box_margin=0.0, lr_schedule="constant", abort_early=False)
        else:
            opts = {"steps": case.steps, "overshoot": case.overshoot, "candidates": case.candidates}
        smallest = attacks.create_minimum_norm(case.key, **opts)
        return lambda model, x, y: smallest(model, x, y).x_adv
    name = "fgsm" if case.key == "fgsm" else "pgd"
    opts = {"step_size": case.step_size, "random_start": case.random_start}
    if name == "pgd":
        opts.update(steps=case.steps, early_stop=variant == "early stop")
    atk = attacks.create(name, threat=f"{case.norm}:{case.eps:g}", **opts)
    return lambda model, x, y: atk(model, x, y).x_adv


# ----------------------------------------------------------------------------- peers
def torchattacks_runner(case: Case) -> Runner | None:
    import torchattacks

    if case.key == "deepfool-linf":
        return None  # torchattacks has ℓ2 DeepFool only

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if case.key == "fgsm":
            atk = torchattacks.FGSM(model, eps=case.eps)
        elif case.key == "cw-l2":
            # No search over c: one run at a fixed c, given the search's total step budget.
            atk = torchattacks.CW(
                model,
                c=case.fixed_const,
                kappa=case.confidence,
                steps=case.steps * case.binary_search_steps,
                lr=case.step_size,
            )
        elif case.key == "deepfool-l2":
            atk = torchattacks.DeepFool(model, steps=case.steps, overshoot=case.overshoot)
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


def foolbox_runner(case: Case) -> Runner | None:
    import foolbox as fb

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        eps: float | None = case.eps
        if case.key == "fgsm":
            atk = fb.attacks.FGSM(random_start=False)
        elif case.key == "cw-l2":
            atk = fb.attacks.L2CarliniWagnerAttack(
                binary_search_steps=case.binary_search_steps,
                steps=case.steps,
                stepsize=case.step_size,
                confidence=case.confidence,
                initial_const=case.initial_const,
                abort_early=True,
            )
            eps = None
        elif case.key.startswith("deepfool"):
            df = fb.attacks.L2DeepFoolAttack if case.norm == "l2" else fb.attacks.LinfDeepFoolAttack
            atk = df(steps=case.steps, candidates=case.candidates, overshoot=case.overshoot)
            eps = None
        elif case.norm == "linf":
            atk = fb.attacks.LinfPGD(
                abs_stepsize=case.step_size, steps=case.steps, random_start=case.random_start
            )
        else:
            atk = fb.attacks.L2PGD(
                abs_stepsize=case.step_size, steps=case.steps, random_start=case.random_start
            )
        _, clipped, _ = atk(fmodel, x, y, epsilons=eps)
        return clipped

    return run


def art_runner(case: Case) -> Runner | None:
    from art.attacks.evasion import (
        CarliniL2Method,
        DeepFool,
        FastGradientMethod,
        ProjectedGradientDescentPyTorch,
    )
    from art.estimators.classification import PyTorchClassifier

    if case.key == "deepfool-linf":
        return None  # ART's DeepFool is ℓ2 only

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
        atk: object
        if case.key == "fgsm":
            atk = FastGradientMethod(clf, norm=norm, eps=case.eps, batch_size=x.shape[0])
        elif case.key == "cw-l2":
            atk = CarliniL2Method(
                clf,
                confidence=case.confidence,
                learning_rate=case.step_size,
                binary_search_steps=case.binary_search_steps,
                max_iter=case.steps,
                initial_const=case.initial_const,
                batch_size=x.shape[0],
                verbose=False,
            )
        elif case.key == "deepfool-l2":
            # ART's ``epsilon`` is the overshoot, applied once to the final perturbation.
            atk = DeepFool(
                clf,
                max_iter=case.steps,
                epsilon=case.overshoot,
                nb_grads=case.candidates,
                batch_size=x.shape[0],
                verbose=False,
            )
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
        return torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))  # type: ignore[attr-defined]

    return run


def runners(case: Case, peers: dict[str, bool]) -> dict[str, Runner | None]:
    """Every runner of ``case`` by row name; None for a peer that has no such attack."""
    out: dict[str, Runner | None] = {"bare loop": bare(case)}
    out["multirobust"] = ours(case)
    if case.key.startswith("pgd"):
        out["multirobust (early stop)"] = ours(case, "early stop")
    if case.key.startswith("cw"):
        out["multirobust (paper map, constant lr, all steps)"] = ours(case, "paper")
    builders = {"torchattacks": torchattacks_runner, "foolbox": foolbox_runner, "art": art_runner}
    for peer, ok in peers.items():
        if ok:
            out[peer] = builders[peer](case)
    return out


# ----------------------------------------------------------------------------- measurement
def strength(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: str
) -> dict[str, object]:
    """Robust accuracy of ``x_adv``, and its successes re-evaluated here with their sizes.

    A success is an example classified correctly when clean and misclassified at ``x_adv``;
    ``success_rate`` is over the clean-correct examples, the norms over the successes.
    """
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        adv_ok = model(x_adv).argmax(1) == y
    size = sizes(x_adv - x, norm)
    fooled = clean_ok & ~adv_ok
    wins = [float(s) for s in size[fooled]]
    return {
        "robust_accuracy": float(adv_ok.float().mean()),
        "clean_accuracy": float(clean_ok.float().mean()),
        "successes": len(wins),
        "success_rate": len(wins) / max(int(clean_ok.sum()), 1),
        "median_norm": statistics.median(wins) if wins else None,
        "mean_norm": statistics.fmean(wins) if wins else None,
        "max_norm": float(size.max()),
        "finite": bool(torch.isfinite(x_adv).all()),
    }


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cases: list[Case],
    repeats: int = 3,
    *,
    n_min_norm: int | None = None,
    single_run_above: float = math.inf,
    outputs: dict[tuple[str, str], torch.Tensor] | None = None,
) -> list[dict[str, object]]:
    """Time every runner of every case (interleaved, median of ``repeats``), plus strength.

    Minimum-norm cases use the first ``n_min_norm`` images (all when None). A runner whose
    first run took more than ``single_run_above`` seconds is timed by that run alone. With
    ``outputs`` given, the returned points are stored there by (case title, library).
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    peers = available_peers()
    rows: list[dict[str, object]] = []
    for case in cases:
        n = x.shape[0] if not case.minimum_norm or n_min_norm is None else n_min_norm
        xs, ys = x[:n], y[:n]
        rs = runners(case, peers)
        live = {name: fn for name, fn in rs.items() if fn is not None}
        results: dict[str, torch.Tensor] = {}
        times: dict[str, list[float]] = {name: [] for name in live}
        once: set[str] = set()
        for name, fn in live.items():  # warm-up + strength
            start = time.perf_counter()
            results[name] = fn(model, xs, ys).detach().to(xs.dtype)
            first = time.perf_counter() - start
            if first > single_run_above:
                once.add(name)
                times[name].append(first)
        for _ in range(repeats):
            for name, fn in live.items():
                if name in once:
                    continue
                start = time.perf_counter()
                fn(model, xs, ys)
                times[name].append(time.perf_counter() - start)
        bare_t = statistics.median(times["bare loop"])
        for name in rs:
            if name not in live:
                rows.append({"case": case.title, "library": name, "unsupported": True})
                continue
            x_adv = results[name]
            if outputs is not None:
                outputs[(case.title, name)] = x_adv
            t = statistics.median(times[name])
            rows.append(
                {
                    "case": case.title,
                    "library": name,
                    "n": n,
                    "minimum_norm": case.minimum_norm,
                    "median_seconds": t,
                    "images_per_second": n / t,
                    "speed_vs_bare": bare_t / t,
                    **strength(model, xs, ys, x_adv, case.norm),
                    "timed_runs": len(times[name]),
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
        "| case | library | n | median s | img/s | speed vs bare | robust acc | success "
        "| median norm | max norm |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("missing"):
            lines.append(f"| — | {r['library']} | not installed | | | | | | | |")
            continue
        if r.get("unsupported"):
            lines.append(f"| {r['case']} | {r['library']} | no such attack | | | | | | | |")
            continue
        once = "*" if r["timed_runs"] == 1 and r["library"] != "bare loop" else ""
        med = r["median_norm"]
        med_s = "—" if med is None or not r["minimum_norm"] else f"{med:.4f}"
        lines.append(
            f"| {r['case']} | {r['library']} | {r['n']} | {r['median_seconds']:.3f}{once} | "
            f"{r['images_per_second']:.0f} | {r['speed_vs_bare']:.2f} | "
            f"{r['robust_accuracy']:.1%} | {r['success_rate']:.1%} | {med_s} | "
            f"{r['max_norm']:.4g} |"
        )
    return "\n".join(lines)


def main() -> None:
    from multirobust import data, models
    from multirobust.training import train_standard

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--n-min-norm",
        type=int,
        default=200,
        help="images for the minimum-norm cases (C&W, DeepFool): the first N of --n",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--single-run-above",
        type=float,
        default=120.0,
        help="seconds: a runner whose first run takes longer is timed by that run alone",
    )
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
    n_min = min(args.n_min_norm, args.n)
    started = time.perf_counter()
    rows = measure(
        model,
        test.images,
        test.labels,
        cases,
        repeats=args.repeats,
        n_min_norm=n_min,
        single_run_above=args.single_run_above,
    )
    header = (
        f"MNIST test images (first {args.n}; first {n_min} for C&W and DeepFool), "
        f"{Path(args.checkpoint).name if args.checkpoint else 'small_cnn, 1 epoch'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
        f"{args.repeats} after a warm-up (* = one run: the first took > "
        f"{args.single_run_above:g} s), {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    text = markdown(rows, header)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
