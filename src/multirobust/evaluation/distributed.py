"""Sharding an evaluation over processes with ``torch.distributed`` (launched by ``torchrun``).

Batches are the unit of work: batch ``b`` (examples ``b·batch_size`` onwards) goes to rank
``b mod world_size``. Every batch draws its randomness from a seed made of the run's seed and the
batch's index, never from the rank, so a sharded run computes exactly the batches a single
process would and the gathered report is the same. Results travel as plain Python objects
(``all_gather_object``), which works on the gloo (CPU) and nccl (CUDA) backends alike.

The process group itself (launch environment, backend, collectives) is
:mod:`multirobust.parallel`, shared with training; a :class:`Shard` is its ``Group``.

Example (two CPU processes)::

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m multirobust evaluate \\
        --checkpoint model.pt --threat linf:0.3 --threat l2:2 --n 1000 --out runs/eval
"""

from __future__ import annotations

from typing import TypeVar

import torch

from .. import parallel
from ..parallel import ENV_VARS, current, device_for, launched

__all__ = [
    "ENV_VARS",
    "Shard",
    "all_gather",
    "broadcast",
    "current",
    "device_for",
    "init_from_env",
    "launched",
    "merge",
    "require",
    "shutdown",
]

T = TypeVar("T")

#: This process's place in the group: ``rank`` of ``world_size``; ``batches(count)`` are its own.
Shard = parallel.Group


def init_from_env(
    device: torch.device | str = "cpu", timeout_s: float = parallel.DEFAULT_TIMEOUT_S
) -> Shard:
    """Join the process group that torchrun describes in the environment.

    The backend is nccl for CUDA devices and gloo otherwise. A group that is already
    initialised is used as it is.

    Args:
        device: this process's device (CUDA devices are made current, as nccl requires).
        timeout_s: how long collectives wait for the other ranks.

    Returns:
        This process's :class:`Shard`.

    Raises:
        ValueError: when the torchrun variables are missing or inconsistent.
    """
    group = parallel.join(device, timeout_s=timeout_s)
    if group is None:
        raise ValueError(
            "Cannot join a process group: RANK and WORLD_SIZE not set (launch with torchrun, "
            "e.g. torchrun --nproc_per_node 2 -m multirobust evaluate ...)"
        )
    return group


def require(distributed: bool) -> Shard:
    """The shard for ``evaluate(distributed=...)``: rank 0 of 1 unless ``distributed``."""
    if not distributed:
        return Shard()
    if not parallel.initialised():
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun and call multirobust.evaluation.distributed.init_from_env() first"
        )
    return current()


def all_gather(obj: T, shard: Shard) -> list[T]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` for a single process)."""
    return shard.gather(obj)


def broadcast(obj: T, shard: Shard, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank."""
    return shard.broadcast(obj, src)


def merge(parts: list[dict[int, T]]) -> dict[int, T]:
    """One dict from the per-rank dicts keyed by batch index; a batch claimed twice is a bug."""
    out: dict[int, T] = {}
    for part in parts:
        for key, value in part.items():
            if key in out:
                raise RuntimeError(f"Batch {key} was evaluated by two ranks")
            out[key] = value
    return out


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    parallel.leave()
