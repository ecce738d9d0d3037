"""``multirobust backdoor`` and ``multirobust membership``: a tiny run through every stage,
resume, and bad settings failing before any work with a clear message."""

from __future__ import annotations

import json
import re

from _browser import rendered
from click.testing import CliRunner

from multirobust.cli import main

TINY = [
    "--limit", "600", "--test-n", "200", "--rate", "0.05", "--epochs", "1",
    "--train", "batch_size=64", "--train", "eval_n=20",
    "--nc-epochs", "1", "--finetune-epochs", "1", "--quiet",
]  # fmt: skip


def test_backdoor_run_writes_every_stage_and_resumes(tmp_path):
    out = tmp_path / "bd"
    res = CliRunner().invoke(main, ["backdoor", "run", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output
    assert "poisoned, no defence" in res.output and "after neural-cleanse" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["kind"] == "backdoor" and rep["poisoned"] == 30
    assert set(rep["detectors"]) == {"activation-clustering", "spectral-signatures"}
    assert set(rep["defences"]) == {"fine-pruning", "neural-cleanse"}
    for d in rep["defences"].values():
        assert (out / "defend").exists() and d["evidence"].endswith("result.json")
    page = (out / "report.html").read_text()
    assert 'id="metrics"' in page and "Neural Cleanse" in page
    seen = rendered(out / "report.html", tmp_path)
    if seen is not None:  # the numbers as laid out, and every embedded figure decoded
        asr = rep["metrics"]["poisoned"]["attack_success_rate"]
        assert re.search(
            r"poisoned model, no defence\s+[\d.]+%\s+" + f"{100 * asr:.2f}%", seen["text"]
        )
        assert len(seen["images"]) == 3  # examples, fine-pruning curve, reversed triggers
        for img in seen["images"]:
            assert img["complete"] and img["natural"][0] > 100, img
    again = CliRunner().invoke(main, ["backdoor", "run", "--out", str(out), *TINY])
    assert again.exit_code != 0 and "already holds a backdoor run" in again.output
    stamp = (out / "train" / "model.pt").stat().st_mtime_ns
    resumed = CliRunner().invoke(main, ["backdoor", "train", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "train" / "model.pt").stat().st_mtime_ns == stamp  # nothing retrained
    rep2 = CliRunner().invoke(main, ["backdoor", "report", "--out", str(out)])
    assert rep2.exit_code == 0 and "saved" in rep2.output


def test_backdoor_bad_settings_fail_before_work(tmp_path):
    cases = [
        (["--rate", "1.5"], "Invalid poison rate: 1.5 (must be in (0, 1])"),
        (["--target", "12"], "Invalid target class: 12"),
        (["--patch-size", "40"], "Invalid trigger size: 40"),
        (["--attack", "clean-label"], "needs a surrogate checkpoint"),
        (["--train", "arch=nope"], "Unknown arch 'nope'"),
    ]
    for args, message in cases:
        out = tmp_path / "x"
        res = CliRunner().invoke(
            main,
            ["backdoor", "poison", "--out", str(out), "--limit", "300", "--test-n", "50", *args],
        )
        assert res.exit_code != 0, args
        assert message in res.output, (args, res.output)
        assert not (out / "config.json").exists()
    res = CliRunner().invoke(main, ["backdoor", "detect", "--out", str(tmp_path / "none")])
    assert res.exit_code != 0 and "No backdoor run in" in res.output


def test_membership_bad_settings_fail_before_work(tmp_path):
    res = CliRunner().invoke(
        main,
        ["membership", "run", "--out", str(tmp_path / "m"), "--shadows", "5", "--quiet"],
    )
    assert res.exit_code != 0 and "Invalid shadows: 5" in res.output
    res = CliRunner().invoke(main, ["membership", "attack", "--out", str(tmp_path / "none")])
    assert res.exit_code != 0 and "No membership run in" in res.output
