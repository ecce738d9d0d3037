"""``multirobust audit``: a tiny model trained from a recipe through every part, the matrix
and its evidence links, resume (finished parts read back, failed and changed ones run again),
bad inputs failing before any work, the page in headless Chromium."""

from __future__ import annotations

import json
import re

import pytest
import torch
from _browser import rendered
from click.testing import CliRunner
from torch import nn

from multirobust import audit, data
from multirobust.audit import run as audit_run
from multirobust.audit.external import package_available
from multirobust.cli import main
from multirobust.evaluation import Preset
from multirobust.training import TrainConfig, fit

TINY = Preset(
    "tiny", steps=5, target_classes=2, queries=50, rotations=5, translations=3, affine_steps=5
)
# The poisoning part at its smallest: what is checked is the wiring, not the backdoor's
# strength (tests/test_poisoning.py and test_backdoor_cli.py measure that).
POISON = {
    "limit": 300,
    "test_n": 50,
    "rate": 0.05,
    "baseline": False,
    "detectors": ["spectral-signatures"],
    "defences": ["fine-pruning"],
    "finetune_epochs": 1,
    "train": {"eval_n": 10},
}
N = 20


def _config(**overrides):
    values = dict(preset=TINY, n=N, goal_steps=3, membership_n=100, poison=POISON, progress=False)
    values.update(overrides)
    return audit.AuditConfig(**values)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """small_cnn trained one epoch on the first 300 MNIST images by fit: a checkpoint with its
    recipe (limit 300, so the next training images are non-members)."""
    out = tmp_path_factory.mktemp("tiny")
    cfg = TrainConfig(
        dataset="mnist", arch="small_cnn", epochs=1, limit=300, batch_size=64, eval_n=10,
        eval_steps=1, out=str(out), progress=False,
    )  # fmt: skip
    fit(cfg)
    return out / "model.pt"


@pytest.fixture(scope="module")
def audited(tiny, tmp_path_factory):
    from multirobust import models

    out = tmp_path_factory.mktemp("audit")
    model = models.load(tiny)
    test = data.load("mnist", "test", limit=N)
    body = audit.run_audit(model, test, _config(), out, name=str(tiny))
    return out, body, tiny


def test_a_tiny_model_goes_through_every_part(audited):
    out, body, _ = audited
    status = {k: v["status"] for k, v in body["parts"].items()}
    assert {k: status[k] for k in ("evasion", "goals", "membership", "poisoning")} == dict.fromkeys(
        ("evasion", "goals", "membership", "poisoning"), "done"
    )
    for part in ("certify", "api"):  # certify runs by itself once the package is installed
        assert status[part] == (
            "done" if part == "certify" and package_available(part) else "not-run"
        )
    ev = body["parts"]["evasion"]["summary"]
    # The union is the per-example worst case: never above a threat's own number.
    assert ev["union_accuracy"] <= min(ev["robust_accuracy"].values()) <= ev["clean_accuracy"]
    assert set(ev["robust_accuracy"]) == set(audit.DEFAULT_THREATS["mnist"])
    lt = body["parts"]["membership"]["summary"]["loss_threshold"]
    assert lt["members"] == 100 and lt["non_members"] == 100
    assert lt["non_member_source"] == "training split after the limit"
    assert "yeom" in lt  # the recipe recorded the last training loss
    po = body["parts"]["poisoning"]["summary"]
    assert po["poisoned"] == 15 and set(po["defences"]) == {"fine-pruning"}
    # The poisoning part retrained the model's own recipe (architecture, epochs, batch size).
    bd = json.loads((out / "poisoning" / "config.json").read_text())
    assert bd["train"]["batch_size"] == 64 and bd["train"]["epochs"] == 1 and bd["limit"] == 300


def test_every_finding_sits_in_its_cell_and_links_to_files_that_exist(audited):
    out, body, _ = audited
    cells = {(f["knowledge"], f["surface"], f["goal"], f["part"]) for f in body["findings"]}
    assert ("white box", "inference", "misclassification", "evasion") in cells
    assert ("white box", "inference", "source/target", "goals") in cells
    assert ("black box", "inference", "membership", "membership") in cells
    assert ("black box", "data", "targeted", "poisoning") in cells
    assert ("black box", "training", "targeted", "poisoning") in cells
    for f in body["findings"]:
        for e in f["evidence"]:
            assert (out / e).is_file(), e
    page = (out / "audit.html").read_text()
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert "evasion/report.html" in hrefs and "poisoning/report.html" in hrefs
    for h in hrefs:
        assert (out / h).is_file(), h
    assert json.loads((out / "audit.json").read_text()) == body


def test_resume_reads_finished_parts_back_and_reruns_failed_or_changed_ones(
    audited, tmp_path, monkeypatch
):
    out, body, tiny = audited
    from multirobust import models

    model = models.load(tiny)
    test = data.load("mnist", "test", limit=N)
    with pytest.raises(audit.AuditError, match="already holds an audit"):
        audit.run_audit(model, test, _config(), out)
    stamps = {p: (out / p / "part.json").stat().st_mtime_ns for p in audit.PARTS}
    again = audit.run_audit(model, test, _config(), out, resume=True, name=body["model"]["name"])
    for p in ("evasion", "goals", "membership", "poisoning"):
        assert (out / p / "part.json").stat().st_mtime_ns == stamps[p], p  # not run again
    assert again["parts"]["evasion"] == body["parts"]["evasion"]
    # A changed setting runs its parts again, and only those.
    changed = audit.run_audit(model, test, _config(goal_steps=4), out, resume=True)
    assert (out / "goals" / "part.json").stat().st_mtime_ns != stamps["goals"]
    assert (out / "evasion" / "part.json").stat().st_mtime_ns == stamps["evasion"]
    assert changed["parts"]["goals"]["settings"]["goal_steps"] == 4

    # A part that raises is recorded as failed, the others go on; resume runs it again.
    fresh = tmp_path / "fresh"

    def broken(ctx, folder, resume):
        raise RuntimeError("disk on fire")

    runners = dict(audit_run._RUNNERS, goals=broken)
    monkeypatch.setattr(audit_run, "_RUNNERS", runners)
    skip = ["evasion", "poisoning"]
    first = audit.run_audit(model, test, _config(skip=skip), fresh)
    assert first["parts"]["goals"]["status"] == "failed"
    assert "disk on fire" in first["parts"]["goals"]["reason"]
    assert first["parts"]["membership"]["status"] == "done"
    monkeypatch.undo()
    second = audit.run_audit(model, test, _config(skip=skip), fresh, resume=True)
    assert second["parts"]["goals"]["status"] == "done"
    assert second["parts"]["evasion"]["status"] == "not-run"


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_without_a_recipe_membership_and_poisoning_are_not_assessed(tmp_path):
    test = data.load("mnist", "test", limit=N)
    body = audit.run_audit(_Linear(), test, _config(skip=["evasion", "goals"]), tmp_path / "a")
    for part in ("membership", "poisoning"):
        assert body["parts"][part]["status"] == "not-assessed"
        assert "no recipe" in body["parts"][part]["reason"]
    page = (tmp_path / "a" / "audit.html").read_text()
    assert "no recipe" in page and "not-assessed" in page


def test_result_folders_of_certify_and_api_are_read_as_evidence(tmp_path):
    cert, api = tmp_path / "cert", tmp_path / "api"
    cert.mkdir()
    api.mkdir()
    (cert / "certify.json").write_text(json.dumps({
        "format": "multirobust-certification", "version": 1, "n": 20, "threats": ["linf:0.1"],
        "methods": {"ibp": {"classifier": "base", "certified_accuracy": {"linf:0.1": 0.35},
                            "union_accuracy": 0.35}},
    }))  # fmt: skip
    (cert / "certify.html").write_text("<html></html>")
    (api / "remote.json").write_text(json.dumps({
        "format": "multirobust-remote-attack", "version": 1, "budgets": [100, 1000],
        "runs": [{"attack": "square", "output": "label", "threat": "linf:0.3",
                  "source": "http://127.0.0.1:1", "summary": {
                      "clean_accuracy": 0.9, "robust_accuracy": {"100": 0.6, "1000": 0.25}}}],
    }))  # fmt: skip
    test = data.load("mnist", "test", limit=N)
    cfg = _config(
        skip=["evasion", "goals", "membership", "poisoning"],
        certify_dir=str(cert),
        api_dir=str(api),
    )
    body = audit.run_audit(_Linear(), test, cfg, tmp_path / "a")
    cells = {(f["knowledge"], f["part"]): f for f in body["findings"]}
    c = cells[("white box", "certify")]
    assert "linf:0.1 35.0%" in c["text"] and c["evidence"][0].endswith("certify.html")
    a = cells[("black box", "api")]
    assert "25.0% at 1000 queries" in a["text"] and a["label"].startswith("square")
    page = (tmp_path / "a" / "audit.html").read_text()
    assert (cert / "certify.html").resolve().as_uri() in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pair", "3:3"], "Invalid pair: 3:3"),
        (["--pair", "3"], "is not SOURCE:TARGET"),
        (["--threat", "linf:abc"], "Invalid threat 'linf:abc'"),
        (["--poison", "rate=1.5"], "Invalid poison rate: 1.5"),
        (["--poison", "nope=1"], "Unknown backdoor setting(s): nope"),
        (["--poison", 'train={"arch":"nope"}'], "Unknown arch 'nope'"),
        (["--shadows", "/nonexistent/shadows"], "Invalid shadows: /nonexistent/shadows"),
        (["--certify", "."], "holds no report of that kind"),
    ],
)
def test_bad_inputs_fail_before_any_part(tiny, tmp_path, args, message):
    out = tmp_path / "a"
    res = CliRunner().invoke(
        main, ["audit", "--checkpoint", str(tiny), "--out", str(out), "--quiet", *args]
    )
    assert res.exit_code != 0, res.output
    assert message in res.output, res.output
    assert not (out / "audit.json").exists()


def test_no_default_threats_outside_mnist():
    with pytest.raises(audit.AuditError, match="No default threat models for dataset 'cifar10'"):
        audit.AuditConfig().validate("cifar10", 10)


def test_the_command_runs_the_cheap_parts_and_prints_each_status(tiny, tmp_path):
    out = tmp_path / "a"
    res = CliRunner().invoke(main, [
        "audit", "--checkpoint", str(tiny), "--out", str(out), "--n", "20", "--goal-steps", "2",
        "--membership-n", "50", "--skip", "evasion", "--skip", "poisoning", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert re.search(r"goals\s+done", res.output) and re.search(r"evasion\s+not-run", res.output)
    assert (out / "audit.html").is_file() and (out / "goals" / "goals.json").is_file()


def test_the_page_renders_in_headless_chromium(audited, tmp_path):
    out, body, _ = audited
    seen = rendered(out / "audit.html", tmp_path)
    if seen is None:
        pytest.skip("Chromium is not installed")
    text = seen["text"]
    assert "White box attacker" in text and "Black box attacker" in text
    union = body["parts"]["evasion"]["summary"]["union_accuracy"]
    assert f"union {100 * union:.1f}%" in text  # the number as laid out in its cell
    assert "badnets backdoor, 5.0% poisoned, target 0" in text
    assert seen["width"] <= 1400  # the matrix fits the default window, no sideways scroll
