"""``fit``: the training loop behind ``multirobust train``, with checkpoints and exact resume.

Every epoch: train on shuffled batches with the configured method, measure clean and PGD
robust accuracy on a held-out split, append the metrics to ``log.jsonl`` and ``log.csv`` (and
to TensorBoard when it is installed), then write ``checkpoint.pt`` atomically with the
optimiser, schedule, method and RNG states. ``fit(config, resume=True)`` continues from that
checkpoint and ends with exactly the weights an uninterrupted run would have (same seed,
same machine and thread count); an epoch interrupted part-way is redone from its start.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import data, models
from .config import ConfigError, TrainConfig
from .methods import BatchStep, get_method
from .overfitting import OverfittingDetector, robust_accuracy

__all__ = ["FitResult", "fit", "make_schedule"]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FINAL = "model.pt"
# Settings that may change between a run and its resumption without changing the result.
_RESUME_FREE = ("out", "progress", "data_root", "download")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the best one when early stopping kicked in), in eval mode.
        out: the output folder; ``out / "model.pt"`` is the final checkpoint.
        history: one metrics dict per epoch, as in ``log.jsonl``.
        stopped_early: True when catastrophic overfitting stopped the run.
        best_epoch: the epoch (1-based) with the highest held-out union robust accuracy.
    """

    model: nn.Module
    out: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int = 0


def make_schedule(name: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of the step number.

    Args:
        name: ``"piecewise"`` (1, then 0.1 from 50% of the steps, 0.01 from 75%; Madry et al.
            2018, Rice et al. 2020), ``"onecycle"`` (linear 0 → 1 over the first 40% of the
            steps, then 1 → 0; Wong et al. 2020) or ``"constant"``.
        total_steps: optimiser-schedule steps in the whole run (>= 1).

    Returns:
        ``f(step) -> multiplier`` for ``torch.optim.lr_scheduler.LambdaLR``.
    """
    total = max(int(total_steps), 1)
    if name == "piecewise":
        return lambda s: 1.0 if s < 0.5 * total else (0.1 if s < 0.75 * total else 0.01)
    if name == "onecycle":
        peak = 0.4 * total
        return lambda s: max(0.0, s / peak if s <= peak else (total - s) / (total - peak))
    if name == "constant":
        return lambda s: 1.0
    raise ValueError(f"Unknown schedule {name!r} (available: constant, onecycle, piecewise)")


# --------------------------------------------------------------------------- RNG states


def _rng_state(shuffle: torch.Generator, attack: torch.Generator) -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    np_key, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "attack": attack.get_state(),
        "python": [version, list(keys), gauss],
        "numpy": {
            "key": str(np_key),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
    }


def _set_rng_state(
    state: dict[str, Any], shuffle: torch.Generator, attack: torch.Generator
) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    attack.set_state(state["attack"])
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["key"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )


# --------------------------------------------------------------------------- logs


def _append_logs(out: Path, row: dict[str, Any], writer: Any) -> None:
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    csv_path = out / "log.csv"
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    with csv_path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()


def _truncate_logs(out: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Drop log rows written after the checkpoint's epoch; return the rows kept."""
    kept: list[dict[str, Any]] = []
    path = out / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if int(row.get("epoch", 0)) <= last_epoch:
                    kept.append(row)
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    csv_path = out / "log.csv"
    if csv_path.exists():
        csv_path.unlink()
    for row in kept:
        _append_logs_csv_only(out, row)
    return kept


def _append_logs_csv_only(out: Path, row: dict[str, Any]) -> None:
    csv_path = out / "log.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging off: torch.utils.tensorboard needs the tensorboard package")
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


# --------------------------------------------------------------------------- fit


def _prepare(cfg: TrainConfig) -> tuple[data.ImageDataset, data.ImageDataset, list[nn.Module]]:
    """Load everything a run needs, turning every failure into a ConfigError."""
    cfg.validate(check_data=False)
    try:
        train = data.load(
            cfg.dataset, "train", root=cfg.data_root, download=cfg.download, limit=cfg.limit
        )
        held_out = data.load(
            cfg.dataset, "test", root=cfg.data_root, download=cfg.download, limit=cfg.eval_n
        )
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"Dataset {cfg.dataset!r} unavailable: {err}") from None
    static: list[nn.Module] = []
    for path in cfg.static_models:
        try:
            static.append(models.load(path).eval())
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"Invalid static_models: {err}") from None
    return train, held_out, static


def fit(
    config: TrainConfig | dict[str, Any],
    *,
    resume: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train a model as ``config`` says, writing checkpoints and logs to ``config.out``.

    The configuration, the dataset files and any static models are all checked before the
    first batch, so a bad setting fails at once with a :class:`ConfigError`. Seeds: the model
    is initialised from ``torch.manual_seed(seed)`` (the global generator is seeded, as is
    Python's ``random`` and NumPy's), shuffling and attacks use their own generators.

    Outputs in ``out``: ``checkpoint.pt`` (every epoch, with optimiser, schedule, method and
    RNG states), ``best.pt`` (weights with the best held-out union robust accuracy so far),
    ``model.pt`` (final weights; the best ones when catastrophic overfitting stopped the
    run), ``log.jsonl`` and ``log.csv`` (one row per epoch), ``tensorboard/`` if available.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        resume: continue from ``out/checkpoint.pt`` (starting fresh if there is none).
        on_batch: called as ``on_batch(epoch, step)`` after every training step (epoch is
            1-based, step counts all steps of the run); an exception it raises stops the run,
            leaving the last epoch's checkpoint to resume from.

    Returns:
        A :class:`FitResult`.

    Raises:
        ConfigError: for an invalid configuration, missing data, an output folder holding a
            checkpoint when ``resume`` is False, or a checkpoint from other settings.
    """
    cfg = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    train, held_out, static = _prepare(cfg)
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ConfigError(
            f"{out} already holds a training checkpoint: resume it (--resume) or choose "
            "another output folder"
        )
    saved: dict[str, Any] | None = None
    if resume and ckpt_path.exists():
        saved = models.read_checkpoint(ckpt_path)
        before = saved["metadata"].get("config", {})
        now = cfg.to_dict()
        changed = sorted(
            k for k in now if k not in _RESUME_FREE and before.get(k, now[k]) != now[k]
        )
        if changed:
            raise ConfigError(
                f"Cannot resume {ckpt_path}: settings differ from the interrupted run "
                f"({', '.join(f'{k}: {before.get(k)!r} -> {now[k]!r}' for k in changed)})"
            )
    elif resume:
        log.warning("no checkpoint in %s: starting a fresh run", out)

    method = get_method(cfg.method)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = models.for_dataset(cfg.arch, cfg.dataset, activation=cfg.activation)
    params = list(model.parameters())
    optimizer: torch.optim.Optimizer
    if cfg.optimiser == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=cfg.resolved_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(params, lr=cfg.resolved_lr, weight_decay=cfg.weight_decay)
    batches = math.ceil(len(train) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_schedule(cfg.schedule, cfg.epochs * batches)
    )
    step_fn: BatchStep = method.build(cfg, static)
    warm_steps = math.ceil(cfg.eps_warmup * batches)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    attack_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    detector = OverfittingDetector(drop=cfg.overfit_drop)
    start_epoch, step = 0, 0
    history: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step_fn.load_state_dict(saved["method_state"])
        detector.load_state_dict(saved["detector"])
        _set_rng_state(saved["rng"], shuffle_gen, attack_gen)
        start_epoch, step = int(saved["epoch"]), int(saved["step"])
        history = _truncate_logs(out, start_epoch)
        log.info("resuming %s after epoch %d (step %d)", out, start_epoch, step)
    else:
        for name in ("log.jsonl", "log.csv"):
            (out / name).unlink(missing_ok=True)

    writer = _tensorboard(out)
    threats = list(cfg.threats)
    stopped = detector.collapsed and cfg.resolved_early_stop
    epoch = start_epoch
    try:
        while epoch < cfg.epochs and not stopped:
            epoch += 1
            model.train()
            started = time.perf_counter()
            total, seen = 0.0, 0
            bar = tqdm(
                total=len(train),
                desc=f"epoch {epoch}/{cfg.epochs}",
                unit="img",
                disable=not cfg.progress,
                leave=False,
            )
            for xb, yb in train.loader(cfg.batch_size, shuffle=True, generator=shuffle_gen):
                if warm_steps:
                    step_fn.eps_scale = min(1.0, (step + 1) / warm_steps)
                loss = step_fn(model, optimizer, xb, yb, attack_gen)
                scheduler.step()
                step += 1
                value = float(loss)
                total += value * xb.shape[0]
                seen += xb.shape[0]
                bar.update(xb.shape[0])
                bar.set_postfix(loss=f"{value:.3f}")
                if on_batch is not None:
                    on_batch(epoch, step)
            bar.close()
            train_seconds = time.perf_counter() - started
            model.eval()
            acc = robust_accuracy(
                model,
                held_out.images,
                held_out.labels,
                threats,
                steps=cfg.eval_steps,
                seed=cfg.seed,
            )
            row: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "lr": float(optimizer.param_groups[0]["lr"]),
                "train_loss": total / max(seen, 1),
                "clean_accuracy": acc["clean"],
                **{f"robust_accuracy[{t}]": acc[t] for t in threats},
                "union_accuracy": acc["union"],
                "train_seconds": train_seconds,
            }
            collapsed = detector.update(acc["union"])
            row["catastrophic_overfitting"] = collapsed
            history.append(row)
            log.info(
                "epoch %d: loss %.4f clean %.3f union %.3f",
                epoch,
                row["train_loss"],
                acc["clean"],
                acc["union"],
            )
            _append_logs(out, row, writer)
            meta = {"method": cfg.method, "config": cfg.to_dict(), "epoch": epoch, "metrics": row}
            if detector.best_index == len(detector.history) - 1:
                models.save(model, out / BEST, dataset=cfg.dataset, metadata=meta)
            models.save(
                model,
                ckpt_path,
                dataset=cfg.dataset,
                metadata=meta,
                extra={
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "method_state": step_fn.state_dict(),
                    "detector": detector.state_dict(),
                    "rng": _rng_state(shuffle_gen, attack_gen),
                    "epoch": epoch,
                    "step": step,
                },
            )
            if collapsed and cfg.resolved_early_stop:
                log.warning(
                    "catastrophic overfitting at epoch %d: held-out robust accuracy %.3f, "
                    "best %.3f at epoch %d; stopping and keeping the best weights",
                    epoch,
                    acc["union"],
                    detector.best,
                    detector.best_index + 1,
                )
                stopped = True
    finally:
        if writer is not None:
            writer.close()

    if stopped and (out / BEST).exists():
        model.load_state_dict(models.read_checkpoint(out / BEST)["state_dict"])
    model.eval()
    models.save(
        model,
        out / FINAL,
        dataset=cfg.dataset,
        metadata={
            "method": cfg.method,
            "config": cfg.to_dict(),
            "epochs_run": epoch,
            "stopped_early": stopped,
            "best_epoch": detector.best_index + 1,
            "history": history,
        },
    )
    return FitResult(
        model=model,
        out=out,
        history=history,
        stopped_early=stopped,
        best_epoch=detector.best_index + 1,
    )
