"""Speed, memory and FLOP efficiency of the recipes, side by side in one run on one device.

For each recipe (DINO-IR, its ablations, the Restormer, PromptIR, AdaIR and MoCE-IR baselines):

* training step (forward, the recipe's loss with DPC where it has one, backward,
  gradient clipping, AdamW step) at 128 px, batch 8: median time, images/s,
  peak memory, FLOPs of the step and the achieved FLOP/s as a fraction of a
  dense matmul measured in the same run (bf16 on a GPU, fp32 on the CPU);
* inference at 512x512 (batch 1, inference mode): ms per image and per
  megapixel, peak memory, GMACs;
* trainable and frozen parameters.

Then the targets, as ratios from this run: DINO-IR's step <= 1.25x and its
inference <= 1.15x the body alone; on an H100/H200 in bf16 the body's training
step at >= 40% of the matmul FLOP/s. They print PASS/FAIL; nothing asserts.

    python benchmarks/speed.py --tiny                     # CPU, tiny configs, < 1 min
    python benchmarks/speed.py --meta                     # parameters and FLOPs at full size, no timing
    python benchmarks/speed.py --recipes dino_ir baselines/restormer --device cuda
    python benchmarks/speed.py --recipes dino_ir --levers channels_last,sdpa,grad_checkpoint,compile
    python benchmarks/speed.py --recipes dino_ir --loop 200 --levers compile   # it/s, compile off and on

Random inputs stand in for data (no data loading is timed); a DINOv2 without
weights is randomly initialised, which changes no timing. Results are written
after every measurement, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench  # noqa: E402
import levers as lever_tools  # noqa: E402
import torch  # noqa: E402

BASELINES = ("baselines/restormer", "baselines/promptir", "baselines/adair", "baselines/moce_ir", "baselines/moce_ir_s")
LEVERS = ("channels_last", "sdpa", "grad_checkpoint", "compile", "no_dpc_reuse", "backbone_bf16")
BACKBONE_LEVERS = ("no_dpc_reuse", "backbone_bf16")
TRAIN_RATIO_LIMIT, INFER_RATIO_LIMIT, BODY_MATMUL_LIMIT = 1.25, 1.15, 0.40


@dataclass(frozen=True)
class Levers:
    """The performance levers one measurement runs with."""

    channels_last: bool = False
    sdpa: bool = False  # channel attention through scaled_dot_product_attention
    grad_checkpoint: bool = False
    compile: bool = False
    no_dpc_reuse: bool = False  # DPC runs its own backbone pass on the input (loss not bound)
    backbone_bf16: bool = False  # the backbone's own bf16 knob (unset, it follows the caller's autocast)

    def label(self, base: Levers) -> str:
        changed = [name for name in LEVERS if getattr(self, name) != getattr(base, name)]
        on = [name for name in LEVERS if getattr(self, name)]
        if not changed:
            return "base" + (f" ({'+'.join(on)})" if on else "")
        return "+".join(("" if getattr(self, n) else "-") + n for n in changed)


@dataclass(frozen=True)
class Setting:
    device: torch.device
    precision: str
    tiny: bool
    train_batch: int
    train_size: int
    infer_size: int
    warmup: int
    repeat: int
    grad_clip: float | None = 1.0
    overrides: tuple[str, ...] = ()  # -o key=value, applied to every recipe but the baselines


# -- recipes ------------------------------------------------------------------------------


def default_recipes() -> list[str]:
    """dino_ir, every ablation, the 3-task baselines (those that exist)."""
    from restorekit.recipes import list_recipes

    known = list_recipes()
    names = ["dino_ir"] + sorted(n for n in known if n.startswith("ablations/")) + list(BASELINES)
    return [n for n in names if n in known]


def resolve_specs(name: str, tiny: bool, levers: Levers, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Any]:
    """The recipe's model and loss specs, tiny when asked, with the backbone lever applied.

    ``-o`` overrides apply to the guided models only: the baselines (a body alone)
    stay the reference the targets divide by.
    """
    from restorekit import load_recipe

    recipe = load_recipe(name)
    if overrides and recipe["model"].get("type") not in bench.TINY["body"]:
        recipe = load_recipe(name, list(overrides))
    model_spec = dict(recipe["model"])
    loss_spec = recipe.get("loss") or {"type": "l1"}
    if tiny:
        model_spec = bench.tiny_model_spec(model_spec, loss_spec)
        loss_spec = bench.tiny_loss_spec(loss_spec)
    if levers.backbone_bf16 and model_spec.get("type") == "dino_ir":
        backbone = model_spec.get("backbone") or {"type": "dinov2"}
        backbone = {"type": backbone} if isinstance(backbone, str) else dict(backbone)
        model_spec["backbone"] = {**backbone, "dtype": "bf16"}
    return model_spec, loss_spec


# -- one measurement ------------------------------------------------------------------------


class TrainStep:
    """One full training step of the engine (:class:`restorekit.engine.step.TrainStep`: forward,
    loss, backward, clipping, the NaN guard, AdamW step, EMA update) on fixed random batches.
    ``forward`` may be swapped for a compiled model (the optimizer and its state stay the same)."""

    def __init__(self, model: Any, loss_fn: Any, setting: Setting, levers: Levers) -> None:
        from restorekit.engine.config import build_schedule, train_config
        from restorekit.engine.distributed import DistContext
        from restorekit.engine.ema import EMA
        from restorekit.engine.parts import build_optimizer
        from restorekit.engine.step import StepSettings
        from restorekit.engine.step import TrainStep as EngineStep
        from restorekit.frozen import iter_trainable

        cfg = train_config({"schedule": "constant"})  # the engine's defaults (AdamW, EMA) at a constant rate
        params = list(iter_trainable(model))
        fmt = torch.channels_last if levers.channels_last else torch.contiguous_format
        settings = StepSettings(grad_clip=setting.grad_clip, autocast=setting.precision == "bf16", memory_format=fmt)
        ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay is not None else None
        ctx = DistContext(rank=0, world_size=1, local_rank=0, device=setting.device)
        self.step = EngineStep(model, loss_fn, build_optimizer(cfg, params), build_schedule(cfg), params=params,
                               settings=settings, ema=ema, ctx=ctx)  # fmt: skip
        self.optimizer = self.step.optimizer
        gen = torch.Generator().manual_seed(0)
        shape = (setting.train_batch, 3, setting.train_size, setting.train_size)
        self.batches = []
        for _ in range(2):  # two batches alternate, so no step reuses the last one's input
            gt = torch.rand(shape, generator=gen)
            lq = (gt + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
            lq, gt = (t.to(setting.device).contiguous(memory_format=fmt) for t in (lq, gt))
            self.batches.append({"lq": lq, "gt": gt})
        self.count = 0

    @property
    def forward(self) -> Any:
        return self.step.forward_model

    @forward.setter
    def forward(self, module: Any) -> None:
        self.step.forward_model = module

    def __call__(self) -> torch.Tensor:
        batch = self.batches[self.count % len(self.batches)]
        result = self.step(batch, self.count)
        self.count += 1
        return result.loss


def has_backbone(name: str, overrides: Sequence[str] = ()) -> bool:
    """Whether the recipe's model runs a backbone (the DPC-reuse lever concerns those only)."""
    model_spec, _ = resolve_specs(name, tiny=False, levers=Levers(), overrides=overrides)
    return model_spec.get("type") == "dino_ir"


def measure_meta(name: str, setting: Setting, levers: Levers) -> dict[str, Any]:
    """Parameters and FLOPs only, at any size, on the meta device (no memory, no timing):
    a training step's forward, loss and backward, and one inference forward."""
    from restorekit.params import count_params

    model_spec, loss_spec = resolve_specs(name, setting.tiny, levers, setting.overrides)
    row: dict[str, Any] = {"recipe": name, "model_type": model_spec.get("type"), "body": bench.body_type(model_spec)}
    row["body_spec"] = model_spec.get("body") if model_spec.get("type") == "dino_ir" else model_spec
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        model, loss_fn = bench.build_model_and_loss(model_spec, loss_spec, device="meta", bind=not levers.no_dpc_reuse)
    if levers.grad_checkpoint:
        row["checkpointed_blocks"] = lever_tools.enable_grad_checkpointing(model)
    row["params_trainable"], row["params_frozen"] = count_params(model)
    shape = (setting.train_batch, 3, setting.train_size, setting.train_size)
    lq, gt = torch.rand(shape, device="meta"), torch.rand(shape, device="meta")
    with lever_tools.sdpa_channel_attention(levers.sdpa):  # counted as measure() runs it
        model.train()
        flops = bench.count_flops(lambda: bench.forward_loss(model, model, loss_fn, lq, gt).total.backward())
        row["train"] = {"batch": setting.train_batch, "size": setting.train_size, "flops_per_step": flops}
        model.eval()
        x = torch.rand(1, 3, setting.infer_size, setting.infer_size, device="meta")
        with torch.no_grad():
            row["infer"] = {"size": setting.infer_size, "gmacs": bench.count_flops(lambda: model(x)) / 2 / 1e9}
    return row


def measure(name: str, setting: Setting, levers: Levers, matmul: Mapping[str, Any], loop: int = 0) -> dict[str, Any]:
    """Build the recipe's model and loss and measure them (see the module docstring)."""
    from restorekit.params import count_params

    device = setting.device
    row: dict[str, Any] = {"recipe": name}
    model_spec, loss_spec = resolve_specs(name, setting.tiny, levers, setting.overrides)
    row["model_type"], row["body"] = model_spec.get("type"), bench.body_type(model_spec)
    row["body_spec"] = model_spec.get("body") if model_spec.get("type") == "dino_ir" else model_spec
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        model, loss_fn = bench.build_model_and_loss(model_spec, loss_spec, device, bind=not levers.no_dpc_reuse)
    if levers.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if levers.grad_checkpoint:
        row["checkpointed_blocks"] = lever_tools.enable_grad_checkpointing(model)
    trainable, frozen = count_params(model)
    row["params_trainable"], row["params_frozen"] = trainable, frozen
    backbone = getattr(model, "backbone", None)
    row["random_backbone"] = backbone is not None and getattr(backbone, "weights", "given") is None

    with lever_tools.sdpa_channel_attention(levers.sdpa):
        model.train()
        step = TrainStep(model, loss_fn, setting, levers)
        flops = bench.count_flops(step)  # eager: FlopCounterMode does not see inside compiled code
        if levers.compile:
            torch._dynamo.reset()  # a fresh cache per measurement: no recompile limit carried over
        forward = torch.compile(model) if levers.compile else model
        step.forward = forward
        bench.reset_peak_memory(device)
        first_s = bench.wall_seconds(step, device)  # compiles when compiling
        train: dict[str, Any] = {"batch": setting.train_batch, "size": setting.train_size,
                                 "flops_per_step": flops, "first_step_s": first_s}  # fmt: skip
        if loop:
            train.update(run_loop(step, device, loop, setting.warmup))
        else:
            timing = bench.time_call(step, device, warmup=max(0, setting.warmup - 1), repeat=setting.repeat)
            train.update(timing.as_dict())
            train["step_ms"] = timing.median_ms
        train["peak_mib"] = bench.peak_memory_mib(device)
        step_s = train["step_ms"] / 1e3
        train["images_per_s"] = setting.train_batch / step_s
        train["compile_s"] = max(0.0, first_s - step_s) if levers.compile else None
        train["achieved_flops_per_s"] = flops / step_s
        train["matmul_fraction"] = train["achieved_flops_per_s"] / matmul["flops_per_s"]
        row["train"] = train
        del step
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not loop:
            row["infer"] = measure_inference(model, forward, setting, levers)
    return row


def run_loop(step: Callable[[], Any], device: torch.device, iterations: int, warmup: int) -> dict[str, Any]:
    """``iterations`` steps back to back after the warm-up: iterations per second."""
    for _ in range(warmup):
        step()
    bench.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        loss = step()
    bench.synchronize(device)
    elapsed = time.perf_counter() - t0
    return {"iterations": iterations, "loop_s": elapsed, "it_per_s": iterations / elapsed,
            "step_ms": elapsed / iterations * 1e3, "last_loss": float(loss)}  # fmt: skip


def measure_inference(model: Any, forward: Any, setting: Setting, levers: Levers) -> dict[str, Any]:
    device, size = setting.device, setting.infer_size
    model.eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    if levers.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def run(fn: Any) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), bench.autocast(device, setting.precision):
                return fn(x)

        return call

    flops = bench.count_flops(run(model))
    bench.reset_peak_memory(device)
    first_s = bench.wall_seconds(run(forward), device)
    timing = bench.time_call(run(forward), device, warmup=max(0, setting.warmup - 1), repeat=setting.repeat)
    megapixels = size * size / 1e6
    model.train()
    return {
        "size": size,
        "ms_per_image": timing.median_ms,
        "ms_per_mp": timing.median_ms / megapixels,
        "first_call_s": first_s,
        "peak_mib": bench.peak_memory_mib(device),
        "gmacs": flops / 2 / 1e9,
        **{f"timing_{k}": v for k, v in timing.as_dict().items()},
    }


# -- targets --------------------------------------------------------------------------------


def body_config(spec: Any) -> dict[str, Any]:
    """A body spec without its type and weights: what makes two bodies the same network."""
    return {k: v for k, v in (spec if isinstance(spec, Mapping) else {}).items() if k not in ("type", "weights")}


def comparable_body(rows: Sequence[Mapping[str, Any]], guided: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The baseline row of ``guided``'s body: the same type and variant, the same config when one has it.

    baselines/moce_ir and baselines/moce_ir_s are both ``type: moce_ir`` (dim 48 and 32);
    matching the type alone compared ablations/moce_ir_body with the smaller one (3.7x).
    """
    same_type = [
        r for r in rows
        if "error" not in r and r.get("model_type") == r.get("body") == guided.get("body")
        and r.get("variant") == guided.get("variant")
    ]  # fmt: skip
    config = body_config(guided.get("body_spec"))
    return next(
        (r for r in same_type if body_config(r.get("body_spec")) == config), same_type[0] if same_type else None
    )


def evaluate_targets(rows: Sequence[Mapping[str, Any]], env: Mapping[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL of each target from this run's base measurements ('n/a' when not measurable)."""
    ok = [r for r in rows if "error" not in r and r.get("variant", "base").startswith("base")]
    dino = next((r for r in ok if r["recipe"] == "dino_ir"), None)
    body = comparable_body(ok, dino) if dino else None
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, op: str, note: str = "") -> None:
        if value is None:
            status = "n/a"
        else:
            status = "PASS" if (value <= limit if op == "<=" else value >= limit) else "FAIL"
        targets.append({"target": name, "value": value, "limit": f"{op} {limit}", "status": status, "note": note})

    why = "needs dino_ir and its body's baseline in the same run"
    note = ""
    if dino and body:
        config_a, config_b = body_config(dino.get("body_spec")), body_config(body.get("body_spec"))
        if config_a != config_b:
            note = f"body configs differ: dino_ir {config_a} vs {body['recipe']} {config_b}"
    train_ratio = dino["train"]["step_ms"] / body["train"]["step_ms"] if dino and body else None
    add(
        "dino_ir training step / body alone", train_ratio, TRAIN_RATIO_LIMIT, "<=", note or ("" if train_ratio else why)
    )
    infer_ratio = (dino["infer"]["ms_per_image"] / body["infer"]["ms_per_image"]
                   if dino and body and "infer" in dino and "infer" in body else None)  # fmt: skip
    add(
        f"dino_ir inference / body alone ({dino['infer']['size'] if dino and 'infer' in dino else 512} px)",
        infer_ratio,
        INFER_RATIO_LIMIT,
        "<=",
        note or ("" if infer_ratio else why),
    )
    hopper = (
        env.get("device_type") == "cuda"
        and env.get("precision") == "bf16"
        and any(chip in str(env.get("device", "")) for chip in ("H100", "H200"))
    )
    body_row = body or next((r for r in ok if r.get("model_type") in ("restormer", "promptir")), None)
    fraction = body_row["train"]["matmul_fraction"] if body_row and hopper else None
    add("body training FLOP/s / matmul FLOP/s (H100, bf16)", fraction, BODY_MATMUL_LIMIT, ">=",
        (f"{body_row['recipe']} on {env.get('device')}" if fraction is not None
         else "measured only on an H100/H200 in bf16"))  # fmt: skip
    return targets


# -- tables ---------------------------------------------------------------------------------

COLUMNS = [
    ("recipe", "recipe"), ("variant", "variant"), ("trainable M", "trainable_m"), ("frozen M", "frozen_m"),
    ("train ms/step", "train_ms"), ("img/s", "images_per_s"), ("train peak MiB", "train_peak"),
    ("TFLOP/step", "tflop_step"), ("TFLOP/s", "tflops"), ("% matmul", "pct_matmul"),
    ("infer ms/MP", "ms_per_mp"), ("infer peak MiB", "infer_peak"), ("GMACs", "gmacs"),
]  # fmt: skip
LOOP_COLUMNS = [
    ("recipe", "recipe"), ("variant", "variant"), ("iterations", "iterations"), ("it/s", "it_per_s"),
    ("ms/step", "train_ms"), ("first step s", "first_step_s"), ("compile s", "compile_s"),
    ("peak MiB", "train_peak"), ("TFLOP/s", "tflops"), ("% matmul", "pct_matmul"),
]  # fmt: skip


def table_row(row: Mapping[str, Any]) -> dict[str, Any]:
    if "error" in row:
        return {"recipe": row["recipe"], "variant": row.get("variant"), "trainable_m": "ERROR: " + row["error"][:80]}
    train, infer = row.get("train", {}), row.get("infer", {})
    return {
        "recipe": row["recipe"], "variant": row.get("variant"),
        "trainable_m": row["params_trainable"] / 1e6, "frozen_m": row["params_frozen"] / 1e6,
        "train_ms": train.get("step_ms"), "images_per_s": train.get("images_per_s"),
        "train_peak": train.get("peak_mib"), "tflop_step": train.get("flops_per_step", 0) / 1e12,
        "tflops": train.get("achieved_flops_per_s", 0) / 1e12,
        "pct_matmul": 100 * train["matmul_fraction"] if "matmul_fraction" in train else None,
        "ms_per_mp": infer.get("ms_per_mp"), "infer_peak": infer.get("peak_mib"), "gmacs": infer.get("gmacs"),
        "iterations": train.get("iterations"), "it_per_s": train.get("it_per_s"),
        "first_step_s": train.get("first_step_s"), "compile_s": train.get("compile_s"),
    }  # fmt: skip


def lever_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each lever's change against its recipe's base variant, in percent."""
    out = []
    base = {r["recipe"]: r for r in rows if r.get("variant", "").startswith("base") and "error" not in r}
    for row in rows:
        ref = base.get(row["recipe"])
        if ref is None or row is ref or "error" in row:
            continue

        def delta(section: str, key: str, ref: dict = ref, row: dict = row) -> float | None:
            a, b = ref.get(section, {}).get(key), row.get(section, {}).get(key)
            return None if a in (None, 0) or b is None else 100.0 * (b - a) / a

        out.append({"recipe": row["recipe"], "variant": row["variant"],
                    "train_ms": row["train"]["step_ms"], "d_train": delta("train", "step_ms"),
                    "train_peak": row["train"]["peak_mib"], "d_peak": delta("train", "peak_mib"),
                    "ms_per_mp": row.get("infer", {}).get("ms_per_mp"), "d_infer": delta("infer", "ms_per_mp"),
                    "compile_s": row["train"].get("compile_s")})  # fmt: skip
    return out


LEVER_COLUMNS = [
    ("recipe", "recipe"), ("lever", "variant"), ("train ms", "train_ms"), ("train %", "d_train"),
    ("train peak MiB", "train_peak"), ("peak %", "d_peak"), ("infer ms/MP", "ms_per_mp"),
    ("infer %", "d_infer"), ("compile s", "compile_s"),
]  # fmt: skip
TARGET_COLUMNS = [("target", "target"), ("value", "value"), ("limit", "limit"), ("status", "status"), ("note", "note")]


META_COLUMNS = [
    ("recipe", "recipe"), ("variant", "variant"), ("trainable M", "trainable_m"), ("frozen M", "frozen_m"),
    ("TFLOP/step", "tflop_step"), ("x body (train)", "x_train"), ("GMACs", "gmacs"), ("x body (infer)", "x_infer"),
]  # fmt: skip


def render_meta(result: Mapping[str, Any]) -> str:
    """FLOPs and parameters, each with its ratio to the recipe's body alone (when measured)."""
    cfg = result["config"]
    table = []
    for row in result["rows"]:
        entry = table_row(row)
        body = comparable_body(result["rows"], row)  # the body alone, under the same levers
        if body is not None and "error" not in row:
            entry["x_train"] = row["train"]["flops_per_step"] / body["train"]["flops_per_step"]
            entry["x_infer"] = row["infer"]["gmacs"] / body["infer"]["gmacs"]
        table.append(entry)
    return "\n".join([
        "# Parameters and FLOPs" + (" (tiny configs)" if cfg["tiny"] else ""), "",
        f"Counted on the meta device (torch.utils.flop_counter, 2 FLOPs per multiply-add; matmuls, convolutions "
        f"and attention only). Training step: forward, loss and backward at batch {cfg['train_batch']} x "
        f"{cfg['train_size']} px; GMACs: one {cfg['infer_size']} x {cfg['infer_size']} inference."
        + (f" Overrides: {', '.join(cfg['overrides'])}." if cfg.get("overrides") else ""), "",
        bench.markdown_table(table, META_COLUMNS),
    ])  # fmt: skip


def render(result: Mapping[str, Any]) -> str:
    env, cfg = result["env"], result["config"]
    if cfg.get("meta"):
        return render_meta(result)
    mm = result["matmul"]
    lines = [
        f"# Speed: {env['device']}, {env['precision']}, torch {env['torch']}" + (" (tiny configs)" if cfg["tiny"] else ""),
        "",
        f"Training step: batch {cfg['train_batch']} at {cfg['train_size']} px; inference: 1 x {cfg['infer_size']}"
        f" x {cfg['infer_size']}. Memory: {bench.memory_kind(torch.device(env['device_type']))}. Matmul ceiling: "
        f"{mm['flops_per_s'] / 1e12:.3g} TFLOP/s ({mm['dtype']}, {mm['size']}^3).",
    ]  # fmt: skip
    if any(r.get("random_backbone") for r in result["rows"]):
        lines.append("Backbones are randomly initialised (no weights offline); timings are unaffected.")
    lines += ["", bench.markdown_table([table_row(r) for r in result["rows"]],
                                       LOOP_COLUMNS if cfg.get("loop") else COLUMNS)]  # fmt: skip
    levers = lever_rows(result["rows"])
    if levers:
        lines += ["", "## Levers (change against the base variant)", "", bench.markdown_table(levers, LEVER_COLUMNS)]
    if result.get("targets"):
        lines += ["", "## Targets", "", bench.markdown_table(result["targets"], TARGET_COLUMNS)]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", help="recipe names (default: dino_ir, ablations, baselines)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (train 32 px, inference 64 px)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default: auto; cpu with --tiny)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="auto: bf16 autocast on CUDA, fp32 on the CPU (the engine's convention)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    parser.add_argument("--sdpa", action="store_true", help="channel attention through scaled_dot_product_attention")
    parser.add_argument("--grad-checkpoint", action="store_true", help="recompute transformer blocks in backward")
    parser.add_argument(
        "--no-dpc-reuse", action="store_true", help="do not bind the loss: DPC runs its own backbone pass on the input"
    )
    parser.add_argument("--backbone-bf16", action="store_true", help="the frozen backbone's bf16 knob (CUDA)")
    parser.add_argument("--levers", default="", help=f"also measure each lever toggled alone: {','.join(LEVERS)}")
    parser.add_argument(
        "--loop",
        type=int,
        default=0,
        metavar="N",
        help="time N training steps back to back (it/s) instead of the median step; no inference",
    )
    parser.add_argument(
        "--meta",
        action="store_true",
        help="parameters and FLOPs only, on the meta device (full size on any machine, no timing)",
    )
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="recipe override for every recipe but the baselines (e.g. model.guide_stride=16)",
    )
    parser.add_argument("--train-batch", type=int, help="default 8 (tiny: 2)")
    parser.add_argument("--train-size", type=int, help="default 128 (tiny: 32)")
    parser.add_argument("--infer-size", type=int, help="default 512 (tiny: 64)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (default: 5 on CUDA, 2 tiny, 1 on the CPU)")
    parser.add_argument(
        "--repeat", type=int, help="timed calls, median reported (default: 20 on CUDA, 5 tiny, 3 on the CPU)"
    )
    parser.add_argument("--matmul-size", type=int, help="side of the matmul ceiling (8192 on CUDA, 1024 on the CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny, else torch's)")
    parser.add_argument("--out", help="results folder (default benchmarks/out)")
    parser.add_argument("--name", help="file stem of the results (default speed, speed_tiny, levers, loop)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)  # tiny: 1 thread, steadier on a shared CPU
    if args.meta:
        device, precision = torch.device("meta"), "fp32"
    else:
        device = bench.resolve_device(args.device or ("cpu" if args.tiny else "auto"))
        precision = bench.resolve_precision(args.precision, device)
    bench.setup_backends(device)
    gpu = device.type == "cuda"
    setting = Setting(
        device=device, precision=precision, tiny=args.tiny,
        train_batch=args.train_batch or (2 if args.tiny else 8),
        train_size=args.train_size or (32 if args.tiny else 128),
        infer_size=args.infer_size or (64 if args.tiny else 512),
        warmup=args.warmup if args.warmup is not None else (5 if gpu else 2 if args.tiny else 1),
        repeat=args.repeat or (20 if gpu else 5 if args.tiny else 3),
        overrides=tuple(args.override or ()),
    )  # fmt: skip
    base = Levers(channels_last=args.channels_last, sdpa=args.sdpa, grad_checkpoint=args.grad_checkpoint,
                  compile=args.compile, no_dpc_reuse=args.no_dpc_reuse, backbone_bf16=args.backbone_bf16)  # fmt: skip
    extra = [name.strip().replace("-", "_") for name in args.levers.split(",") if name.strip()]
    unknown = [name for name in extra if name not in LEVERS]
    if unknown:
        raise SystemExit(f"--levers: unknown {unknown}; known: {', '.join(LEVERS)}")
    variants = [base] + [replace(base, **{name: not getattr(base, name)}) for name in extra]
    recipes = args.recipes or default_recipes()
    if not recipes:
        raise SystemExit("no recipes found (expected dino_ir, ablations/*, baselines/*)")
    name = args.name or ("flops" if args.meta else "loop" if args.loop else "levers" if extra
                         else "speed_tiny" if args.tiny else "speed")  # fmt: skip
    folder = bench.out_dir(args.out)

    env = bench.environment(device, precision)
    print(f"device: {env['device']}, precision {precision}, torch {env['torch']}", flush=True)
    matmul = None
    if not args.meta:
        matmul = bench.matmul_ceiling(device, precision, args.matmul_size or (512 if args.tiny else None))
        print(f"matmul ceiling: {matmul['flops_per_s'] / 1e12:.3g} TFLOP/s ({matmul['dtype']}, {matmul['size']}^3)",
              flush=True)  # fmt: skip
    config = {**{k: v for k, v in setting.__dict__.items() if k != "device"}, "levers": base.__dict__,
              "lever_variants": extra, "loop": args.loop, "meta": args.meta, "recipes": recipes}  # fmt: skip
    rows: list[dict[str, Any]] = []
    failed = 0

    def save(complete: bool) -> dict[str, Any]:
        """Write the results so far (after every measurement: a stage cut short keeps them)."""
        result = {"env": env, "config": config, "matmul": matmul, "rows": rows, "complete": complete,
                  "targets": [] if args.loop or args.meta else evaluate_targets(rows, env)}  # fmt: skip
        bench.write_json(folder / f"{name}.json", result)
        bench.write_markdown(folder / f"{name}.md", render(result))
        return result

    for recipe in recipes:
        for levers in variants:
            toggled = {n for n in BACKBONE_LEVERS if getattr(levers, n) != getattr(base, n)}
            try:
                skip = bool(toggled) and not has_backbone(recipe, setting.overrides)
            except Exception:  # noqa: BLE001 - a bad recipe is reported as an error row below
                skip = False
            if skip:
                continue  # these levers concern models with a backbone only
            variant = levers.label(base)
            t0 = time.perf_counter()
            try:
                if args.meta:
                    row = measure_meta(recipe, setting, levers)
                else:
                    row = measure(recipe, setting, levers, matmul, loop=args.loop)
            except Exception as exc:  # noqa: BLE001 - one broken recipe must not stop the others
                failed += 1
                traceback.print_exc()
                row = {"recipe": recipe, "error": f"{type(exc).__name__}: {exc}"}
            row["variant"] = variant
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            summary = table_row(row)
            if args.meta and "error" not in row:
                print(
                    f"{recipe} [{variant}]: {summary['tflop_step']:.3g} TFLOP/step, "
                    f"{summary['gmacs']:.4g} GMACs at {setting.infer_size} px",
                    flush=True,
                )
            else:
                print(f"{recipe} [{variant}]: " + ("ERROR " + row["error"] if "error" in row else
                      f"train {summary['train_ms']:.1f} ms/step, peak {summary['train_peak']:.0f} MiB"
                      + (f", infer {summary['ms_per_mp']:.1f} ms/MP" if summary.get("ms_per_mp") else "")
                      + (f", {summary['it_per_s']:.2f} it/s" if summary.get("it_per_s") else "")
                      + (f", compile {summary['compile_s']:.1f} s" if summary.get("compile_s") is not None else "")
                      + f" ({row['wall_s']:.1f} s)"), flush=True)  # fmt: skip
            save(complete=False)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = save(complete=True)
    print("\n" + render(result))
    for target in result["targets"]:
        value = "n/a" if target["value"] is None else f"{target['value']:.3f}"
        print(f"TARGET {target['status']}: {target['target']} = {value} ({target['limit']})"
              + (f" [{target['note']}]" if target["note"] else ""))  # fmt: skip
    print(f"\nwrote {folder / (name + '.json')} and {folder / (name + '.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
