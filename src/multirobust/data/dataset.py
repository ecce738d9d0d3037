"""`ImageDataset`: a labelled set of images held in memory as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["ImageDataset"]


@dataclass(frozen=True, eq=False)
class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images in [0, 1] and their labels, in memory; a `torch.utils.data.Dataset`.

    Args:
        name: registry name of the dataset, e.g. ``"mnist"``.
        split: ``"train"`` or ``"test"``.
        images: float32 images with values in [0, 1].
        labels: int64 labels in ``0 .. num_classes - 1``.
        num_classes: number of classes.
        class_names: one name per class, in label order.

    Shape:
        images ``(N, C, H, W)``, labels ``(N,)``; ``dataset[i]`` is ``((C, H, W), ())``.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.float32 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a float32 N x C x H x W tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        if self.images.numel():
            low, high = torch.aminmax(self.images)
            if not (0.0 <= float(low) and float(high) <= 1.0):  # also catches NaN
                raise ValueError(
                    f"images must have values in [0, 1], got [{float(low)}, {float(high)}]"
                )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"labels must be an int64 tensor of shape (N,), got {self.labels.dtype} "
                f"of shape {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"{len(self.images)} images but {len(self.labels)} labels (counts must match)"
            )
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for {self.num_classes} classes "
                "(must be equal and >= 1)"
            )
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes
        ):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image.

        Returns:
            ``(C, H, W)``.
        """
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One example.

        Args:
            index: position in the dataset.

        Returns:
            ``(image, label)``: a ``(C, H, W)`` float32 image and a 0-d int64 label.
        """
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )

    def loader(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        *,
        drop_last: bool = False,
    ) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
        """A `DataLoader` over this dataset that slices whole batches at once.

        Batches are gathered with one indexing operation instead of one per example, so
        iterating costs little more than the copies themselves; the order of examples is the
        one a plain ``DataLoader(self, batch_size, shuffle=shuffle, generator=generator)``
        would give.

        Args:
            batch_size: examples per batch (>= 1).
            shuffle: reshuffle the order at every epoch.
            generator: the random source for shuffling, for reproducible orders.
            drop_last: drop the last batch if it is smaller than ``batch_size``.

        Returns:
            A loader yielding ``(images, labels)`` of shapes ``(B, C, H, W)`` and ``(B,)``.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size!r} (must be an int >= 1)")
        return DataLoader(
            _BatchView(self.images, self.labels),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
            collate_fn=_as_batch,
        )


class _BatchView(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Tensors seen by a `DataLoader`: ``__getitems__`` returns a whole batch at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]


def _as_batch(batch: Any) -> Any:
    """Collate function for `_BatchView`: the batch is already stacked."""
    return batch
