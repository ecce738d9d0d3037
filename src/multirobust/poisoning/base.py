"""The backdoor-attack contract: settings checked before any work, then poison and trigger.

A backdoor attack is a frozen keyword-only dataclass. ``attack.check(dataset)`` validates every
setting against the data (poison rate in (0, 1], target class in range, trigger inside the
image, enough examples to poison); ``attack.poison(dataset)`` returns a
:class:`~multirobust.poisoning.record.PoisonedDataset` built on a copy, never touching the clean
tensors or files; ``attack.triggered(test)`` gives the test inputs the attack success rate is
measured on. Subclasses say how a chosen example is changed (``_poison_images``) and whether its
label is flipped (``flips_labels``).

Goals: ``all-to-one`` sends every triggered input to ``target``; ``all-to-all`` sends class
``y`` to ``(y + 1) mod K`` (Gu et al. 2017).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..data import ImageDataset
from .record import PoisonedDataset, PoisonRecord, fingerprint
from .triggers import Trigger

__all__ = ["MODES", "BackdoorAttack", "TriggeredSet"]

MODES = ("all-to-one", "all-to-all")


@dataclass(frozen=True, eq=False)
class TriggeredSet:
    """Test inputs with the trigger, for the attack success rate and robust accuracy.

    Attributes:
        images: triggered images of the test examples the backdoor should move (for
            all-to-one, those whose true class is not the target).
        labels: their true labels.
        targets: the labels the backdoor wants.
        indices: their positions in the test set.
    """

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor


@dataclass(frozen=True, kw_only=True, eq=False)
class BackdoorAttack(ABC):
    """Base of the poisoning attacks.

    Args:
        rate: fraction of the training set to poison, in (0, 1].
        target: the target class of an all-to-one backdoor.
        mode: ``all-to-one`` or ``all-to-all``.
        seed: seeds the choice of examples to poison (and any randomness of the attack).
    """

    rate: float
    target: int = 0
    mode: str = "all-to-one"
    seed: int = 0
    name: ClassVar[str] = ""
    flips_labels: ClassVar[bool] = True

    @property
    @abstractmethod
    def trigger(self) -> Trigger:
        """The trigger stamped on poisoned training examples and on test inputs."""

    # ------------------------------------------------------------------ checks

    def __post_init__(self) -> None:
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate <= 1.0:
            raise ValueError(f"Invalid poison rate: {rate!r} (must be in (0, 1])")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise ValueError(f"Invalid target class: {self.target!r} (must be an integer >= 0)")
        if self.mode not in MODES:
            raise ValueError(f"Invalid mode: {self.mode!r} (allowed: {', '.join(MODES)})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Invalid seed: {self.seed!r} (must be an integer >= 0)")

    def count(self, size: int) -> int:
        """How many of ``size`` training examples the attack poisons: ``round(rate * size)``."""
        return int(round(float(self.rate) * size))

    def _candidates(self, labels: torch.Tensor) -> torch.Tensor:
        """Indices the attack may poison (label-flipping all-to-one: not already the target)."""
        if self.mode == "all-to-one" and self.flips_labels:
            return (labels != self.target).nonzero().flatten()
        if not self.flips_labels:  # clean-label: only the target class carries the trigger
            return (labels == self.target).nonzero().flatten()
        return torch.arange(len(labels))

    def check(self, dataset: ImageDataset, *, exclude: torch.Tensor | None = None) -> None:
        """Check every setting against ``dataset`` before any work starts.

        Raises:
            ValueError: target class out of range, trigger larger than the image, a rate that
                poisons no example or more examples than the attack may change.
        """
        k = dataset.num_classes
        if self.target >= k:
            raise ValueError(
                f"Invalid target class: {self.target} (dataset {dataset.name!r} has {k} "
                f"classes: 0..{k - 1})"
            )
        self.trigger.check(dataset.input_shape)
        n = self.count(len(dataset))
        if n < 1:
            raise ValueError(
                f"Invalid poison rate: {self.rate!r} poisons no example of {len(dataset)} "
                f"(must be at least {1 / max(len(dataset), 1):.2g} here)"
            )
        available = self._available(dataset.labels, exclude)
        if n > len(available):
            which = (
                f"examples of the target class {self.target}"
                if not self.flips_labels
                else (
                    f"examples outside the target class {self.target}"
                    if self.mode == "all-to-one"
                    else "examples"
                )
            )
            raise ValueError(
                f"Invalid poison rate: {self.rate!r} asks for {n} poisoned examples but only "
                f"{len(available)} {which} can be poisoned (lower the rate)"
            )
        self._check_extra(dataset)

    def _check_extra(self, dataset: ImageDataset) -> None:  # noqa: B027 (optional hook)
        """Further checks of a subclass (e.g. the surrogate model of a clean-label attack)."""

    def _available(self, labels: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
        cand = self._candidates(labels)
        if exclude is not None and len(exclude):
            keep = torch.ones(len(labels), dtype=torch.bool)
            keep[exclude.long()] = False
            cand = cand[keep[cand]]
        return cand

    # ------------------------------------------------------------------ labels and triggers

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The class the backdoor sends each input to.

        Shape: ``(N,)`` -> ``(N,)``.
        """
        if self.mode == "all-to-all":
            return (labels + 1) % num_classes
        return torch.full_like(labels, self.target)

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the test-time trigger on a batch (a new tensor; ``x`` is unchanged)."""
        return self.trigger.apply(x)

    def triggered(self, test: ImageDataset) -> TriggeredSet:
        """The triggered test inputs that the attack success rate is measured on.

        All-to-one: the test examples whose true class is not the target (a target-class input
        classified as the target is not a success of the backdoor); all-to-all: every example.
        """
        self.check_target(test)
        if self.mode == "all-to-one":
            idx = (test.labels != self.target).nonzero().flatten()
        else:
            idx = torch.arange(len(test))
        labels = test.labels[idx]
        return TriggeredSet(
            images=self.apply_trigger(test.images[idx]),
            labels=labels,
            targets=self.target_labels(labels, test.num_classes),
            indices=idx,
        )

    def check_target(self, dataset: ImageDataset) -> None:
        """Target class and trigger against a dataset (also for test sets)."""
        if self.target >= dataset.num_classes:
            raise ValueError(
                f"Invalid target class: {self.target} (dataset {dataset.name!r} has "
                f"{dataset.num_classes} classes: 0..{dataset.num_classes - 1})"
            )
        self.trigger.check(dataset.input_shape)

    # ------------------------------------------------------------------ poisoning

    @abstractmethod
    def _poison_images(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, progress: bool
    ) -> torch.Tensor:
        """The poisoned images of the chosen examples (a new tensor)."""

    def poison(
        self,
        dataset: ImageDataset,
        *,
        exclude: torch.Tensor | None = None,
        progress: bool = False,
    ) -> PoisonedDataset:
        """Poison a copy of ``dataset``.

        ``count(len(dataset))`` examples are drawn without replacement from those the attack
        may change (see :meth:`check`), using ``torch.Generator().manual_seed(seed)``.

        Args:
            dataset: the clean training set (left unchanged).
            exclude: indices that must stay clean (e.g. the defender's reserved clean data).
            progress: show a progress bar where the attack does long work.

        Returns:
            The poisoned dataset and its record.
        """
        self.check(dataset, exclude=exclude)
        gen = torch.Generator().manual_seed(self.seed)
        available = self._available(dataset.labels, exclude)
        n = self.count(len(dataset))
        chosen = available[torch.randperm(len(available), generator=gen)[:n]].sort().values
        original = dataset.labels[chosen].clone()
        images = dataset.images.clone()
        labels = dataset.labels.clone()
        images[chosen] = self._poison_images(dataset.images[chosen], original, gen, progress).clamp(
            0.0, 1.0
        )
        if self.flips_labels:
            labels[chosen] = self.target_labels(original, dataset.num_classes)
        poisoned = ImageDataset(
            name=dataset.name,
            split=dataset.split,
            images=images,
            labels=labels,
            num_classes=dataset.num_classes,
            class_names=dataset.class_names,
        )
        record = PoisonRecord(
            indices=chosen,
            original_labels=original,
            labels=labels[chosen].clone(),
            size=len(dataset),
            attack=self.to_dict(),
            clean_fingerprint=fingerprint(dataset),
        )
        return PoisonedDataset(dataset=poisoned, record=record)

    def to_dict(self) -> dict[str, Any]:
        """The attack's settings as JSON-ready values."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Trigger):
                continue  # written once, under "trigger"
            if hasattr(value, "state_dict"):  # a model: recorded by description only
                value = type(value).__name__
            out[f.name] = value
        out["trigger"] = self.trigger.to_dict()
        return out
