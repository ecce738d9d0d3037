"""Sharding an evaluation over processes with ``torch.distributed`` (launched by ``torchrun``).

Batches are the unit of work: batch ``b`` (examples ``b·batch_size`` onwards) goes to rank
``b mod world_size``. Every batch draws its randomness from a seed made of the run's seed and the
batch's index, never from the rank, so a sharded run computes exactly the batches a single
process would and the gathered report is the same. Results travel as plain Python objects
(``all_gather_object``), which works on the gloo (CPU) and nccl (CUDA) backends alike.

Example (two CPU processes)::

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m multirobust evaluate \\
        --checkpoint model.pt --threat linf:0.3 --threat l2:2 --n 1000 --out runs/eval
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: Environment variables that torchrun sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Shard:
    """This process's place in the group: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def batches(self, count: int) -> list[int]:
        """The indices of the ``count`` batches this rank evaluates (strided: b mod world)."""
        return list(range(self.rank, count, self.world_size))


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"Environment variable {name} is not set (launch with torchrun)")
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"Invalid {name}: {text!r} (must be an integer)") from None
    if value < 0:
        raise ValueError(f"Invalid {name}: {value} (must be >= 0)")
    return value


def launched() -> bool:
    """Whether this process was started by torchrun (``WORLD_SIZE`` is in the environment)."""
    return "WORLD_SIZE" in os.environ


def device_for(requested: str = "auto") -> torch.device:
    """The device of this process: ``"auto"`` is CUDA device ``LOCAL_RANK`` when CUDA is
    available, else the CPU; ``"cuda"`` under torchrun also means device ``LOCAL_RANK``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"Invalid device: {requested!r} (e.g. auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {requested!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", _env_int("LOCAL_RANK", 0) if launched() else 0)
    return device


def init_from_env(device: torch.device | str = "cpu", timeout_s: float = 1800.0) -> Shard:
    """Join the process group that torchrun describes in the environment.

    The backend is nccl for CUDA devices and gloo otherwise. A group that is already
    initialised is used as it is.

    Args:
        device: this process's device (CUDA devices are made current, as nccl requires).
        timeout_s: how long collectives wait for the other ranks.

    Returns:
        This process's :class:`Shard`.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    device = torch.device(device)
    if dist.is_initialized():
        return current()
    missing = [v for v in ENV_VARS if v not in os.environ and v != "LOCAL_RANK"]
    if missing:
        raise ValueError(
            f"Cannot join a process group: {', '.join(missing)} not set (launch with torchrun, "
            "e.g. torchrun --nproc_per_node 2 -m multirobust evaluate ...)"
        )
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world < 1 or rank >= world:
        raise ValueError(f"Invalid RANK {rank} for WORLD_SIZE {world}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return Shard(rank, world)


def current() -> Shard:
    """The initialised group's :class:`Shard` (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def require(distributed: bool) -> Shard:
    """The shard for ``evaluate(distributed=...)``: rank 0 of 1 unless ``distributed``."""
    if not distributed:
        return Shard()
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun and call multirobust.evaluation.distributed.init_from_env() first"
        )
    return current()


def all_gather(obj: T, shard: Shard) -> list[T]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` for a single process)."""
    if shard.world_size == 1:
        return [obj]
    out: list[Any] = [None] * shard.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T, shard: Shard, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank."""
    if shard.world_size == 1:
        return obj
    box: list[Any] = [obj if shard.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[no-any-return]


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
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
