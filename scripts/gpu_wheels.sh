#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh needs on a GPU machine that has torch but
# no internet and no open_clip (the lent H100/H200 images run CPython 3.12 on x86_64):
# run it here, where pip reaches the registry, then carry `.wheels` (an ignored folder).
#
#   bash scripts/gpu_wheels.sh                        # writes .wheels/*.whl for CPython 3.12
#   GPU_PYTHON_VERSION=3.11 bash scripts/gpu_wheels.sh  # another interpreter there
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
rm -rf .wheels
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .wheels \
  --python-version "${GPU_PYTHON_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "open_clip_torch>=2.24" "timm>=1.0" ftfy wcwidth
ls -l .wheels
