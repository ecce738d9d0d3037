"""The ``multirobust`` command line: one module per subcommand, shared options in ``options``.

Each subcommand module exposes one click command named ``command`` and holds no library logic:
it parses flags, calls the library and prints or saves what the library returns. Names (attacks,
models, datasets, threats) resolve only through the registries. To add a subcommand, write
``cli/<name>.py`` with ``command`` and add it to ``_SUBCOMMANDS`` below (docs/architecture.md).
"""

from __future__ import annotations

import logging

import click

from .. import __version__
from . import (
    attack,
    audit,
    backdoor,
    certify,
    compare,
    evaluate,
    extract,
    landscape,
    leaderboard,
    membership,
    optimizer_study,
    quickstart,
    serve,
    train,
    universal,
)
from . import list as list_

__all__ = ["main"]


@click.group()
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Adversarial robustness of PyTorch image classifiers under many threat models at once."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


_SUBCOMMANDS = (
    attack,
    quickstart,
    list_,
    evaluate,
    compare,
    leaderboard,
    train,
    optimizer_study,
    universal,
    serve,
    extract,
    backdoor,
    membership,
    audit,
    certify,
    landscape,
)
for _module in _SUBCOMMANDS:
    main.add_command(_module.command)
