"""evaluate() under bad inputs and broken files: clear errors before any attack runs, nothing
finished lost; and the explicit attack lists (the path `multirobust attack` will take)."""

import json
import logging

import pytest
import torch

from multirobust import attacks
from multirobust.evaluation import AttackSpec, Preset, evaluate, runner

TINY = Preset("tiny", steps=3, target_classes=0, queries=0)
KW = dict(threats=["linf:0.1"], preset=TINY, progress=False, run_checks=False)


@pytest.fixture(scope="module")
def data(mnist_test):
    return mnist_test.images[:40], mnist_test.labels[:40]


@pytest.fixture
def no_attack(monkeypatch):
    """Any attack that runs fails the test: errors must come before the first one."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"attack {self.name} ran before the error")

    monkeypatch.setattr(attacks.base.Attack, "__call__", refuse)


@pytest.mark.parametrize(
    "bad, message",
    [
        (10, r"Labels out of range: found 0\.\.10, the model has 10 classes"),
        (-1, r"Labels out of range: found -1\.\.9"),
        (-100, r"-100 is cross-entropy's ignore value, not a label"),
    ],
)
def test_labels_out_of_range_fail_before_any_attack(mnist_model, data, no_attack, bad, message):
    x, y = data
    y = y.clone()
    y[3] = bad
    with pytest.raises(ValueError, match=message):
        evaluate(mnist_model, x, y, **KW)


def test_an_unwritable_output_folder_fails_before_any_attack(
    mnist_model, data, tmp_path, no_attack
):
    x, y = data
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="Cannot write to the output folder"):
        evaluate(mnist_model, x, y, out=blocker / "run", **KW)


def test_out_gets_the_json_and_html_report(mnist_model, data, tmp_path):
    x, y = data
    rep = evaluate(mnist_model, x, y, out=tmp_path / "run", **KW)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["robust_accuracy"] == rep.robust_accuracy
    assert (tmp_path / "run" / "report.html").read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="give out="):
        evaluate(mnist_model, x, y, resume=True, **KW)


def test_float64_inputs_are_converted_to_the_models_dtype_and_said_so(mnist_model, data, caplog):
    x, y = data
    with caplog.at_level(logging.WARNING, logger="multirobust.evaluation.inputs"):
        rep64 = evaluate(mnist_model, x.double(), y, **KW)
    assert "converted the torch.float64 inputs to the model's torch.float32" in caplog.text
    rep32 = evaluate(mnist_model, x, y, **KW)
    # float64 → float32 of float32 images is exact: the same numbers.
    assert rep64.threats["linf:0.1"].robust == rep32.threats["linf:0.1"].robust
    assert rep64.settings["dtype"] == "torch.float32"


def test_a_model_on_another_device_is_a_clear_error_in_the_attack_contract(data):
    x, y = data
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).to("meta")
    with pytest.raises(ValueError, match=r"inputs are on cpu but the model is on meta"):
        attacks.create("fgsm", threat="linf:0.1")(model, x, y)


def test_a_damaged_batch_file_is_named_and_only_its_batch_runs_again(
    mnist_model, data, tmp_path, monkeypatch, caplog
):
    x, y = data
    kw = {**KW, "threats": ["linf:0.1", "spatial:20,2"], "batch_size": 10}
    full = evaluate(mnist_model, x, y, out=tmp_path, resume=True, **kw)
    partial = tmp_path / "partial"
    damaged = partial / "batch_00002.json"
    text = damaged.read_text()
    damaged.write_text(text[: len(text) // 2])  # a write cut short
    (partial / "batch_00001.json").write_text(text.replace('"labels"', '"lables"'))
    calls = []
    real = runner._run_batch
    monkeypatch.setattr(
        runner, "_run_batch", lambda *a, **k: calls.append(k["batch_index"]) or real(*a, **k)
    )
    with caplog.at_level(logging.WARNING, logger="multirobust.evaluation.resume"):
        again = evaluate(mnist_model, x, y, out=tmp_path, resume=True, **kw)
    assert sorted(calls) == [1, 2]
    assert str(damaged) in caplog.text and "batch_00001.json" in caplog.text
    assert again.threats["linf:0.1"].robust == full.threats["linf:0.1"].robust
    assert again.threats["spatial:20,2"].params == full.threats["spatial:20,2"].params
    # Repaired on disk: a third run recomputes nothing.
    calls.clear()
    evaluate(mnist_model, x, y, out=tmp_path, resume=True, **kw)
    assert calls == []


def test_an_explicit_attack_list_replaces_the_preset(mnist_model, data):
    x, y = data
    one = evaluate(mnist_model, x, y, **{**KW, "threats": ["linf:0.1", "l2:1"]}, attacks=["fgsm"])
    assert [t.attacks for t in one.threats.values()] == [["fgsm"], ["fgsm"]]
    assert one.settings["attacks"]["l2:1"] == [{"label": "fgsm", "attack": "fgsm", "options": {}}]
    # The same as running the attack by hand, batch by batch, with the evaluation's seeds.
    alone = attacks.create("fgsm", threat="linf:0.1")(mnist_model, x, y)
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    assert one.threats["linf:0.1"].robust == (correct & alone.robust).tolist()
    per_threat = evaluate(
        mnist_model,
        x,
        y,
        **{**KW, "threats": ["linf:0.1", "spatial:20,2"]},
        attacks={
            "linf:0.1": [AttackSpec("pgd-3", "pgd", {"steps": 3})],
            "spatial:20,2": ["spatial-random"],
        },
        keep_adversarial=True,
    )
    assert per_threat.threats["linf:0.1"].attacks == ["pgd-3"]
    adv = per_threat.adversarial["linf:0.1"]
    broken = ~torch.tensor(per_threat.threats["linf:0.1"].robust) & correct
    with torch.no_grad():
        assert (mnist_model(adv[broken]).argmax(1) != y[broken]).all()
    assert torch.equal(adv[~broken], x[~broken])
    assert "adversarial" not in per_threat.to_dict()
    with pytest.raises(ValueError, match="does not support threat spatial"):
        evaluate(mnist_model, x, y, **{**KW, "threats": ["spatial:20,2"]}, attacks=["pgd"])
    with pytest.raises(ValueError, match=r"No attacks given for threat\(s\) l2:1"):
        evaluate(mnist_model, x, y, **{**KW, "threats": ["l2:1"]}, attacks={"linf:0.1": ["pgd"]})


def test_a_minimum_norm_attack_breaks_what_it_finds_within_the_budget(mnist_model, data):
    x, y = data
    rep = evaluate(mnist_model, x, y, **{**KW, "threats": ["l2:1"]}, attacks=["deepfool-l2"])
    found = attacks.create_minimum_norm("deepfool-l2")(mnist_model, x, y)
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    within = found.success_at(1.0) & correct
    broken = ~torch.tensor(rep.threats["l2:1"].robust) & correct
    # Every example DeepFool finds within ε is broken by the budgeted run (the same points).
    assert broken[within].all()
    assert rep.robust_accuracy["l2:1"] <= found.robust_accuracy(1.0) + 1e-9
