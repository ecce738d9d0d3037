"""Your own model and data from the command line: --model package.module:factory with
--model-arg and --weights (safetensors or a plain state dict), --data FILE.npz; models.save's
safetensors twin; a clear error for each way this goes wrong."""

import json
import re
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from multirobust import data, models
from multirobust.cli import main

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def tiny(width=4, classes=3):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(width * 8 * 8, classes),
        )

    def broken(**kw):
        raise RuntimeError("no GPU here")

    def not_a_model():
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder holding the user's module ``mynets.py``, weights and data, as the working
    folder (the command line imports the module from there)."""
    (tmp_path / "mynets.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((12, 1, 8, 8)), y=rng.integers(0, 3, 12))
    torch.manual_seed(1)
    import mynets  # the same module the command will import

    model = mynets.tiny(width=6)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return tmp_path, model


def _attack(*extra):
    return CliRunner().invoke(
        main,
        ["attack", "--threat", "linf:0.1", "--option", "steps=2", "--n", "6", "--quiet", *extra],
    )


@pytest.mark.parametrize("weights", ["w.safetensors", "w.pt"])
def test_attack_your_own_model_on_your_own_data(workspace, weights):
    folder, reference = workspace
    r = _attack(
        "--model", "mynets:tiny", "--model-arg", "width=6", "--weights", weights,
        "--data", "data.npz", "--out", str(folder / "out"),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads((folder / "out" / "attack.json").read_text())
    assert result["n"] == 6
    assert result["settings"]["checkpoint"] == f"mynets:tiny(width=6) weights={weights}"
    # The weights came from the file: the clean accuracy is the reference model's own.
    x = torch.from_numpy(np.load(folder / "data.npz")["x"][:6]).float()
    y = torch.from_numpy(np.load(folder / "data.npz")["y"][:6])
    with torch.no_grad():
        expected = float((reference(x).argmax(1) == y).float().mean())
    assert result["clean_accuracy"] == pytest.approx(expected)


def test_evaluate_takes_your_own_model_and_data(workspace):
    folder, _ = workspace
    r = CliRunner().invoke(
        main,
        [
            "evaluate", "--model", "mynets:tiny", "--model-arg", "width=6", "--weights",
            "w.safetensors", "--data", "data.npz", "--threat", "linf:0.1", "--n", "4",
            "--preset", "quick", "--no-curves", "--quiet", "--out", str(folder / "ev"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads((folder / "ev" / "report.json").read_text())
    assert report["n"] == 4 and report["settings"]["checkpoint"].startswith("mynets:tiny(")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "nosuchpkg.nets:tiny"], r"no module named 'nosuchpkg'"),
        (["--model", "mynets"], r"Invalid model 'mynets': write package.module:factory"),
        (["--model", "mynets:tinyy"], r"has no attribute 'tinyy' \(it defines: .*tiny"),
        (["--model", "mynets:NOT_CALLABLE"], r"is a int, not a callable"),
        (["--model", "mynets:broken"], r"mynets:broken\(\) raised RuntimeError: no GPU here"),
        (["--model", "mynets:not_a_model"], r"returned a int, not a torch.nn.Module"),
        (
            ["--model", "mynets:tiny", "--model-arg", "width=5", "--weights", "w.safetensors"],
            r"do not fit the model: shape mismatch: 0.weight \(checkpoint \(6, 1, 3, 3\), "
            r"model \(5, 1, 3, 3\)\)",
        ),
        (["--model", "mynets:tiny", "--model-arg", "width"], r"'width' is not KEY=VALUE"),
        (["--model", "mynets:tiny", "--weights", "nope.pt"], r"Weights file not found"),
        (["--model", "mynets:tiny", "--checkpoint", "x.pt"], r"not both"),
        ([], r"Pass either --checkpoint FILE .* or --model"),
        (["--checkpoint", "x.pt", "--weights", "w.pt"], r"--weights go with --model"),
        (["--model", "mynets:tiny", "--dataset", "mnist", "--data", "data.npz"], r"not both"),
    ],
)
def test_each_way_your_own_model_can_fail_is_named(workspace, args, match):
    r = _attack(*args, *([] if "--data" in args else ["--data", "data.npz"]))
    assert r.exit_code != 0
    assert re.search(match, r.output), r.output


def test_weights_with_missing_and_extra_names_are_listed(workspace):
    folder, model = workspace
    state = dict(model.state_dict())
    state["extra.bias"] = state.pop("3.bias")
    torch.save(state, folder / "renamed.pt")
    with pytest.raises(models.ModelSourceError, match=r"missing keys: 3.bias; unexpected keys: "):
        models.load_weights(model, folder / "renamed.pt")
    torch.save({"net": model}, folder / "pickled.pt")  # a whole module: needs unpickling
    with pytest.raises(models.ModelSourceError, match=r"Refusing to load weights"):
        models.read_weights(folder / "pickled.pt")


def _npz(folder, name, **arrays):
    np.savez(folder / name, **arrays)
    return ["--model", "mynets:tiny", "--model-arg", "width=6", "--data", name]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.full((4, 1, 8, 8), 2.0), "y": np.zeros(4, int)}, r"values in \[2, 2\] .*uint8"),
        ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4, int)}, r"must be 4-D"),
        ({"x": np.zeros((4, 1, 8, 8), np.int32), "y": np.zeros(4, int)}, r"dtype int32"),
        ({"x": np.zeros((4, 1, 8, 8), np.uint8), "y": np.zeros(4, int)}, r"channels last"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(3, int)}, r"must be \(4,\)"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(4)}, r"dtype float64 \(must be integer"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.full(4, 7)}, r"label 7 but the model has 3"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.full(4, -1)}, r"label -1 \(labels must be >= 0"),
        ({"x": np.full((4, 1, 8, 8), np.nan), "y": np.zeros(4, int)}, r"NaN or infinite"),
        ({"x": np.zeros((4, 1, 9, 9)), "y": np.zeros(4, int)}, r"cannot take the images"),
        ({"images": np.zeros((4, 1, 8, 8)), "y": np.zeros(4, int)}, r"no array x \(it has: "),
    ],
)
def test_each_way_your_own_data_can_be_wrong_is_named(workspace, arrays, match):
    folder, _ = workspace
    r = _attack(*_npz(folder, "bad.npz", **arrays))
    assert r.exit_code != 0
    assert re.search(match, r.output), r.output


def test_npz_layouts_and_refusals(tmp_path):
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)  # N x H x W x C
    np.savez(tmp_path / "u8.npz", x=u8, y=np.arange(5))
    ds = data.load_npz(tmp_path / "u8.npz", limit=3)
    assert ds.images.shape == (3, 3, 4, 4) and ds.images.dtype == torch.float32
    assert torch.equal(ds.images, torch.from_numpy(u8[:3] / 255.0).float().permute(0, 3, 1, 2))
    assert ds.num_classes == 3 and ds.name == "u8.npz"
    np.save(tmp_path / "one.npy", u8)
    with pytest.raises(ValueError, match="not an .npz archive"):
        data.load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([None, 1], dtype=object), y=np.zeros(2, int))
    with pytest.raises(ValueError, match="object array, which needs pickle"):
        data.load_npz(tmp_path / "obj.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load_npz(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="Data file not found"):
        data.load_npz(tmp_path / "missing.npz")


def test_save_writes_a_safetensors_twin_that_loads_anywhere(tmp_path, mnist_test):
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", "mnist").eval()
    models.save(model, tmp_path / "model.pt", dataset="mnist", metadata={"epochs": 1})
    twin = tmp_path / "model.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.safetensors"]
    weights = load_file(twin)  # any tool reads the weights without multirobust
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    again = models.load(twin)  # and multirobust rebuilds the model from its header
    assert again.multirobust_checkpoint == {"dataset": "mnist", "metadata": {"epochs": 1}}
    x = mnist_test.images[:8]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # Training state is not weights: a checkpoint with extras has no twin.
    models.save(model, tmp_path / "ckpt.pt", extra={"epoch": 3})
    assert not (tmp_path / "ckpt.safetensors").exists()
    with pytest.raises(ValueError, match="cannot go into a .safetensors file"):
        models.save(model, tmp_path / "x.safetensors", extra={"epoch": 3})
    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(models.CheckpointError, match="without multirobust metadata.*--model"):
        models.load(tmp_path / "foreign.safetensors")


def test_checkpoint_option_takes_the_safetensors_twin(mnist_checkpoint, tmp_path):
    twin = mnist_checkpoint.with_suffix(".safetensors")
    assert twin.exists()  # written by models.save in the session fixture
    r = _attack("--checkpoint", str(twin), "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "attack.json").read_text())["settings"]["dataset"] == "mnist"
