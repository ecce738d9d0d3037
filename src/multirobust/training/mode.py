"""``attack_mode``: run an attack on a model in eval mode without parameter gradients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["attack_mode"]


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters, and restore it exactly afterwards.

    Adversarial examples are crafted against the model as it is used at test time: batch-norm
    uses its running statistics (and does not update them), dropout is off, and no gradient
    accumulates in the parameters. On exit, every module's own ``training`` flag and every
    parameter's ``requires_grad`` flag are put back as they were, even after an exception, so
    a model with some frozen layers or some modules deliberately in eval mode stays that way.

    Args:
        model: the network under training.

    Returns:
        A context manager yielding ``model``.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
