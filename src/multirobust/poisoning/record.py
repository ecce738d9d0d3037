"""A poisoned dataset: an ordinary `ImageDataset` plus the record of what was poisoned.

The dataset trains like any other (``training.fit(config, train=poisoned.dataset)``); the record
says which examples were changed, their original labels and the labels they now carry, which
is what detectors are scored against. Saving writes only the changed images beside a JSON record
(``poison.json`` and ``poison.safetensors`` in the run folder) together with a fingerprint of
the clean data, so loading refuses a record made from other data. The clean dataset and its
files are never modified.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .. import atomic
from ..data import ImageDataset

__all__ = ["PoisonRecord", "PoisonedDataset", "fingerprint"]

RECORD = "poison.json"
TENSORS = "poison.safetensors"


def fingerprint(dataset: ImageDataset) -> str:
    """SHA-256 of a dataset's images and labels (hex), to tie a record to its clean data."""
    h = hashlib.sha256()
    h.update(str(tuple(dataset.images.shape)).encode())
    h.update(dataset.images.detach().cpu().contiguous().numpy().tobytes())
    h.update(dataset.labels.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class PoisonRecord:
    """Which training examples were poisoned, and how.

    Attributes:
        indices: positions of the poisoned examples in the dataset, ascending (int64).
        original_labels: their labels before poisoning (int64).
        labels: the labels they carry now (equal to the originals for clean-label attacks).
        size: number of examples in the whole dataset.
        attack: the attack's settings (``BackdoorAttack.to_dict()``).
        clean_fingerprint: :func:`fingerprint` of the clean dataset.

    Shape:
        indices, original_labels, labels: ``(P,)``.
    """

    indices: torch.Tensor
    original_labels: torch.Tensor
    labels: torch.Tensor
    size: int
    attack: dict[str, Any]
    clean_fingerprint: str

    @property
    def mask(self) -> torch.Tensor:
        """``(size,)`` bool, True at the poisoned examples."""
        m = torch.zeros(self.size, dtype=torch.bool)
        m[self.indices] = True
        return m

    @property
    def rate(self) -> float:
        """Fraction of the dataset that was poisoned."""
        return len(self.indices) / max(self.size, 1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (counts, not the indices)."""
        return {
            "attack": self.attack,
            "size": self.size,
            "poisoned": len(self.indices),
            "rate": self.rate,
            "label_changed": int((self.labels != self.original_labels).sum()),
            "clean_fingerprint": self.clean_fingerprint,
        }


@dataclass(frozen=True, eq=False)
class PoisonedDataset:
    """A poisoned training set and its :class:`PoisonRecord`.

    Attributes:
        dataset: the poisoned examples in place of the clean ones; everything else is shared
            in value (not in memory) with the clean dataset.
        record: what was poisoned.
    """

    dataset: ImageDataset
    record: PoisonRecord

    def save(self, folder: str | Path) -> None:
        """Write ``poison.json`` and ``poison.safetensors`` (the changed images) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rec = self.record
        tensors = {
            "indices": rec.indices.contiguous(),
            "original_labels": rec.original_labels.contiguous(),
            "labels": rec.labels.contiguous(),
            "images": self.dataset.images[rec.indices].contiguous(),
        }
        atomic.write_bytes_atomic(folder / TENSORS, safetensors_bytes(tensors))
        atomic.write_json_atomic(
            folder / RECORD,
            {**rec.summary(), "dataset": self.dataset.name, "split": self.dataset.split},
        )

    @classmethod
    def load(cls, folder: str | Path, clean: ImageDataset) -> PoisonedDataset:
        """Rebuild a poisoned dataset saved by :meth:`save` from the clean data it was made of.

        Raises:
            FileNotFoundError: when the folder holds no record.
            ValueError: when ``clean`` is not the data the record was made from.
        """
        folder = Path(folder)
        if not (folder / RECORD).is_file() or not (folder / TENSORS).is_file():
            raise FileNotFoundError(
                f"No poisoned dataset in {folder} (expected {RECORD} and {TENSORS})"
            )
        meta = json.loads((folder / RECORD).read_text())
        if meta["size"] != len(clean) or meta["clean_fingerprint"] != fingerprint(clean):
            raise ValueError(
                f"The record in {folder} was made from other data ({meta['size']} examples of "
                f"{meta.get('dataset')!r} {meta.get('split')!r}, fingerprint "
                f"{meta['clean_fingerprint'][:12]}...), not from this {clean.name!r} "
                f"{clean.split!r} set of {len(clean)}"
            )
        t = load_file(str(folder / TENSORS))
        images = clean.images.clone()
        labels = clean.labels.clone()
        images[t["indices"]] = t["images"]
        labels[t["indices"]] = t["labels"]
        record = PoisonRecord(
            indices=t["indices"],
            original_labels=t["original_labels"],
            labels=t["labels"],
            size=len(clean),
            attack=meta["attack"],
            clean_fingerprint=meta["clean_fingerprint"],
        )
        dataset = ImageDataset(
            name=clean.name,
            split=clean.split,
            images=images,
            labels=labels,
            num_classes=clean.num_classes,
            class_names=clean.class_names,
        )
        return cls(dataset=dataset, record=record)
