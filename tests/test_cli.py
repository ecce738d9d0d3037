"""The command line: attack, quickstart, list, and clear errors."""

import importlib
import json

import pytest
import torch
from click.testing import CliRunner

from multirobust.cli import main


def test_attack_command(mnist_checkpoint, tmp_path):
    out = tmp_path / "out"
    adv = tmp_path / "adv.pt"
    result = CliRunner().invoke(
        main,
        [
            "attack",
            "--checkpoint",
            str(mnist_checkpoint),
            "--dataset",
            "mnist",
            "--threat",
            "linf:0.3",
            "--threat",
            "spatial:30,3",
            "--attack",
            "auto",
            "--option",
            "steps=10",
            "--n",
            "60",
            "--quiet",
            "--out",
            str(out),
            "--save-adv",
            str(adv),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "linf:0.3" in result.output and "(clean)" in result.output
    report = json.loads((out / "attack.json").read_text())
    assert report["n"] == 60
    assert report["threats"]["linf:0.3"]["robust_accuracy"] < 0.1
    assert report["threats"]["spatial:30,3"]["attack"] == "spatial-grid"
    assert report["union_accuracy"] <= report["threats"]["linf:0.3"]["robust_accuracy"]
    assert (out / "attack.md").read_text().startswith("# multirobust attack")
    saved = torch.load(adv, weights_only=True)
    assert saved["x_adv"]["linf:0.3"].shape == (60, 1, 28, 28)


def test_attack_command_errors(mnist_checkpoint, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        main, ["attack", "--checkpoint", str(tmp_path / "none.pt"), "--threat", "linf:0.3"]
    )
    assert r.exit_code != 0 and "not found" in r.output
    r = runner.invoke(
        main, ["attack", "--checkpoint", str(mnist_checkpoint), "--threat", "linf:-1"]
    )
    assert r.exit_code != 0 and "Invalid eps" in r.output
    r = runner.invoke(
        main,
        [
            "attack",
            "--checkpoint",
            str(mnist_checkpoint),
            "--threat",
            "linf:0.3",
            "--attack",
            "nope",
        ],
    )
    assert r.exit_code != 0 and "Unknown attack 'nope'" in r.output
    r = runner.invoke(
        main,
        [
            "attack",
            "--checkpoint",
            str(mnist_checkpoint),
            "--n",
            "5",
            "--threat",
            "linf:0.3",
            "--option",
            "stepz=3",
            "--quiet",
        ],
    )
    assert r.exit_code != 0 and "Unknown option(s) stepz" in r.output
    r = runner.invoke(
        main,
        [
            "attack",
            "--checkpoint",
            str(mnist_checkpoint),
            "--n",
            "5",
            "--threat",
            "linf:0.3",
            "--dataset",
            "imagenet",
        ],
    )
    assert r.exit_code != 0 and "Unknown dataset 'imagenet'" in r.output


def test_missing_dataset_is_a_clear_error(mnist_checkpoint, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "attack",
            "--checkpoint",
            str(mnist_checkpoint),
            "--threat",
            "linf:0.3",
            "--no-download",
            "--data-root",
            str(tmp_path / "empty"),
            "--dataset",
            "fashion-mnist",
            "--n",
            "5",
        ],
    )
    assert r.exit_code != 0
    assert "t10k-images-idx3-ubyte.gz" in r.output and str(tmp_path / "empty") in r.output


def test_quickstart_trains_then_ends_in_the_evaluation_report(tmp_path):
    out = tmp_path / "qs"
    r = CliRunner().invoke(
        main, ["quickstart", "--seconds", "3", "--n", "20", "--quiet", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    for t in ("linf:0.3", "l2:2", "l1:10", "spatial:30,3", "(clean)", "union (worst case)"):
        assert t in r.output
    assert r.output.rstrip().endswith(f"open {out / 'report.html'} in a browser")
    assert (out / "model.pt").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 20 and report["settings"]["preset"]["name"] == "quick"
    assert set(report["robust_accuracy"]) == {"linf:0.3", "l2:2", "l1:10", "spatial:30,3"}
    assert [c["threat_type"] for c in report["curves"]] == ["l1", "l2", "linf"]
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_list():
    r = CliRunner().invoke(main, ["list"])
    assert r.exit_code == 0 and "apgd" in r.output and "small_cnn" in r.output


def _unwritable(tmp_path):
    """An output folder that cannot be created, even by root: its parent is a file."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    return str(blocker / "out")


@pytest.mark.parametrize(
    ("args", "work"),
    [
        (["attack", "--threat", "linf:0.3", "--out", "{bad}", "--n", "5"], "attack.run_attack"),
        (["attack", "--threat", "linf:0.3", "--save-adv", "{bad}/a.pt"], "attack.run_attack"),
        (["evaluate", "--threat", "linf:0.3", "--out", "{bad}", "--n", "5"], "evaluate.evaluate"),
        (["optimizer-study", "--out", "{bad}", "--n", "5"], "optimizer_study.optimizer_study"),
        (["universal", "--out", "{bad}", "--n-train", "5"], "universal.universal_perturbation"),
    ],
)
def test_unwritable_out_is_found_before_the_work(
    mnist_checkpoint, tmp_path, monkeypatch, args, work
):
    module, name = work.split(".")
    monkeypatch.setattr(f"multirobust.cli.{module}.{name}", _must_not_run)
    bad = _unwritable(tmp_path)
    full = [a.format(bad=bad) for a in args] + ["--checkpoint", str(mnist_checkpoint), "--quiet"]
    r = CliRunner().invoke(main, full)
    assert r.exit_code != 0
    assert "Cannot write to the output folder" in r.output, r.output


def _must_not_run(*args, **kwargs):
    raise AssertionError("the work started before the output folder was checked")


def test_unwritable_out_of_quickstart_train_and_compare(tmp_path, monkeypatch):
    bad = _unwritable(tmp_path)
    monkeypatch.setattr("multirobust.cli.quickstart.train_standard", _must_not_run)
    monkeypatch.setattr("multirobust.cli.compare.compare", _must_not_run)
    monkeypatch.setattr(importlib.import_module("multirobust.training.fit"), "_fit", _must_not_run)
    for args in (
        ["quickstart", "--out", bad, "--quiet"],
        ["compare", str(tmp_path), "--out", bad],
        ["train", "--out", bad, "--limit", "64", "--eval-n", "8", "--epochs", "1", "--quiet"],
    ):
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0
        assert "Cannot write to the output folder" in r.output, (args, r.output)


def test_quickstart_without_data_fails_and_creates_nothing(tmp_path, monkeypatch):
    # No data under the root and no network: every mirror fails at once.
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr("multirobust.data.download.urllib.request.urlopen", offline)
    monkeypatch.delenv("MULTIROBUST_DATA_MIRROR", raising=False)
    root, out = tmp_path / "shared" / "data", tmp_path / "runs" / "quickstart"
    r = CliRunner().invoke(
        main, ["quickstart", "--data-root", str(root), "--out", str(out), "--quiet"]
    )
    assert r.exit_code != 0
    assert "MNIST files missing in" in r.output and str(root / "mnist") in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data folder, no output folder
