"""Fine-tuning on the defender's small clean set: the last step of fine-pruning and of Neural
Cleanse's unlearning, and BackdoorBench's plain "FT" baseline."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import ImageDataset
from ..models import model_state

__all__ = ["finetune"]


def finetune(
    model: nn.Module,
    clean: ImageDataset,
    *,
    epochs: int = 5,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    transform: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    progress: bool = False,
    desc: str = "fine-tuning",
) -> nn.Module:
    """Train ``model`` in place on ``clean`` with SGD (momentum 0.9), cross-entropy, constant lr.

    Args:
        model: the model to update (its weights change; its mode is restored).
        clean: the defender's clean examples.
        epochs: passes over ``clean`` (>= 0).
        lr: learning rate (> 0).
        batch_size: examples per step.
        seed: seeds the shuffling (and ``transform``'s generator).
        transform: ``transform(x, y, generator) -> x'`` applied to every batch (unlearning stamps
            reversed triggers on part of it).
        after_step: called with the model after every optimiser step (fine-pruning re-applies
            its channel mask there).
        progress: show a progress bar.
        desc: the bar's label.

    Returns:
        ``model``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"Invalid epochs: {epochs!r} (must be an integer >= 0)")
    if not lr > 0:
        raise ValueError(f"Invalid lr: {lr!r} (must be > 0)")
    if epochs == 0:
        return model
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    bar = tqdm(total=epochs * len(clean), desc=desc, unit="img", disable=not progress, leave=False)
    with model_state(model, train=True, requires_grad=True):
        for _ in range(epochs):
            for x, y in clean.loader(batch_size, shuffle=True, generator=gen):
                if transform is not None:
                    x = transform(x, y, gen)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                if after_step is not None:
                    after_step(model)
                bar.update(len(y))
    bar.close()
    return model
