"""``fit``: the training loop behind ``multirobust train``, with checkpoints and exact resume.

Every epoch: train on shuffled batches with the configured method, measure clean and PGD
robust accuracy on a held-out split, append the metrics to ``log.jsonl`` and ``log.csv`` (and
to TensorBoard when it is installed), then write ``checkpoint.pt`` atomically with the
optimiser, schedule, method and RNG states. ``fit(config, resume=True)`` continues from that
checkpoint and ends with exactly the weights an uninterrupted run would have (same seed,
same machine and thread count); an epoch interrupted part-way is redone from its start.
Launched by ``torchrun``, the same loop trains data-parallel over several processes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import data, models
from ..atomic import check_writable_dir, remove_stale_temps
from . import distributed
from .chance import at_chance, chance_advice
from .config import ConfigError, TrainConfig
from .methods import BatchStep, get_method, make_optimizer
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
        rank: this process's rank in a distributed run (0 otherwise); only rank 0 writes.
        world_size: number of processes that trained the model (1 without torchrun).
    """

    model: nn.Module
    out: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int = 0
    rank: int = 0
    world_size: int = 1


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


def _tensorboard(out: Path, purge_step: int | None) -> Any:
    """A SummaryWriter on ``out/tensorboard`` (None without the ``tensorboard`` package).

    ``purge_step``: on resume, the first epoch to be redone; TensorBoard then hides the events an
    interrupted run wrote from that epoch on, as the CSV/JSON logs are truncated.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info(
            "TensorBoard logging off: install the tensorboard package "
            "(pip install 'multirobust[tensorboard]')"
        )
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge_step)


# --------------------------------------------------------------------------- fit


def _check_given(cfg: TrainConfig, given: data.ImageDataset, role: str) -> None:
    """A dataset given to :func:`fit` must look like ``cfg.dataset`` (the model is built for it)."""
    ds = data.spec(cfg.dataset)
    if given.input_shape != ds.input_shape or given.num_classes != ds.num_classes:
        raise ConfigError(
            f"Invalid {role} dataset: images {given.input_shape} with {given.num_classes} "
            f"classes, but dataset {cfg.dataset!r} has {ds.input_shape} with {ds.num_classes} "
            "(the model is built for the configured dataset)"
        )
    if len(given) == 0:
        raise ConfigError(f"Invalid {role} dataset: it holds no examples")


def _prepare(
    cfg: TrainConfig,
    train: data.ImageDataset | None = None,
    held_out: data.ImageDataset | None = None,
) -> tuple[data.ImageDataset, data.ImageDataset, list[nn.Module]]:
    """Load everything a run needs, turning every failure into a ConfigError."""
    cfg.validate(check_data=False)
    if train is not None and cfg.limit is not None:
        raise ConfigError(
            f"Invalid limit: {cfg.limit!r} with a training dataset passed to fit (leave it "
            "unset and pass the examples to train on)"
        )
    try:
        if train is None:
            train = data.load(
                cfg.dataset, "train", root=cfg.data_root, download=cfg.download, limit=cfg.limit
            )
        if held_out is None:
            held_out = data.load(
                cfg.dataset, "test", root=cfg.data_root, download=cfg.download, limit=cfg.eval_n
            )
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"Dataset {cfg.dataset!r} unavailable: {err}") from None
    _check_given(cfg, train, "training")
    _check_given(cfg, held_out, "held-out")
    static: list[nn.Module] = []
    for path in cfg.static_models:
        try:
            static.append(models.load(path).eval())
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"Invalid static_models: {err}") from None
    try:  # now, not after the first epoch's work
        check_writable_dir(cfg.out)
    except OSError as err:
        raise ConfigError(str(err)) from None
    return train, held_out, static


def _load_init(model: nn.Module, cfg: TrainConfig) -> None:
    """Start from the weights of ``cfg.init`` (fine-tuning); same architecture required."""
    assert cfg.init is not None
    try:
        ckpt = models.read_checkpoint(cfg.init)
        if ckpt["arch"] != cfg.arch:
            raise ConfigError(
                f"Invalid init: {cfg.init} holds a {ckpt['arch']!r} model, the run trains "
                f"{cfg.arch!r} (use --arch {ckpt['arch']})"
            )
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"Invalid init: cannot start from {cfg.init}: {err}") from None
    log.info("starting from the weights of %s", cfg.init)


def fit(
    config: TrainConfig | dict[str, Any],
    *,
    resume: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
    train: data.ImageDataset | None = None,
    held_out: data.ImageDataset | None = None,
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

    Distributed: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set), or when a default process
    group already exists, every process runs ``fit`` and they train one model with
    ``DistributedDataParallel`` (see :mod:`multirobust.training.distributed`).
    ``batch_size`` is then the global batch size (a multiple of the number of processes),
    so the learning rate means what it means for one process; each epoch is shuffled from
    ``seed + epoch`` and sharded; held-out metrics are computed on shards and summed; only
    rank 0 writes files; ``model.pt`` records every rank's weight checksum, and differing
    replicas raise a RuntimeError. Resume with the same number of processes.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        resume: continue from ``out/checkpoint.pt`` (starting fresh if there is none).
        on_batch: called as ``on_batch(epoch, step)`` after every training step (epoch is
            1-based, step counts all steps of the run); an exception it raises stops the run,
            leaving the last epoch's checkpoint to resume from.
        on_epoch: called (on rank 0) with each epoch's log row once its checkpoint is written.
        on_resume: called (on rank 0) with the number of epochs the checkpoint holds, before
            the first batch of a resumed run.
        train: train on these examples instead of ``config.dataset``'s training split (a
            poisoned dataset, a shadow model's half of the data); images and classes must
            match ``config.dataset``, and ``config.limit`` must be unset. The checkpoint does
            not record them: resuming with other examples is the caller's to prevent.
        held_out: measure the per-epoch accuracy on these instead of the first ``eval_n``
            test images.

    Progress: one bar for the whole run (images, with the epoch in its title and an ETA to the
    end of training) and one for each epoch's held-out attacks; ``progress=False`` hides both.
    An epoch whose mean training loss stays at log(classes) with held-out clean accuracy near
    chance is flagged (``at_chance`` in the log row) and a warning says what to change.

    Returns:
        A :class:`FitResult`.

    Raises:
        ConfigError: for an invalid configuration, missing data, an output folder holding a
            checkpoint when ``resume`` is False, or a checkpoint from other settings.
    """
    cfg = TrainConfig.from_dict(config) if isinstance(config, dict) else config
    # Everything is checked before any process group exists: a bad config fails at once,
    # identically, on every process of a torchrun launch.
    train, held_out, static = _prepare(cfg, train, held_out)
    ctx = distributed.setup()
    try:
        result = _fit(
            cfg,
            train,
            held_out,
            static,
            ctx,
            resume=resume,
            hooks=_Hooks(on_batch, on_epoch, on_resume),
        )
        if ctx is not None:
            # Every process reaches the end before any tears the group down: a process that
            # destroys its gloo group while another still talks to it aborted the other one.
            ctx.barrier()
        return result
    finally:
        if ctx is not None:
            ctx.close()


def _epoch_batches(
    train: data.ImageDataset,
    cfg: TrainConfig,
    epoch: int,
    shuffle_gen: torch.Generator,
    ctx: distributed.Context | None,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's training batches: shuffled by ``shuffle_gen``, or this process's shards."""
    if ctx is None:
        return train.loader(cfg.batch_size, shuffle=True, generator=shuffle_gen)
    return distributed.epoch_batches(
        train.images, train.labels, cfg.batch_size, epoch=epoch, seed=cfg.seed, ctx=ctx
    )


def _held_out_accuracy(
    model: nn.Module,
    held_out: data.ImageDataset,
    cfg: TrainConfig,
    ctx: distributed.Context | None,
    epoch: int,
) -> dict[str, float]:
    desc = f"epoch {epoch}/{cfg.epochs} held-out PGD-{cfg.eval_steps}"
    if ctx is None:
        return robust_accuracy(
            model,
            held_out.images,
            held_out.labels,
            list(cfg.threats),
            steps=cfg.eval_steps,
            seed=cfg.seed,
            single_step=cfg.single_step,
            progress=cfg.progress,
            desc=desc,
        )
    return distributed.sharded_robust_accuracy(
        ctx,
        model,
        held_out.images,
        held_out.labels,
        list(cfg.threats),
        steps=cfg.eval_steps,
        seed=cfg.seed,
        single_step=cfg.single_step,
        progress=cfg.progress,
        desc=desc,
    )


@dataclass(frozen=True)
class _Hooks:
    """The caller's callbacks (see :func:`fit`); each may be None."""

    on_batch: Callable[[int, int], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_resume: Callable[[int], None] | None = None


@dataclass
class _Run:
    """What one run carries from epoch to epoch; all of it is in ``checkpoint.pt``.

    Attributes:
        cfg: the settings.
        ctx: the process group (None for one process).
        out: the output folder.
        model: the model being trained (attacks use it directly).
        net: what training forward passes go through (``model`` or its DDP wrapper).
        optimizer, scheduler: the optimiser and its learning-rate schedule.
        step_fn: the method's batch step (with its own state: Free-AT's perturbation ...).
        detector: the catastrophic-overfitting watch, holding the held-out history.
        shuffle_gen, attack_gen: the random streams of batch order and attack starts.
        warm_steps: batches over which ε ramps up (0: no warm-up).
        epoch, step: epochs and optimiser steps done.
        history: one metrics row per epoch done.
    """

    cfg: TrainConfig
    ctx: distributed.Context | None
    out: Path
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step_fn: BatchStep
    detector: OverfittingDetector
    shuffle_gen: torch.Generator
    attack_gen: torch.Generator
    warm_steps: int
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def main(self) -> bool:
        """This process writes the files (rank 0, or the only process)."""
        return self.ctx is None or self.ctx.is_main

    @property
    def world(self) -> int:
        """Number of processes training the model."""
        return 1 if self.ctx is None else self.ctx.world_size


def _resume_point(
    cfg: TrainConfig, ctx: distributed.Context | None, *, resume: bool
) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: a fresh run), after checking it fits this run.

    Raises:
        ConfigError: for a folder holding a checkpoint without ``resume``, or a checkpoint
            written with other settings or another number of processes.
    """
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ConfigError(
            f"{out} already holds a training checkpoint: resume it (--resume) or choose "
            "another output folder"
        )
    if not resume:
        return None
    if not ckpt_path.exists():
        log.warning("no checkpoint in %s: starting a fresh run", out)
        return None
    saved = models.read_checkpoint(ckpt_path)
    before = saved["metadata"].get("config", {})
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in _RESUME_FREE and before.get(k, now[k]) != now[k])
    if changed:
        raise ConfigError(
            f"Cannot resume {ckpt_path}: settings differ from the interrupted run "
            f"({', '.join(f'{k}: {before.get(k)!r} -> {now[k]!r}' for k in changed)})"
        )
    was, now_world = saved.get("distributed_world_size"), None if ctx is None else ctx.world_size
    if was != now_world:

        def launch(n: int | None) -> str:
            return "a one-process run" if n is None else f"a distributed run of {n} process(es)"

        raise ConfigError(
            f"Cannot resume {ckpt_path}: it was written by {launch(was)}, this is "
            f"{launch(now_world)} (the data order depends on the launch: resume it the "
            "way it started, e.g. with the same torchrun --nproc_per_node)"
        )
    return saved


def _start(
    cfg: TrainConfig,
    train: data.ImageDataset,
    static: list[nn.Module],
    ctx: distributed.Context | None,
) -> _Run:
    """Seed everything and build the model, optimiser, schedule and method of a fresh run.

    The order of the random draws (seeds, model initialisation, the method's own models) is
    part of the run's identity: the same seed gives the same weights.
    """
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = models.for_dataset(cfg.arch, cfg.dataset, activation=cfg.activation)
    optimizer = make_optimizer(cfg, model.parameters())
    if ctx is None:
        batches = math.ceil(len(train) / cfg.batch_size)
    else:
        batches = distributed.steps_per_epoch(len(train), cfg.batch_size, ctx.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_schedule(cfg.schedule, cfg.epochs * batches)
    )
    step_fn = get_method(cfg.method).build(cfg, static)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    attack_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    if ctx is not None and ctx.rank > 0:
        # Same initial weights everywhere, but each process draws its own attack starts and
        # dropout masks from here on; rank 0 keeps the one-process streams.
        offset = cfg.seed + 104729 * ctx.rank
        torch.manual_seed(offset)
        random.seed(offset)
        np.random.seed(offset)
        attack_gen.manual_seed(offset + 7919)
    return _Run(
        cfg=cfg,
        ctx=ctx,
        out=Path(cfg.out),
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=scheduler,
        step_fn=step_fn,
        detector=OverfittingDetector(drop=cfg.overfit_drop, gap=cfg.overfit_gap),
        shuffle_gen=shuffle_gen,
        attack_gen=attack_gen,
        warm_steps=math.ceil(cfg.resolved_eps_warmup * batches),
    )


def _restore(run: _Run, saved: dict[str, Any] | None) -> None:
    """Load the interrupted run's states into ``run`` (or clear the logs of a fresh one)."""
    ctx, out = run.ctx, run.out
    if saved is None:
        if run.cfg.init is not None:
            _load_init(run.model, run.cfg)
        if run.main:
            for name in ("log.jsonl", "log.csv"):
                (out / name).unlink(missing_ok=True)
        return
    run.model.load_state_dict(saved["state_dict"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.step_fn.load_state_dict(
        saved["method_state"] if ctx is None else saved["method_state_per_rank"][ctx.rank]
    )
    run.detector.load_state_dict(saved["detector"])
    rng = saved["rng"] if ctx is None else saved["rng_per_rank"][ctx.rank]
    _set_rng_state(rng, run.shuffle_gen, run.attack_gen)
    run.epoch, run.step = int(saved["epoch"]), int(saved["step"])
    if run.main:
        run.history = _truncate_logs(out, run.epoch)
        log.info("resuming %s after epoch %d (step %d)", out, run.epoch, run.step)
    if ctx is not None:
        run.history = ctx.broadcast(run.history)


def _run_bar(run: _Run, train: data.ImageDataset) -> tqdm:
    """The bar of the whole run: every training image of the epochs still to do, so that its
    ETA is the time to the end of training (the held-out checks have their own bar)."""
    cfg = run.cfg
    # Under torchrun the data is padded to a multiple of the processes (shard_batches).
    per_epoch = math.ceil(len(train) / run.world) * run.world
    return tqdm(
        total=per_epoch * max(cfg.epochs - run.epoch, 0),
        desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
        unit="img",
        disable=not (cfg.progress and run.main),
        leave=False,
        dynamic_ncols=True,
    )


def _train_epoch(
    run: _Run,
    train: data.ImageDataset,
    on_batch: Callable[[int, int], None] | None,
    bar: tqdm,
) -> tuple[float, float]:
    """One pass over the training data; returns (mean training loss over all processes, seconds)."""
    cfg, ctx = run.cfg, run.ctx
    run.net.train()
    started = time.perf_counter()
    total, seen = 0.0, 0
    bar.set_description(f"epoch {run.epoch}/{cfg.epochs}", refresh=False)
    for xb, yb in _epoch_batches(train, cfg, run.epoch, run.shuffle_gen, ctx):
        if run.warm_steps:
            run.step_fn.eps_scale = min(1.0, (run.step + 1) / run.warm_steps)
        loss = run.step_fn(run.net, run.optimizer, xb, yb, run.attack_gen)
        run.scheduler.step()
        run.step += 1
        value = float(loss)
        total += value * xb.shape[0]
        seen += xb.shape[0]
        bar.update(xb.shape[0] * run.world)
        bar.set_postfix(loss=f"{value:.3f}")
        if on_batch is not None:
            on_batch(run.epoch, run.step)
    if ctx is not None:
        total, seen_all = ctx.all_sum([total, seen])
        seen = int(seen_all)
    return total / max(seen, 1), time.perf_counter() - started


def _epoch_row(
    run: _Run, train_loss: float, acc: dict[str, float], train_seconds: float
) -> dict[str, Any]:
    """The log row of the epoch just done, its held-out accuracies ``acc`` included."""
    threats = list(run.cfg.threats)
    row: dict[str, Any] = {
        "epoch": run.epoch,
        "step": run.step,
        "lr": float(run.optimizer.param_groups[0]["lr"]),
        "train_loss": train_loss,
        "clean_accuracy": acc["clean"],
        **{f"robust_accuracy[{t}]": acc[t] for t in threats},
        "union_accuracy": acc["union"],
    }
    if "fgsm_union" in acc:
        row.update({f"fgsm_accuracy[{t}]": acc[f"fgsm[{t}]"] for t in threats})
        row["fgsm_union_accuracy"] = acc["fgsm_union"]
    row["train_seconds"] = train_seconds
    return row


def _checkpoint(run: _Run, row: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` (and ``best.pt`` on a new best) after the epoch of ``row``.

    Collective: every process contributes its RNG and method states; rank 0 writes.
    """
    ctx, cfg = run.ctx, run.cfg
    # Per-process states (RNGs, Free-AT's perturbation of its own shard) for resume.
    rngs = [_rng_state(run.shuffle_gen, run.attack_gen)]
    states = [run.step_fn.state_dict()]
    if ctx is not None:
        rngs, states = ctx.gather(rngs[0]), ctx.gather(states[0])
    if not run.main:
        return
    meta = {"method": cfg.method, "config": cfg.to_dict(), "epoch": run.epoch, "metrics": row}
    if run.detector.best_index == len(run.detector.history) - 1:
        models.save(run.model, run.out / BEST, dataset=cfg.dataset, metadata=meta)
    models.save(
        run.model,
        run.out / CHECKPOINT,
        dataset=cfg.dataset,
        metadata=meta,
        extra={
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "method_state": states[0],
            "method_state_per_rank": states,
            "detector": run.detector.state_dict(),
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "distributed_world_size": None if ctx is None else run.world,
            "epoch": run.epoch,
            "step": run.step,
        },
    )


def _finish(run: _Run, stopped: bool) -> FitResult:
    """Write ``model.pt`` (the best weights after an early stop) and check the replicas."""
    cfg, ctx, model = run.cfg, run.ctx, run.model
    if stopped and (run.out / BEST).exists():
        model.load_state_dict(models.read_checkpoint(run.out / BEST)["state_dict"])
    model.eval()
    final_meta: dict[str, Any] = {
        "method": cfg.method,
        "config": cfg.to_dict(),
        "epochs_run": run.epoch,
        "stopped_early": stopped,
        "best_epoch": run.detector.best_index + 1,
        "history": run.history,
    }
    checksums: list[str] = []
    if ctx is not None:
        # DDP keeps the replicas equal; check it rather than trust it.
        checksums = ctx.gather(distributed.weights_checksum(model))
        final_meta["distributed"] = {"world_size": run.world, "weights_sha256": checksums}
    if run.main:
        models.save(model, run.out / FINAL, dataset=cfg.dataset, metadata=final_meta)
    if len(set(checksums)) > 1:
        raise RuntimeError(
            f"Distributed training ended with different weights on different processes "
            f"(SHA-256 per rank: {checksums})"
        )
    return FitResult(
        model=model,
        out=run.out,
        history=run.history,
        stopped_early=stopped,
        best_epoch=run.detector.best_index + 1,
        rank=0 if ctx is None else ctx.rank,
        world_size=run.world,
    )


def _fit(
    cfg: TrainConfig,
    train: data.ImageDataset,
    held_out: data.ImageDataset,
    static: list[nn.Module],
    ctx: distributed.Context | None,
    *,
    resume: bool,
    hooks: _Hooks,
) -> FitResult:
    """The body of :func:`fit` once the data is loaded (``ctx``: the process group, if any):
    resume point -> fresh start -> restore -> epochs (train, held-out metrics, log,
    checkpoint) -> final model."""
    if ctx is not None:
        distributed.per_process_batch(cfg.batch_size, ctx.world_size)
    saved = _resume_point(cfg, ctx, resume=resume)
    run = _start(cfg, train, static, ctx)
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        if resume:  # a crash in the middle of a checkpoint write leaves its temporary file
            for stale in remove_stale_temps(run.out):
                log.info("removed %s, left by an interrupted write", stale)
    _restore(run, saved)
    if saved is not None and run.main and hooks.on_resume is not None:
        hooks.on_resume(run.epoch)
    # Training forward passes go through DDP (gradients all-reduced), attacks through `model`.
    if ctx is not None:
        run.net = distributed.AttackAwareDDP(run.model)
    writer = (
        _tensorboard(run.out, run.epoch + 1 if saved is not None else None) if run.main else None
    )
    stop_on_collapse = cfg.resolved_early_stop
    stopped = run.detector.collapsed and stop_on_collapse
    bar = _run_bar(run, train)
    try:
        while run.epoch < cfg.epochs and not stopped:
            run.epoch += 1
            train_loss, train_seconds = _train_epoch(run, train, hooks.on_batch, bar)
            run.model.eval()
            acc = _held_out_accuracy(run.model, held_out, cfg, ctx, run.epoch)
            row = _epoch_row(run, train_loss, acc, train_seconds)
            collapsed = run.detector.update(acc["union"], acc.get("fgsm_union"))
            row["catastrophic_overfitting"] = collapsed
            row["at_chance"] = at_chance(train_loss, acc["clean"], train.num_classes)
            run.history.append(row)
            if run.main:
                log.info(
                    "epoch %d: loss %.4f clean %.3f union %.3f",
                    run.epoch,
                    row["train_loss"],
                    acc["clean"],
                    acc["union"],
                )
                _append_logs(run.out, row, writer)
            _checkpoint(run, row)
            if row["at_chance"] and run.main:
                log.warning(
                    "%s",
                    chance_advice(
                        epoch=run.epoch,
                        train_loss=train_loss,
                        clean_accuracy=acc["clean"],
                        num_classes=train.num_classes,
                        method=cfg.method,
                        eps_warmup=cfg.resolved_eps_warmup,
                        accepts_warmup=get_method(cfg.method).eps_warmup,
                        lr=cfg.resolved_lr,
                    ),
                )
            if run.main and hooks.on_epoch is not None:
                hooks.on_epoch(row)
            stopped = collapsed and stop_on_collapse
            if stopped and run.main:
                log.warning(
                    "catastrophic overfitting at epoch %d: held-out robust accuracy %.3f "
                    "(single-step %s), best %.3f at epoch %d; stopping and keeping the best "
                    "weights",
                    run.epoch,
                    acc["union"],
                    f"{acc['fgsm_union']:.3f}" if "fgsm_union" in acc else "not measured",
                    run.detector.best,
                    run.detector.best_index + 1,
                )
    finally:
        bar.refresh()  # the last state, drawn even between display intervals
        bar.close()
        if writer is not None:
            writer.close()
    return _finish(run, stopped)
