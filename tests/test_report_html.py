"""report.html as a newcomer reads it (issue 12 items 7-12), checked on the page's HTML.

The browser check of the first screen is in tests/test_report_browser.py; these run without
Chromium.
"""

import copy
import re

import pytest

from multirobust.evaluation import Preset, curve, evaluate
from multirobust.evaluation.report import CATALOGUE, Check

TINY = Preset(
    "tiny", steps=3, target_classes=2, queries=30, rotations=5, translations=3, affine_steps=3
)
THREATS = ["linf:0.1", "l2:1", "spatial:20,2"]


@pytest.fixture(scope="module")
def report(mnist_model, mnist_test):
    x, y = mnist_test.images[:24], mnist_test.labels[:24]
    rep = evaluate(mnist_model, x, y, threats=THREATS, preset=TINY, progress=False)
    # a curve on a subsample of 12 of the 24 examples, as `evaluate --curve-n 12` makes
    rep.curves.append(
        curve(
            mnist_model,
            x[:12],
            y[:12],
            threat_type="linf",
            eps_list=[0, 0.1],
            preset=TINY,
            progress=False,
        )  # fmt: skip
    )
    rep.settings["checkpoint"] = "zoo/standard.pt"
    return rep


def _text(page):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_header_names_model_and_preset_and_marks_upper_bounds(report):
    page = report.to_html()
    model = re.search(r'id="model">([^<]*)<', page).group(1)
    assert model.startswith("zoo/standard.pt (sha256 ")
    assert re.search(r'id="preset">tiny<', page)
    for key, acc in report.robust_accuracy.items():
        cell = re.search(rf'id="robust-{re.escape(key)}">(.*?)</td>', page).group(1)
        assert _text(cell).strip() == f"≤ {100 * acc:.2f}%"
    assert "preset-warning" not in page  # tiny is not flagged; quick is
    quick = copy.deepcopy(report)
    quick.settings["preset"]["name"] = "quick"
    assert "loose upper bounds" in _text(quick.to_html())


def test_every_check_that_ran_is_listed_passed_or_fired(report):
    names = [r["name"] for r in report.checks_run]
    # the model probe, and per threat the outcome checks and the post-attack ones
    for name in ("randomised-model", "zero-gradients", "outside-threat-model"):
        assert name in names, names
    assert {r["threat"] for r in report.checks_run if r["name"] == "more-steps-lower-accuracy"}
    assert set(names) <= set(CATALOGUE)
    fired = copy.deepcopy(report)
    fired.checks.append(Check("zero-gradients", "msg", {"examples": 10, "zero": 7}))
    page = fired.to_html()
    table = re.search(r'<table id="checks-table">(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td><code>([^<]*)</code></td><td>([^<]*)</td>", table)
    assert len(rows) == len(report.checks_run)
    status = {(name, on): _text(s).strip() for s, name, on in rows}
    assert status[("zero-gradients", "model")] == "fired"
    assert status[("randomised-model", "model")] == "passed"
    ran, n_fired = len(rows), len({(c.name, c.threat) for c in fired.checks})
    assert f"{ran} checks ran: {ran - n_fired} passed, {n_fired} fired" in _text(page)


def test_settings_and_evidence_are_tables_with_the_json_collapsed(report):
    fired = copy.deepcopy(report)
    fired.checks.append(Check("zero-gradients", "msg", {"examples": 10, "zero": 7}))
    page = fired.to_html()
    settings = re.search(r'<table id="settings-table">(.*?)</table>', page, re.S).group(1)
    assert "<td>seed</td><td>0</td>" in settings
    assert "<td>attacks / linf:0.1</td>" in settings
    assert re.search(r"<details><summary>settings as JSON</summary><pre id=\"settings\">", page)
    assert "<td>examples</td><td>10</td>" in page and "<td>zero</td><td>7</td>" in page
    assert "<summary>evidence as JSON</summary>" in page


def test_examples_show_clean_once_then_adversarial_perturbation_and_caption(report):
    page = report.to_html()
    section = page.split('<table id="examples">')[1].split("</table>")[0]
    columns = sorted({e.index for e in report.examples})[:8]
    # each clean image once, however many threats broke it
    assert section.count('alt="clean example ') == len(
        set(columns) & {e.index for e in report.examples}
    )
    assert section.count('alt="perturbation of example ') == section.count(
        'alt="adversarial example '
    )
    e = report.examples[0]
    assert f"true <b>{e.label}</b>" in section
    assert f"{e.label} → <b" in section and f"{e.attack}, " in section
    assert "‖δ‖∞ = " in section or "‖δ‖2 = " in section
    assert "perturbation ×" in section


def test_curves_say_they_are_on_a_subsample(report):
    note = re.search(r'id="curve-sample">(.*?)</p>', report.to_html(), re.S).group(1)
    assert "subsample: the first 12 of the 24 evaluated examples" in _text(note)


def test_timings_in_words_and_spatial_sizes_in_degrees_and_pixels(report):
    page = report.to_html()
    timings = re.search(r'<table id="timings">(.*?)</table>', page, re.S).group(1)
    assert "checks_before" not in timings and "model checks before the attacks" in timings
    spatial = report.threats["spatial:20,2"]
    row = re.search(r'id="robust-spatial:20,2">.*?</tr>', page, re.S).group(0)
    if spatial.largest:  # broken examples: the largest angle and shift, with units
        assert re.search(r"rotation [\d.]+°, translation [\d.]+ px", row), row
    else:
        assert "none broken" in row
