"""Shadow models: many models of one training recipe, each on a random half of a data pool.

``membership_plan(pool_size, shadows, seed)`` draws which shadow trains on which example the way
LiRA's code does: every example is IN for exactly half of the shadows (a random half), so each
example's IN and OUT distributions are estimated from equally many models. ``train_shadows``
trains them through :func:`multirobust.training.fit` in parallel worker processes (at most one
per available core, one thread each); each shadow is an ordinary resumable fit run in
``out/shadow-NNN``, and after training its logits on the whole pool are saved beside it
(``logits.safetensors``), which marks it done.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from .. import atomic, data, models
from ..training import TrainConfig, fit
from .scores import logits_of

__all__ = [
    "ShadowJob",
    "available_cores",
    "load_logits",
    "membership_plan",
    "shadow_dir",
    "train_one",
    "train_shadows",
]

log = logging.getLogger(__name__)

LOGITS = "logits.safetensors"


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def membership_plan(pool_size: int, shadows: int, seed: int) -> torch.Tensor:
    """Which shadow trains on which pool example: each example IN for exactly half of them.

    Carlini et al. (2022)'s construction: draw a uniform matrix ``U`` of shape (shadows, pool),
    rank each column, and keep the example in the shadows holding the lower half of the ranks.
    Each shadow then trains on about half of the pool.

    Args:
        pool_size: examples in the pool (>= 1).
        shadows: number of shadow models (even, >= 2).
        seed: seeds ``U``.

    Returns:
        ``(shadows, pool_size)`` bool.
    """
    if isinstance(shadows, bool) or not isinstance(shadows, int) or shadows < 2 or shadows % 2:
        raise ValueError(f"Invalid number of shadow models: {shadows!r} (must be even and >= 2)")
    if pool_size < 1:
        raise ValueError(f"Invalid pool size: {pool_size!r} (must be >= 1)")
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(shadows, pool_size, generator=gen)
    ranks = u.argsort(0).argsort(0)
    return ranks < shadows // 2


def shadow_dir(out: str | Path, index: int) -> Path:
    """The folder of shadow ``index``."""
    return Path(out) / f"shadow-{index:03d}"


@dataclass(frozen=True)
class ShadowJob:
    """Everything a worker process needs to train one model and score the pool (picklable).

    Attributes:
        folder: the model's run folder.
        dataset: registered dataset name.
        split: split the pool is drawn from.
        pool: pool indices into that split.
        train_positions: positions (into ``pool``) of the examples this model trains on.
        train: :class:`TrainConfig` fields (``out`` and ``dataset`` are set per job).
        held_out_n: test images for the per-epoch held-out accuracy.
        data_root: data folder (None: ``$MULTIROBUST_DATA``).
        resume: continue an interrupted run.
    """

    folder: str
    dataset: str
    split: str
    pool: list[int]
    train_positions: list[int]
    train: dict[str, Any]
    held_out_n: int
    data_root: str | None = None
    resume: bool = True


def _subset(ds: data.ImageDataset, idx: torch.Tensor) -> data.ImageDataset:
    return data.ImageDataset(
        name=ds.name,
        split=ds.split,
        images=ds.images[idx],
        labels=ds.labels[idx],
        num_classes=ds.num_classes,
        class_names=ds.class_names,
    )


def _exit_with(parent: int, every: float = 1.0) -> None:
    """Worker initializer: end this process soon after ``parent`` is gone.

    A parent killed by a signal it cannot handle (SIGTERM, SIGKILL) leaves spawned workers
    running, training into a folder that may be removed or reused meanwhile. Every write of a
    shadow is atomic, so stopping a worker at any point loses at most the epoch under way.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(every)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def train_one(job: ShadowJob, threads: int | None = 1) -> str:
    """Train one model of the plan (resuming if asked), then save its logits on the pool.

    Runs in a worker process (``threads`` torch threads each) or in the caller's.

    Returns:
        The folder.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    folder = Path(job.folder)
    if (folder / LOGITS).is_file():
        return job.folder
    # The pool is a set of positions in the split: read only as far as the last one.
    full = data.load(job.dataset, job.split, root=job.data_root, limit=max(job.pool) + 1)
    pool = _subset(full, torch.tensor(job.pool, dtype=torch.long))
    train_set = _subset(pool, torch.tensor(job.train_positions, dtype=torch.long))
    held_out = data.load(job.dataset, "test", root=job.data_root, limit=job.held_out_n)
    cfg = TrainConfig.from_dict(
        {**job.train, "dataset": job.dataset, "out": str(folder), "progress": False}
    )
    model_path = folder / "model.pt"
    if model_path.is_file():  # fit writes model.pt when the run has finished
        model = models.load(model_path)
    else:
        resume = job.resume and (folder / "checkpoint.pt").is_file()
        model = fit(cfg, train=train_set, held_out=held_out, resume=resume).model
    logits = logits_of(model, pool.images)
    atomic.write_bytes_atomic(folder / LOGITS, safetensors_bytes({"logits": logits.contiguous()}))
    return job.folder


def load_logits(folder: str | Path) -> torch.Tensor:
    """The saved pool logits of a trained model.

    Raises:
        FileNotFoundError: when the model has not finished.
    """
    path = Path(folder) / LOGITS
    if not path.is_file():
        raise FileNotFoundError(f"No logits in {folder}: the model has not finished training")
    return load_file(str(path))["logits"]


def _epochs_of(job: ShadowJob) -> int:
    """The epochs a job trains for (its setting, else the training default)."""
    epochs = job.train.get("epochs")
    return int(epochs) if isinstance(epochs, int) and epochs > 0 else TrainConfig().epochs


def epochs_done(job: ShadowJob) -> int:
    """Finished epochs of a job, read from its log (all of them once its logits are saved)."""
    folder = Path(job.folder)
    total = _epochs_of(job)
    if (folder / LOGITS).is_file():
        return total
    try:
        lines = (folder / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return min(int(json.loads(line)["epoch"]), total)
        except (ValueError, KeyError, TypeError):
            continue  # a line being written, or not an epoch record
    return 0


class _EpochBar:
    """A bar over every epoch of every job, moved by a thread that reads the jobs' logs every
    ``every`` seconds: the workers are other processes, and each writes one log line per
    epoch, so the bar moves with the training itself (not once per finished model)."""

    def __init__(self, jobs: list[ShadowJob], progress: bool, every: float = 2.0) -> None:
        self.jobs = jobs
        self.bar = tqdm(
            total=sum(_epochs_of(j) for j in jobs),
            desc=f"shadow models (0/{len(jobs)} done), epochs",
            unit="epoch",
            disable=not progress,
        )
        self._stop = threading.Event()
        self._every = every
        self.poll()
        self._thread = threading.Thread(target=self._run, name="shadow-progress", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        """Read the logs and redraw."""
        done = [epochs_done(j) for j in self.jobs]
        finished = sum(d == _epochs_of(j) for d, j in zip(done, self.jobs, strict=True))
        with self.bar.get_lock():
            self.bar.set_description(
                f"shadow models ({finished}/{len(self.jobs)} done), epochs", refresh=False
            )
            self.bar.n = sum(done)
            self.bar.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.poll()

    def close(self) -> None:
        """Stop reading, draw the last state, close the bar."""
        self._stop.set()
        self._thread.join()
        self.poll()
        self.bar.close()


def train_shadows(
    jobs: list[ShadowJob],
    *,
    workers: int = 1,
    progress: bool = True,
    on_done: Callable[[str], None] | None = None,
) -> None:
    """Train every job, ``workers`` at a time in separate processes (spawned, one thread each).

    Jobs already done (logits saved) are skipped; an interrupted job resumes from its last
    epoch when its ``resume`` is set. With ``workers == 1`` the jobs run in this process.

    Raises:
        ValueError: ``workers`` outside 1 .. the available cores.
        The first exception a job raised (the others are allowed to finish first).
    """
    cores = available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= cores:
        raise ValueError(f"Invalid workers: {workers!r} (must be in 1..{cores}, the cores here)")
    todo = [j for j in jobs if not (Path(j.folder) / LOGITS).is_file()]
    bar = _EpochBar(jobs, progress)
    try:
        if workers == 1:
            for job in todo:
                train_one(job, threads=None)
                if on_done is not None:
                    on_done(job.folder)
            return
        error: BaseException | None = None
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_exit_with,
            initargs=(os.getpid(),),
        ) as pool:
            pending: set[Future[str]] = {pool.submit(train_one, job, 1) for job in todo}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    exc = fut.exception()
                    if exc is not None:
                        error = error or exc
                        log.error("a shadow model failed: %s", exc)
                        continue
                    if on_done is not None:
                        on_done(fut.result())
        if error is not None:
            raise error
    finally:
        bar.close()
