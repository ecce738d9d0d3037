"""``TrainConfig``: everything a training run needs, validated before any training starts."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import data, models
from ..threats import parse
from .methods import get_method
from .objectives import as_lp_ball

__all__ = ["ConfigError", "TrainConfig", "default_eps_warmup", "load_config"]

OPTIMISERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle", "piecewise")


#: The default ε warm-up, in epochs, of the methods that accept one (the zoo's recipe) ...
DEFAULT_EPS_WARMUP = 1.5
#: ... and at most this fraction of the run, so that a short run ends at full ε with time
#: left to train there.
MAX_EPS_WARMUP_FRACTION = 0.5


class ConfigError(ValueError):
    """A training configuration is invalid; the message says what is wrong and what is allowed."""


def default_eps_warmup(method: str, epochs: int) -> float:
    """The ε warm-up (in epochs) a run of ``method`` gets when it sets none.

    ``min(1.5, epochs / 2)`` for the methods whose registry entry accepts a warm-up (the
    adversarial ones), 0 for the others (``standard``, ``free``, ``distillation``) and for an
    unknown method or invalid ``epochs`` (``validate`` reports those). Measured on MNIST with
    ``small_cnn`` at ε∞ = 0.3: PGD training from scratch without a warm-up stays at chance
    (training loss log 10, clean accuracy 14% after 3 epochs of 30,000 images); the zoo's
    models were trained with 1.5 epochs of warm-up.
    """
    try:
        accepts = get_method(method).eps_warmup
    except ValueError:
        return 0.0
    if not accepts or isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        return 0.0
    return min(DEFAULT_EPS_WARMUP, MAX_EPS_WARMUP_FRACTION * epochs)


@dataclass
class TrainConfig:
    """Settings of one training run (the fields of ``run.toml`` and of ``multirobust train``).

    Attributes:
        dataset: registered dataset name (``multirobust list``).
        arch: registered architecture name.
        activation: activation of the hidden layers (relu, softplus, silu/swish, gelu).
        method: one of :func:`multirobust.training.methods`.
        threats: threat models as text, e.g. ``["linf:0.3"]``; several for max/avg/random/msd.
            The held-out robust accuracy is measured under each of them and their union.
        epochs: passes over the training data.
        batch_size: training examples per batch.
        lr: peak learning rate; default 0.1 for SGD, 1e-3 for Adam.
        optimiser: ``"sgd"`` (momentum 0.9, Nesterov off) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: L2 penalty of the optimiser.
        schedule: ``"piecewise"`` (×0.1 at 50% and again at 75% of the steps), ``"onecycle"``
            (linear up to ``lr`` at 40%, then down to 0; Wong et al. 2020) or ``"constant"``.
        seed: seeds model initialisation, shuffling and the attacks' random starts.
        out: output folder (checkpoint.pt, best.pt, model.pt, log.jsonl, log.csv).
        limit: use only the first ``limit`` training images.
        eval_n: held-out test images for the per-epoch clean and robust accuracy.
        eval_steps: PGD steps of the per-epoch robust accuracy.
        steps: attack steps inside training (PGD, TRADES, multi-perturbation methods).
        step_size: attack step size inside training (single-threat methods); default: the
            method's own rule.
        beta: TRADES trade-off β.
        replays: Free-AT minibatch replays m.
        temperature: softmax temperature T of defensive distillation (``distillation``;
            Papernot et al. 2016 use 100 on MNIST).
        static_models: checkpoint paths of the fixed models of ensemble training.
        noise: smoothing noise of ``noise`` training, e.g. ``"gaussian:0.25"`` (Cohen et al.
            2019), ``"uniform:1"`` or ``"laplace:0.5"`` (ℓ1, Yang et al. 2020).
        kappa: final weight κ of the clean loss in ``ibp`` training (Gowal et al. 2018: ½);
            κ falls from 1 over the ``eps_warmup`` ramp.
        early_stop: stop at catastrophic overfitting and keep the best weights; default on
            for ``fast`` only.
        overfit_drop: robust-accuracy fall (fraction) that counts as catastrophic overfitting.
        overfit_gap: excess of the held-out FGSM accuracy over the PGD accuracy that counts as
            catastrophic overfitting (measured for ``fast`` only).
        eps_warmup: epochs over which every threat's ε (and an explicit step size) ramps
            linearly from ε/steps-per-warm-up up to ε, batch by batch (0: full ε from the
            start). Default (None): :func:`default_eps_warmup`, i.e. ``min(1.5, epochs / 2)``
            for the methods that accept a warm-up, 0 for the others. Adversarial runs from
            scratch on MNIST at ε∞ = 0.3 stay at chance without it.
        init: checkpoint whose weights start the run (fine-tuning); its architecture must
            be ``arch``. None: a fresh initialisation from ``seed``.
        data_root: data folder (default ``$MULTIROBUST_DATA``).
        download: download missing dataset files.
        progress: show progress bars.
    """

    dataset: str = "mnist"
    arch: str = "small_cnn"
    activation: str = "relu"
    method: str = "pgd"
    threats: list[str] = field(default_factory=lambda: ["linf:0.3"])
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    optimiser: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "piecewise"
    seed: int = 0
    out: str = "runs/train"
    limit: int | None = None
    eval_n: int = 500
    eval_steps: int = 20
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    replays: int = 4
    temperature: float = 100.0
    static_models: list[str] = field(default_factory=list)
    noise: str = "gaussian:0.25"
    kappa: float = 0.5
    early_stop: bool | None = None
    overfit_drop: float = 0.2
    overfit_gap: float = 0.5
    eps_warmup: float | None = None
    init: str | None = None
    data_root: str | None = None
    download: bool = False
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (e.g. a parsed TOML file); unknown keys are errors.

        ``optimizer`` is accepted as a spelling of ``optimiser`` and a single string for
        ``threats``/``static_models`` as a one-element list.

        Raises:
            ConfigError: for unknown keys.
        """
        values = dict(values)
        if "optimizer" in values:
            values["optimiser"] = values.pop("optimizer")
        if "threat" in values:
            values["threats"] = values.pop("threat")
        for key in ("threats", "static_models"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"Unknown config key(s): {', '.join(unknown)} (allowed: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-like dict, the ε warm-up resolved (what the run used), so
        that a checkpoint records it and a resumed run is compared with it."""
        values = dataclasses.asdict(self)
        values["eps_warmup"] = self.resolved_eps_warmup
        return values

    @property
    def resolved_lr(self) -> float:
        """``lr``, or the optimiser's default when it is not set."""
        if self.lr is not None:
            return float(self.lr)
        return 0.1 if self.optimiser == "sgd" else 1e-3

    @property
    def resolved_eps_warmup(self) -> float:
        """``eps_warmup``, or the method's default (:func:`default_eps_warmup`) when unset."""
        if self.eps_warmup is not None:
            return float(self.eps_warmup)
        return default_eps_warmup(self.method, self.epochs)

    @property
    def single_step(self) -> bool:
        """The method trains on one-step attacks (``fast``), which can overfit catastrophically:
        its held-out FGSM accuracy is measured and early stopping is on by default."""
        try:
            return get_method(self.method).single_step
        except ValueError:  # an unknown method: validate() says so
            return False

    @property
    def resolved_early_stop(self) -> bool:
        """``early_stop``, or :attr:`single_step` when it is not set."""
        return self.single_step if self.early_stop is None else bool(self.early_stop)

    def validate(self, *, check_data: bool = True) -> None:
        """Check every setting (and that the dataset files exist) without training anything.

        Args:
            check_data: also check that the dataset's files are present (reads them).

        Raises:
            ConfigError: naming the first invalid setting and what is allowed.
        """

        def integer(name: str, minimum: int, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"Invalid {name}: {value!r} (must be an integer >= {minimum})")

        def number(name: str, low: float, strict: bool, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
            if not ok:
                bound = f"> {low:g}" if strict else f">= {low:g}"
                raise ConfigError(f"Invalid {name}: {value!r} (must be a number {bound})")

        try:
            method = get_method(self.method)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        try:
            data.spec(self.dataset)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.arch not in models.names():
            raise ConfigError(
                f"Unknown arch {self.arch!r} (available: {', '.join(models.names())})"
            )
        if not isinstance(self.threats, list) or not all(isinstance(t, str) for t in self.threats):
            raise ConfigError(f"Invalid threats: {self.threats!r} (must be a list of strings)")
        if not self.threats:
            raise ConfigError("Invalid threats: [] (give at least one, e.g. linf:0.3)")
        for text in self.threats:
            try:
                as_lp_ball(parse(text))
            except (ValueError, TypeError) as err:
                raise ConfigError(f"Invalid threat {text!r}: {err}") from None
        lo, hi = method.threat_count
        count = len(self.threats)
        if count < lo or (hi is not None and count > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise ConfigError(
                f"Invalid threats for method {self.method!r}: {count} given (needs {want})"
            )
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("eval_n", 1)):
            integer(name, minimum)
        for name in ("eval_steps", "steps", "replays"):
            integer(name, 1)
        integer("limit", 1, allow_none=True)
        number("lr", 0.0, strict=True, allow_none=True)
        number("step_size", 0.0, strict=True, allow_none=True)
        number("momentum", 0.0, strict=False)
        number("weight_decay", 0.0, strict=False)
        number("beta", 0.0, strict=False)
        number("temperature", 0.0, strict=True)
        number("eps_warmup", 0.0, strict=False, allow_none=True)
        try:  # certification training (training/noise.py, training/ibp.py)
            from ..certify.noise import parse_noise

            parse_noise(self.noise)
        except ValueError as err:
            raise ConfigError(f"Invalid noise: {err}") from None
        if not (isinstance(self.kappa, int | float) and 0 <= self.kappa <= 1):
            raise ConfigError(f"Invalid kappa: {self.kappa!r} (must be a number in [0, 1])")
        if self.eps_warmup is not None and self.eps_warmup > self.epochs:
            raise ConfigError(
                f"Invalid eps_warmup: {self.eps_warmup!r} (must be at most epochs={self.epochs})"
            )
        if self.eps_warmup is not None and self.eps_warmup > 0 and not method.eps_warmup:
            raise ConfigError(
                f"Invalid eps_warmup: {self.eps_warmup!r} (method {self.method!r} does not "
                "support an ε warm-up; use 0)"
            )
        for name in ("overfit_drop", "overfit_gap"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(
                    f"Invalid {name}: {getattr(self, name)!r} (must be a fraction in (0, 1])"
                )
        if self.optimiser not in OPTIMISERS:
            raise ConfigError(
                f"Unknown optimiser {self.optimiser!r} (available: {', '.join(OPTIMISERS)})"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"Unknown schedule {self.schedule!r} (available: {', '.join(SCHEDULES)})"
            )
        try:
            models.for_dataset(self.arch, self.dataset, activation=self.activation)
        except ValueError as err:
            raise ConfigError(f"Invalid model: {err}") from None
        if self.method == "ensemble" and not self.static_models:
            raise ConfigError(
                "Invalid static_models: [] (method 'ensemble' needs at least one checkpoint path)"
            )
        if self.init is not None and not Path(self.init).is_file():
            raise ConfigError(f"Invalid init: checkpoint {self.init!r} not found")
        for path in self.static_models:
            if not Path(path).is_file():
                raise ConfigError(f"Invalid static_models: checkpoint {path!r} not found")
        if self.step_size is not None and count > 1:
            raise ConfigError(
                f"Invalid step_size: {self.step_size!r} with {count} threats (leave it unset: "
                "each threat uses its own default step size)"
            )
        if check_data:
            for split in ("train", "test"):
                try:
                    data.load(
                        self.dataset, split, root=self.data_root, download=self.download, limit=1
                    )
                except (ValueError, FileNotFoundError) as err:
                    raise ConfigError(
                        f"Dataset {self.dataset!r} ({split}) unavailable: {err}"
                    ) from None


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML file into a :class:`TrainConfig`; ``overrides`` that are not None win.

    The file holds the fields of :class:`TrainConfig` at its top level or under ``[train]``.

    Raises:
        ConfigError: if the file is missing, is not valid TOML, or has unknown keys.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file not found: {p}")
    try:
        values = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"Invalid TOML in {p}: {err}") from None
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
