"""ONNX Runtime behind the tiler: equal to eager (whole, tiled, self-ensembled, the CLI's PNGs),
exports cached per weights and size and rebuilt when broken, guidance windowed in fixed-size exports.

The models are the demo recipes (recipes/demo/*), with the DINO-IR guide's windows shrunk to
4 tokens so that images above 32 px run several windows. Exporting is the slow part (seconds
per graph): the graphs are exported once into a cache shared by the module's tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from restorekit.cli import main
from restorekit.engine import runtime as rt
from restorekit.engine.checkpoint import FILE_FORMAT
from restorekit.engine.ensemble import SelfEnsemble
from restorekit.engine.export import ExportError
from restorekit.engine.infer import restore_tensor
from restorekit.engine.sources import build_as_trained, training_seed
from restorekit.frozen import trainable_state_dict
from restorekit.io.image_files import write_image
from restorekit.recipes import load_recipe

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ROOT = Path(__file__).resolve().parent.parent
WINDOW = ["model.guide_window=4", "model.guide_overlap=1"]  # 4 x 4 tokens at stride 8: one window up to 32 px
RECIPES = {"restormer": ("recipes/demo/restormer_tiny.yaml", []), "dino_ir": ("recipes/demo/dino_ir_tiny.yaml", WINDOW)}
TILE, OVERLAP = 40, 16


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> rt.ExportCache:
    return rt.ExportCache(tmp_path_factory.mktemp("cache") / "onnx")


def demo(name: str) -> tuple[dict, nn.Module]:
    """(recipe, model as ``restorekit restore`` builds it before loading weights)."""
    path, overrides = RECIPES[name]
    recipe = load_recipe(str(ROOT / path), overrides)
    return recipe, build_as_trained(recipe["model"], training_seed(recipe)).eval()


@pytest.fixture(scope="module")
def restormer(cache: rt.ExportCache) -> tuple[nn.Module, rt.OnnxRuntimeModel]:
    recipe, model = demo("restormer")
    return model, rt.OnnxRuntimeModel(model, recipe["model"], cache=cache)


@pytest.fixture(scope="module")
def dino_ir(cache: rt.ExportCache) -> tuple[nn.Module, rt.OnnxRuntimeModel]:
    recipe, model = demo("dino_ir")
    # the guide's layers (fusion, adapters; zero-initialised ones included) moved by random
    # steps, so the guide reaches the output: its windowed and global passes then differ by
    # more than 1e-2 at the 40 px tile (1e-5 without). The frozen backbone stays as the seed builds it.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad and not name.startswith("body."):
                param.add_(0.5 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    return model, rt.OnnxRuntimeModel(model, recipe["model"], cache=cache)


def image(*size: int, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(sum(size)))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# -- which export serves a size ---------------------------------------------------------------


def test_the_any_size_export_serves_sizes_whose_guide_grid_fits_one_window() -> None:
    _, guided = demo("dino_ir")
    _, body = demo("restormer")
    # padded to a multiple of 8, stride 8: 32 px -> 4 x 4 tokens (one window); 33 px -> 40 px -> 5 tokens
    assert rt.any_size_export_exact(guided, 32, 32) and rt.any_size_export_exact(guided, 17, 25)
    assert not rt.any_size_export_exact(guided, 33, 32) and not rt.any_size_export_exact(guided, 8, 64)
    assert rt.any_size_export_exact(body, 4096, 4096)  # no guide: one graph for every size


# -- equality with eager ----------------------------------------------------------------------


@pytest.mark.slow
def test_restormer_equals_eager_at_three_sizes_and_tiled(restormer) -> None:
    model, ort = restormer
    with torch.no_grad():
        for size in ((45, 83), (37, 29), (64, 64)):
            assert max_diff(ort(image(*size, batch=2)), model(image(*size, batch=2))) <= 1e-4, size
        large = image(97, 131)  # larger than the tile both ways: 2 x 3 tiles, odd sides
        tiled_ort = restore_tensor(ort, large, tile=TILE, overlap=OVERLAP)
        tiled_eager = restore_tensor(model, large, tile=TILE, overlap=OVERLAP)
    assert max_diff(tiled_ort, tiled_eager) <= 1e-4
    assert list(ort._sessions) == [None]  # one graph, any size


@pytest.mark.slow
def test_dino_ir_equals_eager_where_its_guide_grid_fits_one_window(dino_ir) -> None:
    """The any-size graph (one export, shared through the module's fixture and cache)."""
    model, ort = dino_ir
    assert model.guide_pass.rule == "windowed" and model.guide_pass.window == 4
    with torch.no_grad():
        for size in ((31, 23), (17, 29)):  # one window of 4 x 4 tokens each
            assert max_diff(ort(image(*size, batch=2)), model(image(*size, batch=2))) <= 1e-4, size
    assert None in ort._sessions and (31, 23) not in ort._sessions and (17, 29) not in ort._sessions


@pytest.mark.slow
def test_dino_ir_equals_eager_at_the_tile_and_tiled_with_windowed_guidance(dino_ir) -> None:
    """The fixed-size graph of the tile (40 px: 5 x 5 tokens in 2 x 2 windows of 4)."""
    model, ort = dino_ir
    with torch.no_grad():
        assert max_diff(ort(image(TILE, TILE, batch=2)), model(image(TILE, TILE, batch=2))) <= 1e-4
        large = image(97, 131)
        tiled_ort = restore_tensor(ort, large, tile=TILE, overlap=OVERLAP, tile_batch=4)
        tiled_eager = restore_tensor(model, large, tile=TILE, overlap=OVERLAP, tile_batch=4)
        assert max_diff(tiled_ort, tiled_eager) <= 1e-4
        # the fixed-size graph is what makes it equal: the any-size one runs one global pass at the tile
        global_pass = ort.prepare(None)(image(TILE, TILE))
        assert max_diff(global_pass, model(image(TILE, TILE))) > 1e-2
    assert set(ort._sessions) == {None, (TILE, TILE)}


@pytest.mark.slow
def test_self_ensemble_through_onnxruntime_equals_eager(restormer, dino_ir) -> None:
    with torch.no_grad():
        for (model, ort), size in ((restormer, (37, 37)), (dino_ir, (TILE, TILE))):
            x = image(*size)
            assert max_diff(SelfEnsemble(ort)(x), SelfEnsemble(model)(x)) <= 1e-4


@pytest.mark.slow
def test_restore_pngs_of_both_runtimes_differ_by_at_most_one_level(dino_ir, cache, tmp_path, monkeypatch, capsys):
    model, _ = dino_ir
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(weights), {"format": FILE_FORMAT}
    )
    write_image(tmp_path / "in.png", image(80, 112)[0])
    monkeypatch.setenv(rt.CACHE_ENV, str(cache.root.parent))  # the module's exports: same weights, same spec
    common = ["--weights", str(weights), "--recipe", str(ROOT / RECIPES["dino_ir"][0]), "--tile", str(TILE),
              "--overlap", str(OVERLAP), "--no-progress", *sum((["-o", o] for o in WINDOW), [])]  # fmt: skip
    assert main(["restore", str(tmp_path / "in.png"), str(tmp_path / "eager.png"), *common]) == 0
    assert main(["restore", str(tmp_path / "in.png"), str(tmp_path / "ort.png"), "--runtime", "onnxruntime",
                 *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "runtime: eager" in out and f"runtime: onnxruntime (CPU, 1 threads; exports cached in {cache.root})" in out
    eager, ort = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("eager", "ort"))
    assert eager.shape == ort.shape == (80, 112, 3) and np.abs(eager - ort).max() <= 1
    assert eager.std() > 5  # an image, not a constant


@pytest.mark.slow
def test_eval_scores_of_both_runtimes_agree(restormer, cache, tmp_path, monkeypatch, capsys):
    model, _ = restormer
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(weights), {"format": FILE_FORMAT}
    )
    monkeypatch.setenv(rt.CACHE_ENV, str(cache.root.parent))
    reports = {}
    for runtime in ("eager", "onnxruntime"):
        args = ["eval", str(ROOT / RECIPES["restormer"][0]), "--weights", str(weights), "-o", "eval.max_images=1",
                "-o", "eval.crop_multiple=8", "--report", str(tmp_path / runtime), "--runtime", runtime]  # fmt: skip
        assert main(args) == 0
        reports[runtime] = json.loads((tmp_path / runtime / "eval.json").read_text())["tasks"]
    assert "runtime: onnxruntime (CPU, 1 threads" in capsys.readouterr().out
    assert set(reports["eager"]) == set(reports["onnxruntime"]) == {"noise", "rain", "haze"}
    for task, row in reports["eager"].items():
        assert reports["onnxruntime"][task]["psnr"] == pytest.approx(row["psnr"], abs=1e-3), task


# -- the cache ---------------------------------------------------------------------------------


class TwoConvs(nn.Module):
    """A model that exports in about a second."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(rt.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert rt.cache_dir() == tmp_path / "home" / ".cache" / "restorekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert rt.cache_dir() == tmp_path / "xdg" / "restorekit"
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path / "mine"))
    assert rt.cache_dir() == tmp_path / "mine" and rt.ExportCache().root == tmp_path / "mine" / "onnx"


def test_weights_digest_is_the_sha256_of_names_dtypes_shapes_and_bytes() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(0.5)
    expected = hashlib.sha256()
    expected.update(b"bias|torch.float32|(1,)|" + torch.tensor([0.5]).numpy().tobytes())
    expected.update(b"weight|torch.float32|(1, 2)|" + torch.tensor([1.0, -2.0]).numpy().tobytes())
    assert rt.weights_digest(model) == expected.hexdigest()
    with torch.no_grad():
        model.bias.fill_(0.25)
    assert rt.weights_digest(model) != expected.hexdigest()


@pytest.mark.slow
def test_a_truncated_or_stale_entry_is_rebuilt_and_a_crashed_write_leaves_none(tmp_path, monkeypatch) -> None:
    model = TwoConvs().eval()
    ort = rt.OnnxRuntimeModel(model, {"type": "two_convs"}, cache=rt.ExportCache(tmp_path / "onnx"))
    cache, key = ort.cache, ort.key(None)
    x = image(21, 30)
    with torch.no_grad():
        assert max_diff(ort(x), model(x)) <= 1e-5
    entry = cache.entry(key)
    assert cache.problem(key) is None and sorted(p.name for p in cache.root.iterdir()) == [entry.name]
    record = json.loads((entry / rt.ENTRY_FILE).read_text())
    assert record["key"]["weights"] == rt.weights_digest(model) and record["key"]["versions"] == rt.versions()

    onnx_file = entry / rt.MODEL_FILE
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])  # truncated
    assert "truncated" in cache.problem(key)
    fresh = rt.OnnxRuntimeModel(model, {"type": "two_convs"}, cache=cache)
    with torch.no_grad():
        assert max_diff(fresh(x), model(x)) <= 1e-5  # rebuilt, not loaded broken
    assert cache.problem(key) is None and onnx_file.stat().st_size == record["bytes"]

    onnx_file.write_bytes(onnx_file.read_bytes()[:-1] + b"\0")  # same size, other bytes
    assert "sha256" in cache.problem(key)
    record["key"] = {**record["key"], "format": 0}
    (entry / rt.ENTRY_FILE).write_text(json.dumps(record))
    assert "stale" in cache.problem(key)
    cache.get(key, model, None)
    assert cache.problem(key) is None

    # a crash while exporting: nothing is published, the scratch folder is gone
    other = rt.OnnxRuntimeModel(TwoConvs().eval(), {"type": "other"}, cache=cache)

    def crash(model, path, fmt, **kwargs):
        Path(path).write_bytes(b"half an onnx file")
        raise KeyboardInterrupt

    monkeypatch.setattr(rt, "export_model", crash)
    with pytest.raises(KeyboardInterrupt):
        other.prepare(None)
    assert other.cache.problem(other.key(None)) == "not cached yet"
    assert sorted(p.name for p in cache.root.iterdir()) == [entry.name]


class ExportsDifferently(nn.Module):
    """Adds 1 while being exported: the check after exporting refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + (1.0 if torch.compiler.is_exporting() else 0.0)


@pytest.mark.slow
def test_auto_falls_back_to_eager_and_says_why(tmp_path, monkeypatch) -> None:
    cache = rt.ExportCache(tmp_path)
    model = ExportsDifferently().eval()
    picked, line = rt.select_runtime("auto", model, {"type": "x"}, torch.device("cpu"), cache)
    assert picked is model and line.startswith("runtime: eager (auto: the model does not export: ")
    with pytest.raises(ExportError, match="differs from the eager one"):
        rt.select_runtime("onnxruntime", model, {"type": "x"}, torch.device("cpu"), cache)
    assert not any(cache.root.iterdir())  # a failed export leaves no entry

    good = TwoConvs().eval()
    picked, line = rt.select_runtime("auto", good, {"type": "y"}, torch.device("cpu"), cache)
    assert isinstance(picked, rt.OnnxRuntimeModel) and "runtime: onnxruntime (auto: installed and" in line
    assert rt.select_runtime("eager", good, {}, torch.device("cpu"), cache) == (good, "runtime: eager (PyTorch)")
    monkeypatch.setattr(rt, "onnxruntime_available", lambda: False)
    assert rt.select_runtime("auto", good, {}, torch.device("cpu"))[1] == (
        "runtime: eager (auto: onnxruntime is not installed)"
    )
    with pytest.raises(rt.RuntimeUnavailableError, match=r"pip install 'restorekit\[export\]'"):
        rt.select_runtime("onnxruntime", good, {}, torch.device("cpu"))


@pytest.mark.slow
def test_export_command_with_a_tile_traces_the_windowed_guide(dino_ir, tmp_path, capsys) -> None:
    model, _ = dino_ir
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in trainable_state_dict(model).items()}, str(weights), {"format": FILE_FORMAT}
    )
    args = ["export", str(ROOT / RECIPES["dino_ir"][0]), "--weights", str(weights), "--format", "torch_export",
            *sum((["-o", o] for o in WINDOW), [])]  # fmt: skip
    assert main([*args, "--tile", "8", "--output", str(tmp_path / "small.pt2")]) == 2  # under 16 px: refused
    assert main([*args, "--tile", str(TILE), "--output", str(tmp_path / "tile.pt2")]) == 0
    assert f"{TILE} x {TILE} inputs" in capsys.readouterr().out
    program = torch.export.load(str(tmp_path / "tile.pt2")).module()
    x = image(TILE, TILE, batch=3)  # 5 x 5 tokens in 2 x 2 windows; another batch than the trace's
    with torch.no_grad():
        assert max_diff(program(x), model(x)) <= 1e-5


def test_sizes_past_the_fixed_export_limit_run_eager(tmp_path, caplog) -> None:
    recipe, model = demo("dino_ir")
    ort = rt.OnnxRuntimeModel(model, recipe["model"], cache=rt.ExportCache(tmp_path), fixed_sizes=0)
    x = image(40, 48)  # 5 x 6 tokens: beyond one 4-token window, so it would need a 40 x 48 export
    with torch.no_grad():
        assert torch.equal(ort(x), model(x))
    assert ort._sessions == {(40, 48): None} and not any(tmp_path.iterdir())  # nothing exported
    assert "40x48 needs an export of its own" in caplog.text and "running it eager" in caplog.text
