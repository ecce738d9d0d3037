"""``multirobust quickstart``: train a small MNIST CNN, then evaluate it into report.html."""

from __future__ import annotations

import click
import torch

from .. import models
from ..training import train_standard
from . import evaluate, options
from ._common import load_data, writable_out

__all__ = ["QUICKSTART_CURVE_N", "command"]

#: Examples behind quickstart's accuracy-vs-ε curves (the evaluation itself uses all --n).
QUICKSTART_CURVE_N = 200


@click.command("quickstart")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Passes over the 60,000 MNIST training images: about 33 s each on a 2-core x86 machine "
    "with three other jobs on it (2026-12-02, the README's run); longer under heavier load.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=None,
    help="Optional wall-clock cap on training.",
)
@options.n(help="Test images to evaluate.")
@options.out(default="runs/quickstart")
@options.data_root()
@options.seed()
@options.quiet()
@click.pass_context
def command(
    ctx: click.Context,
    epochs: int,
    seconds: float | None,
    n: int,
    out: str,
    data_root: str | None,
    seed: int,
    quiet: bool,
) -> None:
    """Train a small MNIST CNN, evaluate it and write OUT/report.html (6-11 min on 2 cores).

    The evaluation is `multirobust evaluate` with the quick preset under ℓ∞ 0.3, ℓ2 2, ℓ1 10 and
    spatial 30°/3 px, their union, the checks and accuracy-vs-ε curves.
    """
    # The data first: a run that cannot find it stops before creating anything (no empty
    # output folder). Reading MNIST takes about a second; the output check still precedes
    # the training.
    train = load_data("mnist", "train", None, data_root)
    load_data("mnist", "test", n, data_root)  # fetch it now if it is missing
    out_dir = writable_out(out)
    torch.manual_seed(seed)
    model = models.for_dataset("small_cnn", "mnist")
    click.echo(f"training small_cnn on MNIST ({epochs} epoch(s)) ...")
    stats = train_standard(
        model, train, epochs=epochs, seconds=seconds, seed=seed, progress=not quiet
    )
    ckpt = out_dir / "model.pt"
    models.save(model, ckpt, dataset="mnist", metadata={"method": "standard", **stats})
    click.echo(f"trained on {stats['examples']} examples in {stats['seconds']:.0f} s; saved {ckpt}")
    threat_texts = ("linf:0.3", "l2:2", "l1:10", "spatial:30,3")
    click.echo(f"evaluating on {n} test images ({', '.join(threat_texts)}; quick preset) ...")
    ctx.invoke(
        evaluate.command,
        checkpoint=str(ckpt),
        dataset="mnist",
        threat_texts=threat_texts,
        n=n,
        preset="quick",
        curve_n=min(n, QUICKSTART_CURVE_N),
        out=out,
        seed=seed,
        data_root=data_root,
        quiet=quiet,
    )
    click.echo(f"open {out_dir / 'report.html'} in a browser")
