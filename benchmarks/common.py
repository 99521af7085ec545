"""Shared helpers for the benchmarks: devices and precision, timing, memory, FLOPs,
the matmul ceiling, tiny configurations, building what a recipe trains, output files.
(The performance levers live in ``levers.py``, the short training runs in ``short_runs.py``.)

Performance is always reported as ratios measured in one run on one device, so
every helper here works the same on the CPU (tiny configurations, tests) and on
a GPU (full size). Timing uses CUDA events on a GPU and ``perf_counter`` after a
synchronize elsewhere; the median of the repeats is the number reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "out"


def ensure_importable() -> None:
    """Let the scripts run from a checkout where restorekit is not installed."""
    try:
        import restorekit  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))


ensure_importable()

import torch  # noqa: E402

from restorekit.io.atomic import write_text  # noqa: E402

# -- devices and precision -------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device on this machine")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # CUDA events record on the current device's stream
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """The engine's convention: bf16 autocast on CUDA (``auto`` there), fp32 on the CPU."""
    if precision not in ("auto", "bf16", "fp32"):
        raise SystemExit(f"--precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type != "cuda":
        if precision == "bf16":
            print("note: bf16 autocast applies on CUDA only (as in the engine); measuring fp32", file=sys.stderr)
        return "fp32"
    return "fp32" if precision == "fp32" else "bf16"


def setup_backends(device: torch.device) -> None:
    """What the engine sets before training on CUDA: cuDNN autotuning, TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The engine's autocast: bf16 on CUDA when asked, nothing otherwise."""
    from restorekit.engine.infer import autocast_context

    return autocast_context(device, precision == "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "meta":
        return "meta device (FLOPs only)"
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device, precision: str) -> dict[str, Any]:
    """Versions and the device, for every results file."""
    import restorekit

    try:
        import timm

        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    return {
        "device": device_name(device),
        "device_type": device.type,
        "precision": precision,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "timm": timm_version,
        "restorekit": restorekit.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# -- timing ------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall time of repeated calls, in milliseconds."""

    median_ms: float
    min_ms: float
    mean_ms: float
    repeats: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 2, repeat: int = 5) -> Timing:
    """Time ``fn`` after ``warmup`` calls: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    for _ in range(max(1, repeat)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    return Timing(median, ordered[0], sum(times) / len(times), len(times))


def wall_seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call takes, synchronised (for compile time and first calls)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


# -- memory ------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: max allocated since the last reset. CPU: this process's peak RSS (never resets)."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def memory_kind(device: torch.device) -> str:
    return "CUDA max allocated" if device.type == "cuda" else "process peak RSS"


# -- FLOPs -------------------------------------------------------------------------------

from restorekit.engine.flops import count_flops  # noqa: E402,F401 - the library's counter (dry run too)


def matmul_ceiling(device: torch.device, precision: str, size: int | None = None, repeat: int = 10) -> dict[str, Any]:
    """Measured FLOP/s of a dense square matmul: bf16 on a GPU, fp32 on the CPU.

    It is the yardstick the achieved FLOP/s of a training step is divided by;
    random inputs (never zeros, which run faster than real data).
    """
    dtype = torch.bfloat16 if (device.type == "cuda" and precision == "bf16") else torch.float32
    if size is None:
        size = 8192 if device.type == "cuda" else 1024
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    timing = time_call(lambda: a @ b, device, warmup=3 if device.type == "cuda" else 1, repeat=repeat)  # noqa: F821
    flops = 2.0 * size**3
    del a, b
    return {
        "size": size,
        "dtype": str(dtype).replace("torch.", ""),
        "ms": timing.median_ms,
        "flops_per_s": flops / (timing.median_ms / 1e3),
    }


# -- tiny configurations and what a recipe trains: the library's own (restorekit.tiny, engine) --

from restorekit.engine.parts import build_model_and_loss  # noqa: E402,F401 - the engine's builder
from restorekit.engine.step import forward_loss  # noqa: E402,F401 - the engine's loss of one batch
from restorekit.tiny import TINY, tiny_backbone_spec, tiny_loss_spec, tiny_model_spec, tiny_spec  # noqa: E402,F401


def body_type(model_spec: Mapping[str, Any]) -> str | None:
    """The body a model spec restores with (the model itself for a baseline body)."""
    kind = model_spec.get("type")
    if kind in TINY["body"]:
        return str(kind)
    body = model_spec.get("body")
    if kind == "dino_ir":
        if body is None:
            return "restormer"
        return body if isinstance(body, str) else body.get("type", "restormer")
    return None


def model_and_loss_specs(recipe_name: str, tiny: bool) -> tuple[dict[str, Any], Any]:
    """A recipe's model and loss specs (tiny when asked)."""
    from restorekit import load_recipe

    recipe = load_recipe(recipe_name)
    model_spec, loss_spec = dict(recipe["model"]), recipe.get("loss") or {"type": "l1"}
    if tiny:
        return tiny_model_spec(model_spec, loss_spec), tiny_loss_spec(loss_spec)
    return model_spec, loss_spec


def short_name(recipe_name: str) -> str:
    """``baselines/restormer`` -> ``restormer``."""
    return recipe_name.rsplit("/", 1)[-1]


# -- output ----------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, ...]]) -> str:
    """A GitHub markdown table. ``columns`` are (header, key) or (header, key, format);
    floats default to 3 significant digits, missing values show as '-'."""

    def cell(value: Any, fmt: str | None) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            if value != value:  # NaN
                return "nan"
            if fmt:
                return fmt.format(value)
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,d}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c[1]), c[2] if len(c) > 2 else None) for c in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic JSON (temp file, fsync, rename): a results file is complete or absent."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_markdown(path: str | os.PathLike, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text.rstrip() + "\n")


def out_dir(value: str | None) -> Path:
    """The results folder: ``--out``, else ``$OUT`` (the GPU machine's), else ``benchmarks/out``."""
    folder = Path(value or os.environ.get("OUT") or DEFAULT_OUT)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
