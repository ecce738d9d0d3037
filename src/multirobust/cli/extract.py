"""``multirobust extract``: a surrogate trained from a served model's answers (Knockoff Nets),
measured against queries spent, then used for transfer attacks (multirobust.api.extraction)."""

from __future__ import annotations

import click
import torch

from .. import threats
from ..api.extraction import extract
from ..api.report import render_extraction
from ..api.transfer import transfer_attack
from ..atomic import check_writable_dir, write_atomic, write_json_atomic
from . import options
from ._common import load_data, load_model

__all__ = ["command"]


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
@options.seed()
@options.data_root()
@options.out(required=True, help="Folder for extraction.json and .html, answers and surrogates.")
@options.resume(help="Continue the run in --out (answers already paid for are reused).")
@options.quiet()
def command(
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
    # The client imports httpx: only when the command runs.
    from ..api.client import QueryBudgetExceeded, RemoteError, RemoteModel

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
    result.settings["queries_this_run"] = victim.queries  # a resumed run re-pays nothing
    data_out = result.to_dict()
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
