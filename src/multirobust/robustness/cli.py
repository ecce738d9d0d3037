"""``multirobust compare`` and ``multirobust leaderboard``: models side by side, and the user's
own leaderboard of every evaluation recorded."""

from __future__ import annotations

from pathlib import Path

import click

from .compare import CompareError, compare, load_models
from .leaderboard import Entry, Leaderboard, LeaderboardError, default_path, format_table

__all__ = ["compare_cmd", "leaderboard_cmd"]

_DB_HELP = (
    "Leaderboard database (SQLite). Default: $MULTIROBUST_HOME/leaderboard.sqlite, else "
    "leaderboard.sqlite in $XDG_CACHE_HOME/multirobust or ~/.cache/multirobust."
)


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=False))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for compare.html, compare.png and compare.json.",
)
@click.option("--db", default=None, type=click.Path(dir_okay=False), help=_DB_HELP)
@click.option("--no-db", is_flag=True, help="Do not record the reports in the leaderboard.")
def compare_cmd(reports: tuple[str, ...], out: str, db: str | None, no_db: bool) -> None:
    """Place models on clean accuracy vs robustness plots (Su et al. 2018).

    REPORTS are report.json files written by `multirobust evaluate`, or the run folders that
    hold them. Each is also recorded in the leaderboard (unless --no-db).
    """
    try:
        models, summary = compare(list(reports), out)
    except CompareError as err:
        raise click.ClickException(str(err)) from None
    if not no_db:
        try:
            with Leaderboard(db) as board:
                board.record(*(Entry.from_report(m.report, m.label, m.path) for m in models))
        except LeaderboardError as err:
            raise click.ClickException(str(err)) from None
    for m in models:
        medians = ", ".join(f"median {k} {v:.4g}" for k, v in m.min_distortion.items())
        click.echo(
            f"{m.label}: clean {m.clean_accuracy:.2%}, union {m.union_accuracy:.2%}"
            + (f", {medians}" if medians else "")
        )
    click.echo("Pareto frontier (clean vs union): " + ", ".join(summary["pareto"]["union"]))
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}")
    where = Path(out)
    click.echo(f"saved {where / 'compare.html'}, {where / 'compare.png'}, {where / 'compare.json'}")
    if not no_db:
        click.echo(f"recorded {len(models)} result(s) in {db or default_path()}")


@click.command("leaderboard")
@click.option("--db", default=None, type=click.Path(dir_okay=False), help=_DB_HELP)
@click.option(
    "--add",
    "add",
    multiple=True,
    type=click.Path(exists=False),
    help="Record a report.json (or run folder) first. Repeatable.",
)
def leaderboard_cmd(db: str | None, add: tuple[str, ...]) -> None:
    """Print every recorded evaluation, best union robust accuracy first."""
    path = Path(db) if db else default_path()
    if not add and not path.exists():
        click.echo(f"no leaderboard at {path} yet: record evaluations with `multirobust compare`")
        return
    try:
        models = load_models(list(add)) if add else []
        with Leaderboard(path) as board:
            if models:
                board.record(*(Entry.from_report(m.report, m.label, m.path) for m in models))
            entries = board.entries()
    except (CompareError, LeaderboardError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"leaderboard {path} ({len(entries)} result(s))")
    click.echo(format_table(entries))
