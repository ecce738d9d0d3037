"""``multirobust evaluate``: the full evaluation of a checkpoint, ending in report.html."""

from __future__ import annotations

import logging

import click

from .. import threats
from ..evaluation import distributed as _dist
from ..evaluation import presets
from ..evaluation.runner import evaluate
from ..evaluation.threat_curves import threat_curves
from ..reports.leaderboard import Entry, Leaderboard, LeaderboardError
from . import options
from ._common import DataSource, ModelSource, load_examples, load_model, writable_out

__all__ = ["command"]

log = logging.getLogger(__name__)


@click.command("evaluate")
@options.model_source()
@options.data_source()
@options.split()
@options.threats(
    help="Threat model, e.g. linf:0.3, l2:2, l1:10, spatial:30,3, affine(linf:0.3,l1:10). "
    "Repeatable; the union of all of them is reported too."
)
@options.n(
    aliases=("--num-examples",),
    help="Number of examples (the first n of the split). Under torchrun with Python 3.11 write "
    "--num-examples: torchrun's argument parser takes --n for an abbreviation of its own options.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(presets.PRESETS)),
    default="standard",
    show_default=True,
    help="Attack ensemble strength.",
)
@options.out(required=True, help="Folder for report.json and report.html.")
@options.resume(help="Keep finished batches in OUT/partial and reuse them after an interruption.")
@options.batch_size(default=500)
@options.seed()
@click.option(
    "--curves/--no-curves",
    default=True,
    show_default=True,
    help="Accuracy-vs-ε curves (quick preset) for each ℓp threat type.",
)
@click.option(
    "--curve-n",
    type=click.IntRange(min=1),
    default=None,
    help="Examples behind the curves: the first ones (default: all n). Curves attack many "
    "still-robust examples at small ε, so they can cost more than the evaluation itself.",
)
@click.option(
    "--min-norm",
    "min_norms",
    multiple=True,
    type=click.Choice(["linf", "l2", "l1"]),
    help="Also search each example's minimal adversarial distortion in this norm (median and "
    "distribution in the report). Repeatable.",
)
@click.option(
    "--landscapes",
    type=click.IntRange(min=0),
    default=None,
    help="After the attacks, search a grid on a 2-D slice of each lp ball around the first K "
    "still-robust examples; examples it breaks count as broken by 'landscape' and the report "
    "gains the loss-landscape section (docs/landscapes.md). Default: every still-robust "
    "example when the input gradient is masked (the grid needs none), else none; 0: never.",
)
@click.option(
    "--landscape-points",
    type=click.IntRange(min=2),
    default=21,
    show_default=True,
    help="Grid points per axis of --landscapes.",
)
@click.option(
    "--eot-samples",
    type=click.IntRange(min=1),
    default=None,
    help="For a randomised model (outputs that change between identical calls): calls each "
    "white-box gradient is averaged over (EOT) and predictions each verdict takes the majority "
    "of. Default: the preset's (standard 20, quick 10); 1 turns EOT off.",
)
@click.option(
    "--surrogate",
    type=click.Path(dir_okay=False),
    default=None,
    help="A checkpoint to transfer attacks from (e.g. the model's undefended twin): PGD on it "
    "runs on every example still robust after the white-box attacks, judged on the model. "
    "Default: a surrogate distilled from the model's outputs, only where gradients are masked.",
)
@options.db(help="Record the result in this leaderboard database (see `multirobust leaderboard`).")
@options.data_root()
@options.quiet()
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when available, else CPU), cpu, cuda or cuda:K. Under torchrun every "
    "process joins the group (nccl on CUDA, gloo on CPU), evaluates its share of the batches "
    "and rank 0 writes the report.",
)
def command(
    model_source: ModelSource,
    data_source: DataSource,
    split: str,
    threat_texts: tuple[str, ...],
    n: int,
    preset: str,
    out: str,
    resume: bool,
    batch_size: int,
    seed: int,
    curves: bool,
    curve_n: int | None,
    min_norms: tuple[str, ...],
    landscapes: int | None,
    landscape_points: int,
    eot_samples: int | None,
    surrogate: str | None,
    db: str | None,
    data_root: str | None,
    quiet: bool,
    device: str,
) -> None:
    """Evaluate a checkpoint under several threat models and write report.json / report.html.

    Launched with ``torchrun --nproc_per_node K -m multirobust evaluate ...`` the batches are
    shared among the K processes and the report is the one a single process would write.
    """
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    out_dir = writable_out(out)
    model = load_model(model_source)
    twin = None if surrogate is None else load_model(surrogate)
    ds = load_examples(data_source, model, split, n, data_root, download=False)
    try:
        dev = _dist.device_for(device)
        shard = _dist.init_from_env(dev) if _dist.launched() else None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    model.to(dev)
    if twin is not None:
        twin.to(dev)
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
            min_norm=min_norms,
            landscapes=landscapes,
            landscape_points=landscape_points,
            eot_samples=eot_samples,
            surrogate=twin,
            distributed=shard is not None,
        )
        if curves:
            report.curves += threat_curves(
                model,
                ds.images[:curve_n],
                ds.labels[:curve_n],
                threat_list,
                batch_size=batch_size,
                seed=seed,
                progress=not quiet,
                distributed=shard is not None,
                eot_samples=eot_samples,
            )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        if shard is not None:
            _dist.shutdown()
    if shard is not None and not shard.is_main:
        return
    report.settings["checkpoint"] = str(model_source)
    report.to_json(out_dir / "report.json")
    report.to_html(out_dir / "report.html")
    click.echo(report.summary())
    click.echo(f"saved {out_dir / 'report.json'} and {out_dir / 'report.html'}")
    if db is not None:
        try:
            with Leaderboard(db) as board:
                board.record(Entry.from_report(report, out_dir.name, out_dir / "report.json"))
        except LeaderboardError as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"recorded the result in {db}")
