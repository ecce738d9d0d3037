"""``multirobust optimizer-study``: one Carlini–Wagner attack per inner optimiser."""

from __future__ import annotations

import platform

import click
import torch

from .. import __version__
from ..attacks.optimizers import OPTIMIZERS
from ..robustness.optimizer_study import optimizer_study, study_table, write_study
from . import options
from ._common import (
    DataSource,
    ModelSource,
    load_examples,
    load_model,
    parse_options,
    writable_out,
)

__all__ = ["command"]


@click.command("optimizer-study")
@options.model_source()
@options.data_source()
@options.split()
@click.option(
    "--attack", "attack_name", default="cw-l2", show_default=True, help="cw-l2 or cw-linf."
)
@options.threat(help="Threat (default l2:2 for ℓ2, linf:0.3 for ℓ∞).")
@click.option(
    "--optimizers",
    default=",".join(OPTIMIZERS),
    show_default=True,
    help="Comma-separated optimisers to compare.",
)
@options.attack_options(example="steps=200")
@options.n(default=100, help=None)
@options.batch_size(default=100)
@click.option("--examples", type=click.IntRange(min=0), default=8, show_default=True)
@options.seed()
@options.data_root()
@options.out(required=True)
@options.quiet(help="No progress bar.")
def command(
    model_source: ModelSource,
    data_source: DataSource,
    split: str,
    attack_name: str,
    threat_text: str | None,
    optimizers: str,
    option_pairs: tuple[str, ...],
    n: int,
    batch_size: int,
    examples: int,
    seed: int,
    data_root: str | None,
    out: str,
    quiet: bool,
) -> None:
    """Run a Carlini–Wagner attack once per inner optimiser; write study.json and study.html."""
    names = tuple(o.strip() for o in optimizers.split(",") if o.strip())
    attack_options = parse_options(option_pairs)
    out_dir = writable_out(out)
    model = load_model(model_source)
    ds = load_examples(data_source, model, split, n, data_root)
    try:
        result = optimizer_study(
            model,
            ds.images,
            ds.labels,
            attack=attack_name,
            threat=threat_text,
            optimizers=names,
            options=attack_options,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    result["settings"] = {
        "checkpoint": str(model_source),
        "dataset": ds.name,
        "split": split,
        "seed": seed,
        "batch_size": batch_size,
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    write_study(result, ds.images, out_dir, examples)
    click.echo(study_table(result))
    click.echo(f"saved {out_dir / 'study.json'} and {out_dir / 'study.html'}")
