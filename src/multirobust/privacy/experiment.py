"""A membership-inference experiment as a resumable run folder: shadows, attack, report.

``MembershipRun.start(out, MembershipConfig(...))`` checks the settings and the data, draws the
membership plan and writes ``config.json`` and ``plan.safetensors``; then::

    out/shadow-NNN/    one fit run per shadow model (resumable) + logits.safetensors
    out/target/        the target's logits on the pool (a checkpoint's, or a model trained
                       like the shadows on its own random half when target = "shadow")
    out/attack.json    every attack: ROC, AUC, TPR at the requested FPRs (shadow-calibrated)
    out/report.json, out/report.html (the ROC on log-log axes), with the cost of the shadows

The target's membership comes from ``members``: ``first:N`` (the pool's first N examples, e.g.
a zoo model trained with ``--limit N``), ``range:A:B``, ``shadow`` (the extra model's own half)
or ``none`` (a model that never saw the pool: half the pool is *labelled* member at random,
and an attack that works must then score TPR ≈ FPR).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .. import atomic, data, models, runfolder
from ..training import ConfigError, TrainConfig
from .inference import METHODS, MembershipResult, membership_inference
from .scores import logits_of
from .shadows import (
    LOGITS,
    ShadowJob,
    available_cores,
    load_logits,
    membership_plan,
    shadow_dir,
    train_shadows,
)

__all__ = ["MembershipConfig", "MembershipRun", "parse_members"]

log = logging.getLogger(__name__)

_RESUME_FREE = ("progress", "workers")
_TRAIN_DEFAULTS: dict[str, Any] = {
    # The zoo's recipe (zoo/train.sh) with standard training.
    "arch": "small_cnn",
    "method": "standard",
    "threats": ["linf:0.3"],
    "epochs": 4,
    "batch_size": 128,
    "optimiser": "adam",
    "lr": 1e-3,
    "schedule": "piecewise",
    "steps": 10,
    # No "eps_warmup": an adversarial --method gets the training default (a warm-up, as the
    # zoo's robust models had); without one, PGD shadows stay at chance.
    "seed": 0,
    # The held-out check of every epoch does not change the weights; keep it cheap.
    "eval_n": 200,
    "eval_steps": 1,
}


def parse_members(spec: str, pool_size: int, seed: int) -> torch.Tensor | None:
    """The target's membership over the pool from its text form.

    ``first:N``, ``range:A:B`` (pool positions A..B-1), ``none`` (a random half, seeded: labels
    for a model that saw none of them) or ``shadow`` (returns None: the extra model's plan row).

    Raises:
        ConfigError: for a malformed spec or a range outside the pool.
    """
    spec = spec.strip()
    if spec == "shadow":
        return None
    if spec == "none":
        gen = torch.Generator().manual_seed(seed + 7)
        out = torch.zeros(pool_size, dtype=torch.bool)
        out[torch.randperm(pool_size, generator=gen)[: pool_size // 2]] = True
        return out
    kind, _, rest = spec.partition(":")
    try:
        if kind == "first":
            a, b = 0, int(rest)
        elif kind == "range":
            lo, _, hi = rest.partition(":")
            a, b = int(lo), int(hi)
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"Invalid members: {spec!r} (allowed: first:N, range:A:B, shadow, none)"
        ) from None
    if not 0 <= a < b <= pool_size or b - a >= pool_size:
        raise ConfigError(
            f"Invalid members: {spec!r} (need 0 <= A < B <= pool size {pool_size}, leaving "
            "some non-members)"
        )
    out = torch.zeros(pool_size, dtype=torch.bool)
    out[a:b] = True
    return out


@dataclass
class MembershipConfig:
    """Settings of one membership-inference experiment (``config.json``; the flags of
    ``multirobust membership``).

    Attributes:
        dataset: registered dataset name.
        pool: the first ``pool`` examples of the training split are the examples attacked
            (None: all of it).
        shadows: number of shadow models (even, >= 4: LiRA's calibration leaves one out).
        seed: seeds the membership plan (shadow ``i`` trains with seed ``1000 + i``).
        train: :class:`~multirobust.training.TrainConfig` fields of the shadows (and of a
            "shadow" target); default: the zoo's recipe with standard training.
        target: ``shadow`` (train one more model like the shadows, on its own random half) or
            the path of a checkpoint.
        members: the target's membership (see :func:`parse_members`); ``shadow`` for a
            shadow target.
        methods: attacks (``loss``, ``lira-offline``, ``lira-online``).
        fprs: false-positive rates to report TPRs at.
        fixed_variance: LiRA with global variances.
        workers: shadow models trained at once, one process each (None: min(2, cores)).
        progress: show progress bars.
    """

    dataset: str = "mnist"
    pool: int | None = None
    shadows: int = 16
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    target: str = "shadow"
    members: str = "shadow"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    fprs: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    fixed_variance: bool = True
    workers: int | None = None
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MembershipConfig:
        """Build from a dict; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"Unknown membership setting(s): {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return dataclasses.asdict(self)

    def train_config(self, out: Path, seed: int) -> TrainConfig:
        """The training configuration of one model of the experiment."""
        for key in ("dataset", "out", "limit", "progress", "seed"):
            if key in self.train:
                raise ConfigError(
                    f"Invalid train setting {key!r}: it is set by the membership experiment"
                )
        values = {**_TRAIN_DEFAULTS, **self.train, "dataset": self.dataset}
        values.update(out=str(out), seed=seed, progress=False)
        return TrainConfig.from_dict(values)

    @property
    def resolved_workers(self) -> int:
        """``workers``, or min(2, available cores)."""
        return self.workers if self.workers is not None else min(2, available_cores())

    def validate(self) -> None:
        """Check the settings that need no data."""
        if (
            isinstance(self.shadows, bool)
            or not isinstance(self.shadows, int)
            or (self.shadows < 4 or self.shadows % 2)
        ):
            raise ConfigError(
                f"Invalid shadows: {self.shadows!r} (must be even and >= 4: every example is "
                "IN half of them, and thresholds are calibrated leaving one out)"
            )
        if self.pool is not None and (
            isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 4
        ):
            raise ConfigError(f"Invalid pool: {self.pool!r} (must be an integer >= 4)")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(
                    f"Unknown membership attack {m!r} (available: {', '.join(METHODS)})"
                )
        if not self.methods:
            raise ConfigError("Invalid methods: [] (give at least one)")
        for a in self.fprs:
            if not 0.0 < a < 1.0:
                raise ConfigError(f"Invalid fpr: {a!r} (must be in (0, 1))")
        cores = available_cores()
        if self.workers is not None and (
            isinstance(self.workers, bool)
            or not isinstance(self.workers, int)
            or not 1 <= self.workers <= cores
        ):
            raise ConfigError(
                f"Invalid workers: {self.workers!r} (must be in 1..{cores}, the cores here)"
            )
        if self.target == "shadow":
            if self.members != "shadow":
                raise ConfigError(
                    f"Invalid members: {self.members!r} for a shadow target (use 'shadow')"
                )
        else:
            if self.members == "shadow":
                raise ConfigError(
                    "Invalid members: 'shadow' needs target 'shadow'; for a checkpoint say "
                    "which pool examples it trained on (first:N, range:A:B or none)"
                )
            if not Path(self.target).is_file():
                raise ConfigError(f"Invalid target: checkpoint {self.target!r} not found")
        try:
            data.spec(self.dataset)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.train_config(Path("unused"), 0).validate(check_data=False)


class MembershipRun:
    """One membership-inference experiment in a folder; see the module docstring."""

    def __init__(self, out: str | Path, config: MembershipConfig) -> None:
        self.out = Path(out)
        self.config = config
        self._pool: data.ImageDataset | None = None

    @classmethod
    def start(
        cls, out: str | Path, config: MembershipConfig | dict[str, Any], *, resume: bool = False
    ) -> MembershipRun:
        """Check everything, then create (or, with ``resume``, reopen) the run folder.

        Raises:
            ConfigError: a bad setting, missing data, or a folder holding another run.
        """
        cfg = MembershipConfig.from_dict(config) if isinstance(config, dict) else config
        cfg.validate()
        out = Path(out)
        runfolder.claim(
            out,
            cfg.to_dict(),
            kind="membership run",
            resume=resume,
            free=_RESUME_FREE,
            error=ConfigError,
        )
        path = out / "config.json"
        run = cls(out, cfg)
        try:
            pool = run.pool
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"Dataset {cfg.dataset!r} unavailable: {err}") from None
        if cfg.pool is not None and len(pool) < cfg.pool:
            raise ConfigError(
                f"Invalid pool: {cfg.pool} (the {cfg.dataset} training split has {len(pool)})"
            )
        parse_members(cfg.members, len(pool), cfg.seed)  # a bad members spec fails here
        if cfg.target != "shadow":
            run._target_model()  # an unreadable checkpoint fails here
        atomic.check_writable_dir(out)
        atomic.write_json_atomic(path, cfg.to_dict())
        if not (out / "plan.safetensors").is_file():
            keep = membership_plan(len(pool), cfg.shadows, cfg.seed)
            extra = torch.zeros(1, len(pool), dtype=torch.bool)
            if cfg.target == "shadow":  # the target's own half, drawn independently
                gen = torch.Generator().manual_seed(cfg.seed + 12345)
                extra[0, torch.randperm(len(pool), generator=gen)[: len(pool) // 2]] = True
            atomic.write_bytes_atomic(
                out / "plan.safetensors",
                safetensors_bytes(
                    {"keep": keep.to(torch.uint8), "target": extra[0].to(torch.uint8)}
                ),
            )
        return run

    @classmethod
    def open(cls, out: str | Path) -> MembershipRun:
        """Reopen an existing run folder.

        Raises:
            ConfigError: when the folder holds no run.
        """
        path = Path(out) / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"No membership run in {out} (start one with `multirobust membership shadows`)"
            )
        return cls(out, MembershipConfig.from_dict(json.loads(path.read_text())))

    # ------------------------------------------------------------------ data

    @property
    def pool(self) -> data.ImageDataset:
        """The attacked examples: the first ``pool`` of the training split."""
        if self._pool is None:
            self._pool = data.load(self.config.dataset, "train", limit=self.config.pool)
        return self._pool

    @property
    def keep(self) -> torch.Tensor:
        """``(shadows, pool)`` bool: which shadow trained on which example."""
        return load_file(str(self.out / "plan.safetensors"))["keep"].bool()

    def target_members(self) -> torch.Tensor:
        """``(pool,)`` bool: the target's members."""
        parsed = parse_members(self.config.members, len(self.pool), self.config.seed)
        if parsed is not None:
            return parsed
        return load_file(str(self.out / "plan.safetensors"))["target"].bool()

    def _jobs(self) -> list[ShadowJob]:
        cfg = self.config
        keep = self.keep
        pool_idx = list(range(len(self.pool)))
        jobs = []
        for i in range(cfg.shadows):
            folder = shadow_dir(self.out, i)
            tc = cfg.train_config(folder, 1000 + i)
            jobs.append(self._job(folder, keep[i], pool_idx, tc))
        if cfg.target == "shadow":
            folder = self.out / "target"
            tc = cfg.train_config(folder, int(_TRAIN_DEFAULTS["seed"]))
            jobs.append(self._job(folder, self.target_members(), pool_idx, tc))
        return jobs

    def _job(
        self, folder: Path, row: torch.Tensor, pool_idx: list[int], tc: TrainConfig
    ) -> ShadowJob:
        values = tc.to_dict()
        for key in ("out", "dataset", "progress", "data_root", "download", "limit"):
            values.pop(key, None)
        return ShadowJob(
            folder=str(folder),
            dataset=self.config.dataset,
            split="train",
            pool=pool_idx,
            train_positions=row.nonzero().flatten().tolist(),
            train=values,
            held_out_n=tc.eval_n,
            resume=True,
        )

    # ------------------------------------------------------------------ stages

    def train_shadows(self) -> dict[str, Any]:
        """Stage 1: train every shadow model (and a shadow target), ``workers`` at a time.

        Every model resumes from its last finished epoch; finished ones are skipped.
        """
        started = time.perf_counter()
        jobs = self._jobs()
        train_shadows(jobs, workers=self.config.resolved_workers, progress=self.config.progress)
        timing_path = self.out / "timing.json"
        timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"stages": []}
        timing["stages"].append(
            {
                "stage": "shadows",
                "wall_seconds": time.perf_counter() - started,
                "workers": self.config.resolved_workers,
                "models": len(jobs),
            }
        )
        atomic.write_json_atomic(timing_path, timing)
        return timing

    def _target_model(self) -> Any:
        try:
            return models.load(self.config.target)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"Invalid target: {err}") from None

    def target_logits(self) -> torch.Tensor:
        """The target's logits on the pool (computed once, then read from ``target/``)."""
        folder = self.out / "target"
        if (folder / LOGITS).is_file():
            return load_logits(folder)
        if self.config.target == "shadow":
            raise ConfigError("The target model has not been trained: run the shadows stage")
        logits = logits_of(self._target_model(), self.pool.images)
        atomic.write_bytes_atomic(
            folder / LOGITS, safetensors_bytes({"logits": logits.contiguous()})
        )
        return logits

    def shadow_logits(self) -> torch.Tensor:
        """``(shadows, pool, classes)``: every shadow's logits.

        Raises:
            ConfigError: when some shadow has not finished.
        """
        missing = [
            i
            for i in range(self.config.shadows)
            if not (shadow_dir(self.out, i) / LOGITS).is_file()
        ]
        if missing:
            raise ConfigError(
                f"{len(missing)} of {self.config.shadows} shadow models have not finished "
                f"(e.g. {shadow_dir(self.out, missing[0])}): run the shadows stage (--resume)"
            )
        return torch.stack(
            [load_logits(shadow_dir(self.out, i)) for i in range(self.config.shadows)]
        )

    def attack(self) -> MembershipResult:
        """Stage 2: run the attacks against the target; writes ``attack.json``."""
        cfg = self.config
        result = membership_inference(
            self.target_logits(),
            self.pool.labels,
            self.target_members(),
            self.shadow_logits(),
            self.keep,
            methods=cfg.methods,
            fprs=cfg.fprs,
            fixed_variance=cfg.fixed_variance,
        )
        atomic.write_json_atomic(self.out / "attack.json", result.to_dict())
        return result

    def cost(self) -> dict[str, Any]:
        """Training seconds of every model (from their logs) and the stages' wall time."""
        seconds = []
        for i in range(self.config.shadows):
            path = shadow_dir(self.out, i) / "log.jsonl"
            if path.is_file():
                rows = [json.loads(line) for line in path.read_text().splitlines() if line]
                seconds.append(sum(float(r.get("train_seconds", 0.0)) for r in rows))
        timing_path = self.out / "timing.json"
        timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"stages": []}
        return {
            "shadow_train_seconds": seconds,
            "shadow_train_seconds_total": sum(seconds),
            "stages": timing["stages"],
        }

    def report(self) -> dict[str, Any]:
        """Stage 3: ``report.json`` and ``report.html`` (ROC on log-log axes, TPR table, cost)."""
        from .report import render_html

        path = self.out / "attack.json"
        attack = json.loads(path.read_text()) if path.is_file() else self.attack().to_dict()
        members = self.target_members()
        right = (self.target_logits().argmax(1) == self.pool.labels).float()
        rep = {
            "kind": "membership",
            "dataset": self.config.dataset,
            "target": self.config.target,
            "members": self.config.members,
            "pool": len(self.pool),
            "target_members": int(members.sum()),
            # What membership inference feeds on: the target's accuracy gap on the pool.
            "target_accuracy": {
                "members": float(right[members].mean()),
                "non_members": float(right[~members].mean()),
            },
            "result": attack,
            "cost": self.cost(),
            "config": self.config.to_dict(),
            "evidence": {
                "folder": str(self.out),
                "html": str(self.out / "report.html"),
                "attack": str(path),
            },
        }
        atomic.write_json_atomic(self.out / "report.json", rep)
        atomic.write_atomic(self.out / "report.html", render_html(rep))
        return rep

    def run_all(self) -> dict[str, Any]:
        """Every stage in order; returns the report."""
        self.train_shadows()
        self.attack()
        return self.report()
