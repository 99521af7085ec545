"""The benchmarks: their helpers (levers keep the maths, FLOP counts, tiny configs, targets)
and the scripts end to end with tiny budgets, checking the structure of what they write.

No timing is asserted: speed targets live in the benchmarks, not in the tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restorekit.tiny import DINO_IR_LAYERS

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


def _load(name: str):
    """Import a benchmark module. The helpers (``common``, ``levers``, ``short_runs``) go
    by their own names, as the scripts import them; a script gets a private name."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in ("common", "levers", "short_runs"):
        return importlib.import_module(name)
    key = f"_restorekit_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


bench = _load("common")
levers = _load("levers")
short_runs = _load("short_runs")


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# -- levers keep the maths ---------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    heads=st.integers(1, 3),
    cq=st.integers(1, 4),
    ck=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_sdpa_channel_attention_matches_the_reference(heads, cq, ck, h, w, seed):
    from restorekit.bodies.blocks import channel_attention

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads * cq, h, w, generator=gen)
    k = torch.randn(2, heads * ck, h, w, generator=gen)
    v = torch.randn(2, heads * ck, h, w, generator=gen)
    temperature = torch.rand(heads, 1, 1, generator=gen) * 3 + 0.1
    expected = channel_attention(q, k, v, heads, temperature)
    got = levers.channel_attention_sdpa(q, k, v, heads, temperature)
    assert got.shape == expected.shape == q.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sdpa_channel_attention_on_device(device):
    """The lever on the device it speeds up (CUDA picks its own SDPA kernels)."""
    from restorekit.bodies.blocks import channel_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 48, 32, 32, generator=gen).to(device) for _ in range(3))
    temperature = (torch.rand(4, 1, 1, generator=gen) + 0.5).to(device)
    expected = channel_attention(q, k, v, 4, temperature)
    tol = 5e-3 if device == "cuda" else 1e-4  # CUDA kernels may use TF32 (the engine allows it)
    torch.testing.assert_close(levers.channel_attention_sdpa(q, k, v, 4, temperature), expected, rtol=tol, atol=tol)
    if device == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = levers.channel_attention_sdpa(q, k, v, 4, temperature)
        torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)


def test_timing_memory_and_matmul_ceiling_on_device(device):
    dev = torch.device(device)
    bench.reset_peak_memory(dev)
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev).fill_(1)  # 64 MiB, touched
    peak = bench.peak_memory_mib(dev)
    assert peak >= 64
    timing = bench.time_call(lambda: block.sum(), dev, warmup=1, repeat=3)
    assert timing.repeats == 3 and 0 < timing.min_ms <= timing.median_ms
    ceiling = bench.matmul_ceiling(dev, "bf16" if device == "cuda" else "fp32", size=256, repeat=2)
    assert ceiling["flops_per_s"] > 0 and ceiling["dtype"] == ("bfloat16" if device == "cuda" else "float32")


def test_sdpa_lever_patches_bodies_and_adapters_and_restores_them():
    import restorekit.adapters.dino_restore as dr
    import restorekit.bodies.blocks as blocks

    original = blocks.channel_attention, dr.channel_attention
    block = blocks.TransformerBlock(16, 2)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        reference = block(x)
        with levers.sdpa_channel_attention():
            assert blocks.channel_attention is levers.channel_attention_sdpa
            assert dr.channel_attention is levers.channel_attention_sdpa
            patched = block(x)
    assert (blocks.channel_attention, dr.channel_attention) == original
    torch.testing.assert_close(patched, reference, rtol=1e-5, atol=1e-5)


def test_grad_checkpointing_keeps_loss_and_gradients():
    from restorekit.bodies.restormer import Restormer

    def loss_and_grads(checkpointed: bool):
        torch.manual_seed(0)
        body = Restormer(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1], num_refinement_blocks=1)
        wrapped = levers.enable_grad_checkpointing(body) if checkpointed else 0
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        loss = body(x).square().mean()
        loss.backward()
        return wrapped, loss.detach(), [p.grad.clone() for p in body.parameters()]

    n, loss_ref, grads_ref = loss_and_grads(False)
    wrapped, loss, grads = loss_and_grads(True)
    assert n == 0 and wrapped == 8  # 4 encoder/latent + 3 decoder levels + 1 refinement block
    torch.testing.assert_close(loss, loss_ref)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_grad_checkpointing_lever_reaches_the_body_only():
    """As the recipe knob ``model.body.grad_checkpointing``: not the timm backbone's own."""
    import warnings

    from tiny_dino_ir import tiny_dino_ir

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*randomly initialised.*")
        model = tiny_dino_ir()
    assert levers.enable_grad_checkpointing(model) == 8
    assert model.backbone.model.grad_checkpointing is False
    assert all(not getattr(stack, "grad_checkpointing", False) for stack in model.adapters.modules())


def test_a_misspelled_recipe_with_a_backbone_lever_is_an_error_row_not_a_crash(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "speed.py"), "--tiny", "--recipes", "baselines/restormr",
         "baselines/restormer", "--levers", "no_dpc_reuse", "--warmup", "0", "--repeat", "1",
         "--out", str(tmp_path), "--name", "typo"],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    result = json.loads((tmp_path / "typo.json").read_text())
    assert proc.returncode != 0 and result["complete"]  # reported as a failure, every recipe tried
    errors = [row for row in result["rows"] if "error" in row]
    assert {row["recipe"] for row in errors} == {"baselines/restormr"} and "not found" in errors[0]["error"]
    assert any(row["recipe"] == "baselines/restormer" and "train" in row for row in result["rows"])


# -- FLOPs ----------------------------------------------------------------------------------


def test_flop_count_of_conv_and_linear_is_analytic():
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    linear = torch.nn.Linear(10, 7, bias=False)
    x, y = torch.randn(2, 4, 5, 5), torch.randn(3, 10)
    assert bench.count_flops(lambda: conv(x)) == 2 * 2 * 5 * 5 * 6 * 4 * 9
    assert bench.count_flops(lambda: linear(y)) == 2 * 3 * 10 * 7
    # forward + backward: the gradient of input and weight each cost one forward
    x.requires_grad_(True)
    assert bench.count_flops(lambda: conv(x).sum().backward()) == 3 * 2 * 2 * 5 * 5 * 6 * 4 * 9


def test_flop_count_sees_fused_attention_on_the_cpu():
    from torch.utils.flop_counter import sdpa_flop_count

    q = torch.randn(2, 3, 7, 16)
    counted = bench.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert counted == sdpa_flop_count(q.shape, q.shape, q.shape) > 0


# -- tiny configurations of every recipe ------------------------------------------------------


@pytest.mark.slow
def test_tiny_specs_of_every_recipe_build_with_the_same_parts():
    import warnings

    from restorekit import load_recipe
    from restorekit.recipes import list_recipes

    speed = _load("speed")
    names = speed.default_recipes()
    assert "dino_ir" in names and "baselines/restormer" in names
    assert set(names) >= {n for n in list_recipes() if n.startswith("ablations/")}
    for name in names:
        recipe = load_recipe(name)
        spec, loss = bench.model_and_loss_specs(name, tiny=True)
        assert spec["type"] == recipe["model"]["type"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = bench.build_model_and_loss(spec, loss)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable < 2_000_000, f"{name}: tiny model has {trainable:,} parameters"
        if spec["type"] == "dino_ir":
            full = recipe["model"]
            assert (
                type(model.backbone).__name__
                == {"dinov2": "DINOv2Backbone", "clip": "CLIPBackbone", "timm": "TimmBackbone"}[
                    full["backbone"]["type"]
                ]
            )
            assert model.backbone.num_layers > max(spec.get("layers", DINO_IR_LAYERS))
            assert model.layers == list(full.get("layers", DINO_IR_LAYERS))
            frozen = sum(p.numel() for p in model.backbone.parameters())
            assert 0 < frozen < 1_000_000


# -- targets ------------------------------------------------------------------------------------


def _row(recipe, model_type, step_ms, infer_ms, fraction=0.5, body="restormer"):
    return {"recipe": recipe, "variant": "base", "model_type": model_type, "body": body,
            "body_spec": {"type": "restormer", "dim": 48},
            "train": {"step_ms": step_ms, "matmul_fraction": fraction},
            "infer": {"ms_per_image": infer_ms, "size": 512}}  # fmt: skip


def test_targets_pass_fail_and_not_measurable():
    speed = _load("speed")
    h100 = {"device_type": "cuda", "precision": "bf16", "device": "NVIDIA H100 80GB HBM3"}
    rows = [_row("dino_ir", "dino_ir", 120.0, 11.0), _row("baselines/restormer", "restormer", 100.0, 10.0, 0.42)]
    status = [t["status"] for t in speed.evaluate_targets(rows, h100)]
    assert status == ["PASS", "PASS", "PASS"]
    rows = [_row("dino_ir", "dino_ir", 130.0, 12.0), _row("baselines/restormer", "restormer", 100.0, 10.0, 0.3)]
    targets = speed.evaluate_targets(rows, h100)
    assert [t["status"] for t in targets] == ["FAIL", "FAIL", "FAIL"]
    assert targets[0]["value"] == pytest.approx(1.3) and targets[1]["value"] == pytest.approx(1.2)
    cpu = {"device_type": "cpu", "precision": "fp32", "device": "CPU"}
    assert [t["status"] for t in speed.evaluate_targets(rows[:1], cpu)] == ["n/a", "n/a", "n/a"]


def test_markdown_table_formats_cells():
    text = bench.markdown_table(
        [{"a": 1.23456, "b": 12345.6, "c": None, "d": "x|y"}],
        [("A", "a"), ("B", "b"), ("C", "c"), ("D", "d"), ("A2", "a", "{:.2f}")],
    )
    header, rule, row = text.splitlines()
    assert header == "| A | B | C | D | A2 |"
    assert row == "| 1.23 | 12,346 | - | x\\|y | 1.23 |"


# -- the scripts, end to end with tiny budgets --------------------------------------------------


@pytest.mark.slow
def test_speed_tiny_writes_json_markdown_and_targets(tmp_path):
    proc = _run("speed.py", "--tiny", "--recipes", "dino_ir", "baselines/restormer",
                "--warmup", "0", "--repeat", "1", "--out", str(tmp_path))  # fmt: skip
    result = json.loads((tmp_path / "speed_tiny.json").read_text())
    assert result["complete"] and result["env"]["device_type"] == "cpu"
    assert result["matmul"]["flops_per_s"] > 0
    rows = {r["recipe"]: r for r in result["rows"]}
    assert set(rows) == {"dino_ir", "baselines/restormer"}
    dino, body = rows["dino_ir"], rows["baselines/restormer"]
    for row in (dino, body):
        assert row["train"]["step_ms"] > 0 and row["train"]["peak_mib"] > 0
        assert row["train"]["achieved_flops_per_s"] > 0 and row["infer"]["gmacs"] > 0
        assert row["infer"]["ms_per_mp"] > 0 and row["params_trainable"] > 0
    assert dino["params_frozen"] > 0 and body["params_frozen"] == 0 and dino["random_backbone"]
    # DINO-IR does the body's work plus the backbone, fusion, adapters and DPC passes
    assert dino["train"]["flops_per_step"] > body["train"]["flops_per_step"]
    assert dino["infer"]["gmacs"] > body["infer"]["gmacs"]
    statuses = [t["status"] for t in result["targets"]]
    assert statuses[0] in ("PASS", "FAIL") and statuses[1] in ("PASS", "FAIL") and statuses[2] == "n/a"
    text = (tmp_path / "speed_tiny.md").read_text()
    assert "| recipe | variant |" in text and "## Targets" in text and "dino_ir" in text
    assert proc.stdout.count("TARGET ") == 3


@pytest.mark.slow
def test_speed_loop_and_dpc_reuse_lever(tmp_path):
    _run("speed.py", "--tiny", "--recipes", "dino_ir", "--loop", "2", "--levers", "no_dpc_reuse",
         "--warmup", "0", "--out", str(tmp_path), "--name", "loop")  # fmt: skip
    result = json.loads((tmp_path / "loop.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"base", "no_dpc_reuse"} and result["targets"] == []
    for row in rows.values():
        assert row["train"]["iterations"] == 2 and row["train"]["it_per_s"] > 0 and "infer" not in row
    # without the shared pass, DPC runs the backbone on the degraded input once more
    assert rows["no_dpc_reuse"]["train"]["flops_per_step"] > rows["base"]["train"]["flops_per_step"]
    assert "| it/s |" in (tmp_path / "loop.md").read_text()


@pytest.mark.slow
def test_task_scaling_tiny_reports_psnr_per_task_as_tasks_are_added(tmp_path):
    _run("task_scaling.py", "--tiny", "--models", "baselines/restormer", "--max-tasks", "2",
         "--iterations", "2", "--eval-size", "48", "--out", str(tmp_path), "--report")  # fmt: skip
    result = json.loads((tmp_path / "task_scaling_tiny.json").read_text())
    assert result["tasks"] == ["noise", "rain"] and result["models"] == ["restormer"]
    rows = sorted(result["rows"], key=lambda r: r["n_tasks"])
    assert [r["n_tasks"] for r in rows] == [1, 2]
    assert set(rows[0]["psnr"]) == {"noise"} and set(rows[1]["psnr"]) == {"noise", "rain"}
    assert all(10 < v < 60 for r in rows for v in r["psnr"].values())
    assert set(result["input_psnr"]) == {"noise", "rain"}
    assert result["drops"][0]["model"] == "restormer" and "noise" in result["drops"][0]
    text = (tmp_path / "task_scaling_tiny.md").read_text()
    assert "| model | tasks | noise | rain | mean |" in text
    assert (tmp_path / "task_scaling_tiny.png").stat().st_size > 0
    report = (tmp_path / "task_scaling_tiny_report.md").read_text()  # --report: restorekit report of both runs
    assert "| run | recipe |" in report and "restormer-1tasks" in report and "restormer-2tasks" in report
    assert (
        "**restormer-2tasks against restormer-1tasks**" in report
        and "| data.val.rain.dataset.degradation.type | (absent) | 'rain' |" in report
    )
    assert (tmp_path / "task_scaling_tiny_report.html").read_text().count('class="series"') >= 2


@pytest.mark.slow
def test_quality_samples_tiny_compares_both_models_per_task(tmp_path):
    _run("quality_samples.py", "--tiny", "--tasks", "noise,haze", "--iterations", "2",
         "--eval-size", "48", "--out", str(tmp_path))  # fmt: skip
    result = json.loads((tmp_path / "quality_samples_tiny.json").read_text())
    assert result["models"] == ["restormer", "dino_ir"] and not result["errors"]
    for model in result["models"]:
        assert set(result["psnr"][model]) == {"noise", "haze", "mean"}
    assert result["budget"]["iterations"] == 2 and result["random_backbone"]
    text = (tmp_path / "quality_samples_tiny.md").read_text()
    assert "| task | input | restormer | dino_ir | dino_ir - restormer |" in text
    assert "claims nothing about the paper" in text


@pytest.mark.slow
def test_meta_mode_counts_full_size_flops_without_running(tmp_path):
    speed = _load("speed")
    setting = speed.Setting(device=torch.device("meta"), precision="fp32", tiny=False, train_batch=8,
                            train_size=128, infer_size=128, warmup=0, repeat=1)  # fmt: skip
    body = speed.measure_meta("baselines/restormer", setting, speed.Levers())
    dino = speed.measure_meta("dino_ir", setting, speed.Levers())
    second_pass = speed.measure_meta("dino_ir", setting, speed.Levers(no_dpc_reuse=True))
    assert body["params_trainable"] == 26_126_644 and body["params_frozen"] == 0  # the official Restormer
    assert dino["params_frozen"] > 80_000_000  # DINOv2 ViT-B/14
    assert dino["train"]["flops_per_step"] > body["train"]["flops_per_step"] > 0
    assert dino["infer"]["gmacs"] > body["infer"]["gmacs"] > 30  # Restormer: about 39 GMACs at 128 px
    assert second_pass["train"]["flops_per_step"] > dino["train"]["flops_per_step"]
    # a training step is a forward and about two more for the gradients of inputs and weights
    forward = body["infer"]["gmacs"] * 2e9 * 8  # the same 128 px, batch 8
    assert 2.5 * forward < body["train"]["flops_per_step"] <= 3 * forward * 1.001


def test_scaling_tiny_writes_flop_ratios_per_rule_targets_and_the_plot(tmp_path):
    proc = _run("scaling.py", "--tiny", "--sizes", "small", "--backbones", "b", "--repeat", "1", "--out", str(tmp_path))
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## FLOP ratio (dino_ir / body)" in (tmp_path / "scaling.md").read_text()
    flops = {(r["rule"], r["stride"], r["size"]): r for r in result["rows"] if r["kind"] == "flops"}
    assert set(flops) == {(rule, stride, size) for rule in ("global", "windowed", "budget")
                          for stride in (8, 16) for size in (64, 128)}  # fmt: skip
    # tiny windows of 8 tokens: 64 px (8 x 8 tokens) is one global pass under every rule
    assert flops[("windowed", 8, 64)]["gmacs"] == flops[("global", 8, 64)]["gmacs"] == flops[("budget", 8, 64)]["gmacs"]
    # 128 px: 16 x 16 tokens in 3 x 3 windows of 7 (overlap >= 2), or shrunk to 8 x 8
    assert [flops[(rule, 8, 128)]["tokens"] for rule in ("global", "windowed", "budget")] == [256, 441, 64]
    budget, whole, windowed = (flops[(rule, 8, 128)]["gmacs"] for rule in ("budget", "global", "windowed"))
    assert budget < min(whole, windowed) and windowed != whole
    assert all(r["peak_mib"] > 0 and r["ratio"] > 1 for r in flops.values())
    assert {(r["rule"], r["size"]) for r in result["rows"] if r["kind"] == "time"} == {
        (rule, size) for rule in ("global", "windowed", "budget") for size in (64, 128)
    }
    assert [t["status"] for t in result["targets"]] == ["n/a"] * 3 and "stride 8, windowed" in proc.stdout


def test_task_scaling_protocol_uses_the_3_4_and_5_task_recipes_data_exactly():
    from restorekit import load_recipe

    task_scaling = _load("task_scaling")
    args = task_scaling.parse_args(["--data-recipe", "protocol"])
    order = task_scaling.task_order(args, load_recipe("dino_ir_5task"))
    assert order == ["denoise", "derain", "dehaze", "deblur", "lowlight"]
    chosen = [task_scaling.protocol_data(order[:n]) for n in range(1, 6)]
    assert [name for name, _ in chosen] == ["dino_ir", "dino_ir", "dino_ir", "dino_ir_4task", "dino_ir_5task"]
    for n in (3, 4, 5):
        assert chosen[n - 1][1] == load_recipe(chosen[n - 1][0])["data"]
    four = chosen[3][1]  # the paper summary's four: noise (15/25/50), blur, rain, haze
    assert set(four["train"]) == set(four["val"]) == {"denoise_15", "denoise_25", "denoise_50", "derain", "dehaze",
                                                       "deblur"}  # fmt: skip
    assert list(chosen[0][1]["val"]) == ["denoise_15", "denoise_25", "denoise_50"]
    assert task_scaling.data_for(order[:4], args, None) == four


def test_task_scaling_groups_a_user_data_section_into_tasks():
    from restorekit import load_recipe

    data = load_recipe("dino_ir_5task")["data"]
    assert short_runs.data_tasks(data) == ["denoise", "derain", "dehaze", "deblur", "lowlight"]
    two = short_runs.subset_data(data, ["denoise", "derain"])
    assert list(two["train"]) == ["denoise_15", "denoise_25", "denoise_50", "derain"]
    assert list(two["val"]) == ["denoise_25", "derain"]
    assert two["train"]["derain"] == data["train"]["derain"] and two["patch_size"] == data["patch_size"]
    with pytest.raises(SystemExit, match="no task"):
        short_runs.subset_data(data, ["inpaint"])


def test_gpu_check_dry_run_completes_every_stage_and_writes_the_summary(tmp_path):
    """The GPU check's plumbing on the CPU, so a lent GPU's minutes are not spent on a
    broken script: every stage runs (restorekit train, torchrun with one process, the dry
    run), and the summary holds the training, speed and lever tables."""
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "PYTHON": sys.executable,
           "TMPDIR": str(tmp_path), "GPU_CHECK_BUDGET": "400", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("tests (cuda)", "train 200 steps, bf16, eager", "train 200 steps, bf16, compile",
                  "torchrun NCCL, 1 process", "dry run (full size)", "tests (subset)", "speed (full size, bf16)",
                  "levers"):  # fmt: skip
        assert f"| {stage} | ok |" in summary, summary
    # no CUDA provider on the CPU: the ONNX Runtime stage says it was skipped, and why
    assert "| runtime (onnxruntime CUDA vs eager bf16) | skipped |" in summary
    assert "runtime (onnxruntime CUDA vs eager bf16): no results" in summary
    assert "| dino_ir training step / body alone |" in summary
    assert "| base | dino_ir |" in summary and "| channels_last | baselines/restormer |" in summary
    for name in ("speed", "levers"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["rows"] and not any("error" in row for row in result["rows"]), name
    trained = json.loads((out / "train.json").read_text())
    assert trained["eager"]["steps"] == trained["compile"]["steps"] == 5 and trained["torchrun"]["steps"] == 4
    assert trained["torchrun"]["world_size"] == 1 and trained["eager"]["it_s"] > 0
    assert "| eager (fp32, 1 process) | 5 |" in summary and "estimated peak memory per GPU" in summary
    log = (out / "gpu_check.log").read_text()
    assert "DistributedDataParallel over 1 process(es), backend gloo" in log  # torchrun: the DDP code path
    assert "GPU check done" in log and len(list(out.iterdir())) <= 8  # what a device run can bring back


def test_benchmarks_build_and_step_through_the_engine() -> None:
    """Nothing is copied "as the engine does": the benchmarks call the engine's builders and loss step."""
    from restorekit.engine import parts, step

    assert bench.build_model_and_loss is parts.build_model_and_loss
    assert bench.forward_loss is step.forward_loss
    speed = _load("speed")
    model, loss = bench.build_model_and_loss({"type": "restormer", **bench.TINY["body"]["restormer"]}, None)
    setting = speed.Setting(
        device=torch.device("cpu"),
        precision="fp32",
        tiny=True,
        train_batch=1,
        train_size=16,
        infer_size=16,
        warmup=0,
        repeat=1,
    )
    train_step = speed.TrainStep(model, loss, setting, speed.Levers())
    assert type(train_step.optimizer) is torch.optim.AdamW  # the engine's default optimizer, from its registry
    assert train_step.optimizer.defaults["weight_decay"] == 0.01
    assert type(train_step.step) is step.TrainStep  # the engine's step object, not a copy of its update
    before = {k: v.clone() for k, v in train_step.step.ema.shadow.items()}
    loss = train_step()
    assert loss.shape == () and train_step.step.ema.updates == 1  # the EMA update is part of the step
    assert any(not torch.equal(before[k], v) for k, v in train_step.step.ema.shadow.items())


def test_unseen_gap_pairs_each_unseen_task_with_its_seen_task():
    unseen_gap = _load("unseen_gap")
    rows = unseen_gap.paired_rows("m", {"noise": 3.0, "rain": 1.0}, {"noise_75": 0.5, "rain_dense": 1.5, "blur_x": 2.0})
    assert [(r["seen"], r["unseen"], r["gap"]) for r in rows] == [("noise", "noise_75", 2.5),
                                                                  ("rain", "rain_dense", -0.5), ("blur", "blur_x", None)]  # fmt: skip
    scores = {"tasks": {"noise": {"psnr": 30.0, "psnr_in": 20.5}}}
    assert unseen_gap.gains(scores) == {"noise": 9.5}


def test_meta_ratios_compare_each_guided_model_with_its_own_body_config():
    """baselines/moce_ir (dim 48) and moce_ir_s (dim 32) are both type moce_ir: ablations/moce_ir_body
    (dim 48) is compared with the dim-48 one, whatever the order of the rows."""
    speed = _load("speed")
    moce = {"dim": 48, "num_blocks": [4, 6, 6, 8]}

    def row(recipe, model_type, body, spec, train, gmacs):
        return {"recipe": recipe, "model_type": model_type, "body": body, "body_spec": spec, "variant": None,
                "params_trainable": 1, "params_frozen": 0,
                "train": {"flops_per_step": train}, "infer": {"gmacs": gmacs}}  # fmt: skip

    rows = [
        row("ablations/moce_ir_body", "dino_ir", "moce_ir", {"type": "moce_ir", **moce}, 30.0, 600.0),
        row("baselines/moce_ir", "moce_ir", "moce_ir", {"type": "moce_ir", **moce}, 20.0, 400.0),
        row("baselines/moce_ir_s", "moce_ir", "moce_ir", {"type": "moce_ir", **moce, "dim": 32}, 8.0, 160.0),
    ]
    for order in (rows, [rows[0], rows[2], rows[1]]):
        assert speed.comparable_body(order, rows[0])["recipe"] == "baselines/moce_ir"
        assert speed.comparable_body(order, rows[2])["recipe"] == "baselines/moce_ir_s"  # a body is its own
    # a guided body config no baseline has: the first baseline of that type, and the targets say they differ
    odd = row("x", "dino_ir", "moce_ir", {"type": "moce_ir", "dim": 64}, 1.0, 1.0)
    assert speed.comparable_body(rows, odd)["recipe"] == "baselines/moce_ir"
    table = speed.render_meta({"config": {"tiny": False, "train_batch": 8, "train_size": 128, "infer_size": 512},
                               "rows": [rows[0], rows[2], rows[1]]})  # fmt: skip
    line = next(x for x in table.splitlines() if x.startswith("| ablations/moce_ir_body"))
    assert line.endswith("| 1.5 | 600 | 1.5 |")  # 30 / 20 and 600 / 400, not 3.75 and 3.75


@pytest.mark.slow
def test_runtime_quick_compares_eager_and_onnxruntime_and_restores(tmp_path):
    """The plumbing of benchmarks/runtime.py: tiny dino_ir (4-token guide windows, so 45 px
    needs the fixed-size export), both runtimes timed, the large restore through the faster
    one (tiles of 45 px: the same export), the targets n/a (they are the full-size CPU's)."""
    pytest.importorskip("onnxruntime")
    proc = _run("runtime.py", "--quick", "--recipes", "dino_ir", "--restore-4k", "--restore-size", "96",
                "--restore-tile", "45", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path), timeout=900)  # fmt: skip
    result = json.loads((tmp_path / "runtime_quick.json").read_text())
    assert result["complete"] and not result["errors"] and result["config"]["quick"]
    rows = {row["size"]: row for row in result["rows"]}
    assert set(rows) == {32, 45} and rows[32]["graph"] == "any size" and rows[45]["graph"] == "45x45"
    for row in rows.values():
        assert row["eager_ms"] > 0 and row["ort_ms"] > 0 and row["max_diff"] <= 1e-4
        assert row["ratio"] == pytest.approx(row["ort_ms"] / row["eager_ms"])
    restore = result["restore"]
    assert restore["written"] and restore["size"] == 96 and restore["tile"] == 45
    assert restore["runtime"] == ("onnxruntime" if rows[45]["ratio"] < 1 else "eager")
    assert [t["status"] for t in result["targets"]] == ["n/a", "n/a"]
    assert "| recipe | px | eager ms |" in (tmp_path / "runtime_quick.md").read_text()
    assert proc.stdout.count("TARGET n/a") == 2
