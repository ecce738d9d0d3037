"""Tests for multirobust.models: architectures, Normalize, and safe atomic checkpoints."""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from multirobust import models
from multirobust.models import CheckpointError, Normalize

ARCHS = ["madry_cnn", "preact_resnet18", "small_cnn", "wide_resnet"]
# Small settings so the resnets are quick in tests.
FAST_KWARGS: dict[str, dict[str, Any]] = {"wide_resnet": {"depth": 10, "widen_factor": 1}}
ACT_TYPES = {"relu": nn.ReLU, "softplus": nn.Softplus, "silu": nn.SiLU, "gelu": nn.GELU}


def make(name: str, **kwargs: Any) -> nn.Module:
    return models.create(name, **{**FAST_KWARGS.get(name, {}), **kwargs})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------- registry


def test_names_and_activations() -> None:
    assert models.names() == ARCHS
    assert set(models.activations()) >= {"relu", "softplus", "silu", "swish", "gelu"}
    assert models.activations() == sorted(models.activations())


@pytest.mark.parametrize("activation", ["relu", "softplus"])
@pytest.mark.parametrize("name", ARCHS)
def test_forward_backward_logits(name: str, activation: str) -> None:
    in_channels, size = (3, 32) if "resnet" in name else (1, 28)
    model = make(
        name, num_classes=7, in_channels=in_channels, input_size=size, activation=activation
    )
    x = torch.rand(3, in_channels, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    # Logits, not probabilities: rows do not sum to 1 and values are not confined to [0, 1].
    assert not torch.allclose(logits.sum(1), torch.ones(3), atol=1e-3)
    logits[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # The chosen activation is the only one used.
    used = {type(m) for m in model.modules()} & set(ACT_TYPES.values())
    assert used == {ACT_TYPES[activation]}


@pytest.mark.parametrize("activation", ["silu", "swish", "gelu", "GELU"])
def test_smooth_activations(activation: str) -> None:
    model = models.create("small_cnn", activation=activation)
    expected = nn.SiLU if activation == "swish" else ACT_TYPES[activation.lower()]
    assert {type(m) for m in model.modules()} & set(ACT_TYPES.values()) == {expected}
    assert model.multirobust_spec["kwargs"]["activation"] == expected.__name__.lower()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32), (3, 28)])
def test_input_shapes(name: str, in_channels: int, size: int) -> None:
    model = make(name, in_channels=in_channels, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, in_channels, size, size)).shape == (2, 10)


def test_wide_resnet_depth_and_width() -> None:
    model = models.create("wide_resnet", depth=16, widen_factor=2, in_channels=3, input_size=32)
    blocks = [m for m in model.modules() if isinstance(m, models.architectures.WideBasicBlock)]
    assert len(blocks) == 3 * (16 - 4) // 6
    assert model.fc.in_features == 64 * 2
    spec = model.multirobust_spec["kwargs"]
    assert (spec["depth"], spec["widen_factor"], spec["dropout"]) == (16, 2, 0.0)


def test_preact_resnet18_size() -> None:
    model = models.create("preact_resnet18", in_channels=3, input_size=32)
    n_params = sum(p.numel() for p in model.parameters())
    assert 11_000_000 < n_params < 11_300_000  # the standard CIFAR PreAct ResNet-18


def test_spec_is_json_and_rebuilds() -> None:
    model = make("wide_resnet", mean=(0.5, 0.4, 0.3), std=[0.2, 0.2, 0.2], in_channels=3)
    spec = model.multirobust_spec
    assert spec["arch"] == "wide_resnet"
    assert json.loads(json.dumps(spec)) == spec
    kwargs = spec["kwargs"]
    assert kwargs["mean"] == pytest.approx([0.5, 0.4, 0.3])
    assert {"num_classes", "in_channels", "input_size", "mean", "std", "activation"} <= set(kwargs)
    rebuilt = models.create(spec["arch"], **kwargs)
    shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: v.shape for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- Normalize


def test_normalize_math_and_buffers() -> None:
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])
    assert norm.mean is not None and norm.mean.shape == (1, 3, 1, 1)
    assert set(norm.state_dict()) == {"mean", "std"}
    x = torch.rand(4, 3, 5, 5)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25, x[:, 2] / 2.0], 1)
    assert torch.allclose(norm(x), expected)
    identity = Normalize()
    assert identity(x) is x and not list(identity.state_dict())


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5], [0.0], "std must be > 0"),
        ([0.5], [-1.0], "std must be > 0"),
        ([0.5, 0.5], [0.5], "same length"),
        ([0.5], None, "both mean and std"),
        ([], [], "one value per channel"),
        (["a"], [1.0], "only numbers"),
    ],
)
def test_normalize_validation(mean: Any, std: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_channel_mismatch() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        Normalize([0.0] * 3, [1.0] * 3)(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("name", ARCHS)
def test_model_normalizes_raw_inputs(name: str) -> None:
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    model = make(name, in_channels=3, input_size=32, mean=mean, std=std).eval()
    assert isinstance(model[0], Normalize) and model.normalize is model[0]
    x = torch.rand(2, 3, 32, 32)  # raw images in [0, 1]
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model[1:](manual), atol=1e-5)
    # Without mean/std the first layer is the identity.
    plain = make(name, in_channels=3, input_size=32)
    assert isinstance(plain[0], Normalize) and plain[0].mean is None


# --------------------------------------------------------------------------- create errors


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet50", {}, r"Unknown architecture 'resnet50'; available: madry_cnn, preact"),
        ("small_cnn", {"num_classes": 1}, r"num_classes must be an integer >= 2"),
        ("small_cnn", {"num_classes": 2.5}, r"num_classes must be an integer"),
        ("small_cnn", {"activation": "tanh"}, r"Unknown activation 'tanh'; allowed: .*softplus"),
        ("small_cnn", {"input_size": 4}, r"input_size must be an integer >= 8 for small_cnn"),
        ("madry_cnn", {"input_size": 2}, r"input_size must be an integer >= 4 for madry_cnn"),
        ("small_cnn", {"in_channels": 0}, r"in_channels must be an integer >= 1"),
        ("wide_resnet", {"depth": 27}, r"\(depth - 4\) % 6 == 0"),
        ("wide_resnet", {"widen_factor": 0}, r"widen_factor must be an integer >= 1"),
        ("wide_resnet", {"dropout": 1.5}, r"dropout must be a number in \[0, 1\)"),
        ("small_cnn", {"depth": 10}, r"Unexpected argument\(s\) for small_cnn: depth; .*none"),
        ("wide_resnet", {"dept": 10}, r"dept; .*allowed: depth, dropout, widen_factor"),
        ("small_cnn", {"mean": [0.5]}, r"both mean and std"),
        ("small_cnn", {"mean": [0.1, 0.2], "std": [1, 1]}, r"one value per input channel"),
        ("small_cnn", {"mean": [0.1], "std": [0.0]}, r"std must be > 0"),
    ],
)
def test_create_rejects_bad_arguments(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        models.create(name, **kwargs)


# --------------------------------------------------------------------------- save / load


def _trained_like(name: str = "small_cnn", **kwargs: Any) -> nn.Module:
    """A model whose BN running statistics differ from the defaults (if it has any)."""
    model = make(name, **kwargs)
    model.train()
    with torch.no_grad():
        in_channels = model.multirobust_spec["kwargs"]["in_channels"]
        size = model.multirobust_spec["kwargs"]["input_size"]
        model(torch.rand(4, in_channels, size, size))
    return model.eval()


@pytest.mark.parametrize("name", ["small_cnn", "wide_resnet"])
def test_save_load_roundtrip(tmp_path: Path, name: str) -> None:
    model = _trained_like(name, mean=[0.1307], std=[0.3081], activation="softplus", num_classes=5)
    path = tmp_path / "model.pt"
    meta = {"epochs": 3, "acc": np.float64(0.987), "tags": ("a", "b"), "cfg": {"lr": 1e-3}}
    models.save(model, path, dataset="mnist", metadata=meta)
    loaded = models.load(path)
    assert not loaded.training
    assert loaded.multirobust_spec == model.multirobust_spec
    assert loaded.multirobust_checkpoint == {
        "dataset": "mnist",
        "metadata": {"epochs": 3, "acc": 0.987, "tags": ["a", "b"], "cfg": {"lr": 1e-3}},
    }
    assert type(loaded.multirobust_checkpoint["metadata"]["acc"]) is float
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert any(isinstance(m, nn.Softplus) for m in loaded.modules())
    # The loaded model can itself be saved again.
    models.save(loaded, tmp_path / "again.pt")
    assert models.read_checkpoint(tmp_path / "again.pt")["dataset"] is None


def test_checkpoint_layout(tmp_path: Path) -> None:
    model = models.create("small_cnn")
    models.save(model, tmp_path / "m.pt", metadata={"note": "x"})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format"] == "multirobust-checkpoint" and raw["version"] == 1
    assert raw["arch"] == "small_cnn" and raw["kwargs"] == model.multirobust_spec["kwargs"]
    assert raw["dataset"] is None and raw["metadata"] == {"note": "x"}
    assert set(raw["state_dict"]) == set(model.state_dict())


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
def test_save_unwraps_parallel_and_compiled(tmp_path: Path) -> None:
    model = _trained_like()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
    # Wrap copies: DataParallel moves its module to the GPU when one is present.
    wrappers = {
        "dp": nn.DataParallel(copy.deepcopy(model)),
        "compiled": torch.compile(copy.deepcopy(model)),
        "dp-of-compiled": nn.DataParallel(torch.compile(copy.deepcopy(model))),
    }
    for tag, wrapped in wrappers.items():
        path = tmp_path / f"{tag}.pt"
        models.save(wrapped, path)
        keys = models.read_checkpoint(path)["state_dict"]
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)
        with torch.no_grad():
            assert torch.equal(models.load(path)(x), expected)


def test_save_requires_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"multirobust\.models\.create"):
        models.save(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_save_rejects_model_that_no_longer_matches_spec(tmp_path: Path) -> None:
    model = models.create("small_cnn")
    model.fc2 = nn.Linear(128, 3)
    with pytest.raises(ValueError, match=r"no longer matches .*fc2\.weight"):
        models.save(model, tmp_path / "x.pt")


def test_save_rejects_non_json_metadata(tmp_path: Path) -> None:
    model = models.create("small_cnn")
    with pytest.raises(ValueError, match=r"metadata\['t'\] .*JSON-like.*Tensor"):
        models.save(model, tmp_path / "x.pt", metadata={"t": torch.zeros(2)})
    with pytest.raises(ValueError, match="keys must be strings"):
        models.save(model, tmp_path / "x.pt", metadata={1: "a"})
    with pytest.raises(ValueError, match="dataset must be a string"):
        models.save(model, tmp_path / "x.pt", dataset=3)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_atomic_save_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.pt"  # parent folders are created
    models.save(models.create("small_cnn"), path)
    models.save(models.create("small_cnn"), path)  # overwrite
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt", "model.safetensors"]


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    models.save(models.create("small_cnn"), path, metadata={"round": 1})
    before = path.read_bytes()

    def broken_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"partial garbage")  # a half-written file must never replace the old one
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        models.save(models.create("small_cnn"), path, metadata={"round": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.safetensors"]
    assert models.load(path).multirobust_checkpoint["metadata"] == {"round": 1}


def test_extra_keys_roundtrip(tmp_path: Path) -> None:
    model = models.create("small_cnn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.arange(4)).backward()
    opt.step()
    extra = {
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": 3,
        "history": [(1, 0.5), (2, 0.25)],
    }
    path = tmp_path / "resume.pt"
    models.save(model, path, extra=extra)
    ckpt = models.read_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["history"] == [(1, 0.5), (2, 0.25)]
    assert torch.equal(ckpt["rng"], extra["rng"])
    opt2 = torch.optim.Adam(models.load(path).parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer"])
    state = ckpt["optimizer"]["state"][0]
    assert torch.equal(state["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_extra_validation(tmp_path: Path) -> None:
    model = models.create("small_cnn")
    with pytest.raises(ValueError, match="extra key 'state_dict' is not allowed"):
        models.save(model, tmp_path / "x.pt", extra={"state_dict": {}})
    with pytest.raises(ValueError, match=r"extra\['obj'\] holds a .*safe checkpoint loader"):
        models.save(model, tmp_path / "x.pt", extra={"obj": object()})


def test_read_checkpoint_keeps_standard_keys(tmp_path: Path) -> None:
    models.save(models.create("madry_cnn"), tmp_path / "m.pt", dataset="fashion-mnist")
    ckpt = models.read_checkpoint(tmp_path / "m.pt")
    assert set(ckpt) == {"format", "version", "arch", "kwargs", "dataset", "metadata", "state_dict"}
    assert ckpt["arch"] == "madry_cnn" and ckpt["dataset"] == "fashion-mnist"


# --------------------------------------------------------------------------- load refusals


class _CreatesFile:
    """Unpickling this object would create a file: a harmless stand-in for os.system."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.target), "w"))


@pytest.fixture
def good_ckpt(tmp_path: Path) -> dict[str, Any]:
    models.save(models.create("small_cnn"), tmp_path / "good.pt")
    return models.read_checkpoint(tmp_path / "good.pt")


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        models.load(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a checkpoint\n", os.urandom(4096), b"PK\x03\x04" + os.urandom(64)],
    ids=["empty", "text", "random", "fake-zip"],
)
def test_load_rejects_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"Cannot read checkpoint .*bad\.pt.*corrupt"):
        models.load(path)


def test_load_rejects_truncated(tmp_path: Path) -> None:
    models.save(models.create("small_cnn"), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a multirobust checkpoint"):
        models.load(tmp_path / "m.pt")
    assert issubclass(CheckpointError, ValueError)


def test_pickle_payload_sentinel_works(tmp_path: Path) -> None:
    """Control: the sentinel really does create its file when unpickled unsafely."""
    target = tmp_path / "control"
    pickle.loads(pickle.dumps(_CreatesFile(target))).close()
    assert target.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle-protocol-2", "pickle-default"])
def test_load_refuses_pickled_objects_without_running_them(tmp_path: Path, how: str) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "multirobust-checkpoint", "version": 1, "x": _CreatesFile(target)}
    if how == "torch.save":
        torch.save(payload, path)
        match = r"untrusted/unsafe"
    elif how == "pickle-protocol-2":
        path.write_bytes(pickle.dumps(payload, protocol=2))
        match = r"untrusted/unsafe.*GLOBAL io\.open"
    else:
        path.write_bytes(pickle.dumps(payload))
        match = r"corrupt or not a multirobust checkpoint.*unsafe|untrusted/unsafe"
    with pytest.raises(CheckpointError, match=match):
        models.load(path)
    with pytest.raises(CheckpointError):
        models.read_checkpoint(path)
    assert not target.exists()


def test_load_refuses_custom_class(tmp_path: Path) -> None:
    torch.save(types.SimpleNamespace(a=1), tmp_path / "ns.pt")
    with pytest.raises(CheckpointError, match="untrusted/unsafe"):
        models.load(tmp_path / "ns.pt")


def _write(tmp_path: Path, ckpt: Any) -> Path:
    path = tmp_path / "tampered.pt"
    torch.save(ckpt, path)
    return path


def test_load_rejects_non_dict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a dict"):
        models.load(_write(tmp_path, [torch.zeros(2)]))


def test_load_rejects_plain_state_dict(tmp_path: Path) -> None:
    path = _write(tmp_path, models.create("small_cnn").state_dict())
    with pytest.raises(CheckpointError, match="format marker is None"):
        models.load(path)


def test_load_rejects_wrong_format(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    path = _write(tmp_path, {**good_ckpt, "format": "other-checkpoint"})
    with pytest.raises(CheckpointError, match="not a multirobust checkpoint: format marker"):
        models.load(path)


def test_load_rejects_newer_version(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match="format version 2, newer"):
        models.load(_write(tmp_path, {**good_ckpt, "version": 2}))


def test_load_rejects_unknown_arch(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    path = _write(tmp_path, {**good_ckpt, "arch": "vgg16"})
    with pytest.raises(CheckpointError, match=r"unknown architecture 'vgg16'; available: madry"):
        models.load(path)


def test_load_rejects_bad_kwargs(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    kwargs = {**good_ckpt["kwargs"], "num_classes": 1}
    with pytest.raises(CheckpointError, match="invalid arguments for architecture 'small_cnn'"):
        models.load(_write(tmp_path, {**good_ckpt, "kwargs": kwargs}))


def test_load_rejects_missing_key(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    state = dict(good_ckpt["state_dict"])
    del state["fc2.bias"]
    with pytest.raises(CheckpointError, match=r"does not match .*missing keys: fc2\.bias"):
        models.load(_write(tmp_path, {**good_ckpt, "state_dict": state}))


def test_load_rejects_unexpected_key(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    state = {**good_ckpt["state_dict"], "fc3.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: fc3\.weight"):
        models.load(_write(tmp_path, {**good_ckpt, "state_dict": state}))


def test_load_rejects_shape_mismatch(tmp_path: Path, good_ckpt: dict[str, Any]) -> None:
    state = {**good_ckpt["state_dict"], "fc2.weight": torch.zeros(3, 128)}
    with pytest.raises(
        CheckpointError, match=r"shape mismatch: fc2\.weight \(checkpoint \(3, 128\)"
    ):
        models.load(_write(tmp_path, {**good_ckpt, "state_dict": state}))


# --------------------------------------------------------------------------- for_dataset


def test_for_dataset_with_stub_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = types.ModuleType("multirobust.data")

    def spec(name: str) -> Any:
        assert name == "cifar10"
        return types.SimpleNamespace(
            input_shape=(3, 32, 32), num_classes=10, mean=(0.49, 0.48, 0.45), std=(0.25,) * 3
        )

    stub.spec = spec  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "multirobust.data", stub)
    model = models.for_dataset("wide_resnet", "cifar10", depth=10, widen_factor=1)
    kwargs = model.multirobust_spec["kwargs"]
    assert (kwargs["in_channels"], kwargs["input_size"], kwargs["num_classes"]) == (3, 32, 10)
    assert kwargs["mean"] == pytest.approx([0.49, 0.48, 0.45])
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    overridden = models.for_dataset("small_cnn", "cifar10", num_classes=4)
    assert overridden.multirobust_spec["kwargs"]["num_classes"] == 4


def test_for_dataset_real_registry() -> None:
    data = pytest.importorskip("multirobust.data")
    if not hasattr(data, "spec"):
        pytest.skip("multirobust.data.spec is not available yet")
    ds = data.spec("mnist")
    model = models.for_dataset("small_cnn", "mnist")
    kwargs = model.multirobust_spec["kwargs"]
    assert kwargs["num_classes"] == ds.num_classes
    assert (kwargs["in_channels"], kwargs["input_size"], kwargs["input_size"]) == tuple(
        ds.input_shape
    )
    assert model(torch.rand(2, *ds.input_shape)).shape == (2, ds.num_classes)
