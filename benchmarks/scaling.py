"""How DINO-IR's cost grows with the image, per guide pass rule, against its body alone.

For each image size (256 to 4096 px by default), guide pass rule (``global``,
``windowed``, ``budget``), guide stride (8, 16) and DINOv2 size (ViT-S, ViT-B):

* FLOPs of one inference on the meta device, at full size (nothing runs), as a ratio
  to the Restormer body alone, and the tokens the backbone runs;
* peak memory of one inference: the live tensor bytes counted on the meta device
  (``restorekit.engine.memory``), or ``torch.cuda.max_memory_allocated`` when timed
  on a GPU;
* time of one inference: tiny configs on the CPU (sizes up to ``--time-max``), full
  size on a GPU (``--device cuda``), as a ratio to the body timed alike.

Then the targets, printed PASS/FAIL (never asserted): under the recipe's default rule,
with ViT-B at stride 8 the FLOP ratio stays <= 2.2x at every size and the ratio at
4096 px is at most 10% above the one at 512 px; at stride 16, <= 1.25x at every size.

    python benchmarks/scaling.py                          # FLOPs at full size, tiny timing on the CPU
    python benchmarks/scaling.py --device cuda            # full-size timing and memory on a GPU
    python benchmarks/scaling.py --tiny --sizes small     # tiny everything (seconds; the test's run)

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (FLOP ratio against size,
log x) into ``--out``, else ``$OUT``, else ``benchmarks/out``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402
import torch  # noqa: E402

RULES = ("global", "windowed", "budget")
STRIDES = (8, 16)
BACKBONES = ("s", "b")
SIZES = {"all": (256, 512, 1024, 2048, 4096), "small": (64, 128)}
TINY_WINDOW = {"guide_window": 8, "guide_overlap": 2}  # --tiny: windows appear at small sizes
LIMIT_STRIDE8, LIMIT_GROWTH, LIMIT_STRIDE16 = 2.2, 1.10, 1.25


# -- models ----------------------------------------------------------------------------------


def default_rule() -> str:
    """The guide pass rule of the ``dino_ir`` recipe: the one the targets judge."""
    from restorekit import load_recipe

    return str(load_recipe("dino_ir")["model"].get("guide_pass", "windowed"))


def model_spec(backbone: str, rule: str, stride: int, tiny: bool, small_window: bool = False) -> dict[str, Any]:
    """The ``dino_ir`` recipe's model with this backbone size, rule and stride (tiny when
    asked; ``small_window``: windows of 8 tokens, so small images window too)."""
    from restorekit import load_recipe
    from restorekit.recipes import merge

    spec = merge(dict(load_recipe("dino_ir")["model"]),
                 {"backbone": {"size": backbone}, "guide_pass": rule, "guide_stride": stride})  # fmt: skip
    spec = bench.tiny_model_spec(spec) if tiny else spec
    return merge(spec, TINY_WINDOW) if small_window else spec


def body_spec(tiny: bool) -> dict[str, Any]:
    from restorekit import load_recipe

    spec = dict(load_recipe("baselines/restormer")["model"])
    return bench.tiny_model_spec(spec) if tiny else spec


def build(spec: Mapping[str, Any], device: torch.device) -> torch.nn.Module:
    import warnings

    from restorekit import build_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        if device.type == "meta":
            with torch.device("meta"):
                return build_model(dict(spec)).eval()
        return build_model(dict(spec)).to(device).eval()


# -- measurements ----------------------------------------------------------------------------


def count(model: torch.nn.Module, size: int) -> dict[str, float]:
    """GMACs and counted peak MiB of one inference at ``size`` px, on the meta device."""
    from restorekit.engine.memory import activation_bytes

    image = torch.empty(1, 3, size, size, device="meta")
    with torch.no_grad():
        gmacs = bench.count_flops(lambda: model(image)) / 2e9
    peak = activation_bytes(model, 1, size, size) / 2**20
    return {"gmacs": gmacs, "peak_mib": peak}


def timed(model: torch.nn.Module, size: int, device: torch.device, warmup: int, repeat: int) -> dict[str, float]:
    """Median ms of one inference at ``size`` px (and CUDA peak MiB)."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device)
    bench.reset_peak_memory(device)
    with torch.inference_mode():
        timing = bench.time_call(lambda: model(image), device, warmup=warmup, repeat=repeat)
    out = {"ms": timing.median_ms}
    if device.type == "cuda":
        out["cuda_peak_mib"] = bench.peak_memory_mib(device)
    return out


def guide_tokens(spec: Mapping[str, Any], size: int) -> int:
    """Tokens the backbone runs for one ``size`` px image under the spec's rule."""
    from restorekit.backbones.guide import GuidePass

    rule = GuidePass(stride=int(spec["guide_stride"]), rule=str(spec["guide_pass"]),
                     window=int(spec.get("guide_window", 37)), overlap=int(spec.get("guide_overlap", 3)))  # fmt: skip
    padded = -(-size // 8) * 8
    return rule.tokens_run(rule.token_grid(padded, padded))


def configurations(backbones: Sequence[str]) -> list[tuple[str, str, int]]:
    return [(b, rule, stride) for b in backbones for stride in STRIDES for rule in RULES]


def measure_flops(args: argparse.Namespace, sizes: Sequence[int], rows: list[dict[str, Any]],
                  save: Callable[[], None]) -> None:  # fmt: skip
    """FLOPs and counted memory for every configuration and size (meta device)."""
    meta = torch.device("meta")
    body = build(body_spec(args.tiny), meta)
    body_counts = {size: count(body, size) for size in sizes}
    del body
    for backbone, rule, stride in configurations(args.backbones):
        spec = model_spec(backbone, rule, stride, args.tiny, small_window=args.tiny)
        model = build(spec, meta)
        for size in sizes:
            measured = count(model, size)
            rows.append({"kind": "flops", "backbone": f"vit_{backbone}", "rule": rule, "stride": stride,
                         "size": size, **measured, "body_gmacs": body_counts[size]["gmacs"],
                         "body_peak_mib": body_counts[size]["peak_mib"],
                         "ratio": measured["gmacs"] / body_counts[size]["gmacs"],
                         "tokens": guide_tokens(spec, size)})  # fmt: skip
            print(
                f"  flops vit_{backbone} stride {stride} {rule:8s} {size:5d} px: "
                f"{rows[-1]['ratio']:.3f}x the body, {measured['peak_mib']:,.0f} MiB counted",
                flush=True,
            )
        del model
        gc.collect()
        save()


def measure_time(args: argparse.Namespace, device: torch.device, sizes: Sequence[int], rows: list[dict[str, Any]],
                 save: Callable[[], None]) -> None:  # fmt: skip
    """Inference time (tiny on the CPU, full size on a GPU) against the body timed alike."""
    tiny = device.type != "cuda"
    warmup, repeat = (3, 10) if device.type == "cuda" else (1, args.repeat)
    body = build(body_spec(tiny), device)
    body_ms = {size: timed(body, size, device, warmup, repeat) for size in sizes}
    del body
    backbones = args.backbones if not tiny else args.backbones[-1:]  # tiny ViTs are one width
    for backbone, rule, stride in configurations(backbones):
        model = build(model_spec(backbone, rule, stride, tiny, small_window=args.tiny), device)
        for size in sizes:
            measured = timed(model, size, device, warmup, repeat)
            rows.append({"kind": "time", "backbone": f"vit_{backbone}" + (" (tiny)" if tiny else ""),
                         "rule": rule, "stride": stride, "size": size, **measured,
                         "body_ms": body_ms[size]["ms"], "time_ratio": measured["ms"] / body_ms[size]["ms"]})  # fmt: skip
            print(
                f"  time vit_{backbone} stride {stride} {rule:8s} {size:5d} px: {measured['ms']:.1f} ms, "
                f"{rows[-1]['time_ratio']:.2f}x the body",
                flush=True,
            )
        del model
        gc.collect()
        save()


# -- targets and output ----------------------------------------------------------------------


def evaluate_targets(rows: Sequence[Mapping[str, Any]], rule: str, tiny: bool) -> list[dict[str, Any]]:
    """The three FLOP targets for ViT-B under ``rule``; ``n/a`` without the sizes they need."""

    def ratios(stride: int) -> dict[int, float]:
        return {
            r["size"]: r["ratio"]
            for r in rows
            if r["kind"] == "flops" and r["backbone"] == "vit_b" and r["rule"] == rule and r["stride"] == stride
        }

    eight, sixteen = ratios(8), ratios(16)
    growth = eight[4096] / eight[512] if {512, 4096} <= set(eight) else None
    targets = [
        (f"stride 8, {rule}: FLOP ratio at every size", max(eight.values(), default=None), LIMIT_STRIDE8),
        (f"stride 8, {rule}: ratio at 4096 px / ratio at 512 px", growth, LIMIT_GROWTH),
        (f"stride 16, {rule}: FLOP ratio at every size", max(sixteen.values(), default=None), LIMIT_STRIDE16),
    ]
    out = []
    for name, value, limit in targets:
        status = "n/a" if value is None or tiny else ("PASS" if value <= limit else "FAIL")
        note = "tiny configs: not the target's model" if tiny else ("" if value is not None else "size not measured")
        out.append({"target": name, "value": value, "limit": limit, "status": status, "note": note})
    return out


def pivot(rows: Sequence[Mapping[str, Any]], kind: str, key: str, fmt: str) -> str:
    """One line per (backbone, stride, rule), one column per size."""
    chosen = [r for r in rows if r["kind"] == kind]
    sizes = sorted({r["size"] for r in chosen})
    lines: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in chosen:
        line = lines.setdefault((r["backbone"], r["stride"], r["rule"]),
                                {"backbone": r["backbone"], "stride": r["stride"], "rule": r["rule"]})  # fmt: skip
        line[str(r["size"])] = r.get(key)
    columns = [("backbone", "backbone"), ("stride", "stride"), ("rule", "rule")]
    columns += [(f"{s} px", str(s), fmt) for s in sizes]
    return bench.markdown_table(list(lines.values()), columns)


def render(result: Mapping[str, Any]) -> str:
    env, cfg, rows = result["env"], result["config"], result["rows"]
    flops = [r for r in rows if r["kind"] == "flops"]
    lines = [f"# Scaling with the image size{' (tiny configs)' if cfg['tiny'] else ''}", "",
             f"DINO-IR against the Restormer body alone, one image, inference. Default guide rule: "
             f"`{cfg['default_rule']}`. FLOPs: meta device, {'tiny' if cfg['tiny'] else 'full size'}.", ""]  # fmt: skip
    if flops:
        lines += ["## FLOP ratio (dino_ir / body)", "", pivot(rows, "flops", "ratio", "{:.2f}x"), "",
                  "## dino_ir GMACs", "", pivot(rows, "flops", "gmacs", "{:,.0f}"), "",
                  "## Guide tokens the backbone runs", "", pivot(rows, "flops", "tokens", None), "",
                  "## Peak memory of one inference (live tensors counted on the meta device, MiB)", "",
                  pivot(rows, "flops", "peak_mib", "{:,.0f}"), ""]  # fmt: skip
        body = sorted({(r["size"], r["body_gmacs"], r["body_peak_mib"]) for r in flops})
        lines += ["Body alone: " + ", ".join(f"{s} px {g:,.0f} GMACs / {m:,.0f} MiB" for s, g, m in body), ""]
    if any(r["kind"] == "time" for r in rows):
        lines += [f"## Time ratio (dino_ir / body), {env['device']}", "",
                  pivot(rows, "time", "time_ratio", "{:.2f}x"), "", "## dino_ir ms per image", "",
                  pivot(rows, "time", "ms", "{:,.1f}"), ""]  # fmt: skip
    lines += ["## Targets", "", bench.markdown_table(result["targets"], [
        ("target", "target"), ("value", "value", "{:.3f}"), ("limit", "limit"), ("status", "status"),
        ("note", "note")])]  # fmt: skip
    return "\n".join(lines)


def plot(result: Mapping[str, Any], path: Path) -> bool:
    """FLOP ratio against size (log-log): one panel per stride, a colour per rule, a line
    style per backbone; the target's limit in grey."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    rows = [r for r in result["rows"] if r["kind"] == "flops"]
    if not rows:
        return False
    fig = Figure(figsize=(10, 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(STRIDES), squeeze=False)[0]
    colours = {"global": "tab:red", "windowed": "tab:blue", "budget": "tab:green"}
    styles = ["--", "-", ":"]
    for ax, stride in zip(axes, STRIDES):
        for style, backbone in zip(styles, sorted({r["backbone"] for r in rows})):
            for rule in RULES:
                points = sorted((r["size"], r["ratio"]) for r in rows
                                if r["backbone"] == backbone and r["rule"] == rule and r["stride"] == stride)  # fmt: skip
                if points:
                    ax.plot(*zip(*points), style, color=colours[rule], marker="o", ms=3, label=f"{backbone} {rule}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        limit = LIMIT_STRIDE8 if stride == 8 else LIMIT_STRIDE16
        low, high = ax.get_ylim()
        ticks = {1, limit, *(t for t in (1.1, 1.5, 2, 3, 5, 10, 20, 30)
                             if (high / low < 4 or t >= 1.5) and abs(t / limit - 1) > 0.12)}  # fmt: skip
        ax.set_yticks(sorted(t for t in ticks if low <= t <= high))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("image side (px)")
        ax.set_ylabel("FLOPs: dino_ir / body")
        ax.set_title(f"guide stride {stride}")
        ax.grid(alpha=0.3, which="both")
        ax.axhline(limit, color="grey", lw=0.8)
    axes[-1].legend(fontsize=7)
    from restorekit.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return True


# -- command line ----------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    if text in SIZES:
        return SIZES[text]
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"--sizes takes all, small or comma-separated pixels, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", default="all", help="all (256..4096), small (64,128) or pixels, comma-separated")
    parser.add_argument("--tiny", action="store_true", help="tiny configs for the FLOPs too (seconds; for tests)")
    parser.add_argument("--device", default="cpu", help="where to time: cpu (tiny configs) or cuda (full size)")
    parser.add_argument(
        "--time-max",
        type=int,
        default=1024,
        help="largest size timed on the CPU (default 1024); a GPU times every size",
    )
    parser.add_argument("--no-time", action="store_true", help="FLOPs and counted memory only")
    parser.add_argument("--backbones", default="s,b", help="DINOv2 sizes (default s,b)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls on the CPU, median reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", help="results folder (default benchmarks/out)")
    args = parser.parse_args(argv)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = parse_sizes(args.sizes)
    device = bench.resolve_device(args.device)
    folder = bench.out_dir(args.out)
    env = bench.environment(device, "fp32")
    rule = default_rule()
    config = {"sizes": list(sizes), "tiny": args.tiny, "backbones": args.backbones, "default_rule": rule,
              "time_device": None if args.no_time else str(device)}  # fmt: skip
    rows: list[dict[str, Any]] = []

    def save() -> dict[str, Any]:
        result = {"env": env, "config": config, "rows": rows, "targets": evaluate_targets(rows, rule, args.tiny)}
        bench.write_json(folder / "scaling.json", result)
        bench.write_markdown(folder / "scaling.md", render(result))
        return result

    print(f"FLOPs on the meta device ({'tiny' if args.tiny else 'full size'}), sizes {list(sizes)}", flush=True)
    measure_flops(args, sizes, rows, save)
    if not args.no_time:
        timed_sizes = [s for s in sizes if device.type == "cuda" or s <= args.time_max]
        print(f"time on {env['device']}, sizes {timed_sizes}", flush=True)
        measure_time(args, device, timed_sizes, rows, save)
    result = save()
    plot(result, folder / "scaling.png")
    print(render(result).split("## Targets")[-1].strip())
    print(f"wrote {folder / 'scaling.json'}, scaling.md and scaling.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
