"""``multirobust attack``: one attack per threat model, clean and robust accuracy as a table."""

from __future__ import annotations

import io
import platform
from pathlib import Path

import click
import torch

from .. import __version__, attacks, threats
from ..atomic import write_bytes_atomic
from ..evaluation.attack_run import attack_table, run_attack, save_attack_result
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


@click.command("attack")
@options.model_source()
@options.data_source()
@options.split()
@options.threats()
@click.option(
    "--attack",
    "attack_name",
    default="auto",
    show_default=True,
    help="Attack name (see `multirobust list`); auto: pgd for ℓp, spatial-grid for spatial.",
)
@options.attack_options()
@options.n()
@options.batch_size(default=500)
@options.seed()
@options.data_root()
@options.download()
@options.out(help="Folder for attack.json and attack.md.")
@click.option(
    "--save-adv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save adversarial examples (a .pt of tensors, loadable with weights_only=True).",
)
@options.quiet()
def command(
    model_source: ModelSource,
    data_source: DataSource,
    split: str,
    threat_texts: tuple[str, ...],
    attack_name: str,
    option_pairs: tuple[str, ...],
    n: int,
    batch_size: int,
    seed: int,
    data_root: str | None,
    download: bool,
    out: str | None,
    save_adv: str | None,
    quiet: bool,
) -> None:
    """Attack a checkpoint and print clean and robust accuracy per threat model."""
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        attack_options = parse_options(option_pairs)
        if attack_name != "auto":
            attacks.get(attack_name)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if out:
        writable_out(out)
    if save_adv:
        writable_out(Path(save_adv).parent)
    model = load_model(model_source)
    ds = load_examples(data_source, model, split, n, data_root, download)
    try:
        result = run_attack(
            model,
            ds.images,
            ds.labels,
            threat_list,
            attack_name,
            attack_options,
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
        "n": ds.images.shape[0],
        "attack": attack_name,
        "options": attack_options,
        "seed": seed,
        "batch_size": batch_size,
        "threats": [str(t) for t in threat_list],
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    click.echo(attack_table(result))
    if out:
        save_attack_result(result, Path(out), "attack")
        click.echo(f"saved {Path(out) / 'attack.json'} and {Path(out) / 'attack.md'}")
    if save_adv:
        payload = {
            "x": ds.images,
            "y": ds.labels,
            "x_adv": result["_x_adv"],
            "robust": result["_robust"],
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(save_adv, buffer.getvalue())
        click.echo(f"saved adversarial examples to {save_adv}")
