"""report.html in a real browser: headless Chromium, with the network cut off, renders the page,
shows the clean, per-threat and union numbers, and loads every image (all embedded)."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from multirobust.evaluation import Preset, curve, evaluate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
    "scripts/test.sh installs it when it runs as root)",
)

# No network: every request goes to a closed local port, and names do not resolve.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-extensions",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]

# Appended to a copy of the page (the report itself has no script): after load, it records what
# the browser laid out, the rendered text and each image's decoded size, into the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    text: document.body.innerText,
    images: [...document.images].map(i => ({
      complete: i.complete, natural: [i.naturalWidth, i.naturalHeight],
      shown: [i.getBoundingClientRect().width, i.getBoundingClientRect().height]})),
    width: document.documentElement.scrollWidth,
  });
  document.body.appendChild(out);
});
</script>"""

TINY = Preset(
    "tiny", steps=5, target_classes=2, queries=50, rotations=5, translations=3, affine_steps=5
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def page(mnist_model, mnist_test, tmp_path_factory):
    x, y = mnist_test.images[:30], mnist_test.labels[:30]
    report = evaluate(
        mnist_model,
        x,
        y,
        threats=["linf:0.1", "l2:1", "spatial:20,2"],
        preset=TINY,
        progress=False,
        run_checks=False,
    )
    report.curves.append(
        curve(
            mnist_model,
            x,
            y,
            threat_type="linf",
            eps_list=[0, 0.05, 0.1],
            preset=TINY,
            progress=False,
        )
    )
    report.settings["checkpoint"] = "runs/quickstart/model.pt"  # as `multirobust evaluate` does
    folder = tmp_path_factory.mktemp("report")
    report.to_html(folder / "report.html")
    return report, folder


def test_chromium_renders_the_numbers_and_the_images(page, tmp_path):
    report, folder = page
    probe_page = folder / "probe.html"
    text = (folder / "report.html").read_text()
    assert text.count("</body>") == 1
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe_page.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run after load: " + dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))

    rendered = seen["text"]
    assert "multirobust evaluation report" in rendered
    pct = [f"{100 * report.clean_accuracy:.2f}%", f"{100 * report.union_accuracy:.2f}%"]
    for key, acc in report.robust_accuracy.items():
        assert key in rendered
        pct.append(f"{100 * acc:.2f}%")
    for p in pct:
        assert p in rendered, p
    # the summary table's rows, as laid out: each threat next to its own number
    for key, acc in report.robust_accuracy.items():
        number = re.escape(f"{100 * acc:.2f}%")
        assert re.search(re.escape(key) + r"\s+≤ " + number, rendered), key  # an upper bound
    assert re.search(r"union \(worst case per example\)\s+≤ " + re.escape(pct[1]), rendered)

    # every embedded PNG decoded and laid out at a visible size: the ε curve, then the
    # examples' tiles (28 x 28 pixels each, shown at least twice as large)
    images = seen["images"]
    assert images and all(i["complete"] for i in images), images
    curve_png, tiles = images[0], images[1:]
    assert curve_png["natural"][0] > 100 and curve_png["shown"][0] > 100, curve_png
    assert tiles and all(i["natural"] == [28, 28] for i in tiles), tiles
    assert all(i["shown"][0] >= 56 and i["shown"][1] >= 56 for i in tiles), tiles  # >= 2x


# Appended like PROBE: where the first screen's facts are laid out, and their text.
FIRST_SCREEN = """<script>
window.addEventListener("load", () => {
  const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  const where = {};
  for (const id of ids) {
    const r = document.getElementById(id).getBoundingClientRect();
    where[id] = {top: r.top, bottom: r.bottom, text: document.getElementById(id).innerText};
  }
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({where, height: window.innerHeight, width: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


def test_first_screen_shows_model_preset_accuracies_and_checks(page, tmp_path):
    # Issue 12: at 1400 x 900 the first screen names the model and the preset, and shows the
    # clean, per-threat and union accuracies and the checks' status, without scrolling.
    report, folder = page
    probe_page = folder / "first.html"
    text = (folder / "report.html").read_text()
    probe_page.write_text(text.replace("</body>", FIRST_SCREEN + "</body>"))
    dom = _chromium(tmp_path, "--window-size=1400,900", "--dump-dom", probe_page.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    # A 1400 x 900 window: headless Chromium lays the page out in what is left of it once its
    # (emulated) window frame is taken, as a desktop browser would (757 px high here).
    where, height = seen["where"], seen["height"]
    assert 700 <= height <= 900 and seen["width"] == 1400, seen
    wanted = ["model", "preset", "clean-cell", "union-cell", "checks-status"]
    wanted += [f"robust-{key}" for key in report.robust_accuracy]
    for ident in wanted:
        assert ident in where, ident
        assert 0 <= where[ident]["top"] and where[ident]["bottom"] <= height, (ident, where[ident])
    assert "runs/quickstart/model.pt" in where["model"]["text"]
    assert where["preset"]["text"] == "tiny"
    assert where["clean-cell"]["text"] == f"{100 * report.clean_accuracy:.2f}%"
    assert where["union-cell"]["text"] == f"≤ {100 * report.union_accuracy:.2f}%"
    for key, acc in report.robust_accuracy.items():
        assert where[f"robust-{key}"]["text"] == f"≤ {100 * acc:.2f}%", key
    status = where["checks-status"]["text"]
    ran = len(report.checks_run)
    fired = len({(c.name, c.threat) for c in report.checks})
    assert ran > 0 and f"{ran} checks ran: {ran - fired} passed, {fired} fired" in status


def test_chromium_screenshot_is_not_blank(page, tmp_path):
    _, folder = page
    shot = tmp_path / "shot.png"
    _chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        (folder / "report.html").as_uri(),
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    non_white = (pixels < 0.95).any(axis=2)
    # text and table borders alone are a few percent; the dark MNIST tiles of the example grid
    # add large black areas, which only a decoded, drawn image produces
    assert non_white.mean() > 0.03
    black = (pixels < 0.05).all(axis=2)
    assert black.mean() > 0.01
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
