"""benchmarks/training_cost.py: every method's counted passes equal the theoretical count."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from multirobust.training import methods

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "training_cost.py"


def _load():
    spec = importlib.util.spec_from_file_location("training_cost_bench", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_counted_passes_match_the_theory_for_every_method(tmp_path):
    bench = _load()
    out_json, out_md = tmp_path / "cost.json", tmp_path / "cost.md"
    rows = bench.main(
        ["--batches", "1", "--batch-size", "8", "--steps", "2", "--replays", "3"]
        + ["--threats", "linf:0.3,l2:2", "--repeats", "1"]
        + ["--json", str(out_json), "--markdown", str(out_md)]
    )
    assert [r["method"] for r in rows] == methods()
    by = {r["method"]: r for r in rows}
    issue = [
        "standard",
        "pgd",
        "free",
        "fast",
        "trades",
        "max",
        "avg",
        "random",
        "msd",
        "eat",
        "max-apgd",
    ]
    assert all(by[m]["theory_forward"] is not None for m in [*issue, "ensemble"])
    for r in rows:
        if r["theory_forward"] is None:  # a method newer than the benchmark's table
            continue
        assert (r["counted_forward"], r["counted_backward"]) == (
            r["theory_forward"],
            r["theory_backward"],
        ), r["method"]
        assert r["median_seconds"] > 0 and r["cost_vs_standard"] > 0
    # k = 2, m = 3, T = 2: spot-check the formulas themselves.
    assert (by["pgd"]["theory_forward"], by["pgd"]["theory_backward"]) == (3, 3)
    assert (by["free"]["theory_forward"], by["free"]["theory_backward"]) == (3, 3)
    assert (by["max"]["theory_forward"], by["max"]["theory_backward"]) == (7, 5)
    assert (by["msd"]["theory_forward"], by["msd"]["theory_backward"]) == (7, 3)
    # E-AT costs one threat's PGD whatever T: k + 2 forward, k + 1 backward.
    assert (by["eat"]["theory_forward"], by["eat"]["theory_backward"]) == (4, 3)
    assert (by["max-apgd"]["theory_forward"], by["max-apgd"]["theory_backward"]) == (7, 5)
    assert by["standard"]["cost_vs_standard"] == 1.0
    saved = json.loads(out_json.read_text())
    assert saved["benchmark"] == "training_cost" and len(saved["rows"]) == len(rows)
    table = out_md.read_text()
    assert "| max | 7 / 5 | 7 / 5 | 5.67× |" in table
    assert "measured vs pgd" in table


def test_bad_flags_are_refused():
    bench = _load()
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "pgd,madry"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--method-steps", "max-apgd=0"])


def test_per_method_steps_change_that_method_only():
    bench = _load()
    rows = bench.main(
        ["--batches", "1", "--batch-size", "4", "--steps", "2", "--methods", "pgd,max-apgd"]
        + ["--method-steps", "max-apgd=1", "--threats", "linf:0.3,l1:10", "--repeats", "1"]
    )
    by = {r["method"]: r for r in rows}
    # k = 1 for max-apgd (T = 2): 2·2 + 1 forward, 2·1 + 1 backward; pgd keeps k = 2.
    assert (by["max-apgd"]["counted_forward"], by["max-apgd"]["counted_backward"]) == (5, 3)
    assert (by["pgd"]["counted_forward"], by["pgd"]["counted_backward"]) == (3, 3)
