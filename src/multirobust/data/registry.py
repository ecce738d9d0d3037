"""The dataset registry: one `DatasetSpec` per dataset, and where datasets live on disk."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DATA_ENV",
    "MIRROR_ENV",
    "SPLITS",
    "DatasetSpec",
    "FileSpec",
    "data_root",
    "names",
    "spec",
]

DATA_ENV = "MULTIROBUST_DATA"
"""Environment variable naming the data root (the folder that holds ``mnist/``, ``cifar10/``...)."""

MIRROR_ENV = "MULTIROBUST_DATA_MIRROR"
"""Environment variable naming a base URL tried before the official mirrors."""

SPLITS: tuple[str, ...] = ("train", "test")

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset as originally published, with its size and checksum.

    Args:
        name: file name inside the dataset folder, e.g. ``"t10k-images-idx3-ubyte.gz"``.
        size: size in bytes, or None when unknown.
        sha256: lowercase hex SHA-256 digest, or None.
        md5: lowercase hex MD5 digest, or None (used where only MD5 is published).
        split: ``"train"`` or ``"test"`` if the file serves one split only, None if both.
        role: what the file holds: ``"images"``, ``"labels"`` or ``"archive"``.
    """

    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    split: str | None = None
    role: Literal["images", "labels", "archive"] = "archive"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name or self.name in (".", ".."):
            raise ValueError(f"Invalid file name: {self.name!r} (must be a plain file name)")
        if self.size is not None and self.size < 0:
            raise ValueError(f"Invalid size for {self.name}: {self.size} (must be >= 0)")
        for algorithm, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != length or not _HEX.fullmatch(digest)):
                raise ValueError(
                    f"Invalid {algorithm} for {self.name}: {digest!r} "
                    f"(must be {length} lowercase hex digits)"
                )
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(
                f"Invalid split for {self.name}: {self.split!r} (allowed: {', '.join(SPLITS)})"
            )

    @property
    def checksum(self) -> tuple[str, str] | None:
        """The strongest published checksum as ``(algorithm, hex digest)``, or None.

        Returns:
            ``("sha256", ...)`` if known, else ``("md5", ...)`` if known, else None.
        """
        if self.sha256 is not None:
            return ("sha256", self.sha256)
        if self.md5 is not None:
            return ("md5", self.md5)
        return None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the library knows about one dataset before reading it.

    Args:
        name: registry name, e.g. ``"mnist"``.
        title: human name used in messages, e.g. ``"MNIST"``.
        folder: sub-folder of the data root that holds the files.
        format: reader to use: ``"idx"`` (MNIST-style) or ``"cifar"`` (CIFAR python batches).
        files: the downloadable files, as published.
        input_shape: ``(C, H, W)`` of one image.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        class_names: one name per class, in label order.
        mean: per-channel mean of the training images in [0, 1] (for a normalisation layer).
        std: per-channel standard deviation of the training images in [0, 1].
        mirrors: base URLs, tried in order; a file's URL is ``mirror + file name``.
        num_train: number of training examples in the published data.
        num_test: number of test examples in the published data.
    """

    name: str
    title: str
    folder: str
    format: Literal["idx", "cifar"]
    files: tuple[FileSpec, ...]
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirrors: tuple[str, ...] = ()
    num_train: int = 0
    num_test: int = 0

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"Invalid input_shape for {self.name}: {self.input_shape} (C, H, W)")
        channels = self.input_shape[0]
        if self.format not in ("idx", "cifar"):
            raise ValueError(
                f"Invalid format for {self.name}: {self.format!r} (allowed: idx, cifar)"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes (must be equal)"
            )
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean and std need one value per channel ({channels})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be > 0, got {self.std}")
        if len({f.name for f in self.files}) != len(self.files):
            raise ValueError(f"{self.name}: duplicate file names in files")

    def file(self, name: str) -> FileSpec:
        """Look up one of the dataset's files by name.

        Args:
            name: the file name.

        Returns:
            The matching `FileSpec`.
        """
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no file {name!r}")

    def files_for(self, split: str) -> tuple[FileSpec, ...]:
        """The files needed to read one split.

        Args:
            split: ``"train"`` or ``"test"``.

        Returns:
            The files whose ``split`` is this split or None.
        """
        return tuple(f for f in self.files if f.split in (None, split))


_DIGITS = tuple(str(d) for d in range(10))

_MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    folder="mnist",
    format="idx",
    files=(
        FileSpec(
            "train-images-idx3-ubyte.gz",
            size=9_912_422,
            sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            split="train",
            role="images",
        ),
        FileSpec(
            "train-labels-idx1-ubyte.gz",
            size=28_881,
            sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            split="train",
            role="labels",
        ),
        FileSpec(
            "t10k-images-idx3-ubyte.gz",
            size=1_648_877,
            sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            split="test",
            role="images",
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte.gz",
            size=4_542,
            sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            split="test",
            role="labels",
        ),
    ),
    input_shape=(1, 28, 28),
    num_classes=10,
    class_names=_DIGITS,
    mean=(0.1307,),
    std=(0.3081,),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    num_train=60_000,
    num_test=10_000,
)

_FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="fashion-mnist",
    format="idx",
    files=(
        FileSpec(
            "train-images-idx3-ubyte.gz",
            size=26_421_880,
            sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            split="train",
            role="images",
        ),
        FileSpec(
            "train-labels-idx1-ubyte.gz",
            size=29_515,
            sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            split="train",
            role="labels",
        ),
        FileSpec(
            "t10k-images-idx3-ubyte.gz",
            size=4_422_102,
            sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            split="test",
            role="images",
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte.gz",
            size=5_148,
            sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            split="test",
            role="labels",
        ),
    ),
    input_shape=(1, 28, 28),
    num_classes=10,
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mean=(0.2860,),
    std=(0.3530,),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    num_train=60_000,
    num_test=10_000,
)

_CIFAR10 = DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar10",
    format="cifar",
    files=(
        # Only an MD5 sum is published for the CIFAR-10 archive.
        FileSpec(
            "cifar-10-python.tar.gz",
            size=170_498_071,
            md5="c58f30108f718f92721af3b95e74349a",
            role="archive",
        ),
    ),
    input_shape=(3, 32, 32),
    num_classes=10,
    class_names=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    num_train=50_000,
    num_test=10_000,
)

_REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in (_MNIST, _FASHION_MNIST, _CIFAR10)}


def names() -> list[str]:
    """The names of all registered datasets.

    Returns:
        Sorted list of names, e.g. ``["cifar10", "fashion-mnist", "mnist"]``.
    """
    return sorted(_REGISTRY)


def spec(name: str) -> DatasetSpec:
    """The registry entry of one dataset.

    Args:
        name: a registered name (see `names`).

    Returns:
        The dataset's `DatasetSpec`.

    Raises:
        ValueError: if the name is not registered.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dataset {name!r} (available: {', '.join(names())})") from None


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds one sub-folder per dataset.

    Args:
        root: an explicit folder; wins over everything else.

    Returns:
        ``root`` if given, else ``$MULTIROBUST_DATA`` if set and not empty, else
        ``~/.cache/multirobust/data``; user-expanded and absolute.
    """
    if root is not None:
        path = Path(root)
    elif os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV])
    else:
        path = Path.home() / ".cache" / "multirobust" / "data"
    return path.expanduser().absolute()
