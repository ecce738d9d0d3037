"""``multirobust audit``: one security audit of a model, every attack surface on one page."""

from __future__ import annotations

import click

from ..audit import PARTS, AuditConfig, AuditError, run_audit
from ..evaluation import presets
from . import options
from ._common import DataSource, ModelSource, load_examples, load_model, parse_options

__all__ = ["command"]


def _pair(text: str) -> tuple[int, int]:
    source, sep, target = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(source), int(target)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not SOURCE:TARGET (two class indices)") from None


@click.command("audit")
@options.model_source()
@options.data_source(help="Dataset of the test examples (default: the checkpoint's).")
@options.threats(
    required=False,
    help="Threat model of the white-box parts, e.g. linf:0.3. Repeatable. Default for MNIST: "
    "linf:0.3, l2:2, l1:10.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(presets.PRESETS)),
    default="quick",
    show_default=True,
    help="Attack ensemble of the white-box evasion part.",
)
@options.n(default=200, help="Test examples attacked (the first n).")
@options.batch_size(default=500)
@options.seed()
@click.option(
    "--confidence",
    type=float,
    default=0.5,
    show_default=True,
    help="Confidence-reduction goal: the true class's probability to push below.",
)
@click.option(
    "--pair", default="3:8", show_default=True, help="Source→target goal: SOURCE:TARGET classes."
)
@click.option("--goal-steps", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--membership-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Members and non-members each in the loss-threshold attack.",
)
@click.option(
    "--shadows",
    type=click.Path(file_okay=False),
    default=None,
    help="A `multirobust membership` run folder with trained shadow models: adds LiRA.",
)
@click.option(
    "--poison",
    "poison_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the poisoning part (see `multirobust backdoor run`), e.g. rate=0.05, "
    'limit=6000, nc_epochs=2, train={"epochs":1}. Repeatable.',
)
@click.option(
    "--certify",
    "certify_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of a `multirobust certify` run to take the certificates from.",
)
@click.option(
    "--api",
    "api_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of an attack through the model's API to take the black-box results from.",
)
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(PARTS),
    help="Part not to run. Repeatable.",
)
@options.out(required=True, help="Folder for audit.html, audit.json and each part's evidence.")
@options.resume(help="Skip the parts an earlier run in OUT finished with the same settings.")
@options.data_root()
@options.quiet()
def command(
    model_source: ModelSource,
    data_source: DataSource,
    threat_texts: tuple[str, ...],
    preset: str,
    n: int,
    batch_size: int,
    seed: int,
    confidence: float,
    pair: str,
    goal_steps: int,
    membership_n: int,
    shadows: str | None,
    poison_pairs: tuple[str, ...],
    certify_dir: str | None,
    api_dir: str | None,
    skip: tuple[str, ...],
    out: str,
    resume: bool,
    data_root: str | None,
    quiet: bool,
) -> None:
    """Audit a model: white-box evasion, membership leakage, poisoning, certificates, API.

    Writes OUT/audit.html (ordered by attacker knowledge, attack surface and goal, each cell
    linked to its evidence) and OUT/audit.json. Exits with an error when a part failed
    (--resume runs it again).
    """
    config = AuditConfig(
        threats=list(threat_texts),
        preset=preset,
        n=n,
        batch_size=batch_size,
        seed=seed,
        confidence=confidence,
        pair=_pair(pair),
        goal_steps=goal_steps,
        membership_n=membership_n,
        shadows=shadows,
        poison=parse_options(poison_pairs, "--poison"),
        certify_dir=certify_dir,
        api_dir=api_dir,
        skip=list(skip),
        progress=not quiet,
    )
    model = load_model(model_source)
    test = load_examples(data_source, model, "test", n, data_root, download=False)
    try:
        body = run_audit(
            model, test, config, out, name=str(model_source), resume=resume, data_root=data_root
        )
    except AuditError as err:
        raise click.ClickException(str(err)) from None
    for name, part in body["parts"].items():
        line = f"{name:11} {part['status']}"
        click.echo(line + (f": {part['reason']}" if part["reason"] else ""))
    click.echo(f"saved {out}/audit.html and audit.json")
    failed = [k for k, v in body["parts"].items() if v["status"] == "failed"]
    if failed:
        raise click.ClickException(
            f"{len(failed)} part(s) failed ({', '.join(failed)}); --resume runs them again"
        )
