"""Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger for every class; a
class whose trigger is anomalously small is backdoored; unlearn it."""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import ImageDataset
from ..models import model_state
from .finetune import finetune

__all__ = ["NeuralCleanse", "ReversedTrigger", "neural_cleanse", "reverse_trigger", "unlearn"]

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of σ under a normal distribution


@dataclass(eq=False)
class ReversedTrigger:
    """The smallest mask and pattern found that send clean inputs to ``target``.

    Attributes:
        target: the class.
        mask: ``(H, W)`` in [0, 1]; 1 where the pattern replaces the image.
        pattern: ``(C, H, W)`` in [0, 1].
        l1: ``‖mask‖₁``, the trigger's size.
        success: fraction of clean inputs of other classes sent to ``target`` by it.
    """

    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float
    success: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``(1 − m)·x + m·p``. Shape: ``(N, C, H, W)`` -> same."""
        m = self.mask.to(x)
        return (1 - m) * x + m * self.pattern.to(x)


@dataclass(eq=False)
class NeuralCleanse:
    """The outcome of :func:`neural_cleanse`.

    Attributes:
        triggers: one reversed trigger per class.
        anomaly_index: per class, ``|l1 − median| / (1.4826 · MAD)``.
        flagged: classes with an ``l1`` below the median and an anomaly index above
            ``threshold``: the detected backdoor targets.
        threshold: the anomaly-index cut (2 in the paper: ~95% confidence under normality).
        median: median ``l1``.
        mad: median absolute deviation of ``l1``.
    """

    triggers: list[ReversedTrigger]
    anomaly_index: list[float]
    flagged: list[int]
    threshold: float
    median: float
    mad: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (masks and patterns are left out)."""
        return {
            "l1": [t.l1 for t in self.triggers],
            "success": [t.success for t in self.triggers],
            # JSON has no infinity: an index over a zero MAD is written as null.
            "anomaly_index": [a if math.isfinite(a) else None for a in self.anomaly_index],
            "flagged": self.flagged,
            "threshold": self.threshold,
            "median": self.median,
            "mad": self.mad,
            "params": self.params,
        }


def reverse_trigger(
    model: nn.Module,
    clean: ImageDataset,
    target: int,
    *,
    epochs: int = 10,
    lr: float = 0.1,
    init_cost: float = 1e-3,
    success_threshold: float = 0.99,
    patience: int = 2,
    batch_size: int = 128,
    seed: int = 0,
) -> ReversedTrigger:
    """Find the smallest mask and pattern that send clean inputs to ``target``.

    Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
    Networks", IEEE S&P 2019. With ``m = (tanh(a) + 1)/2`` and ``p = (tanh(b) + 1)/2``
    (so both stay in [0, 1]) and ``x' = (1 − m)·x + m·p``, minimise over ``a, b`` with Adam

        CE(f(x'), target) + λ · ‖m‖₁,

    where λ starts at 0, is set to ``init_cost`` once the trigger works (success rate at least
    ``success_threshold`` over an epoch), then is multiplied by 1.5 after ``patience`` epochs
    above the threshold and divided by 1.5^1.5 after ``patience`` epochs below it (the
    paper's schedule). The smallest mask that met the threshold is kept (the last one when none
    did; ``success`` then says so). Inputs already of class ``target`` are left out.

    Args:
        model: the model to inspect (unchanged).
        clean: the defender's clean data.
        target: the class to reverse-engineer a trigger for.
        epochs: passes over the clean data.
        lr: Adam's learning rate.
        init_cost: the first non-zero λ.
        success_threshold: success rate that counts as a working trigger.
        patience: epochs before λ moves.
        batch_size: images per step.
        seed: seeds the initialisation and the data order.

    Returns:
        A :class:`ReversedTrigger`.
    """
    if not 0 <= target < clean.num_classes:
        raise ValueError(
            f"Invalid target class: {target!r} (must be in 0..{clean.num_classes - 1})"
        )
    others = clean.labels != target
    data = ImageDataset(
        name=clean.name,
        split=clean.split,
        images=clean.images[others],
        labels=clean.labels[others],
        num_classes=clean.num_classes,
        class_names=clean.class_names,
    )
    if len(data) == 0:
        raise ValueError(f"No clean examples outside class {target} to reverse a trigger on")
    gen = torch.Generator().manual_seed(seed)
    c, h, w = clean.input_shape
    a = (torch.randn(h, w, generator=gen) * 0.1 - 2.0).requires_grad_(True)  # mask starts small
    b = (torch.randn(c, h, w, generator=gen) * 0.1).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=lr, betas=(0.5, 0.9))
    cost, up, down = 0.0, 0, 0
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    last_success = 0.0
    with model_state(model):
        for _ in range(epochs):
            hits, seen = 0, 0
            for x, _y in data.loader(batch_size, shuffle=True, generator=gen):
                m = (torch.tanh(a) + 1) / 2
                p = (torch.tanh(b) + 1) / 2
                logits = model((1 - m) * x + m * p)
                t = torch.full((len(x),), target, dtype=torch.long)
                loss = F.cross_entropy(logits, t) + cost * m.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits += int((logits.argmax(1) == target).sum())
                seen += len(x)
            with torch.no_grad():
                m = (torch.tanh(a) + 1) / 2
                p = (torch.tanh(b) + 1) / 2
            last_success = hits / seen
            l1 = float(m.sum())
            if last_success >= success_threshold and (best is None or l1 < best[0]):
                best = (l1, m.clone(), p.clone())
            if cost == 0.0:
                if last_success >= success_threshold:
                    cost = init_cost
                continue
            if last_success >= success_threshold:
                up, down = up + 1, 0
                if up >= patience:
                    cost, up = cost * 1.5, 0
            else:
                up, down = 0, down + 1
                if down >= patience:
                    cost, down = cost / 1.5**1.5, 0
    if best is None:
        with torch.no_grad():
            m = (torch.tanh(a) + 1) / 2
            p = (torch.tanh(b) + 1) / 2
        best = (float(m.sum()), m.clone(), p.clone())
    l1, mask, pattern = best
    trig = ReversedTrigger(target=target, mask=mask, pattern=pattern, l1=l1, success=0.0)
    with torch.no_grad(), model_state(model):
        hits = 0
        for start in range(0, len(data), 1000):
            xb = trig.apply(data.images[start : start + 1000])
            hits += int((model(xb).argmax(1) == target).sum())
    trig.success = hits / len(data)
    return trig


def _anomaly(l1: list[float]) -> tuple[list[float], float, float]:
    """Anomaly indices, median and MAD of the trigger sizes (medians of even counts averaged)."""
    med = statistics.median(l1)
    dev = [abs(v - med) for v in l1]
    mad = statistics.median(dev)
    scale = MAD_CONSISTENCY * mad
    index = [d / scale if scale > 0 else (math.inf if d > 0 else 0.0) for d in dev]
    return index, med, mad


def neural_cleanse(
    model: nn.Module,
    clean: ImageDataset,
    *,
    threshold: float = 2.0,
    epochs: int = 10,
    lr: float = 0.1,
    init_cost: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> NeuralCleanse:
    """Reverse-engineer a trigger for every class and flag the anomalously small ones.

    Wang et al. 2019: with ``l_t = ‖m_t‖₁`` the size of class ``t``'s reversed trigger, the
    anomaly index is ``|l_t − median(l)| / (1.4826 · MAD(l))``; a class with ``l_t`` below the
    median and an index above ``threshold`` (2) is a backdoor target.

    Args:
        model: the model to inspect (unchanged).
        clean: the defender's clean data.
        threshold: anomaly-index cut (> 0).
        epochs, lr, init_cost, batch_size: see :func:`reverse_trigger`.
        seed: seeds every class's optimisation (class ``t`` uses ``seed + t``).
        progress: show a progress bar over classes.

    Returns:
        A :class:`NeuralCleanse`.
    """
    if not threshold > 0:
        raise ValueError(f"Invalid threshold: {threshold!r} (must be > 0)")
    triggers = []
    for t in tqdm(
        range(clean.num_classes), desc="neural cleanse", unit="class", disable=not progress
    ):
        triggers.append(
            reverse_trigger(
                model,
                clean,
                t,
                epochs=epochs,
                lr=lr,
                init_cost=init_cost,
                batch_size=batch_size,
                seed=seed + t,
            )
        )
    l1 = [tr.l1 for tr in triggers]
    index, med, mad = _anomaly(l1)
    flagged = [t for t in range(len(l1)) if l1[t] < med and index[t] > threshold]
    return NeuralCleanse(
        triggers=triggers,
        anomaly_index=index,
        flagged=flagged,
        threshold=threshold,
        median=med,
        mad=mad,
        params={"epochs": epochs, "lr": lr, "init_cost": init_cost, "seed": seed},
    )


def unlearn(
    model: nn.Module,
    clean: ImageDataset,
    result: NeuralCleanse,
    *,
    fraction: float = 0.2,
    epochs: int = 5,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Neural Cleanse's mitigation by unlearning: fine-tune a copy on clean data in which a
    ``fraction`` of every batch carries a flagged class's reversed trigger, with the true labels.

    Wang et al. (2019, Sec. VI-C) stamp 20% of the fine-tuning data. With no class flagged
    the copy is returned untouched (there is nothing to unlearn).

    Returns:
        The mitigated copy (the input model is not changed).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Invalid fraction: {fraction!r} (must be in (0, 1])")
    net = copy.deepcopy(model)
    if not result.flagged:
        return net.eval()
    stamps = [result.triggers[t] for t in result.flagged]

    def stamp(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pick = torch.rand(len(x), generator=gen) < fraction
        which = torch.randint(len(stamps), (len(x),), generator=gen)
        out = x.clone()
        for j, trig in enumerate(stamps):
            rows = pick & (which == j)
            if rows.any():
                out[rows] = trig.apply(x[rows])
        return out

    finetune(
        net,
        clean,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        transform=stamp,
        progress=progress,
        desc="neural cleanse: unlearning",
    )
    return net.eval()
