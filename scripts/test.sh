#!/usr/bin/env bash
# The test suite (fast tests; `scripts/test.sh -m slow` runs the slow ones). Lint and types first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test,bench
# tests/test_report_browser.py renders report.html in headless Chromium; install it where we can.
if [[ ! -x /usr/bin/chromium ]] && command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver; } >/dev/null 2>&1 ||
    echo "warning: could not install chromium; the browser test of report.html will be skipped" >&2
fi
export MULTIROBUST_DATA="${MULTIROBUST_DATA:-$(cd .. && pwd)/shared/data}"
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
