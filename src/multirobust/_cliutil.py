"""Pieces the subcommands share: ``--option KEY=VALUE`` pairs, checkpoints, datasets."""

from __future__ import annotations

import json
from typing import Any

import click
from torch import nn

from . import data, models


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


def load_model(checkpoint: str) -> nn.Module:
    """``models.load``, its errors turned into a clean command-line error."""
    try:
        return models.load(checkpoint)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


def dataset_of(model: nn.Module, dataset: str | None) -> str:
    """``--dataset`` if given, else the dataset the checkpoint records."""
    name = dataset or getattr(model, "multirobust_checkpoint", {}).get("dataset")
    if not name:
        raise click.UsageError("The checkpoint names no dataset: pass --dataset")
    return str(name)


def load_data(
    dataset: str, split: str, n: int | None, root: str | None, download: bool = True
) -> data.ImageDataset:
    """``data.load``, its errors turned into a clean command-line error."""
    try:
        return data.load(dataset, split, root=root, limit=n, download=download)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
