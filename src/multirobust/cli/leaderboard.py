"""``multirobust leaderboard``: every evaluation recorded in the local SQLite leaderboard."""

from __future__ import annotations

from pathlib import Path

import click

from ..reports.compare import CompareError, load_models
from ..reports.leaderboard import (
    Entry,
    Leaderboard,
    LeaderboardError,
    default_path,
    format_table,
)
from . import options

__all__ = ["command"]


@click.command("leaderboard")
@options.db()
@click.option(
    "--add",
    "add",
    multiple=True,
    type=click.Path(exists=False),
    help="Record a report.json (or run folder) first. Repeatable.",
)
def command(db: str | None, add: tuple[str, ...]) -> None:
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
