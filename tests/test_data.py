"""Tests for multirobust.data: registry, IDX and CIFAR-10 readers, validation, download."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from multirobust import data
from multirobust.data import (
    DataCorruptError,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    ImageDataset,
)
from multirobust.data import cifar as cifar_mod
from multirobust.data import idx as idx_mod
from multirobust.data.download import DownloadError, download_file

# Computed at import, before the autouse fixture below clears MULTIROBUST_DATA.
REAL_ROOT = Path(
    os.environ.get("MULTIROBUST_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Clear the data env vars and refuse every connection that is not to this machine."""
    monkeypatch.delenv("MULTIROBUST_DATA", raising=False)
    monkeypatch.delenv("MULTIROBUST_DATA_MIRROR", raising=False)
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    blocked: list[str] = []
    real_connect = socket.create_connection

    def local_only(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            blocked.append(str(address[0]))
            raise OSError(f"test blocked a connection to {address[0]}")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)
    yield blocked
    assert not blocked, f"tests must not contact the internet, tried: {blocked}"


def _need_real(name: str) -> Path:
    folder = REAL_ROOT / name
    if not all((folder / f).is_file() for f in TEST_FILES):
        pytest.skip(f"real {name} files not found in {folder} (set MULTIROBUST_DATA)")
    return folder


@pytest.fixture()
def mnist_dir() -> Path:
    return _need_real("mnist")


class _Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                requests.append(self.path)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[_Server]:
    (tmp_path / "srv").mkdir()
    srv = _Server(tmp_path / "srv")
    yield srv
    srv.close()


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_test_split(
    folder: Path,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    images_raw: bytes | None = None,
    labels_raw: bytes | None = None,
) -> None:
    """Write an uncompressed MNIST-style test split (registered names without .gz)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if images is None:
        images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    if labels is None:
        labels = np.arange(len(images), dtype=np.uint8) % 10
    (folder / "t10k-images-idx3-ubyte").write_bytes(
        images_raw if images_raw is not None else _idx_bytes(images, idx_mod.IMAGES_MAGIC)
    )
    (folder / "t10k-labels-idx1-ubyte").write_bytes(
        labels_raw if labels_raw is not None else _idx_bytes(labels, idx_mod.LABELS_MAGIC)
    )


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _no_internet(ds: DatasetSpec) -> DatasetSpec:
    """A copy of a registered spec whose official mirrors are removed."""
    return dataclasses.replace(ds, mirrors=())


# ---------------------------------------------------------------------------------------------
# registry and data_root
# ---------------------------------------------------------------------------------------------


def test_names_sorted() -> None:
    assert data.names() == ["cifar10", "fashion-mnist", "mnist"]


def test_unknown_name() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Unknown dataset 'foo' \(available: cifar10, fashion-mnist, mnist\)$",
    ):
        data.spec("foo")
    with pytest.raises(ValueError, match="Unknown dataset 'foo'"):
        data.load("foo", root="/nonexistent")


def test_bad_split_and_limit() -> None:
    with pytest.raises(ValueError, match=r"Invalid split: 'val' \(allowed: train, test\)"):
        data.load("mnist", "val", root="/nonexistent")
    with pytest.raises(ValueError, match=r"Invalid limit: -1"):
        data.load("mnist", root="/nonexistent", limit=-1)


def test_spec_contents() -> None:
    mnist, fashion, cifar = data.spec("mnist"), data.spec("fashion-mnist"), data.spec("cifar10")
    assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))
    assert (fashion.mean, fashion.std) == ((0.2860,), (0.3530,))
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2470, 0.2435, 0.2616)
    assert [s.input_shape for s in (mnist, fashion, cifar)] == [(1, 28, 28)] * 2 + [(3, 32, 32)]
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert cifar.class_names[0] == "airplane" and len(cifar.class_names) == 10
    (archive,) = cifar.files
    assert archive.name == "cifar-10-python.tar.gz"
    assert archive.md5 == "c58f30108f718f92721af3b95e74349a" and archive.sha256 is None
    assert archive.checksum == ("md5", "c58f30108f718f92721af3b95e74349a")
    assert mnist.mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    for s in (mnist, fashion):
        assert sorted(f.name for f in s.files) == sorted(
            [*TEST_FILES, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
        )
        assert all(f.sha256 is not None and f.size for f in s.files)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_registry_checksums_match_real_files(name: str) -> None:
    folder = _need_real(name)
    for f in data.spec(name).files:
        path = folder / f.name
        if path.is_file():
            assert path.stat().st_size == f.size
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="Invalid sha256"):
        FileSpec("a.gz", sha256="abc")
    with pytest.raises(ValueError, match="plain file name"):
        FileSpec("../a.gz")
    with pytest.raises(ValueError, match="class names"):
        dataclasses.replace(data.spec("mnist"), num_classes=3)


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_root() == tmp_path / "home" / ".cache" / "multirobust" / "data"
    monkeypatch.setenv("MULTIROBUST_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("MULTIROBUST_DATA", "")
    assert data.data_root() == tmp_path / "home" / ".cache" / "multirobust" / "data"


def test_load_uses_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_idx_test_split(tmp_path / "mnist")
    monkeypatch.setenv("MULTIROBUST_DATA", str(tmp_path))
    assert len(data.load("mnist", download=False)) == 5


# ---------------------------------------------------------------------------------------------
# real MNIST / Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def test_mnist_test_split(mnist_dir: Path) -> None:
    ds = data.load("mnist", "test", root=REAL_ROOT, download=False)
    assert isinstance(ds, ImageDataset) and isinstance(ds, torch.utils.data.Dataset)
    assert (ds.name, ds.split, ds.num_classes) == ("mnist", "test", 10)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (10000,) and ds.labels.dtype == torch.int64
    assert ds.images.min().item() == 0.0 and ds.images.max().item() == 1.0
    assert ds.labels.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert ds.input_shape == (1, 28, 28)
    assert ds.class_names == tuple("0123456789")
    # exact pixel values: uint8 / 255, same as decoding the file by hand
    raw = gzip.decompress((mnist_dir / TEST_FILES[0]).read_bytes())
    first = np.frombuffer(raw, np.uint8, count=784, offset=16).reshape(28, 28) / 255.0
    torch.testing.assert_close(ds.images[0, 0], torch.from_numpy(first).float())
    assert len(ds) == 10000
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and y.dim() == 0 and y.dtype == torch.int64


def test_fashion_mnist_test_split() -> None:
    _need_real("fashion-mnist")
    ds = data.load("fashion-mnist", root=REAL_ROOT, download=False)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.images.min().item() == 0.0 and ds.images.max().item() == 1.0
    assert ds.labels.bincount(minlength=10).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_train_split(name: str) -> None:
    _need_real(name)
    if not (REAL_ROOT / name / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("train files not present")
    ds = data.load(name, "train", root=REAL_ROOT, download=False)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.labels.shape == (60000,)
    counts = ds.labels.bincount(minlength=10).tolist()
    assert counts == (MNIST_TRAIN_COUNTS if name == "mnist" else [6000] * 10)


def test_limit_keeps_first_examples(mnist_dir: Path) -> None:
    full = data.load("mnist", root=REAL_ROOT, download=False)
    part = data.load("mnist", root=REAL_ROOT, download=False, limit=37)
    assert len(part) == 37
    assert torch.equal(part.images, full.images[:37]) and torch.equal(part.labels, full.labels[:37])
    assert len(data.load("mnist", root=REAL_ROOT, download=False, limit=0)) == 0
    assert len(data.load("mnist", root=REAL_ROOT, download=False, limit=10**6)) == 10000


def test_loader_matches_plain_dataloader(mnist_dir: Path) -> None:
    ds = data.load("mnist", root=REAL_ROOT, download=False, limit=300)
    fast = list(ds.loader(64, shuffle=True, generator=torch.Generator().manual_seed(3)))
    plain = list(DataLoader(ds, 64, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert [len(y) for _, y in fast] == [64, 64, 64, 64, 44]
    for (xa, ya), (xb, yb) in zip(fast, plain, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (44, 1, 28, 28)
    ordered = torch.cat([y for _, y in ds.loader(128)])
    assert torch.equal(ordered, ds.labels)
    with pytest.raises(ValueError, match="Invalid batch_size"):
        ds.loader(0)


def test_dataset_is_frozen_and_validated() -> None:
    ds = ImageDataset("t", "test", torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), 2, ("a", "b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="float32"):
        ImageDataset("t", "test", torch.zeros(2, 2, 2), torch.tensor([0, 1]), 2, ("a", "b"))
    with pytest.raises(ValueError, match=r"values in \[0, 1\], got \[2.0, 2.0\]"):
        ImageDataset(
            "t", "test", torch.full((2, 1, 2, 2), 2.0), torch.tensor([0, 1]), 2, ("a", "b")
        )
    with pytest.raises(ValueError, match="counts must match"):
        ImageDataset("t", "test", torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]), 2, ("a", "b"))


def test_uncompressed_idx_accepted(mnist_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in TEST_FILES:
        (folder / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((mnist_dir / name).read_bytes())
        )
    plain = data.load("mnist", root=tmp_path, download=False)
    real = data.load("mnist", root=REAL_ROOT, download=False)
    assert torch.equal(plain.images, real.images) and torch.equal(plain.labels, real.labels)


def test_fetch_returns_folder(mnist_dir: Path) -> None:
    assert data.fetch("mnist", "test", root=REAL_ROOT, download=False) == mnist_dir.absolute()


# ---------------------------------------------------------------------------------------------
# corrupt IDX files
# ---------------------------------------------------------------------------------------------


def test_truncated_gz_rejected_by_size(mnist_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(mnist_dir / TEST_FILES[0], folder)
    raw = (mnist_dir / TEST_FILES[1]).read_bytes()
    (folder / TEST_FILES[1]).write_bytes(raw[:-100])
    with pytest.raises(DataCorruptError, match=r"t10k-labels-idx1-ubyte\.gz: size is 4442 bytes"):
        data.load("mnist", root=tmp_path, download=False)


def test_flipped_byte_rejected_by_sha256(mnist_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    shutil.copy(mnist_dir / TEST_FILES[1], folder)
    raw = bytearray((mnist_dir / TEST_FILES[0]).read_bytes())
    raw[5000] ^= 0xFF
    (folder / TEST_FILES[0]).write_bytes(bytes(raw))
    expected = data.spec("mnist").file(TEST_FILES[0]).sha256
    with pytest.raises(
        DataCorruptError,
        match=rf"t10k-images-idx3-ubyte\.gz: sha256 checksum mismatch: expected {expected}, "
        r"got [0-9a-f]{64}",
    ):
        data.load("mnist", root=tmp_path, download=False)


def test_gzip_errors_in_reader(tmp_path: Path) -> None:
    good = gzip.compress(_idx_bytes(np.arange(100, dtype=np.uint8) % 10, idx_mod.LABELS_MAGIC))
    truncated = tmp_path / "truncated-labels.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataCorruptError, match=r"truncated-labels\.gz: truncated gzip"):
        idx_mod.read_idx_labels(truncated, 10)
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0x01  # the CRC-32 field of the gzip trailer
    crc = tmp_path / "crc-labels.gz"
    crc.write_bytes(bytes(bad_crc))
    with pytest.raises(DataCorruptError, match=r"crc-labels\.gz: corrupt gzip file \(CRC check"):
        idx_mod.read_idx_labels(crc, 10)
    not_gzip = tmp_path / "plain-labels.gz"
    not_gzip.write_bytes(b"definitely not gzip data")
    with pytest.raises(DataCorruptError, match="corrupt gzip"):
        idx_mod.read_idx_labels(not_gzip, 10)
    ok = tmp_path / "ok-labels.gz"
    ok.write_bytes(good)
    assert idx_mod.read_idx_labels(ok, 10).tolist() == [i % 10 for i in range(100)]


def test_wrong_magic(tmp_path: Path) -> None:
    labels = np.zeros(5, np.uint8)
    _write_idx_test_split(tmp_path / "mnist", labels_raw=_idx_bytes(labels, 0x00000802))
    with pytest.raises(
        DataCorruptError,
        match=r"t10k-labels-idx1-ubyte: wrong magic number 0x00000802, expected 0x00000801",
    ):
        data.load("mnist", root=tmp_path, download=False)
    images = np.zeros((5, 28, 28), np.uint8)
    # labels file where an images file belongs
    _write_idx_test_split(tmp_path / "mnist", images_raw=_idx_bytes(labels, idx_mod.LABELS_MAGIC))
    with pytest.raises(DataCorruptError, match=r"0x00000801, expected 0x00000803"):
        data.load("mnist", root=tmp_path, download=False)
    # int32 element type instead of unsigned byte
    raw = bytearray(_idx_bytes(images, idx_mod.IMAGES_MAGIC))
    raw[2] = 0x0C
    _write_idx_test_split(tmp_path / "mnist", images_raw=bytes(raw))
    with pytest.raises(DataCorruptError, match="element type is not unsigned byte"):
        data.load("mnist", root=tmp_path, download=False)


def test_dimensions_whose_product_overflows_int64_are_refused(tmp_path: Path) -> None:
    """2^31 x 2^31 x 2^31 = 2^93 wraps to 0 in int64: a header with no payload passed the size
    check and failed in numpy's reshape. The product is checked with Python integers."""
    header = idx_mod.IMAGES_MAGIC.to_bytes(4, "big") + (2**31).to_bytes(4, "big") * 3
    with pytest.raises(DataCorruptError, match=r"payload short: 0 bytes .* expected 9903520"):
        idx_mod.parse_idx(header, "huge", idx_mod.IMAGES_MAGIC)
    _write_idx_test_split(tmp_path / "mnist", images_raw=header)
    with pytest.raises(DataCorruptError, match="payload short"):
        data.load("mnist", root=tmp_path, download=False)


def test_short_payload_and_header(tmp_path: Path) -> None:
    full = _idx_bytes(np.zeros((5, 28, 28), np.uint8), idx_mod.IMAGES_MAGIC)
    _write_idx_test_split(tmp_path / "mnist", images_raw=full[:-10])
    with pytest.raises(
        DataCorruptError,
        match=r"t10k-images-idx3-ubyte: payload short: 3910 bytes after the header, "
        r"expected 3920 for shape 5 x 28 x 28",
    ):
        data.load("mnist", root=tmp_path, download=False)
    _write_idx_test_split(tmp_path / "mnist", images_raw=full + b"\0")
    with pytest.raises(DataCorruptError, match="payload too long"):
        data.load("mnist", root=tmp_path, download=False)
    _write_idx_test_split(tmp_path / "mnist", images_raw=full[:9])
    with pytest.raises(DataCorruptError, match="too short for its 16-byte IDX header"):
        data.load("mnist", root=tmp_path, download=False)


def test_wrong_image_size(tmp_path: Path) -> None:
    _write_idx_test_split(tmp_path / "mnist", images=np.zeros((5, 27, 28), np.uint8))
    with pytest.raises(DataCorruptError, match="images are 27 x 28, expected 28 x 28"):
        data.load("mnist", root=tmp_path, download=False)


def test_label_out_of_range(tmp_path: Path) -> None:
    _write_idx_test_split(tmp_path / "mnist", labels=np.array([0, 1, 2, 10, 4], np.uint8))
    with pytest.raises(
        DataCorruptError,
        match=r"t10k-labels-idx1-ubyte: label 10 at index 3 is out of range \(must be 0\.\.9\)",
    ):
        data.load("mnist", root=tmp_path, download=False)


def test_count_mismatch(tmp_path: Path) -> None:
    _write_idx_test_split(tmp_path / "mnist", labels=np.zeros(4, np.uint8))
    with pytest.raises(
        DataCorruptError, match=r"holds 5 images but .*t10k-labels-idx1-ubyte holds 4 labels"
    ):
        data.load("mnist", root=tmp_path, download=False)


def test_errors_are_value_and_file_errors() -> None:
    assert issubclass(DataCorruptError, ValueError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------

CIFAR_NAMES = data.spec("cifar10").class_names


def _cifar_batch(n: int, seed: int, label_offset: int = 0) -> dict[bytes, Any]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [(i + label_offset) % 10 for i in range(n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def _dump(obj: Any, path: Path, *, old_numpy_names: bool = False) -> None:
    # Protocol 3 stores bytes natively, like the Python 2 originals; protocol 2 would need
    # _codecs.encode, which the reader rightly refuses.
    raw = pickle.dumps(obj, protocol=3)
    if old_numpy_names:  # what the published files name: numpy 1's module path
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(raw)


def _write_cifar(folder: Path, *, train_sizes: tuple[int, ...] = (3, 4, 2, 3, 4)) -> dict[str, Any]:
    """Write a small CIFAR-10 python-batch folder; return what was written."""
    batch_dir = folder / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    written: dict[str, Any] = {}
    for i, n in enumerate(train_sizes, start=1):
        written[f"data_batch_{i}"] = batch = _cifar_batch(n, seed=i, label_offset=i)
        _dump(batch, batch_dir / f"data_batch_{i}", old_numpy_names=i % 2 == 0)
    written["test_batch"] = batch = _cifar_batch(6, seed=99)
    _dump(batch, batch_dir / "test_batch", old_numpy_names=True)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    _dump(meta, batch_dir / "batches.meta")
    return written


def _tar_folder(source: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")


def _cifar_spec_for(archive: Path) -> DatasetSpec:
    """The registered CIFAR-10 spec with the test archive's checksum and no internet mirrors."""
    entry = FileSpec(archive.name, size=archive.stat().st_size, md5=_md5(archive))
    return dataclasses.replace(data.spec("cifar10"), files=(entry,), mirrors=())


def test_cifar_folder(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path / "cifar10")
    test = data.load("cifar10", "test", root=tmp_path, download=False)
    assert test.images.shape == (6, 3, 32, 32) and test.images.dtype == torch.float32
    assert test.labels.dtype == torch.int64 and test.labels.tolist() == list(range(6))
    assert test.class_names == CIFAR_NAMES and test.input_shape == (3, 32, 32)
    flat = written["test_batch"][b"data"]
    # channel planes of 1024 values, each row-major 32 x 32
    for i, c, r, col in [(0, 0, 0, 0), (1, 1, 5, 7), (5, 2, 31, 30)]:
        assert test.images[i, c, r, col].item() == pytest.approx(
            flat[i, c * 1024 + r * 32 + col] / 255.0
        )
    train = data.load("cifar10", "train", root=tmp_path, download=False)
    expected = np.concatenate([written[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert train.images.shape == (16, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(expected.reshape(-1, 3, 32, 32)) / 255.0)
    labels = [label for i in range(1, 6) for label in written[f"data_batch_{i}"][b"labels"]]
    assert train.labels.tolist() == labels
    part = data.load("cifar10", "train", root=tmp_path, download=False, limit=5)
    assert torch.equal(part.images, train.images[:5]) and torch.equal(part.labels, train.labels[:5])


def test_cifar_tarball(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "src")
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    archive = folder / "cifar-10-python.tar.gz"
    _tar_folder(tmp_path / "src", archive)
    # the registered checksum is the real archive's: a different tarball is refused
    with pytest.raises(DataCorruptError, match=r"cifar-10-python\.tar\.gz: size is .* 170498071"):
        data.load("cifar10", root=tmp_path / "root", download=False)
    ds = data.load(_cifar_spec_for(archive), "test", root=tmp_path / "root", download=False)
    assert ds.name == "cifar10" and ds.images.shape == (6, 3, 32, 32)
    assert (folder / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(folder.rglob("*.part"))
    # once extracted, the folder is used as is, even with the registered spec
    assert len(data.load("cifar10", "train", root=tmp_path / "root", download=False)) == 16


def test_cifar_tarball_md5_mismatch(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "src")
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    archive = folder / "cifar-10-python.tar.gz"
    _tar_folder(tmp_path / "src", archive)
    entry = FileSpec(archive.name, size=archive.stat().st_size, md5="0" * 32)
    wrong = dataclasses.replace(data.spec("cifar10"), files=(entry,), mirrors=())
    with pytest.raises(DataCorruptError, match=f"md5 checksum mismatch: expected {'0' * 32}"):
        data.load(wrong, root=tmp_path / "root", download=False)
    assert not (folder / "cifar-10-batches-py").exists()


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil", "leaves the folder"),
        ("cifar-10-batches-py/../../evil", "leaves the folder"),
        ("/tmp/evil_abs_multirobust", "absolute path"),
    ],
)
def test_cifar_unsafe_tar_members(tmp_path: Path, member: str, message: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"hi"))
        evil = tarfile.TarInfo(member)
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    dest = tmp_path / "out" / "cifar10"
    dest.mkdir(parents=True)
    with pytest.raises(DataCorruptError, match=message):
        cifar_mod.extract_archive(archive, dest)
    # names are checked before anything is written
    assert not any(dest.iterdir())
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil_abs_multirobust").exists()


def test_cifar_tar_link_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataCorruptError, match="links and devices are not"):
        cifar_mod.extract_archive(archive, tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar10")
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=3))
    with pytest.raises(
        DataCorruptError,
        match=r"test_batch: unsafe pickle: refusing to load global '\w+\.system'",
    ):
        data.load("cifar10", root=tmp_path, download=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj",
    [
        functools.partial(print, "x"),
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": io.BytesIO()},
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]},  # protocol 5: _frombuffer
    ],
)
def test_cifar_pickle_refuses_other_globals(tmp_path: Path, obj: Any) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(obj, protocol=5))
    with pytest.raises(DataCorruptError, match="refusing to load global"):
        cifar_mod.read_batch(path)


def test_cifar_bad_batches(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    _dump({b"data": np.zeros((2, 3072), np.uint8)}, path)
    with pytest.raises(DataCorruptError, match=r"missing key\(s\) b'labels'"):
        cifar_mod.read_batch(path)
    _dump({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, path)
    with pytest.raises(DataCorruptError, match="must be a uint8 N x 3072 array, got float32"):
        cifar_mod.read_batch(path)
    _dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, path)
    with pytest.raises(DataCorruptError, match="2 images but 1 labels"):
        cifar_mod.read_batch(path)
    _dump([1, 2], path)
    with pytest.raises(DataCorruptError, match="expected a dict, got list"):
        cifar_mod.read_batch(path)
    path.write_bytes(pickle.dumps({b"data": 1}, protocol=3)[:-5])
    with pytest.raises(DataCorruptError, match="damaged pickle"):
        cifar_mod.read_batch(path)


def test_cifar_label_out_of_range_and_meta(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar10")
    batch_dir = tmp_path / "cifar10" / "cifar-10-batches-py"
    bad = _cifar_batch(3, seed=1)
    bad[b"labels"] = [0, 12, 1]
    _dump(bad, batch_dir / "test_batch")
    with pytest.raises(DataCorruptError, match="label 12 at index 1 is out of range"):
        data.load("cifar10", root=tmp_path, download=False)
    _dump(_cifar_batch(3, seed=1), batch_dir / "test_batch")
    _dump({b"label_names": [b"cat"] * 10}, batch_dir / "batches.meta")
    with pytest.raises(DataCorruptError, match="label names .* differ"):
        data.load("cifar10", root=tmp_path, download=False)


def test_cifar_missing_message(tmp_path: Path) -> None:
    folder = (tmp_path / "cifar10").absolute()
    with pytest.raises(DatasetNotFoundError) as info:
        data.load("cifar10", root=tmp_path, download=False)
    msg = str(info.value)
    assert f"CIFAR-10 files missing in {folder}: cifar-10-python.tar.gz" in msg
    assert "cifar-10-batches-py/test_batch" in msg and "MULTIROBUST_DATA" in msg


# ---------------------------------------------------------------------------------------------
# download (from a local HTTP server only)
# ---------------------------------------------------------------------------------------------


def test_download_from_env_mirror(
    mnist_dir: Path, server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server.directory / "mnist").mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, server.directory / "mnist")
    monkeypatch.setenv("MULTIROBUST_DATA_MIRROR", server.url + "/")
    root = tmp_path / "root"
    # the registered spec: the env mirror is tried first, so the official ones are never needed
    ds = data.load("mnist", root=root)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.labels.bincount(minlength=10).tolist() == MNIST_TEST_COUNTS
    assert sorted(server.requests) == sorted(f"/mnist/{n}" for n in TEST_FILES)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(TEST_FILES)
    for name in TEST_FILES:
        assert (root / "mnist" / name).read_bytes() == (mnist_dir / name).read_bytes()
    # present now: a second load does not download
    data.load("mnist", root=root)
    assert len(server.requests) == 2


def test_download_falls_back_to_next_mirror(
    mnist_dir: Path, server: _Server, tmp_path: Path
) -> None:
    (server.directory / "good").mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, server.directory / "good")
    spec = dataclasses.replace(
        data.spec("mnist"), mirrors=(f"{server.url}/missing/", f"{server.url}/good")
    )
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    shutil.copy(mnist_dir / TEST_FILES[1], root / "mnist")  # only the images are missing
    assert len(data.load(spec, root=root, limit=10)) == 10
    assert server.requests == [f"/missing/{TEST_FILES[0]}", f"/good/{TEST_FILES[0]}"]


def test_download_checksum_mismatch(
    mnist_dir: Path, server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server.directory / "mnist").mkdir()
    raw = bytearray((mnist_dir / TEST_FILES[0]).read_bytes())
    raw[1000] ^= 0x55
    (server.directory / "mnist" / TEST_FILES[0]).write_bytes(bytes(raw))
    shutil.copy(mnist_dir / TEST_FILES[1], server.directory / "mnist")
    monkeypatch.setenv("MULTIROBUST_DATA_MIRROR", server.url)
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError, match="sha256 checksum mismatch") as info:
        data.load(_no_internet(data.spec("mnist")), root=root)
    assert TEST_FILES[0] in str(info.value)
    # neither the bad file nor its partial download stays; the folders made for it go too
    assert not root.exists()


def test_download_wrong_size(mnist_dir: Path, server: _Server, tmp_path: Path) -> None:
    (server.directory / "m").mkdir()
    (server.directory / "m" / TEST_FILES[1]).write_bytes(
        (mnist_dir / TEST_FILES[1]).read_bytes()[:100]
    )
    folder = tmp_path / "dl"
    with pytest.raises(DownloadError, match=r"got 100 bytes, expected 4542"):
        download_file(
            data.spec("mnist").file(TEST_FILES[1]), folder, [f"{server.url}/m/{TEST_FILES[1]}"]
        )
    assert not folder.exists()  # created for the download, removed again when it failed


def test_download_404_names_files_and_folder(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIROBUST_DATA_MIRROR", server.url)
    root = tmp_path / "root"
    folder = (root / "mnist").absolute()
    with pytest.raises(DatasetNotFoundError) as info:
        data.load(_no_internet(data.spec("mnist")), root=root)
    msg = str(info.value)
    assert msg.startswith(f"MNIST files missing in {folder}: {', '.join(TEST_FILES)}. ")
    assert "Download failed (" in msg and "HTTP 404" in msg
    assert msg.endswith(
        f"Put the original files in {folder} or set MULTIROBUST_DATA to a folder that holds mnist/"
    )
    assert server.requests == [f"/mnist/{TEST_FILES[0]}"]
    # a failed download creates nothing: neither the dataset folder nor the data root
    assert not root.exists()


def test_download_disabled(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIROBUST_DATA_MIRROR", server.url)
    with pytest.raises(DatasetNotFoundError, match=r"Download disabled \(download=False\)") as info:
        data.load("fashion-mnist", "train", root=tmp_path, download=False)
    assert "Fashion-MNIST files missing in" in str(info.value)
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in str(info.value)
    assert server.requests == []


def test_download_without_any_mirror(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no URL to download"):
        data.load(_no_internet(data.spec("mnist")), root=tmp_path)


def test_download_timeout(tmp_path: Path) -> None:
    # a socket that accepts connections (backlog) but never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/f.gz"
        with pytest.raises(DownloadError, match="timed out"):
            download_file(FileSpec("f.gz", size=3), tmp_path, [url], timeout=0.3)
    assert not any(tmp_path.iterdir())


def test_download_cifar_archive(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_cifar(tmp_path / "src")
    (server.directory / "cifar10").mkdir()
    archive = server.directory / "cifar10" / "cifar-10-python.tar.gz"
    _tar_folder(tmp_path / "src", archive)
    monkeypatch.setenv("MULTIROBUST_DATA_MIRROR", server.url)
    ds = data.load(_cifar_spec_for(archive), "train", root=tmp_path / "root")
    assert ds.images.shape == (16, 3, 32, 32)
    assert server.requests == ["/cifar10/cifar-10-python.tar.gz"]
    assert (tmp_path / "root" / "cifar10" / "cifar-10-python.tar.gz").is_file()
