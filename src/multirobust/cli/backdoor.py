"""``multirobust backdoor``: poison, train, detect, defend and report, in one resumable folder.

The library logic is :mod:`multirobust.poisoning.experiment`; this module only maps flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from ..poisoning.base import MODES
from ..poisoning.experiment import ATTACKS, DEFENCES, DETECTORS, BackdoorConfig, BackdoorRun
from ..poisoning.report import detection_line
from ..poisoning.triggers import PATTERNS, POSITIONS
from ..training import ConfigError
from . import options as opts
from ._common import parse_options

__all__ = ["command"]

_OUT = opts.out(required=True, help="The run folder.")
_RESUME = opts.resume(help="Continue an interrupted run.")
_QUIET = opts.quiet()


def _settings(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a backdoor run (``run`` and ``poison``)."""
    params = [
        click.option("--dataset", default="mnist", show_default=True),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            default=None,
            help="Train on the first N training images (default: all).",
        ),
        click.option(
            "--test-n",
            type=click.IntRange(min=1),
            default=None,
            help="Measure on the first N test images (default: all).",
        ),
        click.option("--attack", type=click.Choice(ATTACKS), default="badnets", show_default=True),
        click.option(
            "--rate",
            type=float,
            default=0.01,
            show_default=True,
            help="Fraction of the training set poisoned, in (0, 1].",
        ),
        click.option(
            "--target", type=int, default=0, show_default=True, help="Target class (all-to-one)."
        ),
        click.option("--mode", type=click.Choice(MODES), default="all-to-one", show_default=True),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Seeds the poisoning, the defender's clean split, the detectors and the "
            "defences; the training seed is the recipe's (--train seed=S).",
        ),
        click.option("--patch-size", type=int, default=3, show_default=True),
        click.option(
            "--patch-position",
            type=click.Choice(POSITIONS),
            default="bottom-right",
            show_default=True,
        ),
        click.option(
            "--patch-pattern",
            type=click.Choice(PATTERNS),
            default=None,
            help="Default: white (BadNets), checkerboard (clean-label).",
        ),
        click.option(
            "--alpha",
            type=float,
            default=0.2,
            show_default=True,
            help="Blend ratio of the Blended trigger.",
        ),
        click.option(
            "--surrogate",
            default=None,
            help="Checkpoint whose adversarial perturbations the clean-label attack "
            "uses (e.g. zoo/pgd-linf.pt).",
        ),
        click.option(
            "--threat",
            default="linf:0.3",
            show_default=True,
            help="Threat model of the clean-label perturbations.",
        ),
        click.option("--attack-steps", type=click.IntRange(min=1), default=40, show_default=True),
        click.option(
            "--clean-fraction",
            type=float,
            default=0.05,
            show_default=True,
            help="Share of the training split the defender gets as clean data.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Training epochs (default 3).",
        ),
        click.option(
            "--train",
            "train_options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other training setting (see `multirobust train`), e.g. "
            "arch=small_cnn, lr=0.001. Repeatable.",
        ),
        click.option("--no-baseline", is_flag=True, help="Do not train the clean reference model."),
        click.option(
            "--detector",
            "detectors",
            multiple=True,
            type=click.Choice(DETECTORS),
            help="Detector to run (default: all). Repeatable.",
        ),
        click.option(
            "--defence",
            "defences",
            multiple=True,
            type=click.Choice(DEFENCES),
            help="Defence to run (default: all). Repeatable.",
        ),
        click.option(
            "--ac-reduce", type=click.Choice(["ica", "pca"]), default="ica", show_default=True
        ),
        click.option(
            "--spectral-eps",
            type=float,
            default=0.1,
            show_default=True,
            help="Spectral signatures' bound on the poisoned share of a class.",
        ),
        click.option(
            "--nc-epochs",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="Neural Cleanse's optimisation epochs per class.",
        ),
        click.option("--finetune-epochs", type=click.IntRange(min=0), default=5, show_default=True),
    ]
    return opts.group(*params)(f)


def _config(flags: dict[str, Any], quiet: bool) -> BackdoorConfig:
    train = parse_options(flags.pop("train_options"))
    epochs = flags.pop("epochs")
    if epochs is not None:
        train["epochs"] = epochs
    detectors = list(flags.pop("detectors")) or list(DETECTORS)
    defences = list(flags.pop("defences")) or list(DEFENCES)
    baseline = not flags.pop("no_baseline")
    return BackdoorConfig(
        **flags,
        train=train,
        baseline=baseline,
        detectors=detectors,
        defences=defences,
        progress=not quiet,
    )


def _reopen(out: str, quiet: bool) -> BackdoorRun:
    run = BackdoorRun.open(out)
    run.config = dataclasses.replace(run.config, progress=not quiet)
    return run


def _print_metrics(rep: dict[str, Any]) -> None:
    click.echo(f"{'model':34} {'clean acc':>10} {'ASR':>8} {'robust acc':>11}")
    rows = []
    m = rep["metrics"]
    if "baseline" in m:
        rows.append(("clean model", m["baseline"]))
    rows.append(("poisoned, no defence", m["poisoned"]))
    rows += [(f"after {k}", v["after"]) for k, v in rep["defences"].items()]
    for name, r in rows:
        click.echo(
            f"{name:34} {r['clean_accuracy']:>10.2%} {r['attack_success_rate']:>8.2%} "
            f"{r['robust_accuracy']:>11.2%}"
        )
    for name, d in rep["detectors"].items():
        click.echo(detection_line(name, d["poisoned"]))


@click.group("backdoor")
def command() -> None:
    """Backdoors and poisoning: poison a dataset, train on it, detect, defend, report.

    Every subcommand works on one run folder (--out); `run` does every stage.
    """


@command.command("run")
@_OUT
@_settings
@_RESUME
@_QUIET
def run_cmd(out: str, resume: bool, quiet: bool, **flags: Any) -> None:
    """Every stage: poison, train (and a clean baseline), detect, defend, report."""
    try:
        run = BackdoorRun.start(out, _config(flags, quiet), resume=resume)
        rep = run.run_all(resume=resume)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    _print_metrics(rep)
    click.echo(f"saved {rep['evidence']['folder']}/report.json and report.html")


@command.command("poison")
@_OUT
@_settings
@_RESUME
@_QUIET
def poison_cmd(out: str, resume: bool, quiet: bool, **flags: Any) -> None:
    """Start a run: check the settings, poison the training set, save the record."""
    try:
        run = BackdoorRun.start(out, _config(flags, quiet), resume=resume)
        poisoned = run.poison()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    rec = poisoned.record
    click.echo(
        f"poisoned {len(rec.indices)} of {rec.size} training examples "
        f"({rec.rate:.2%}); record in {run.poison_dir}"
    )


@command.command("train")
@_OUT
@_RESUME
@_QUIET
def train_cmd(out: str, resume: bool, quiet: bool) -> None:
    """Train on the poisoned data (and the clean baseline); then measure them."""
    try:
        run = _reopen(out, quiet)
        run.train(resume=resume)
        m = run.measure()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for key, r in m.items():
        click.echo(
            f"{key}: clean {r['clean_accuracy']:.2%}, ASR {r['attack_success_rate']:.2%}, "
            f"robust {r['robust_accuracy']:.2%}"
        )


@command.command("detect")
@_OUT
@_RESUME
@_QUIET
def detect_cmd(out: str, resume: bool, quiet: bool) -> None:
    """Run the detectors of poisoned training examples; score them against the record."""
    try:
        res = _reopen(out, quiet).detect(resume=resume)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for name, entry in res.items():
        click.echo(detection_line(name, entry["poisoned"]["score"]))


@command.command("defend")
@_OUT
@_RESUME
@_QUIET
def defend_cmd(out: str, resume: bool, quiet: bool) -> None:
    """Apply the defences to the poisoned model; metrics before and after."""
    try:
        res = _reopen(out, quiet).defend(resume=resume)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    for name, entry in res.items():
        a = entry["after"]
        click.echo(
            f"after {name}: clean {a['clean_accuracy']:.2%}, ASR {a['attack_success_rate']:.2%}, "
            f"robust {a['robust_accuracy']:.2%}"
        )


@command.command("report")
@_OUT
def report_cmd(out: str) -> None:
    """Write report.json and report.html from the stages run so far."""
    try:
        rep = _reopen(out, True).report()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    _print_metrics(rep)
    click.echo(f"saved {rep['evidence']['folder']}/report.json and report.html")
