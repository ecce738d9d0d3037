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
        assert re.search(re.escape(key) + r"\s+" + re.escape(f"{100 * acc:.2f}%"), rendered), key
    assert re.search(r"union \(worst case per example\)\s+" + re.escape(pct[1]), rendered)

    # two embedded PNGs (ε curve, example grid), both decoded and laid out at a visible size
    assert len(seen["images"]) == 2
    for img in seen["images"]:
        assert img["complete"] and img["natural"][0] > 100 and img["natural"][1] > 100, img
        assert img["shown"][0] > 100 and img["shown"][1] > 50, img


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
