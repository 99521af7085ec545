"""Every registered part of every kind keeps its kind's contract (timm's registry-wide sweep).

Each builtin is built tiny from :mod:`restorekit.tiny` (the one source of tiny specs)
and checked for what the library relies on: shapes, dtype, frozen behaviour,
gradients, a state-dict round trip. A catalog entry that does not resolve, or a
builtin without a tiny spec, fails here. An installed plugin goes through the
same checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from plugin_dists import write_dist
from test_datasets import make_protocol_root, tiny
from torch import nn

import restorekit
from restorekit import contracts
from restorekit.catalog import BUILTINS
from restorekit.errors import BuildError
from restorekit.frozen import trainable_state_dict
from restorekit.registry import KINDS, refresh_plugins, registry
from restorekit.tiny import BUILD_CONTEXT, TINY, tiny_model_spec

# Every builtin each kind offers, the bodies offered as models included (registry.INCLUDED_KINDS).
BUILTIN_PARTS = [(kind, e.name) for kind in KINDS for e in registry(kind).entries() if e.source == "builtin"]


def test_every_kind_has_builtins_and_every_builtin_a_tiny_spec() -> None:
    assert set(BUILTINS) == set(KINDS)
    for kind, names in BUILTINS.items():
        missing = set(names) - set(TINY.get(kind, {})) if kind != "dataset" else set(names) - set(DATASET_SPECS)
        assert not missing, f"builtin {kind}s without a tiny spec: {sorted(missing)}"


# -- datasets need files: a tiny layout per builtin ---------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract_data")
    make_protocol_root(root)
    for i in range(2):
        tiny(root / "pairs" / "lq" / f"{i}.png", seed=i)
        tiny(root / "pairs" / "gt" / f"{i}.png", seed=10 + i)
    return root


DATASET_SPECS: dict[str, dict[str, Any]] = {
    "paired_folder": {"path": "pairs"},
    "synthetic": {"path": "pairs/gt", "degradation": "noise"},
    "samples": {"split": "test", "max_size": 32},
    "denoise": {"split": "test"},
    "derain": {"split": "test"},
    "dehaze": {"split": "test"},
    "deblur": {"split": "train"},
    "lowlight": {"split": "train"},
}


# -- one checker per kind ---------------------------------------------------------------------
def _seeded(run: Any, *args: Any, **kwargs: Any) -> Any:
    """``run(...)`` from one random state: a part that draws noise (MoCE-IR's router) repeats itself."""
    torch.manual_seed(123)
    return run(*args, **kwargs)


def _round_trip(build: Any, run: Any) -> None:
    """A fresh part given the first one's trainable state computes the same thing."""
    torch.manual_seed(0)
    first = build()
    torch.manual_seed(1)
    second = build()
    state = trainable_state_dict(first)
    second.load_state_dict({**second.state_dict(), **state})
    first.eval(), second.eval()
    with torch.no_grad():
        torch.testing.assert_close(_seeded(run, first), _seeded(run, second))


def _gradients_reach(part: nn.Module, out: torch.Tensor) -> None:
    out.float().square().mean().backward()
    trainable = [n for n, p in part.named_parameters() if p.requires_grad]
    assert trainable, "a trainable part with no trainable parameter"
    sparse = contracts.sparse_gradient_prefixes(part)
    missing = [n for n, p in part.named_parameters() if p.requires_grad and p.grad is None and not n.startswith(sparse)]
    assert not missing, f"no gradient reached {missing[:3]}"


def check_backbone(build: Any) -> None:
    part = build()
    assert isinstance(part, contracts.Backbone) and contracts.is_frozen(part)
    assert not any(p.requires_grad for p in part.parameters())
    part.train()
    assert not part.training, "a frozen backbone left eval mode"
    x = torch.rand(2, 3, 30, 40, requires_grad=True)
    out = part(x, [0, 1], (3, 4))
    assert set(out) == {0, 1} and all(o.shape == (2, part.embed_dim, 3, 4) and o.dtype == x.dtype for o in out.values())
    out[1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # DPC needs gradients to the image
    assert contracts.is_pretrained(part) is False  # random init offline, and the record says so
    assert trainable_state_dict(nn.ModuleDict({"b": part})) == {}


def check_body(build: Any) -> None:
    part = build()
    assert isinstance(part, contracts.Body) and part.injection_points
    x = torch.rand(1, 3, 19, 23)
    out = _seeded(part, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    identity = {name: (lambda f: f) for name in part.injection_points}
    torch.testing.assert_close(_seeded(part, x, guidance=identity), out)
    _gradients_reach(part, part(x))
    _round_trip(build, lambda p: p(x))


def check_model(build: Any) -> None:
    part = build()
    x = torch.rand(1, 3, 21, 18)
    out = _seeded(part, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    if isinstance(part, contracts.GuidedModel):
        restored, aux = _seeded(part, x, return_aux=True)
        assert isinstance(aux, contracts.ModelAux) and aux.backbone is part.backbone
        torch.testing.assert_close(restored, out)
    _gradients_reach(part, part(x))
    _round_trip(build, lambda p: p(x))


def check_fusion(build: Any) -> None:
    part = build()
    context = BUILD_CONTEXT["fusion"]
    feats = [torch.rand(2, context["in_channels"], 5, 6) for _ in range(context["num_layers"])]
    out = part(feats)
    assert out.shape == (2, context["out_channels"], 5, 6)
    _gradients_reach(part, part(feats))
    _round_trip(build, lambda p: p(feats))
    if isinstance(part, contracts.ReportsAuxLoss) and part.aux_loss is not None:
        assert part.aux_loss.dim() == 0 and torch.isfinite(part.aux_loss)


def check_adapter(build: Any) -> None:
    part = build()
    context = BUILD_CONTEXT["adapter"]
    feature = torch.rand(2, context["channels"], 8, 10)
    guide = torch.rand(2, context["guide_channels"], 3, 4)
    assert part(feature, guide).shape == feature.shape  # it resizes the guide itself
    with torch.no_grad():  # leave the zero-initialised start, so every parameter is on the gradient path
        for p in part.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _gradients_reach(part, part(feature, guide))


def check_loss(build: Any) -> None:
    part = build()
    restored = torch.rand(2, 3, 24, 24, requires_grad=True)
    target, lq = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    terms = contracts.as_terms(part(restored, target, lq=lq), "loss")
    assert terms and all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    contracts.sum_terms(terms, restored).backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0


def check_metric(build: Any) -> None:
    metric = build()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    value = metric(y, x, crop_border=1)
    assert value.shape == (2,) and torch.isfinite(value).all()
    torch.testing.assert_close(metric(y[:1], x[:1]), metric(y, x)[:1])  # per image, batch-independent
    same = metric(x, x)
    assert isinstance(metric, contracts.Metric) and isinstance(metric.higher_is_better, bool)
    if metric.higher_is_better:  # a perfect restoration scores best, in the declared direction
        assert all(s > v or math.isinf(s) for s, v in zip(same.tolist(), value.tolist()))
    else:
        assert all(s < v for s, v in zip(same.tolist(), value.tolist()))


def check_optimizer(build: Any) -> None:
    weight = nn.Parameter(torch.ones(3))
    optimizer = build(params=[weight], lr=0.1)
    assert isinstance(optimizer, torch.optim.Optimizer)
    weight.sum().backward()
    optimizer.step()
    assert (weight < 1).all()
    optimizer.load_state_dict(optimizer.state_dict())  # resumable


def check_schedule(build: Any) -> None:
    schedule = build(**BUILD_CONTEXT["schedule"])
    assert isinstance(schedule, contracts.Schedule)
    lr, total = BUILD_CONTEXT["schedule"]["lr"], BUILD_CONTEXT["schedule"]["iterations"]
    rates = [schedule(step) for step in range(total)]
    assert rates == [schedule(step) for step in range(total)]  # a pure function of the step
    assert all(0 <= r <= lr for r in rates) and max(rates) == pytest.approx(lr)
    assert isinstance(schedule.state_dict(), dict)


def check_logger(build: Any, tmp_path: Path) -> None:
    """A logger takes every kind of record the loop writes, leaves something in the run folder, closes."""
    part = build(run_dir=tmp_path)
    assert isinstance(part, contracts.RunLogger)
    part.add_text("recipe", "model: {type: restormer}\ntrain: {iterations: 2}")
    part.write(
        {
            "step": 1,
            "loss": 0.5,
            "loss_avg": 0.5,
            "lr": 1e-3,
            "grad_norm": float("nan"),
            "terms": {"l1": 0.5},
            "it_s": 3.0,
            "skipped_total": 0,
        }
    )
    part.write({"step": 1, "event": "nonfinite_skip", "loss": float("nan"), "grad_norm": 1.0, "in_a_row": 1})
    part.write(
        {"step": 2, "event": "validation", "tasks": {"noise": {"psnr": 30.0, "psnr_in": 20.0}}, "mean": {"psnr": 30.0}}
    )
    if part.takes_images:
        part.add_images(2, {"val/noise/0": torch.rand(3, 8, 24)})
    part.close()
    assert any(p.is_file() and p.stat().st_size > 0 for p in tmp_path.rglob("*")), "the logger wrote nothing"


def check_degradation(build: Any) -> None:
    part = build()
    assert isinstance(part, contracts.Degradation)
    img = torch.rand(3, 24, 20, generator=torch.Generator().manual_seed(0))
    out = part(img, rng=5)
    assert out.shape == img.shape and out.dtype == img.dtype and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, part(img, rng=5))


def check_dataset(build: Any) -> None:
    dataset = build()
    assert isinstance(dataset, contracts.PairDataset) and len(dataset) > 0
    item = dataset[0]
    assert {"lq", "gt", "task", "name"} <= set(item)
    assert item["lq"].shape[0] == 3 and item["lq"].shape == item["gt"].shape and isinstance(item["task"], str)


def check_callback(build: Any) -> None:
    """A callback takes every event the loop sends, in a run's order."""
    from restorekit.engine import callbacks as cb
    from restorekit.engine.accumulate import StepResult

    part = build()
    assert isinstance(part, contracts.Callback)
    stops: list[str] = []
    loop = SimpleNamespace(best_metric="psnr", metric_directions={"psnr": True, "ssim": True}, iterations=4,
                           request_stop=stops.append)  # fmt: skip
    part.on_train_start(loop, 0)
    result = StepResult(torch.tensor(0.5), torch.tensor(1.0), {"l1": torch.tensor(0.5)})
    for step in range(1, 5):
        part.on_step(loop, cb.StepEvent(step, result, {"step": step, "loss": 0.5, "lr": 1e-3}))
        part.on_validation(loop, cb.ValidationEvent(step, {"noise": {"psnr": 20.0}}, {"psnr": 20.0}, step == 1, {}))
        part.on_checkpoint(loop, cb.CheckpointEvent(step, Path("ckpt"), step == 1))
    part.on_overflow(loop, cb.OverflowEvent(4, 2.0**15))
    part.on_skip(loop, cb.SkipEvent(4, float("nan"), float("nan"), 1, 1))
    part.on_stop(loop, cb.StopEvent(4, "test"))
    part.on_train_end(loop, 4)


CHECKS = {
    "backbone": check_backbone, "body": check_body, "model": check_model, "fusion": check_fusion,
    "adapter": check_adapter, "loss": check_loss, "metric": check_metric, "optimizer": check_optimizer,
    "schedule": check_schedule, "degradation": check_degradation, "dataset": check_dataset, "logger": check_logger,
    "callback": check_callback,
}  # fmt: skip


def tiny_builder(kind: str, name: str, data_root: Path | None = None) -> Any:
    """A function building part ``name`` of ``kind`` tiny, as its owner would."""
    if kind == "model":
        spec = tiny_model_spec({"type": name, **TINY["model"][name]})
        return lambda: restorekit.build("model", spec)
    if kind == "dataset":
        spec = {"type": name, **DATASET_SPECS[name]}
        spec = {**spec, "root": str(data_root)} if name != "samples" else spec
        return lambda: restorekit.build("dataset", spec)
    spec = {"type": name, **TINY[kind][name]}
    if kind in ("optimizer", "schedule", "logger"):
        return lambda **extra: restorekit.build(kind, spec, **extra)
    return lambda: restorekit.build(kind, spec, **BUILD_CONTEXT.get(kind, {}))


@pytest.mark.filterwarnings("ignore:.*randomly initialised")
@pytest.mark.parametrize(("kind", "name"), BUILTIN_PARTS, ids=[f"{k}-{n}" for k, n in BUILTIN_PARTS])
def test_every_builtin_keeps_its_kinds_contract(kind: str, name: str, data_root: Path, tmp_path: Path) -> None:
    registry(kind).get(name)  # the catalog entry resolves
    if kind == "logger":
        check_logger(tiny_builder(kind, name), tmp_path)
        return
    CHECKS[kind](tiny_builder(kind, name, data_root))


# -- an installed plugin goes through the same checks ----------------------------------------
PLUGIN = """
import torch
from torch import nn


class Mean(nn.Module):
    def __init__(self, in_channels, num_layers, out_channels=16):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        self.aux_loss = None

    def forward(self, feats):
        out = self.proj(torch.stack(list(feats)).mean(0))
        self.aux_loss = 0.1 * out.pow(2).mean()
        return out


def neg_mae(pred, target, crop_border=0):
    return -(torch.as_tensor(pred, dtype=torch.float64) - torch.as_tensor(target, dtype=torch.float64)).abs().mean(
        dim=tuple(range(1, torch.as_tensor(pred).dim())))


def mae(pred, target, crop_border=0):
    return -neg_mae(pred, target, crop_border)


neg_mae.higher_is_better = True
mae.higher_is_better = False


def rmsprop(params, lr, alpha=0.9):
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha)


class Halving:
    def __init__(self, lr, iterations):
        self.lr, self.iterations = lr, iterations

    def __call__(self, step):
        return self.lr if step < self.iterations // 2 else self.lr / 2

    def state_dict(self):
        return {"lr": self.lr}


class Frozenless(nn.Module):
    embed_dim, num_layers, patch_size = 8, 2, 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 8, 8)

    def forward(self, x, layers, grid=None):
        return {layer: self.proj(x) for layer in layers}
"""


@pytest.fixture
def contract_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_dist(tmp_path, "rk-contract", "0.3", {
        "restorekit.fusions": {"mean": "rkt_contract:Mean"},
        "restorekit.metrics": {"neg_mae": "rkt_contract:neg_mae", "mae": "rkt_contract:mae"},
        "restorekit.optimizers": {"rmsprop": "rkt_contract:rmsprop"},
        "restorekit.schedules": {"halving": "rkt_contract:Halving"},
        "restorekit.backbones": {"frozenless": "rkt_contract:Frozenless"},
    }, {"rkt_contract.py": PLUGIN})  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh_plugins()
    yield tmp_path
    refresh_plugins()


@pytest.mark.parametrize("kind, name", [("fusion", "mean"), ("metric", "neg_mae"), ("optimizer", "rmsprop"),
                                        ("schedule", "halving")])  # fmt: skip
def test_an_installed_plugin_keeps_the_same_contracts(contract_plugin: Path, kind: str, name: str) -> None:
    assert registry(kind).get(name) is not None
    if kind in ("optimizer", "schedule"):
        builder = lambda **extra: restorekit.build(kind, name, **extra)  # noqa: E731
    else:
        builder = lambda: restorekit.build(kind, name, **BUILD_CONTEXT.get(kind, {}))  # noqa: E731
    CHECKS[kind](builder)


def test_a_plugin_backbone_without_the_frozen_contract_is_refused_by_name(contract_plugin: Path) -> None:
    with pytest.raises(
        BuildError, match=r"backbone: Frozenless does not keep the backbone contract \(missing: .*frozen"
    ):
        restorekit.build_model(tiny_model_spec({"type": "dino_ir", "backbone": {"type": "frozenless"},
                                                "layers": [0, 1]}))  # fmt: skip


BROKEN_PLUGIN = """
class Stateless:
    def __init__(self, lr, iterations):
        self.lr = lr

    def __call__(self, step):
        return self.lr


class Lenless:
    def __getitem__(self, index):
        return {}
"""


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_dist(tmp_path, "rk-broken", "0.1", {
        "restorekit.schedules": {"stateless": "rkt_broken:Stateless"},
        "restorekit.datasets": {"lenless": "rkt_broken:Lenless"},
    }, {"rkt_broken.py": BROKEN_PLUGIN})  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh_plugins()
    yield tmp_path
    refresh_plugins()


def test_broken_plugin_parts_of_two_more_kinds_are_refused_by_build(broken_plugin: Path) -> None:
    """build() checks every kind: a schedule without state_dict, a dataset without __len__."""
    with pytest.raises(
        BuildError, match=r"^schedule: Stateless does not keep the schedule contract \(missing: state_dict;"
    ):
        restorekit.build("schedule", "stateless", lr=1e-3, iterations=10)
    with pytest.raises(BuildError, match=r"^dataset: Lenless does not keep the dataset contract \(missing: __len__;"):
        restorekit.build("dataset", "lenless")


class _Bare(nn.Module):
    """A module with nothing of any contract but a call."""

    def __init__(self, **knobs: Any) -> None:
        super().__init__()


class _Inert:
    """Not even callable."""

    def __init__(self, **knobs: Any) -> None:
        pass


def _directionless(pred: Any, target: Any, crop_border: int = 0) -> Any:
    """A metric that does not say whether higher is better."""
    return pred


# Per kind with a contract: a part missing members, the class the message names, and the members.
BROKEN = {
    "backbone": (_Bare, "_Bare", "embed_dim, frozen, num_layers, patch_size, weights_record"),
    "body": (_Bare, "_Bare", "injection_points, pad_multiple"),
    "metric": (_directionless, "function", "higher_is_better"),  # a metric is the registered function itself
    "schedule": (_Inert, "_Inert", "__call__, state_dict"),
    "logger": (_Inert, "_Inert", "add_images, add_text, close, takes_images, write"),
    "callback": (_Inert, "_Inert", "on_checkpoint, on_overflow, on_skip, on_step, on_stop, on_train_end, "
                 "on_train_start, on_validation"),
    "degradation": (_Inert, "_Inert", "__call__"),
    "dataset": (_Inert, "_Inert", "__getitem__, __len__"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_build_refuses_a_part_of_any_kind_that_breaks_its_contract(kind: str) -> None:
    """One check, inside build(), for every kind with a contract (fusion, adapter and loss ask
    only for a call, which every module has)."""
    assert set(BROKEN) | {"fusion", "adapter", "loss"} == set(contracts.PROTOCOLS)
    part, name, missing = BROKEN[kind]
    registry(kind).register("rk_test_broken", part)
    try:
        with pytest.raises(BuildError, match=rf"^{kind}: {name} does not keep the {kind} contract "
                           rf"\(missing: {missing}; see docs/interfaces.md\)$"):  # fmt: skip
            restorekit.build(kind, "rk_test_broken")
    finally:
        registry(kind).unregister("rk_test_broken")


def test_a_frozen_part_with_trainable_parameters_is_refused() -> None:
    from restorekit.backbones.timm_vit import DINOv2Backbone

    backbone = DINOv2Backbone(size="s", **TINY["backbone"]["dinov2"])
    backbone.model.blocks[0].attn.qkv.weight.requires_grad_(True)
    with pytest.raises(BuildError, match=r"frozen=True but 1 of its parameters require grad \(first: model.blocks.0"):
        restorekit.build_model(tiny_model_spec({"type": "dino_ir", "layers": [0, 1]}) | {"backbone": backbone})


def test_frozen_has_one_meaning_everywhere() -> None:
    """Frozen parts: no grad in the guide pass, not trained, not checkpointed, DDP unaffected."""
    from restorekit.engine.parts import has_unused_parameters
    from restorekit.frozen import frozen_prefixes, iter_trainable

    model = restorekit.build_model(tiny_model_spec({"type": "dino_ir", "layers": [0, 1]}))
    assert contracts.is_frozen(model.backbone) and frozen_prefixes(model) == ["backbone."]
    assert not any(k.startswith("backbone.") for k in trainable_state_dict(model))
    assert {id(p) for p in iter_trainable(model)}.isdisjoint(id(p) for p in model.backbone.parameters())
    assert not has_unused_parameters(model)
    model.backbone.frozen = False  # fine-tuned in place: DDP must look for unused parameters
    assert has_unused_parameters(model) and "backbone." not in frozen_prefixes(model)


def test_plugin_parts_drive_training_end_to_end(contract_plugin: Path, tmp_path: Path) -> None:
    """A plugin optimizer, schedule and metric, the best checkpoint picked by that metric (its own
    higher_is_better = False: lower is better, without train.best_mode)."""
    import json

    import engine_fakes

    from restorekit.engine import checkpoint as ckpt
    from restorekit.engine.train import train

    engine_fakes.register()
    rec = {"name": "plugin-run", "model": {"type": "engine_test_convnet"}, "loss": {"type": "l1"},
           "train": {"iterations": 6, "batch_size": 2, "lr": 1e-3, "optimizer": "rmsprop", "schedule": "halving",
                     "val_every": 2, "ckpt_every": 100, "best_metric": "mae",
                     "out_dir": str(tmp_path / "run"), "progress": False},
           "eval": {"metrics": ["psnr", "mae"], "crop_multiple": 0}}  # fmt: skip
    sets = {"noise": engine_fakes.FakeEvalSet(count=2, size=16)}
    result = train(rec, stream=engine_fakes.FakeStream(2, patch=16), eval_sets=sets)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["mean"]["mae"] for r in lines if r.get("event") == "validation"}
    assert sorted(scores) == [2, 4, 6] and all(v > 0 for v in scores.values())
    best = ckpt.read_best(result.run_dir)
    assert best["metric"] == "mae" and best["step"] == min(scores, key=scores.get)
    assert [r["lr"] for r in lines if "lr" in r][-1] == pytest.approx(5e-4)  # the plugin schedule ran


def test_best_metric_must_be_a_validation_metric(tmp_path: Path) -> None:
    from restorekit.engine.train import Trainer
    from restorekit.errors import RecipeError

    rec = {"model": {"type": "restormer"}, "train": {"best_metric": "ssim_y"}, "eval": {"metrics": ["psnr"]}}
    with pytest.raises(RecipeError, match=r"train.best_metric 'ssim_y' is not among eval.metrics \(psnr\)"):
        Trainer(rec)


def test_routed_experts_make_ddp_look_for_unused_parameters() -> None:
    from restorekit.engine.parts import has_unused_parameters

    moce = restorekit.build("model", tiny_model_spec({"type": "moce_ir"}))
    restormer = restorekit.build("model", tiny_model_spec({"type": "restormer"}))
    assert contracts.sparse_gradient_prefixes(moce) and has_unused_parameters(moce)
    assert not has_unused_parameters(restormer)
