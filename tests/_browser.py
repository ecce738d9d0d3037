"""Headless Chromium on a report page: what it lays out (text, images), network cut off.

The flags and the probe script are test_report_browser's, shared here by the backdoor and
membership report tests.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

from test_report_browser import CHROMIUM, FLAGS, PROBE


def rendered(page: Path, tmp_path: Path) -> dict | None:
    """What headless Chromium (network cut off) lays out for ``page``: its text and images;
    None when Chromium is not installed."""
    if CHROMIUM is None:
        return None
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe script did not run after load"
    return json.loads(html.unescape(found.group(1)))
