"""Eager PyTorch against ONNX Runtime: ms per image per recipe, and a 4096 x 4096 restore.

Every body's baseline and dino_ir (full size, random weights: the time does not depend
on them; zero-initialised layers get small random values so the guide reaches the
output) restore one random image at 256 and 512 px through both runtimes, in
alternating calls (eager, ONNX Runtime, eager, ...), after one warm-up call each. The
ONNX Runtime model is :class:`restorekit.engine.runtime.OnnxRuntimeModel`, the one
``restorekit restore --runtime onnxruntime`` runs: its exports are cached in
``--cache`` (default: the user cache), and the first call's export time is reported
(0 when cached). ``--restore-4k`` then restores a 4096 x 4096 photograph of dino_ir with
``restorekit.engine.infer.restore_files`` (``--tile auto``, ``--max-memory 8G``) through
the runtime that was faster at the largest size.

Targets (CPU, fp32): at 512 px, ONNX Runtime at most 0.5x eager for every body and at
most 0.6x for dino_ir; the 4K dino_ir restore at most half of the 44.7 minutes eager took
on the 2-core development CPU (docs/inference.md). On CUDA, eager runs under bf16
autocast beside ONNX Runtime's CUDA provider (fp32 graph); the targets are the CPU's.

    python benchmarks/runtime.py                 # every body and dino_ir at 256 and 512 px
    python benchmarks/runtime.py --restore-4k    # and the 4K restore (about half an hour or more)
    python benchmarks/runtime.py --device cuda   # ONNX Runtime's CUDA provider beside eager bf16
    python benchmarks/runtime.py --quick         # tiny models, small sizes: the plumbing (seconds)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import common as bench
import torch

from restorekit import build_model, load_recipe
from restorekit.engine.infer import restore_files
from restorekit.engine.memory import parse_memory
from restorekit.engine.runtime import ExportCache, OnnxRuntimeModel, cache_dir, onnxruntime_available, ort
from restorekit.io.image_files import write_image

RECIPES = ("baselines/restormer", "baselines/promptir", "baselines/adair", "baselines/moce_ir", "dino_ir")
SIZES, QUICK_SIZES = (256, 512), (32, 45)
TARGET_SIZE = 512
BODY_LIMIT, DINO_IR_LIMIT = 0.5, 0.6
EAGER_4K_MINUTES = 44.7  # docs/inference.md: the 4K restore, eager, on the 2-core development CPU
RESTORE_LIMIT_MINUTES = EAGER_4K_MINUTES / 2


def model_spec(name: str, quick: bool) -> dict[str, Any]:
    """The recipe's model; with ``quick`` tiny, and a guided one with 4-token guide windows
    (so the quick sizes exceed one window and the fixed-size export runs)."""
    spec = dict(load_recipe(name)["model"])
    if not quick:
        return spec
    spec = bench.tiny_model_spec(spec, None)
    return {**spec, "guide_window": 4, "guide_overlap": 1} if spec.get("type") == "dino_ir" else spec


def build(spec: Mapping[str, Any], device: torch.device) -> torch.nn.Module:
    """The model with seeded random weights; all-zero parameters (zero-initialised adapters)
    get small random values, so every part reaches the output as trained weights would."""
    torch.manual_seed(0)
    model = build_model(dict(spec)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() > 1 and not bool(param.any()):
                param.normal_(0.0, 0.02)
    return model.to(device)


def timed(fn: Any, device: torch.device) -> float:
    """Milliseconds of one synchronised call."""
    bench.synchronize(device)
    start = time.perf_counter()
    fn()
    bench.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def measure(name: str, spec: Mapping[str, Any], args: argparse.Namespace, device: torch.device,
            cache: ExportCache) -> list[dict[str, Any]]:  # fmt: skip
    """One row per size: eager and ONNX Runtime ms per image (medians of alternating calls)."""
    model = build(spec, device)
    runtime = OnnxRuntimeModel(model, spec, device=device, cache=cache)
    rows = []
    for size in args.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device)
        served = runtime.serving_size(size, size)
        export_s = timed(lambda: runtime.prepare(served), device) / 1e3  # noqa: B023 - called at once
        with torch.no_grad(), bench.autocast(device, args.precision):
            eager_out = model(x).float()
        ort_out = runtime(x).float()
        eager_ms, ort_ms = [], []
        for _ in range(args.repeat):
            with torch.no_grad(), bench.autocast(device, args.precision):
                eager_ms.append(timed(lambda: model(x), device))  # noqa: B023
            ort_ms.append(timed(lambda: runtime(x), device))  # noqa: B023
        eager, ort = statistics.median(eager_ms), statistics.median(ort_ms)
        rows.append({
            "recipe": name, "model_type": spec.get("type"), "size": size, "eager_ms": eager, "ort_ms": ort,
            "ratio": ort / eager, "max_diff": float((ort_out - eager_out).abs().max()), "export_s": export_s,
            "graph": "any size" if served is None else f"{served[0]}x{served[1]}", "repeats": args.repeat,
        })  # fmt: skip
        print(f"{name} {size} px: eager {eager:.1f} ms, onnxruntime {ort:.1f} ms ({ort / eager:.2f}x), "
              f"max |diff| {rows[-1]['max_diff']:.2e}, export {export_s:.1f} s", flush=True)  # fmt: skip
    return rows


def restore_large(args: argparse.Namespace, device: torch.device, cache: ExportCache,
                  rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """dino_ir restores a ``--restore-size`` photograph through the runtime faster at the largest size."""
    from skimage import data  # the test photograph: scikit-image is a test dependency only

    dino = [r for r in rows if r["model_type"] == "dino_ir"]
    runtime = "onnxruntime" if not dino or max(dino, key=lambda r: r["size"])["ratio"] < 1 else "eager"
    spec = model_spec("dino_ir", args.quick)
    model = build(spec, device)
    runner = OnnxRuntimeModel(model, spec, device=device, cache=cache) if runtime == "onnxruntime" else model
    size = args.restore_size
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    photo = torch.nn.functional.interpolate(photo, size=(size, size), mode="bicubic", align_corners=False)
    noisy = (photo + 0.03 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    tile: int | str = "auto" if args.restore_tile == "auto" else int(args.restore_tile)
    with tempfile.TemporaryDirectory(prefix="restorekit-runtime-") as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "out.png"
        write_image(source, noisy[0])
        start = time.perf_counter()
        restore_files(model, [(source, target)], tile=tile, overlap=32, device=device, amp=False,
                      max_memory=parse_memory(args.max_memory) if tile == "auto" else None,
                      runner=runner)  # fmt: skip
        seconds = time.perf_counter() - start
        written = target.is_file()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(f"dino_ir {size} x {size} restore ({runtime}, tile {tile}): {seconds / 60:.2f} min", flush=True)
    return {"runtime": runtime, "size": size, "tile": tile, "max_memory": args.max_memory, "seconds": seconds,
            "minutes": seconds / 60, "peak_rss_gib": peak / 2**30, "written": written}  # fmt: skip


def evaluate_targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL per target; n/a where this run cannot measure it (another size, quick, CUDA)."""
    cpu = result["env"]["device_type"] == "cpu" and not result["config"]["quick"]
    targets = []

    def add(name: str, value: float | None, limit: float, note: str) -> None:
        status = "n/a" if value is None else ("PASS" if value <= limit else "FAIL")
        targets.append({"target": name, "value": value, "limit": f"<= {limit:g}", "status": status, "note": note})

    for row in (r for r in result["rows"] if r["size"] == TARGET_SIZE or not cpu):
        if any(t["target"].startswith(f"{row['recipe']} ") for t in targets):
            continue
        limit = DINO_IR_LIMIT if row["model_type"] == "dino_ir" else BODY_LIMIT
        measured = cpu and row["size"] == TARGET_SIZE
        add(f"{row['recipe']} onnxruntime / eager at {TARGET_SIZE} px", row["ratio"] if measured else None, limit,
            "" if measured else "CPU targets at full size: not measured in this run")  # fmt: skip
    restore = result.get("restore")
    measured = cpu and restore is not None and restore["size"] == 4096
    add("dino_ir 4096 x 4096 restore, minutes", restore["minutes"] if measured else None, RESTORE_LIMIT_MINUTES,
        f"half of eager's {EAGER_4K_MINUTES} min" if measured else "needs --restore-4k on the CPU at full size")  # fmt: skip
    return targets


COLUMNS = [("recipe", "recipe"), ("px", "size"), ("eager ms", "eager_ms", "{:.1f}"), ("ORT ms", "ort_ms", "{:.1f}"),
           ("ORT / eager", "ratio", "{:.2f}"), ("max abs diff", "max_diff", "{:.1e}"), ("graph", "graph"),
           ("export s", "export_s", "{:.1f}")]  # fmt: skip
TARGET_COLUMNS = [("target", "target"), ("value", "value"), ("limit", "limit"), ("status", "status"), ("note", "note")]


def render(result: Mapping[str, Any]) -> str:
    env = result["env"]
    lines = [f"# Eager vs ONNX Runtime ({env['device']}, eager {env['precision']}, torch {env['torch']}, "
             f"onnxruntime {result['config']['onnxruntime']})", "",
             bench.markdown_table(result["rows"], COLUMNS)]  # fmt: skip
    restore = result.get("restore")
    if restore:
        lines += ["", f"dino_ir {restore['size']} x {restore['size']} restore through {restore['runtime']} "
                  f"(tile {restore['tile']}, max memory {restore['max_memory']}): {restore['minutes']:.2f} min, "
                  f"peak RSS {restore['peak_rss_gib']:.2f} GiB"]  # fmt: skip
    lines += ["", "## Targets", "", bench.markdown_table(result["targets"], TARGET_COLUMNS)]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="default: every body's baseline, dino_ir")
    parser.add_argument("--sizes", nargs="+", type=int, help=f"image sides (default {SIZES}; --quick {QUICK_SIZES})")
    parser.add_argument("--quick", action="store_true", help="tiny models, small sizes, one repeat: the plumbing")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: ONNX Runtime's CUDA provider")
    parser.add_argument("--precision", default="auto", help="eager's: auto (bf16 on CUDA, fp32 on the CPU), fp32")
    parser.add_argument("--repeat", type=int, help="alternating timed calls per runtime (default 5; --quick 1)")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime CPU threads (default: torch's)")
    parser.add_argument("--cache", help="export cache folder (default: the user cache, $RESTOREKIT_CACHE)")
    parser.add_argument("--restore-4k", action="store_true", help="also the 4096 x 4096 dino_ir restore (long)")
    parser.add_argument("--restore-size", type=int, help="side of that restore (default 4096; --quick 160)")
    parser.add_argument("--restore-tile", default=None, help="auto (default) or pixels (--quick: 96)")
    parser.add_argument("--max-memory", default="8G", help="memory budget of the restore's --tile auto")
    parser.add_argument("--out", help="results folder (default $OUT, else benchmarks/out)")
    parser.add_argument("--name", help="file stem (default runtime, runtime_quick, runtime_cuda)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)
    args.repeat = args.repeat or (1 if args.quick else 5)
    args.restore_size = args.restore_size or (160 if args.quick else 4096)
    args.restore_tile = args.restore_tile or ("96" if args.quick else "auto")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not onnxruntime_available():
        raise SystemExit("onnxruntime, onnx and onnxscript are needed: pip install 'restorekit[export]'")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = bench.resolve_device(args.device)
    args.precision = bench.resolve_precision(args.precision, device)
    cache = ExportCache(Path(args.cache) if args.cache else cache_dir() / "onnx")
    name = args.name or ("runtime_quick" if args.quick else "runtime_cuda" if device.type == "cuda" else "runtime")
    folder = bench.out_dir(args.out)
    onnxruntime = ort()  # the optional extra [export], checked above
    result: dict[str, Any] = {
        "env": bench.environment(device, args.precision),
        "config": {"quick": args.quick, "sizes": args.sizes, "repeat": args.repeat, "cache": str(cache.root),
                   "onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()},
        "rows": [], "errors": {}, "restore": None, "targets": [], "complete": False,
    }  # fmt: skip

    def save() -> None:
        result["targets"] = evaluate_targets(result)
        bench.write_json(folder / f"{name}.json", result)
        bench.write_markdown(folder / f"{name}.md", render(result))

    for recipe in args.recipes:
        try:
            result["rows"] += measure(recipe, model_spec(recipe, args.quick), args, device, cache)
        except Exception as exc:  # noqa: BLE001 - one recipe's failure is reported, the others still run
            result["errors"][recipe] = f"{type(exc).__name__}: {str(exc)[:500]}"
            print(f"{recipe}: ERROR {result['errors'][recipe]}", flush=True)
        save()
    if args.restore_4k:
        result["restore"] = restore_large(args, device, cache, result["rows"])
    result["complete"] = True
    save()
    print("\n" + render(result))
    for target in result["targets"]:
        value = "n/a" if target["value"] is None else f"{target['value']:.3f}"
        print(f"TARGET {target['status']}: {target['target']} = {value} ({target['limit']})"
              + (f" [{target['note']}]" if target["note"] else ""))  # fmt: skip
    print(f"\nwrote {folder / (name + '.json')} and {folder / (name + '.md')}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
