"""Data-parallel training over several processes: ``torch.distributed`` + DDP, under ``torchrun``.

``torchrun --nproc_per_node 2 -m multirobust train --config run.toml`` starts two processes;
each one finds ``RANK``/``WORLD_SIZE`` in its environment, and :func:`setup` joins them into a
process group (gloo on CPU, NCCL on CUDA) through :mod:`multirobust.parallel`, the helper
evaluation shares. The fit loop then:

- gives each process its share of every global batch (:func:`shard_batches`): one permutation
  of the training set per epoch, drawn from a generator seeded with ``seed + epoch`` (the same
  on every process, nothing to checkpoint), padded to a multiple of the world size like
  ``DistributedSampler``, cut into global batches of ``batch_size`` examples, each split into
  ``world_size`` equal contiguous parts. ``batch_size`` is therefore the *global* batch size,
  and since DDP averages the gradients, one step with W processes is one step on the whole
  batch: the learning rate means what it means in a one-process run with the same batch size;
- wraps the model in :class:`AttackAwareDDP`, which syncs gradients only for the forward
  passes that train the weights: attacks run inside ``attack_mode`` (parameters frozen) and
  their forward passes go straight to the underlying module, so DDP's reducer never sees
  them, no collective runs inside an attack, and ``find_unused_parameters`` is not needed;
- measures the held-out metrics on a shard per process and sums the counts
  (:func:`sharded_robust_accuracy`), so every process takes the same early-stopping decision;
- lets only rank 0 write checkpoints, logs and TensorBoard events.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import parallel
from .config import ConfigError
from .objectives import ThreatLike, as_lp_balls
from .overfitting import robust_accuracy

__all__ = [
    "AttackAwareDDP",
    "Context",
    "epoch_batches",
    "launch_environment",
    "per_process_batch",
    "setup",
    "shard_batches",
    "sharded_robust_accuracy",
    "steps_per_epoch",
    "weights_checksum",
]


#: The process group a run takes part in (rank, world size, device, collectives).
Context = parallel.Group


def launch_environment(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them, or None outside torchrun.

    :func:`multirobust.parallel.launch_environment`, its errors as :class:`ConfigError`.

    Raises:
        ConfigError: when only one of ``RANK``/``WORLD_SIZE`` is set, or they are not integers
            with ``0 <= RANK < WORLD_SIZE``.
    """
    try:
        return parallel.launch_environment(env)
    except parallel.LaunchError as err:
        raise ConfigError(str(err)) from None


def setup(device: torch.device | str = "cpu") -> Context | None:
    """Join the process group of a ``torchrun`` launch, or return None for a one-process run.

    :func:`multirobust.parallel.join`: an existing default group is used as it is and left
    open; otherwise one is created from torchrun's variables (NCCL on CUDA, gloo otherwise).

    Args:
        device: where training runs; its type picks the backend.

    Returns:
        A :class:`Context`, or None when this is not a distributed launch.

    Raises:
        ConfigError: for an inconsistent launch environment or a missing rendezvous address.
    """
    try:
        return parallel.join(device)
    except parallel.LaunchError as err:
        raise ConfigError(str(err)) from None


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Examples per process in each global batch of ``batch_size``.

    Raises:
        ConfigError: when ``batch_size`` is not a multiple of ``world_size``.
    """
    if batch_size % world_size:
        raise ConfigError(
            f"Invalid batch_size: {batch_size} with {world_size} processes (the batch size is "
            f"global: it must be a multiple of the number of processes, e.g. "
            f"{max(world_size, batch_size // world_size * world_size)})"
        )
    return batch_size // world_size


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Optimiser steps in one epoch of :func:`shard_batches` (n padded to a multiple of W)."""
    return math.ceil(math.ceil(n / world_size) * world_size / batch_size)


def epoch_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    epoch: int,
    seed: int,
    ctx: Context,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's ``(images, labels)`` batches of one epoch (see :func:`shard_batches`)."""
    for index in shard_batches(
        images.shape[0],
        batch_size,
        epoch=epoch,
        seed=seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    ):
        yield images[index], labels[index]


def shard_batches(
    n: int, batch_size: int, *, epoch: int, seed: int, rank: int, world_size: int
) -> list[torch.Tensor]:
    """This process's example indices for each global batch of one epoch.

    A permutation of ``range(n)`` is drawn from ``torch.Generator().manual_seed(seed +
    epoch)``; it is padded with its own first entries to a multiple of ``world_size`` (so
    every process takes the same number of steps, as ``DistributedSampler`` does), cut into
    global batches of ``batch_size`` (the last one may be smaller, still a multiple of
    ``world_size``), and each global batch is split into ``world_size`` equal contiguous
    parts, part ``rank`` being this process's. The global batches do not depend on
    ``world_size`` (when ``n`` is a multiple of it), so runs with different numbers of
    processes train on the same batches.

    Args:
        n: training-set size (>= 1).
        batch_size: global batch size, a multiple of ``world_size``.
        epoch: the epoch number (any integer; 1-based in the fit loop).
        seed: the run's seed.
        rank: this process, 0 .. world_size - 1.
        world_size: number of processes (>= 1).

    Returns:
        One int64 index tensor per step, each of ``len(global batch) / world_size`` entries.

    Raises:
        ValueError: for n < 1, a bad rank/world size, or a batch size that does not split.
    """
    if n < 1:
        raise ValueError(f"Invalid n: {n!r} (must be >= 1)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"Invalid rank/world_size: {rank}/{world_size} (need 0 <= rank < world_size)"
        )
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(
            f"Invalid batch_size: {batch_size!r} (must be a positive multiple of {world_size})"
        )
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[: total - n]])
    out = []
    for start in range(0, total, batch_size):
        chunk = order[start : start + batch_size]
        part = chunk.shape[0] // world_size
        out.append(chunk[rank * part : (rank + 1) * part].clone())
    return out


class AttackAwareDDP(DistributedDataParallel):
    """``DistributedDataParallel`` that only syncs the forward passes that train the weights.

    A forward pass goes through DDP (so the following backward all-reduces the gradients)
    when gradients are enabled and some parameter requires a gradient; otherwise it calls the
    wrapped module directly. Attacks run inside :func:`~multirobust.training.attack_mode`,
    which freezes every parameter, and their inputs-only backward passes would leave DDP's
    reducer waiting for gradients that never come; routing them to ``self.module`` keeps the
    reducer, the buffer broadcasts and every collective out of the attack. All objectives of
    :mod:`multirobust.training` therefore work unchanged on this wrapper, including TRADES
    (two training forward passes, one backward) and Free-AT (one backward per replay).
    """

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self._multirobust_params = [p for p in module.parameters()]

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """DDP's forward for a training pass, the bare module's for an attack or under no_grad."""
        if torch.is_grad_enabled() and any(p.requires_grad for p in self._multirobust_params):
            return super().forward(*inputs, **kwargs)
        return self.module(*inputs, **kwargs)


def sharded_robust_accuracy(
    ctx: Context,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 20,
    seed: int = 0,
    single_step: bool = False,
    progress: bool = False,
    desc: str = "held-out",
) -> dict[str, float]:
    """:func:`~multirobust.training.robust_accuracy` with the examples split over the processes.

    Process r evaluates the contiguous slice ``[r·n/W, (r+1)·n/W)`` of (x, y); the correct
    counts are summed over the processes, so every process gets the same fractions of the
    whole set. The PGD start of each shard comes from a generator seeded with ``seed + r``.

    Returns:
        ``{"clean": acc, "<threat>": acc, ..., "union": acc}`` over all n examples (and the
        single-step accuracies with ``single_step``).
    """
    names = [str(t) for t in as_lp_balls(threats)]
    n = x.shape[0]
    lo, hi = ctx.contiguous(n)
    keys = ["clean", *names, "union"]
    if single_step:
        keys += [f"fgsm[{t}]" for t in names] + ["fgsm_union"]
    counts = [0.0] * len(keys)
    if hi > lo:
        local = robust_accuracy(
            model,
            x[lo:hi],
            y[lo:hi],
            threats,
            steps=steps,
            seed=seed + ctx.rank,
            single_step=single_step,
            progress=progress and ctx.is_main,  # rank 0's shard stands for the others
            desc=desc,
        )
        counts = [round(local[k] * (hi - lo)) for k in keys]
    total = ctx.all_sum(counts)
    return {k: v / n if n else 0.0 for k, v in zip(keys, total, strict=True)}


def weights_checksum(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes), as hex."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
