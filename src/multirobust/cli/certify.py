"""``multirobust certify``: certificates of a checkpoint, beside the attacks' numbers.

Library logic stays in :mod:`multirobust.certify`; the empirical side is
:func:`multirobust.evaluation.evaluate` and its accuracy-vs-ε curves on the same examples.
"""

from __future__ import annotations

import logging
import math

import click

from .. import threats as _threats
from ..certify.layers import UnsupportedLayerError
from ..certify.runner import certify
from ..certify.verify import BOUND_METHODS
from ..evaluation import distributed as _dist
from ..evaluation import presets
from ..evaluation.runner import evaluate
from ..evaluation.threat_curves import threat_curves
from . import options
from ._common import DataSource, ModelSource, load_examples, load_model, writable_out

__all__ = ["command"]

log = logging.getLogger(__name__)


@click.command("certify")
@options.model_source()
@options.data_source()
@options.split()
@options.threats(
    help="ℓp ball to certify, e.g. linf:0.1, l2:0.5, l1:2. Repeatable; the union of all of "
    "them is certified too (an example is certified for the union when every ball is)."
)
@click.option(
    "--smoothing",
    "noises",
    multiple=True,
    help="Randomized smoothing noise NAME:SCALE: gaussian:0.25 (ℓ2, Cohen et al. 2019), "
    "uniform:1 or laplace:0.5 (ℓ1, Yang et al. 2020). Repeatable.",
)
@click.option("--ibp", is_flag=True, help="Interval bound propagation (same as --bounds ibp).")
@click.option(
    "--bounds",
    "bound_methods",
    multiple=True,
    type=click.Choice(BOUND_METHODS),
    help="Bound propagation method: ibp, crown-ibp (never looser than ibp) or crown (tightest, "
    "one backward pass per unstable neuron: slow). Repeatable.",
)
@click.option(
    "--n-samples",
    "n_samples",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Smoothing: estimation samples n per example (Cohen et al.: 100,000).",
)
@click.option(
    "--n0",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Smoothing: selection samples per example.",
)
@click.option(
    "--alpha",
    type=float,
    default=0.001,
    show_default=True,
    help="Smoothing: failure probability of each certificate.",
)
@click.option(
    "--sequential",
    is_flag=True,
    help="Smoothing: stop sampling an example once the threats' radii are decided (same 1 − α "
    "guarantee, at most --n-samples samples; see docs/certification.md).",
)
@options.n(
    default=500,
    aliases=("--num-examples",),
    help="Number of examples (the first n of the split). Under torchrun write --num-examples.",
)
@options.batch_size(default=1000, help="Noisy copies per forward pass (memory bound).")
@click.option(
    "--bound-batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Examples per bound-propagation batch.",
)
@click.option(
    "--radius-steps",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Bounds: bisection steps of each example's verified radius (the curves); 0: none.",
)
@options.seed()
@click.option(
    "--empirical/--no-empirical",
    default=True,
    show_default=True,
    help="Also attack the same examples with `evaluate` (and draw its accuracy-vs-ε curves).",
)
@click.option(
    "--curves/--no-curves",
    default=True,
    show_default=True,
    help="With --empirical: also the accuracy-vs-ε curves (quick preset) on the plots' axes.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(presets.PRESETS)),
    default="standard",
    show_default=True,
    help="Attack ensemble of the empirical side (the curves use the quick preset).",
)
@options.out(required=True, help="Folder for certify.json and certify.html.")
@options.resume(
    help="Save each finished example (smoothing) or batch (bounds) in OUT/partial and reuse "
    "them after an interruption."
)
@options.data_root()
@options.quiet()
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when available, else CPU), cpu, cuda or cuda:K. Under torchrun every "
    "process certifies its share of the examples and rank 0 writes the report.",
)
def command(
    model_source: ModelSource,
    data_source: DataSource,
    split: str,
    threat_texts: tuple[str, ...],
    noises: tuple[str, ...],
    ibp: bool,
    bound_methods: tuple[str, ...],
    n_samples: int,
    n0: int,
    alpha: float,
    sequential: bool,
    n: int,
    batch_size: int,
    bound_batch_size: int,
    radius_steps: int,
    seed: int,
    empirical: bool,
    curves: bool,
    preset: str,
    out: str,
    resume: bool,
    data_root: str | None,
    quiet: bool,
    device: str,
) -> None:
    """Certify a checkpoint under ℓp balls and their union; write certify.json / certify.html.

    Randomized smoothing certifies the smoothed classifier (with probability ≥ 1 − α); bound
    propagation certifies the network itself. Launched with ``torchrun --nproc_per_node K -m
    multirobust certify ...`` the examples are shared among the K processes.
    """
    methods = list(dict.fromkeys((["ibp"] if ibp else []) + list(bound_methods)))
    if not noises and not methods:
        raise click.UsageError("Nothing to certify with: give --smoothing NOISE and/or --ibp")
    try:
        threat_list = [_threats.parse(t) for t in threat_texts]
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    out_dir = writable_out(out)
    model = load_model(model_source)
    ds = load_examples(data_source, model, split, n, data_root, download=False)
    try:
        dev = _dist.device_for(device)
        shard = _dist.init_from_env(dev) if _dist.launched() else None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    model.to(dev)
    try:
        report = certify(
            model,
            ds,
            threats=threat_list,
            smoothing=noises,
            bounds=methods,
            n0=n0,
            n=n_samples,
            alpha=alpha,
            sequential=sequential,
            batch_size=batch_size,
            bound_batch_size=bound_batch_size,
            radius_steps=radius_steps,
            seed=seed,
            progress=not quiet,
            resume_dir=out_dir / "partial" if resume else None,
            distributed=shard is not None,
        )
        if empirical:
            evaluation = evaluate(
                model,
                ds,
                threats=report.threats,
                preset=preset,
                seed=seed,
                progress=not quiet,
                resume_dir=out_dir / "partial" / "evaluate" if resume else None,
                distributed=shard is not None,
            )
            if curves:
                evaluation.curves += threat_curves(
                    model,
                    ds.images,
                    ds.labels,
                    [_threats.parse(t) for t in report.threats],  # the balls, unions unpacked
                    seed=seed,
                    progress=not quiet,
                    distributed=shard is not None,
                )
            report.attach_empirical(evaluation)
    except (ValueError, TypeError, UnsupportedLayerError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        if shard is not None:
            _dist.shutdown()
    if shard is not None and not shard.is_main:
        return
    report.settings["checkpoint"] = str(model_source)
    report.to_json(out_dir / "certify.json")
    report.to_html(out_dir / "certify.html")
    click.echo(report.summary())
    for name, m in report.methods.items():
        for norm, cap in m.cap.items():
            if math.isfinite(cap):
                log.info("%s: %s radius cap %.4g", name, norm, cap)
    click.echo(f"saved {out_dir / 'certify.json'} and {out_dir / 'certify.html'}")
