"""``multirobust train``: adversarial training from a TOML file and/or flags."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import models
from ..training.config import (
    DEFAULT_EPS_WARMUP,
    MAX_EPS_WARMUP_FRACTION,
    ConfigError,
    TrainConfig,
    load_config,
)
from ..training.fit import CHECKPOINT, fit
from ..training.methods import get_method, methods
from . import options

__all__ = ["command"]


def _default(name: str) -> Any:
    """The default of a ``TrainConfig`` field, as the run would use it."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            factory: Any = f.default_factory
            return factory() if callable(factory) else f.default
    raise KeyError(name)  # pragma: no cover - a typo in this module


def _shown(help: str, default: Any) -> str:
    """``help`` with its default in click's own ``[default: ...]`` form.

    The flags themselves default to None (so that a --config file's value is kept unless a
    flag is given); the default shown is the one ``TrainConfig`` applies.
    """
    if isinstance(default, list):
        default = ", ".join(map(str, default)) or "none"
    return f"{help}  [default: {default}]"


def _warmup_default() -> str:
    warm = [m for m in methods() if get_method(m).eps_warmup]
    cold = [m for m in methods() if not get_method(m).eps_warmup]
    return (
        f"min({DEFAULT_EPS_WARMUP:g}, {MAX_EPS_WARMUP_FRACTION:g} × epochs) for "
        f"{', '.join(warm)}; 0 for {', '.join(cold)}"
    )


def _resume_command(ctx: click.Context, *, resume: bool) -> str:
    """The command line that runs this training again, with ``--resume`` when ``resume``.

    Rebuilt from the parsed flags (in their order of declaration), so it is exact whatever
    way the command was started.
    """
    parts = ctx.command_path.split()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        parts = ["torchrun", "--nproc_per_node", str(world), "-m", *parts]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in (None, "resume"):
            continue
        value = ctx.params.get(param.name)
        flag = param.opts[0]
        if param.is_flag:
            if value:
                parts.append(flag)
        elif param.multiple:
            for v in value or ():
                parts += [flag, str(v)]
        elif value is not None:
            parts += [flag, str(value)]
    if resume:
        parts.append("--resume")
    return shlex.join(parts)


def _echo(text: str, err: bool = False) -> None:
    """A line above any progress bar (tqdm.write), not through it."""
    tqdm.write(text, file=sys.stderr if err else sys.stdout)


def _epoch_line(row: dict[str, Any], cfg: TrainConfig) -> str:
    per_threat = ", ".join(f"{t} {row[f'robust_accuracy[{t}]']:.1%}" for t in cfg.threats)
    union = f", union {row['union_accuracy']:.1%}" if len(cfg.threats) > 1 else ""
    return (
        f"epoch {row['epoch']}/{cfg.epochs}: training loss {row['train_loss']:.3f}, held-out "
        f"clean {row['clean_accuracy']:.1%}, {per_threat}{union} "
        f"({row['train_seconds']:.0f} s training)"
        + (" — stuck at chance, see the warning" if row.get("at_chance") else "")
    )


def _interrupted(ctx: click.Context, cfg: TrainConfig, epoch: int) -> None:
    """Say what an interrupted run kept and how to go on, then exit with 130 (SIGINT)."""
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun rank 0 speaks
        ctx.exit(130)
    ckpt = Path(cfg.out) / CHECKPOINT
    kept = None
    if ckpt.is_file():
        try:
            kept = int(models.read_checkpoint(ckpt)["epoch"])
        except (ValueError, KeyError, OSError):
            kept = None
    doing = f"in epoch {epoch}/{cfg.epochs}" if epoch else "before the first epoch"
    if kept:
        _echo(
            f"Interrupted {doing}. Kept {ckpt}: the checkpoint after epoch {kept}/{cfg.epochs}"
            f" (epoch {kept + 1} starts again from its beginning). Resume with:\n"
            f"  {_resume_command(ctx, resume=True)}",
            err=True,
        )
    else:
        _echo(
            f"Interrupted {doing}: no epoch finished, so no checkpoint was kept in {cfg.out}. "
            f"Start again with:\n  {_resume_command(ctx, resume=False)}",
            err=True,
        )
    ctx.exit(130)


@click.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file with the settings (top level or [train]); flags override it.  [default: none]",
)
@click.option("--dataset", default=None, help=_shown("Dataset name.", _default("dataset")))
@click.option("--arch", default=None, help=_shown("Architecture.", _default("arch")))
@click.option(
    "--activation",
    default=None,
    help=_shown("relu, softplus, silu/swish or gelu.", _default("activation")),
)
@click.option(
    "--method",
    default=None,
    help=_shown(f"One of: {', '.join(methods())}.", _default("method")),
)
@click.option(
    "--threat",
    "threats",
    multiple=True,
    help=_shown(
        "Threat model, e.g. linf:0.3, l2:2, l1:10. Repeatable (max/avg/random/msd).",
        _default("threats"),
    ),
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help=_shown("Passes over the training data.", _default("epochs")),
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help=_shown(
        "Examples per optimiser step; under torchrun the global batch over all processes.",
        _default("batch_size"),
    ),
)
@click.option(
    "--lr", type=float, default=None, help=_shown("Peak learning rate.", "1e-3 (adam), 0.1 (sgd)")
)
@click.option(
    "--optimiser",
    "--optimizer",
    "optimiser",
    type=click.Choice(["sgd", "adam"]),
    default=None,
    help=_shown("Optimiser.", _default("optimiser")),
)
@click.option(
    "--schedule",
    type=click.Choice(["piecewise", "onecycle", "constant"]),
    default=None,
    help=_shown(
        "Learning-rate schedule (piecewise: ×0.1 at 50% and ×0.01 from 75% of the steps).",
        _default("schedule"),
    ),
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help=_shown("Attack steps inside training.", _default("steps")),
)
@click.option(
    "--step-size",
    type=float,
    default=None,
    help=_shown(
        "Attack step size inside training.",
        "the method's rule (PGD and TRADES 2.5·ε/steps, Fast 1.25·ε, Free ε)",
    ),
)
@click.option("--beta", type=float, default=None, help=_shown("TRADES β.", _default("beta")))
@click.option(
    "--replays",
    type=int,
    default=None,
    help=_shown("Free-AT minibatch replays.", _default("replays")),
)
@click.option(
    "--eps-warmup",
    type=float,
    default=None,
    help=_shown(
        "Epochs over which ε ramps up linearly to its full value (0: full ε from the start; "
        "adversarial training from scratch at full ε can stay at chance).",
        _warmup_default(),
    ),
)
@click.option(
    "--static-model",
    "static_models",
    multiple=True,
    help=_shown("Checkpoint of a fixed model for --method ensemble. Repeatable.", "none"),
)
@click.option(
    "--seed", type=int, default=None, help=_shown("Seed of every random choice.", _default("seed"))
)
@click.option("--out", default=None, help=_shown("Output folder.", _default("out")))
@click.option(
    "--limit",
    type=int,
    default=None,
    help=_shown("Train on the first N images only.", "all (60,000 for MNIST)"),
)
@click.option(
    "--eval-n",
    type=int,
    default=None,
    help=_shown("Held-out test images for per-epoch metrics.", _default("eval_n")),
)
@click.option(
    "--eval-steps",
    type=int,
    default=None,
    help=_shown("PGD steps of per-epoch metrics.", _default("eval_steps")),
)
@click.option(
    "--init",
    default=None,
    help=_shown("Checkpoint whose weights start the run (fine-tuning); same --arch.", "none"),
)
@options.data_root()
@options.resume(help="Continue from OUT/checkpoint.pt.")
@options.quiet()
@click.pass_context
def command(
    ctx: click.Context,
    config_path: str | None,
    threats: tuple[str, ...],
    static_models: tuple[str, ...],
    resume: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Train a model (standard or adversarial) with checkpoints, logs and --resume.

    Each epoch prints its training loss and held-out accuracies; Ctrl-C keeps the last
    finished epoch's checkpoint and prints the command that resumes from it.
    """
    overrides: dict[str, Any] = dict(flags)
    overrides["threats"] = list(threats) or None
    overrides["static_models"] = list(static_models) or None
    overrides["progress"] = False if quiet else None
    try:
        if config_path is not None:
            cfg = load_config(config_path, **overrides)
        else:
            cfg = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    current = 0

    def on_batch(epoch: int, step: int) -> None:
        nonlocal current
        current = epoch

    def on_epoch(row: dict[str, Any]) -> None:
        nonlocal current
        current = min(int(row["epoch"]) + 1, cfg.epochs)  # the next one, until it starts
        _echo(_epoch_line(row, cfg))

    def on_resume(done: int) -> None:
        _echo(
            f"resuming from epoch {done + 1}/{cfg.epochs}: epochs 1-{done} are in "
            f"{Path(cfg.out) / CHECKPOINT}"
        )

    try:
        with logging_redirect_tqdm():
            result = fit(
                cfg,
                resume=resume,
                on_batch=on_batch,
                on_epoch=on_epoch,
                on_resume=on_resume,
            )
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        _interrupted(ctx, cfg, current)
    if result.rank != 0:  # under torchrun, rank 0 speaks for the run
        return
    last = result.history[-1] if result.history else {}
    click.echo(
        f"trained {cfg.method} on {cfg.dataset} for {len(result.history)} epoch(s)"
        + (f" on {result.world_size} processes" if result.world_size > 1 else "")
        + (" (stopped early: catastrophic overfitting)" if result.stopped_early else "")
    )
    if last:
        click.echo(
            f"held-out: clean {last['clean_accuracy']:.2%}, union robust "
            f"{last['union_accuracy']:.2%} ({', '.join(cfg.threats)})"
        )
        if last.get("at_chance"):
            click.echo(
                "warning: the model is still at chance (see the warning above for what to change)",
                err=True,
            )
    click.echo(f"saved {result.out / 'model.pt'}")
