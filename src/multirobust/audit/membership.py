"""The membership part: does the model leak which examples it was trained on?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import atomic, data
from ..privacy import MembershipRun, logits_of, loss_score, membership_inference, roc_curve
from .recipe import training_set_size
from .result import AuditContext, PartResult

__all__ = ["run_membership"]

_FPRS = (1e-3, 1e-2)


def _members_and_non_members(
    ctx: AuditContext,
) -> tuple[data.ImageDataset, data.ImageDataset, str]:
    """The first ``membership_n`` training examples the recipe used, and as many it did not
    (the training split's next ones when the recipe used a prefix, else the test split)."""
    assert ctx.recipe is not None
    name, k, limit = ctx.recipe["dataset"], ctx.config.membership_n, ctx.recipe.get("limit")
    root = ctx.data_root
    if limit is not None:
        train = data.load(name, "train", root=root, limit=int(limit) + k, download=False)
        used = min(int(limit), len(train))
        members = _slice(train, 0, min(k, used))
        if len(train) > used:
            return members, _slice(train, used, len(train)), "training split after the limit"
    else:
        members = data.load(name, "train", root=root, limit=k, download=False)
    test = data.load(name, "test", root=root, limit=k, download=False)
    return members, test, "test split"


def _slice(ds: data.ImageDataset, a: int, b: int) -> data.ImageDataset:
    return data.ImageDataset(
        name=ds.name,
        split=ds.split,
        images=ds.images[a:b],
        labels=ds.labels[a:b],
        num_classes=ds.num_classes,
        class_names=ds.class_names,
    )


def _loss_threshold(ctx: AuditContext, folder: Path) -> dict[str, Any]:
    """Yeom et al. (2018): "member" when the loss is at most the average training loss.

    The threshold the attacker is assumed to know is the recipe's last-epoch training loss
    (recorded in the checkpoint); the ROC over every threshold gives the AUC, the best balanced
    accuracy and the TPR at low FPR with an oracle threshold (chosen with the true membership,
    as papers report it: an upper bound for a calibrated attacker).
    """
    members, others, source = _members_and_non_members(ctx)
    bs = ctx.config.batch_size
    scores = torch.cat(
        [
            loss_score(logits_of(ctx.model, members.images, batch_size=bs), members.labels),
            loss_score(logits_of(ctx.model, others.images, batch_size=bs), others.labels),
        ]
    )
    truth = torch.cat(
        [torch.ones(len(members), dtype=torch.bool), torch.zeros(len(others), dtype=torch.bool)]
    )
    roc = roc_curve(scores, truth)
    out: dict[str, Any] = {
        "members": len(members),
        "non_members": len(others),
        "non_member_source": source,
        "auc": roc.auc,
        "balanced_accuracy": roc.accuracy,
        "oracle_tpr": {str(a): roc.tpr_at(a) for a in _FPRS},
    }
    loss = ctx.recipe.get("final_train_loss") if ctx.recipe else None
    if loss is not None:
        hit = -scores <= loss
        out["yeom"] = {
            "threshold_loss": loss,
            "tpr": float(hit[truth].double().mean()),
            "fpr": float(hit[~truth].double().mean()),
        }
    return out


def _lira(ctx: AuditContext, folder: Path) -> dict[str, Any]:
    """LiRA (Carlini et al. 2022) with the shadow models of a ``multirobust membership`` run
    on the audited model: thresholds calibrated on the shadows only."""
    assert ctx.recipe is not None and ctx.config.shadows is not None
    run = MembershipRun.open(ctx.config.shadows)
    if run.config.dataset != ctx.recipe["dataset"]:
        raise ValueError(
            f"The shadow run {ctx.config.shadows} is on {run.config.dataset!r}, the model on "
            f"{ctx.recipe['dataset']!r}"
        )
    pool = run.pool
    used = training_set_size(ctx.recipe, len(pool))
    members = torch.arange(len(pool)) < used
    if bool(members.all()):
        raise ValueError(
            f"Every example of the shadow run's pool ({len(pool)}) was in the model's training "
            f"set (its first {used}): LiRA needs non-members in the pool (a larger --pool)"
        )
    result = membership_inference(
        logits_of(ctx.model, pool.images, batch_size=ctx.config.batch_size),
        pool.labels,
        members,
        run.shadow_logits(),
        run.keep,
        fprs=list(_FPRS),
        fixed_variance=run.config.fixed_variance,
    )
    return {
        "shadows": result.shadows,
        "members": result.members,
        "non_members": result.non_members,
        "attacks": {
            k: {"auc": v.roc.auc, "operating_points": v.operating_points}
            for k, v in result.outcomes.items()
        },
    }


def run_membership(ctx: AuditContext, folder: Path, resume: bool) -> PartResult:
    """The loss-threshold attack on the recipe's training examples against unseen ones, and
    LiRA when a shadow run is given. Writes ``membership.json``.

    Not assessed for a model without a recipe: its members are unknown.
    """
    if ctx.recipe is None:
        return PartResult(
            part="membership",
            status="not-assessed",
            reason="no recipe: the model's training set is unknown (a checkpoint written by "
            "`multirobust train` records it)",
        )
    found: dict[str, Any] = {"loss_threshold": _loss_threshold(ctx, folder)}
    if ctx.config.shadows is not None:
        found["lira"] = _lira(ctx, folder)
    atomic.write_json_atomic(folder / "membership.json", found)
    evidence = ["membership/membership.json"]
    if ctx.config.shadows is not None:
        evidence.append(str(Path(ctx.config.shadows).resolve()))
    return PartResult(part="membership", status="done", summary=found, evidence=evidence)
