"""The registry of training methods: name -> how to train on one batch.

``methods()`` lists the names the fit loop and ``multirobust train --method`` accept. Each
method turns the run's settings (:class:`MethodSettings`, which a ``TrainConfig`` has) into a
:class:`BatchStep`: a callable doing one training step (attack, loss, backward, optimiser step)
on one batch, with a state for checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn

from .. import models
from ..threats import L1Ball, LpBall
from . import objectives as obj
from .eat import EAT, extreme_threats
from .max_apgd import max_apgd_loss

__all__ = ["BatchStep", "Method", "MethodSettings", "get_method", "methods", "scale_threat"]

LossFn = Callable[..., torch.Tensor]


class MethodSettings(Protocol):
    """The settings a method is built from; :class:`~multirobust.training.TrainConfig` has them.

    A protocol rather than the config class itself, so that the config (which checks a method
    name against this registry) sits above the registry and nothing imports back.
    """

    @property
    def arch(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def activation(self) -> str: ...
    @property
    def threats(self) -> list[str]: ...
    @property
    def steps(self) -> int: ...
    @property
    def step_size(self) -> float | None: ...
    @property
    def beta(self) -> float: ...
    @property
    def replays(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def noise(self) -> str: ...
    @property
    def kappa(self) -> float: ...
    @property
    def optimiser(self) -> str: ...
    @property
    def momentum(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def resolved_lr(self) -> float: ...


class BatchStep:
    """One training step on one batch: ``step(model, optimizer, x, y, generator) -> loss``.

    This base class wraps an objective ``loss_fn(model, x, y, generator=..., stats=...)``:
    zero the gradients, backpropagate the loss, step the optimiser. Stateless; subclasses with
    state (Free-AT's carried perturbation) override :meth:`state_dict`.
    """

    def __init__(self, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn
        # ε warm-up: the fit loop lowers this below 1 to shrink every threat's ε (and an
        # explicit step size) by that factor for the next batch.
        self.eps_scale = 1.0

    def _scaled(self) -> dict[str, Any]:
        """Keyword overrides of ``loss_fn``'s threats for the current ``eps_scale``."""
        s = self.eps_scale
        if s >= 1.0 or not isinstance(self.loss_fn, partial):
            return {}
        kw = self.loss_fn.keywords
        over: dict[str, Any] = {}
        if "threat" in kw:
            over["threat"] = scale_threat(kw["threat"], s)
        if "threats" in kw:
            over["threats"] = [scale_threat(t, s) for t in kw["threats"]]
        if kw.get("step_size") is not None:
            over["step_size"] = kw["step_size"] * s
        return over

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Train on (x, y) once; return the detached loss."""
        loss = self.loss_fn(model, x, y, generator=generator, stats=stats, **self._scaled())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (none for stateless steps)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def scale_threat(threat: Any, factor: float) -> LpBall:
    """The ℓp ball ``threat`` with its ε multiplied by ``factor`` (ε warm-up); ε 0 stays valid."""
    ball = obj.as_lp_ball(threat)
    eps = ball.eps * factor
    if isinstance(ball, L1Ball):
        return L1Ball(eps, sparsity=ball.sparsity)
    return type(ball)(eps)


class _FreeStep(BatchStep):
    """Free-AT: the :class:`FreeAT` object does the optimiser steps itself."""

    def __init__(self, free: obj.FreeAT) -> None:
        self.free = free
        self.eps_scale = 1.0

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        return self.free.step(model, optimizer, x, y, stats=stats)

    def state_dict(self) -> dict[str, Any]:
        return self.free.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.free.load_state_dict(state)


def make_optimizer(cfg: MethodSettings, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names (``sgd`` with momentum, or ``adam``) at its peak rate."""
    if cfg.optimiser == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.resolved_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=cfg.resolved_lr, weight_decay=cfg.weight_decay)


class _DistillStep(BatchStep):
    """Defensive distillation (Papernot et al. 2016) in one pass per batch.

    On each batch the teacher (same architecture, its own optimiser following the student's
    learning rate) takes one step on the cross-entropy at temperature T, then the student takes
    one step on the teacher's soft labels at T. Teacher and student train together rather than
    one after the other, so that every epoch of the fit loop, its logs, its best/final
    checkpoints and its learning-rate schedule concern the deployed model (the student, used
    at T = 1), and the teacher resumes exactly from the method state. By the last epochs the
    student learns from a converged teacher, as in the paper.
    """

    def __init__(self, cfg: MethodSettings) -> None:
        self.temperature = float(cfg.temperature)
        self.eps_scale = 1.0  # no threat inside training: ε warm-up has nothing to scale
        self.teacher = models.for_dataset(cfg.arch, cfg.dataset, activation=cfg.activation)
        self.teacher_optimizer = make_optimizer(cfg, self.teacher.parameters())

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        self.teacher.to(x.device)
        for group in self.teacher_optimizer.param_groups:
            group["lr"] = optimizer.param_groups[0]["lr"]
        self.teacher.train()
        teacher_loss = obj.temperature_loss(self.teacher, x, y, temperature=self.temperature)
        self.teacher_optimizer.zero_grad(set_to_none=True)
        teacher_loss.backward()
        self.teacher_optimizer.step()
        loss = obj.distillation_loss(
            model, x, y, teacher=self.teacher, temperature=self.temperature, stats=stats
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.state_dict(),
            "teacher_optimizer": self.teacher_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.teacher_optimizer.load_state_dict(state["teacher_optimizer"])


@dataclass(frozen=True)
class Method:
    """A registered training method.

    Attributes:
        name: the registry name.
        summary: one line: what it does and the paper.
        threat_count: (minimum, maximum or None) number of threat models it takes.
        build: ``build(config, static_models) -> BatchStep``.
        single_step: it trains on one-step attacks, which can overfit catastrophically: the
            fit loop measures held-out FGSM accuracy and stops early by default.
        eps_warmup: it accepts an ε warm-up (its BatchStep scales its threats).
    """

    name: str
    summary: str
    threat_count: tuple[int, int | None]
    build: Callable[[MethodSettings, list[nn.Module]], BatchStep]
    single_step: bool = False
    eps_warmup: bool = True


def _standard(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
        return obj.standard_loss(model, x, y, stats=kw.get("stats"))

    return BatchStep(loss)


def _single(fn: LossFn, **extra: Any) -> Callable[[MethodSettings, list[nn.Module]], BatchStep]:
    def build(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
        opts = {k: getattr(cfg, v) for k, v in extra.items()}
        return BatchStep(partial(fn, threat=cfg.threats[0], step_size=cfg.step_size, **opts))

    return build


def _multi(fn: LossFn) -> Callable[[MethodSettings, list[nn.Module]], BatchStep]:
    def build(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
        return BatchStep(partial(fn, threats=list(cfg.threats), steps=cfg.steps))

    return build


class _EATStep(BatchStep):
    """E-AT (Croce & Hein 2022): the :class:`EAT` object draws the threat and keeps the
    running robust errors, which are the method state checkpoints carry."""

    def __init__(self, eat: EAT) -> None:
        self.eat = eat
        self.eps_scale = 1.0

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        loss = self.eat.loss(
            model, x, y, generator=generator, eps_scale=self.eps_scale, stats=stats
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.eat.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eat.load_state_dict(state)


def _eat(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    return _EATStep(EAT(extreme_threats(list(cfg.threats)), steps=cfg.steps))


def _free(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    return _FreeStep(obj.FreeAT(cfg.threats[0], replays=cfg.replays, step_size=cfg.step_size))


def _distillation(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    return _DistillStep(cfg)


def _noise(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    from .noise import noise_loss  # certification training lives in its own files

    return BatchStep(partial(noise_loss, noise=cfg.noise))


class _IBPStep(BatchStep):
    """IBP training (Gowal et al. 2018) with the paper's schedules: at warm-up fraction s the
    ball's ε is s·ε and the clean-loss weight is κ_s = 1 − s(1 − κ) (:func:`.ibp.kappa_at`)."""

    def __init__(self, threat: Any, kappa: float) -> None:
        from .ibp import ibp_loss  # certification training lives in its own files

        super().__init__(partial(ibp_loss, threat=threat, kappa=kappa))
        self.threat = threat
        self.kappa = kappa

    def _scaled(self) -> dict[str, Any]:
        from .ibp import kappa_at

        s = min(self.eps_scale, 1.0)
        return {"threat": scale_threat(self.threat, s), "kappa": kappa_at(self.kappa, s)}


def _ibp(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    return _IBPStep(cfg.threats[0], cfg.kappa)


def _ensemble(cfg: MethodSettings, static: list[nn.Module]) -> BatchStep:
    return BatchStep(
        partial(
            obj.ensemble_at_loss,
            threat=cfg.threats[0],
            static_models=static,
            step_size=cfg.step_size,
        )
    )


_REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "standard",
            "clean cross-entropy (empirical risk minimisation)",
            (1, None),
            _standard,
            eps_warmup=False,
        ),
        Method(
            "pgd",
            "PGD adversarial training (Madry et al. 2018)",
            (1, 1),
            _single(obj.pgd_at_loss, steps="steps"),
        ),
        Method(
            "free",
            "free adversarial training, m replays (Shafahi et al. 2019)",
            (1, 1),
            _free,
            eps_warmup=False,
        ),
        Method(
            "fast",
            "FGSM with random start, alpha = 1.25 eps (Wong et al. 2020)",
            (1, 1),
            _single(obj.fast_at_loss),
            single_step=True,
        ),
        Method(
            "trades",
            "TRADES, CE + beta KL (Zhang et al. 2019)",
            (1, 1),
            _single(obj.trades_loss, steps="steps", beta="beta"),
        ),
        Method(
            "max",
            "worst threat per example (Tramer & Boneh 2019)",
            (1, None),
            _multi(obj.multi_max_loss),
        ),
        Method(
            "avg",
            "all threats averaged (Tramer & Boneh 2019)",
            (1, None),
            _multi(obj.multi_avg_loss),
        ),
        Method("random", "one random threat per batch", (1, None), _multi(obj.multi_random_loss)),
        Method(
            "msd", "multi steepest descent (Maini et al. 2020)", (1, None), _multi(obj.msd_loss)
        ),
        Method(
            "eat",
            "one extreme-norm threat (linf or l1) per batch by running robust error, APGD "
            "(Croce & Hein 2022)",
            (1, None),
            _eat,
        ),
        Method(
            "max-apgd",
            "worst threat per example from k-step APGD per threat (few strong steps)",
            (1, None),
            _multi(max_apgd_loss),
        ),
        Method(
            "ensemble", "FGSM examples from fixed models (Tramer et al. 2018)", (1, 1), _ensemble
        ),
        Method(
            "distillation",
            "defensive distillation at temperature T (Papernot et al. 2016); not robust",
            (1, None),
            _distillation,
            eps_warmup=False,  # no threat inside training: nothing to ramp
        ),
        Method(
            "noise",
            "noise augmentation for smoothing (Cohen et al. 2019)",
            (1, None),
            _noise,
            eps_warmup=False,
        ),
        Method("ibp", "interval bounds, eps/kappa ramp (Gowal et al. 2018)", (1, 1), _ibp),
    )
}


def methods() -> list[str]:
    """Names of the registered training methods, in the order they are documented.

    Returns:
        ``["standard", "pgd", "free", "fast", "trades", "max", "avg", "random", "msd",
        "eat", "max-apgd", "ensemble", "distillation", "noise", "ibp"]``.
    """
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``.

    Raises:
        ValueError: for an unknown name, listing the available ones.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown method {name!r} (available: {', '.join(methods())})")
    return _REGISTRY[name]
