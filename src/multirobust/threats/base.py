"""The threat-model contract: the set of allowed perturbed inputs around each clean input.

A threat model is the whole geometry of its set, so attacks, evaluation and reports never branch
on a threat's class or a norm's name; they ask the threat object. Every threat answers:

- ``contains(x_adv, x, atol, params)`` — per-example membership;
- ``project(x_adv, x, params)`` — the allowed input nearest to ``x_adv`` (exact Euclidean projection
  onto ball ∩ box for ℓp balls; the member that ``params`` describe for parameterised sets);
- ``random_init(x, generator)`` and ``sample(x, generator)`` — a random member (``sample`` also
  returns the parameters that certify it);
- ``steepest_ascent(grad, x_adv)`` — the unit direction of steepest ascent, where the set has one;
- ``norm(delta, params)`` — the size of a perturbation in the threat's own norm (NaN where the set
  has none);
- ``params_row(params, i)`` and ``largest(norms, rows)`` — what a report shows per example and
  for the largest perturbation;
- ``members()`` — the threats an adversary chooses from per example (a union's members, else
  the threat itself).

Inputs live in the box [0, 1] (``BOX``); every projection is onto the set intersected with it.
Parameterised threats (spatial, affine, unions) describe a member by typed parameters, one
class per family (:class:`SpatialParams`, :class:`AffineParams`, :class:`UnionParams`);
ℓp balls need none (``None``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch

BOX: tuple[float, float] = (0.0, 1.0)

P = TypeVar("P", bound="ThreatParams")


def flat(t: torch.Tensor) -> torch.Tensor:
    """View a batch as (N, D)."""
    return t.reshape(t.shape[0], -1)


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example vector (N,) so that it broadcasts against ``like`` (N, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


# Older spellings, kept for modules that import them.
_flat = flat
_per_example = per_example


def movable_in_box(grad: torch.Tensor, x_adv: torch.Tensor | None) -> torch.Tensor:
    """Zero the coordinates of ``grad`` where the box blocks the move along +grad at ``x_adv``.

    A coordinate at 0 whose gradient points down (or at 1, up) cannot follow it; steps that
    ignore this spend part of their length where the clip undoes it.
    """
    if x_adv is None:
        return grad
    lo, hi = BOX
    blocked = ((x_adv <= lo) & (grad < 0)) | ((x_adv >= hi) & (grad > 0))
    return grad.masked_fill(blocked, 0.0)


def in_box(x_adv: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    """Per-example boolean (N,): all values within the input box, up to ``atol``."""
    lo, hi = BOX
    values = flat(x_adv)
    return (values >= lo - atol).all(dim=1) & (values <= hi + atol).all(dim=1)


class ThreatParams(ABC):
    """Parameters certifying that an input belongs to a parameterised threat, per example.

    Every family has its own subclass. Rows are examples; the attack contract uses ``select``
    and ``place`` to move a sub-batch's parameters into the whole batch.
    """

    @abstractmethod
    def select(self: P, rows: torch.Tensor) -> P:
        """The parameters of the examples at ``rows``."""

    @abstractmethod
    def place(self: P, rows: torch.Tensor, n: int) -> P:
        """A batch of ``n`` examples holding these parameters at ``rows`` and the identity
        (the clean input) everywhere else."""

    def member_index(self) -> torch.Tensor | None:
        """For a union, which member each example is in (N,); None otherwise."""
        return None


def select_params(params: ThreatParams | None, rows: torch.Tensor) -> ThreatParams | None:
    """``params.select(rows)``, passing ``None`` (ℓp balls) through."""
    return None if params is None else params.select(rows)


def place_params(params: ThreatParams | None, rows: torch.Tensor, n: int) -> ThreatParams | None:
    """``params.place(rows, n)``, passing ``None`` (ℓp balls) through."""
    return None if params is None else params.place(rows, n)


class ThreatViolation(RuntimeError):
    """An attack returned inputs outside its threat model (a bug in the attack).

    Attributes:
        attack: the attack's name.
        threat: the threat model, as text.
        count: how many examples were outside.
    """

    def __init__(self, attack: str, threat: str, count: int) -> None:
        super().__init__(
            f"Attack {attack!r} returned {count} example(s) outside {threat}: "
            "this is a bug in the attack"
        )
        self.attack = attack
        self.threat = threat
        self.count = count


class Threat(ABC):
    """A threat model: the set of inputs an adversary may present instead of a clean input ``x``.

    Subclasses are ℓp balls (``LpBall``), transformations (``Spatial``) and combinations
    (``Union``, ``Affine``). A new kind of threat is one file with a subclass and one
    ``register(...)`` line in :mod:`multirobust.threats`.
    """

    #: The registry name (``"linf"``, ``"spatial"``...), set by :func:`.registry.register`.
    name: ClassVar[str] = ""
    #: Text form, shown by ``multirobust list`` and in parse errors, e.g. ``"linf:EPS"``.
    syntax: ClassVar[str] = ""
    #: True for ℓp balls: members are ``x + delta`` with ``delta`` in a ball, no parameters.
    additive: ClassVar[bool] = False

    # ------------------------------------------------------------------ text
    @abstractmethod
    def __str__(self) -> str:
        """Text form, parseable by :func:`multirobust.threats.parse`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Threat) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @classmethod
    def from_text(cls, args: str, where: str) -> Threat:
        """Build from the text after ``name:`` (``where`` is the whole text, for errors)."""
        raise ValueError(f"Invalid threat {where!r}: {cls.name} is written {cls.syntax}")

    @classmethod
    def from_members(cls, members: list[Threat], where: str) -> Threat:
        """Build from the threats listed inside ``name(...)`` (containers only)."""
        raise ValueError(f"Invalid threat {where!r}: {cls.name} is written {cls.syntax}")

    # ------------------------------------------------------------------ structure
    @property
    def is_trivial(self) -> bool:
        """True when the only allowed input is ``x`` itself (ε = 0)."""
        return False

    def members(self) -> tuple[Threat, ...]:
        """The threat models an adversary picks from per example: ``(self,)`` except for unions."""
        return (self,)

    def subsets(self) -> tuple[Threat, ...]:
        """Threat models wholly contained in this one (an example broken under one of them is
        broken under this one): none by default; an affine set's two members (λ = 1, λ = 0)."""
        return ()

    # ------------------------------------------------------------------ geometry
    @abstractmethod
    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: ThreatParams | None = None,
    ) -> torch.Tensor:
        """Per-example boolean (N,): is ``x_adv`` an allowed input for clean ``x``?

        Args:
            x_adv: candidate inputs, shape (N, ...).
            x: clean inputs, same shape.
            atol: tolerance on the bounds and the box.
            params: parameters certifying membership where the set cannot be tested from the
                images alone (spatial angles and shifts; affine decompositions).
        """

    @abstractmethod
    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, params: ThreatParams | None = None
    ) -> torch.Tensor:
        """The allowed input nearest to ``x_adv``.

        ℓp balls: the exact Euclidean projection onto ball ∩ box (``params`` unused).
        Parameterised threats: the member that ``params`` describe, with the parameters first
        clipped to their ranges; they raise ``ValueError`` without ``params``.

        Shape: x_adv, x (N, ...) -> (N, ...), dtype of ``x_adv``.
        """

    @abstractmethod
    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ThreatParams | None]:
        """A random member of the set around each ``x`` and the parameters certifying it."""

    def random_init(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random allowed input around each ``x`` (the first half of :meth:`sample`)."""
        return self.sample(x, generator)[0]

    def steepest_ascent(
        self, grad: torch.Tensor, x_adv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit direction maximising ⟨grad, d⟩ over the unit ball of the threat's norm.

        Raises:
            NotImplementedError: for threats without a norm (spatial, affine, unions).
        """
        raise NotImplementedError(f"Threat {self} has no steepest-ascent direction")

    def norm(self, delta: torch.Tensor, params: ThreatParams | None = None) -> torch.Tensor:
        """Per-example size (N,) of ``delta`` in the threat's norm; NaN where it has none."""
        return torch.full((delta.shape[0],), math.nan, device=delta.device, dtype=delta.dtype)

    # ------------------------------------------------------------------ reports
    def params_row(self, params: ThreatParams | None, index: int) -> list[float] | None:
        """The parameters of example ``index`` as a JSON-ready row (None where there are none)."""
        return None

    def largest(
        self, norms: Sequence[float | None], rows: Sequence[list[float] | None]
    ) -> dict[str, float]:
        """The largest perturbation among reported examples, by name: ``{"norm": 0.3}`` for ℓp
        balls, ``{"rotation": 29.5, "translation": 3.0}`` for spatial threats; empty if none."""
        values = [v for v in norms if v is not None and not math.isnan(v)]
        return {"norm": max(values)} if values else {}

    def in_box(self, x_adv: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Per-example boolean (N,): all values within the input box, up to ``atol``."""
        return in_box(x_adv, atol)


def require_params(threat: Threat, params: Any, kind: type[ThreatParams]) -> Any:
    """``params`` checked to be ``kind`` (for parameterised threats' methods)."""
    if not isinstance(params, kind):
        got = "none" if params is None else type(params).__name__
        raise ValueError(f"Threat {threat} needs {kind.__name__} here, got {got}")
    return params
