"""``model_state``: the one place that sets a model's mode and flags and puts them back exactly.

Attacks, evaluation, training objectives, certification and landscapes all work on a model that
belongs to someone else. They change its mode (eval for attacks), its parameters' ``requires_grad``
flags (no gradient accumulates in the weights while an input gradient is computed) and, for
weight-space work, its parameter and buffer values. This context manager records all of that on
entry and restores it on exit, even after an exception, module by module and flag by flag, so a
model with some layers frozen or some modules deliberately in eval mode stays exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

__all__ = ["attack_mode", "model_state"]


@contextmanager
def model_state(
    model: nn.Module,
    *,
    train: bool = False,
    requires_grad: bool = False,
    restore_values: bool = False,
) -> Iterator[nn.Module]:
    """Put ``model`` in the given mode with the given parameter flags; restore everything after.

    Args:
        model: any ``nn.Module``.
        train: mode inside the block (``False``: eval, the mode attacks use).
        requires_grad: ``requires_grad`` of every parameter inside the block.
        restore_values: also snapshot every parameter and buffer (BatchNorm running statistics,
            counters) and copy them back on exit; for code that perturbs the weights
            (weight-space landscapes) or may run BatchNorm in training mode.

    Returns:
        A context manager yielding ``model``.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    if restore_values:
        with torch.no_grad():
            saved = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
    try:
        model.train(train)
        for p, _ in flags:
            p.requires_grad_(requires_grad)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
        if saved:
            with torch.no_grad():
                for t, value in saved:
                    t.copy_(value)


def attack_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """Eval mode, frozen parameters: how adversarial examples are crafted against a model.

    Batch-norm uses its running statistics (and does not update them), dropout is off, and no
    gradient accumulates in the parameters. Same as ``model_state(model)``.
    """
    return model_state(model)
