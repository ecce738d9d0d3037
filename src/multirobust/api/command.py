"""Command-line entry points of the API package: ``serve`` (and the remote attack and extraction
commands below it). Library logic lives in the package's modules; these only parse options."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

from .. import data
from .._cliutil import load_model


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
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False),
    help="Checkpoint written by multirobust (models.save); unsafe or corrupt files are refused.",
)
@click.option("--name", default=None, help="Model name in URLs (default: the file's stem).")
@click.option(
    "--dataset", default=None, help="Dataset (default: the checkpoint's); sets the input shape."
)
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
    checkpoint: str,
    name: str | None,
    dataset: str | None,
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
    from .ledger import Ledger, read_keys
    from .outputs import OutputSpec
    from .server import ServerSettings, serve

    if threads:
        torch.set_num_threads(threads)
    model = load_model(checkpoint)
    dataset = dataset or getattr(model, "multirobust_checkpoint", {}).get("dataset")
    shape = _input_shape(input_shape, dataset)
    with torch.inference_mode():
        try:
            num_classes = int(model(torch.zeros(1, *shape)).shape[1])
        except (RuntimeError, IndexError) as err:
            raise click.ClickException(
                f"The model does not take inputs of shape {shape}: {err}"
            ) from None
    model_name = name or Path(checkpoint).stem
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


def _budgets(text: str | None, budget: int) -> list[int]:
    """The report's budgets: the given list, else 1k, 5k, 10k below ``budget``, and ``budget``."""
    if text:
        try:
            values = sorted({int(v) for v in text.split(",")})
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a list of integers", param_hint="--budgets"
            ) from None
        if values[0] < 1 or values[-1] > budget:
            raise click.BadParameter(
                f"budgets must lie in 1..{budget} (the --budget per example)",
                param_hint="--budgets",
            )
        return values
    return [b for b in (1000, 5000, 10000) if b < budget] + [budget]


@click.command("remote-attack")
@click.option(
    "--remote",
    "remotes",
    multiple=True,
    required=True,
    help="Server URL (http://HOST:PORT or .../v2/models/NAME); repeatable, one per output mode.",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="API key: one for every --remote, or one per --remote in order.",
)
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Queries per example (the clean query included).",
)
@click.option(
    "--budgets",
    default=None,
    help="Budgets to report, e.g. 1000,5000,10000 (default: those below --budget, and --budget).",
)
@click.option(
    "--max-queries",
    type=click.IntRange(min=1),
    default=None,
    help="Stop a remote client after this many queries in all (QueryBudgetExceeded).",
)
@click.option(
    "--threat",
    "threat_texts",
    multiple=True,
    required=True,
    help="ℓp threat, e.g. linf:0.3. Repeatable.",
)
@click.option(
    "--attack",
    "attack_names",
    multiple=True,
    help="Black-box attack; repeatable (default: square, sparse-rs, rays, hopskipjump where "
    "they support the threat).",
)
@click.option(
    "--option",
    "option_pairs",
    multiple=True,
    help="Attack option KEY=VALUE (each attack takes the ones it has).",
)
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Examples (the first n of the split after --offset).",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="The same model locally: its black-box attacks run locally too, for comparison.",
)
@click.option(
    "--white-box",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="report.json of `multirobust evaluate` on the same images: the white-box numbers.",
)
@click.option(
    "--surrogate",
    type=click.Path(dir_okay=False),
    default=None,
    help="Surrogate checkpoint (e.g. from `multirobust extract`): transfer attacks, one query "
    "per candidate.",
)
@click.option(
    "--transfer", default="pgd", show_default=True, help="White-box attack run on the surrogate."
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Examples attacked at once.",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Examples per saved piece (resume).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-root", default=None)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for remote-attack.json and .html.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out (finished chunks are not queried again).",
)
@click.option("--quiet", is_flag=True)
def remote_attack(
    remotes: tuple[str, ...],
    keys: tuple[str, ...],
    budget: int,
    budgets: str | None,
    max_queries: int | None,
    threat_texts: tuple[str, ...],
    attack_names: tuple[str, ...],
    option_pairs: tuple[str, ...],
    dataset: str,
    split: str,
    n: int,
    offset: int,
    checkpoint: str | None,
    white_box: str | None,
    surrogate: str | None,
    transfer: str,
    slots: int,
    chunk: int,
    seed: int,
    data_root: str | None,
    out: str,
    resume: bool,
    quiet: bool,
) -> None:
    """Black-box attacks on a served model: robust accuracy against queries spent.

    Runs score-based (square, sparse-rs) and decision-based (rays, hopskipjump) attacks over
    HTTP example by example, counting every query, and writes OUT/remote-attack.json and .html
    beside the white-box numbers of `multirobust evaluate` (--white-box) and, with --checkpoint,
    the same attacks run locally.
    """
    from .. import attacks, threats
    from .._cliutil import load_data, parse_options
    from ..atomic import check_writable_dir
    from .campaign import Source, run_campaign, white_box_from_report
    from .client import QueryBudgetExceeded, RemoteError, RemoteModel

    if keys and len(keys) not in (1, len(remotes)):
        raise click.UsageError("Give one --key for all remotes or one per --remote")
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        for name in attack_names:
            attacks.get(name)
        options = parse_options(option_pairs)
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    report_budgets = _budgets(budgets, budget)
    folder = check_writable_dir(out)
    if (folder / "resume" / "campaign.json").exists() and not resume:
        raise click.UsageError(
            f"{folder} holds an earlier run: pass --resume to continue it, or another --out"
        )
    ds = load_data(dataset, split, offset + n, data_root)
    x, y = ds.images[offset:], ds.labels[offset:]
    sources = []
    try:
        for i, url in enumerate(remotes):
            key = keys[i] if len(keys) > 1 else (keys[0] if keys else None)
            remote = RemoteModel(url, key=key, budget=max_queries)
            sources.append(Source(f"{remote.base}/v2/models/{remote.name}", remote, remote.output))
    except (ValueError, RemoteError) as err:
        raise click.ClickException(str(err)) from None
    if checkpoint:
        sources.append(Source("local", load_model(checkpoint), "logits"))
    surrogate_model = load_model(surrogate) if surrogate else None
    wb = None
    if white_box:
        try:
            wb = white_box_from_report(white_box, [str(t) for t in threat_list], y)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    try:
        report = run_campaign(
            sources,
            x,
            y,
            threats=threat_list,
            budgets=report_budgets,
            attack_names=list(attack_names) or None,
            options=options,
            surrogate=surrogate_model,
            transfer=transfer,
            slots=slots,
            chunk=chunk,
            seed=seed,
            resume_dir=folder / "resume",
            progress=not quiet,
            settings={
                "dataset": dataset,
                "split": split,
                "offset": offset,
                "max_queries": max_queries,
            },
        )
    except (ValueError, TypeError, QueryBudgetExceeded, RemoteError, RuntimeError) as err:
        raise click.ClickException(
            f"{err} (finished chunks are saved: rerun with --resume)"
        ) from None
    report.white_box = wb
    report.to_json(folder / "remote-attack.json")
    report.to_html(folder / "remote-attack.html")
    for run in report.runs:
        m = run.summary(report_budgets)
        accs = ", ".join(f"{b}: {m['robust_accuracy'][str(b)]:.1%}" for b in report_budgets)
        click.echo(f"{run.threat:<10} {run.output:<14} {run.attack:<28} robust @ {accs}")
    click.echo(f"saved {folder / 'remote-attack.json'} and {folder / 'remote-attack.html'}")


@click.command("extract")
@click.option("--remote", required=True, help="Server URL of the victim.")
@click.option("--key", default=None, help="API key of the attacker.")
@click.option(
    "--budgets",
    default="1000,5000,10000,20000",
    show_default=True,
    help="Queries after which a surrogate is trained and measured.",
)
@click.option(
    "--pool", default="fashion-mnist", show_default=True, help="Dataset whose images are queried."
)
@click.option("--pool-split", default="train", show_default=True)
@click.option(
    "--pool-offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip the first images of the pool split (e.g. the victim's training images).",
)
@click.option(
    "--answers",
    type=click.Choice(["auto", "probabilities", "labels"]),
    default="auto",
    show_default=True,
    help="Train on probabilities or labels (auto: labels for a label-only API).",
)
@click.option("--arch", default="small_cnn", show_default=True, help="Surrogate architecture.")
@click.option(
    "--dataset",
    default="mnist",
    show_default=True,
    help="The victim's task: held-out images, normalisation.",
)
@click.option("--eval-split", default="test", show_default=True)
@click.option("--eval-n", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--eval-offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--victim-checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="The victim locally, for its labels on the held-out images (the evaluator's view).",
)
@click.option(
    "--eval-key",
    default=None,
    help="Another API key for the victim's labels on the held-out images (no checkpoint).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--transfer-threat",
    "transfer_threats",
    multiple=True,
    help="Transfer attack from the final surrogate under this ℓp threat (2 queries per "
    "held-out image); repeatable.",
)
@click.option("--transfer", "transfer_attack_name", default="pgd", show_default=True)
@click.option(
    "--transfer-n",
    type=click.IntRange(min=1),
    default=None,
    help="Held-out images attacked by transfer (default: all).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-root", default=None)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out (answers already paid for are reused).",
)
@click.option("--quiet", is_flag=True)
def extract_command(
    remote: str,
    key: str | None,
    budgets: str,
    pool: str,
    pool_split: str,
    pool_offset: int,
    answers: str,
    arch: str,
    dataset: str,
    eval_split: str,
    eval_n: int,
    eval_offset: int,
    victim_checkpoint: str | None,
    eval_key: str | None,
    epochs: int,
    min_steps: int,
    transfer_threats: tuple[str, ...],
    transfer_attack_name: str,
    transfer_n: int | None,
    seed: int,
    data_root: str | None,
    out: str,
    resume: bool,
    quiet: bool,
) -> None:
    """Extract a surrogate from a served model (Knockoff Nets), then attack by transfer.

    Queries pool images, trains a surrogate on the answers after each budget, and reports its
    accuracy and its agreement with the victim on held-out images against queries spent;
    writes OUT/extraction.json and .html and OUT/surrogate-QUERIES.pt checkpoints.
    """
    from .. import threats
    from .._cliutil import load_data
    from ..atomic import check_writable_dir
    from .client import QueryBudgetExceeded, RemoteError, RemoteModel
    from .extraction import extract
    from .report import render_extraction
    from .transfer import transfer_attack

    try:
        schedule = sorted({int(b) for b in budgets.split(",")})
        threat_list = [threats.parse(t) for t in transfer_threats]
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    folder = check_writable_dir(out)
    if (folder / "settings.json").exists() and not resume:
        raise click.UsageError(
            f"{folder} holds an earlier run: pass --resume to continue it, or another --out"
        )
    pool_ds = load_data(pool, pool_split, None, data_root)
    images = pool_ds.images[pool_offset:]
    held = load_data(dataset, eval_split, eval_offset + eval_n, data_root)
    ex, ey = held.images[eval_offset:], held.labels[eval_offset:]
    try:
        victim = RemoteModel(remote, key=key)
        if victim_checkpoint:
            reference = load_model(victim_checkpoint)
        elif eval_key:
            reference = RemoteModel(remote, key=eval_key)
        else:
            raise click.UsageError(
                "Pass --victim-checkpoint or --eval-key: agreement needs the victim's labels"
            )
        with torch.no_grad():
            ref = torch.cat([reference(ex[i : i + 256]).argmax(1) for i in range(0, len(ex), 256)])
        result, surrogate = extract(
            victim,
            images,
            eval_x=ex,
            eval_y=ey,
            reference_labels=ref,
            budgets=schedule,
            answers=answers,
            arch=arch,
            dataset=dataset,
            epochs=epochs,
            min_steps=min_steps,
            seed=seed,
            resume_dir=folder,
            progress=not quiet,
            pool_name=f"{pool}:{pool_split}[{pool_offset}:]",
        )
        for threat in threat_list:
            tx, ty = ex[:transfer_n], ey[:transfer_n]
            spent = victim.queries
            traces = transfer_attack(
                surrogate,
                victim,
                tx,
                ty,
                threat=threat,
                attack=transfer_attack_name,
                seed=seed,
                progress=not quiet,
            )
            correct = [t for t in traces if t.clean_met is False]
            broken = sum(t.first_success == 2 for t in correct)
            result.transfer[str(threat)] = {
                "attack": transfer_attack_name,
                "n": len(traces),
                "victim_clean_accuracy": len(correct) / len(traces),
                "success_rate": broken / max(len(correct), 1),
                "robust_accuracy": (len(correct) - broken) / len(traces),
                "queries": victim.queries - spent,
            }
    except (ValueError, QueryBudgetExceeded, RemoteError) as err:
        raise click.ClickException(
            f"{err} (answers paid for are saved: rerun with --resume)"
        ) from None
    result.settings["victim"] = f"{victim.base}/v2/models/{victim.name} ({victim.output})"
    result.settings["queries_spent"] = victim.queries
    data_out = result.to_dict()
    from ..atomic import write_atomic, write_json_atomic

    write_json_atomic(folder / "extraction.json", data_out)
    write_atomic(folder / "extraction.html", render_extraction(data_out))
    for p in result.points:
        click.echo(
            f"{p.queries:>7} queries: surrogate accuracy {p.accuracy:.2%}, "
            f"agreement {p.agreement:.2%}"
        )
    for t, r in result.transfer.items():
        click.echo(
            f"transfer {r['attack']} {t}: success {r['success_rate']:.2%} ({r['queries']} queries)"
        )
    click.echo(f"saved {folder / 'extraction.json'} and {folder / 'extraction.html'}")
