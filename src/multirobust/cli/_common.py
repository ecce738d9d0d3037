"""Pieces the subcommands share: ``--option KEY=VALUE`` pairs, models and datasets.

Each helper turns a library error into a clean command-line error (``Error: ...``, exit 1)
instead of a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from .. import data, models
from ..atomic import check_writable_dir

__all__ = [
    "DataSource",
    "ModelSource",
    "dataset_of",
    "load_data",
    "load_examples",
    "load_model",
    "parse_options",
    "writable_out",
]


def parse_options(pairs: tuple[str, ...], option: str = "--option") -> dict[str, Any]:
    """``("steps=100", "loss=margin")`` -> ``{"steps": 100, "loss": "margin"}``.

    Values are read as JSON where they parse (numbers, booleans, lists), else kept as text.
    ``option`` names the flag in the error for a pair without ``=``.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@dataclass(frozen=True)
class ModelSource:
    """Where the model of a subcommand comes from (``options.model_source``): a checkpoint
    written by multirobust, or the user's own factory with optional weights.

    Args:
        checkpoint: a file written by ``models.save`` (``.pt`` or ``.safetensors``).
        model: ``package.module:factory`` returning an ``nn.Module``.
        model_args: ``KEY=VALUE`` arguments of the factory.
        weights: safetensors or a ``torch.save``'d state dict for ``model``.

    Raises:
        click.UsageError: for a combination that does not name exactly one model.
    """

    checkpoint: str | None = None
    model: str | None = None
    model_args: tuple[str, ...] = ()
    weights: str | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.model is None):
            raise click.UsageError(
                "Pass either --checkpoint FILE (a multirobust checkpoint) or --model "
                "package.module:factory (your own model)"
                + (", not both" if self.checkpoint is not None else "")
            )
        if self.model is None and (self.model_args or self.weights is not None):
            raise click.UsageError("--model-arg and --weights go with --model, not --checkpoint")

    def __str__(self) -> str:
        if self.checkpoint is not None:
            return self.checkpoint
        text = f"{self.model}({', '.join(self.model_args)})"
        return text + (f" weights={self.weights}" if self.weights else "")


@dataclass(frozen=True)
class DataSource:
    """Which examples a subcommand works on (``options.data_source``).

    Args:
        dataset: a registered dataset name, or None for the one the checkpoint records.
        file: an ``.npz`` file of the user's own examples (arrays ``x`` and ``y``).

    Raises:
        click.UsageError: when both are given.
    """

    dataset: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if self.dataset is not None and self.file is not None:
            raise click.UsageError("Pass either --dataset NAME or --data FILE.npz, not both")


def load_model(source: ModelSource | str) -> nn.Module:
    """The model ``source`` names, in eval mode; library errors become command-line errors."""
    if isinstance(source, str):
        source = ModelSource(checkpoint=source)
    try:
        if source.checkpoint is not None:
            return models.load(source.checkpoint)
        assert source.model is not None
        # The console script does not put the working folder on the import path as
        # `python -m` does; a user's module next to their data is the common case.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        kwargs = parse_options(source.model_args, "--model-arg")
        model = models.from_factory(source.model, kwargs)
        if source.weights is not None:
            models.load_weights(model, source.weights)
        return model
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


def dataset_of(model: nn.Module, dataset: str | None) -> str:
    """``--dataset`` if given, else the dataset the checkpoint records."""
    name = dataset or getattr(model, "multirobust_checkpoint", {}).get("dataset")
    if not name:
        raise click.UsageError("The model names no dataset: pass --dataset NAME or --data FILE.npz")
    return str(name)


def load_data(
    dataset: str, split: str, n: int | None, root: str | None, download: bool = True
) -> data.ImageDataset:
    """``data.load``, its errors turned into a clean command-line error."""
    try:
        return data.load(dataset, split, root=root, limit=n, download=download)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None


def _check_fits(model: nn.Module, ds: data.ImageDataset) -> None:
    """One forward pass on the first example: the model takes these images and has an output
    for every label."""
    if not len(ds):
        return
    try:
        with torch.no_grad():
            outputs = model(ds.images[:1]).shape[-1]
    except Exception as err:  # the user's model on the user's data: say which pair failed
        raise click.ClickException(
            f"The model cannot take the images of {ds.name} (shape "
            f"{tuple(ds.images.shape[1:])}): {type(err).__name__}: {err}"
        ) from None
    top = int(ds.labels.max())
    if top >= outputs:
        raise click.ClickException(
            f"{ds.name} holds the label {top} but the model has {outputs} outputs "
            f"(labels must be in 0..{outputs - 1})"
        )


def load_examples(
    source: DataSource,
    model: nn.Module,
    split: str,
    n: int | None,
    root: str | None,
    download: bool = True,
    *,
    skip: int = 0,
) -> data.ImageDataset:
    """The first ``n`` examples of ``split`` that ``source`` names for ``model``.

    With ``--data`` the file's examples are used whatever the split, from example ``skip`` on
    (so that two calls can take disjoint parts of one file).
    """
    if source.file is None:
        return load_data(dataset_of(model, source.dataset), split, n, root, download)
    try:
        ds = data.load_npz(source.file, limit=None if n is None else skip + n)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if skip:
        if len(ds) <= skip:
            raise click.ClickException(
                f"{source.file} holds {len(ds)} examples: at least {skip + 1} needed "
                f"({skip} for the first part, the rest for the second)"
            )
        ds = data.ImageDataset(
            name=ds.name,
            split=ds.split,
            images=ds.images[skip:],
            labels=ds.labels[skip:],
            num_classes=ds.num_classes,
            class_names=ds.class_names,
        )
    _check_fits(model, ds)
    return ds


def writable_out(folder: str | os.PathLike[str]) -> Path:
    """``--out``, created and proven writable before any long work starts."""
    try:
        return check_writable_dir(folder)
    except OSError as err:
        raise click.ClickException(str(err)) from None
