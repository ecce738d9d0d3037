"""Membership leakage of the zoo's models by the loss-threshold attack: standard against robust.

    OMP_NUM_THREADS=1 python zoo/leakage.py [--n 10000] [--out runs/membership/zoo-loss.json]

Each zoo model trained on the first ``limit`` training images (its checkpoint's config says how
many; 30,000 for the zoo of docs/results.md). Members are the first ``n`` of them, non-members
``n`` training images the model never saw (from ``limit`` on), so that both come from the same
split; a model trained on the whole training set gets the test set's first ``n`` as
non-members, which the table says. The attack is Yeom et al.'s (2018): score ``log p_y``,
higher means member. Reported per model: the train–held-out accuracy and loss gaps (what the
attack feeds on), the ROC AUC, the best balanced accuracy, and the TPR at 0.1% and 1% FPR read
off the ROC curve (the oracle threshold papers report; with 10,000 non-members 0.1% FPR is
10 examples). No shadow models are needed for these threshold-free figures; LiRA's are in
docs/privacy.md (``multirobust membership run``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from multirobust import data, models
from multirobust.atomic import write_json_atomic
from multirobust.privacy import logits_of, loss_score, roc_curve

MODELS = ["standard", "pgd-linf", "pgd-l2", "pgd-l1", "max", "avg", "msd", "random",
          "noise-0.25", "ibp-0.4"]  # fmt: skip


Images = tuple[torch.Tensor, torch.Tensor]


def leakage(model: torch.nn.Module, members: Images, others: Images) -> dict:
    """Loss-threshold membership figures of ``model`` on these members and non-members, each
    an ``(images, labels)`` pair."""
    (x_in, y_in), (x_out, y_out) = members, others
    z_in, z_out = logits_of(model, x_in), logits_of(model, x_out)
    scores = torch.cat([loss_score(z_in, y_in), loss_score(z_out, y_out)])
    truth = torch.zeros(len(scores), dtype=torch.bool)
    truth[: len(z_in)] = True
    roc = roc_curve(scores, truth)

    def acc(z: torch.Tensor, y: torch.Tensor) -> float:
        return float((z.argmax(1) == y).float().mean())

    def loss(z: torch.Tensor, y: torch.Tensor) -> float:
        return float(F.cross_entropy(z.double(), y.long()))

    return {
        "member_accuracy": acc(z_in, y_in),
        "non_member_accuracy": acc(z_out, y_out),
        "member_loss": loss(z_in, y_in),
        "non_member_loss": loss(z_out, y_out),
        "auc": roc.auc,
        "balanced_accuracy": roc.accuracy,
        "tpr_at_0.1%": roc.tpr_at(1e-3),
        "tpr_at_1%": roc.tpr_at(1e-2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--n", type=int, default=10000, help="members and non-members each")
    parser.add_argument("--zoo", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--out", type=Path, default=Path("runs/membership/zoo-loss.json"))
    args = parser.parse_args()
    train = data.load("mnist", "train")
    test = data.load("mnist", "test")
    rows: dict[str, dict] = {}
    print("| model | trained on | non-members | train acc | held-out acc | loss gap "
          "| AUC | bal. acc | TPR@0.1% | TPR@1% |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        start = time.perf_counter()
        model = models.load(args.zoo / f"{name}.pt")
        config = model.multirobust_checkpoint["metadata"]["config"]  # type: ignore[index]
        limit = config.get("limit") or len(train.images)
        if limit < args.n:
            raise SystemExit(f"{name} trained on {limit} images, fewer than --n {args.n}")
        members = (train.images[: args.n], train.labels[: args.n])
        if limit + args.n <= len(train.images):
            end = limit + args.n
            others = (train.images[limit:end], train.labels[limit:end])
            where = f"train[{limit}:{end}]"
        else:
            others, where = (test.images[: args.n], test.labels[: args.n]), "test"
        row = leakage(model, members, others)
        row.update(trained_on=limit, non_members=where, seconds=time.perf_counter() - start)
        rows[name] = row
        print(
            f"| `{name}` | {limit} | {where} | {row['member_accuracy']:.2%} "
            f"| {row['non_member_accuracy']:.2%} "
            f"| {row['non_member_loss'] - row['member_loss']:.4f} | {row['auc']:.3f} "
            f"| {row['balanced_accuracy']:.3f} | {row['tpr_at_0.1%']:.2%} "
            f"| {row['tpr_at_1%']:.2%} |",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"n": args.n, "models": rows})


if __name__ == "__main__":
    main()
