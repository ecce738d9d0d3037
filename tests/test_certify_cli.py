"""``multirobust certify``: certify.json and certify.html, --resume, clear errors, and the page
rendered by headless Chromium with the network cut off."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from multirobust.cli import main

ZOO = Path(__file__).resolve().parents[1] / "zoo"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BASE = [
    "certify",
    "--checkpoint",
    str(ZOO / "pgd-linf.pt"),
    "--threat",
    "l2:0.3",
    "--threat",
    "linf:0.005",
    "--n",
    "4",
    "--n-samples",
    "300",
    "--n0",
    "20",
    "--batch-size",
    "200",
    "--quiet",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("certify")
    args = [*BASE, "--smoothing", "gaussian:0.25", "--ibp"]
    result = CliRunner().invoke(main, [*args, "--no-empirical", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    return args, out, result.output


def test_certify_writes_json_and_html_with_every_method_threat_and_the_union(run):
    _, out, output = run
    report = json.loads((out / "certify.json").read_text())
    assert report["format"] == "multirobust-certification"
    assert set(report["methods"]) == {"ibp", "smoothing gaussian:0.25"}
    smoothing = report["methods"]["smoothing gaussian:0.25"]
    assert set(smoothing["certified"]) == {"l2:0.3", "linf:0.005"}
    assert smoothing["cap"]["l2"] > 0 and len(smoothing["samples"]) == 4
    assert report["settings"]["checkpoint"].endswith("pgd-linf.pt")
    for name in ("ibp", "smoothing gaussian:0.25", "union", "radius cap"):
        assert name in output
    page = (out / "certify.html").read_text()
    assert 'id="plot-l2"' in page and 'id="plot-linf"' in page


def test_certify_resume_reuses_every_saved_item(run):
    args, out, _ = run
    saved = sorted(p.name for p in (out / "partial").rglob("*.json"))
    assert len(saved) == 1 + 4 + 1  # settings, one file per example (smoothing), per batch
    before = json.loads((out / "certify.json").read_text())
    result = CliRunner().invoke(main, [*args, "--no-empirical", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    after = json.loads((out / "certify.json").read_text())
    for name, m in before["methods"].items():
        assert after["methods"][name]["certified"] == m["certified"]
        assert after["methods"][name]["radius"] == m["radius"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--smoothing", "gaussian:0"], "sigma"),
        (["--smoothing", "gaussian:0.25", "--n0", "500"], "n0"),
        (["--smoothing", "gaussian:0.25", "--alpha", "1.5"], "alpha"),
        (["--ibp", "--threat", "spatial:10,2"], "ℓ∞, ℓ2 and ℓ1 balls"),
        ([], "Nothing to certify"),
    ],
)
def test_certify_bad_settings_are_clear_errors(extra, message, tmp_path):
    result = CliRunner().invoke(main, [*BASE, *extra, "--no-empirical", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert message in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_chromium_renders_the_certificate_page(run, tmp_path):
    _, out, _ = run
    probe = (
        '<script>window.addEventListener("load", () => {const o = document.createElement("pre");'
        'o.id = "probe"; o.textContent = JSON.stringify({text: document.body.innerText, images: '
        "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])});"
        "document.body.appendChild(o);});</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text((out / "certify.html").read_text().replace("</body>", probe + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--no-first-run",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    proc = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    report = json.loads((out / "certify.json").read_text())
    for name, m in report["methods"].items():
        acc = m["certified_accuracy"]["l2:0.3"]
        assert re.search(
            re.escape(name) + r"[\s\S]{0,80}?" + re.escape(f"{100 * acc:.2f}%"), seen["text"]
        ), name
    # One figure per norm, each decoded at a visible size (no network needed).
    assert len(seen["images"]) == 2
    assert all(ok and w > 200 and h > 150 for ok, w, h in seen["images"])


@pytest.mark.slow
def test_certify_under_torchrun_gives_the_single_process_numbers(run, tmp_path):
    import os
    import sys

    args, out, _ = run
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    # --num-examples, not --n: torchrun's parser (Python 3.11) would take --n for its own option
    sharded = [a if a != "--n" else "--num-examples" for a in args]
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "multirobust",
            *sharded,
            "--no-empirical",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = json.loads((out / "certify.json").read_text())
    two = json.loads((tmp_path / "two" / "certify.json").read_text())
    assert two["settings"]["world_size"] == 2
    for name, m in one["methods"].items():
        for key in ("certified", "radius", "prediction", "p_lower", "samples"):
            assert two["methods"][name][key] == m[key], (name, key)


@pytest.mark.slow  # the quick preset's attacks: ~80 s on the shared CPUs
def test_certify_with_the_empirical_side_puts_the_attacks_numbers_beside_the_certificates(
    tmp_path,
):
    args = [*BASE, "--ibp", "--preset", "quick", "--no-curves", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "certify.json").read_text())
    empirical = report["empirical"]
    assert empirical["preset"] == "quick" and empirical["curves"] == {}
    assert set(empirical["robust_accuracy"]) >= {"l2:0.3", "linf:0.005"}
    # A certificate of the network is a proof: the attacks can never beat it.
    for threat, acc in report["methods"]["ibp"]["certified_accuracy"].items():
        assert acc <= empirical["robust_accuracy"][threat]
    assert not [c for c in report["checks"] if c["name"] == "certified-but-broken"]
