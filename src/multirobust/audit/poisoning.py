"""The poisoning part: retrain the model's recipe on poisoned data, detect, defend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..poisoning.experiment import BackdoorConfig, BackdoorRun
from .result import AuditContext, PartResult

__all__ = ["backdoor_config", "run_poisoning"]

# Recipe fields the backdoor run sets itself, or that only describe where a run lived.
_NOT_TRAINING = ("dataset", "out", "limit", "progress", "data_root", "download", "final_train_loss")


def backdoor_config(ctx: AuditContext) -> BackdoorConfig:
    """The backdoor experiment of the audit: BadNets, 1% all-to-one poisoning, the model's own
    recipe (architecture, method, threats, epochs, optimiser) on the recipe's training set,
    every detector and defence; ``config.poison`` replaces any of these (its ``train`` merges
    into the recipe's).

    Raises:
        ValueError: without a recipe; ConfigError for a bad override.
    """
    if ctx.recipe is None:
        raise ValueError("no recipe")
    train = {k: v for k, v in ctx.recipe.items() if k not in _NOT_TRAINING}
    overrides: dict[str, Any] = dict(ctx.config.poison)
    train.update(overrides.pop("train", {}))
    values: dict[str, Any] = {
        "dataset": ctx.recipe["dataset"],
        "limit": ctx.recipe.get("limit"),
        "test_n": 1000,
        "seed": ctx.config.seed,
        "train": train,
        "progress": ctx.config.progress,
    }
    values.update(overrides)
    return BackdoorConfig.from_dict(values)


def run_poisoning(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """Poisoning susceptibility of the model's training pipeline (a ``multirobust backdoor``
    run in ``folder``, resumable): clean accuracy, attack success rate and robust accuracy
    of the poisoned model, of a clean baseline, after each defence; each detector's precision
    and recall against the poisoning record.

    Not assessed for a model without a recipe: there is nothing to retrain.
    """
    if ctx.recipe is None:
        return PartResult(
            part="poisoning",
            status="not-assessed",
            reason="no recipe: the model was not trained by `multirobust train`, so its "
            "training cannot be repeated on poisoned data",
        )
    cfg = backdoor_config(ctx)
    again = resume and (folder / "config.json").is_file()
    run = BackdoorRun.start(folder, cfg, resume=again)
    rep = run.run_all(resume=again)
    summary = {
        "attack": cfg.attack,
        "rate": cfg.rate,
        "target": cfg.target,
        "poisoned": rep.get("poisoned"),
        "metrics": rep["metrics"],
        "detectors": {
            k: {key: v["poisoned"][key] for key in ("precision", "recall", "flagged")}
            for k, v in rep["detectors"].items()
        },
        "defences": {k: v["after"] for k, v in rep["defences"].items()},
    }
    return PartResult(
        part="poisoning",
        status="done",
        summary=summary,
        evidence=["poisoning/report.html", "poisoning/report.json"],
    )
