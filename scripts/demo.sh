#!/usr/bin/env bash
# The demo: set up .venv, train a tiny DINO-IR on the scikit-image photographs (noise,
# rain, haze; ~5 minutes on 2 CPU cores), then score held-out photographs (input vs
# restored PSNR per task) and write a before/after grid into the run folder.
# Extra arguments go to `restorekit train` (e.g. -o train.iterations=200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/restorekit train demo/dino_ir_tiny "$@"
