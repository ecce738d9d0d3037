"""``multirobust universal``: one perturbation for all images (Moosavi-Dezfooli et al. 2017)."""

from __future__ import annotations

import platform
import time

import click
import torch

from .. import __version__, threats
from ..attacks.universal import universal_perturbation
from ..robustness.universal_report import universal_png, universal_summary, write_universal
from ..threats import L2Ball, LinfBall
from . import options
from ._common import DataSource, ModelSource, load_examples, load_model, writable_out

__all__ = ["command"]


@click.command("universal")
@options.model_source()
@options.data_source()
@options.threat(default="linf:0.3")
@click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--n-test", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--max-passes", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--target-fooling-rate",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.8,
    show_default=True,
)
@options.batch_size(default=32)
@click.option("--overshoot", type=click.FloatRange(min=0), default=0.02, show_default=True)
@click.option("--deepfool-norm", type=click.Choice(["l2", "linf"]), default="l2", show_default=True)
@options.seed()
@options.data_root()
@options.out(required=True)
@options.quiet(help="No progress bar.")
def command(
    model_source: ModelSource,
    data_source: DataSource,
    threat_text: str,
    n_train: int,
    n_test: int,
    max_passes: int,
    target_fooling_rate: float,
    batch_size: int,
    overshoot: float,
    deepfool_norm: str,
    seed: int,
    data_root: str | None,
    out: str,
    quiet: bool,
) -> None:
    """Universal adversarial perturbation on training images; fooling rate on test images."""
    try:
        threat = threats.parse(threat_text)
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    if not isinstance(threat, LinfBall | L2Ball):
        raise click.ClickException(f"--threat must be an ℓ∞ or ℓ2 ball, got {threat}")
    out_dir = writable_out(out)
    model = load_model(model_source)
    # With --data the file's first n_train examples make the perturbation and the next n_test
    # measure it: held-out images, as with a dataset's train and test splits.
    train = load_examples(data_source, model, "train", n_train, data_root)
    skip = train.images.shape[0] if data_source.file is not None else 0
    test = load_examples(data_source, model, "test", n_test, data_root, skip=skip)
    start = time.perf_counter()
    try:
        res = universal_perturbation(
            model,
            train,
            threat,
            max_passes=max_passes,
            target_fooling_rate=target_fooling_rate,
            overshoot=overshoot,
            deepfool_norm=deepfool_norm,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    seconds = time.perf_counter() - start
    summary = universal_summary(model, res, test, seconds)
    summary["settings"].update(
        {
            "checkpoint": str(model_source),
            "dataset": train.name,
            "n_train": train.images.shape[0],
            "n_test": test.images.shape[0],
            "multirobust": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
    )
    png = universal_png(model, res.perturbation, test.images, test.class_names, 8)
    write_universal(summary, res.perturbation, png, out_dir)
    click.echo(
        f"universal perturbation under {res.threat}: fooling rate {res.best_fooling_rate:.1%} on "
        f"{train.images.shape[0]} training images, {summary['fooling_rate_test']:.1%} on "
        f"{test.images.shape[0]} held-out test images ({res.passes} pass(es), {seconds:.0f} s)"
    )
    click.echo(f"saved {out_dir / 'universal.pt'}, universal.json and universal.png")
