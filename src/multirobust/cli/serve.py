"""``multirobust serve``: a checkpoint behind an HTTP API (Open Inference Protocol v2), with API
keys, per-key budgets and rate limits, and a SQLite ledger of every query (multirobust.api)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

from .. import data
from . import options
from ._common import DataSource, ModelSource, load_model

__all__ = ["command"]


def _input_shape(text: str | None, dataset: str | None) -> tuple[int, int, int]:
    if text:
        try:
            c, h, w = (int(v) for v in text.split(","))
        except ValueError:
            raise click.BadParameter(f"{text!r} is not C,H,W", param_hint="--input-shape") from None
        return c, h, w
    if not dataset:
        raise click.UsageError("The checkpoint names no dataset: pass --dataset or --input-shape")
    try:
        shape = data.spec(dataset).input_shape
    except (KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    return (int(shape[0]), int(shape[1]), int(shape[2]))


@click.command("serve")
@options.model_source(
    help="Checkpoint written by multirobust (models.save); unsafe or corrupt files are refused."
)
@click.option(
    "--name",
    default=None,
    help="Model name in URLs (default: the checkpoint's file stem, or the --model factory's name).",
)
@options.data_source(help="Dataset (default: the checkpoint's); sets the input shape.")
@click.option("--input-shape", default=None, help="C,H,W of one image, instead of --dataset.")
@click.option(
    "--output",
    type=click.Choice(["logits", "probabilities", "top-k", "label"]),
    default="probabilities",
    show_default=True,
    help="What a response reveals.",
)
@click.option(
    "--top-k",
    "top_k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="k for --output top-k.",
)
@click.option(
    "--round",
    "decimals",
    type=click.IntRange(0, 12),
    default=None,
    help="Round outputs to D decimals.",
)
@click.option("--quantize-input", is_flag=True, help="Round inputs to 8 bits before the model.")
@click.option(
    "--keys",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="File of API keys, one per line (Authorization: Bearer KEY). Default: no keys.",
)
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Queries per key in all.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Queries per key per --rate-window.",
)
@click.option(
    "--rate-window",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--max-body-bytes", type=click.IntRange(min=1024), default=16 * 2**20, show_default=True
)
@click.option("--max-batch", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help="SQLite ledger of every query (default: NAME-ledger.sqlite here). Budgets persist in it.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Torch threads for the model."
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
)
@click.option("--access-log", is_flag=True, help="Log every request.")
def command(
    model_source: ModelSource,
    name: str | None,
    data_source: DataSource,
    input_shape: str | None,
    output: str,
    top_k: int,
    decimals: int | None,
    quantize_input: bool,
    keys: str | None,
    budget: int | None,
    rate_limit: int | None,
    rate_window: float,
    max_body_bytes: int,
    max_batch: int,
    ledger: str | None,
    host: str,
    port: int,
    threads: int | None,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve a checkpoint over HTTP (Open Inference Protocol v2) with keys, budgets and a ledger.

    POST /v2/models/NAME/infer takes {"inputs": [{"name": "input", "shape": [N, C, H, W],
    "datatype": "FP32", "data": [...]}]} with values in [0, 1]; see docs/api.md.
    """
    # The server's modules import FastAPI and uvicorn: only when the command runs.
    from ..api.ledger import Ledger, read_keys
    from ..api.outputs import OutputSpec
    from ..api.server import ServerSettings, serve

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_source)
    dataset = data_source.dataset or getattr(model, "multirobust_checkpoint", {}).get("dataset")
    shape = _input_shape(input_shape, dataset)
    with torch.inference_mode():
        try:
            num_classes = int(model(torch.zeros(1, *shape)).shape[1])
        except (RuntimeError, IndexError) as err:
            raise click.ClickException(
                f"The model does not take inputs of shape {shape}: {err}"
            ) from None
    model_name = name or (
        Path(model_source.checkpoint).stem
        if model_source.checkpoint is not None
        else str(model_source.model).rpartition(":")[2]
    )
    try:
        settings = ServerSettings(
            name=model_name,
            input_shape=shape,
            num_classes=num_classes,
            output=OutputSpec(output, top_k=top_k, decimals=decimals),
            quantize_input=quantize_input,
            keys=read_keys(keys) if keys else None,
            budget=budget,
            rate_limit=rate_limit,
            rate_window=rate_window,
            max_body_bytes=max_body_bytes,
            max_batch=max_batch,
        )
        book = Ledger(ledger or f"{model_name}-ledger.sqlite")
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None

    def announce(url: str) -> None:
        click.echo(
            f"serving {model_name} ({output}) at {url}/v2/models/{model_name}; ledger {book.path}"
        )
        sys.stdout.flush()

    try:
        serve(
            model,
            settings,
            book,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            announce=announce,
        )
    except OSError as err:
        raise click.ClickException(str(err)) from None
