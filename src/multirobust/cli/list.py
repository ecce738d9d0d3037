"""``multirobust list``: what the registries hold, and the threat grammar."""

from __future__ import annotations

import click

from .. import attacks, data, models

__all__ = ["command"]


@click.command("list")
def command() -> None:
    """List the registered attacks, models, datasets and the threat grammar."""
    click.echo("attacks:  " + ", ".join(attacks.names()))
    click.echo("models:   " + ", ".join(models.names()))
    click.echo("datasets: " + ", ".join(data.names()))
    click.echo(
        "threats:  linf:EPS, l2:EPS, l1:EPS[,q=PERCENTILE], spatial:DEGREES,PIXELS, "
        "union(T1,T2,...), affine(T1,T2)"
    )
