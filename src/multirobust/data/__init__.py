"""Datasets: MNIST, Fashion-MNIST (IDX files) and CIFAR-10 (python batches), and their registry.

``load("mnist", "test")`` returns an `ImageDataset` with float32 ``(N, C, H, W)`` images in
[0, 1] and int64 labels. Files live in ``data_root() / spec(name).folder``; the root is the
``root`` argument, else ``$MULTIROBUST_DATA``, else ``~/.cache/multirobust/data``. Missing files
are downloaded (``$MULTIROBUST_DATA_MIRROR`` first, then the official mirrors) and verified.
``load_npz("mine.npz")`` reads your own examples (arrays ``x`` and ``y``) the same way.
"""

from .dataset import ImageDataset
from .errors import DataCorruptError, DatasetNotFoundError
from .loading import fetch, load
from .npz import load_npz
from .registry import DATA_ENV, MIRROR_ENV, DatasetSpec, FileSpec, data_root, names, spec

__all__ = [
    "DATA_ENV",
    "MIRROR_ENV",
    "DataCorruptError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "FileSpec",
    "ImageDataset",
    "data_root",
    "fetch",
    "load",
    "load_npz",
    "names",
    "spec",
]
