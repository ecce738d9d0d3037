"""Fine-pruning (Liu et al. 2018): prune the channels clean data leaves dormant, then fine-tune."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset
from .features import channel_activity, last_conv
from .finetune import finetune
from .metrics import predict

__all__ = ["FinePruning", "fine_pruning"]


@dataclass(eq=False)
class FinePruning:
    """The outcome of :func:`fine_pruning`.

    Attributes:
        model: the pruned and fine-tuned copy (the input model is not changed).
        pruned: indices of the pruned channels of the last convolution, in pruning order.
        channels: channels of that convolution.
        activity: mean activation of each channel on the clean data, before pruning.
        accuracy_before: clean-set accuracy of the input model.
        accuracy_pruned: clean-set accuracy after pruning, before fine-tuning.
        accuracy_after: clean-set accuracy after fine-tuning.
        curve: clean-set accuracy after pruning each channel in turn (index k: k+1 pruned).
    """

    model: nn.Module
    pruned: list[int]
    channels: int
    activity: list[float]
    accuracy_before: float
    accuracy_pruned: float
    accuracy_after: float
    curve: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def _zero_channels(conv: nn.Conv2d, channels: list[int]) -> None:
    with torch.no_grad():
        conv.weight[channels] = 0.0
        if conv.bias is not None:
            conv.bias[channels] = 0.0


def fine_pruning(
    model: nn.Module,
    clean: ImageDataset,
    *,
    max_drop: float = 0.04,
    epochs: int = 5,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> FinePruning:
    """Prune dormant channels of the last convolution, then fine-tune on clean data.

    Liu, Dolan-Gavitt & Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
    Neural Networks", RAID 2018. A backdoor tends to live in neurons that clean inputs leave
    inactive. Channels of the last convolution are pruned in increasing order of their mean
    activation on ``clean``, as long as the clean accuracy stays at least ``acc₀ − max_drop``
    (the paper stops when validation accuracy has fallen by 4 points); the pruned network is
    then fine-tuned on ``clean`` with the pruned channels held at zero. A channel is pruned by
    zeroing its filter and bias, so with a ReLU after the convolution its output is exactly 0
    and the checkpoint stays an ordinary one of the same architecture.

    Args:
        model: the (possibly backdoored) model; a copy is pruned.
        clean: the defender's clean data (pruning is judged and fine-tuning done on it).
        max_drop: largest clean-accuracy loss pruning may cause, in [0, 1].
        epochs: fine-tuning epochs after pruning (0: prune only).
        lr: fine-tuning learning rate (SGD, momentum 0.9).
        batch_size: fine-tuning batch size.
        seed: seeds the fine-tuning order.
        progress: show progress bars.

    Returns:
        A :class:`FinePruning`.
    """
    if not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"Invalid max_drop: {max_drop!r} (must be in [0, 1])")
    net = copy.deepcopy(model)
    conv = last_conv(net)
    activity = channel_activity(net, clean.images)
    order = [int(i) for i in activity.argsort()]

    def accuracy() -> float:
        return float((predict(net, clean.images) == clean.labels).float().mean())

    before = accuracy()
    floor = before - max_drop
    saved_w = conv.weight.detach().clone()
    saved_b = None if conv.bias is None else conv.bias.detach().clone()
    pruned: list[int] = []
    curve: list[float] = []
    # Keep at least one channel: a network with its whole last convolution pruned is constant.
    for ch in order[:-1]:
        _zero_channels(conv, [ch])
        acc = accuracy()
        curve.append(acc)
        if acc < floor:
            with torch.no_grad():  # undo the channel that went too far
                conv.weight[ch] = saved_w[ch]
                if saved_b is not None and conv.bias is not None:
                    conv.bias[ch] = saved_b[ch]
            break
        pruned.append(ch)
    after_pruning = accuracy()
    finetune(
        net,
        clean,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        after_step=lambda _m: _zero_channels(conv, pruned),
        progress=progress,
        desc="fine-pruning: fine-tuning",
    )
    net.eval()
    return FinePruning(
        model=net,
        pruned=pruned,
        channels=conv.out_channels,
        activity=[float(a) for a in activity],
        accuracy_before=before,
        accuracy_pruned=after_pruning,
        accuracy_after=accuracy(),
        curve=curve,
    )
