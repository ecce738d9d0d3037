"""``--option KEY=VALUE`` pairs of the command line, shared by the subcommands."""

from __future__ import annotations

import json
from typing import Any

import click


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("steps=100", "loss=margin")`` -> ``{"steps": 100, "loss": "margin"}``.

    Values are read as JSON where they parse (numbers, booleans, lists), else kept as text.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
