"""Mutation check: do the tests notice one-line breakages of what the docs promise?

Each entry of ``MUTATIONS`` breaks one claim with a small edit, located by an exact
source snippet (never a line number: files move). The repository is copied to a
temporary folder (the working tree is never touched), each mutation is applied to the
copy in turn and the tests that guard its claim are run against it
(``PYTHONPATH=<copy>/src``). A mutation is

* KILLED when those tests fail (as they should),
* SURVIVED when they pass (a gap in the tests),
* STALE when its snippet is not found exactly once (the source moved on: update the entry),
* ERROR when pytest could not run (collection or usage error), TIMEOUT when it hung.

Before the mutations, the same tests run once on the unmodified copy; they must pass.
``tests/test_mutation_list.py`` checks that every snippet is found, so the list cannot
go stale silently. Run (a few minutes on 2 cores)::

    python scripts/mutation_check.py            # all
    python scripts/mutation_check.py --only gdfn-gate-value-swap --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_NAMES = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}
SKIPPED_PATHS = {ROOT / "benchmarks" / "out"}


def skip_when_copying(folder: str, names: list[str]) -> set[str]:
    """Caches, environments, run folders and benchmark outputs stay behind."""
    return {n for n in names if n in SKIPPED_NAMES or n.endswith(".egg-info") or Path(folder, n) in SKIPPED_PATHS}


CLAIMS = {
    "bodies": "Restormer, PromptIR, AdaIR and MoCE-IR bodies compute what the official code computes",
    "merge": "recipe merge rules (docs/recipes.md)",
    "resume": "exact resume: a stopped and resumed run ends where an uninterrupted one does",
    "torchrun": "torchrun: split validation, per-rank generator states",
    "dpc": "DPC shares the model's one backbone",
    "metrics": "PSNR and SSIM equal skimage's",
    "plugins": "plugin isolation: a plugin never replaces a builtin, a broken one breaks nothing",
    "run-folder": "run.json records every plugin by name and version",
    "parts": "fusion and adapter compute what their docstrings say",
    "scale": "accumulation follows the one-step trajectory with one all-reduce per optimizer step; "
    "an fp16 overflow is a scaler skip, not a divergence",
    "engine-values": "an optimizer step clips to train.grad_clip; the EMA and the schedules follow their formulas",
    "routing": "MoCE-IR routes each image to top_k experts; its balance loss is the official one",
    "dpc-formula": "DPC's distances are taken per token over the channels, as its formula says",
    "degradations": "each degradation computes its documented formula (docs/degradations.md)",
    "guide": "the guide pass blends its windows with the documented linear ramps, resizes the budget "
    "pass bilinearly, and DINO-IR guides each point with its adapter of the fused layers",
    "seeds": "every draw is a function of its keys; each worker seeds its generators from (seed, rank, worker id)",
    "inference": "tiles blend with guard bands and ramps, the x8 ensemble averages the 8 symmetries, "
    "export pads by reflection to a multiple",
    "evaluation": "a task's score is the mean of its images' scores, borders cropped by eval.crop_border; "
    "the mean row averages the tasks",
}

REFERENCE = ("tests/test_bodies_reference.py",)
RESUME = ("tests/test_engine_train.py::test_resume_after_interruption_is_bitwise_identical",)
TORCHRUN_RNG = ("tests/test_engine_torchrun.py::test_each_rank_resumes_its_own_generator_states",)
TORCHRUN_VAL = ("tests/test_engine_torchrun.py::test_validation_is_split_across_ranks_and_summed",)
RECIPES = ("tests/test_recipes.py",)
DPC = ("tests/test_dpc.py",)
METRICS = ("tests/test_metrics.py",)
PLUGINS = ("tests/test_plugins.py",)
SCALE = "tests/test_engine_scale.py::"
FORMULAS = "tests/test_engine_formulas.py::"
MOCE = (
    "tests/test_bodies_reference.py::test_moce_ir_training_output_and_top_k2_equal_the_official_code",
    "tests/test_bodies_adair_moce.py::test_moce_router_top_k2_gates_and_balance_loss_by_hand",
)
DEGRADATIONS = "tests/test_degradations.py::"
INFERENCE = "tests/test_inference_formulas.py::"


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (found exactly once in ``file``) by ``new``; ``tests`` must then fail."""

    name: str
    claim: str  # a key of CLAIMS
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest paths or node ids, relative to the repository root


MUTATIONS: tuple[Mutation, ...] = (
    # -- bodies -------------------------------------------------------------------------
    Mutation(
        "restormer-skip-concat-order",
        "bodies",
        "src/restorekit/bodies/restormer.py",
        "torch.cat([self.up4_3(latent), e3], 1)",
        "torch.cat([e3, self.up4_3(latent)], 1)",
        REFERENCE,
    ),
    Mutation(
        "gdfn-gate-value-swap",
        "bodies",
        "src/restorekit/bodies/blocks.py",
        "gate, value = self.dwconv(",
        "value, gate = self.dwconv(",
        REFERENCE,
    ),
    Mutation(
        "promptir-prompt3-concat-order",
        "bodies",
        "src/restorekit/bodies/promptir.py",
        "torch.cat([x, self.prompt3(x)], 1)",
        "torch.cat([self.prompt3(x), x], 1)",
        REFERENCE,
    ),
    Mutation(
        "promptir-prompt-mix-over-the-batch",
        "bodies",
        "src/restorekit/bodies/promptir.py",
        "x.mean(dim=(-2, -1))), dim=1)",
        "x.mean(dim=(-2, -1))), dim=0)",
        REFERENCE,
    ),
    Mutation(
        "mdta-temperature-divides",
        "bodies",
        "src/restorekit/bodies/blocks.py",
        "attn = (qh @ kh.transpose(-2, -1)) * temperature",
        "attn = (qh @ kh.transpose(-2, -1)) / temperature",
        REFERENCE,
    ),
    Mutation(
        "bias-free-norm-centres",
        "bodies",
        "src/restorekit/bodies/blocks.py",
        "return x / torch.sqrt(var + _LN_EPS)",
        "return (x - x.mean(1, keepdim=True)) / torch.sqrt(var + _LN_EPS)",
        REFERENCE,
    ),
    Mutation(
        "dual-pixel-skip-from-level1",
        "bodies",
        "src/restorekit/bodies/restormer.py",
        "self.skip_conv(feats[0])",
        "self.skip_conv(feats[1])",
        REFERENCE,
    ),
    Mutation(
        "padding-replicates",
        "bodies",
        "src/restorekit/io/padding.py",
        'x = F.pad(x, (0, pad_w, 0, 0), mode="reflect" if pad_w < w else "replicate")',
        'x = F.pad(x, (0, pad_w, 0, 0), mode="replicate")',
        REFERENCE,
    ),
    Mutation(
        "adair-spatial-gate-pool-order",
        "bodies",
        "src/restorekit/bodies/frequency.py",
        "torch.cat([torch.max(x, dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)",
        "torch.cat([x.mean(dim=1, keepdim=True), torch.max(x, dim=1, keepdim=True)[0]], dim=1)",
        REFERENCE,
    ),
    Mutation(
        "moce-expert-gate-projections-swapped",
        "bodies",
        "src/restorekit/bodies/moce_blocks.py",
        "self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))",
        "self.body(self.proj[1](x)) * F.silu(self.proj[0](shared))",
        REFERENCE,
    ),
    # -- merge rules ----------------------------------------------------------------------
    Mutation(
        "merge-type-without-base-type-replaces",
        "merge",
        "src/restorekit/recipes.py",
        'if "type" in override and "type" in base and new_type != base_type:',
        'if "type" in override and new_type != base_type:',
        RECIPES,
    ),
    Mutation(
        "merge-switch-leaks-nested-mappings",
        "merge",
        "src/restorekit/recipes.py",
        "new_type != base_type:\n                return strip_replace_markers(override)",
        "new_type != base_type:\n                return {**{k: v for k, v in base.items() "
        "if isinstance(v, Mapping)}, **strip_replace_markers(override)}",
        RECIPES,
    ),
    Mutation(
        "merge-ignores-replace-marker",
        "merge",
        "src/restorekit/recipes.py",
        "if override.get(REPLACE_KEY):",
        "if False:",
        RECIPES,
    ),
    # -- resume ---------------------------------------------------------------------------
    Mutation(
        "resume-skips-rng-state",
        "resume",
        "src/restorekit/engine/training_state.py",
        "set_rng_state(rng[self.ctx.rank] if same_world else rng[0])",
        "(rng[self.ctx.rank] if same_world else rng[0])",
        RESUME,
    ),
    Mutation(
        "resume-ema-from-weights",
        "resume",
        "src/restorekit/engine/training_state.py",
        'ema.load_state_dict(loaded.ema, updates=int(state.get("ema_updates", 0)))',
        'ema.load_state_dict(loaded.model, updates=int(state.get("ema_updates", 0)))',
        RESUME,
    ),
    Mutation(
        "resume-skips-optimizer-state",
        "resume",
        "src/restorekit/engine/training_state.py",
        'optimizer.load_state_dict(state["optimizer"])',
        'state["optimizer"]',
        RESUME,
    ),
    Mutation(
        "resume-restarts-the-data",
        "resume",
        "src/restorekit/engine/train.py",
        "iter(self.stream().batches(start))",
        "iter(self.stream().batches(0))",
        RESUME,
    ),
    # -- torchrun -------------------------------------------------------------------------
    Mutation(
        "torchrun-rank0-rng-on-every-rank",
        "torchrun",
        "src/restorekit/engine/training_state.py",
        "set_rng_state(rng[self.ctx.rank] if same_world else rng[0])",
        "set_rng_state(rng[0])",
        TORCHRUN_RNG,
    ),
    Mutation(
        "torchrun-every-rank-scores-every-image",
        "torchrun",
        "src/restorekit/engine/evaluate.py",
        "for index in range(rank, count, world_size):",
        "for index in range(0, count, 1):",
        TORCHRUN_VAL,
    ),
    # -- DPC ------------------------------------------------------------------------------
    Mutation(
        "dpc-binds-a-copy-of-the-model",
        "dpc",
        "src/restorekit/losses/dpc.py",
        "self._bound = [model]",
        'self._bound = [__import__("copy").deepcopy(model)]',
        DPC,
    ),
    Mutation(
        "dpc-keeps-its-own-backbone",
        "dpc",
        "src/restorekit/losses/dpc.py",
        "self.own_backbone = None  # a full second ViT",
        "pass  # a full second ViT",
        DPC,
    ),
    # -- metrics --------------------------------------------------------------------------
    Mutation(
        "psnr-of-mean-absolute-error",
        "metrics",
        "src/restorekit/metrics.py",
        "mse = (pred - target).pow(2).mean(dim=(1, 2, 3))",
        "mse = (pred - target).abs().mean(dim=(1, 2, 3)).pow(2)",
        METRICS,
    ),
    Mutation(
        "ssim-constants-swapped",
        "metrics",
        "src/restorekit/metrics.py",
        "c1, c2 = 0.01**2, 0.03**2",
        "c1, c2 = 0.03**2, 0.01**2",
        METRICS,
    ),
    Mutation(
        "ssim-population-covariance",
        "metrics",
        "src/restorekit/metrics.py",
        "cov_norm = 1.0 if gaussian else size * size / (size * size - 1)",
        "cov_norm = 1.0",
        METRICS,
    ),
    Mutation(
        "luma-weights-bgr",
        "metrics",
        "src/restorekit/metrics.py",
        "_Y_WEIGHTS = (65.481, 128.553, 24.966)",
        "_Y_WEIGHTS = (24.966, 128.553, 65.481)",
        METRICS,
    ),
    # -- plugins --------------------------------------------------------------------------
    Mutation(
        "plugin-replaces-a-builtin",
        "plugins",
        "src/restorekit/registry.py",
        "if builtin is not None and not builtin.entry_point:",
        "if False:",
        PLUGINS,
    ),
    Mutation(
        "plugin-import-errors-escape",
        "plugins",
        "src/restorekit/registry.py",
        "except BaseException as exc:  # noqa: BLE001 - any plugin failure, sys.exit() at import too",
        "except ImportError as exc:",
        PLUGINS,
    ),
    Mutation(
        "plugin-disable-switch-ignored",
        "plugins",
        "src/restorekit/registry.py",
        "if normalise_dist(dist_name) in disabled:",
        "if False:",
        PLUGINS,
    ),
    # -- run folder -----------------------------------------------------------------------
    Mutation(
        "run-json-records-no-plugins",
        "run-folder",
        "src/restorekit/engine/run_folder.py",
        '"plugins": plugin_versions()}',
        '"plugins": {}}',
        ("tests/test_engine_train.py::test_run_json_records_every_plugin_by_name_and_version",),
    ),
    # -- training at scale ---------------------------------------------------------------
    Mutation(
        "accumulate-sums-micro-losses",
        "scale",
        "src/restorekit/engine/step.py",
        "loss = result.total.float() / count",
        "loss = result.total.float()",
        (SCALE + "test_accumulation_follows_the_trajectory_of_one_step_with_the_same_global_batch",),
    ),
    Mutation(
        "accumulate-all-reduces-every-micro-step",
        "scale",
        "src/restorekit/engine/accumulate.py",
        "if ddp is None or last:",
        "if True:",
        (SCALE + "test_ddp_all_reduces_gradients_once_per_optimizer_step",),
    ),
    Mutation(
        "scaler-overflow-counts-as-divergence",
        "scale",
        "src/restorekit/engine/scaler.py",
        "return self.scaler is not None and loss_finite and not grads_finite",
        "return False and loss_finite",
        (SCALE + "test_a_scaler_overflow_is_skipped_without_counting_as_divergence",),
    ),
    # -- parts ----------------------------------------------------------------------------
    Mutation(
        "concat-fusion-reverses-layers",
        "parts",
        "src/restorekit/fusion/concat.py",
        "torch.cat(check_layer_maps(feats, self.num_layers, self.in_channels), dim=1)",
        "torch.cat(check_layer_maps(feats, self.num_layers, self.in_channels)[::-1], dim=1)",
        ("tests/test_fusion.py",),
    ),
    Mutation(
        "adapter-bias-not-zeroed",
        "parts",
        "src/restorekit/adapters/dino_restore.py",
        "nn.init.zeros_(module.bias)",
        "nn.init.ones_(module.bias)",
        ("tests/test_adapters.py",),
    ),
    # -- engine values (issue 30) ---------------------------------------------------------
    Mutation(
        "grad-clip-ignored",
        "engine-values",
        "src/restorekit/engine/step.py",
        "max_norm = settings.grad_clip if settings.grad_clip else math.inf",
        "max_norm = math.inf",
        (FORMULAS + "test_one_training_step_equals_a_hand_clipped_sgd_step",),
    ),
    Mutation(
        "ema-update-ignores-warmup",
        "engine-values",
        "src/restorekit/engine/ema.py",
        "decay = self.current_decay()",
        "decay = self.decay",
        (FORMULAS + "test_ema_update_uses_the_warm_up_decay",),
    ),
    Mutation(
        "cosine-ignores-min-lr-mid-course",
        "engine-values",
        "src/restorekit/engine/schedule.py",
        "rate = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))",
        "rate = 0.5 * self.base_lr * (1.0 + math.cos(math.pi * progress))",
        (FORMULAS + "test_warmup_cosine_mid_course_values_by_hand",),
    ),
    Mutation(
        "multistep-decays-a-step-late",
        "engine-values",
        "src/restorekit/engine/schedule.py",
        "return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)",
        "return self.base_lr * self.gamma ** bisect.bisect_left(self.milestones, step)",
        (FORMULAS + "test_constant_and_multistep_values_by_hand",),
    ),
    # -- routing (issue 30) ----------------------------------------------------------------
    Mutation(
        "moce-router-keeps-one-expert",
        "routing",
        "src/restorekit/bodies/moce_blocks.py",
        "noisy.softmax(dim=-1).topk(self.k, dim=-1)",
        "noisy.softmax(dim=-1).topk(1, dim=-1)",
        MOCE,
    ),
    Mutation(
        "moce-importance-cv-not-squared",
        "routing",
        "src/restorekit/bodies/moce_blocks.py",
        "return (importance.std() / (importance.mean() + 1e-8)) ** 2",
        "return importance.std() / (importance.mean() + 1e-8)",
        MOCE,
    ),
    # -- parts and losses (issue 30) -------------------------------------------------------
    Mutation(
        "dr-query-sides-swapped",
        "parts",
        "src/restorekit/adapters/dino_restore.py",
        'query, context = (g, feature) if self.query == "guide" else (feature, g)',
        'query, context = (feature, g) if self.query == "guide" else (g, feature)',
        ("tests/test_adapters.py::test_cross_attention_fusion_equals_the_attention_by_hand",),
    ),
    Mutation(
        "msf-temperature-multiplies",
        "parts",
        "src/restorekit/fusion/msf.py",
        "logits = self.gate(x.mean(dim=(2, 3))) / self.temperature",
        "logits = self.gate(x.mean(dim=(2, 3))) * self.temperature",
        ("tests/test_fusion.py::test_msf_gate_and_load_balance_by_hand",),
    ),
    Mutation(
        "msf-load-balance-without-k",
        "parts",
        "src/restorekit/fusion/msf.py",
        "self.num_experts * importance.pow(2).sum() - 1.0",
        "importance.pow(2).sum() - 1.0 / self.num_experts",
        ("tests/test_fusion.py::test_msf_gate_and_load_balance_by_hand",),
    ),
    Mutation(
        "dpc-cosine-over-width",
        "dpc-formula",
        "src/restorekit/losses/dpc.py",
        "F.cosine_similarity(a, b, dim=1)",
        "F.cosine_similarity(a, b, dim=-1)",
        (
            "tests/test_dpc.py::test_cosine_distance_is_per_token_over_channels_by_hand",
            "tests/test_dpc.py::test_dpc_cosine_matches_its_formula",
        ),
    ),
    # -- degradations ----------------------------------------------------------------------
    Mutation(
        "noise-uint8-rounds-instead-of-truncating",
        "degradations",
        "src/restorekit/data/degradations.py",
        "return torch.floor((quantised + noise).clamp(0, 255)) / 255.0",
        "return torch.round((quantised + noise).clamp(0, 255)) / 255.0",
        (DEGRADATIONS + "test_noise_formulas_in_numpy",),
    ),
    Mutation(
        "haze-transmission-inverted",
        "degradations",
        "src/restorekit/data/degradations.py",
        "return x * t + airlight * (1 - t)",
        "return x * (1 - t) + airlight * t",
        (DEGRADATIONS + "test_haze_is_the_scattering_model_over_the_depth_proxy",),
    ),
    Mutation(
        "gaussian-defocus-sigma-halved",
        "degradations",
        "src/restorekit/data/degradations.py",
        "return _blur_separable(x, _gaussian_kernel1d(radius))",
        "return _blur_separable(x, _gaussian_kernel1d(radius / 2))",
        (DEGRADATIONS + "test_gaussian_defocus_blurs_with_sigma_equal_to_the_radius",),
    ),
    Mutation(
        "large-kernel-fft-convolves-instead-of-correlating",
        "degradations",
        "src/restorekit/data/degradations.py",
        "torch.fft.rfft2(torch.flip(kernel.to(x), (0, 1)), s=size)",
        "torch.fft.rfft2(kernel.to(x), s=size)",
        (DEGRADATIONS + "test_motion_blur_correlates_with_its_kernel_on_both_paths",),
    ),
    Mutation(
        "low-light-gamma-inverted",
        "degradations",
        "src/restorekit/data/degradations.py",
        "y = scale * x.clamp(0, 1) ** gamma",
        "y = scale * x.clamp(0, 1) ** (1 / gamma)",
        (DEGRADATIONS + "test_low_light_is_a_gamma_curve_then_read_noise",),
    ),
    Mutation(
        "rain-add-blend-keeps-the-brighter",
        "degradations",
        "src/restorekit/data/degradations.py",
        "        return x + rain",
        "        return torch.maximum(x, rain)",
        (DEGRADATIONS + "test_rain_blends_its_streak_layer",),
    ),
    # -- guide ------------------------------------------------------------------------------
    Mutation(
        "guide-ramp-one-token-short",
        "guide",
        "src/restorekit/backbones/guide.py",
        "weight = torch.minimum(weight, (pos + 1) / (lead + 1))",
        "weight = torch.minimum(weight, (pos + 1) / lead)",
        (
            "tests/test_guide.py::test_window_spans_and_ramp_weights_by_hand",
            "tests/test_guide.py::test_windowed_pass_blends_the_window_maps_with_the_ramps_by_hand",
        ),
    ),
    Mutation(
        "guide-budget-resizes-nearest",
        "guide",
        "src/restorekit/backbones/guide.py",
        'F.interpolate(v, size=full, mode="bilinear", align_corners=False) for k, v in maps.items()',
        'F.interpolate(v, size=full, mode="nearest") for k, v in maps.items()',
        ("tests/test_guide.py::test_budget_rule_resizes_the_small_maps_back_bilinearly_by_hand",),
    ),
    Mutation(
        "dino-ir-fuses-the-layers-sorted",
        "guide",
        "src/restorekit/models/dino_ir.py",
        "guide = self.fusion([feats[layer] for layer in self.layers])",
        "guide = self.fusion([feats[layer] for layer in sorted(self.layers)])",
        ("tests/test_dino_ir.py::test_the_output_is_the_body_guided_by_each_points_adapter_of_the_fused_guide",),
    ),
    # -- seeds ------------------------------------------------------------------------------
    Mutation(
        "derive-seed-shift-32",
        "seeds",
        "src/restorekit/data/seeding.py",
        "return (int(state[0]) << 31) ^ int(state[1])",
        "return (int(state[0]) << 32) ^ int(state[1])",
        ("tests/test_stream.py::test_derive_seed_is_numpys_seed_sequence_of_the_keys",),
    ),
    Mutation(
        "worker-seed-ignores-the-rank",
        "seeds",
        "src/restorekit/data/stream.py",
        "worker_init_fn=partial(_seed_worker, derive_seed(self.seed, self.rank))",
        "worker_init_fn=partial(_seed_worker, derive_seed(self.seed, 0))",
        ("tests/test_stream.py::test_each_worker_seeds_the_global_generators_from_the_rank_and_its_id",),
    ),
    Mutation(
        "worker-seed-ignores-the-worker-id",
        "seeds",
        "src/restorekit/data/stream.py",
        "seed = derive_seed(base_seed, worker_id)",
        "seed = derive_seed(base_seed)",
        ("tests/test_stream.py::test_each_worker_seeds_the_global_generators_from_the_rank_and_its_id",),
    ),
    # -- inference --------------------------------------------------------------------------
    Mutation(
        "tile-ramp-spans-the-guard-band",
        "inference",
        "src/restorekit/engine/infer.py",
        "span = max(1, overlap - 2 * guard)",
        "span = max(1, overlap - guard)",
        (
            INFERENCE + "test_tile_offsets_and_ramps_by_hand",
            INFERENCE + "test_a_tiled_restore_is_the_ramp_weighted_average_of_the_tiles",
        ),
    ),
    Mutation(
        "ensemble-skips-the-identity",
        "inference",
        "src/restorekit/engine/ensemble.py",
        "for index in range(TRANSFORMS):",
        "for index in range(1, TRANSFORMS):",
        (INFERENCE + "test_self_ensemble_of_a_row_ramp_adds_one_half_everywhere",),
    ),
    Mutation(
        "eval-restored-score-keeps-the-border",
        "evaluation",
        "src/restorekit/engine/evaluate.py",
        "values.append(float(fn(out, gt.float(), crop_border=crop_border)[0]))",
        "values.append(float(fn(out, gt.float(), crop_border=0)[0]))",
        (FORMULAS + "test_evaluation_scores_are_per_image_psnr_averaged_per_task_then_over_tasks",),
    ),
    Mutation(
        "export-pads-by-replication",
        "inference",
        "src/restorekit/engine/export.py",
        'x = torch.nn.functional.pad(x, pads, mode="reflect")',
        'x = torch.nn.functional.pad(x, pads, mode="replicate")',
        (INFERENCE + "test_export_pads_by_reflection_to_the_next_multiple_and_crops_back",),
    ),
)


# -- checking the list ------------------------------------------------------------------
def snippet_count(root: Path, mutation: Mutation) -> int:
    path = root / mutation.file
    return path.read_text(encoding="utf-8").count(mutation.old) if path.is_file() else 0


def problems(root: Path = ROOT) -> list[str]:
    """Why entries of MUTATIONS cannot run as written (empty when all can)."""
    out = []
    names = [m.name for m in MUTATIONS]
    out += [f"{n}: the name is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in MUTATIONS:
        count = snippet_count(root, m)
        if count != 1:
            out.append(f"{m.name}: snippet found {count} times in {m.file} (expected once): {m.old!r}")
        if m.old == m.new:
            out.append(f"{m.name}: the mutation changes nothing")
        if m.claim not in CLAIMS:
            out.append(f"{m.name}: unknown claim {m.claim!r}")
        for test in m.tests:
            file, _, func = test.partition("::")
            path = root / file
            if not path.is_file():
                out.append(f"{m.name}: no test file {file}")
            elif func and f"def {func}(" not in path.read_text(encoding="utf-8"):
                out.append(f"{m.name}: no test {func} in {file}")
    return out


# -- running -------------------------------------------------------------------------------
def pytest_env(copy: Path) -> dict[str, str]:
    # CI=1 loads the derandomised hypothesis profile of tests/conftest.py: same examples every run.
    return {
        **os.environ,
        "PYTHONPATH": str(copy / "src"),
        "HF_HUB_OFFLINE": "1",
        "CI": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str]:
    """(status, output tail) of ``pytest -x`` on ``tests`` in the copy."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=pytest_env(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", ""
    output = done.stdout + done.stderr
    status = {0: "SURVIVED", 1: "KILLED"}.get(done.returncode, "ERROR")
    if status == "ERROR":
        return status, output[-2000:]
    # The failing test and its exception (pytest -ra), else pytest's last line.
    lines = output.strip().splitlines() or [""]
    failed = [line for line in lines if line.startswith("FAILED ")]
    return status, (failed[0][7:] if failed else lines[-1])[:160]


def check_imports_the_copy(copy: Path) -> None:
    probe = [sys.executable, "-c", "import restorekit; print(restorekit.__file__)"]
    where = subprocess.run(probe, env=pytest_env(copy), capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"restorekit is imported from {where}, not from the copy {copy}")


def mutate(copy: Path, mutation: Mutation, timeout: float) -> tuple[str, str]:
    path = copy / mutation.file
    original = path.read_text(encoding="utf-8")
    if original.count(mutation.old) != 1:
        return "STALE", f"snippet found {original.count(mutation.old)} times in {mutation.file}"
    path.write_text(original.replace(mutation.old, mutation.new), encoding="utf-8")
    try:
        return run_tests(copy, mutation.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the tests unmutated first")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"--only: unknown mutation(s) {sorted(unknown)}")
    if args.list:
        for m in chosen:
            print(f"{m.name:42} {m.claim:11} {m.file}  ->  {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="restorekit-mutants-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(ROOT, copy, ignore=skip_when_copying)
        check_imports_the_copy(copy)
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        if not args.skip_baseline:
            status, tail = run_tests(copy, tests, args.timeout * 2)
            if status != "SURVIVED":  # unmutated, the tests must pass
                print(f"baseline: the tests fail without any mutation ({status}): {tail}")
                return 2
            print(f"baseline: {len(tests)} test targets pass unmutated ({tail})")
        results = []
        for m in chosen:
            started = time.perf_counter()
            status, tail = mutate(copy, m, args.timeout)
            results.append(status)
            print(f"{status:8} {m.name:42} {m.claim:11} {time.perf_counter() - started:5.0f}s  {tail}", flush=True)
    counts = {s: results.count(s) for s in ("KILLED", "SURVIVED", "STALE", "ERROR", "TIMEOUT") if s in results}
    print(f"summary: {len(results)} mutations: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    return 0 if counts.get("KILLED", 0) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
