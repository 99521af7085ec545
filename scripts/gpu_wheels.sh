#!/usr/bin/env bash
# Download the pure-Python wheels benchmarks/gpu_check.sh needs on a GPU machine that
# has torch but no internet and no open_clip (the lent H100/H200 images): run it here,
# where pip reaches the registry, then carry `.wheels` (an ignored folder) with the run.
#
#   bash scripts/gpu_wheels.sh            # writes .wheels/*.whl
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
rm -rf .wheels
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .wheels \
  "open_clip_torch>=2.24" "timm>=1.0" ftfy wcwidth
ls -l .wheels
