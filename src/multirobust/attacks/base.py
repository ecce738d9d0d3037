"""The attack contract, defined once: validation, mode handling, goals, unions and the final check.

Attack authors subclass :class:`Attack` and write only ``_run``. The public ``__call__`` checks the
inputs, runs on a copy with the model in eval mode and without parameter gradients, resolves the
goal (untargeted, targeted, confidence reduction), splits unions into their members and keeps the
per-example worst case, projects once more, verifies the result lies in the threat model and
restores the model exactly as it was.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .. import losses
from ..threats import LpBall, Threat, Union, parse
from ..threats.base import _flat

GOALS = ("misclassify", "reduce_confidence")


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial inputs (N, ...), same dtype and device as the clean inputs.
        success: (N,) bool, the goal is met at ``x_adv`` (checked by a fresh forward pass).
        loss: (N,) the attack's loss at ``x_adv``.
        norm: (N,) size of the perturbation in the threat's norm (NaN for non-additive threats).
        logits: (N, C) the model's output at ``x_adv``.
        queries: forward passes of single examples spent, in total.
        params: parameters that certify membership for non-additive threats (spatial angles
            and shifts, affine decompositions; for a union, ``(member_index, member_params)``).
        threat_index: (N,) for a union, which member each example was attacked under.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    norm: torch.Tensor
    logits: torch.Tensor
    queries: int
    params: Any = None
    threat_index: torch.Tensor | None = None

    @property
    def robust(self) -> torch.Tensor:
        """(N,) bool: the attack failed on this example."""
        return ~self.success


@dataclass
class Context:
    """Everything ``_run`` needs for one batch under one (non-union) threat model."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor | None
    generator: torch.Generator
    threat: Threat
    loss: losses.Loss
    goal_met: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    counter: _QueryCounter = field(repr=False)

    def subset(self, index: torch.Tensor) -> Context:
        """The same context restricted to the examples at ``index``."""
        parent = self.goal_met
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=self.y[index],
            targets=None if self.targets is None else self.targets[index],
            goal_met=lambda logits, rows: parent(logits, index[rows]),
        )

    def met(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) bool: the goal holds for ``logits`` of this context's examples ``rows`` (all)."""
        if rows is None:
            rows = torch.arange(logits.shape[0], device=logits.device)
        return self.goal_met(logits, rows)

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-example loss to maximise."""
        return self.loss(logits, self.y, self.targets)


class _QueryCounter(nn.Module):
    """Wraps the model and counts single-example forward passes; adds no host sync."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += x.shape[0]
        return self.model(x)


def _check_number(name: str, value: Any, *, low: float, strict: bool, integer: bool) -> None:
    ok_type = isinstance(value, int) and not isinstance(value, bool)
    if not integer:
        ok_type = ok_type or isinstance(value, float)
    bound = f"> {low:g}" if strict else f">= {low:g}"
    kind = "an integer" if integer else "a number"
    if not ok_type or not math.isfinite(value) or (value <= low if strict else value < low):
        raise ValueError(f"Invalid {name}: {value!r} (must be {kind} {bound})")


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError('Invalid steps: 0 (must be an integer >= 1)')`` style errors."""
    _check_number(name, value, low=1, strict=False, integer=True)


def check_nonneg_int(name: str, value: Any) -> None:
    _check_number(name, value, low=0, strict=False, integer=True)


def check_positive(name: str, value: Any) -> None:
    _check_number(name, value, low=0, strict=True, integer=False)


def check_nonneg(name: str, value: Any) -> None:
    _check_number(name, value, low=0, strict=False, integer=False)


def validate_inputs(x: Any, y: Any) -> None:
    """Clear errors for inputs an attack cannot work on."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have shape (N,) = ({x.shape[0]},) matching x, got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"x has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}): attacks take raw images "
            "in [0, 1]; put mean/std normalisation inside the model (multirobust.models.Normalize)"
        )


def check_logits(logits: Any, n: int) -> None:
    """The model must return finite (N, C) logits, not probabilities."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"The model must return a tensor of logits, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(
            f"The model must return logits of shape (N, C) = ({n}, C>=2), got {tuple(logits.shape)}"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("The model returned NaN or infinite logits")
    if (
        logits.shape[1] > 1
        and bool((logits >= 0).all())
        and bool(((logits.sum(1) - 1).abs() < 1e-3).all())
    ):
        raise ValueError(
            "The model appears to return probabilities (non-negative rows summing to 1), not "
            "logits: gradients of a saturated softmax mask attacks. Remove the final softmax."
        )


@dataclass(frozen=True, kw_only=True)
class Attack(ABC):
    """Base of all attacks: a small frozen keyword-only config and one shared ``__call__``.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)`` and implement ``_run``.

    Common options:
        threat: threat model (object or text such as ``"linf:0.3"``).
        goal: ``"misclassify"`` (default; with targets: reach the target class) or
            ``"reduce_confidence"`` (push the true class's probability below
            ``confidence_threshold``).
        seed: seed of the generator used when the caller passes none.
    """

    name: ClassVar[str] = ""
    #: Losses this attack maximises when ``loss`` is not given.
    default_loss: ClassVar[str] = "ce"

    threat: Threat | str
    goal: str = "misclassify"
    confidence_threshold: float = 0.5
    seed: int = 0

    # ------------------------------------------------------------------ configuration
    def __post_init__(self) -> None:
        object.__setattr__(self, "threat", parse(self.threat))  # type: ignore[arg-type]
        if self.goal not in GOALS:
            raise ValueError(f"Invalid goal: {self.goal!r} (must be one of {', '.join(GOALS)})")
        if not 0.0 < self.confidence_threshold <= 1.0:
            raise ValueError(
                f"Invalid confidence_threshold: {self.confidence_threshold!r} (must be in (0, 1])"
            )
        check_nonneg_int("seed", self.seed)
        threat = self.threat_model
        members = threat.threats if isinstance(threat, Union) else (threat,)
        unsupported = [str(t) for t in members if not self.supports(t)]
        if unsupported:
            raise ValueError(
                f"Attack {self.name!r} does not support threat {', '.join(unsupported)}"
                f" ({self.supported_description()})"
            )
        self._validate()

    @property
    def threat_model(self) -> Threat:
        """The threat model as an object (``threat`` may have been given as text)."""
        assert isinstance(self.threat, Threat)
        return self.threat

    def _validate(self) -> None:  # noqa: B027 - optional hook, most attacks override it
        """Check subclass options; raise ValueError naming the bad one."""

    @classmethod
    def supports(cls, threat: Threat) -> bool:
        """Whether this attack can run under ``threat`` (a non-union threat model)."""
        return isinstance(threat, LpBall)

    @classmethod
    def supported_description(cls) -> str:
        return "supported: ℓ∞, ℓ2 and ℓ1 balls and unions of them"

    def with_options(self, **changes: Any) -> Attack:
        """A copy with some options changed (attacks themselves are immutable)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    # ------------------------------------------------------------------ the contract
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        targets: torch.Tensor | str | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` at inputs ``x`` (N, ...) in [0, 1] with true labels ``y`` (N,).

        Args:
            targets: None (untargeted), a (N,) tensor of target classes (a negative entry leaves
                that example alone, for source/target attacks), ``"random"`` or
                ``"least_likely"``.
            generator: source of all randomness; a generator seeded with ``seed`` when None.
        """
        validate_inputs(x, y)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        x = x.detach().clone()
        y = y.detach().to(device=x.device, dtype=torch.long)
        modes = [m.training for m in model.modules()]
        flags = [p.requires_grad for p in model.parameters()]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            return self._call(model, x, y, targets, generator)
        finally:
            for m, mode in zip(model.modules(), modes, strict=True):
                m.training = mode
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)

    def _call(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        targets_arg: torch.Tensor | str | None,
        generator: torch.Generator,
    ) -> AttackResult:
        counter = _QueryCounter(model)
        with torch.no_grad():
            clean_logits = counter(x)
        check_logits(clean_logits, x.shape[0])
        num_classes = clean_logits.shape[1]
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(
                f"Labels out of range: found {int(y.min())}..{int(y.max())}, the model has "
                f"{num_classes} classes (labels must be in 0..{num_classes - 1})"
            )
        targets = resolve_targets(targets_arg, clean_logits, y, generator)
        goal_met = self._goal_fn(y, targets)
        n = x.shape[0]
        all_rows = torch.arange(n, device=x.device)
        loss_fn = losses.get(getattr(self, "loss", None) or self.default_loss)

        # Examples already meeting the goal, or left alone (target < 0), are not attacked.
        skip = goal_met(clean_logits, all_rows)
        if targets is not None:
            skip |= targets < 0
        todo = (~skip).nonzero().flatten()

        x_adv = x.clone()
        members = (
            list(self.threat_model) if isinstance(self.threat_model, Union) else [self.threat_model]
        )
        member_params: list[Any] = [None] * len(members)
        index = torch.zeros(n, dtype=torch.long, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
        won = torch.zeros(n, dtype=torch.bool, device=x.device)
        for i, threat in enumerate(members):
            # Cheapest-first is the caller's order; examples broken by an earlier member are done.
            rows = todo[~won[todo]] if i else todo
            if threat.is_trivial or rows.numel() == 0:
                continue
            ctx = Context(
                model=counter,
                x=x[rows],
                y=y[rows],
                targets=None if targets is None else targets[rows],
                generator=generator,
                threat=threat,
                loss=loss_fn,
                goal_met=_compose(goal_met, rows),
                counter=counter,
            )
            cand, found_params = self._run(ctx)
            if isinstance(threat, LpBall):
                cand = threat.project(cand, ctx.x)
            with torch.no_grad():
                logits = counter(cand)
                hit = goal_met(logits, rows)
                cand_loss = loss_fn(logits, y[rows], None if targets is None else targets[rows])
            better = hit | (~won[rows] & (cand_loss > best_loss[rows]))
            take = rows[better]
            x_adv[take] = cand[better]
            index[take] = i
            best_loss[take] = cand_loss[better]
            won[rows] |= hit
            member_params[i] = _scatter_params(found_params, rows, n, better, threat, x)

        params: Any
        with torch.no_grad():
            logits = counter(x_adv)
        success = goal_met(logits, all_rows)
        if targets is not None:
            success &= targets >= 0
        final_loss = loss_fn(logits, y, targets.clamp_min(0) if targets is not None else None)
        if isinstance(self.threat_model, Union):
            params = (index, member_params)
            norm = torch.full((n,), float("nan"), device=x.device, dtype=x.dtype)
            for i, t in enumerate(members):
                if isinstance(t, LpBall):
                    norm = torch.where(index == i, t.norm(x_adv - x), norm)
        else:
            params = member_params[0]
            norm = (
                self.threat_model.norm(x_adv - x)
                if isinstance(self.threat_model, LpBall)
                else torch.full((n,), float("nan"), device=x.device, dtype=x.dtype)
            )
        inside = self.threat_model.contains(x_adv, x, atol=1e-4, params=params)
        if not bool(inside.all()):
            bad = int((~inside).sum())
            raise RuntimeError(
                f"Attack {self.name!r} returned {bad} example(s) outside {self.threat_model}: "
                "this is a bug in the attack"
            )
        return AttackResult(
            x_adv=x_adv,
            success=success,
            loss=final_loss,
            norm=norm,
            logits=logits,
            queries=counter.count,
            params=params,
            threat_index=index if isinstance(self.threat_model, Union) else None,
        )

    def _goal_fn(
        self, y: torch.Tensor, targets: torch.Tensor | None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``met(logits, rows)``: goal reached for the examples ``rows`` of the batch."""
        threshold = self.confidence_threshold
        if targets is not None:
            return lambda logits, rows: logits.argmax(1) == targets[rows]
        if self.goal == "reduce_confidence":
            return lambda logits, rows: (
                logits.softmax(1).gather(1, y[rows].unsqueeze(1)).squeeze(1) < threshold
            )
        return lambda logits, rows: logits.argmax(1) != y[rows]

    @abstractmethod
    def _run(self, ctx: Context) -> tuple[torch.Tensor, Any]:
        """Attack the examples of ``ctx`` under ``ctx.threat`` (never a union).

        Returns:
            ``(x_adv, params)``; ``params`` is None for ℓp threats.
        """


def _compose(
    goal_met: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``goal_met`` for a sub-batch: its row r is row ``rows[r]`` of the whole batch."""
    return lambda logits, r: goal_met(logits, rows[r])


def _scatter_params(
    params: Any, rows: torch.Tensor, n: int, keep: torch.Tensor, threat: Threat, x: torch.Tensor
) -> Any:
    """Place a member's parameters for ``rows`` (where ``keep``) into full-batch tensors."""
    if params is None:
        return None
    if isinstance(params, torch.Tensor):
        full = torch.zeros((n,) + tuple(params.shape[1:]), device=params.device, dtype=params.dtype)
        full[rows[keep]] = params[keep]
        return full
    if isinstance(params, tuple):
        return tuple(_scatter_params(p, rows, n, keep, threat, x) for p in params)
    raise TypeError(f"Unsupported attack params of type {type(params).__name__}")


def resolve_targets(
    targets: torch.Tensor | str | None,
    clean_logits: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor | None:
    """Turn the ``targets`` argument into a (N,) long tensor (or None for untargeted)."""
    n, num_classes = clean_logits.shape
    if targets is None:
        return None
    if isinstance(targets, str):
        if targets == "random":
            # Uniform over the classes other than y: draw from C−1 and skip over y.
            r = torch.randint(0, num_classes - 1, (n,), generator=generator, device=y.device)
            return r + (r >= y).long()
        if targets in ("least_likely", "least-likely"):
            return clean_logits.argmin(1)
        raise ValueError(
            f"Invalid targets: {targets!r} (must be a tensor of classes, 'random' or "
            "'least_likely')"
        )
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a tensor or a string, got {type(targets).__name__}")
    targets = targets.to(device=y.device)
    if targets.dim() != 1 or targets.shape[0] != n or targets.is_floating_point():
        raise ValueError(f"targets must be integer class indices of shape ({n},)")
    targets = targets.long()
    if int(targets.max()) >= num_classes:
        raise ValueError(
            f"Targets out of range: max {int(targets.max())}, the model has {num_classes} classes"
        )
    if bool(((targets == y) & (targets >= 0)).any()):
        raise ValueError("Some targets equal the true label; a target must be another class")
    return targets


def source_target(y: torch.Tensor, source: int, target: int) -> torch.Tensor:
    """Targets for a source/target attack: examples of class ``source`` aim at ``target``.

    Examples of other classes get −1, which attacks leave untouched (and never count as success).
    """
    if source == target:
        raise ValueError("source and target classes must differ")
    return torch.where(y == source, torch.full_like(y, target), torch.full_like(y, -1))


def as_flat(t: torch.Tensor) -> torch.Tensor:
    """(N, D) view, re-exported for attack modules."""
    return _flat(t)
