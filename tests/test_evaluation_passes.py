"""Pass counting: the counting wrapper, the per-threat passes in the report, and the AutoAttack
cost model of benchmarks/autoattack_cost.py (run end to end on a few images)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from multirobust.evaluation import Preset, evaluate
from multirobust.evaluation.passes import PassCounter

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "autoattack_cost.py"


def _bench():
    spec = importlib.util.spec_from_file_location("autoattack_cost_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pass_counter_counts_examples_forward_and_backward():
    model = PassCounter(nn.Linear(3, 2))
    x = torch.rand(5, 3)
    with torch.no_grad():
        model(x)
    assert model.counts() == (5, 0)
    xs = torch.rand(4, 3, requires_grad=True)
    out = model(xs)
    assert model.counts() == (9, 0)  # a forward with a graph is not yet a backward
    (grad,) = torch.autograd.grad(out.sum(), xs)
    assert model.counts() == (9, 4)
    assert torch.equal(grad, model.model.weight.sum(0).expand(4, 3))
    model(torch.rand(2, 3))  # output never differentiated: no backward pass
    assert model.counts() == (11, 4)
    model.reset()
    assert model.counts() == (0, 0)


def test_report_counts_the_passes_of_each_threat(mnist_model, mnist_test):
    x, y = mnist_test.images[:40], mnist_test.labels[:40]
    # No transfer fallback: its masked-gradient probe (one forward and backward pass per
    # still-robust example) is evaluation cost, not an attack's query.
    preset = Preset(
        "p", steps=8, target_classes=2, queries=40, rotations=5, translations=3, transfer=False
    )
    rep = evaluate(
        mnist_model,
        x,
        y,
        threats=["linf:0.05", "spatial:20,2"],
        preset=preset,
        progress=False,
        run_checks=False,
    )
    lin, spatial = rep.threats["linf:0.05"], rep.threats["spatial:20,2"]
    # every forward pass of the attacks goes through the counter, as through their own
    assert lin.forward_passes == lin.queries > 0
    assert spatial.forward_passes == spatial.queries > 0
    # white-box: at least one backward per APGD step on each attacked example
    attacked = sum(rep.clean_correct)
    assert lin.backward_passes >= preset.steps * attacked
    assert spatial.backward_passes == 0  # grid search uses no gradient
    # the JSON round trip keeps them
    again = type(rep).from_json(rep.to_json())
    assert again.threats["linf:0.05"].backward_passes == lin.backward_passes


def test_autoattack_cost_model():
    bench = _bench()
    assert bench.autoattack_robust_example() == {"forward": 7800, "backward": 1900}
    # With FAB-T the standard preset spends what AutoAttack's standard version does.
    assert bench.preset_robust_example("standard") == {"forward": 7800, "backward": 1900}
    cost = bench.autoattack_on_outcomes(
        ["apgd-ce", "apgd-t", "square", None, None], [False, False, False, True, False]
    )
    # per example: 100 | 200..1000 | 2800+1..7800 | 7800 | 0 (not clean-correct) forward
    assert cost["forward_low"] == pytest.approx((100 + 200 + 2801 + 7800) / 5)
    assert cost["forward_high"] == pytest.approx((100 + 1000 + 7800 + 7800) / 5)
    assert cost["backward_low"] == pytest.approx((100 + 200 + 1900 + 1900) / 5)
    assert cost["backward_high"] == pytest.approx((100 + 1000 + 1900 + 1900) / 5)


def test_benchmark_runs_end_to_end(mnist_model, tmp_path, monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setattr(bench, "_model", lambda checkpoint: mnist_model)
    small = Preset("small", steps=5, target_classes=2, queries=30)  # the run, not its budget
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: evaluate(*a, **{**k, "preset": small}))
    monkeypatch.setattr(
        sys,
        "argv",
        ["autoattack_cost.py", "--n", "12", "--threat", "linf:0.3", "--out", str(tmp_path)],
    )
    bench.main()
    printed = capsys.readouterr().out
    assert "| linf:0.3 |" in printed and "AutoAttack standard 7800 / 1900" in printed
    result = json.loads((tmp_path / "autoattack_cost.json").read_text())
    (row,) = result["threats"]
    assert result["n"] == 12 and row["threat"] == "linf:0.3"
    assert row["forward_per_example"] > 0 and row["backward_per_example"] > 0
    assert result["all_passes_per_example"]["forward"] > row["forward_per_example"]
    assert "| linf:0.3 |" in (tmp_path / "autoattack_cost.md").read_text()
    monkeypatch.setattr(sys, "argv", ["autoattack_cost.py", "--threat", "l1:10"])
    with pytest.raises(SystemExit):
        bench.main()
