"""The process group of a ``torchrun`` launch: join it, know your rank, share results, leave.

Training (data-parallel SGD) and evaluation (batches spread over processes) both run under
``torchrun --nproc_per_node K -m multirobust ...``. This module is the one place that reads the
launch environment, creates the ``torch.distributed`` group (gloo on CPU, NCCL on CUDA) and
moves plain Python objects between processes; a run without torchrun is a :class:`Group` of one
process whose collectives return at once, so callers never branch on "distributed or not".

    group = parallel.join("cpu")          # None outside torchrun
    group = group or parallel.Group()     # rank 0 of 1
    mine = group.batches(count)           # rank, rank + W, rank + 2W, ... < count
    everyone = group.gather(result)       # every rank's result, in rank order
    group.close()
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "ENV_VARS",
    "Group",
    "LaunchError",
    "current",
    "device_for",
    "initialised",
    "join",
    "launch_environment",
    "launched",
    "leave",
]

T = TypeVar("T")

#: Environment variables that torchrun sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: How long a collective waits for the other processes (torch's own default).
DEFAULT_TIMEOUT_S = 1800.0


class LaunchError(ValueError):
    """The launch environment is inconsistent or incomplete; the message says how to launch."""


def launched(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (``RANK`` or ``WORLD_SIZE`` is set)."""
    env = os.environ if env is None else env
    return "RANK" in env or "WORLD_SIZE" in env


def launch_environment(env: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them, or None outside torchrun.

    Args:
        env: the environment to read (default ``os.environ``).

    Raises:
        LaunchError: when only one of ``RANK``/``WORLD_SIZE`` is set, or they are not integers
            with ``0 <= RANK < WORLD_SIZE``.
    """
    env = os.environ if env is None else env
    if not launched(env):
        return None
    if ("RANK" in env) != ("WORLD_SIZE" in env):
        raise LaunchError(
            "Invalid distributed environment: RANK and WORLD_SIZE must be set together "
            "(launch with torchrun, or unset both for a one-process run)"
        )
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        raise LaunchError(
            f"Invalid distributed environment: RANK={env['RANK']!r}, "
            f"WORLD_SIZE={env['WORLD_SIZE']!r} (must be integers)"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise LaunchError(
            f"Invalid distributed environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local} (need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0)"
        )
    return rank, world, local


def device_for(requested: str | torch.device = "auto") -> torch.device:
    """This process's device: ``"auto"`` is CUDA when available, else the CPU; an unnumbered
    ``"cuda"`` under torchrun means device ``LOCAL_RANK`` (one GPU per process).

    Raises:
        ValueError: for an unknown device name, or CUDA asked for but not available.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"Invalid device: {requested!r} (e.g. auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {str(requested)!r} requested but CUDA is not available")
        if device.index is None:
            launch = launch_environment()
            device = torch.device("cuda", launch[2] if launch else 0)
    return device


@dataclass
class Group:
    """The processes a run is shared among; one process (rank 0 of 1) without torchrun.

    Attributes:
        rank: this process's rank, 0 .. world_size - 1.
        world_size: number of processes.
        device: this process's device (collective tensors live there: NCCL needs CUDA).
        owns_group: True when :func:`join` created the ``torch.distributed`` group, which
            :meth:`close` then destroys.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    def batches(self, count: int) -> list[int]:
        """The items of ``range(count)`` this rank takes, strided: ``rank, rank + W, ...``."""
        return list(range(self.rank, count, self.world_size))

    def contiguous(self, n: int) -> tuple[int, int]:
        """This rank's slice ``[lo, hi)`` of ``n`` items cut into W near-equal contiguous parts."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over all processes (in float64)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T, src: int = 0) -> T:
        """Rank ``src``'s ``obj`` on every process (the others' ``obj`` is ignored)."""
        if self.world_size == 1:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]  # type: ignore[no-any-return]

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the ``torch.distributed`` group if :func:`join` created it."""
        if self.owns_group:
            leave()
        self.owns_group = False


def initialised() -> bool:
    """Whether this process belongs to an initialised ``torch.distributed`` group."""
    return dist.is_available() and dist.is_initialized()


def leave() -> None:
    """Destroy this process's default group, whoever created it (a no-op without one)."""
    if initialised():
        dist.destroy_process_group()


def current(device: torch.device | str = "cpu") -> Group:
    """The group already initialised in this process (rank 0 of 1 when there is none)."""
    device = torch.device(device)
    if initialised():
        return Group(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
    return Group(device=device)


def join(
    device: torch.device | str = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Group | None:
    """Join the process group of a ``torchrun`` launch, or return None for a one-process run.

    An existing default process group (a caller that called ``init_process_group`` itself) is
    used as it is and left open. Otherwise, when the torchrun variables are set, a group is
    created from them (``env://``): NCCL for a CUDA ``device`` (an unnumbered one becomes
    ``cuda:LOCAL_RANK`` and is made current), gloo otherwise.

    Args:
        device: where this process computes; its type picks the backend.
        timeout_s: how long collectives wait for the other processes.

    Returns:
        The :class:`Group`, or None when this is not a distributed launch.

    Raises:
        LaunchError: for an inconsistent launch environment or a missing rendezvous address.
    """
    device = torch.device(device)
    if initialised():
        return current(device)
    launch = launch_environment()
    if launch is None:
        return None
    if not dist.is_available():
        raise LaunchError("Running under torchrun needs a PyTorch build with torch.distributed")
    rank, world, local = launch
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise LaunchError(
            f"Invalid distributed environment: {', '.join(missing)} not set "
            "(launch with torchrun --nproc_per_node N -m multirobust ...)"
        )
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return Group(rank, world, device, owns_group=True)
