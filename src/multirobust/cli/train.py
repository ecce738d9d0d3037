"""``multirobust train``: adversarial training from a TOML file and/or flags."""

from __future__ import annotations

from typing import Any

import click

from ..training.config import ConfigError, TrainConfig, load_config
from ..training.fit import fit
from ..training.methods import methods
from . import options

__all__ = ["command"]


@click.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file with the settings (top level or [train]); flags override it.",
)
@click.option("--dataset", default=None, help="Dataset name (default mnist).")
@click.option("--arch", default=None, help="Architecture (default small_cnn).")
@click.option("--activation", default=None, help="relu, softplus, silu/swish or gelu.")
@click.option("--method", default=None, help=f"One of: {', '.join(methods())} (default pgd).")
@click.option(
    "--threat",
    "threats",
    multiple=True,
    help="Threat model, e.g. linf:0.3, l2:2, l1:10. Repeatable (max/avg/random/msd).",
)
@click.option("--epochs", type=int, default=None)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Examples per optimiser step; under torchrun the global batch over all processes.",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option(
    "--optimiser", "--optimizer", "optimiser", type=click.Choice(["sgd", "adam"]), default=None
)
@click.option("--schedule", type=click.Choice(["piecewise", "onecycle", "constant"]), default=None)
@click.option("--steps", type=int, default=None, help="Attack steps inside training.")
@click.option("--step-size", type=float, default=None, help="Attack step size inside training.")
@click.option("--beta", type=float, default=None, help="TRADES beta.")
@click.option("--replays", type=int, default=None, help="Free-AT minibatch replays.")
@click.option(
    "--eps-warmup",
    type=float,
    default=None,
    help="Epochs over which ε ramps up linearly to its full value (default 0).",
)
@click.option(
    "--static-model",
    "static_models",
    multiple=True,
    help="Checkpoint of a fixed model for --method ensemble. Repeatable.",
)
@click.option(
    "--init",
    default=None,
    help="Checkpoint whose weights start the run (fine-tuning); same --arch.",
)
@click.option("--seed", type=int, default=None)
@click.option("--out", default=None, help="Output folder (default runs/train).")
@click.option("--limit", type=int, default=None, help="Train on the first N images only.")
@click.option("--eval-n", type=int, default=None, help="Held-out images for per-epoch metrics.")
@click.option("--eval-steps", type=int, default=None, help="PGD steps of per-epoch metrics.")
@options.data_root()
@options.resume(help="Continue from OUT/checkpoint.pt.")
@options.quiet()
def command(
    config_path: str | None,
    threats: tuple[str, ...],
    static_models: tuple[str, ...],
    resume: bool,
    quiet: bool,
    **flags: Any,
) -> None:
    """Train a model (standard or adversarial) with checkpoints, logs and --resume."""
    overrides: dict[str, Any] = dict(flags)
    overrides["threats"] = list(threats) or None
    overrides["static_models"] = list(static_models) or None
    overrides["progress"] = False if quiet else None
    try:
        if config_path is not None:
            cfg = load_config(config_path, **overrides)
        else:
            cfg = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
        result = fit(cfg, resume=resume)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
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
    click.echo(f"saved {result.out / 'model.pt'}")
