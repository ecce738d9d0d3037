"""``multirobust evaluate``: the full evaluation of a checkpoint, ending in report.html."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .. import data, models, threats
from ..threats import LpBall
from . import presets
from .curves import curve
from .runner import evaluate

log = logging.getLogger(__name__)

#: Points of the accuracy-vs-ε curves, as multiples of the evaluated ε.
CURVE_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@click.command("evaluate")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False),
    help="Checkpoint written by multirobust (models.save).",
)
@click.option("--dataset", default=None, help="Dataset name (default: the checkpoint's).")
@click.option("--split", default="test", show_default=True)
@click.option(
    "--threat",
    "threat_texts",
    multiple=True,
    required=True,
    help="Threat model, e.g. linf:0.3, l2:2, l1:10, spatial:30,3, affine(linf:0.3,l1:10). "
    "Repeatable; the union of all of them is reported too.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of examples (the first n of the split).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(presets.PRESETS)),
    default="standard",
    show_default=True,
    help="Attack ensemble strength.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for report.json and report.html.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep finished batches in OUT/partial and reuse them after an interruption.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--curves/--no-curves",
    default=True,
    show_default=True,
    help="Accuracy-vs-ε curves (quick preset) for each ℓp threat type.",
)
@click.option("--data-root", default=None, help="Data folder (default: $MULTIROBUST_DATA).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate_cmd(
    checkpoint: str,
    dataset: str | None,
    split: str,
    threat_texts: tuple[str, ...],
    n: int,
    preset: str,
    out: str,
    resume: bool,
    batch_size: int,
    seed: int,
    curves: bool,
    data_root: str | None,
    quiet: bool,
) -> None:
    """Evaluate a checkpoint under several threat models and write report.json / report.html."""
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        model = models.load(checkpoint)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    dataset = dataset or getattr(model, "multirobust_checkpoint", {}).get("dataset")
    if not dataset:
        raise click.UsageError("The checkpoint names no dataset: pass --dataset")
    try:
        ds = data.load(dataset, split, root=data_root, limit=n, download=False)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    out_dir = Path(out)
    try:
        report = evaluate(
            model,
            ds,
            threats=threat_list,
            preset=preset,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
            resume_dir=out_dir / "partial" if resume else None,
        )
        if curves:
            eps_by_kind: dict[str, set[float]] = {}
            for t in threat_list:
                if isinstance(t, LpBall):
                    eps_by_kind.setdefault(t.name, set()).update(
                        round(k * t.eps, 6) for k in CURVE_MULTIPLES
                    )
            for kind, eps in sorted(eps_by_kind.items()):
                report.curves.append(
                    curve(
                        model,
                        ds,
                        threat_type=kind,
                        eps_list=sorted(eps),
                        preset="quick",
                        batch_size=batch_size,
                        seed=seed,
                        progress=not quiet,
                    )
                )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    report.settings["checkpoint"] = str(checkpoint)
    report.to_json(out_dir / "report.json")
    report.to_html(out_dir / "report.html")
    click.echo(report.summary())
    click.echo(f"saved {out_dir / 'report.json'} and {out_dir / 'report.html'}")
