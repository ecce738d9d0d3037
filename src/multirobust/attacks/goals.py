"""The adversary's goal: one object passed to every attack's call, never a string or a sentinel.

    attack(model, x, y)                                        # Untargeted(): any other class
    attack(model, x, y, goal=Targeted(t))                      # class t[i] for example i
    attack(model, x, y, targets=t)                             # the same, shorter
    attack(model, x, y, goal=RandomTarget())                   # a random other class each
    attack(model, x, y, goal=LeastLikely())                    # the least likely clean class
    attack(model, x, y, goal=SourceToTarget(3, 8))             # only 3s, each to an 8
    attack(model, x, y, goal=ReduceConfidence(0.2))            # p(true class) below 0.2

A goal is resolved once per batch against the clean logits (random targets draw from the call's
generator) into a :class:`ResolvedGoal`: per-example targets (or none), which examples are
attacked at all, and the test ``met(logits)`` that decides success everywhere in the contract.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

GoalFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ResolvedGoal:
    """A goal for one batch of N examples.

    Attributes:
        y: (N,) true labels.
        targets: (N,) target classes of a targeted goal, else None.
        active: (N,) bool, the examples the adversary attacks (all but the non-source examples
            of a source→target goal); an inactive example is never a success.
        threshold: for confidence reduction, the probability the true class must fall below.
    """

    y: torch.Tensor
    targets: torch.Tensor | None = None
    active: torch.Tensor | None = None
    threshold: float | None = None

    @property
    def decision(self) -> bool:
        """Success is a change of the predicted class (untargeted or targeted), so a margin on
        the logits can only tighten it; False for confidence reduction."""
        return self.threshold is None

    def met(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) bool: the goal holds for ``logits`` (n, C) of the examples ``rows`` (all)."""
        y = self.y if rows is None else self.y[rows]
        if self.targets is not None:
            t = self.targets if rows is None else self.targets[rows]
            return logits.argmax(1) == t
        if self.threshold is not None:
            return logits.softmax(1).gather(1, y.unsqueeze(1)).squeeze(1) < self.threshold
        return logits.argmax(1) != y

    def attacked(self) -> torch.Tensor:
        """(N,) bool: ``active``, all True when every example is attacked."""
        if self.active is None:
            return torch.ones_like(self.y, dtype=torch.bool)
        return self.active


class Goal(ABC):
    """What the adversary wants; resolved per batch by :meth:`resolve`."""

    @abstractmethod
    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        """The goal for a batch with clean logits (N, C) and labels (N,)."""


@dataclass(frozen=True)
class Untargeted(Goal):
    """Misclassification: the model predicts any class other than the true one."""

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        return ResolvedGoal(y)


@dataclass(frozen=True, eq=False)
class Targeted(Goal):
    """The model predicts ``targets[i]`` for example ``i``; ``targets`` (N,) integer classes,
    each different from the true label."""

    targets: torch.Tensor = field(repr=False)

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        n, num_classes = clean_logits.shape
        t = self.targets
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"targets must be a tensor of classes, got {type(t).__name__}")
        if t.dim() != 1 or t.shape[0] != n or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(
                f"targets must be integer class indices of shape ({n},), got "
                f"{t.dtype} {tuple(t.shape)}"
            )
        t = t.to(device=y.device, dtype=torch.long)
        if int(t.min()) < 0:
            raise ValueError(
                f"Targets out of range: min {int(t.min())} (targets are classes 0.."
                f"{num_classes - 1}; to attack only some examples use goal=SourceToTarget(...))"
            )
        if int(t.max()) >= num_classes:
            raise ValueError(
                f"Targets out of range: max {int(t.max())}, the model has {num_classes} classes"
            )
        if bool((t == y).any()):
            raise ValueError("Some targets equal the true label; a target must be another class")
        return ResolvedGoal(y, targets=t)


@dataclass(frozen=True)
class RandomTarget(Goal):
    """A target drawn uniformly among the classes other than the true one, per example, from
    the call's generator."""

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        n, num_classes = clean_logits.shape
        # Uniform over the classes other than y: draw from C−1 and skip over y.
        r = torch.randint(0, num_classes - 1, (n,), generator=generator, device=y.device)
        return ResolvedGoal(y, targets=r + (r >= y).long())


@dataclass(frozen=True)
class LeastLikely(Goal):
    """The class with the lowest clean logit is the target (Kurakin et al. 2017); the lowest
    other than the true class, for the rare misclassified example whose true class is lowest."""

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        others = clean_logits.scatter(1, y.unsqueeze(1), float("inf"))
        return ResolvedGoal(y, targets=others.argmin(1))


@dataclass(frozen=True)
class SourceToTarget(Goal):
    """Examples of class ``source`` are pushed to class ``target``; the others are left alone
    (returned unchanged, never a success)."""

    source: int
    target: int

    def __post_init__(self) -> None:
        for label, value in (("source", self.source), ("target", self.target)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Invalid {label}: {value!r} (must be a class index >= 0)")
        if self.source == self.target:
            raise ValueError("source and target classes must differ")

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        num_classes = clean_logits.shape[1]
        for label, value in (("source", self.source), ("target", self.target)):
            if value >= num_classes:
                raise ValueError(f"Invalid {label}: {value} (the model has {num_classes} classes)")
        targets = torch.full_like(y, self.target)
        return ResolvedGoal(y, targets=targets, active=y == self.source)


@dataclass(frozen=True)
class ReduceConfidence(Goal):
    """The probability of the true class falls below ``threshold`` (in (0, 1])."""

    threshold: float = 0.5

    def __post_init__(self) -> None:
        ok = isinstance(self.threshold, int | float) and not isinstance(self.threshold, bool)
        if not ok or not math.isfinite(self.threshold) or not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"Invalid threshold: {self.threshold!r} (must be in (0, 1])")

    def resolve(
        self, clean_logits: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> ResolvedGoal:
        return ResolvedGoal(y, threshold=float(self.threshold))


GOALS: tuple[type[Goal], ...] = (
    Untargeted,
    Targeted,
    RandomTarget,
    LeastLikely,
    SourceToTarget,
    ReduceConfidence,
)


def as_goal(goal: Goal | None, targets: object) -> Goal:
    """The goal of a call from its ``goal`` and ``targets`` arguments (a tensor of targets is
    shorthand for ``Targeted(targets)``)."""
    values = ", ".join(g.__name__ for g in GOALS)
    if targets is not None:
        if goal is not None:
            raise ValueError("Pass either goal= or targets= (a tensor is Targeted(targets))")
        if isinstance(targets, str):
            raise ValueError(
                f"Invalid targets: {targets!r} (targets is a tensor of classes; for random or "
                "least-likely targets pass goal=attacks.RandomTarget() or "
                f"goal=attacks.LeastLikely(); the goals are {values})"
            )
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a tensor of classes, got {type(targets).__name__}")
        return Targeted(targets)
    if goal is None:
        return Untargeted()
    if not isinstance(goal, Goal):
        raise TypeError(f"goal must be a Goal ({values} from multirobust.attacks), got {goal!r}")
    return goal
