"""``multirobust landscape``: the files it writes, resuming after an interruption, clear errors,
the embeddable report section, and the page in headless Chromium."""

import html
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from test_report_browser import CHROMIUM, PROBE, _chromium

from multirobust import landscape
from multirobust.cli import main
from multirobust.landscape import run as run_module
from multirobust.landscape.html import render_section
from multirobust.landscape.storage import load_npz
from multirobust.pages import page as html_page

ARGS = [
    "--threat",
    "linf:0.3",
    "--threat",
    "l1:10",
    "--examples",
    "1",
    "--start",
    "3",
    "--points",
    "7",
    "--attack-steps",
    "5",
    "--quiet",
]


def _invoke(args):
    return CliRunner().invoke(main, ["landscape", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(mnist_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("landscape")
    result = _invoke(
        [
            "--checkpoint",
            str(mnist_checkpoint),
            *ARGS,
            "--weight-space",
            "--weight-examples",
            "40",
            "--weight-points",
            "3",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_command_writes_page_json_figures_and_grids(run):
    out, output = run
    assert "saved" in output and "linf:0.3" in output
    report = json.loads((out / "landscape.json").read_text())
    assert report["format"] == "multirobust-landscape"
    assert [t["threat"] for t in report["threats"]] == ["linf:0.3", "l1:10"]
    for t in report["threats"]:
        assert t["examples"] == [3]
        for i in (3,):
            arrays = load_npz(out / t["grids"] / f"example-{i}.npz")  # no pickles
            assert arrays["s_value_ce"].shape == (1, 7, 7)
            assert arrays["s_inside"].dtype == np.bool_
            assert str(arrays["s_threat"]) == t["threat"]
            assert (out / "figures" / f"{t['grids'].split('/')[-1]}-example-{i}.png").exists()
            assert (out / "figures" / f"{t['grids'].split('/')[-1]}-example-{i}.svg").exists()
        # the JSON's numbers are the grids' numbers
        first = load_npz(out / t["grids"] / "example-3.npz")
        inside = first["s_inside"][0]
        assert t["grid_max_loss_in_ball"][0] == pytest.approx(
            float(first["s_value_ce"][0][inside].max())
        )
    weights = report["weights"]
    assert set(weights) == {"1d", "2d"}
    assert weights["1d"]["points"] == 51 and weights["2d"]["points"] == 3
    assert load_npz(out / "grids" / "weights-2d.npz")["loss"].shape == (3, 3)
    assert (out / "figures" / "weights.png").exists() and (out / "figures" / "weights.svg").exists()
    text = (out / "landscape.html").read_text()
    assert "<h2>Loss landscapes</h2>" in text and "Weight space" in text


def test_resume_reuses_finished_examples_and_recomputes_the_rest(
    mnist_model, mnist_test, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    opts = dict(out_dir=out, points=5, attack_steps=3, progress=False)
    threats = ["linf:0.3", "l2:2"]
    real = run_module._compute_unit
    calls = []

    def crash_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise RuntimeError("interrupted")  # after three finished examples
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "_compute_unit", crash_after_three)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_module.run_landscapes(mnist_model, x, y, threats, **opts)
    saved = list((out / "grids").rglob("*.npz"))
    assert len(saved) == 3 and not list(out.rglob("*.tmp"))
    stamps = {p: p.stat().st_mtime_ns for p in saved}

    counted = []
    monkeypatch.setattr(
        run_module, "_compute_unit", lambda *a, **k: counted.append(a[3]) or real(*a, **k)
    )
    resumed = run_module.run_landscapes(mnist_model, x, y, threats, resume=True, **opts)
    assert len(counted) == 1  # only the unfinished example
    for p, stamp in stamps.items():
        assert p.stat().st_mtime_ns == stamp  # finished ones were read back, not rewritten
    fresh = run_module.run_landscapes(
        mnist_model, x, y, threats, out_dir=tmp_path / "b", points=5, attack_steps=3, progress=False
    )
    for a, b in zip(resumed.threats, fresh.threats, strict=True):
        np.testing.assert_array_equal(a.surface.values["ce"], b.surface.values["ce"])
        assert a.evidence.to_dict() == b.evidence.to_dict()
    # other settings: nothing matches, everything is recomputed
    counted.clear()
    run_module.run_landscapes(mnist_model, x, y, threats, resume=True, **dict(opts, points=3))
    assert len(counted) == 4


def test_command_errors_are_clear(mnist_checkpoint, tmp_path):
    base = ["--checkpoint", str(mnist_checkpoint), "--examples", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, ["landscape", *base, "--threat", "spatial:30,3"])
    assert result.exit_code != 0 and "Unsupported threat" in result.output
    result = CliRunner().invoke(main, ["landscape", *base, "--threat", "linf:0.3", "--points", "1"])
    assert result.exit_code != 0 and "--points" in result.output
    result = CliRunner().invoke(main, ["landscape", *base, "--threat", "linf:x"])
    assert result.exit_code != 0 and "Invalid number" in result.output


def test_section_embeds_in_another_page(mnist_model, mnist_test):
    x, y = mnist_test.images[:3], mnist_test.labels[:3]
    surface = landscape.input_surface(mnist_model, x, y, "l2:2", points=9, progress=False)
    ev = landscape.masking_evidence(mnist_model, surface, indices=[10, 11, 12])
    ws = landscape.weight_surface(mnist_model, (x, y), dims=1, points=5, progress=False)
    section = render_section([surface], evidence=[ev], weights={"small_cnn": ws}, max_examples=2)
    assert section.startswith('<section id="landscapes">') and section.endswith("</section>")
    assert section.count("<img") == 3  # two examples and the weight-space figure
    assert 'id="evidence-l2-2"' in section and 'id="weight-space"' in section
    assert "l2:2, example 10" in section  # captions name the dataset index from the evidence


# ----------------------------------------------------------------------------- browser


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_chromium_renders_the_landscape_page(run, tmp_path):
    out, _ = run
    text = (out / "landscape.html").read_text()
    probe = out / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run after load: " + dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    rendered = seen["text"]
    assert "multirobust landscape" in rendered and "Loss landscapes" in rendered
    report = json.loads((out / "landscape.json").read_text())
    for t in report["threats"]:
        assert t["threat"] in rendered
    # the summary table as laid out: each threat next to its example count
    assert re.search(r"linf:0\.3\s+1\s+", rendered)
    # 2 threats × 1 example + the weight-space figure, all decoded and shown at a visible size
    assert len(seen["images"]) == 3
    for img in seen["images"]:
        assert img["complete"] and img["natural"][0] > 300 and img["natural"][1] > 150, img
        assert img["shown"][0] > 300, img


def test_section_alone_is_a_valid_page(mnist_model, mnist_test, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed")
    x, y = mnist_test.images[:1], mnist_test.labels[:1]
    surface = landscape.input_surface(mnist_model, x, y, "linf:0.1", points=5, progress=False)
    doc = html_page("embedded", render_section([surface]))
    path = tmp_path / "embedded.html"
    path.write_text(doc.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    seen = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert len(seen["images"]) == 1 and seen["images"][0]["complete"]
    assert "linf:0.1" in seen["text"]
