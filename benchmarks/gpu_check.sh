#!/usr/bin/env bash
# The GPU check: one script, under 8 minutes on one H100/H200, its stages by priority.
#
#   1. the test suite's CUDA-only tests (-m cuda: bf16, fp16 with loss scaling, compile, resume,
#      one host read per step, ...);
#   2. `restorekit train` at full size (dino_ir on the scikit-image photographs,
#      benchmarks/recipes/dino_ir_samples.yaml: batch 8 of 128 px, bf16) for 200 steps,
#      compile off and on: it/s and peak memory from the run's metrics.jsonl;
#   3. torchrun with NCCL, one process on one GPU (the DDP code path), accumulating 2 micro-batches;
#   4. `restorekit train --dry-run` of the same recipe (its memory estimate beside the measured peak)
#      and a short CPU subset of the tests;
#   5. speed.py at full size in bf16: dino_ir, the Restormer and PromptIR baselines, two ablations;
#   6. if time is left: the levers (the backbone's bf16 knob, channels_last, SDPA channel
#      attention, gradient checkpointing, DPC without the shared backbone pass) on dino_ir
#      and Restormer;
#   7. if time is left: benchmarks/runtime.py, ONNX Runtime's CUDA provider beside eager bf16
#      (Restormer and dino_ir at 256 and 512 px); skipped, saying so, where onnxruntime has no
#      CUDAExecutionProvider (pip install onnxruntime-gpu).
#
# Every stage runs under `timeout`; a failed or cut stage does not stop the next one.
# Outputs (at most 8 files) go to ${OUT:-benchmarks/out}: gpu_check.log, train.json,
# speed.{json,md}, levers.{json,md}, runtime_cuda.json, summary.md; the runs themselves (checkpoints,
# ONNX exports, runtime_cuda.md, whose table is in summary.md) stay in
# $TMPDIR. DINOv2 is randomly initialised (no weights on the machine, no internet):
# timings do not depend on the weights.
#
#   bash benchmarks/gpu_check.sh          # PYTHON=... to pick the interpreter
#   DRY_RUN=1 bash benchmarks/gpu_check.sh   # the plumbing on a CPU: tiny configs, 5 iterations, no compile
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO="$(pwd)"
OUT_DIR="${OUT:-$REPO/benchmarks/out}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_BUDGET:-460}))   # seconds for all stages; 460 leaves margin under 8 minutes
STAGES=()
DEVICE=(--device cuda --precision bf16)
RUNS="${TMPDIR:-/tmp}/restorekit-gpu-check-runs"    # checkpoints of a full-size run: not in $OUT
rm -rf "$RUNS" && mkdir -p "$RUNS"
TRAIN=(-m restorekit train benchmarks/recipes/dino_ir_samples.yaml)
COMPILE=(-o train.compile=true)
TORCHRUN_STEPS=40
if [ -n "${DRY_RUN:-}" ]; then
  DEVICE=(--device cpu --tiny --warmup 0 --repeat 1)
  TRAIN=(-m restorekit train recipes/demo/dino_ir_tiny.yaml -o model.body.dim=8 -o model.fusion_channels=16
         -o model.backbone.model_kwargs.embed_dim=32 -o model.adapter.head_channels=8 -o data.patch_size=32
         -o train.batch_size=2 -o train.iterations=5 -o train.log_every=1 -o train.threads=2 -o train.device=cpu
         -o train.progress=false -o eval.after_train=false)
  COMPILE=()   # compiling on a CPU takes minutes; the plumbing is the same
  TORCHRUN_STEPS=4
fi

# run_stage NAME BUDGET_SECONDS CMD...: run with a timeout clipped to the deadline.
run_stage() {
  local name="$1" budget="$2"
  shift 2
  local now left limit t0 rc
  now=$(date +%s)
  left=$((DEADLINE - now))
  limit=$((budget < left ? budget : left))
  if [ "$limit" -lt 20 ]; then
    echo "=== $name: skipped (only ${left}s left)"
    STAGES+=("$name|skipped|0|$budget")
    return 0
  fi
  echo
  echo "=== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@"
  rc=$?
  local took=$(($(date +%s) - t0))
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && echo "=== $name: TIMED OUT after ${limit}s"
  echo "=== $name: exit $rc after ${took}s"
  STAGES+=("$name|$rc|$took|$limit")
}

echo "=== GPU check of restorekit ($(date -u +%Y-%m-%dT%H:%M:%SZ)), results in $OUT_DIR"
nvidia-smi -L || echo "nvidia-smi not available"
if [ -d .wheels ] && ls .wheels/*.whl >/dev/null 2>&1; then
  # Into a folder of our own, first on the path: the device's interpreter may be read-only.
  SITE="${TMPDIR:-/tmp}/restorekit-gpu-check-site"
  echo "installing the carried wheels into $SITE: $(ls .wheels | tr '\n' ' ')"
  if "$PY" -m pip install --no-index --no-deps --no-compile --quiet --upgrade --target "$SITE" .wheels/*.whl; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
  else
    echo "WARNING: wheel install failed"
  fi
fi
"$PY" - <<'EOF'
import torch
print(f"python {__import__('sys').version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'}")
for name in ("timm", "open_clip", "restorekit"):
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', '?')} from {module.__file__}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
EOF
echo "NOTE: DINOv2 (and CLIP) backbones are RANDOMLY INITIALISED here (no weights, no internet);"
echo "      speed, memory and FLOP numbers do not depend on the weights."

PYTEST_TIMEOUT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST_TIMEOUT=(--timeout 90)
run_stage "tests (cuda)" 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider --maxfail 10 ${PYTEST_TIMEOUT[@]+"${PYTEST_TIMEOUT[@]}"} tests/
run_stage "train 200 steps, bf16, eager" 120 "$PY" "${TRAIN[@]}" -o train.out_dir="$RUNS/eager"
run_stage "train 200 steps, bf16, compile" 200 "$PY" "${TRAIN[@]}" "${COMPILE[@]}" -o train.out_dir="$RUNS/compile"
run_stage "torchrun NCCL, 1 process" 80 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
  "${TRAIN[@]}" -o train.iterations="$TORCHRUN_STEPS" -o train.accumulate=2 -o train.out_dir="$RUNS/torchrun"
run_stage "dry run (full size)" 45 bash -c 'runs="$1"; shift; "$0" "$@" --dry-run > "$runs/dry_run.txt"' \
  "$PY" "$RUNS" "${TRAIN[@]}"
run_stage "tests (subset)" 40 "$PY" -m pytest -q -p no:cacheprovider --maxfail 5 ${PYTEST_TIMEOUT[@]+"${PYTEST_TIMEOUT[@]}"} \
  tests/test_registry.py tests/test_recipes.py
run_stage "speed (full size, bf16)" 150 "$PY" benchmarks/speed.py "${DEVICE[@]}" \
  --recipes dino_ir baselines/restormer baselines/promptir ablations/no_dpc ablations/vit_s14 \
  --out "$OUT_DIR" --name speed
run_stage "levers" 120 "$PY" benchmarks/speed.py --warmup 3 --repeat 10 "${DEVICE[@]}" \
  --recipes dino_ir baselines/restormer --levers backbone_bf16,channels_last,sdpa,grad_checkpoint,no_dpc_reuse \
  --out "$OUT_DIR" --name levers
RUNTIME_STAGE="runtime (onnxruntime CUDA vs eager bf16)"
if "$PY" -c "import onnxruntime, onnxscript, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())" 2>/dev/null; then
  run_stage "$RUNTIME_STAGE" 150 "$PY" benchmarks/runtime.py --device cuda --recipes baselines/restormer dino_ir \
    --sizes 256 512 --repeat 5 --cache "$RUNS/onnx" --out "$RUNS" --name runtime_cuda
  cp "$RUNS/runtime_cuda.json" "$OUT_DIR/" 2>/dev/null
else
  echo "=== $RUNTIME_STAGE: skipped (onnxruntime, onnxscript or its CUDAExecutionProvider is missing: pip install onnxruntime-gpu onnxscript)"
  STAGES+=("$RUNTIME_STAGE|skipped|0|150")
fi

# -- summary -------------------------------------------------------------------------------------
STAGE_LINES="$(printf '%s\n' "${STAGES[@]}")" TOTAL=$(($(date +%s) - START)) OUT_DIR="$OUT_DIR" RUNS="$RUNS" \
  "$PY" - <<'EOF'
import json, os
from pathlib import Path

out, runs = Path(os.environ["OUT_DIR"]), Path(os.environ["RUNS"])
lines = ["# GPU check summary", "", f"total wall time: {os.environ['TOTAL']} s", "",
         "| stage | exit | seconds | limit |", "| --- | --- | --- | --- |"]
for entry in os.environ["STAGE_LINES"].splitlines():
    if entry:
        name, rc, took, limit = entry.split("|")
        status = {"0": "ok", "124": "TIMEOUT", "137": "TIMEOUT (killed)", "skipped": "skipped"}.get(rc, f"FAIL ({rc})")
        lines.append(f"| {name} | {status} | {took} | {limit} |")


def load(name):
    path = out / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


speed = load("speed")
if speed:
    env, mm = speed["env"], speed["matmul"]
    lines += ["", f"device: {env['device']}, {env['precision']}, torch {env['torch']}; "
              f"matmul {mm['flops_per_s'] / 1e12:.3g} TFLOP/s ({mm['dtype']}, {mm['size']}^3)"
              + ("" if speed.get("complete") else " (speed stage INCOMPLETE)"), "",
              f"| recipe | train ms/step ({speed['config']['train_size']} px, batch {speed['config']['train_batch']}) "
              f"| train peak MiB | % matmul | infer ms/MP ({speed['config']['infer_size']} px) | infer peak MiB |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in speed["rows"]:
        if "error" in row:
            lines.append(f"| {row['recipe']} | ERROR: {row['error'][:80]} | | | | |")
            continue
        t, i = row["train"], row.get("infer", {})
        lines.append(f"| {row['recipe']} | {t['step_ms']:.1f} | {t['peak_mib']:.0f} | "
                     f"{100 * t['matmul_fraction']:.1f} | {i.get('ms_per_mp', float('nan')):.1f} | "
                     f"{i.get('peak_mib', float('nan')):.0f} |")
    lines += ["", "| target | value | limit | status |", "| --- | --- | --- | --- |"]
    for tg in speed["targets"]:
        value = "n/a" if tg["value"] is None else f"{tg['value']:.3f}"
        lines.append(f"| {tg['target']} | {value} | {tg['limit']} | {tg['status']} |")


def train_run(name):
    """it/s past the first log line (start-up and compiling), peak memory, losses of one run."""
    try:
        lines = [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]
        info = json.loads((runs / name / "run.json").read_text())
    except (OSError, ValueError):
        return None
    steps = [r for r in lines if "event" not in r]
    if not steps:
        return None
    later = steps[1:] or steps
    return {"steps": steps[-1]["step"], "it_s": sum(r["it_s"] for r in later) / len(later),
            "it_s_first": steps[0]["it_s"], "peak_mem_mib": max((r.get("peak_mem_mib", 0) for r in steps)) or None,
            "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"], "world_size": info.get("world_size"),
            "amp": info.get("amp"), "device": info.get("device"),
            "events": sorted({r["event"] for r in lines if "event" in r}), "lines": lines}


trained = {name: train_run(name) for name in ("eager", "compile", "torchrun")}
(out / "train.json").write_text(json.dumps(trained, indent=1))
if any(trained.values()):
    lines += ["", "| restorekit train (metrics.jsonl) | steps | it/s after the first log line | it/s first line "
              "| peak MiB (max allocated) | loss first -> last | events |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in trained.items():
        if row is None:
            lines.append(f"| {name} | no run | | | | | |")
            continue
        peak = "-" if row["peak_mem_mib"] is None else f"{row['peak_mem_mib']:.0f}"
        lines.append(f"| {name} ({row['amp']}, {row['world_size']} process) | {row['steps']} | {row['it_s']:.2f} | "
                     f"{row['it_s_first']:.2f} | {peak} | {row['loss_first']:.4f} -> "
                     f"{row['loss_last']:.4f} | {', '.join(row['events']) or '-'} |")
try:
    plan = (runs / "dry_run.txt").read_text().splitlines()
    start = next(i for i, x in enumerate(plan) if x.startswith("estimated peak memory"))
    lines += ["", "dry run of the same recipe (`restorekit train --dry-run`):", "```", *plan[start:start + 9], "```"]
except (OSError, StopIteration):
    lines += ["", "dry run: no output"]
levers = load("levers")
if levers:
    base = {r["recipe"]: r for r in levers["rows"] if r.get("variant", "").startswith("base") and "error" not in r}
    lines += ["", "| lever | recipe | train ms (change) | train peak MiB (change) | infer ms/MP (change) |",
              "| --- | --- | --- | --- | --- |"]
    for row in levers["rows"]:
        ref = base.get(row["recipe"])
        if "error" in row or ref is None:
            continue
        def fmt(section, key):
            a, b = ref[section][key], row[section][key]
            return f"{b:.1f} ({100 * (b - a) / a:+.0f}%)"
        lines.append(f"| {row['variant']} | {row['recipe']} | {fmt('train', 'step_ms')} | "
                     f"{fmt('train', 'peak_mib')} | {fmt('infer', 'ms_per_mp')} |")
try:
    runtime = (runs / "runtime_cuda.md").read_text().strip()
    lines += ["", "ONNX Runtime (CUDA provider) beside eager bf16 (`benchmarks/runtime.py`):", "",
              *runtime.splitlines()[1:]]
except OSError:
    lines += ["", "runtime (onnxruntime CUDA vs eager bf16): no results"]
lines += ["", "DINOv2/CLIP backbones were randomly initialised (no weights on the machine)."]
text = "\n".join(lines) + "\n"
tmp = out / ".summary.md.tmp"
tmp.write_text(text)
os.replace(tmp, out / "summary.md")
print("\n" + text)
EOF
echo "=== GPU check done in $(($(date +%s) - START))s; files: $(ls "$OUT_DIR" | tr '\n' ' ')"
exec 1>&- 2>&-                           # let tee write the last lines before the script ends
wait "$TEE_PID" 2>/dev/null || sleep 1
