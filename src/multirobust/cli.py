"""The ``multirobust`` command line. Names resolve only through the registries."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn
from tqdm import tqdm

from . import __version__, attacks, data, models, threats
from ._cliutil import dataset_of, load_data, load_model, parse_options
from .threats import Affine, Spatial, Threat, Union


def default_attack(threat: Threat) -> str:
    """The attack used for ``--attack auto``: PGD for ℓp balls, grid search for spatial."""
    members = threat.threats if isinstance(threat, Union) else (threat,)
    if all(isinstance(t, Spatial) for t in members):
        return "spatial-grid"
    if isinstance(threat, Affine):
        return "affine"
    if any(isinstance(t, Spatial) for t in members):
        raise click.UsageError(
            f"No single attack covers {threat}: evaluate its members as separate --threat options"
        )
    return "pgd"


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat_list: list[Threat],
    attack_name: str,
    options: dict[str, Any],
    *,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Clean and robust accuracy of ``model`` on (x, y) under each threat, batch by batch.

    Returns a JSON-ready dict plus ``"_x_adv"`` (threat text -> adversarial inputs) and
    ``"_robust"`` (threat text -> per-example bool) for callers that keep them.
    """
    n = x.shape[0]
    with torch.no_grad():
        correct = torch.cat(
            [
                model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]
                for i in range(0, n, batch_size)
            ]
        )
    per_threat: dict[str, Any] = {}
    x_adv_all: dict[str, torch.Tensor] = {}
    robust_all: dict[str, torch.Tensor] = {}
    chosen = {
        str(t): default_attack(t) if attack_name == "auto" else attack_name for t in threat_list
    }
    # An option goes to every attack that has it (steps=100 means nothing to a grid search);
    # one that no attack in this run takes is a mistake.
    fields = {n: {f.name for f in dataclasses.fields(attacks.get(n))} for n in set(chosen.values())}
    unused = sorted(k for k in options if not any(k in f for f in fields.values()))
    if unused:
        raise ValueError(
            f"Unknown option(s) {', '.join(unused)} for attack(s) {', '.join(sorted(fields))}"
        )
    for threat in threat_list:
        name = chosen[str(threat)]
        mine = {k: v for k, v in options.items() if k in fields[name]}
        attack = attacks.create(name, threat=threat, seed=seed, **mine)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        robust = torch.zeros(n, dtype=torch.bool)
        x_adv = x.clone()
        norms = torch.full((n,), float("nan"))
        start = time.perf_counter()
        queries = 0
        bar = tqdm(total=n, desc=str(threat), unit="img", disable=not progress, leave=False)
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            res = attack(model, x[sl], y[sl], generator=generator)
            robust[sl] = ~res.success
            x_adv[sl] = res.x_adv
            norms[sl] = res.norm.float().cpu()
            queries += res.queries
            bar.update(res.x_adv.shape[0])
        bar.close()
        per_threat[str(threat)] = {
            "attack": name,
            "robust_accuracy": float(robust.float().mean()),
            "max_norm": float(norms.nan_to_num(0).max()) if n else 0.0,
            "seconds": time.perf_counter() - start,
            "queries_per_example": queries / max(n, 1),
        }
        x_adv_all[str(threat)] = x_adv
        robust_all[str(threat)] = robust
    union = torch.stack(list(robust_all.values())).all(0) if robust_all else correct
    return {
        "n": n,
        "clean_accuracy": float(correct.float().mean()),
        "threats": per_threat,
        "union_accuracy": float(union.float().mean()),
        "_x_adv": x_adv_all,
        "_robust": robust_all,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"{'threat':<30} {'attack':<14} {'robust acc':>10} {'max norm':>9} {'seconds':>8}",
        f"{'(clean)':<30} {'':<14} {result['clean_accuracy']:>10.2%}",
    ]
    for text, row in result["threats"].items():
        lines.append(
            f"{text:<30} {row['attack']:<14} {row['robust_accuracy']:>10.2%} "
            f"{row['max_norm']:>9.4g} {row['seconds']:>8.1f}"
        )
    if len(result["threats"]) > 1:
        lines.append(
            f"{'union (worst case per example)':<30} {'':<14} {result['union_accuracy']:>10.2%}"
        )
    return "\n".join(lines)


def _save(result: dict[str, Any], out: Path, stem: str) -> None:
    """Write ``stem.json`` and a readable ``stem.md`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    for name, text in (
        (f"{stem}.json", json.dumps(public, indent=2)),
        (
            f"{stem}.md",
            f"# multirobust {stem}\n\n```\n{_table(result)}\n```\n\n"
            f"Settings:\n\n```json\n{json.dumps(public.get('settings', {}), indent=2)}\n```\n",
        ),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


@click.group()
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Adversarial robustness of PyTorch image classifiers under many threat models at once."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command("attack")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False),
    help="Checkpoint written by multirobust (models.save).",
)
@click.option("--dataset", default=None, help="Dataset name (default: the checkpoint's).")
@click.option("--split", default="test", show_default=True)
@click.option(
    "--threat",
    "threat_texts",
    multiple=True,
    required=True,
    help="Threat model, e.g. linf:0.3, l2:2, l1:10, linf:8/255, spatial:30,3. Repeatable.",
)
@click.option(
    "--attack",
    "attack_name",
    default="auto",
    show_default=True,
    help="Attack name (see `multirobust list`); auto: pgd for ℓp, spatial-grid for spatial.",
)
@click.option(
    "--option", "option_pairs", multiple=True, help="Attack option KEY=VALUE, e.g. steps=100."
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of examples (the first n of the split).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--data-root", default=None, help="Data folder (default: $MULTIROBUST_DATA).")
@click.option(
    "--download/--no-download",
    default=True,
    show_default=True,
    help="Download missing dataset files (checksums verified).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for attack.json and attack.md.",
)
@click.option(
    "--save-adv",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save adversarial examples (a .pt of tensors, loadable with weights_only=True).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def attack_cmd(
    checkpoint: str,
    dataset: str | None,
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
    quiet: bool,
) -> None:
    """Attack a checkpoint and print clean and robust accuracy per threat model."""
    try:
        threat_list = [threats.parse(t) for t in threat_texts]
        options = parse_options(option_pairs)
        if attack_name != "auto":
            attacks.get(attack_name)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    model = load_model(checkpoint)
    dataset = dataset_of(model, dataset)
    ds = load_data(dataset, split, n, data_root, download)
    try:
        result = run_attack(
            model,
            ds.images,
            ds.labels,
            threat_list,
            attack_name,
            options,
            batch_size=batch_size,
            seed=seed,
            progress=not quiet,
        )
    except (ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from None
    result["settings"] = {
        "checkpoint": str(checkpoint),
        "dataset": dataset,
        "split": split,
        "n": ds.images.shape[0],
        "attack": attack_name,
        "options": options,
        "seed": seed,
        "batch_size": batch_size,
        "threats": [str(t) for t in threat_list],
        "multirobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    click.echo(_table(result))
    if out:
        _save(result, Path(out), "attack")
        click.echo(f"saved {Path(out) / 'attack.json'} and {Path(out) / 'attack.md'}")
    if save_adv:
        payload = {
            "x": ds.images,
            "y": ds.labels,
            "x_adv": result["_x_adv"],
            "robust": result["_robust"],
        }
        tmp = Path(save_adv).with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, save_adv)
        click.echo(f"saved adversarial examples to {save_adv}")


#: Examples behind quickstart's accuracy-vs-ε curves (the evaluation itself uses all --n).
QUICKSTART_CURVE_N = 200


@main.command("quickstart")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Passes over the 60,000 MNIST training images (about 4 s each on a quiet 2-core CPU).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=None,
    help="Optional wall-clock cap on training.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Test images to evaluate.",
)
@click.option(
    "--out", type=click.Path(file_okay=False), default="runs/quickstart", show_default=True
)
@click.option("--data-root", default=None, help="Data folder (default: $MULTIROBUST_DATA).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def quickstart(
    ctx: click.Context,
    epochs: int,
    seconds: float | None,
    n: int,
    out: str,
    data_root: str | None,
    seed: int,
    quiet: bool,
) -> None:
    """Train a small MNIST CNN, evaluate it and write OUT/report.html (a few minutes on 2 cores).

    The evaluation is `multirobust evaluate` with the quick preset under ℓ∞ 0.3, ℓ2 2, ℓ1 10 and
    spatial 30°/3 px, their union, the checks and accuracy-vs-ε curves.
    """
    from .evaluation.cli import evaluate_cmd
    from .training import train_standard

    torch.manual_seed(seed)
    train = load_data("mnist", "train", None, data_root)
    load_data("mnist", "test", n, data_root)  # fetch it now if it is missing
    model = models.for_dataset("small_cnn", "mnist")
    click.echo(f"training small_cnn on MNIST ({epochs} epoch(s)) ...")
    stats = train_standard(
        model, train, epochs=epochs, seconds=seconds, seed=seed, progress=not quiet
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "model.pt"
    models.save(model, ckpt, dataset="mnist", metadata={"method": "standard", **stats})
    click.echo(f"trained on {stats['examples']} examples in {stats['seconds']:.0f} s; saved {ckpt}")
    threat_texts = ("linf:0.3", "l2:2", "l1:10", "spatial:30,3")
    click.echo(f"evaluating on {n} test images ({', '.join(threat_texts)}; quick preset) ...")
    ctx.invoke(
        evaluate_cmd,
        checkpoint=str(ckpt),
        dataset="mnist",
        threat_texts=threat_texts,
        n=n,
        preset="quick",
        curve_n=min(n, QUICKSTART_CURVE_N),
        out=out,
        seed=seed,
        data_root=data_root,
        quiet=quiet,
    )
    click.echo(f"open {out_dir / 'report.html'} in a browser")


@main.command("list")
def list_cmd() -> None:
    """List the registered attacks, models, datasets and the threat grammar."""
    click.echo("attacks:  " + ", ".join(attacks.names()))
    click.echo("models:   " + ", ".join(models.names()))
    click.echo("datasets: " + ", ".join(data.names()))
    click.echo(
        "threats:  linf:EPS, l2:EPS, l1:EPS[,q=PERCENTILE], spatial:DEGREES,PIXELS, "
        "union(T1,T2,...), affine(T1,T2)"
    )


# Subcommands that live beside their subpackages.
from .evaluation.cli import evaluate_cmd  # noqa: E402
from .minimum_norm_cli import optimizer_study_cmd, universal_cmd  # noqa: E402
from .robustness.cli import compare_cmd, leaderboard_cmd  # noqa: E402
from .training.cli import train_cmd  # noqa: E402

main.add_command(evaluate_cmd)
main.add_command(compare_cmd)
main.add_command(leaderboard_cmd)
main.add_command(train_cmd)
main.add_command(optimizer_study_cmd)
main.add_command(universal_cmd)

from .landscape.command import command as landscape_cmd  # noqa: E402

main.add_command(landscape_cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
