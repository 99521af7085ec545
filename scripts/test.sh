#!/usr/bin/env bash
# The whole test suite, after setting up .venv. Fails when pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no test" >&2
fi
exit "$status"
