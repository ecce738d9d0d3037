"""The threat-model contract: a set of allowed perturbed inputs around each clean input.

Attacks never branch on a norm name; they ask the threat model for its geometry. Inputs live in
the box [0, 1] (``BOX``); every projection is onto the threat set intersected with that box.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

BOX: tuple[float, float] = (0.0, 1.0)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """View a batch as (N, D)."""
    return t.reshape(t.shape[0], -1)


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example vector (N,) so that it broadcasts against ``like`` (N, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


class Threat(ABC):
    """A threat model: the set of inputs an adversary may present instead of a clean input ``x``.

    Subclasses describe additive perturbation sets (``LpBall``) or transformations (``Spatial``);
    containers (``Union``, ``Affine``) combine them.
    """

    #: True for threats whose members are ``x + delta`` with ``delta`` in a set (ℓp balls).
    additive: bool = False

    @abstractmethod
    def __str__(self) -> str:
        """Text form, parseable by :func:`multirobust.threats.parse`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Threat) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def is_trivial(self) -> bool:
        """True when the only allowed input is ``x`` itself (ε = 0)."""
        return False

    @abstractmethod
    def contains(
        self,
        x_adv: torch.Tensor,
        x: torch.Tensor,
        atol: float = 1e-5,
        params: object | None = None,
    ) -> torch.Tensor:
        """Per-example boolean (N,): is ``x_adv`` an allowed input for clean ``x``?

        Args:
            x_adv: candidate inputs, shape (N, ...).
            x: clean inputs, same shape.
            atol: tolerance on the norm bound and the box.
            params: attack parameters that certify membership where the set cannot be tested
                from the images alone (spatial angles and shifts; affine decompositions).
        """

    def in_box(self, x_adv: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Per-example boolean (N,): all values within the input box, up to ``atol``."""
        lo, hi = BOX
        flat = _flat(x_adv)
        return (flat >= lo - atol).all(dim=1) & (flat <= hi + atol).all(dim=1)
