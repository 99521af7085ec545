#!/usr/bin/env bash
# Ruff (lint + format check) and the whole test suite, after setting up .venv.
# Fails when pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
# Lint and format first: a style slip fails in seconds, before the 10-minute suite.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no test" >&2
fi
exit "$status"
