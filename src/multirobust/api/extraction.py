"""Model extraction: train a surrogate from a served model's answers (Knockoff Nets).

Orekondy, Schiele & Fritz (CVPR 2019), "Knockoff Nets: Stealing Functionality of Black-Box
Models", with the random sampling strategy: query images drawn from a pool (a public dataset,
e.g. Fashion-MNIST against an MNIST classifier, or unused images of the victim's own
distribution), record what the API answers, and train a surrogate to imitate it,

    min_θ  E_{x ∈ queried} [ −Σ_c q_c(x) log softmax(f_θ(x))_c ],

with q the victim's probabilities (softmax of the client's scores: exactly p for probability
outputs, the top-k estimate for top-k) or its one-hot label for label-only outputs. After each
budget of a schedule (1k, 5k, 10k, 20k queries) a surrogate is trained from scratch on all the
answers so far and measured on held-out images: accuracy against the true labels, and agreement
with the victim's labels (the fidelity Knockoff reports). Papernot et al. (2017) then use such a
substitute for transfer attacks (:func:`multirobust.api.transfer_attack`).

Resumable: the answers are saved as they arrive (safetensors) and every finished budget's
surrogate and numbers too, so an interrupted run spends no query twice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import models
from ..atomic import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

ANSWERS = ("probabilities", "labels")


@dataclass
class ExtractionPoint:
    """The surrogate trained on the first ``queries`` answers, measured on held-out images."""

    queries: int
    accuracy: float
    agreement: float
    train_steps: int
    seconds: float
    checkpoint: str | None = None


@dataclass
class Extraction:
    """Extraction results: one point per budget, and the settings.

    Attributes:
        points: accuracy and agreement against queries spent.
        settings: how the run was made (pool, answers, architecture, training, seed).
        victim_accuracy: the victim's accuracy on the held-out images.
        transfer: filled by the caller with transfer-attack results, if any.
    """

    points: list[ExtractionPoint]
    settings: dict[str, Any]
    victim_accuracy: float
    transfer: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "multirobust-extraction",
            "version": 1,
            "points": [asdict(p) for p in self.points],
            "settings": self.settings,
            "victim_accuracy": self.victim_accuracy,
            "transfer": self.transfer,
        }


def train_surrogate(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    arch: str = "small_cnn",
    dataset: str = "mnist",
    epochs: int = 30,
    min_steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, int]:
    """Train a fresh ``arch`` on (images, soft targets) with Adam and soft cross-entropy.

    Args:
        images: (N, C, H, W) in [0, 1].
        targets: (N, C) probability rows (one-hot rows for labels).
        epochs: passes over the data, but at least ``min_steps`` optimiser steps (small
            budgets need more passes).

    Returns:
        (the model in eval mode, optimiser steps taken).
    """
    n = images.shape[0]
    per_epoch = math.ceil(n / batch_size)
    steps = max(epochs * per_epoch, min_steps)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = models.for_dataset(arch, dataset)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    done = 0
    bar = tqdm(total=steps, desc="surrogate", unit="step", disable=not progress, leave=False)
    while done < steps:
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = -(targets[idx] * F.log_softmax(model(images[idx]), 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            bar.update(1)
            if done >= steps:
                break
    bar.close()
    return model.eval(), steps


def _targets(scores: torch.Tensor, answers: str) -> torch.Tensor:
    if answers == "labels":
        return F.one_hot(scores.argmax(1), scores.shape[1]).float()
    return scores.float().softmax(1)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )


def extract(
    victim: nn.Module,
    pool: torch.Tensor,
    *,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    reference_labels: torch.Tensor,
    budgets: Sequence[int] = (1000, 5000, 10000, 20000),
    answers: str = "auto",
    arch: str = "small_cnn",
    dataset: str = "mnist",
    epochs: int = 30,
    min_steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    query_batch: int = 256,
    seed: int = 0,
    resume_dir: str | Path | None = None,
    progress: bool = True,
    pool_name: str = "",
) -> tuple[Extraction, nn.Module]:
    """Extract a surrogate from ``victim`` within query budgets (see the module docstring).

    Args:
        victim: the served model (:class:`~multirobust.api.RemoteModel`) or a local one.
        pool: images to query (P, C, H, W) in [0, 1]; the first max(budgets) of a seeded
            permutation are queried, in that order.
        eval_x, eval_y: held-out images and their true labels (never queried by the attacker).
        reference_labels: the victim's labels on ``eval_x`` (the evaluator's, for agreement).
        budgets: increasing query counts at which a surrogate is trained and measured.
        answers: ``"probabilities"`` (soft targets), ``"labels"`` (hard), or ``"auto"``:
            labels when the victim returns only labels.
        arch, dataset: the surrogate's architecture and its normalisation.
        epochs, min_steps, batch_size, lr: surrogate training.
        query_batch: images per query call.
        resume_dir: folder for answers, surrogates and points; a rerun continues from it.

    Returns:
        (the :class:`Extraction`, the surrogate trained on the largest budget).
    """
    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 1:
        raise ValueError(f"Invalid budgets: {budgets} (positive query counts)")
    if budgets[-1] > pool.shape[0]:
        raise ValueError(
            f"The pool holds {pool.shape[0]} images, fewer than the largest budget {budgets[-1]}"
        )
    if answers == "auto":
        answers = "labels" if getattr(victim, "output", None) == "label" else "probabilities"
    if answers not in ANSWERS:
        raise ValueError(f"Invalid answers: {answers!r} (allowed: auto, {', '.join(ANSWERS)})")
    if reference_labels.shape != eval_y.shape:
        raise ValueError("reference_labels must hold one label per evaluation image")
    order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
    order = order[: budgets[-1]]
    settings = {
        "pool": pool_name,
        "pool_size": int(pool.shape[0]),
        "answers": answers,
        "budgets": budgets,
        "arch": arch,
        "dataset": dataset,
        "epochs": epochs,
        "min_steps": min_steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "eval_n": int(eval_x.shape[0]),
    }
    folder = Path(resume_dir) if resume_dir is not None else None
    scores = torch.zeros(0)
    points: list[ExtractionPoint] = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        scores, points = _load_state(folder, settings)

    def save_scores() -> None:
        if folder is not None:
            from safetensors.torch import save

            write_bytes_atomic(
                folder / "answers.safetensors", save({"scores": scores.contiguous()})
            )

    bar = tqdm(
        total=budgets[-1], initial=scores.shape[0], desc="queries", unit="q", disable=not progress
    )
    surrogate: nn.Module | None = None
    for budget in budgets:
        while scores.shape[0] < budget:
            start = scores.shape[0]
            stop = min(start + query_batch, budget)
            with torch.no_grad():
                answer = victim(pool[order[start:stop]]).detach().float().cpu()
            scores = answer if start == 0 else torch.cat([scores, answer])
            save_scores()
            bar.update(stop - start)
        done = next((p for p in points if p.queries == budget), None)
        ckpt = folder / f"surrogate-{budget}.pt" if folder is not None else None
        if done is not None and ckpt is not None and ckpt.exists():
            continue
        t0 = time.perf_counter()
        model, steps = train_surrogate(
            pool[order[:budget]],
            _targets(scores[:budget], answers),
            arch=arch,
            dataset=dataset,
            epochs=epochs,
            min_steps=min_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
        )
        pred = _predict(model, eval_x)
        point = ExtractionPoint(
            queries=budget,
            accuracy=float((pred == eval_y).float().mean()),
            agreement=float((pred == reference_labels).float().mean()),
            train_steps=steps,
            seconds=time.perf_counter() - t0,
            checkpoint=str(ckpt) if ckpt is not None else None,
        )
        log.info(
            "extraction: %d queries, accuracy %.4f, agreement %.4f",
            budget,
            point.accuracy,
            point.agreement,
        )
        points = [p for p in points if p.queries != budget] + [point]
        if ckpt is not None and folder is not None:
            models.save(
                model, ckpt, dataset=dataset, metadata={"extracted_queries": budget, **settings}
            )
            write_json_atomic(folder / "points.json", {"points": [asdict(p) for p in points]})
        surrogate = model
    bar.close()
    if surrogate is None:  # every budget was finished before: load the largest
        assert folder is not None
        surrogate = models.load(folder / f"surrogate-{budgets[-1]}.pt")
    victim_accuracy = float((reference_labels == eval_y).float().mean())
    points.sort(key=lambda p: p.queries)
    return Extraction(points=points, settings=settings, victim_accuracy=victim_accuracy), surrogate


def _load_state(
    folder: Path, settings: dict[str, Any]
) -> tuple[torch.Tensor, list[ExtractionPoint]]:
    """Answers and finished points of an earlier run with the same settings (checked first)."""
    scores = torch.zeros(0)
    points: list[ExtractionPoint] = []
    recorded = folder / "settings.json"
    if recorded.exists():
        if json.loads(recorded.read_text()) != settings:
            raise ValueError(
                f"{folder} holds an extraction with other settings; use another folder or the "
                "same settings to resume"
            )
    else:
        write_json_atomic(recorded, settings)
    saved = folder / "points.json"
    if saved.exists():
        points = [ExtractionPoint(**p) for p in json.loads(saved.read_text())["points"]]
    answers = folder / "answers.safetensors"
    if answers.exists():
        from safetensors.torch import load_file

        scores = load_file(str(answers))["scores"]
    return scores, points
