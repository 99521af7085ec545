"""Image IO, paired/synthetic/sample datasets, the protocol layouts, and `restorekit data check`."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit import build
from restorekit.cli import main
from restorekit.data.build import build_eval_sets
from restorekit.data.datasets import PairedFolderDataset, SyntheticDataset
from restorekit.data.protocol import (
    DeblurDataset,
    DehazeDataset,
    DenoiseDataset,
    DerainDataset,
    LowLightDataset,
)
from restorekit.data.samples import SAMPLE_IMAGES, TEST_IMAGES, TRAIN_IMAGES, SamplesDataset, load_sample
from restorekit.errors import DataError
from restorekit.io.image_files import load_image, read_image, write_image


def tiny(path: Path, seed: int = 0, size: tuple[int, int] = (12, 16)) -> torch.Tensor:
    """Write a small random RGB PNG (or JPEG by suffix) and return its pixels."""
    img = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))
    write_image(path, img)
    return read_image(path)


# -- image IO --------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bit_depth", [8, 16])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_write_read_round_trip(tmp_path, channels, bit_depth, suffix):
    img = torch.rand(channels, 9, 13, generator=torch.Generator().manual_seed(channels))
    path = write_image(tmp_path / f"x{suffix}", img, bit_depth=bit_depth)
    loaded = load_image(path)
    peak = 255 if bit_depth == 8 else 65535
    expected = torch.round(img * peak) / peak
    colour = loaded.rgb[:1] if loaded.gray else loaded.rgb
    pixels = torch.cat([colour] + ([loaded.alpha] if loaded.alpha is not None else []))
    assert loaded.bit_depth == bit_depth and loaded.gray == (channels in (1, 2))
    assert (loaded.alpha is not None) == (channels in (2, 4))
    assert loaded.rgb.shape == (3, 9, 13) and loaded.rgb.dtype == torch.float32
    assert torch.allclose(pixels, expected, atol=1e-7)
    assert sorted(os.listdir(tmp_path)) == [f"x{suffix}"], "no temporary file is left behind"


def _png16_with_every_filter(array: np.ndarray, colour_type: int) -> bytes:
    """An independent 16-bit PNG encoder using filter types 0-4 on successive rows."""
    height, width, channels = array.shape
    bpp = 2 * channels
    rows = array.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int64)
    lines = []
    for y in range(height):
        cur, up = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            out = cur
        elif kind == 1:
            out = cur - left
        elif kind == 2:
            out = cur - up
        elif kind == 3:
            out = cur - (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
            out = cur - pred
        lines.append(bytes([kind]) + (out % 256).astype(np.uint8).tobytes())

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(lines)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels, colour_type", [(3, 2), (4, 6), (2, 4)])
def test_reads_16bit_png_exactly_with_all_filters(tmp_path, channels, colour_type):
    array = np.random.default_rng(channels).integers(0, 65536, (11, 7, channels)).astype(np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(_png16_with_every_filter(array, colour_type))
    loaded = load_image(path)
    colour = loaded.rgb[:1] if loaded.gray else loaded.rgb
    pixels = torch.cat([colour, loaded.alpha]) if loaded.alpha is not None else colour
    got = torch.round(pixels * 65535).to(torch.int64).permute(1, 2, 0).numpy()
    assert loaded.bit_depth == 16
    assert np.array_equal(got, array.astype(np.int64))


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "keep.jpg"
    write_image(path, torch.rand(3, 8, 8))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="alpha"):
        write_image(path, torch.rand(3, 8, 8), alpha=torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="16-bit"):
        write_image(path, torch.rand(3, 8, 8), bit_depth=16)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.jpg"]


# -- paired and synthetic folders ------------------------------------------------------
def test_paired_folder_matches_by_stem(tmp_path):
    for i in range(3):
        tiny(tmp_path / "set" / "gt" / f"im{i}.png", seed=i)
        tiny(tmp_path / "set" / "lq" / f"im{i}.jpg", seed=10 + i)
    ds = build("dataset", {"type": "paired_folder", "path": "set", "root": str(tmp_path), "task": "x"})
    assert len(ds) == 3 and ds.names == ["im0", "im1", "im2"]
    item = ds[1]
    assert set(item) == {"lq", "gt", "task", "name"} and item["task"] == "x" and item["name"] == "im1"
    assert torch.equal(item["gt"], read_image(tmp_path / "set" / "gt" / "im1.png"))
    assert item["lq"].shape == (3, 12, 16)


def test_paired_folder_reports_every_unmatched_name(tmp_path):
    for name in ("a", "b", "c"):
        tiny(tmp_path / "gt" / f"{name}.png")
    for name in ("a", "b", "x", "y"):
        tiny(tmp_path / "lq" / f"{name}.png")
    with pytest.raises(DataError) as err:
        PairedFolderDataset(str(tmp_path))
    message = str(err.value)
    assert "x.png, y.png" in message and "c.png" in message and "strict" in message
    with pytest.warns(UserWarning, match=r"x\.png, y\.png.*c\.png"):
        ds = PairedFolderDataset(str(tmp_path), strict=False)
    assert ds.names == ["a", "b"]


def test_paired_folder_missing_folder_and_duplicate_keys(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nothere" / "lq")):
        PairedFolderDataset(str(tmp_path / "nothere"))
    tiny(tmp_path / "gt" / "a.png")
    tiny(tmp_path / "lq" / "a.png")
    tiny(tmp_path / "lq" / "a.jpg")
    with pytest.raises(DataError, match="a.jpg.*a.png|a.png.*a.jpg"):
        PairedFolderDataset(str(tmp_path))


def test_paired_folder_size_mismatch_names_files(tmp_path):
    tiny(tmp_path / "gt" / "a.png", size=(12, 16))
    tiny(tmp_path / "lq" / "a.png", size=(10, 16))
    with pytest.raises(DataError, match=r"a\.png is \(10, 16\)"):
        PairedFolderDataset(str(tmp_path))[0]


def test_synthetic_is_deterministic_per_index(tmp_path):
    for i in range(2):
        tiny(tmp_path / "clean" / f"{i}.png", seed=i, size=(20, 20))
    ds = SyntheticDataset(str(tmp_path / "clean"), degradation={"type": "noise", "sigma": 25}, task="noise")
    a, b = ds[0], ds[0]
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(a["lq"], a["gt"])
    assert not torch.equal(ds[0]["lq"] - ds[0]["gt"], ds[1]["lq"] - ds[1]["gt"])
    other_seed = SyntheticDataset(str(tmp_path / "clean"), degradation={"type": "noise", "sigma": 25}, seed=1)
    assert not torch.equal(other_seed[0]["lq"], a["lq"])


# -- samples ---------------------------------------------------------------------------
def test_samples_split_is_fixed_and_disjoint():
    assert set(TRAIN_IMAGES).isdisjoint(TEST_IMAGES)
    assert set(TRAIN_IMAGES) | set(TEST_IMAGES) == set(SAMPLE_IMAGES)
    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "retina",
        "immunohistochemistry",
        "motorcycle_left",
        "camera",
    ):
        assert name in SAMPLE_IMAGES
    test = SamplesDataset(degradation={"type": "haze"}, split="test", max_size=64)
    assert test.names == list(TEST_IMAGES) and test.task == "haze"
    first, again = test[0], test[0]
    assert torch.equal(first["lq"], again["lq"]) and max(first["gt"].shape[-2:]) == 64
    assert first["gt"].dtype == torch.float32 and first["lq"].shape == first["gt"].shape


def test_sample_photographs_are_rgb():
    camera = load_sample("camera")
    assert camera.shape == (3, 512, 512) and torch.equal(camera[0], camera[2])
    assert load_sample("motorcycle_right").shape == (3, 500, 741)


def test_samples_unknown_name():
    with pytest.raises(DataError, match="did you mean 'astronaut'"):
        SamplesDataset(images=["astronot"])
    with pytest.raises(DataError, match="split"):
        SamplesDataset(split="val")


# -- protocol layouts ------------------------------------------------------------------
def make_protocol_root(root: Path) -> None:
    for i in range(3):
        tiny(root / "denoise" / "train" / "BSD400" / f"{i}.png", seed=i)
    for i in range(2):
        tiny(root / "denoise" / "train" / "WED" / f"w{i}.bmp", seed=5 + i)
        tiny(root / "denoise" / "test" / "CBSD68" / f"t{i}.png", seed=7 + i)
    for i in (1, 2, 10):
        tiny(root / "derain" / "train" / "rainy" / f"rain-{i}.png", seed=i)
        tiny(root / "derain" / "train" / "gt" / f"norain-{i}.png", seed=20 + i)
    for i in (1, 2):  # PromptIR's test layout
        tiny(root / "derain" / "test" / "input" / f"rain-{i:03d}.png", seed=i)
        tiny(root / "derain" / "test" / "target" / f"norain-{i:03d}.png", seed=30 + i)
    for ident in ("0025", "0039"):
        tiny(root / "dehaze" / "train" / "clear" / f"{ident}.jpg", seed=int(ident))
        for beta in ("0.04", "0.1"):
            tiny(root / "dehaze" / "train" / "hazy" / "part1" / f"{ident}_0.8_{beta}.jpg", seed=int(ident) + 1)
    tiny(root / "dehaze" / "test" / "hazy" / "0001_0.8_0.2.jpg", size=(12, 16))
    tiny(root / "dehaze" / "test" / "gt" / "0001.png", size=(16, 20))  # a border around the hazy view
    for scene in ("GOPR0372_07_00", "GOPR0374_11_00"):
        for j in range(2):
            tiny(root / "deblur" / "train" / scene / "blur" / f"{j:06d}.png", seed=j)
            tiny(root / "deblur" / "train" / scene / "sharp" / f"{j:06d}.png", seed=j + 1)
    for j in range(2):
        tiny(root / "lowlight" / "train" / "low" / f"{j}.png", seed=j)
        tiny(root / "lowlight" / "train" / "high" / f"{j}.png", seed=j + 3)


@pytest.fixture(scope="module")
def protocol_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_protocol_root(root)
    return root


def test_protocol_layouts_pair_and_count(protocol_root, caplog):
    root = str(protocol_root)
    with caplog.at_level(logging.INFO, logger="restorekit.data"):
        denoise = DenoiseDataset(split="train", sigma=15, root=root)
        derain = DerainDataset(split="train", root=root)
    assert len(denoise) == 5 and "BSD400: 3, WED: 2" in caplog.text
    assert "derain train: 3 pairs" in caplog.text
    assert [Path(lq).name for lq, _ in derain.pairs] == ["rain-1.png", "rain-10.png", "rain-2.png"]
    assert all(Path(gt).name == "norain-" + Path(lq).name.split("-")[1] for lq, gt in derain.pairs)
    assert len(DerainDataset(split="test", root=root)) == 2

    dehaze = DehazeDataset(split="train", root=root)
    assert len(dehaze) == 4
    assert {Path(gt).name for _, gt in dehaze.pairs} == {"0025.jpg", "0039.jpg"}
    sots = DehazeDataset(split="test", root=root)[0]
    assert sots["lq"].shape == sots["gt"].shape == (3, 12, 16), "the clean border is centre-cropped"

    deblur = DeblurDataset(split="train", root=root)
    assert deblur.names == [
        "GOPR0372_07_00/000000",
        "GOPR0372_07_00/000001",
        "GOPR0374_11_00/000000",
        "GOPR0374_11_00/000001",
    ]
    lowlight = LowLightDataset(split="train", root=root)
    item = lowlight[1]
    assert item["task"] == "lowlight" and torch.equal(
        item["gt"], read_image(protocol_root / "lowlight/train/high/1.png")
    )


def test_denoise_test_noise_is_fixed(protocol_root):
    a = DenoiseDataset(split="test", sigma=25, root=str(protocol_root))
    b = DenoiseDataset(split="test", sigma=25, root=str(protocol_root))
    assert len(a) == 2 and torch.equal(a[0]["lq"], b[0]["lq"])
    residual = (a[0]["lq"] - a[0]["gt"]) * 255
    assert 10 < residual.std() < 40


def test_protocol_errors_name_the_folder(protocol_root, tmp_path):
    with pytest.raises(DataError, match=r"lowlight test folder not found: .*lowlight/test"):
        LowLightDataset(split="test", root=str(protocol_root))
    with pytest.raises(DataError, match=r"denoise test set folder not found: .*Urban100"):
        DenoiseDataset(split="test", test_set="Urban100", root=str(protocol_root))
    (tmp_path / "derain" / "train" / "rainy").mkdir(parents=True)
    with pytest.raises(DataError, match=r"derain train clean folder not found: .*gt \(or norain, target\)"):
        DerainDataset(split="train", root=str(tmp_path))
    (tmp_path / "derain" / "train" / "gt").mkdir()
    with pytest.raises(DataError, match="no image pairs"):
        DerainDataset(split="train", root=str(tmp_path))
    tiny(tmp_path / "dehaze" / "train" / "hazy" / "0099_1_0.1.jpg")
    tiny(tmp_path / "dehaze" / "train" / "clear" / "0098.jpg")
    with pytest.raises(DataError, match="0099_1_0.1.jpg"):
        DehazeDataset(split="train", root=str(tmp_path))


# -- recipe data sections ---------------------------------------------------------------
def test_eval_sets_and_limit(protocol_root):
    sets = build_eval_sets(
        {
            "root": str(protocol_root),
            "val": {
                "derain": {"dataset": {"type": "derain", "split": "test"}, "limit": 1},
                "denoise_25": {"dataset": {"type": "denoise", "split": "test", "sigma": 25}},
            },
        }
    )
    assert list(sets) == ["derain", "denoise_25"]
    assert len(sets["derain"]) == 1 and len(sets["denoise_25"]) == 2
    assert sets["denoise_25"][0]["task"] == "denoise_25"


def test_data_check_command(protocol_root, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data:\n"
        f"  root: {protocol_root}\n"
        "  train:\n"
        "    denoise_15: {dataset: {type: denoise, split: train, sigma: 15}, repeat: 3}\n"
        "    derain: {dataset: {type: derain, split: train}, repeat: 120}\n"
        "  val:\n"
        "    derain: {dataset: {type: derain, split: test}}\n"
    )
    assert main(["data", "check", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "denoise_15" in out and "5 images" in out and "repeat 3" in out
    assert "3 images" in out and "96.0% of samples" in out
    code = main(["data", "check", str(recipe), "-o", "data.val.lol={dataset: {type: lowlight, split: test}}"])
    out = capsys.readouterr().out
    assert code == 1 and "data.val.lol: lowlight test folder not found" in out


def test_data_section_errors_name_the_key(tmp_path):
    from restorekit.errors import RecipeError

    with pytest.raises(RecipeError, match=r"data: unknown key 'patchsize'; did you mean 'patch_size'"):
        build_eval_sets({"patchsize": 64})
    with pytest.raises(RecipeError, match=r"data.val.x must be a mapping with a 'dataset'"):
        build_eval_sets({"val": {"x": {"type": "derain"}}})
    with pytest.raises(RecipeError, match=r"data.val.x: unknown key 'repeat'"):
        build_eval_sets({"val": {"x": {"dataset": "samples", "repeat": 2}}})


def test_data_check_rejects_malformed_dataset_specs(tmp_path, capsys):
    """A list spec or a non-string type is an error naming the key, not a traceback."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  train:\n    noise: {dataset: [samples]}\n")
    assert main(["data", "check", str(recipe)]) == 2
    assert "data.train.noise.dataset must be a dataset name or a mapping" in capsys.readouterr().err
    recipe.write_text("data:\n  val:\n    noise: {dataset: {type: 3}}\n")
    assert main(["data", "check", str(recipe)]) == 2
    assert "data.val.noise.dataset.type must be a dataset name" in capsys.readouterr().err


def test_samples_images_accepts_one_name_and_rejects_other_types():
    assert SamplesDataset(images="coins").names == ["coins"]
    with pytest.raises(DataError, match="'images' must be a photograph name or a list"):
        SamplesDataset(images=3)
    with pytest.raises(DataError, match="'images' must be"):
        SamplesDataset(images=["coins", 3])


@pytest.mark.parametrize("bad", [0, -5, 2.5, "64", True])
def test_samples_max_size_is_validated(bad):
    with pytest.raises(DataError, match="'max_size' must be an integer >= 1"):
        SamplesDataset(images=["coins"], max_size=bad)
