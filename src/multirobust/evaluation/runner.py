"""``evaluate``: per-example worst case over an attack ensemble, per threat and over the union.

For each batch and each threat model, the ensemble's attacks run cheapest first, each only on
the examples still robust under that threat. Every threat is evaluated on all clean-correct
examples (an example broken under ℓ∞ is still attacked under ℓ2), so per-threat numbers are
exact and equal those of evaluating that threat alone; the union is robust under every threat.
Each (batch, threat, attack) draws its randomness from its own generator, seeded from the run's
seed and its position, which makes a resumed run give the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import platform
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import __version__, attacks
from ..data import ImageDataset
from ..robustness import minimal as _minimal
from ..threats import Affine, LpBall, Spatial, Threat, Union, parse
from . import checks as _checks
from . import distributed as _dist
from . import presets
from .passes import PassCounter
from .report import AdversarialExample, Check, EvaluationReport, ThreatOutcome, write_atomic

log = logging.getLogger(__name__)

#: Clean inputs used by the pre-attack checks.
PROBE_SIZE = 64
#: Examples attacked at a large ε by the ``large-eps-not-zero`` check.
LARGE_EPS_SAMPLE = 100
#: Robust examples re-attacked with twice the steps by the ``more-steps-lower-accuracy`` check.
MORE_STEPS_SAMPLE = 50

DataArg = torch.Tensor | ImageDataset | DataLoader[Any]


def _seed(*parts: Any) -> int:
    """A stable 31-bit seed from the parts (crc32 of their text: same in every process)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def _as_tensors(data: DataArg, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from tensors, an ImageDataset or a DataLoader of (x, y) batches."""
    if isinstance(data, ImageDataset):
        return data.images, data.labels
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, list | tuple) or len(batch) < 2:
                raise TypeError("The DataLoader must yield (images, labels) batches")
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ValueError("The DataLoader yielded no batches")
        return torch.cat(xs), torch.cat(ys)
    if isinstance(data, torch.Tensor):
        if y is None:
            raise ValueError("Labels y are required when the data is a tensor")
        return data, y
    raise TypeError(
        "Data must be a tensor (with y), an ImageDataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def _threat_list(threats: Sequence[Threat | str] | Threat | str) -> list[Threat]:
    """Parse the threats; a union contributes its members (the union is always reported)."""
    if isinstance(threats, str | Threat):
        threats = [threats]
    out: list[Threat] = []
    for t in threats:
        parsed = parse(t)
        for m in parsed.threats if isinstance(parsed, Union) else (parsed,):
            if m.is_trivial:
                raise ValueError(f"Threat {m} allows no perturbation (ε = 0); drop it")
            if str(m) not in {str(o) for o in out}:
                out.append(m)
    if not out:
        raise ValueError("No threats given (e.g. threats=['linf:0.3', 'l2:2'])")
    return out


def _fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, str]:
    """Hashes identifying the model weights and the data, for safe resuming."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    d = hashlib.sha256()
    d.update(x.detach().cpu().contiguous().numpy().tobytes())
    d.update(y.detach().cpu().contiguous().numpy().tobytes())
    return {"model_sha256": h.hexdigest()[:16], "data_sha256": d.hexdigest()[:16]}


def _u8(image: torch.Tensor) -> str:
    return base64.b64encode(
        (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    ).decode()


def _params_row(threat: Threat, params: Any, i: int) -> list[float] | None:
    if isinstance(threat, Spatial) and isinstance(params, torch.Tensor):
        return [float(v) for v in params[i].tolist()]
    if isinstance(threat, Affine) and isinstance(params, tuple):
        return [float(params[0][i])]
    return None


def _attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
    clean_probs: torch.Tensor,
    threat: Threat,
    specs: list[presets.AttackSpec],
    *,
    seed: int,
    batch_index: int,
    keep_examples: int,
    offset: int,
) -> dict[str, Any]:
    """Run the ensemble for one threat on one batch. Returns the batch's JSON-ready record."""
    n = x.shape[0]
    robust = correct.clone()
    broken_by: list[str | None] = [None] * n
    norms: list[float | None] = [None] * n
    params: list[list[float] | None] = [None] * n
    queries = 0
    outside: dict[str, int] = {}
    errors: dict[str, str] = {}
    examples: list[dict[str, Any]] = []
    start = time.perf_counter()
    passes_before = model.counts() if isinstance(model, PassCounter) else (0, 0)
    for spec in specs:
        rows = robust.nonzero().flatten()
        if rows.numel() == 0:
            break
        attack = spec.build(threat, seed=0)
        gen = torch.Generator(device=x.device).manual_seed(
            _seed(seed, threat, batch_index, spec.label)
        )
        try:
            res = attack(model, x[rows], y[rows], generator=gen)
        except RuntimeError as err:
            text = str(err)
            if "outside" in text:
                outside[spec.label] = outside.get(spec.label, 0) + int(rows.numel())
            else:
                errors[spec.label] = text.splitlines()[0]
            log.warning("attack %s under %s failed: %s", spec.label, threat, text.splitlines()[0])
            continue
        queries += res.queries
        inside = threat.contains(res.x_adv, x[rows], atol=1e-4, params=res.params)
        bad = res.success & ~inside
        if bool(bad.any()):
            outside[spec.label] = outside.get(spec.label, 0) + int(bad.sum())
        hit = (res.success & inside).nonzero().flatten()
        if hit.numel() == 0:
            continue
        robust[rows[hit]] = False
        adv_probs = res.logits.float().softmax(1)
        norm_cpu = res.norm.double().cpu()
        for j in hit.tolist():
            i = int(rows[j])
            broken_by[i] = spec.label
            v = float(norm_cpu[j])
            norms[i] = None if math.isnan(v) else v
            params[i] = _params_row(threat, res.params, j)
            if len(examples) < keep_examples:
                adv_pred = int(adv_probs[j].argmax())
                examples.append(
                    asdict(
                        AdversarialExample(
                            index=offset + i,
                            threat=str(threat),
                            attack=spec.label,
                            label=int(y[i]),
                            clean_pred=int(clean_probs[i].argmax()),
                            clean_conf=float(clean_probs[i].max()),
                            adv_pred=adv_pred,
                            adv_conf=float(adv_probs[j, adv_pred]),
                            shape=list(x.shape[1:]),
                            clean_u8=_u8(x[i]),
                            adv_u8=_u8(res.x_adv[j]),
                        )
                    )
                )
    passes_after = model.counts() if isinstance(model, PassCounter) else (0, 0)
    return {
        "robust": robust.tolist(),
        "broken_by": broken_by,
        "norm": norms,
        "params": params,
        "queries": queries,
        "forward_passes": passes_after[0] - passes_before[0],
        "backward_passes": passes_after[1] - passes_before[1],
        "seconds": time.perf_counter() - start,
        "outside": outside,
        "errors": errors,
        "examples": examples,
    }


def evaluate(
    model: nn.Module,
    data: DataArg,
    y: torch.Tensor | None = None,
    *,
    threats: Sequence[Threat | str] | Threat | str,
    preset: str | presets.Preset = "standard",
    batch_size: int = 500,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    resume_dir: str | Path | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    run_checks: bool = True,
    examples_per_threat: int = 8,
    distributed: bool = False,
    min_norm: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate ``model``'s robustness under each threat and their union, with checks.

    Implements the per-example worst case over an attack ensemble (AutoAttack, Croce & Hein
    2020, plus spatial grid search and affine attacks) and the checklist of Carlini et al.
    (2019), "On Evaluating Adversarial Robustness".

    Args:
        model: classifier returning logits for inputs in [0, 1] (probabilities are detected,
            reported and attacked through ``log p``).
        data: images (N, C, H, W) in [0, 1] with ``y``, an ImageDataset or a DataLoader.
        y: labels (N,) when ``data`` is a tensor.
        threats: threat models (objects or text such as ``"linf:0.3"``); a union contributes
            its members, and the union of all of them is always reported.
        preset: ``"quick"``, ``"standard"``, ``"thorough"`` or a :class:`Preset`.
        batch_size: examples attacked together.
        seed: seed of every random choice; a ``generator`` given instead provides the seed.
        progress: show a progress bar.
        resume_dir: folder where each finished batch is saved; a run with the same settings
            picks up the finished batches from there instead of recomputing them.
        on_batch: called as ``on_batch(batches_done, batches_total)`` after each batch (the
            batches of this rank when ``distributed``).
        run_checks: run the post-hoc checks (large ε, more steps) besides the cheap ones.
        examples_per_threat: clean/adversarial pairs kept per threat for the report's pictures.
        distributed: shard the batches over the ranks of the initialised ``torch.distributed``
            group (batch b on rank b mod world size; see :mod:`.distributed`) and gather the
            results; every rank must call ``evaluate`` with the same arguments and gets the
            same report, equal to a single process's. The post-hoc checks run on rank 0.
        min_norm: norms (``"linf"``, ``"l2"``, ``"l1"``) whose per-example minimal adversarial
            distortion is searched after the attacks (:func:`multirobust.robustness.
            minimal_distortion`, APGD with the margin loss and the preset's steps) and stored
            in ``report.minimal_distortion``; on rank 0 when distributed.

    Returns:
        An :class:`EvaluationReport`.
    """
    t_start = time.perf_counter()
    shard = _dist.require(distributed)
    x, labels = _as_tensors(data, y)
    attacks.base.validate_inputs(x, labels)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size!r} (must be an integer >= 1)")
    if generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    threat_list = _threat_list(threats)
    chosen = presets.get(preset)
    min_norms = _minimal.check_norms(min_norm)
    device = next((p.device for p in model.parameters()), x.device)
    x, labels = x.to(device), labels.to(device=device, dtype=torch.long)
    n = x.shape[0]

    was_training = [m.training for m in model.modules()]
    model.eval()
    try:
        # ---------------------------------------------------------------- pre-attack checks
        t0 = time.perf_counter()
        probe = _checks.probe_model(model, x[:PROBE_SIZE], labels[:PROBE_SIZE])
        attacked: nn.Module = _checks.LogProbabilities(model) if probe.probabilities else model
        if int(labels.max()) >= probe.num_classes:
            raise ValueError(
                f"Labels out of range: max {int(labels.max())}, the model has "
                f"{probe.num_classes} classes"
            )
        ensembles = {}
        for t in threat_list:
            specs = chosen.attacks_for(t, probe.num_classes)
            if not probe.gradients_available:
                specs = [s for s in specs if not s.white_box] or specs
            ensembles[str(t)] = specs
        timings = {"checks_before": time.perf_counter() - t0}
        settings = {
            "threats": [str(t) for t in threat_list],
            "preset": asdict(chosen),
            "attacks": {
                k: [{"label": s.label, "attack": s.attack, "options": s.options} for s in v]
                for k, v in ensembles.items()
            },
            "batch_size": batch_size,
            "seed": seed,
            "n": n,
            "model": type(model).__name__,
            "attacked_log_probabilities": probe.probabilities,
            **_fingerprint(model, x, labels),
            "dtype": str(x.dtype),
            "device": str(device),
            "world_size": shard.world_size,
            "multirobust": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if isinstance(data, ImageDataset):
            settings["dataset"] = data.name
            settings["split"] = data.split
            settings["class_names"] = list(data.class_names)

        # ---------------------------------------------------------------- batches
        folder = Path(resume_dir) if resume_dir is not None else None
        if folder is not None:
            _prepare_resume(folder, settings)
        starts = list(range(0, n, batch_size))
        mine = shard.batches(len(starts))
        done: dict[int, dict[str, Any]] = {}
        counted = PassCounter(attacked)
        bar = tqdm(
            total=sum(min(batch_size, n - starts[b]) for b in mine),
            desc="evaluate",
            unit="img",
            disable=not progress or not shard.is_main,
            leave=False,
        )
        t0 = time.perf_counter()
        for k, b in enumerate(mine):
            s = starts[b]
            path = folder / f"batch_{b:05d}.json" if folder is not None else None
            if path is not None and path.exists():
                record = json.loads(path.read_text())
            else:
                record = _run_batch(
                    counted,
                    x[s : s + batch_size],
                    labels[s : s + batch_size],
                    threat_list,
                    ensembles,
                    seed=seed,
                    batch_index=b,
                    offset=s,
                    keep_examples=examples_per_threat,
                )
                record["rank"] = shard.rank  # who computed it (a resumed batch keeps its own)
                if path is not None:
                    write_atomic(path, json.dumps(record))
            done[b] = record
            bar.update(min(batch_size, n - s))
            if on_batch is not None:
                on_batch(k + 1, len(mine))
        bar.close()
        gathered = _dist.merge(_dist.all_gather(done, shard))
        records = [gathered[b] for b in range(len(starts))]
        timings["attacks"] = time.perf_counter() - t0

        report = _assemble(records, threat_list, ensembles, labels, examples_per_threat)
        report.checks = list(probe.checks) + report.checks
        if run_checks:
            t0 = time.perf_counter()
            post = (
                _post_checks(attacked, x, labels, report, threat_list, ensembles, seed, probe)
                if shard.is_main
                else []
            )
            report.checks += _dist.broadcast(post, shard)
            timings["checks_after"] = time.perf_counter() - t0
        if min_norms:
            t0 = time.perf_counter()
            options = {"loss": "margin", "steps": chosen.steps}
            found = {
                norm: _minimal.minimal_distortion(
                    attacked,
                    x,
                    labels,
                    norm,
                    attack_options=options,
                    batch_size=batch_size,
                    seed=_seed(seed, "minimal", norm),
                ).to_dict()
                for norm in (min_norms if shard.is_main else [])
            }
            report.minimal_distortion = _dist.broadcast(found, shard)
            settings["min_norm"] = {"norms": min_norms, "attack": "apgd", "options": options}
            timings["minimal_distortion"] = time.perf_counter() - t0
    finally:
        for m, mode in zip(model.modules(), was_training, strict=True):
            m.training = mode
    timings["total"] = time.perf_counter() - t_start
    report.timings = timings
    report.settings = settings
    return report


def _run_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat_list: list[Threat],
    ensembles: dict[str, list[presets.AttackSpec]],
    *,
    seed: int,
    batch_index: int,
    offset: int,
    keep_examples: int,
) -> dict[str, Any]:
    with torch.no_grad():
        logits = model(x).float()
    correct = logits.argmax(1) == y
    probs = logits.softmax(1)
    per_threat = {
        str(t): _attack_batch(
            model,
            x,
            y,
            correct,
            probs,
            t,
            ensembles[str(t)],
            seed=seed,
            batch_index=batch_index,
            keep_examples=keep_examples,
            offset=offset,
        )
        for t in threat_list
    }
    return {
        "labels": y.tolist(),
        "clean_pred": logits.argmax(1).tolist(),
        "clean_correct": correct.tolist(),
        "threats": per_threat,
    }


def _prepare_resume(folder: Path, settings: dict[str, Any]) -> None:
    """Create ``folder`` or check that the results in it come from the same settings."""
    # Batches do not depend on the device or on how many processes share them.
    keep = {k: v for k, v in settings.items() if k not in ("device", "world_size")}
    path = folder / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(keep) if old.get(k) != keep.get(k))
        if diff:
            raise ValueError(
                f"resume_dir {folder} holds results of a different evaluation (differs in: "
                f"{', '.join(diff)}); use another folder or delete it"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(keep, indent=1))


def _assemble(
    records: list[dict[str, Any]],
    threat_list: list[Threat],
    ensembles: dict[str, list[presets.AttackSpec]],
    labels: torch.Tensor,
    examples_per_threat: int,
) -> EvaluationReport:
    """Concatenate batch records into a report (checks derived from outcomes included)."""
    clean_correct = [c for r in records for c in r["clean_correct"]]
    n = len(clean_correct)
    outcomes: dict[str, ThreatOutcome] = {}
    examples: list[AdversarialExample] = []
    found: list[Check] = []
    for t in threat_list:
        key = str(t)
        parts = [r["threats"][key] for r in records]
        outcome = ThreatOutcome(
            threat=key,
            attacks=[s.label for s in ensembles[key]],
            robust=[v for p in parts for v in p["robust"]],
            broken_by=[v for p in parts for v in p["broken_by"]],
            norm=[v for p in parts for v in p["norm"]],
            params=[v for p in parts for v in p["params"]],
            queries=sum(p["queries"] for p in parts),
            forward_passes=sum(p.get("forward_passes", 0) for p in parts),
            backward_passes=sum(p.get("backward_passes", 0) for p in parts),
            seconds=sum(p["seconds"] for p in parts),
        )
        outcomes[key] = outcome
        kept = [AdversarialExample(**e) for p in parts for e in p["examples"]]
        examples += kept[:examples_per_threat]
        outside: dict[str, int] = {}
        errors: dict[str, str] = {}
        for p in parts:
            for k, v in p["outside"].items():
                outside[k] = outside.get(k, 0) + v
            errors.update(p["errors"])
        specs = ensembles[key]
        bb = _checks.black_box_check(
            key,
            outcome.broken_by,
            [s.label for s in specs if s.white_box],
            [s.label for s in specs if not s.white_box],
            sum(clean_correct),
        )
        for c in (bb, _checks.outside_check(key, outside)):
            if c is not None:
                found.append(c)
        if errors:
            found.append(
                Check(
                    "attack-errors",
                    "Some attacks raised errors and were skipped for this threat; the numbers "
                    "rest on the others.",
                    {"errors": errors},
                    key,
                )
            )
    report = EvaluationReport(
        n=n,
        clean_accuracy=sum(clean_correct) / max(n, 1),
        robust_accuracy={k: o.robust_accuracy for k, o in outcomes.items()},
        union_accuracy=0.0,
        labels=[v for r in records for v in r["labels"]],
        clean_pred=[v for r in records for v in r["clean_pred"]],
        clean_correct=clean_correct,
        threats=outcomes,
        checks=found,
        examples=examples,
    )
    report.union_accuracy = sum(report.union_robust) / max(n, 1)
    return report


def _post_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    report: EvaluationReport,
    threat_list: list[Threat],
    ensembles: dict[str, list[presets.AttackSpec]],
    seed: int,
    probe: _checks.Probe,
) -> list[Check]:
    """The checks that need extra attacks: a large ε, and twice the steps."""
    found: list[Check] = []
    correct = torch.tensor(report.clean_correct, device=x.device)
    dim = int(x[0].numel())
    kinds = sorted({t.name for t in threat_list if isinstance(t, LpBall)})
    sample = correct.nonzero().flatten()[:LARGE_EPS_SAMPLE]
    for kind in kinds:
        if sample.numel() == 0 or not probe.gradients_available:
            break
        big = _checks.large_eps_threat(kind, dim)
        attack = attacks.create("pgd", threat=big, steps=20, loss="ce")
        gen = torch.Generator(device=x.device).manual_seed(_seed(seed, "large-eps", big))
        res = attack(model, x[sample], y[sample], generator=gen)
        c = _checks.large_eps_check(
            big, int(res.robust.sum()), int(sample.numel()), "pgd (ce, 20 steps)"
        )
        if c is not None:
            found.append(c)
    for t in threat_list:
        key = str(t)
        white = [s for s in ensembles[key] if s.white_box and "steps" in s.options]
        robust = torch.tensor(report.threats[key].robust, device=x.device)
        rows = robust.nonzero().flatten()[:MORE_STEPS_SAMPLE]
        if not white or rows.numel() == 0:
            continue
        spec = white[-1]
        options = {**spec.options, "steps": 2 * int(spec.options["steps"])}
        attack = attacks.create(spec.attack, threat=t, **options)
        gen = torch.Generator(device=x.device).manual_seed(_seed(seed, "more-steps", key))
        try:
            res = attack(model, x[rows], y[rows], generator=gen)
        except RuntimeError:
            continue
        inside = t.contains(res.x_adv, x[rows], atol=1e-4, params=res.params)
        broken = int((res.success & inside).sum())
        c = _checks.more_steps_check(
            key, spec.label, options["steps"], broken, int(rows.numel()), options
        )
        if c is not None:
            found.append(c)
    return found


def union_of(threats: Iterable[Threat | str]) -> Union:
    """The union of ``threats`` (members of nested unions flattened)."""
    return Union(_threat_list(list(threats)))
