"""``multirobust landscape``: input- and weight-space loss landscapes of a checkpoint.

The command only parses options and calls :func:`multirobust.landscape.run_landscapes`
(docs/landscapes.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import threats
from ..landscape import run_landscapes
from . import options
from ._common import DataSource, ModelSource, load_examples, load_model, writable_out

__all__ = ["command"]


@click.command("landscape")
@options.model_source()
@options.data_source()
@options.threats(required=True, help="An lp threat: linf:0.3, l2:2, l1:10. Repeatable.")
@click.option(
    "--examples",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Number of examples: the first ones of the split from --start.",
)
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True)
@options.out(required=True, help="Output folder.")
@options.split()
@click.option(
    "--points",
    type=click.IntRange(min=2),
    default=51,
    show_default=True,
    help="Grid points per axis of each input surface.",
)
@click.option(
    "--radius",
    type=click.FloatRange(min=0, min_open=True),
    default=1.5,
    show_default=True,
    help="Half-width of the input grid in units of eps.",
)
@click.option(
    "--loss",
    type=click.Choice(["ce", "margin", "dlr"]),
    default="ce",
    show_default=True,
    help="Loss whose gradient gives the ascent direction (ce and margin are always recorded).",
)
@click.option(
    "--attack-steps",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="APGD-CE steps for the adversarial example of the 1-D slice and the masking check.",
)
@click.option(
    "--weight-space",
    is_flag=True,
    help="Also the weight-space curve and surface (Li et al. 2018 filter-normalised directions).",
)
@click.option(
    "--weight-examples",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Examples behind the weight-space loss (the first ones of --weight-split).",
)
@click.option("--weight-split", default="test", show_default=True)
@click.option(
    "--weight-points",
    type=click.IntRange(min=2),
    default=51,
    show_default=True,
    help="Points per axis of the 2-D weight surface (the 1-D curve has 51).",
)
@click.option(
    "--weight-threat",
    default=None,
    help="Also the adversarial loss on the weight-space curve (PGD under this threat).",
)
@click.option("--weight-adv-examples", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--weight-adv-steps", type=click.IntRange(min=1), default=10, show_default=True)
@options.resume(
    help="Reuse the per-example results already in OUT/grids made with the same settings."
)
@click.option("--svg/--no-svg", default=True, show_default=True, help="Also write SVG figures.")
@options.batch_size(default=1024, help="Grid points per forward pass.")
@options.seed()
@options.data_root()
@options.quiet()
def command(
    model_source: ModelSource,
    data_source: DataSource,
    threat_texts: tuple[str, ...],
    examples: int,
    start: int,
    out: str,
    split: str,
    points: int,
    radius: float,
    loss: str,
    attack_steps: int,
    weight_space: bool,
    weight_examples: int,
    weight_split: str,
    weight_points: int,
    weight_threat: str | None,
    weight_adv_examples: int,
    weight_adv_steps: int,
    resume: bool,
    svg: bool,
    batch_size: int,
    seed: int,
    data_root: str | None,
    quiet: bool,
) -> None:
    """Loss landscapes of a checkpoint: input space per threat and example, weight space.

    Writes OUT/landscape.html, OUT/landscape.json, OUT/figures/*.png|svg and the raw grids as
    OUT/grids/**.npz (one file per threat and example, written as soon as it is done).
    """
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        weight_tm = threats.parse(weight_threat) if weight_threat else None
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    writable_out(out)
    model = load_model(model_source)
    ds = load_examples(data_source, model, split, start + examples, data_root, download=False)
    if len(ds) <= start:
        raise click.ClickException(
            f"--start {start} is past the end of {ds.name} {split} ({len(ds)} examples)"
        )
    x, y = ds.images[start:], ds.labels[start:]
    weight_data = None
    if weight_space:
        wds = load_examples(
            data_source, model, weight_split, weight_examples, data_root, download=False
        )
        weight_data = (wds.images, wds.labels)
    try:
        report = run_landscapes(
            model,
            x,
            y,
            threat_list,
            indices=list(range(start, start + len(x))),
            out_dir=out,
            resume=resume,
            points=points,
            radius=radius,
            loss=loss,
            attack_steps=attack_steps,
            seed=seed,
            batch_size=batch_size,
            weight_data=weight_data,
            weight_points=weight_points,
            weight_threat=weight_tm,
            weight_adv_examples=weight_adv_examples,
            weight_adv_steps=weight_adv_steps,
            settings={"checkpoint": str(model_source), "dataset": ds.name, "split": split},
            progress=not quiet,
        )
        report.write(out, svg=svg)
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(report.summary())
    click.echo(f"saved {Path(out) / 'landscape.html'} and {Path(out) / 'landscape.json'}")
