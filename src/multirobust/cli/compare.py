"""``multirobust compare``: models side by side on accuracy/robustness plots."""

from __future__ import annotations

from pathlib import Path

import click

from ..reports.compare import CompareError, compare
from ..reports.leaderboard import Entry, Leaderboard, LeaderboardError, default_path
from . import options
from ._common import writable_out

__all__ = ["command"]


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=False))
@options.out(required=True, help="Folder for compare.html, compare.png and compare.json.")
@options.db()
@click.option("--no-db", is_flag=True, help="Do not record the reports in the leaderboard.")
def command(reports: tuple[str, ...], out: str, db: str | None, no_db: bool) -> None:
    """Place models on clean accuracy vs robustness plots (Su et al. 2018).

    REPORTS are report.json files written by `multirobust evaluate`, or the run folders that
    hold them. Each is also recorded in the leaderboard (unless --no-db).
    """
    writable_out(out)
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
        per_threat = ", ".join(f"{t} {a:.2%}" for t, a in m.robust_accuracy.items())
        medians = ", ".join(f"median {k} {v:.4g}" for k, v in m.min_distortion.items())
        click.echo(
            f"{m.label} (n = {m.n}, {m.preset or 'unknown'} preset): clean "
            f"{m.clean_accuracy:.2%}, {per_threat + ', ' if per_threat else ''}union "
            f"{m.union_accuracy:.2%}" + (f", {medians}" if medians else "")
        )
    click.echo("Pareto frontier (clean vs union): " + ", ".join(summary["pareto"]["union"]))
    fit = summary["fits"]["union"]
    if fit is not None:
        click.echo(
            f"trend over {fit['models']} models: union = {fit['a']:.3g} {fit['b']:+.3g} × clean "
            f"(both in %), R² = {fit['r2']:.2f}"
        )
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}")
    where = Path(out)
    click.echo(f"saved {where / 'compare.html'}, {where / 'compare.png'}, {where / 'compare.json'}")
    if not no_db:
        click.echo(f"recorded {len(models)} result(s) in {db or default_path()}")
