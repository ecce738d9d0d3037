"""The command-line options several subcommands share, each declared once as a decorator.

Use them like click's own::

    @click.command("mycommand")
    @options.model_source()          # --checkpoint | --model ... -> model_source: ModelSource
    @options.data_source()           # --dataset | --data FILE   -> data_source: DataSource
    @options.threats(required=True)  # --threat (repeatable) -> threat_texts
    @options.n(default=1000)
    @options.batch_size(default=500)
    @options.seed()
    @options.data_root()
    @options.out(required=True, help="Folder for mycommand.json.")
    @options.quiet()
    def command(model_source, data_source, threat_texts, n, batch_size, seed, data_root,
                out, quiet): ...

A factory's keyword arguments change what differs between subcommands (default, help text,
whether required); the name, type and checks stay the same everywhere. ``model_source`` and
``data_source`` gather several flags into one object, so a flag added to them reaches every
subcommand without changing its signature.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ._common import DataSource, ModelSource

__all__ = [
    "attack_options",
    "batch_size",
    "data_root",
    "data_source",
    "db",
    "download",
    "model_source",
    "n",
    "out",
    "quiet",
    "resume",
    "seed",
    "split",
    "threat",
    "threats",
]

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

DATA_ROOT_HELP = "Data folder (default: $MULTIROBUST_DATA)."
DB_HELP = (
    "Leaderboard database (SQLite). Default: $MULTIROBUST_HOME/leaderboard.sqlite, else "
    "leaderboard.sqlite in $XDG_CACHE_HOME/multirobust or ~/.cache/multirobust."
)


def _bundle(
    target: str, build: Callable[..., Any], names: tuple[str, ...], params: list[Decorator[Any]]
) -> Decorator[Any]:
    """Declare ``params`` and hand the command one ``build(**their values)`` as ``target``."""

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[target] = build(**{name: kwargs.pop(name) for name in names})
            return f(*args, **kwargs)

        # functools.wraps shares f's list of click parameters; the ones declared here join it.
        for param in reversed(params):
            wrapper = param(wrapper)
        return wrapper

    return decorator


def model_source(
    *, help: str = "Checkpoint written by multirobust (models.save).", required: bool = True
) -> Decorator[Any]:
    """``--checkpoint FILE``, or your own ``--model package.module:factory`` with
    ``--model-arg KEY=VALUE`` and ``--weights FILE``; handed to the command as
    ``model_source: ModelSource`` (load it with ``_common.load_model``), or None when not
    ``required`` and none of them is given."""
    return _bundle(
        "model_source",
        ModelSource if required else _optional_model_source,
        ("checkpoint", "model", "model_args", "weights"),
        [
            click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help=help),
            click.option(
                "--model",
                default=None,
                metavar="MODULE:FACTORY",
                help="Your own model instead of --checkpoint: an importable package.module:"
                "factory returning an nn.Module that takes [0, 1] images and returns logits.",
            ),
            click.option(
                "--model-arg",
                "model_args",
                multiple=True,
                metavar="KEY=VALUE",
                help="Argument of the --model factory (JSON values). Repeatable.",
            ),
            click.option(
                "--weights",
                type=click.Path(dir_okay=False),
                default=None,
                help="Weights for --model: .safetensors, or a state dict saved with torch.save "
                "(read with weights_only=True).",
            ),
        ],
    )


def _optional_model_source(
    checkpoint: str | None, model: str | None, model_args: tuple[str, ...], weights: str | None
) -> ModelSource | None:
    if checkpoint is None and model is None and not model_args and weights is None:
        return None
    return ModelSource(checkpoint, model, model_args, weights)


def data_source(*, help: str = "Dataset name (default: the checkpoint's).") -> Decorator[Any]:
    """``--dataset NAME`` or your own ``--data FILE.npz``, handed to the command as
    ``data_source: DataSource`` (load it with ``_common.load_examples``)."""
    return _bundle(
        "data_source",
        DataSource,
        ("dataset", "file"),
        [
            click.option("--dataset", default=None, help=help),
            click.option(
                "--data",
                "file",
                type=click.Path(dir_okay=False),
                default=None,
                help="Your own examples instead of --dataset: an .npz with x (N,C,H,W floats "
                "in [0, 1], or N,H,W,C uint8) and y (integer labels).",
            ),
        ],
    )


def split() -> Decorator[Any]:
    """``--split`` (train or test), default test."""
    return click.option("--split", default="test", show_default=True)


def threats(*, required: bool = True, help: str | None = None) -> Decorator[Any]:
    """``--threat TEXT`` (repeatable) -> ``threat_texts: tuple[str, ...]``."""
    return click.option(
        "--threat",
        "threat_texts",
        multiple=True,
        required=required,
        help=help
        or "Threat model, e.g. linf:0.3, l2:2, l1:10, linf:8/255, spatial:30,3. Repeatable.",
    )


def threat(*, default: str | None = None, help: str | None = None) -> Decorator[Any]:
    """``--threat TEXT`` (one) -> ``threat_text: str | None``."""
    return click.option(
        "--threat", "threat_text", default=default, show_default=default is not None, help=help
    )


def attack_options(*, example: str = "steps=100") -> Decorator[Any]:
    """``--option KEY=VALUE`` (repeatable) -> ``option_pairs``; parse with ``parse_options``."""
    return click.option(
        "--option",
        "option_pairs",
        multiple=True,
        help=f"Attack option KEY=VALUE, e.g. {example}.",
    )


def n(
    *,
    default: int = 1000,
    help: str | None = "Number of examples (the first n of the split).",
    aliases: tuple[str, ...] = (),
) -> Decorator[Any]:
    """``--n N`` (>= 1): how many examples."""
    return click.option(
        "--n",
        *aliases,
        "n",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help=help,
    )


def batch_size(*, default: int = 500, help: str | None = None) -> Decorator[Any]:
    """``--batch-size N`` (>= 1)."""
    return click.option(
        "--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


def seed() -> Decorator[Any]:
    """``--seed N`` (>= 0), default 0: every random choice follows from it."""
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)


def data_root() -> Decorator[Any]:
    """``--data-root DIR``: where the dataset files are."""
    return click.option("--data-root", default=None, help=DATA_ROOT_HELP)


def download() -> Decorator[Any]:
    """``--download/--no-download``: fetch missing dataset files."""
    return click.option(
        "--download/--no-download",
        default=True,
        show_default=True,
        help="Download missing dataset files (checksums verified).",
    )


def group(*params: Decorator[Any]) -> Decorator[Any]:
    """Several options as one decorator, listed in ``--help`` in the order given."""

    def decorator(f: F) -> F:
        for param in reversed(params):
            f = param(f)
        return f

    return decorator


def out(
    *, required: bool = False, default: str | None = None, help: str | None = None
) -> Decorator[Any]:
    """``--out DIR``: the output folder."""
    return click.option(
        "--out",
        required=required,
        type=click.Path(file_okay=False),
        default=default,
        show_default=default is not None,
        help=help,
    )


def resume(*, help: str) -> Decorator[Any]:
    """``--resume``: continue an interrupted run from what OUT holds."""
    return click.option("--resume", is_flag=True, help=help)


def db(*, help: str = DB_HELP) -> Decorator[Any]:
    """``--db FILE``: a leaderboard database."""
    return click.option("--db", default=None, type=click.Path(dir_okay=False), help=help)


def quiet(*, help: str = "No progress bars.") -> Decorator[Any]:
    """``--quiet``: no progress bars."""
    return click.option("--quiet", is_flag=True, help=help)
