"""``certify``: certificates for a set of examples under several threats, by several methods.

Every method certifies every threat it can, and the union of the threats (certified when every
ball is). Randomized smoothing runs example by example (n0 + n noisy passes each), bound
propagation batch by batch. Each finished example (smoothing) or batch (bounds) can be saved to
a folder at once, atomically, and a rerun with the same settings picks them up (resume). Under
``torch.distributed`` the examples and batches are shared among the processes the way
:mod:`multirobust.evaluation.distributed` shares evaluation batches (item i on rank
i mod world size) and gathered with ``all_gather_object``; every item's noise comes from a
generator seeded from the run's seed and the item's index, never from the rank, so a sharded or
resumed run computes exactly what one uninterrupted process would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..atomic import write_json_atomic
from ..attacks.base import validate_inputs
from ..data import ImageDataset
from ..threats import LpBall, Threat, parse
from .ibp import as_ball
from .layers import flatten
from .noise import Noise, parse_noise
from .report import CertificationReport, MethodResult
from .smoothing import Smooth
from .stats import check_alpha, check_count
from .union import covered_eps, p_of
from .verify import check_method, verified_radius, verify

__all__ = ["certify", "fingerprint"]

log = logging.getLogger(__name__)


def _seed(*parts: Any) -> int:
    """A stable 31-bit seed from the parts (crc32 of their text: the same in every process)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, str]:
    """Hashes of the weights and the data, computed as ``multirobust.evaluate`` computes them,
    so a certification and an evaluation of the same model on the same examples match."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    d = hashlib.sha256()
    d.update(x.detach().cpu().contiguous().numpy().tobytes())
    d.update(y.detach().cpu().contiguous().numpy().tobytes())
    return {"model_sha256": h.hexdigest()[:16], "data_sha256": d.hexdigest()[:16]}


def _threats(threats: Sequence[Threat | str] | Threat | str) -> list[LpBall]:
    if isinstance(threats, str | Threat):
        threats = [threats]
    out: list[LpBall] = []
    for t in threats:
        parsed = parse(t)
        for m in parsed.members():
            ball = as_ball(m)
            if ball.eps <= 0:
                raise ValueError(f"Threat {ball} allows no perturbation (ε = 0); drop it")
            if str(ball) not in {str(o) for o in out}:
                out.append(ball)
    if not out:
        raise ValueError("No threats given (e.g. threats=['linf:0.1', 'l2:0.5'])")
    return out


def _rank_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: launch "
            "with torchrun (the command line joins the group itself)"
        )
    return dist.get_rank(), dist.get_world_size()


def _gather(obj: dict[int, Any], world: int) -> dict[int, Any]:
    if world == 1:
        return obj
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, obj)
    out: dict[int, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k in out:
                raise RuntimeError(f"Item {k} was certified by two ranks")
            out[k] = v
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


class _Store:
    """Per-item JSON files in ``folder/<method>/`` for resuming (or nothing without a folder)."""

    def __init__(self, folder: Path | None, settings: dict[str, Any]) -> None:
        self.folder = folder
        if folder is None:
            return
        keep = {k: v for k, v in settings.items() if k not in ("device", "world_size")}
        path = folder / "settings.json"
        if path.exists():
            old = json.loads(path.read_text())
            diff = sorted(k for k in set(old) | set(keep) if old.get(k) != keep.get(k))
            if diff:
                raise ValueError(
                    f"resume_dir {folder} holds results of a different certification (differs "
                    f"in: {', '.join(diff)}); use another folder or delete it"
                )
        else:
            write_json_atomic(path, keep)

    def get(self, method: str, item: int) -> Any | None:
        if self.folder is None:
            return None
        path = self.folder / _slug(method) / f"{item:06d}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, method: str, item: int, record: Any) -> None:
        if self.folder is not None:
            write_json_atomic(self.folder / _slug(method) / f"{item:06d}.json", record, indent=None)


def certify(
    model: nn.Module,
    data: torch.Tensor | ImageDataset,
    y: torch.Tensor | None = None,
    *,
    threats: Sequence[Threat | str] | Threat | str,
    smoothing: Sequence[Noise | str] = (),
    bounds: Sequence[str] = ("ibp",),
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    sequential: bool = False,
    batch_size: int = 1000,
    bound_batch_size: int = 100,
    radius_steps: int = 10,
    seed: int = 0,
    progress: bool = True,
    resume_dir: str | Path | None = None,
    distributed: bool = False,
    on_item: Callable[[int, int], None] | None = None,
) -> CertificationReport:
    """Certify ``model`` on examples under each threat and their union, by several methods.

    Randomized smoothing (Cohen et al. 2019; ℓ1 noises of Yang et al. 2020) certifies the
    smoothed classifier; a radius in the noise's norm covers the balls of the other norms it
    contains (:mod:`.union`). Bound propagation (IBP, Gowal et al. 2018; CROWN-IBP and CROWN,
    Zhang et al. 2018/2020) certifies the network itself, and also gives each example's
    verified radius per norm by bisection (not for full CROWN: too costly), for the curves.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        data: images ``(N, C, H, W)`` with ``y``, or an ImageDataset.
        y: labels ``(N,)`` when ``data`` is a tensor.
        threats: ℓ∞/ℓ2/ℓ1 balls (objects or text such as ``"l2:0.5"``).
        smoothing: noises to smooth with (``"gaussian:0.25"``, ``"uniform:1"``,
            ``"laplace:0.5"``); empty for none.
        bounds: bound methods (``"ibp"``, ``"crown-ibp"``, ``"crown"``); empty for none.
        n0, n, alpha: CERTIFY's selection samples, estimation samples and level.
        sequential: smoothing stops early once the threats' radii are decided
            (:meth:`Smooth.certify_sequential`, at most ``n`` estimation samples).
        batch_size: noisy copies per forward pass.
        bound_batch_size: examples per bound-propagation batch.
        radius_steps: bisection steps of the verified radii (0: no radii).
        seed: seed of all noise.
        progress: show progress bars.
        resume_dir: folder where each finished item is saved and picked up again.
        distributed: share the items among the ranks of the initialised process group; every
            rank must call with the same arguments and gets the same report.
        on_item: called as ``on_item(done, total)`` after each item of this rank.

    Returns:
        A :class:`CertificationReport`.

    Raises:
        ValueError: invalid settings (σ ≤ 0, n0 > n, α outside (0, 1), unknown method,
            threats that are not ℓp balls), NaN inputs or inputs outside [0, 1].
        UnsupportedLayerError: naming a layer bound propagation cannot pass (before any work).
    """
    t_start = time.perf_counter()
    rank, world = _rank_world(distributed)
    if isinstance(data, ImageDataset):
        x, labels = data.images, data.labels
    else:
        if y is None:
            raise ValueError("Labels y are required when the data is a tensor")
        x, labels = data, y
    validate_inputs(x, labels)
    balls = _threats(threats)
    noises = [parse_noise(s) for s in smoothing]
    methods = [check_method(m) for m in bounds]
    if not noises and not methods:
        raise ValueError("Nothing to certify with: give smoothing noises and/or bound methods")
    n0 = check_count(n0, "n0")
    n = check_count(n, "n")
    if n0 > n:
        raise ValueError(f"Invalid n0: {n0} > n = {n} (the selection samples n0 must be <= n)")
    alpha = check_alpha(alpha)
    batch_size = check_count(batch_size, "batch_size")
    bound_batch_size = check_count(bound_batch_size, "bound_batch_size")
    radius_steps = check_count(radius_steps, "radius_steps", minimum=0)
    if methods:
        flatten(model)  # an unsupported layer fails here, before any work
    device = next((p.device for p in model.parameters()), x.device)
    x, labels = x.to(device), labels.to(device=device, dtype=torch.long)
    count = x.shape[0]
    dim = int(x[0].numel())
    kinds = list(dict.fromkeys(b.name for b in balls))
    settings: dict[str, Any] = {
        "threats": [str(b) for b in balls],
        "smoothing": [str(s) for s in noises],
        "bounds": methods,
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "sequential": sequential,
        "batch_size": batch_size,
        "bound_batch_size": bound_batch_size,
        "radius_steps": radius_steps,
        "seed": seed,
        "n_examples": count,
        **fingerprint(model, x, labels),
        "dtype": str(x.dtype),
        "device": str(device),
        "world_size": world,
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if isinstance(data, ImageDataset):
        settings["dataset"] = data.name
        settings["split"] = data.split
    store = _Store(Path(resume_dir) if resume_dir is not None else None, settings)
    results: dict[str, MethodResult] = {}
    timings: dict[str, float] = {}
    lab = labels.tolist()

    for method in methods:
        t0 = time.perf_counter()
        results[method] = _run_bounds(
            model,
            x,
            labels,
            balls,
            kinds,
            method,
            bound_batch_size,
            radius_steps,
            store,
            rank,
            world,
            progress,
            on_item,
        )
        results[method].seconds = time.perf_counter() - t0
        timings[method] = results[method].seconds
    for noise in noises:
        t0 = time.perf_counter()
        name = f"smoothing {noise}"
        results[name] = _run_smoothing(
            model,
            x,
            lab,
            balls,
            kinds,
            noise,
            n0,
            n,
            alpha,
            sequential,
            batch_size,
            seed,
            store,
            rank,
            world,
            progress,
            on_item,
            dim,
        )
        results[name].seconds = time.perf_counter() - t0
        timings[name] = results[name].seconds
    timings["total"] = time.perf_counter() - t_start
    return CertificationReport(
        n=count,
        labels=lab,
        threats=[str(b) for b in balls],
        dim=dim,
        methods=results,
        timings=timings,
        settings=settings,
    )


def _run_bounds(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    balls: list[LpBall],
    kinds: list[str],
    method: str,
    batch: int,
    radius_steps: int,
    store: _Store,
    rank: int,
    world: int,
    progress: bool,
    on_item: Callable[[int, int], None] | None,
) -> MethodResult:
    count = x.shape[0]
    starts = list(range(0, count, batch))
    mine = list(range(rank, len(starts), world))
    with_radius = radius_steps > 0 and method != "crown"
    done: dict[int, Any] = {}
    saved = {b: r for b in mine if (r := store.get(method, b)) is not None}
    bar = tqdm(
        total=sum(min(batch, count - starts[b]) for b in mine),
        initial=sum(min(batch, count - starts[b]) for b in saved),
        desc=method,
        unit="img",
        disable=not progress or rank != 0,
        leave=False,
    )
    for k, b in enumerate(mine):
        s = starts[b]
        record = saved.get(b)
        if record is None:
            xb, yb = x[s : s + batch], labels[s : s + batch]
            record = {
                "certified": {str(t): verify(model, xb, yb, t, method).tolist() for t in balls},
                "radius": {},
            }
            if with_radius:
                for kind in kinds:
                    top = 2 * max(t.eps for t in balls if t.name == kind)
                    r = verified_radius(
                        model, xb, yb, kind, method=method, upper=top, steps=radius_steps
                    )
                    record["radius"][kind] = r.tolist()
            store.put(method, b, record)
            bar.update(min(batch, count - s))
        done[b] = record
        if on_item is not None:
            on_item(k + 1, len(mine))
    bar.close()
    merged = _gather(done, world)
    records = [merged[b] for b in range(len(starts))]
    certified = {str(t): [v for r in records for v in r["certified"][str(t)]] for t in balls}
    radius: dict[str, list[float] | None] = {
        kind: ([v for r in records for v in r["radius"][kind]] if with_radius else None)
        for kind in kinds
    }
    return MethodResult(
        name=method,
        kind="bounds",
        classifier="base",
        settings={"method": method, "radius_steps": radius_steps if with_radius else 0},
        certified=certified,
        radius=radius,
    )


def _run_smoothing(
    model: nn.Module,
    x: torch.Tensor,
    labels: list[int],
    balls: list[LpBall],
    kinds: list[str],
    noise: Noise,
    n0: int,
    n: int,
    alpha: float,
    sequential: bool,
    batch_size: int,
    seed: int,
    store: _Store,
    rank: int,
    world: int,
    progress: bool,
    on_item: Callable[[int, int], None] | None,
    dim: int,
) -> MethodResult:
    name = f"smoothing {noise}"
    smooth = Smooth(model, noise, batch_size=batch_size)
    count = x.shape[0]
    mine = list(range(rank, count, world))
    # The radius each threat needs in the noise's norm (certificates cover other norms'
    # balls through the norm inequalities).
    targets = sorted({t.eps / covered_eps(noise.norm, 1.0, t.p, dim) for t in balls})
    # Saved items count as the bar's start, not as one jump: a jump of millions of samples
    # would teach tqdm a rate that keeps the bar from redrawing for minutes.
    saved = {i: r for i in mine if (r := store.get(name, i)) is not None}
    bar = tqdm(
        total=len(mine) * (n0 + n),
        initial=len(saved) * (n0 + n),
        desc=name,
        unit="sample",
        unit_scale=True,
        disable=not progress or rank != 0,
        leave=False,
    )
    done: dict[int, Any] = {}
    for k, i in enumerate(mine):
        record = saved.get(i)
        if record is None:
            gen = torch.Generator(device=x.device).manual_seed(_seed(seed, noise, i))
            xi = x[i : i + 1]
            if sequential:
                res = smooth.certify_sequential(
                    xi,
                    targets,
                    n0=n0,
                    n_start=min(100, n),
                    n_max=n,
                    alpha=alpha,
                    futility_alpha=alpha,
                    generator=gen,
                    on_samples=bar.update,
                )
            else:
                res = smooth.certify(
                    xi, n0=n0, n=n, alpha=alpha, generator=gen, on_samples=bar.update
                )
            record = {
                "prediction": res.prediction[0],
                "radius": res.radius[0],
                "p_lower": res.p_lower[0],
                "samples": res.samples[0],
                "cap": res.cap,
            }
            store.put(name, i, record)
        done[i] = record
        if on_item is not None:
            on_item(k + 1, len(mine))
    bar.close()
    merged = _gather(done, world)
    records = [merged[i] for i in range(count)]
    right = [r["prediction"] == y for r, y in zip(records, labels, strict=True)]
    native = [r["radius"] if ok else -1.0 for r, ok in zip(records, right, strict=True)]
    radius: dict[str, list[float] | None] = {
        kind: [covered_eps(noise.norm, r, p_of(kind), dim) if r >= 0 else -1.0 for r in native]
        for kind in kinds
    }
    certified = {
        str(t): [r >= 0 and covered_eps(noise.norm, r, t.p, dim) >= t.eps for r in native]
        for t in balls
    }
    cap_native = records[0]["cap"] if records else noise.radius_cap(n, alpha)
    return MethodResult(
        name=name,
        kind="smoothing",
        classifier="smoothed",
        settings={
            "noise": str(noise),
            "norm": noise.norm,
            "n0": n0,
            "n": n,
            "alpha": alpha,
            "sequential": sequential,
            "targets": targets if sequential else None,
        },
        certified=certified,
        radius=radius,
        cap={kind: covered_eps(noise.norm, cap_native, p_of(kind), dim) for kind in kinds},
        prediction=[int(r["prediction"]) for r in records],
        p_lower=[float(r["p_lower"]) for r in records],
        samples=[int(r["samples"]) for r in records],
    )
