"""``multirobust attack``: one attack per threat model, clean and robust accuracy as a table.

With ``--remote URL`` the model is a served one reached through its API (multirobust.api):
black-box attacks run example by example within a query budget, and the report gives robust
accuracy against queries spent beside the white-box numbers of ``evaluate``.
"""

from __future__ import annotations

import io
import platform
from pathlib import Path

import click
import torch

from .. import __version__, attacks, data, threats
from ..atomic import write_bytes_atomic
from ..evaluation.attack_run import attack_table, run_attack, save_attack_result
from . import options
from ._common import (
    DataSource,
    ModelSource,
    load_data,
    load_examples,
    load_model,
    parse_options,
    writable_out,
)

__all__ = ["command"]


@click.command("attack")
@options.model_source(
    required=False,
    help="Checkpoint written by multirobust (models.save). With --remote: optional, the same "
    "model attacked locally beside the API.",
)
@options.data_source(help="Dataset name (default: the checkpoint's; needed with --remote alone).")
@options.split()
@options.threats()
@click.option(
    "--attack",
    "attack_name",
    default="auto",
    show_default=True,
    help="Attack name (see `multirobust list`); auto: pgd for ℓp, spatial-grid for spatial. "
    "With --remote: NAME[,NAME...] of black-box attacks; auto: every one supporting the threat.",
)
@options.attack_options()
@options.n()
@options.batch_size(default=500)
@options.seed()
@options.data_root()
@options.download()
@options.out(help="Folder for attack.json and attack.md.")
@click.option(
    "--save-adv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save adversarial examples (a .pt of tensors, loadable with weights_only=True).",
)
@click.option(
    "--remote",
    "remotes",
    multiple=True,
    help="Attack a served model through its API (http://HOST:PORT or .../v2/models/NAME) with "
    "black-box attacks; repeatable, one per output mode served.",
)
@click.option("--key", "keys", multiple=True, help="API key: one for every --remote, or one each.")
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="With --remote: queries per example (the clean query included).",
)
@click.option(
    "--budgets",
    default=None,
    help="With --remote: budgets to report, e.g. 1000,5000,10000 (default: those of "
    "1000, 5000, 10000 below --budget, and --budget).",
)
@click.option(
    "--max-queries",
    type=click.IntRange(min=1),
    default=None,
    help="With --remote: a client stops after this many queries in all.",
)
@click.option(
    "--white-box",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="With --remote: report.json of `multirobust evaluate` on the same images.",
)
@click.option(
    "--surrogate",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --remote: a surrogate checkpoint (e.g. from `multirobust extract`) for transfer "
    "attacks, one query per candidate.",
)
@click.option(
    "--transfer", default="pgd", show_default=True, help="With --surrogate: the attack run on it."
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="With --remote: examples attacked at once.",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="With --remote: examples per saved piece of work.",
)
@options.resume(help="With --remote: continue the run in --out (finished chunks cost nothing).")
@options.quiet()
def command(
    model_source: ModelSource | None,
    data_source: DataSource,
    split: str,
    threat_texts: tuple[str, ...],
    attack_name: str,
    option_pairs: tuple[str, ...],
    n: int,
    batch_size: int,
    seed: int,
    data_root: str | None,
    download: bool,
    out: str | None,
    save_adv: str | None,
    remotes: tuple[str, ...],
    keys: tuple[str, ...],
    budget: int,
    budgets: str | None,
    max_queries: int | None,
    white_box: str | None,
    surrogate: str | None,
    transfer: str,
    slots: int,
    chunk: int,
    resume: bool,
    quiet: bool,
) -> None:
    """Attack a checkpoint and print clean and robust accuracy per threat model.

    With --remote, attack a served model through its API: black-box attacks (square,
    sparse-rs, rays, hopskipjump, or --attack NAME[,NAME...]) within --budget queries per
    example; writes OUT/remote-attack.json and .html (docs/api.md).
    """
    if remotes:
        _remote(
            model_source,
            data_source,
            split,
            threat_texts,
            attack_name,
            option_pairs,
            n,
            seed,
            data_root,
            download,
            out,
            save_adv,
            remotes,
            keys,
            budget,
            budgets,
            max_queries,
            white_box,
            surrogate,
            transfer,
            slots,
            chunk,
            resume,
            quiet,
        )
        return
    only_remote = {
        "--key": keys,
        "--budgets": budgets,
        "--max-queries": max_queries,
        "--white-box": white_box,
        "--surrogate": surrogate,
        "--resume": resume,
    }
    given = [flag for flag, value in only_remote.items() if value]
    if given:
        raise click.UsageError(f"{', '.join(given)} only apply with --remote URL")
    if model_source is None:
        raise click.UsageError(
            "Pass either --checkpoint FILE (a multirobust checkpoint) or --model "
            "package.module:factory (your own model), or --remote URL to attack a served model"
        )
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        attack_options = parse_options(option_pairs)
        if attack_name != "auto":
            attacks.get(attack_name)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if out:
        writable_out(out)
    if save_adv:
        writable_out(Path(save_adv).parent)
    model = load_model(model_source)
    ds = load_examples(data_source, model, split, n, data_root, download)
    try:
        result = run_attack(
            model,
            ds.images,
            ds.labels,
            threat_list,
            attack_name,
            attack_options,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    result["settings"] = {
        "checkpoint": str(model_source),
        "dataset": ds.name,
        "split": split,
        "n": ds.images.shape[0],
        "attack": attack_name,
        "options": attack_options,
        "seed": seed,
        "batch_size": batch_size,
        "threats": [str(t) for t in threat_list],
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    click.echo(attack_table(result))
    if out:
        save_attack_result(result, Path(out), "attack")
        click.echo(f"saved {Path(out) / 'attack.json'} and {Path(out) / 'attack.md'}")
    if save_adv:
        payload = {
            "x": ds.images,
            "y": ds.labels,
            "x_adv": result["_x_adv"],
            "robust": result["_robust"],
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(save_adv, buffer.getvalue())
        click.echo(f"saved adversarial examples to {save_adv}")


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
                f"budgets must lie in 1..{budget} (--budget, per example)", param_hint="--budgets"
            )
        return values
    return [b for b in (1000, 5000, 10000) if b < budget] + [budget]


def _remote(
    model_source: ModelSource | None,
    data_source: DataSource,
    split: str,
    threat_texts: tuple[str, ...],
    attack_name: str,
    option_pairs: tuple[str, ...],
    n: int,
    seed: int,
    data_root: str | None,
    download: bool,
    out: str | None,
    save_adv: str | None,
    remotes: tuple[str, ...],
    keys: tuple[str, ...],
    budget: int,
    budgets: str | None,
    max_queries: int | None,
    white_box: str | None,
    surrogate: str | None,
    transfer: str,
    slots: int,
    chunk: int,
    resume: bool,
    quiet: bool,
) -> None:
    """``attack --remote``: black-box attacks through the API, robust accuracy per budget."""
    # The client imports httpx: only when asked for.
    from ..api.campaign import Source, run_campaign, white_box_from_report
    from ..api.client import QueryBudgetExceeded, RemoteError, RemoteModel

    if not out:
        raise click.UsageError("--remote needs --out (the report and the resumable run go there)")
    if save_adv:
        raise click.UsageError("--save-adv does not apply with --remote")
    if keys and len(keys) not in (1, len(remotes)):
        raise click.UsageError("Give one --key for every --remote, or one per --remote")
    names = None if attack_name == "auto" else [a for a in attack_name.split(",") if a]
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        for name in names or []:
            attacks.get(name)
        attack_options = parse_options(option_pairs)
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    report_budgets = _budgets(budgets, budget)
    folder = writable_out(out)
    if (folder / "resume" / "campaign.json").exists() and not resume:
        raise click.UsageError(
            f"{folder} holds an earlier run: pass --resume to continue it, or another --out"
        )
    local = load_model(model_source) if model_source is not None else None
    if local is not None:
        ds = load_examples(data_source, local, split, n, data_root, download)
    elif data_source.file is not None:
        try:
            ds = data.load_npz(data_source.file, limit=n)
        except (ValueError, FileNotFoundError) as err:
            raise click.ClickException(str(err)) from None
    elif data_source.dataset is not None:
        ds = load_data(data_source.dataset, split, n, data_root, download)
    else:
        raise click.UsageError("--remote without --checkpoint needs --dataset or --data")
    sources, urls = [], []
    try:
        for i, url in enumerate(remotes):
            key = keys[i] if len(keys) > 1 else (keys[0] if keys else None)
            remote = RemoteModel(url, key=key, budget=max_queries)
            urls.append(f"{remote.base}/v2/models/{remote.name}")
            sources.append(Source(f"API {remote.name}", remote, remote.output))
    except (ValueError, RemoteError) as err:
        raise click.ClickException(str(err)) from None
    if local is not None:
        sources.append(Source("local", local, "logits"))
    wb = None
    if white_box:
        try:
            wb = white_box_from_report(white_box, [str(t) for t in threat_list], ds.labels)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    try:
        report = run_campaign(
            sources,
            ds.images,
            ds.labels,
            threats=threat_list,
            budgets=report_budgets,
            attack_names=names,
            options=attack_options,
            surrogate=load_model(surrogate) if surrogate else None,
            transfer=transfer,
            slots=slots,
            chunk=chunk,
            seed=seed,
            resume_dir=folder / "resume",
            progress=not quiet,
            settings={
                "remotes": urls,
                "dataset": ds.name,
                "split": split,
                "offset": 0,
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
    for check in report.checks():
        click.echo(f"CHECK {check['name']} [{check['threat']}]: {check['message']}")
    click.echo(f"saved {folder / 'remote-attack.json'} and {folder / 'remote-attack.html'}")
