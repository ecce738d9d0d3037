"""The two attack contracts, each defined once: fixed-ε attacks and minimum-norm attacks.

Attack authors subclass :class:`Attack` (or :class:`MinimumNormAttack`) and write only ``_run``.
The public ``__call__`` is final (a subclass that defines one is refused when the class is
created). It checks the inputs and that they match the model's dtype and device, puts the model
in attack mode (:func:`multirobust.models.attack_mode`: eval, frozen parameters, everything
restored after), runs one clean forward pass (probability outputs and out-of-range labels are
refused here), resolves the adversary's :class:`~.goals.Goal` and leaves alone the examples that
already meet it or are not attacked, calls ``_run`` on the rest, and then:

- fixed-ε (:class:`Attack`): projects the result onto the threat model once more, evaluates it
  with one forward pass (whose logits are the result's: no second pass), and raises
  :class:`~multirobust.threats.ThreatViolation` if anything is outside the threat model;
- minimum-norm (:class:`MinimumNormAttack`): evaluates the candidates and returns, per example,
  the smallest adversarial perturbation found and whether one was (a
  :class:`MinimumNormResult`); no radius is involved.

Unions of threat models are handled by one wrapper, :class:`~.union.UnionAttack` (the
per-example worst member), built by :func:`~.registry.create`; a minimum-norm attack asked for a
fixed budget is wrapped by :class:`~.budget.WithinBudget`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import nn

from .. import losses
from ..models.state import attack_mode
from ..threats import LpBall, Threat, ThreatParams, ThreatViolation, entries, parse, place_params
from ..threats.base import in_box
from .goals import Goal, GoalFn, ResolvedGoal, as_goal

__all__ = [
    "Attack",
    "AttackResult",
    "Context",
    "MinimumNormAttack",
    "MinimumNormResult",
    "ThreatViolation",
    "check_labels",
    "check_logits",
    "check_model_inputs",
    "validate_inputs",
]


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class AttackResult:
    """What a fixed-ε attack returns.

    Attributes:
        x_adv: adversarial inputs (N, ...), same dtype and device as the clean inputs.
        success: (N,) bool, the goal is met at ``x_adv`` (by the forward pass of ``logits``).
        loss: (N,) the attack's loss at ``x_adv``.
        norm: (N,) size of the perturbation in the threat's norm (NaN where it has none).
        logits: (N, C) the model's output at ``x_adv``.
        queries: forward passes of single examples spent, in total.
        params: parameters certifying membership for parameterised threats
            (:class:`~multirobust.threats.SpatialParams`, ``AffineParams``, ``UnionParams``);
            None for ℓp balls.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    norm: torch.Tensor
    logits: torch.Tensor
    queries: int
    params: ThreatParams | None = None

    @property
    def robust(self) -> torch.Tensor:
        """(N,) bool: the attack failed on this example."""
        return ~self.success

    @property
    def threat_index(self) -> torch.Tensor | None:
        """(N,) for a union, which member each example was attacked under; else None."""
        return None if self.params is None else self.params.member_index()


@dataclass(frozen=True)
class MinimumNormResult:
    """What a minimum-norm attack returns: the smallest adversarial perturbation found.

    Attributes:
        x_adv: (N, ...) the smallest adversarial input found; ``x`` itself where none was found
            (and where the clean input already meets the goal).
        found: (N,) bool, ``x_adv`` meets the goal (checked by the forward pass of ``logits``).
            True at distance 0 for examples that meet it without any perturbation.
        distance: (N,) the norm of ``x_adv − x`` where found, ``inf`` where not.
        logits: (N, C) the model's output at ``x_adv``.
        queries: forward passes of single examples spent, in total.
        norm: the name of the norm (``"l2"``, ``"linf"``, ...).
    """

    x_adv: torch.Tensor
    found: torch.Tensor
    distance: torch.Tensor
    logits: torch.Tensor
    queries: int
    norm: str

    def success_at(self, eps: float) -> torch.Tensor:
        """(N,) bool: an adversarial input within ``eps`` was found."""
        return self.found & (self.distance <= eps)

    def robust_at(self, eps: float) -> torch.Tensor:
        """(N,) bool: no adversarial input within ``eps`` was found (robust at ε, as far as
        this attack can tell)."""
        return ~self.success_at(eps)

    def robust_accuracy(self, eps: float) -> float:
        """Fraction of examples robust at ``eps``. (Counts examples misclassified without attack
        as not robust, like the fixed-ε contract.)"""
        return float(self.robust_at(eps).double().mean())


# ---------------------------------------------------------------------------- context
@dataclass
class Context:
    """Everything ``_run`` needs for one batch under one (non-union) threat model.

    Attributes:
        model: the model (wrapped to count queries), in eval mode with frozen parameters.
        x, y: the examples to attack and their labels.
        targets: (N,) target classes of a targeted goal, else None.
        generator: the source of all randomness.
        threat: the threat model (for minimum-norm attacks, a ball no perturbation in the box
            exceeds).
        loss: the per-example loss to maximise, ``loss(logits, y, targets)``.
        goal_met: ``met(logits, rows)``, the goal test for the examples ``rows`` of this batch.
        counter: the query counter (the same object as ``model``).
        threshold: for a confidence-reduction goal, the probability the true class must fall
            below; None for untargeted and targeted goals.
        clean_logits: (N, C) the model's output at ``x``, already computed by the contract.
        clean_gradient: for attacks that asked for it (:meth:`Attack._wants_clean_gradient`),
            a function returning ∇ₓ Σ loss at ``x`` from the contract's own clean forward pass
            (one backward pass, callable once); None otherwise and in sub-contexts.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor | None
    generator: torch.Generator
    threat: Threat
    loss: losses.Loss
    goal_met: GoalFn = field(repr=False)
    counter: _QueryCounter = field(repr=False)
    threshold: float | None = None
    clean_logits: torch.Tensor | None = field(default=None, repr=False)
    clean_gradient: Callable[[], torch.Tensor] | None = field(default=None, repr=False)

    @property
    def decision(self) -> bool:
        """Success is a change of the predicted class (untargeted or targeted), so it may be
        tightened by a margin on the logits; False for confidence reduction."""
        return self.threshold is None

    def subset(self, index: torch.Tensor) -> Context:
        """The same context restricted to the examples at ``index``."""
        parent = self.goal_met
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=self.y[index],
            targets=None if self.targets is None else self.targets[index],
            goal_met=lambda logits, rows: parent(logits, index[rows]),
            clean_logits=None if self.clean_logits is None else self.clean_logits[index],
            clean_gradient=None,
        )

    def met(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) bool: the goal holds for ``logits`` of this context's examples ``rows`` (all)."""
        if rows is None:
            rows = torch.arange(logits.shape[0], device=logits.device)
        return self.goal_met(logits, rows)

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-example loss to maximise."""
        return self.loss(logits, self.y, self.targets)

    @property
    def ball(self) -> LpBall:
        """The threat as an ℓp ball, for attacks whose ``supported_threats`` are ℓp balls only
        (the contract has checked that already)."""
        threat = self.threat
        if not threat.additive:
            raise TypeError(f"{threat} is not an ℓp ball")
        assert isinstance(threat, LpBall)  # narrows the type; `additive` is the ℓp balls' mark
        return threat


class _QueryCounter(nn.Module):
    """Wraps the model and counts single-example forward passes; adds no host sync."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += x.shape[0]
        return self.model(x)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- checks
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
    # One pass over x: the extremes are NaN or infinite exactly when some value is.
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("x contains NaN or infinite values")
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"x has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}): attacks take raw images "
            "in [0, 1]; put mean/std normalisation inside the model (multirobust.models.Normalize)"
        )


def check_model_inputs(model: nn.Module, x: torch.Tensor) -> None:
    """The inputs must have the dtype and device of the model's (floating) parameters.

    Raises ``ValueError`` saying which differs and how to convert, instead of the raw error
    torch would give from inside the first layer.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return
    if param.device != x.device:
        raise ValueError(
            f"The inputs are on {x.device} but the model is on {param.device}: move one of "
            f"them (x.to({str(param.device)!r}) or model.to({str(x.device)!r}))"
        )
    if param.dtype != x.dtype:
        raise ValueError(
            f"The inputs are {x.dtype} but the model's parameters are {param.dtype}: convert "
            f"one of them (x.to({param.dtype}) or model.to({x.dtype}))"
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


def check_labels(y: torch.Tensor, num_classes: int) -> None:
    """Labels must be classes 0..C−1 (−100, cross-entropy's "ignore" value, is not a label)."""
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        hint = (
            "; -100 is cross-entropy's ignore value, not a label: drop those examples"
            if lo == -100
            else ""
        )
        raise ValueError(
            f"Labels out of range: found {lo}..{hi}, the model has {num_classes} classes "
            f"(labels must be in 0..{num_classes - 1}{hint})"
        )


# ---------------------------------------------------------------------------- shared parts
@dataclass
class _Batch:
    """A batch checked and evaluated once at the clean inputs, with its goal resolved."""

    x: torch.Tensor
    y: torch.Tensor
    counter: _QueryCounter
    clean_logits: torch.Tensor
    goal: ResolvedGoal
    generator: torch.Generator
    #: (leaf input, output with its autograd graph) when the clean pass kept its graph.
    graph: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def todo(self) -> torch.Tensor:
        """Rows to attack: attacked by the goal and not meeting it already."""
        skip = self.goal.met(self.clean_logits) | ~self.goal.attacked()
        return (~skip).nonzero().flatten()

    def context(self, rows: torch.Tensor, threat: Threat, loss: losses.Loss) -> Context:
        goal = self.goal
        clean_gradient = None
        if self.graph is not None:
            leaf, out = self.graph
            targets = None if goal.targets is None else goal.targets[rows]

            def clean_gradient() -> torch.Tensor:
                value = loss(out[rows], self.y[rows], targets).sum()
                (grad,) = torch.autograd.grad(value, leaf)
                return grad[rows]

        return Context(
            model=self.counter,
            x=self.x[rows],
            y=self.y[rows],
            targets=None if goal.targets is None else goal.targets[rows],
            generator=self.generator,
            threat=threat,
            loss=loss,
            goal_met=lambda logits, r: goal.met(logits, rows[r]),
            counter=self.counter,
            threshold=goal.threshold,
            clean_logits=self.clean_logits[rows],
            clean_gradient=clean_gradient,
        )


def _begin(
    model: nn.Module,
    x: Any,
    y: Any,
    goal: Goal | None,
    targets: Any,
    generator: torch.Generator | None,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, Goal, torch.Generator]:
    """Argument checks shared by both contracts, before the model is touched."""
    the_goal = as_goal(goal, targets)
    validate_inputs(x, y)
    check_model_inputs(model, x)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    # No copy: nothing writes into x (the contract suite checks that inputs stay untouched).
    x = x.detach()
    y = y.detach().to(device=x.device, dtype=torch.long)
    return x, y, the_goal, generator


def _clean_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    goal: Goal,
    generator: torch.Generator,
    keep_graph: bool = False,
) -> _Batch:
    """The clean forward pass (model in attack mode): outputs and labels checked, goal resolved.

    With ``keep_graph`` the pass keeps its autograd graph, so that an attack whose first
    gradient is at ``x`` (FGSM) takes it from this pass instead of a second forward pass.
    """
    counter = _QueryCounter(model)
    graph = None
    if keep_graph:
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = counter(leaf)
        graph = (leaf, out)
        clean = out.detach()
    else:
        with torch.no_grad():
            clean = counter(x)
    check_logits(clean, x.shape[0])
    check_labels(y, clean.shape[1])
    return _Batch(x, y, counter, clean, goal.resolve(clean, y, generator), generator, graph)


def _supported_text(kinds: tuple[type[Threat], ...]) -> str:
    forms = [e.syntax for e in entries() if issubclass(e.cls, kinds)]
    return "supported: " + ", ".join(forms)


class _Configured(ABC):
    """What both contracts share: a frozen keyword-only config, validated once, with a final
    ``__call__``, a declared set of threat models and a default loss."""

    #: The registered name (set by ``@register``).
    name: ClassVar[str] = ""
    #: Threat-model classes this attack works under (checked once, here).
    supported_threats: ClassVar[tuple[type[Threat], ...]] = (LpBall,)
    #: Loss maximised when the attack's ``loss`` option is None (or it has none).
    default_loss: ClassVar[str] = "ce"

    seed: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__ and not cls.__dict__.get("_defines_contract", False):
            raise TypeError(
                f"{cls.__name__} defines __call__: the call is the contract's (attacks/base.py); "
                "an attack writes only _run"
            )

    def _check_config(self) -> None:
        check_nonneg_int("seed", self.seed)
        loss = getattr(self, "loss", None)
        if loss is not None:
            losses.get(loss)
        self._validate()

    def _validate(self) -> None:  # noqa: B027 - optional hook
        """Check subclass options; raise ValueError naming the bad one."""

    @classmethod
    def supports(cls, threat: Threat) -> bool:
        """Whether this attack can run under ``threat`` (a non-union threat model)."""
        # The one place an attack's declared kinds are matched against a threat object.
        return isinstance(threat, cls.supported_threats)

    @classmethod
    def supported_description(cls) -> str:
        return _supported_text(cls.supported_threats)

    @property
    def label(self) -> str:
        """The name shown in errors."""
        return self.name

    def _loss_fn(self) -> losses.Loss:
        """The loss to maximise: the ``loss`` option, else :attr:`default_loss`."""
        return losses.get(getattr(self, "loss", None) or self.default_loss)

    def with_options(self, **changes: Any) -> Any:
        """A copy with some options changed (attacks themselves are immutable)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# ---------------------------------------------------------------------------- fixed ε
@dataclass(frozen=True, kw_only=True)
class Attack(_Configured):
    """Base of the fixed-ε attacks: a frozen keyword-only config and one shared ``__call__``.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)``, declare ``supported_threats``
    when it is not "every ℓp ball", and implement ``_run``.

    Common options:
        threat: threat model (object or text such as ``"linf:0.3"``), never a union (use
            :func:`multirobust.attacks.create`, which wraps a union's members).
        seed: seed of the generator used when the caller passes none.
    """

    _defines_contract: ClassVar[bool] = True
    #: True only for wrappers that take a union (:class:`~.union.UnionAttack`).
    takes_unions: ClassVar[bool] = False

    threat: Threat | str
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "threat", parse(self.threat))  # type: ignore[arg-type]
        threat = self.threat_model
        if threat.members() != (threat,) and not self.takes_unions:
            raise ValueError(
                f"{type(self).__name__} attacks one threat model, got {threat}: build the "
                f"per-example worst case with attacks.create({self.name!r}, threat={str(threat)!r})"
            )
        if not self.takes_unions and not self._supports(threat):
            raise ValueError(
                f"Attack {self.name!r} does not support threat {threat}"
                f" ({self._supported_description()})"
            )
        self._check_config()

    def _supports(self, threat: Threat) -> bool:
        return self.supports(threat)

    def _supported_description(self) -> str:
        return self.supported_description()

    @property
    def threat_model(self) -> Threat:
        """The threat model as an object (``threat`` may have been given as text)."""
        assert isinstance(self.threat, Threat)
        return self.threat

    @final
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        goal: Goal | None = None,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` at inputs ``x`` (N, ...) in [0, 1] with true labels ``y`` (N,).

        Args:
            goal: the adversary's goal (:mod:`multirobust.attacks.goals`); untargeted if None.
            targets: a (N,) tensor of target classes, shorthand for ``goal=Targeted(targets)``.
            generator: source of all randomness; a generator seeded with ``seed`` when None.
        """
        x, y, the_goal, generator = _begin(model, x, y, goal, targets, generator, self.seed)
        with attack_mode(model):
            keep = self._wants_clean_gradient()
            return self._attack(_clean_pass(model, x, y, the_goal, generator, keep))

    def _wants_clean_gradient(self) -> bool:
        """True for attacks whose first gradient is taken at the clean input: the contract then
        keeps the clean pass's graph and offers ``ctx.clean_gradient``."""
        return False

    def _attack(self, batch: _Batch) -> AttackResult:
        threat = self.threat_model
        x, y, n = batch.x, batch.y, batch.x.shape[0]
        loss_fn = self._loss_fn()
        x_adv, logits = x.clone(), batch.clean_logits.clone()
        params: ThreatParams | None = None
        todo = batch.todo
        if todo.numel() and not threat.is_trivial:
            ctx = batch.context(todo, threat, loss_fn)
            cand, found_params = self._run(ctx)
            cand = threat.project(cand, ctx.x, found_params)
            with torch.no_grad():
                cand_logits = batch.counter(cand)
            x_adv[todo] = cand
            # The candidates' own forward pass gives the result's logits: the examples left
            # alone keep their clean logits, so no second pass over the batch is needed.
            logits[todo] = cand_logits
            params = place_params(found_params, todo, n)
        goal = batch.goal
        success = goal.met(logits) & goal.attacked()
        inside = threat.contains(x_adv, x, atol=1e-4, params=params)
        if not bool(inside.all()):
            raise ThreatViolation(self.label, str(threat), int((~inside).sum()))
        return AttackResult(
            x_adv=x_adv,
            success=success,
            loss=loss_fn(logits, y, goal.targets),
            norm=threat.norm(x_adv - x, params),
            logits=logits,
            queries=batch.counter.count,
            params=params,
        )

    @abstractmethod
    def _run(self, ctx: Context) -> tuple[torch.Tensor, ThreatParams | None]:
        """Attack the examples of ``ctx`` under ``ctx.threat`` (never a union).

        Returns:
            ``(x_adv, params)``; ``params`` is None for ℓp threats.
        """


# ---------------------------------------------------------------------------- minimum norm
@dataclass(frozen=True, kw_only=True)
class MinimumNormAttack(_Configured):
    """Base of the minimum-norm attacks (DeepFool, Carlini–Wagner, the minimal-distortion
    search): per example, the smallest perturbation in one norm that meets the goal.

    No radius is given: ``_run`` sees ``ctx.threat``, the ball of the attack's norm that
    contains the whole box (no perturbation in [0, 1] exceeds it). ``_run`` returns
    ``(points, found)``: per example the smallest adversarial input found where ``found``, and
    otherwise its best effort (used when the attack is asked for a fixed budget; see
    :class:`~.budget.WithinBudget`). A minimum-norm attack declares exactly one ℓp ball kind in
    ``supported_threats`` (or overrides :meth:`geometry`).
    """

    _defines_contract: ClassVar[bool] = True
    default_loss: ClassVar[str] = "margin"
    #: Relative cost per example; searches that combine minimum-norm attacks run cheap ones first.
    cost: ClassVar[int] = 1

    seed: int = 0

    def __post_init__(self) -> None:
        self._check_config()

    def geometry(self) -> type[LpBall]:
        """The ℓp ball class whose norm this attack minimises."""
        kind = self.supported_threats[0]
        assert issubclass(kind, LpBall)
        return kind

    def ball_for(self, x: torch.Tensor) -> LpBall:
        """The ball of :meth:`geometry` around inputs like ``x`` that contains the whole box."""
        return self.geometry()(self.geometry().box_diameter(int(x[0].numel())))

    @final
    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        goal: Goal | None = None,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MinimumNormResult:
        """The smallest perturbation of each ``x`` (N, ...) in [0, 1] meeting the goal.

        Args:
            goal: the adversary's goal; untargeted if None.
            targets: a (N,) tensor of target classes, shorthand for ``goal=Targeted(targets)``.
            generator: source of all randomness; a generator seeded with ``seed`` when None.
        """
        x, y, the_goal, generator = _begin(model, x, y, goal, targets, generator, self.seed)
        with attack_mode(model):
            return self._minimise(_clean_pass(model, x, y, the_goal, generator))

    def _minimise(self, batch: _Batch) -> MinimumNormResult:
        x, goal = batch.x, batch.goal
        ball = self.ball_for(x)
        x_adv, logits = x.clone(), batch.clean_logits.clone()
        found = goal.met(logits) & goal.attacked()
        todo = batch.todo
        if todo.numel():
            ctx = batch.context(todo, ball, self._loss_fn())
            points, hit = self._run(ctx)
            with torch.no_grad():
                cand_logits = batch.counter(points)
            # Only what the model confirms counts: a success must survive this forward pass.
            ok = hit & goal.met(cand_logits, todo)
            rows = todo[ok]
            x_adv[rows] = points[ok]
            logits[rows] = cand_logits[ok]
            found[todo] = ok
        outside = ~in_box(x_adv, atol=1e-4)
        if bool(outside.any()):
            raise ThreatViolation(self.label, "the box [0, 1]", int(outside.sum()))
        distance = torch.where(
            found, ball.norm(x_adv - x), torch.full_like(found, math.inf, dtype=x.dtype)
        )
        return MinimumNormResult(
            x_adv=x_adv,
            found=found,
            distance=distance,
            logits=logits,
            queries=batch.counter.count,
            norm=ball.name,
        )

    @abstractmethod
    def _run(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """Search the examples of ``ctx``. Returns ``(points, found)``: the smallest adversarial
        input found where ``found`` (N,) is True, the best effort elsewhere."""
