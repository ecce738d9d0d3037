"""``multirobust membership``: shadow models, membership attacks and their report.

The library logic is :mod:`multirobust.privacy.experiment`; this module only maps flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from ..privacy.experiment import MembershipConfig, MembershipRun
from ..privacy.inference import METHODS
from ..training import ConfigError
from . import options as opts
from ._common import parse_options

__all__ = ["command"]

_OUT = opts.out(required=True, help="The run folder.")
_RESUME = opts.resume(help="Continue an interrupted run.")
_QUIET = opts.quiet()


def _settings(f: Callable[..., Any]) -> Callable[..., Any]:
    params = [
        click.option("--dataset", default="mnist", show_default=True),
        click.option(
            "--pool",
            type=click.IntRange(min=4),
            default=None,
            help="Attack the first N training images (default: all).",
        ),
        click.option(
            "--shadows", type=int, default=16, show_default=True, help="Shadow models (even, >= 4)."
        ),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option(
            "--target",
            default="shadow",
            show_default=True,
            help="A checkpoint to attack, or 'shadow' (one more model trained like "
            "the shadows on its own random half).",
        ),
        click.option(
            "--members",
            default="shadow",
            show_default=True,
            help="The target's members among the pool: first:N, range:A:B, none "
            "(it saw none of them), or shadow.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Training epochs of each shadow (default 4, the zoo's).",
        ),
        click.option(
            "--method", default=None, help="Training method of the shadows (default standard)."
        ),
        click.option(
            "--threat",
            "threats",
            multiple=True,
            help="Threat model(s) of an adversarial training method.",
        ),
        click.option(
            "--train",
            "train_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other training setting of the shadows (see `multirobust train`). Repeatable.",
        ),
        click.option(
            "--attack",
            "methods",
            multiple=True,
            type=click.Choice(METHODS),
            help="Membership attack (default: all). Repeatable.",
        ),
        click.option(
            "--fpr",
            "fprs",
            multiple=True,
            type=float,
            help="FPR to report the TPR at (default 0.001 and 0.0001). Repeatable.",
        ),
        click.option(
            "--per-example-variance",
            is_flag=True,
            help="LiRA with per-example instead of global variances.",
        ),
    ]
    return opts.group(*params)(f)


def _workers(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Shadow models trained at once, one process each (default: min(2, cores)).",
    )(f)


def _config(flags: dict[str, Any], quiet: bool) -> MembershipConfig:
    train = parse_options(flags.pop("train_options"))
    for key in ("epochs", "method"):
        value = flags.pop(key)
        if value is not None:
            train[key] = value
    threats = list(flags.pop("threats"))
    if threats:
        train["threats"] = threats
    methods = list(flags.pop("methods")) or list(METHODS)
    fprs = list(flags.pop("fprs")) or [1e-3, 1e-4]
    fixed = not flags.pop("per_example_variance")
    return MembershipConfig(
        **flags,
        train=train,
        methods=methods,
        fprs=fprs,
        fixed_variance=fixed,
        progress=not quiet,
    )


def _print(rep: dict[str, Any]) -> None:
    res = rep["result"]
    click.echo(f"{rep['pool']} examples, {rep['target_members']} members; {res['shadows']} shadows")
    acc = rep["target_accuracy"]
    click.echo(
        f"target accuracy: {acc['members']:.2%} on its members, {acc['non_members']:.2%} on the "
        "other pool examples"
    )
    for name, a in res["attacks"].items():
        points = ", ".join(
            f"TPR {p['tpr']:.3%} at {p['fpr']:.2%} FPR (reached {p['achieved_fpr']:.3%})"
            for p in a["operating_points"]
        )
        click.echo(f"{name}: AUC {a['auc']:.4f}; {points}")
    cost = rep["cost"]
    click.echo(
        f"shadow training: {cost['shadow_train_seconds_total'] / 60:.1f} min in total "
        f"over {len(cost['shadow_train_seconds'])} models"
    )


@click.group("membership")
def command() -> None:
    """Membership inference: shadow models, the loss-threshold attack and LiRA, a report.

    Every subcommand works on one run folder (--out); `run` does every stage.
    """


@command.command("run")
@_OUT
@_settings
@_workers
@_RESUME
@_QUIET
def run_cmd(out: str, resume: bool, quiet: bool, **flags: Any) -> None:
    """Every stage: train the shadows (in parallel), attack the target, report."""
    try:
        run = MembershipRun.start(out, _config(flags, quiet), resume=resume)
        rep = run.run_all()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    _print(rep)
    click.echo(f"saved {rep['evidence']['folder']}/report.json and report.html")


@command.command("shadows")
@_OUT
@_settings
@_workers
@_RESUME
@_QUIET
def shadows_cmd(out: str, resume: bool, quiet: bool, **flags: Any) -> None:
    """Start a run and train its shadow models (resumable, in parallel processes)."""
    try:
        run = MembershipRun.start(out, _config(flags, quiet), resume=resume)
        timing = run.train_shadows()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    last = timing["stages"][-1]
    click.echo(
        f"{last['models']} model(s) ready in {run.out} ({last['wall_seconds'] / 60:.1f} min "
        f"with {last['workers']} worker(s))"
    )


@command.command("attack")
@_OUT
def attack_cmd(out: str) -> None:
    """Run the attacks against the target with the trained shadows."""
    try:
        result = MembershipRun.open(out).attack()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for name, a in result.outcomes.items():
        click.echo(
            f"{name}: AUC {a.roc.auc:.4f}; "
            + ", ".join(f"TPR {p['tpr']:.3%} at {p['fpr']:.2%} FPR" for p in a.operating_points)
        )


@command.command("report")
@_OUT
def report_cmd(out: str) -> None:
    """Write report.json and report.html (ROC on log-log axes, TPR table, cost)."""
    try:
        run = MembershipRun.open(out)
        run.config = dataclasses.replace(run.config, progress=False)
        rep = run.report()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    _print(rep)
    click.echo(f"saved {rep['evidence']['folder']}/report.json and report.html")
