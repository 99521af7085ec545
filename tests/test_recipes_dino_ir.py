"""The DINO-IR recipes: each builds (tiny) and trains a step; each ablation changes only its knob."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from restorekit import build, build_model
from restorekit.contracts import sparse_gradient_prefixes
from restorekit.data.build import check_data_config, task_entries
from restorekit.engine.config import eval_config, train_config
from restorekit.engine.parts import build_model_and_loss
from restorekit.engine.step import forward_loss
from restorekit.recipes import load_recipe, recipe_diff
from restorekit.tiny import tiny_loss_spec, tiny_model_spec

pytestmark = pytest.mark.filterwarnings("ignore:dino_ir. the .* backbone is randomly initialised")

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = ["dino_ir", "dino_ir_4task", "dino_ir_5task"] + sorted(
    p.relative_to(RECIPES_DIR).with_suffix("").as_posix()
    for folder in ("ablations", "baselines")
    for p in (RECIPES_DIR / folder).glob("*.yaml")
)
# What each ablation may change besides its name and description: dotted-key prefixes.
ABLATION_CHANGES = {
    "ablations/concat_fusion": ["model.fusion."],
    "ablations/dr_concat": ["model.adapter.fusion"],
    "ablations/dr_cross_attention": ["model.adapter.fusion"],
    "ablations/no_dpc": ["loss.terms"],
    "ablations/clip_backbone": ["model.backbone."],
    "ablations/shallow_layers": ["model.layers"],
    "ablations/deep_layers": ["model.layers"],
    "ablations/restoration_query": ["model.adapter.fusion", "model.adapter.query"],
    "ablations/vit_s14": ["model.backbone.size"],
    "ablations/vit_l14": ["model.backbone.size", "model.layers"],
    "ablations/promptir_body": ["model.body."],
    "ablations/adair_body": ["model.body."],
    "ablations/moce_ir_body": ["model.body."],
}
# Baselines trained as their own repositories do: (iterations, warmup) of that schedule.
OWN_SCHEDULES = {
    "baselines/adair": (667_500, 66_750),
    "baselines/adair_4task": (716_850, 71_685),
    "baselines/adair_5task": (762_300, 76_230),
    "baselines/moce_ir": (534_000, 66_750),
    "baselines/moce_ir_s": (534_000, 66_750),
    "baselines/moce_ir_4task": (573_480, 71_685),
    "baselines/moce_ir_s_4task": (573_480, 71_685),
    "baselines/moce_ir_5task": (609_840, 76_230),
    "baselines/moce_ir_s_5task": (609_840, 76_230),
}


def test_the_recipe_set_is_complete() -> None:
    expected = {
        "dino_ir",
        "dino_ir_4task",
        "dino_ir_5task",
        "baselines/restormer",
        "baselines/promptir",
        *ABLATION_CHANGES,
        *OWN_SCHEDULES,
    }
    assert expected == set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_sections_validate(name) -> None:
    recipe = load_recipe(name)
    assert recipe["name"] == name and recipe["description"]
    train = train_config(recipe, name)
    iterations, warmup = OWN_SCHEDULES.get(name, (500_000, 50_000))
    assert (train.iterations, train.batch_size, train.lr) == (iterations, 32, 2e-4)
    assert train.schedule["warmup_iters"] == warmup
    eval_config(recipe, name)
    data = check_data_config(recipe["data"])
    tasks = {e.name for e in task_entries(data, "train")}
    val = {e.name for e in task_entries(data, "val")}
    three = {"denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"}
    if name.endswith("5task"):
        assert tasks == three | {"deblur", "lowlight"}
        assert val == {"denoise_25", "derain", "dehaze", "deblur", "lowlight"}
    elif name.endswith("4task"):  # the paper summary's four: noise, blur, rain, haze
        assert tasks == val == three | {"deblur"}
        assert recipe.get("published") is None
    else:
        assert tasks == val == three


@pytest.mark.parametrize("name", sorted(ABLATION_CHANGES))
def test_each_ablation_changes_only_what_its_name_says(name) -> None:
    rows = recipe_diff(load_recipe(name), load_recipe("dino_ir"))
    changed = {key for key, _, _ in rows} - {"name", "description"}
    allowed = ABLATION_CHANGES[name]
    assert changed, f"{name} changes nothing"
    assert all(key.startswith(tuple(allowed)) for key in changed), sorted(changed)
    assert all(any(key.startswith(p) for key in changed) for p in allowed)


def test_baselines_keep_data_and_training_of_dino_ir() -> None:
    for name in ("baselines/restormer", "baselines/promptir"):
        changed = {key.split(".")[0] for key, _, _ in recipe_diff(load_recipe(name), load_recipe("dino_ir"))}
        assert changed == {"name", "description", "model", "loss"}
        assert load_recipe(name)["loss"] == {"type": "l1"}


@pytest.mark.parametrize("name", sorted(OWN_SCHEDULES))
def test_baselines_with_their_own_schedule_keep_the_protocol_data(name) -> None:
    protocol = next((p for p in ("dino_ir_4task", "dino_ir_5task") if name.endswith(p[-5:])), "dino_ir")
    recipe = load_recipe(name)
    changed = {key.split(".")[0] for key, _, _ in recipe_diff(recipe, load_recipe(protocol))}
    assert changed == {"name", "description", "model", "loss", "train", "eval"}
    train = train_config(recipe, name)
    assert train.ema_decay is None and train.grad_clip is None  # neither repository has them
    assert eval_config(recipe, name).use_ema is False


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_builds_tiny_and_trains_one_step(name) -> None:
    recipe = load_recipe(name)
    torch.manual_seed(0)
    model, loss = build_model_and_loss(tiny_model_spec(recipe["model"], recipe["loss"]), tiny_loss_spec(recipe["loss"]))
    lq, gt = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    value = forward_loss(model, model, loss, lq, gt).total
    value.backward()
    torch.manual_seed(1)  # MoCE-IR's router draws noise: the same draws for model and body below
    restored = model(lq)
    assert restored.shape == lq.shape and torch.isfinite(value)
    # A routed expert no image chose gets no gradient (test_bodies_adair_moce checks those).
    sparse = sparse_gradient_prefixes(model)
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(sparse)]
    assert trainable and all(p.grad is not None for p in trainable)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)
    if recipe["model"]["type"] == "dino_ir":
        torch.manual_seed(1)
        assert frozen and torch.equal(restored, model.body(lq))  # zero-initialised D-R


def test_dpc_weight_zero_equals_the_no_dpc_recipe() -> None:
    base = load_recipe("dino_ir", ["loss.terms.1.weight=0"])
    no_dpc = load_recipe("ablations/no_dpc")
    assert base["model"] == no_dpc["model"]
    torch.manual_seed(0)
    model = build_model(tiny_model_spec(base["model"]))
    with torch.no_grad():  # a trained-looking D-R, so the output differs from the body's
        for adapter in model.adapters.values():
            for module in adapter.zero_initialised():
                module.weight.normal_(0, 0.05)
    lq, gt = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    values = {}
    for key, recipe in [("zero", base), ("none", no_dpc), ("dpc", load_recipe("dino_ir"))]:
        loss = build("loss", recipe["loss"])
        loss.bind(model)
        values[key] = forward_loss(model, model, loss, lq, gt).total
    assert torch.equal(values["zero"], values["none"])
    assert values["dpc"] > values["none"]


def test_the_models_doc_lists_every_recipe_with_measured_sizes() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("model_table", RECIPES_DIR.parent / "scripts" / "model_table.py")
    model_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_table)
    doc = (RECIPES_DIR.parent / "docs" / "models.md").read_text(encoding="utf-8")
    block = doc.split(model_table.START, 1)[1].split(model_table.END, 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in block.strip().splitlines()[2:]}
    every_builtin = {p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml")}
    assert every_builtin <= set(rows), sorted(every_builtin - set(rows))
    measured = model_table.measure("baselines/restormer", 256)  # full size, on the meta device
    assert measured["trainable"] == 26_126_644 and measured["frozen"] == 0
    assert f"| {measured['gmacs']:.1f} |" in rows["baselines/restormer"]
