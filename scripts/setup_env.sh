#!/usr/bin/env bash
# Create or reuse .venv and install restorekit with its dev extras.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.restorekit-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import restorekit, torch, timm, open_clip" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch 2.13.0's torchvision fails to import; the resolver picks a later release here.
  .venv/bin/python -m pip install --quiet -e '.[dev]' 'torch!=2.13.0'
  echo "$want" > "$stamp"
fi
# The browser tests (tests/test_app.py, tests/test_report.py) drive Debian's chromium through
# Playwright; `playwright install` (a downloaded browser) is never used.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing the chromium package for the browser tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing; the browser tests need it: sudo apt-get install chromium" >&2
  fi
fi
