"""`load`: find (or download) a registered dataset's files, validate them, return tensors."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import cifar, idx
from .checksum import verify_file
from .dataset import ImageDataset
from .download import DownloadError, download_file, file_urls
from .errors import DataCorruptError, DatasetNotFoundError
from .registry import DATA_ENV, SPLITS, DatasetSpec, FileSpec, data_root, spec

__all__ = ["fetch", "load"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _resolve(name: str | DatasetSpec) -> DatasetSpec:
    return name if isinstance(name, DatasetSpec) else spec(name)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Invalid split: {split!r} (allowed: {', '.join(SPLITS)})")


def _not_found(
    ds: DatasetSpec, folder: Path, missing: list[str], reason: str
) -> DatasetNotFoundError:
    """Build the error that says which files are missing, where they go, and why."""
    return DatasetNotFoundError(
        f"{ds.title} files missing in {folder}: {', '.join(missing)}. {reason}. "
        f"Put the original files in {folder} or set {DATA_ENV} to a folder that holds "
        f"{ds.folder}/"
    )


def _obtain(
    ds: DatasetSpec, folder: Path, files: list[FileSpec], download: bool, described: list[str]
) -> dict[str, Path]:
    """Download missing files, or raise `DatasetNotFoundError` listing ``described``."""
    if not download:
        raise _not_found(ds, folder, described, "Download disabled (download=False)")
    got: dict[str, Path] = {}
    for i, f in enumerate(files):
        try:
            got[f.name] = download_file(f, folder, file_urls(ds, f.name))
        except (DownloadError, OSError) as exc:
            still = described if len(files) == 1 else [g.name for g in files[i:]]
            raise _not_found(ds, folder, still, f"Download failed ({exc})") from exc
    return got


def _idx_files(ds: DatasetSpec, folder: Path, split: str, download: bool) -> dict[str, Path]:
    """Paths of the images and labels IDX files of a split, keyed by role."""
    found: dict[str, Path] = {}
    missing: list[FileSpec] = []
    for f in ds.files_for(split):
        path = folder / f.name
        plain = folder / f.name.removesuffix(".gz")
        if path.is_file():
            verify_file(path, f)  # the registered (compressed) form has a known checksum
            found[f.role] = path
        elif plain != path and plain.is_file():
            found[f.role] = plain  # uncompressed: validated by structure when read
        else:
            missing.append(f)
    if missing:
        got = _obtain(ds, folder, missing, download, [f.name for f in missing])
        for f in missing:
            found[f.role] = got[f.name]
    for role in ("images", "labels"):
        if role not in found:
            raise ValueError(f"{ds.name}: registry has no {split} {role} file")
    return found


def _read_idx(
    ds: DatasetSpec, folder: Path, split: str, download: bool, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    paths = _idx_files(ds, folder, split, download)
    images = idx.read_idx_images(paths["images"], ds.input_shape[1:])
    labels = idx.read_idx_labels(paths["labels"], ds.num_classes)
    if len(images) != len(labels):
        raise DataCorruptError(
            f"{paths['images']} holds {len(images)} images but {paths['labels']} holds "
            f"{len(labels)} labels (counts must match)"
        )
    if ds.input_shape[0] != 1:
        raise ValueError(f"{ds.name}: IDX images have one channel, registry says {ds.input_shape}")
    return images[:limit, None], labels[:limit].astype(np.int64)


def _cifar_batches(ds: DatasetSpec, folder: Path, split: str, download: bool) -> list[Path]:
    """Paths of a split's batch files, extracting (and first downloading) the archive if needed."""
    batch_dir = folder / cifar.BATCH_FOLDER
    wanted = [batch_dir / n for n in cifar.batches_for(split)]
    if all(p.is_file() for p in wanted):
        return wanted
    archives = [f for f in ds.files if f.role == "archive"]
    if not archives:
        raise ValueError(f"{ds.name}: registry has no archive file")
    archive_spec = archives[0]
    archive = folder / archive_spec.name
    if archive.is_file():
        verify_file(archive, archive_spec)
    else:
        absent = [f"{cifar.BATCH_FOLDER}/{p.name}" for p in wanted if not p.is_file()]
        described = [f"{archive_spec.name} (or the extracted {', '.join(absent)})"]
        archive = _obtain(ds, folder, [archive_spec], download, described)[archive_spec.name]
    cifar.extract_archive(archive, folder)
    absent = [p.name for p in wanted if not p.is_file()]
    if absent:
        raise DataCorruptError(
            f"{archive}: has no {cifar.BATCH_FOLDER}/{', '.join(absent)} after extraction"
        )
    return wanted


def _read_cifar(
    ds: DatasetSpec, folder: Path, split: str, download: bool, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    paths = _cifar_batches(ds, folder, split, download)
    meta = folder / cifar.BATCH_FOLDER / cifar.META_FILE
    if meta.is_file():
        label_names = cifar.read_meta(meta)
        if label_names != ds.class_names:
            raise DataCorruptError(
                f"{meta}: label names {list(label_names)} differ from the expected "
                f"{list(ds.class_names)}"
            )
    images, labels = cifar.read_batches(paths, ds.num_classes, limit)
    if images.shape[1:] != ds.input_shape:
        raise ValueError(f"{ds.name}: CIFAR images are 3 x 32 x 32, registry says {ds.input_shape}")
    return images, labels


def fetch(
    name: str | DatasetSpec,
    split: str | None = None,
    *,
    root: PathLike | None = None,
    download: bool = True,
) -> Path:
    """Make sure a dataset's files are on disk (downloading them if allowed), without reading them.

    Args:
        name: a registered name (see `names`) or a `DatasetSpec`.
        split: ``"train"``, ``"test"``, or None for both.
        root: the data root (see `data_root`).
        download: whether missing files may be downloaded.

    Returns:
        The dataset's folder, ``data_root(root) / spec.folder``.

    Raises:
        DatasetNotFoundError: if files are missing and cannot be downloaded.
        DataCorruptError: if a file in its published form has the wrong size or checksum.
    """
    ds = _resolve(name)
    splits = SPLITS if split is None else (split,)
    for s in splits:
        _check_split(s)
    folder = data_root(root) / ds.folder
    for s in splits:
        if ds.format == "idx":
            _idx_files(ds, folder, s, download)
        else:
            _cifar_batches(ds, folder, s, download)
    return folder


def load(
    name: str | DatasetSpec,
    split: str = "test",
    *,
    root: PathLike | None = None,
    download: bool = True,
    limit: int | None = None,
) -> ImageDataset:
    """Load a registered dataset into memory as float32 images in [0, 1] and int64 labels.

    Files are looked up in ``data_root(root) / spec.folder``. Files in their published form
    (``.gz`` for MNIST, the tarball for CIFAR-10) are checked against the registry's size and
    checksum; uncompressed IDX files and extracted CIFAR-10 batches are checked by structure.
    Missing files are downloaded when ``download`` is true, trying ``$MULTIROBUST_DATA_MIRROR``
    first and then the spec's mirrors.

    Args:
        name: a registered name (see `names`), or a `DatasetSpec` (e.g. a copy of a registered
            one with other mirrors or checksums).
        split: ``"train"`` or ``"test"``.
        root: the data root; see `data_root` for the default.
        download: whether missing files may be downloaded.
        limit: keep only the first ``limit`` examples; None keeps all.

    Returns:
        An `ImageDataset`.

    Shape:
        images ``(N, C, H, W)``, labels ``(N,)``.

    Raises:
        ValueError: for an unknown name, split or a bad limit.
        DatasetNotFoundError: if files are missing and cannot be downloaded.
        DataCorruptError: if a file is damaged (checksum, header, payload, labels, counts).
    """
    ds = _resolve(name)
    _check_split(split)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"Invalid limit: {limit!r} (must be an int >= 0 or None)")
    folder = data_root(root) / ds.folder
    start = time.perf_counter()
    if ds.format == "idx":
        images_u8, labels = _read_idx(ds, folder, split, download, limit)
    elif ds.format == "cifar":
        images_u8, labels = _read_cifar(ds, folder, split, download, limit)
    else:  # pragma: no cover - DatasetSpec.format is a Literal
        raise ValueError(f"Unknown format {ds.format!r} for {ds.name} (allowed: idx, cifar)")
    expected = ds.num_train if split == "train" else ds.num_test
    if limit is None and expected and len(labels) != expected:
        logger.warning(
            "%s %s split has %d examples, the published one has %d",
            ds.title,
            split,
            len(labels),
            expected,
        )
    images = torch.from_numpy(images_u8.astype(np.float32))  # astype copies: writable
    images.div_(255.0)
    dataset = ImageDataset(
        name=ds.name,
        split=split,
        images=images,
        labels=torch.from_numpy(labels),
        num_classes=ds.num_classes,
        class_names=ds.class_names,
    )
    logger.debug(
        "Loaded %s %s: %d examples from %s in %.2f s",
        ds.name,
        split,
        len(dataset),
        folder,
        time.perf_counter() - start,
    )
    return dataset
