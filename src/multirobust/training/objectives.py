"""Adversarial-training objectives that drop into any training loop.

Each function takes a model (in whatever mode the caller trains it), a batch ``x`` in [0, 1]
and labels ``y``, crafts its adversarial examples inside :func:`attack_mode` (eval mode, no
parameter gradients, flags restored), and returns the scalar loss to backpropagate::

    for x, y in loader:
        loss = trades_loss(model, x, y, "linf:0.3", beta=6.0, steps=10)
        opt.zero_grad(); loss.backward(); opt.step()

Threat models are objects or text (``"linf:0.3"``). Pass a dict as ``stats`` to receive
per-batch diagnostics (detached tensors, no host synchronisation): ``"adv_logits"`` and, for
the multi-perturbation objectives, ``"threat_index"`` (which threat each example was trained
on). Randomness comes only from ``generator``.

Every objective moves its perturbation with the threat's one projected steepest-ascent step,
``threat.step(x_adv, x, grad, step_size)`` = Π_{B(x,ε)∩[0,1]}(x_adv + α·s(grad)), where s is
the norm's steepest-ascent direction with the coordinates the box blocks left out, and takes
input gradients from :func:`multirobust.attacks.gradients.input_gradient`: the same update
rule as PGD, written once.

Free adversarial training updates the weights itself (one backward pass serves both the
weights and the perturbation), so it is the small stateful object :class:`FreeAT`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd_perturb
from ..attacks.gradients import input_gradient
from ..models.state import attack_mode
from ..threats import LpBall, Threat, Union, parse

__all__ = [
    "FreeAT",
    "distillation_loss",
    "ensemble_at_loss",
    "fast_at_loss",
    "msd_loss",
    "multi_avg_loss",
    "multi_max_loss",
    "multi_random_loss",
    "pgd_at_loss",
    "standard_loss",
    "temperature_loss",
    "trades_loss",
]

ThreatLike = Threat | str


# --------------------------------------------------------------------------- argument checks


def as_lp_ball(threat: ThreatLike) -> LpBall:
    """Parse ``threat`` and check that it is an ℓp ball (the training attacks need one).

    Raises:
        ValueError: for another kind of threat model, saying which are allowed.
    """
    tm = parse(threat)
    if not isinstance(tm, LpBall):
        raise ValueError(
            f"Invalid threat for adversarial training: {tm} (must be an ℓp ball: "
            "linf:EPS, l2:EPS or l1:EPS)"
        )
    return tm


def as_lp_balls(threats: ThreatLike | Sequence[ThreatLike]) -> list[LpBall]:
    """Parse a list of threats (or one ``union(...)``) into a non-empty list of ℓp balls."""
    if isinstance(threats, str | Threat):
        tm = parse(threats)
        items: list[ThreatLike] = list(tm.threats) if isinstance(tm, Union) else [tm]
    else:
        items = list(threats)
    if not items:
        raise ValueError("Invalid threats: [] (give at least one ℓp ball, e.g. linf:0.3)")
    return [as_lp_ball(t) for t in items]


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid steps: {steps!r} (must be an integer >= 1)")
    return steps


def _check_step_size(step_size: Any) -> float | None:
    if step_size is None:
        return None
    if isinstance(step_size, bool) or not isinstance(step_size, int | float) or step_size <= 0:
        raise ValueError(f"Invalid step_size: {step_size!r} (must be a number > 0)")
    return float(step_size)


def _step_sizes(
    threats: list[LpBall], step_sizes: Sequence[float | None] | None, steps: int
) -> list[float]:
    if step_sizes is None:
        return [t.default_step_size(steps) for t in threats]
    if len(step_sizes) != len(threats):
        raise ValueError(
            f"Invalid step_sizes: {len(step_sizes)} value(s) for {len(threats)} threat(s) "
            "(must give one per threat, or None for the defaults)"
        )
    return [
        t.default_step_size(steps) if s is None else float(_check_step_size(s) or 0.0)
        for t, s in zip(threats, step_sizes, strict=True)
    ]


def _record(stats: dict[str, Any] | None, **values: Any) -> None:
    if stats is not None:
        stats.update(
            {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        )


# --------------------------------------------------------------------------- single threat


def standard_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, stats: dict[str, Any] | None = None
) -> torch.Tensor:
    """Empirical risk minimisation: the mean cross-entropy on clean inputs.

    Args:
        model: the classifier (returns logits).
        x: images in [0, 1], shape (N, C, H, W).
        y: labels, shape (N,).
        stats: optional dict that receives ``"adv_logits"`` (here the clean logits).

    Returns:
        Scalar loss  (1/N) Σ CE(f(x_i), y_i).
    """
    logits = model(x)
    _record(stats, adv_logits=logits)
    return F.cross_entropy(logits, y)


def pgd_at_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018).

    The inner maximisation runs ``steps`` of PGD on the cross-entropy inside the ℓp ball,
    x' ← Π_{B(x,ε)∩[0,1]}(x' + α·s(∇ₓ CE(f(x'), y))), from a random point of the ball; the
    outer minimisation trains on the result: min_θ (1/N) Σ CE(f_θ(x'_i), y_i).

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threat: an ℓp ball, object or text (``"linf:0.3"``).
        steps: PGD steps (>= 1).
        step_size: α; default from the threat (2.5·ε/steps, more for ℓ1).
        random_start: start from a uniform point of the ball.
        generator: random source of the start.
        stats: optional dict receiving ``"adv_logits"``.

    Returns:
        The scalar adversarial cross-entropy.
    """
    tm = as_lp_ball(threat)
    steps = _check_steps(steps)
    step_size = _check_step_size(step_size)
    with attack_mode(model):
        x_adv = pgd_perturb(
            model,
            x,
            y,
            tm,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            generator=generator,
        )
    logits = model(x_adv)
    _record(stats, adv_logits=logits)
    return F.cross_entropy(logits, y)


def trades_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike,
    *,
    beta: float = 6.0,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019).

    Loss:  (1/N) Σ [ CE(f(x_i), y_i) + β · KL(p(x_i) ‖ p(x'_i)) ],  with p = softmax ∘ f and
    x' maximising the KL term: x' starts at x + 0.001·N(0, I) and takes ``steps`` projected
    steepest-ascent steps x' ← Π(x' + α·s(∇ₓ' KL(p(x) ‖ p(x')))), with p(x) held fixed.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threat: an ℓp ball, object or text.
        beta: weight of the robustness term (>= 0; 0 is standard training). Zhang et al. use 6.
        steps: ascent steps on the KL (>= 1).
        step_size: α; default from the threat.
        generator: random source of the start.
        stats: optional dict receiving ``"adv_logits"`` and ``"kl"``.

    Returns:
        The scalar TRADES loss.
    """
    tm = as_lp_ball(threat)
    steps = _check_steps(steps)
    step_size = _check_step_size(step_size)
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
        raise ValueError(f"Invalid beta: {beta!r} (must be a number >= 0)")
    alpha = tm.default_step_size(steps) if step_size is None else step_size
    x = x.detach()
    with attack_mode(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)

        def kl_to_clean(
            logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None
        ) -> torch.Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="none").sum(1)

        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = tm.project(x + 0.001 * noise, x)
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x_adv, y, kl_to_clean)
            with torch.no_grad():
                x_adv = tm.step(x_adv, x, grad, alpha)
    x_adv = x_adv.detach()
    logits = model(x)
    adv_logits = model(x_adv)
    robust = F.kl_div(
        F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    _record(stats, adv_logits=adv_logits, kl=robust)
    return F.cross_entropy(logits, y) + beta * robust


def fast_at_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike,
    *,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Fast adversarial training: FGSM from a random start (Wong, Rice & Kolter, "Fast is
    better than free: Revisiting adversarial training", ICLR 2020).

    x₀ is uniform in the ball; x' = Π_{B(x,ε)∩[0,1]}(x₀ + α·s(∇ₓ CE(f(x₀), y))) with
    α = 1.25·ε by default; the loss is the cross-entropy at x'. Too large an α leads to
    catastrophic overfitting (robustness to FGSM but none to PGD): watch it with
    :class:`multirobust.training.OverfittingDetector`.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threat: an ℓp ball, object or text.
        step_size: α (> 0); default 1.25·ε.
        generator: random source of the start.
        stats: optional dict receiving ``"adv_logits"``.

    Returns:
        The scalar adversarial cross-entropy.
    """
    tm = as_lp_ball(threat)
    step_size = _check_step_size(step_size)
    alpha = 1.25 * tm.eps if step_size is None else step_size
    x = x.detach()
    with attack_mode(model):
        x0 = tm.random_init(x, generator)
        grad, _, _ = input_gradient(model, x0, y)
        with torch.no_grad():
            x_adv = tm.step(x0, x, grad, alpha)
    logits = model(x_adv)
    _record(stats, adv_logits=logits)
    return F.cross_entropy(logits, y)


class FreeAT:
    """Free adversarial training (Shafahi et al., "Adversarial Training for Free!",
    NeurIPS 2019): m replays of each minibatch, one backward pass per replay for both the
    weights and the perturbation.

    For each replay:  x' = Π(x + δ);  g_θ, g_x = ∇_{θ, x'} CE(f_θ(x'), y);  θ ← optimiser(θ, g_θ);
    δ ← Π(x' + α·s(g_x)) − x  (α = ε by default). δ is carried across replays and across
    minibatches (rows are cut or zero-padded when the batch size changes). Free-AT does m
    optimiser steps per minibatch, so Shafahi et al. divide the number of epochs by m.

    The input gradient comes from the training forward pass, so unlike the other objectives
    the perturbation is computed in the model's training mode: that shared pass is what makes
    the method free.

    The update is ``threat.step`` like every other objective's, so s leaves out the
    coordinates the box blocks. Under ℓ∞ that changes nothing (clipping undoes such a move);
    under ℓ2 and ℓ1 the whole step goes to coordinates that can move. (Versions before the
    shared step used a direction that ignored the box: their ℓ2/ℓ1 Free-AT runs differ.)

    Args:
        threat: an ℓp ball, object or text.
        replays: m, replays of each minibatch (>= 1).
        step_size: α for the perturbation update (> 0); default ε.
    """

    def __init__(
        self, threat: ThreatLike, *, replays: int = 4, step_size: float | None = None
    ) -> None:
        self.threat = as_lp_ball(threat)
        if isinstance(replays, bool) or not isinstance(replays, int) or replays < 1:
            raise ValueError(f"Invalid replays: {replays!r} (must be an integer >= 1)")
        self.replays = replays
        checked = _check_step_size(step_size)
        self.step_size = self.threat.eps if checked is None else checked
        self.delta: torch.Tensor | None = None

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.delta is None or self.delta.shape[1:] != x.shape[1:]:
            return torch.zeros_like(x)
        delta = self.delta.to(device=x.device, dtype=x.dtype)
        if delta.shape[0] >= n:
            return delta[:n]
        pad = torch.zeros((n - delta.shape[0], *x.shape[1:]), device=x.device, dtype=x.dtype)
        return torch.cat([delta, pad])

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        stats: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Train on one minibatch with ``replays`` optimiser steps.

        Args:
            model: the classifier (its mode is left as it is).
            optimizer: the optimiser of ``model``'s parameters; stepped ``replays`` times.
            x: images in [0, 1], (N, C, H, W).
            y: labels, (N,).
            stats: optional dict receiving ``"adv_logits"`` of the last replay.

        Returns:
            The mean loss over the replays (detached scalar).
        """
        x = x.detach()
        tm = self.threat
        delta = self._start(x)
        total = torch.zeros((), device=x.device)
        logits = None
        for _ in range(self.replays):
            x_adv = tm.project(x + delta, x).requires_grad_(True)
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            assert x_adv.grad is not None
            with torch.no_grad():
                delta = tm.step(x_adv, x, x_adv.grad, self.step_size) - x
            total = total + loss.detach()
        self.delta = delta.detach()
        _record(stats, adv_logits=logits)
        return total / self.replays

    def reset(self) -> None:
        """Forget the carried perturbation."""
        self.delta = None

    def state_dict(self) -> dict[str, Any]:
        """The carried perturbation, for checkpoints (``{"delta": tensor or None}``)."""
        return {"delta": None if self.delta is None else self.delta.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        delta = state.get("delta")
        self.delta = None if delta is None else delta.detach().clone()


# --------------------------------------------------------------------------- several threats


def _adversarial_per_threat(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: list[LpBall],
    steps: int,
    step_sizes: list[float],
    generator: torch.Generator | None,
) -> list[torch.Tensor]:
    """PGD under each threat in turn (the caller holds ``attack_mode``)."""
    return [
        pgd_perturb(model, x, y, t, steps=steps, step_size=a, generator=generator)
        for t, a in zip(threats, step_sizes, strict=True)
    ]


def _worst(
    model: nn.Module, y: torch.Tensor, candidates: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the candidate with the highest cross-entropy, and its index (first on ties).

    One forward pass over all candidates stacked; the caller holds ``attack_mode``.
    """
    k, n = len(candidates), y.shape[0]
    with torch.no_grad():
        stacked = torch.cat(candidates)
        values = F.cross_entropy(model(stacked), y.repeat(k), reduction="none").view(k, n)
        index = values.argmax(0)
        chosen = stacked.view(k, n, *candidates[0].shape[1:])[index, torch.arange(n)]
    return chosen, index


def multi_max_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 10,
    step_sizes: Sequence[float | None] | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """MAX: train on the per-example worst threat (Tramèr & Boneh, "Adversarial Training and
    Robustness for Multiple Perturbations", NeurIPS 2019).

    For each threat t, x'_t = PGD_t(x); per example, x* = x'_{t*} with
    t* = argmax_t CE(f(x'_t), y) (evaluated in eval mode); the loss is (1/N) Σ CE(f(x*_i), y_i).

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text), or one ``union(...)``.
        steps: PGD steps per threat.
        step_sizes: one α per threat (None entries: the threat's default).
        generator: random source of the PGD starts.
        stats: optional dict receiving ``"adv_logits"`` and ``"threat_index"`` (N,).

    Returns:
        The scalar loss.
    """
    tms = as_lp_balls(threats)
    steps = _check_steps(steps)
    alphas = _step_sizes(tms, step_sizes, steps)
    x = x.detach()
    with attack_mode(model):
        candidates = _adversarial_per_threat(model, x, y, tms, steps, alphas, generator)
        x_adv, index = _worst(model, y, candidates)
    logits = model(x_adv)
    _record(stats, adv_logits=logits, threat_index=index)
    return F.cross_entropy(logits, y)


def multi_avg_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 10,
    step_sizes: Sequence[float | None] | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """AVG: train on the adversarial examples of every threat (Tramèr & Boneh 2019).

    Loss: (1/(kN)) Σ_t Σ_i CE(f(PGD_t(x_i)), y_i), in one forward pass over the k·N inputs.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text), or one ``union(...)``.
        steps: PGD steps per threat.
        step_sizes: one α per threat (None entries: the threat's default).
        generator: random source of the PGD starts.
        stats: optional dict receiving ``"adv_logits"`` (kN, C) and ``"threat_index"`` (kN,).

    Returns:
        The scalar loss.
    """
    tms = as_lp_balls(threats)
    steps = _check_steps(steps)
    alphas = _step_sizes(tms, step_sizes, steps)
    x = x.detach()
    with attack_mode(model):
        candidates = _adversarial_per_threat(model, x, y, tms, steps, alphas, generator)
    logits = model(torch.cat(candidates))
    index = torch.arange(len(tms), device=x.device).repeat_interleave(x.shape[0])
    _record(stats, adv_logits=logits, threat_index=index)
    return F.cross_entropy(logits, y.repeat(len(tms)))


def multi_random_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 10,
    step_sizes: Sequence[float | None] | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Random threat per batch: PGD-AT under one threat drawn uniformly for the whole batch
    (the cheap multi-perturbation baseline of Tramèr & Boneh 2019 and Maini et al. 2020).

    t ~ U{1..k} (from ``generator``);  loss = (1/N) Σ CE(f(PGD_t(x_i)), y_i).

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text), or one ``union(...)``.
        steps: PGD steps.
        step_sizes: one α per threat (None entries: the threat's default).
        generator: draws the threat and the PGD start.
        stats: optional dict receiving ``"adv_logits"`` and ``"threat_index"`` (N,).

    Returns:
        The scalar loss.
    """
    tms = as_lp_balls(threats)
    steps = _check_steps(steps)
    alphas = _step_sizes(tms, step_sizes, steps)
    device = generator.device if generator is not None else torch.device("cpu")
    pick = int(torch.randint(len(tms), (1,), generator=generator, device=device))
    loss = pgd_at_loss(
        model,
        x,
        y,
        tms[pick],
        steps=steps,
        step_size=alphas[pick],
        generator=generator,
        stats=stats,
    )
    _record(stats, threat_index=torch.full_like(y, pick))
    return loss


def msd_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: ThreatLike | Sequence[ThreatLike],
    *,
    steps: int = 10,
    step_sizes: Sequence[float | None] | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Multi steepest descent (Maini, Wong & Kolter, "Adversarial Robustness Against the Union
    of Multiple Perturbation Models", ICML 2020).

    From x' = x, at each of ``steps`` iterations: g = ∇ₓ' CE(f(x'), y); for every threat t a
    candidate c_t = Π_t(x' + α_t·s_t(g)); per example, x' ← the c_t with the highest
    cross-entropy. The loss is the cross-entropy at the final x'. Each iteration costs one
    forward+backward and one forward over the k candidates.

    Args:
        model: the classifier.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threats: ℓp balls (objects or text), or one ``union(...)``.
        steps: iterations (>= 1).
        step_sizes: one α per threat (None entries: the threat's default).
        generator: unused (MSD starts at x); accepted for a uniform interface.
        stats: optional dict receiving ``"adv_logits"`` and ``"threat_index"`` (N,), the
            threat of the last chosen step.

    Returns:
        The scalar loss.
    """
    del generator
    tms = as_lp_balls(threats)
    steps = _check_steps(steps)
    alphas = _step_sizes(tms, step_sizes, steps)
    x = x.detach()
    x_adv = x.clone()
    index = torch.zeros_like(y)
    with attack_mode(model):
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x_adv, y)
            with torch.no_grad():
                candidates = [t.step(x_adv, x, grad, a) for t, a in zip(tms, alphas, strict=True)]
            x_adv, index = _worst(model, y, candidates)
    logits = model(x_adv)
    _record(stats, adv_logits=logits, threat_index=index)
    return F.cross_entropy(logits, y)


def ensemble_at_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike,
    static_models: Sequence[nn.Module],
    *,
    include_self: bool = True,
    adv_weight: float = 0.5,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Ensemble adversarial training (Tramèr et al., "Ensemble Adversarial Training: Attacks
    and Defenses", ICLR 2018): adversarial examples transferred from fixed models.

    Per batch, a source s is drawn uniformly from ``static_models`` (plus the model being
    trained when ``include_self``); x' = Π(x + α·s(∇ₓ CE(f_s(x), y))) (FGSM, α = ε by default).
    Loss: (1 − w)·(1/N) Σ CE(f(x_i), y_i) + w·(1/N) Σ CE(f(x'_i), y_i), w = ``adv_weight``.

    Args:
        model: the classifier being trained.
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        threat: an ℓp ball, object or text.
        static_models: pre-trained fixed models (never updated; used in eval mode).
        include_self: also draw the model being trained as a source.
        adv_weight: w in [0, 1].
        step_size: α (> 0); default ε.
        generator: draws the source.
        stats: optional dict receiving ``"adv_logits"`` and ``"source"`` (index drawn; the
            model itself is index ``len(static_models)``).

    Returns:
        The scalar loss.
    """
    tm = as_lp_ball(threat)
    step_size = _check_step_size(step_size)
    sources = list(static_models) + ([model] if include_self else [])
    if not sources:
        raise ValueError(
            "Invalid static_models: [] with include_self=False (need at least one source model)"
        )
    if isinstance(adv_weight, bool) or not 0.0 <= float(adv_weight) <= 1.0:
        raise ValueError(f"Invalid adv_weight: {adv_weight!r} (must be in [0, 1])")
    alpha = tm.eps if step_size is None else step_size
    device = generator.device if generator is not None else torch.device("cpu")
    pick = int(torch.randint(len(sources), (1,), generator=generator, device=device))
    source = sources[pick]
    x = x.detach()
    with attack_mode(model), attack_mode(source):
        grad, _, _ = input_gradient(source, x, y)
        with torch.no_grad():
            x_adv = tm.step(x, x, grad, alpha)
    logits = model(torch.cat([x, x_adv]))
    n = x.shape[0]
    clean = F.cross_entropy(logits[:n], y)
    adv = F.cross_entropy(logits[n:], y)
    _record(stats, adv_logits=logits[n:], source=pick)
    return (1.0 - adv_weight) * clean + adv_weight * adv


# --------------------------------------------------------------------------- distillation


def _check_temperature(temperature: Any) -> float:
    ok = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not ok or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"Invalid temperature: {temperature!r} (must be a finite number > 0)")
    return float(temperature)


def temperature_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    temperature: float,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Cross-entropy of the softmax at temperature T: (1/N) Σ CE(f(x_i)/T, y_i).

    How the teacher of defensive distillation is trained (Papernot et al. 2016).

    Args:
        model: the classifier (returns logits).
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,).
        temperature: T > 0.
        stats: optional dict receiving ``"adv_logits"`` (the clean logits).

    Returns:
        The scalar loss.
    """
    t = _check_temperature(temperature)
    logits = model(x)
    _record(stats, adv_logits=logits)
    return F.cross_entropy(logits / t, y)


def distillation_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    teacher: nn.Module,
    temperature: float,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Defensive distillation's student loss (Papernot et al., "Distillation as a Defense to
    Adversarial Perturbations against Deep Neural Networks", IEEE S&P 2016).

    The student f learns the teacher g's soft labels at temperature T:
    (1/N) Σ_i −Σ_k softmax(g(x_i)/T)_k · log softmax(f(x_i)/T)_k. The labels ``y`` are not used
    (the soft labels carry them). Deployed at T = 1, the student's logits are about T times
    larger than a normally trained model's, so its softmax saturates: cross-entropy gradients
    vanish and CE-based attacks fail, while margin (C&W) and DLR attacks are unaffected
    (Carlini & Wagner 2016, "Defensive Distillation is Not Robust to Adversarial Examples").

    Args:
        model: the student (returns logits).
        x: images in [0, 1], (N, C, H, W).
        y: labels, (N,) (checked for shape only).
        teacher: the trained teacher; used in eval mode without gradients, flags restored.
        temperature: T > 0 (Papernot et al. use 100 on MNIST).
        stats: optional dict receiving ``"adv_logits"`` (the student's logits) and
            ``"soft_labels"``.

    Returns:
        The scalar loss.
    """
    t = _check_temperature(temperature)
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    with attack_mode(teacher), torch.no_grad():
        soft = F.softmax(teacher(x) / t, dim=1)
    logits = model(x)
    _record(stats, adv_logits=logits, soft_labels=soft)
    return -(soft * F.log_softmax(logits / t, dim=1)).sum(1).mean()
