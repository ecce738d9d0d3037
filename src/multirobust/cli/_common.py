"""Pieces the subcommands share: ``--option KEY=VALUE`` pairs, models and datasets.

Each helper turns a library error into a clean command-line error (``Error: ...``, exit 1)
instead of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
from torch import nn

from .. import data, models

__all__ = [
    "DataSource",
    "ModelSource",
    "dataset_of",
    "load_data",
    "load_examples",
    "load_model",
    "parse_options",
]


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


@dataclass(frozen=True)
class ModelSource:
    """Where the model of a subcommand comes from (``options.model_source``).

    Args:
        checkpoint: a file written by ``models.save``.
    """

    checkpoint: str

    def __str__(self) -> str:
        return self.checkpoint


@dataclass(frozen=True)
class DataSource:
    """Which examples a subcommand works on (``options.data_source``).

    Args:
        dataset: a registered dataset name, or None for the one the checkpoint records.
    """

    dataset: str | None


def load_model(source: ModelSource | str) -> nn.Module:
    """The model ``source`` names, with library errors turned into a clean command-line error."""
    checkpoint = source.checkpoint if isinstance(source, ModelSource) else source
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


def load_examples(
    source: DataSource,
    model: nn.Module,
    split: str,
    n: int | None,
    root: str | None,
    download: bool = True,
) -> data.ImageDataset:
    """The first ``n`` examples of ``split`` that ``source`` names for ``model``."""
    return load_data(dataset_of(model, source.dataset), split, n, root, download)
