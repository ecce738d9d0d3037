"""A backdoor experiment as a resumable run folder: poison, train, detect, defend, report.

``BackdoorRun.start(out, BackdoorConfig(...))`` checks every setting (attack against the data,
training configuration, detector and defence names, surrogate checkpoint) before any work and
writes ``config.json``; each stage then writes its result beside it, and with ``resume=True``
a finished stage is skipped and an interrupted training continues from its last epoch::

    out/config.json            the settings
    out/poison/                poison.json + poison.safetensors (the record), defender.json
    out/train/ out/baseline/   fit runs on the poisoned and on the clean data (model.pt, logs)
    out/metrics.json           clean accuracy, ASR, robust accuracy of both models
    out/detect/NAME.json       each detector on the poisoned data (and on the clean data)
    out/defend/NAME/           each defence: result.json (metrics before and after), model.pt
    out/report.json, out/report.html

The defender's clean data is a random ``clean_fraction`` of the training split that the attack
is not allowed to poison (BackdoorBench gives defences 5% of the clean training data); the
model still trains on it.
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
from torch import nn

from .. import atomic, data, models, runfolder
from ..training import ConfigError, TrainConfig, fit
from .activation_clustering import activation_clustering
from .badnets import BadNets
from .base import BackdoorAttack
from .blended import Blended
from .clean_label import CleanLabel
from .detection import Detection
from .fine_pruning import fine_pruning
from .metrics import backdoor_metrics
from .neural_cleanse import neural_cleanse, unlearn
from .record import PoisonedDataset
from .spectral import spectral_signatures
from .triggers import BlendTrigger, PatchTrigger

__all__ = ["ATTACKS", "DEFENCES", "DETECTORS", "BackdoorConfig", "BackdoorRun"]

log = logging.getLogger(__name__)

ATTACKS = ("badnets", "blended", "clean-label")
DETECTORS = ("activation-clustering", "spectral-signatures")
DEFENCES = ("fine-pruning", "neural-cleanse")
# Settings that may change between a run and its resumption.
_RESUME_FREE = ("progress",)
_TRAIN_DEFAULTS: dict[str, Any] = {
    "arch": "small_cnn",
    "method": "standard",
    "epochs": 3,
    "batch_size": 128,
    "optimiser": "adam",
    "lr": 1e-3,
    "schedule": "piecewise",
    "eval_n": 500,
    # The per-epoch robust accuracy is not what a backdoor run is about: one PGD step keeps
    # the held-out check cheap.
    "eval_steps": 1,
    "seed": 0,
}


@dataclass
class BackdoorConfig:
    """Settings of one backdoor experiment (``config.json``; the flags of ``multirobust
    backdoor``).

    Attributes:
        dataset: registered dataset name.
        limit: use the first ``limit`` training images (None: all).
        test_n: evaluate on the first ``test_n`` test images (None: all).
        attack: ``badnets``, ``blended`` or ``clean-label``.
        rate: fraction of the training set poisoned, in (0, 1].
        target: target class.
        mode: ``all-to-one`` or ``all-to-all`` (clean-label: all-to-one only).
        seed: seeds the poisoning, the defender's clean split, detectors and defences.
        patch_size, patch_position, patch_pattern, patch_margin: the patch trigger (BadNets,
            clean-label; pattern default ``white`` for BadNets, ``checkerboard`` for
            clean-label).
        alpha: blend ratio of the Blended trigger.
        surrogate: checkpoint of the clean-label attack's surrogate model.
        threat: threat model of the clean-label perturbations.
        attack_steps: steps of the clean-label perturbations.
        clean_fraction: share of the training split given to the defender as clean data.
        train: :class:`~multirobust.training.TrainConfig` fields of both training runs (the
            defaults: small_cnn, standard training, 3 epochs, Adam 1e-3, piecewise).
        baseline: also train a model on the clean data (the clean-accuracy reference, and the
            ASR of a model without a backdoor).
        detectors: detectors to run (``activation-clustering``, ``spectral-signatures``).
        defences: defences to run (``fine-pruning``, ``neural-cleanse``).
        ac_dims, ac_reduce: activation clustering's dimensions and reduction.
        spectral_eps: spectral signatures' bound on the poisoned share of a class.
        prune_max_drop: fine-pruning's largest clean-accuracy loss from pruning.
        finetune_epochs, finetune_lr: fine-tuning after pruning and for unlearning.
        nc_epochs: Neural Cleanse's optimisation epochs per class.
        progress: show progress bars.
    """

    dataset: str = "mnist"
    limit: int | None = None
    test_n: int | None = None
    attack: str = "badnets"
    rate: float = 0.01
    target: int = 0
    mode: str = "all-to-one"
    seed: int = 0
    patch_size: int = 3
    patch_position: str = "bottom-right"
    patch_pattern: str | None = None
    patch_margin: int = 1
    alpha: float = 0.2
    surrogate: str | None = None
    threat: str = "linf:0.3"
    attack_steps: int = 40
    clean_fraction: float = 0.05
    train: dict[str, Any] = field(default_factory=dict)
    baseline: bool = True
    detectors: list[str] = field(default_factory=lambda: list(DETECTORS))
    defences: list[str] = field(default_factory=lambda: list(DEFENCES))
    ac_dims: int = 10
    ac_reduce: str = "ica"
    spectral_eps: float = 0.1
    prune_max_drop: float = 0.04
    finetune_epochs: int = 5
    finetune_lr: float = 0.01
    nc_epochs: int = 10
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BackdoorConfig:
        """Build from a dict; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"Unknown backdoor setting(s): {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return dataclasses.asdict(self)

    def train_config(self, out: Path) -> TrainConfig:
        """The training configuration of the poisoned (and baseline) model."""
        values = {**_TRAIN_DEFAULTS, **self.train}
        for key in ("dataset", "out", "limit", "progress"):
            if key in self.train:
                raise ConfigError(
                    f"Invalid train setting {key!r}: set it on the backdoor run, not in train"
                )
        values.update(dataset=self.dataset, out=str(out), progress=self.progress)
        return TrainConfig.from_dict(values)

    def build_attack(self, surrogate: nn.Module | None = None) -> BackdoorAttack:
        """The configured attack object (raises ``ValueError`` on a bad setting)."""
        if self.attack not in ATTACKS:
            raise ValueError(f"Unknown attack {self.attack!r} (available: {', '.join(ATTACKS)})")
        if self.attack == "blended":
            return Blended(
                rate=self.rate,
                target=self.target,
                mode=self.mode,
                seed=self.seed,
                blend=BlendTrigger(alpha=self.alpha, seed=self.seed),
            )
        default_pattern = "checkerboard" if self.attack == "clean-label" else "white"
        patch = PatchTrigger(
            size=self.patch_size,
            position=self.patch_position,
            margin=self.patch_margin,
            pattern=self.patch_pattern or default_pattern,
        )
        if self.attack == "badnets":
            return BadNets(
                rate=self.rate, target=self.target, mode=self.mode, seed=self.seed, patch=patch
            )
        if surrogate is None:
            raise ValueError(
                "The clean-label attack needs a surrogate model (surrogate: a checkpoint path, "
                "e.g. zoo/pgd-linf.pt)"
            )
        return CleanLabel(
            rate=self.rate,
            target=self.target,
            mode=self.mode,
            seed=self.seed,
            surrogate=surrogate,
            threat=self.threat,
            steps=self.attack_steps,
            patch=patch,
        )

    def validate(self) -> None:
        """Check the settings that need no data (names, ranges, the training config)."""
        for name, allowed, given in (
            ("detector", DETECTORS, self.detectors),
            ("defence", DEFENCES, self.defences),
        ):
            for item in given:
                if item not in allowed:
                    raise ConfigError(f"Unknown {name} {item!r} (available: {', '.join(allowed)})")
        if not 0.0 < self.clean_fraction < 1.0:
            raise ConfigError(
                f"Invalid clean_fraction: {self.clean_fraction!r} (must be in (0, 1))"
            )
        for name in ("limit", "test_n"):
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
            if value is not None and bad:
                raise ConfigError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
        try:
            data.spec(self.dataset)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.attack == "clean-label":
            if not self.surrogate:
                raise ConfigError(
                    "Invalid surrogate: the clean-label attack needs a surrogate checkpoint "
                    "(e.g. zoo/pgd-linf.pt)"
                )
            if not Path(self.surrogate).is_file():
                raise ConfigError(f"Invalid surrogate: checkpoint {self.surrogate!r} not found")
        self.train_config(Path("unused")).validate(check_data=False)


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


class BackdoorRun:
    """One backdoor experiment in a folder; see the module docstring for the layout."""

    def __init__(self, out: str | Path, config: BackdoorConfig) -> None:
        self.out = Path(out)
        self.config = config
        self._clean: data.ImageDataset | None = None
        self._test: data.ImageDataset | None = None
        self._poisoned: PoisonedDataset | None = None
        self._surrogate: nn.Module | None = None

    # ------------------------------------------------------------------ setup

    @classmethod
    def start(
        cls, out: str | Path, config: BackdoorConfig | dict[str, Any], *, resume: bool = False
    ) -> BackdoorRun:
        """Check everything, then create (or, with ``resume``, reopen) the run folder.

        Raises:
            ConfigError: a bad setting, missing data, or a folder holding another run.
        """
        cfg = BackdoorConfig.from_dict(config) if isinstance(config, dict) else config
        cfg.validate()
        out = Path(out)
        runfolder.claim(
            out,
            cfg.to_dict(),
            kind="backdoor run",
            resume=resume,
            free=_RESUME_FREE,
            error=ConfigError,
        )
        path = out / "config.json"
        run = cls(out, cfg)
        run._check_data()
        atomic.check_writable_dir(out)
        atomic.write_json_atomic(path, cfg.to_dict())
        return run

    @classmethod
    def open(cls, out: str | Path) -> BackdoorRun:
        """Reopen an existing run folder (for the stage commands).

        Raises:
            ConfigError: when the folder holds no run.
        """
        path = Path(out) / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"No backdoor run in {out} (start one with `multirobust backdoor poison` or "
                "`multirobust backdoor run`)"
            )
        return cls(out, BackdoorConfig.from_dict(_read_json(path)))

    def _check_data(self) -> None:
        """Load the data and build the attack against it: every bad setting fails here."""
        try:
            _ = self.clean, self.test
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"Dataset {self.config.dataset!r} unavailable: {err}") from None
        try:
            attack = self.attack
            attack.check(self.clean, exclude=self.defender_indices)
            attack.check_target(self.test)
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None

    @property
    def clean(self) -> data.ImageDataset:
        """The clean training set."""
        if self._clean is None:
            self._clean = data.load(self.config.dataset, "train", limit=self.config.limit)
        return self._clean

    @property
    def test(self) -> data.ImageDataset:
        """The test set the metrics are measured on."""
        if self._test is None:
            self._test = data.load(self.config.dataset, "test", limit=self.config.test_n)
        return self._test

    @property
    def surrogate(self) -> nn.Module | None:
        """The clean-label attack's surrogate model (None for the other attacks)."""
        if self._surrogate is None and self.config.surrogate:
            try:
                self._surrogate = models.load(self.config.surrogate)
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError(f"Invalid surrogate: {err}") from None
        return self._surrogate

    @property
    def attack(self) -> BackdoorAttack:
        """The configured attack."""
        return self.config.build_attack(self.surrogate)

    @property
    def defender_indices(self) -> torch.Tensor:
        """Training indices reserved as the defender's clean data (never poisoned)."""
        n = len(self.clean)
        k = max(1, int(round(self.config.clean_fraction * n)))
        gen = torch.Generator().manual_seed(self.config.seed + 1)
        return torch.randperm(n, generator=gen)[:k].sort().values

    @property
    def defender_data(self) -> data.ImageDataset:
        """The defender's clean examples."""
        idx = self.defender_indices
        c = self.clean
        return data.ImageDataset(
            name=c.name,
            split=c.split,
            images=c.images[idx],
            labels=c.labels[idx],
            num_classes=c.num_classes,
            class_names=c.class_names,
        )

    # ------------------------------------------------------------------ stages

    @property
    def poison_dir(self) -> Path:
        return self.out / "poison"

    def poison(self) -> PoisonedDataset:
        """Stage 1: poison the training set (or load the saved poisoning)."""
        if self._poisoned is not None:
            return self._poisoned
        if (self.poison_dir / "poison.json").is_file():
            self._poisoned = PoisonedDataset.load(self.poison_dir, self.clean)
            return self._poisoned
        started = time.perf_counter()
        poisoned = self.attack.poison(
            self.clean, exclude=self.defender_indices, progress=self.config.progress
        )
        poisoned.save(self.poison_dir)
        atomic.write_json_atomic(
            self.poison_dir / "defender.json",
            {
                "indices": self.defender_indices.tolist(),
                "seconds": time.perf_counter() - started,
            },
        )
        self._poisoned = poisoned
        return poisoned

    def _model_path(self, which: str) -> Path:
        return self.out / which / "model.pt"

    def train(self, *, resume: bool = False) -> None:
        """Stage 2: train on the poisoned data (and the clean baseline), resumable."""
        poisoned = self.poison()
        runs = [("train", poisoned.dataset)]
        if self.config.baseline:
            runs.append(("baseline", self.clean))
        for which, train_set in runs:
            if self._model_path(which).is_file():  # fit writes model.pt when it has finished
                continue
            cfg = self.config.train_config(self.out / which)
            log.info("training %s model in %s", which, self.out / which)
            fit(cfg, train=train_set, resume=resume, held_out=self._held_out(cfg))

    def _held_out(self, cfg: TrainConfig) -> data.ImageDataset:
        t = self.test
        n = min(cfg.eval_n, len(t))
        return data.ImageDataset(
            name=t.name,
            split=t.split,
            images=t.images[:n],
            labels=t.labels[:n],
            num_classes=t.num_classes,
            class_names=t.class_names,
        )

    def model(self, which: str = "train") -> nn.Module:
        """A trained model of this run (``train``, ``baseline`` or ``defend/NAME``)."""
        path = self._model_path(which)
        if not path.is_file():
            raise ConfigError(f"No trained model at {path}: run the train stage first")
        return models.load(path)

    def measure(self) -> dict[str, Any]:
        """Stage 3: clean accuracy, ASR and robust accuracy of the trained models."""
        attack = self.attack
        out: dict[str, Any] = {}
        for key, which in (("poisoned", "train"), ("baseline", "baseline")):
            if which == "train" or self.config.baseline:
                out[key] = backdoor_metrics(self.model(which), self.test, attack).to_dict()
        atomic.write_json_atomic(self.out / "metrics.json", out)
        return out

    def detect(self, *, resume: bool = False) -> dict[str, Any]:
        """Stage 4: every detector on the poisoned data (and on the clean data with the
        baseline model, where detectors should flag next to nothing)."""
        poisoned = self.poison()
        results: dict[str, Any] = {}
        for name in self.config.detectors:
            path = self.out / "detect" / f"{name}.json"
            if resume and path.is_file():
                results[name] = _read_json(path)
                continue
            started = time.perf_counter()
            found = self._run_detector(name, self.model("train"), poisoned.dataset)
            entry: dict[str, Any] = {
                "poisoned": found.to_dict(poisoned.record),
                "seconds": time.perf_counter() - started,
            }
            if self.config.baseline:
                entry["clean"] = self._run_detector(
                    name, self.model("baseline"), self.clean
                ).to_dict(None)
            atomic.write_json_atomic(path, entry)
            results[name] = entry
        return results

    def _run_detector(self, name: str, model: nn.Module, dataset: data.ImageDataset) -> Detection:
        cfg = self.config
        if name == "activation-clustering":
            return activation_clustering(
                model,
                dataset,
                dims=cfg.ac_dims,
                reduce=cfg.ac_reduce,
                seed=cfg.seed,
                progress=cfg.progress,
            )
        return spectral_signatures(model, dataset, eps=cfg.spectral_eps)

    def defend(self, *, resume: bool = False) -> dict[str, Any]:
        """Stage 5: every defence on the poisoned model; metrics before and after."""
        cfg = self.config
        attack = self.attack
        model = self.model("train")
        before = backdoor_metrics(model, self.test, attack).to_dict()
        clean = self.defender_data
        results: dict[str, Any] = {}
        for name in cfg.defences:
            folder = self.out / "defend" / name
            path = folder / "result.json"
            if resume and path.is_file():
                results[name] = _read_json(path)
                continue
            started = time.perf_counter()
            details: dict[str, Any]
            if name == "fine-pruning":
                fp = fine_pruning(
                    model,
                    clean,
                    max_drop=cfg.prune_max_drop,
                    epochs=cfg.finetune_epochs,
                    lr=cfg.finetune_lr,
                    seed=cfg.seed,
                    progress=cfg.progress,
                )
                defended, details = fp.model, fp.to_dict()
            else:
                nc = neural_cleanse(
                    model, clean, epochs=cfg.nc_epochs, seed=cfg.seed, progress=cfg.progress
                )
                defended = unlearn(
                    model,
                    clean,
                    nc,
                    epochs=cfg.finetune_epochs,
                    lr=cfg.finetune_lr,
                    seed=cfg.seed,
                    progress=cfg.progress,
                )
                details = nc.to_dict()
                details["target_found"] = cfg.mode == "all-to-one" and cfg.target in nc.flagged
                details["masks"] = [t.mask.tolist() for t in nc.triggers]
            after = backdoor_metrics(defended, self.test, attack).to_dict()
            models.save(
                defended,
                folder / "model.pt",
                dataset=cfg.dataset,
                metadata={"defence": name, "source": str(self._model_path("train"))},
            )
            entry = {
                "defence": name,
                "before": before,
                "after": after,
                "details": details,
                "seconds": time.perf_counter() - started,
            }
            atomic.write_json_atomic(path, entry)
            results[name] = entry
        return results

    def report(self) -> dict[str, Any]:
        """Stage 6: gather the stages' results into ``report.json`` and ``report.html``."""
        from .report import render_html

        rep = self.summary()
        atomic.write_json_atomic(self.out / "report.json", rep)
        atomic.write_atomic(self.out / "report.html", render_html(rep, self))
        return rep

    def summary(self) -> dict[str, Any]:
        """Everything measured so far, JSON-ready, with the paths of the evidence."""
        poisoned = self.poison()
        metrics_path = self.out / "metrics.json"
        metrics = _read_json(metrics_path) if metrics_path.is_file() else self.measure()
        detectors = {}
        for name in self.config.detectors:
            path = self.out / "detect" / f"{name}.json"
            if path.is_file():
                entry = _read_json(path)
                detectors[name] = {
                    "poisoned": entry["poisoned"]["score"],
                    "clean": entry.get("clean", {}).get("score"),
                    "suspicious_classes": entry["poisoned"]["suspicious_classes"],
                    "evidence": str(path),
                }
        defences = {}
        for name in self.config.defences:
            path = self.out / "defend" / name / "result.json"
            if path.is_file():
                entry = _read_json(path)
                defences[name] = {
                    "before": entry["before"],
                    "after": entry["after"],
                    "flagged": entry["details"].get("flagged"),
                    "pruned": len(entry["details"].get("pruned", [])) or None,
                    "evidence": str(path),
                    "model": str(path.parent / "model.pt"),
                }
        return {
            "kind": "backdoor",
            "dataset": self.config.dataset,
            "attack": poisoned.record.attack,
            "poisoned": len(poisoned.record.indices),
            "training_size": poisoned.record.size,
            "metrics": metrics,
            "detectors": detectors,
            "defences": defences,
            "config": self.config.to_dict(),
            "evidence": {
                "folder": str(self.out),
                "html": str(self.out / "report.html"),
                "record": str(self.poison_dir / "poison.json"),
                "model": str(self._model_path("train")),
            },
        }

    def run_all(self, *, resume: bool = False) -> dict[str, Any]:
        """Every stage in order; returns the report."""
        self.poison()
        self.train(resume=resume)
        self.measure()
        self.detect(resume=resume)
        self.defend(resume=resume)
        return self.report()
