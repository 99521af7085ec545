"""`restorekit data prepare`: official download structures (scaled down) into the protocol layout.

Each archive is made here with the names, nesting and odd files (``__MACOSX/``,
``Thumbs.db``, ``.DS_Store``) of the published download, with a few files per part;
the row of :mod:`restorekit.data.sources` is scaled to those counts, so the
preparer and its patterns are the real ones.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from restorekit.cli import main
from restorekit.commands.data import report
from restorekit.data import prepare as prepare_module
from restorekit.data.sources import SOURCES, find_source
from restorekit.errors import DataError


def image_bytes(suffix: str, value: int = 90) -> bytes:
    buffer = io.BytesIO()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[suffix]
    Image.new("RGB", (6, 5), (value, value // 2, 30)).save(buffer, fmt)
    return buffer.getvalue()


JUNK = {"__MACOSX/._a.png": b"\0\5fork", "Thumbs.db": b"thumbs", ".DS_Store": b"ds"}

# name -> (files of the official structure, scaled counts per part of the row)
OFFICIAL: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "bsd400": (["BSD400/117025.jpg", "BSD400/12003.jpg", "BSD400/2092.jpg"], (3,)),
    "wed": (
        [f"exploration_database_and_code/pristine_images/{i:05d}.bmp" for i in (1, 2, 4744)]
        + ["exploration_database_and_code/README.txt"],
        (3,),
    ),
    "cbsd68": (
        ["CBSD68/original_png/0000.png", "CBSD68/original_png/0001.png", "CBSD68/noisy25/0000.png"],
        (2,),
    ),
    "urban100": (["Urban100/img_001.png", "Urban100/img_002.png", "Urban100/img_100.png"], (3,)),
    "kodak24": (["kodak/kodim01.png", "kodak/kodim24.png"], (2,)),
    "rain100l-train": (
        [f"Train100L/rainy/rain-{i}.png" for i in (1, 2, 200)] + [f"Train100L/gt/norain-{i}.png" for i in (1, 2, 200)],
        (3, 3),
    ),
    "rain100l-test": (
        [f"Rain100L/input/{i}.png" for i in (1, 2)] + [f"Rain100L/target/{i}.png" for i in (1, 2)],
        (2, 2),
    ),
    "rain100h-train": (
        [f"RainTrainH/rain-{i}.png" for i in (1, 2)]
        + [f"RainTrainH/norain-{i}.png" for i in (1, 2)]
        + ["RainTrainH/rainstreak-1.png"],
        (2, 2),
    ),
    "rain100h-test": (
        [f"Rain100H/rain-{i:03d}.png" for i in (1, 2)] + [f"Rain100H/norain-{i:03d}.png" for i in (1, 2)],
        (2, 2),
    ),
    "sots-outdoor": (
        ["SOTS/outdoor/hazy/0001_0.8_0.2.jpg", "SOTS/outdoor/hazy/0002_0.8_0.08.jpg"]
        + ["SOTS/outdoor/gt/0001.png", "SOTS/outdoor/gt/0002.png"]
        + ["SOTS/indoor/hazy/1400_1.png", "SOTS/indoor/gt/1400.png"],
        (2, 2),
    ),
    "sots-indoor": (
        ["SOTS/indoor/hazy/1400_1.png", "SOTS/indoor/hazy/1400_2.png", "SOTS/indoor/gt/1400.png"]
        + ["SOTS/outdoor/hazy/0001_0.8_0.2.jpg", "SOTS/outdoor/gt/0001.png"],
        (2, 1),
    ),
    "gopro": (
        [
            f"GOPRO_Large/{split}/{scene}/{kind}/{frame}.png"
            for split, scene in (("train", "GOPR0372_07_00"), ("test", "GOPR0384_11_00"))
            for kind in ("blur", "blur_gamma", "sharp")
            for frame in ("000047", "000048")
        ],
        (2, 2, 2, 2),
    ),
    "lol": (
        [
            f"{split}/{kind}/{i}.png"
            for split, i in (("our485", 2), ("our485", 5), ("eval15", 1))
            for kind in ("low", "high")
        ],
        (2, 2, 1, 1),
    ),
}


def scaled(name: str, counts: tuple[int, ...]):
    source = find_source(name)
    parts = tuple(dataclasses.replace(part, counts=(n,)) for part, n in zip(source.parts, counts))
    return dataclasses.replace(source, parts=parts)


@pytest.fixture
def use_rows(monkeypatch):
    """Make `prepare` see the given (scaled) rows."""

    def install(*rows):
        by_name = {row.name: row for row in rows}
        real = find_source  # aliases resolve to the row's name, then to its scaled copy

        monkeypatch.setattr(prepare_module, "find_source", lambda name: by_name.get(real(name).name, real(name)))

    return install


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def official_files(name: str) -> dict[str, bytes]:
    files = {rel: image_bytes(Path(rel).suffix or ".png") for rel in OFFICIAL[name][0] if not rel.endswith(".txt")}
    files.update({rel: b"readme" for rel in OFFICIAL[name][0] if rel.endswith(".txt")})
    top = OFFICIAL[name][0][0].split("/")[0]
    files.update({f"{top}/{junk}": data for junk, data in JUNK.items()})
    return files


def test_every_row_has_an_official_structure_here():
    assert sorted(OFFICIAL) == sorted(s.name for s in SOURCES if not s.needs_subset)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_prepare_writes_the_protocol_layout(tmp_path, use_rows, name):
    files, counts = OFFICIAL[name]
    row = scaled(name, counts)
    use_rows(row)
    writer = write_tar if name in ("wed", "gopro") else write_zip
    archive = writer(tmp_path / ("download.tar.gz" if writer is write_tar else "download.zip"), official_files(name))
    root = tmp_path / "data"
    result = prepare_module.prepare(name, archive, root, progress=False)
    assert not result.already and result.home == root / row.home
    assert result.counts == {part.what: n for part, n in zip(row.parts, counts)}
    written = sorted(p.relative_to(result.home).as_posix() for p in result.home.rglob("*") if p.is_file())
    assert len(written) == sum(counts) + 1  # + the note
    assert not any("Thumbs" in w or "MACOSX" in w or "DS_Store" in w or "blur_gamma" in w for w in written)
    assert not (root / prepare_module.WORK_FOLDER).exists()
    val = {task: {"dataset": spec} for task, spec in row.check.items()}
    assert report({"root": str(root), "val": val}, progress=False) == 0


def test_targets_follow_the_protocol_layout(tmp_path, use_rows):
    use_rows(scaled("gopro", OFFICIAL["gopro"][1]), scaled("rain100l-test", OFFICIAL["rain100l-test"][1]))
    root = tmp_path / "data"
    prepare_module.prepare(
        "gopro", write_zip(tmp_path / "GOPRO_Large.zip", official_files("gopro")), root, progress=False
    )
    prepare_module.prepare(
        "rain100l", write_zip(tmp_path / "Rain100L.zip", official_files("rain100l-test")), root, progress=False
    )
    assert (root / "deblur/train/GOPR0372_07_00/blur/000047.png").is_file()
    assert (root / "deblur/test/GOPR0384_11_00/sharp/000048.png").is_file()
    assert sorted(p.name for p in (root / "derain/test/rainy").iterdir()) == ["1.png", "2.png"]
    assert sorted(p.name for p in (root / "derain/test/gt").iterdir()) == ["1.png", "2.png"]


def test_second_run_says_already_prepared(tmp_path, use_rows, capsys):
    use_rows(scaled("lol", OFFICIAL["lol"][1]))
    archive = write_zip(tmp_path / "LOLdataset.zip", official_files("lol"))
    root = tmp_path / "data"
    args = ["data", "prepare", "lol", str(archive), "--root", str(root), "--no-progress"]
    assert main(args) == 0
    note = json.loads((root / "lowlight" / prepare_module.MARKER).read_text())
    assert note["dataset"] == "lol" and note["counts"]["train low-light images"] == 2
    before = sorted(p.stat().st_mtime_ns for p in (root / "lowlight").rglob("*.png"))
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lol: already prepared in" in out and "lowlight_test" in out
    assert sorted(p.stat().st_mtime_ns for p in (root / "lowlight").rglob("*.png")) == before


def test_a_folder_not_written_by_prepare_is_left_alone(tmp_path, use_rows):
    use_rows(scaled("lol", OFFICIAL["lol"][1]))
    (tmp_path / "data/lowlight").mkdir(parents=True)
    (tmp_path / "data/lowlight/mine.txt").write_text("keep")
    archive = write_zip(tmp_path / "LOLdataset.zip", official_files("lol"))
    with pytest.raises(DataError, match=r"lowlight exists and was not written by `restorekit data prepare lol`"):
        prepare_module.prepare("lol", archive, tmp_path / "data", progress=False)
    assert (tmp_path / "data/lowlight/mine.txt").read_text() == "keep"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_truncated_archive_is_an_error_naming_the_file(tmp_path, use_rows, kind):
    use_rows(scaled("gopro", OFFICIAL["gopro"][1]))
    files = official_files("gopro")
    full = (write_zip if kind == "zip" else write_tar)(tmp_path / f"full.{kind}", files)
    cut = tmp_path / f"GOPRO_Large.{kind}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    root = tmp_path / "data"
    with pytest.raises(DataError, match=rf"GOPRO_Large\.{kind}: the archive is damaged or truncated"):
        prepare_module.prepare("gopro", cut, root, progress=False)
    assert not (root / "deblur").exists()
    assert not (root / prepare_module.WORK_FOLDER).exists()


def test_wrong_dataset_for_the_name_is_an_error_naming_the_file(tmp_path, use_rows):
    use_rows(scaled("gopro", OFFICIAL["gopro"][1]))
    lol = write_zip(tmp_path / "LOLdataset.zip", official_files("lol"))
    with pytest.raises(DataError) as caught:
        prepare_module.prepare("gopro", lol, tmp_path / "data", progress=False)
    message = str(caught.value)
    assert message.startswith(f"{lol}: it does not look like GoPro")
    assert "train blurry images: expected 2, found 0" in message
    assert "other files there: LOLdataset/eval15/high/1.png" in message
    assert not (tmp_path / "data/deblur").exists()


def test_an_incomplete_copy_names_the_part_and_the_counts(tmp_path, use_rows):
    use_rows(scaled("rain100l-train", (3, 3)))
    files = official_files("rain100l-train")
    del files["Train100L/gt/norain-200.png"]
    archive = write_zip(tmp_path / "Train100L.zip", files)
    with pytest.raises(DataError, match=r"Train100L\.zip: a file is missing.*clean images: expected 3, found 2"):
        prepare_module.prepare("rain100l-train", archive, tmp_path / "data", progress=False)
    assert not (tmp_path / "data/derain").exists()


@pytest.mark.parametrize(
    "member, reason",
    [("../evil.png", "a '..' component"), ("/tmp/evil.png", "an absolute path"), ("a/../../evil.png", "a '..'")],
)
def test_members_escaping_the_folder_are_refused(tmp_path, use_rows, member, reason):
    use_rows(scaled("kodak24", (2,)))
    files = official_files("kodak24") | {member: image_bytes(".png")}
    archive = write_zip(tmp_path / "kodak.zip", files)
    with pytest.raises(DataError, match=rf"kodak\.zip: member '{member}' has {reason}"):
        prepare_module.prepare("kodak24", archive, tmp_path / "data" / "inner", progress=False)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "data" / "evil.png").exists()
    assert not (tmp_path / "data/inner/denoise").exists()


def test_zip_symlinks_are_refused(tmp_path, use_rows):
    use_rows(scaled("kodak24", (2,)))
    archive = write_zip(tmp_path / "kodak.zip", official_files("kodak24"))
    with zipfile.ZipFile(archive, "a") as zf:
        link = zipfile.ZipInfo("kodak/kodim03.png")
        link.external_attr = 0o120777 << 16  # a symbolic link, as `zip --symlinks` stores it
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match=r"member 'kodak/kodim03.png' is a symbolic link; refused"):
        prepare_module.prepare("kodak24", archive, tmp_path / "data", progress=False)


def test_tar_links_pointing_outside_are_refused(tmp_path, use_rows):
    use_rows(scaled("kodak24", (2,)))
    archive = tmp_path / "kodak.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in official_files("kodak24").items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("kodak/kodim03.png")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match=r"member 'kodak/kodim03.png' is a link to '../../../etc/passwd', outside"):
        prepare_module.prepare("kodak24", archive, tmp_path / "data", progress=False)


def test_rar_gets_advice_instead_of_a_traceback(tmp_path):
    rar = tmp_path / "exploration_database_and_code.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x00")
    with pytest.raises(DataError, match=r"\.rar archives are not read by restorekit; unpack it with `unrar x`"):
        prepare_module.prepare("wed", rar, tmp_path / "data", progress=False)


def test_link_mode_symlinks_an_unpacked_folder(tmp_path, use_rows):
    use_rows(scaled("urban100", (3,)))
    for rel, data in official_files("urban100").items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    result = prepare_module.prepare("urban100", tmp_path / "Urban100", tmp_path / "data", link=True, progress=False)
    target = result.home / "img_002.png"
    assert target.is_symlink() and Path(os.readlink(target)) == (tmp_path / "Urban100/img_002.png").resolve()
    with pytest.raises(DataError, match="--link needs an unpacked folder"):
        prepare_module.prepare(
            "urban100", write_zip(tmp_path / "u.zip", official_files("urban100")), tmp_path / "d2", link=True
        )


def ots_files() -> dict[str, bytes]:
    hazy = [
        f"OTS/hazy/part{part}/{scene}_{a}_{beta}.jpg"
        for part, scene in ((1, "0025"), (1, "0039"), (2, "3068"))
        for a in ("0.8", "1")
        for beta in ("0.04", "0.2")
    ]
    clear = [f"OTS/clear/{scene}.jpg" for scene in ("0025", "0039", "3068")]
    return {rel: image_bytes(".jpg") for rel in hazy + clear} | {"OTS/Thumbs.db": b"x"}


def test_reside_ots_keeps_the_listed_subset_and_the_clear_images_it_uses(tmp_path, use_rows):
    row = find_source("reside-ots")
    use_rows(row)
    archive = write_zip(tmp_path / "OTS.zip", ots_files())
    listing = tmp_path / "hazy_outside.txt"
    listing.write_text(
        "synthetic/part1/0025_0.8_0.04.jpg\nsynthetic/part1/0025_1_0.2.jpg\nsynthetic/part2/3068_1_0.2.jpg\n"
    )
    with pytest.raises(DataError, match=r"reside-ots: pass --subset LIST"):
        prepare_module.prepare("reside-ots", archive, tmp_path / "data", progress=False)
    result = prepare_module.prepare("reside-ots", archive, tmp_path / "data", subset=listing, progress=False)
    assert sorted(p.name for p in (result.home / "hazy").iterdir()) == [
        "0025_0.8_0.04.jpg",
        "0025_1_0.2.jpg",
        "3068_1_0.2.jpg",
    ]
    assert sorted(p.name for p in (result.home / "clear").iterdir()) == ["0025.jpg", "3068.jpg"]
    assert report({"root": str(tmp_path / "data"), "val": {"d": {"dataset": row.check["dehaze"]}}}, progress=False) == 0


def test_reside_ots_subset_naming_missing_files_is_an_error(tmp_path):
    archive = write_zip(tmp_path / "OTS.zip", ots_files())
    listing = tmp_path / "list.txt"
    listing.write_text("0025_0.8_0.04.jpg\n9999_1_0.2.jpg\n")
    with pytest.raises(
        DataError, match=r"OTS\.zip: 1 of the 2 files of --subset are not in the download \(e\.g\. 9999"
    ):
        prepare_module.prepare("reside-ots", archive, tmp_path / "data", subset=listing, progress=False)
    full = prepare_module.prepare("reside-ots", archive, tmp_path / "all", subset="all", progress=False)
    assert full.counts == {"hazy images": 12, "clear images": 3}


def test_published_checksums_are_checked(tmp_path, use_rows):
    archive = write_zip(tmp_path / "kodak.zip", official_files("kodak24"))
    row = dataclasses.replace(scaled("kodak24", (2,)), sha256={"kodak.zip": "0" * 64})
    use_rows(row)
    with pytest.raises(DataError, match=r"kodak\.zip: SHA-256 differs from the one its authors publish"):
        prepare_module.prepare("kodak24", archive, tmp_path / "data", progress=False)
    use_rows(dataclasses.replace(row, sha256={"kodak.zip": prepare_module.file_sha256(archive)}))
    assert prepare_module.prepare("kodak24", archive, tmp_path / "data", progress=False).counts == {"images": 2}


def test_list_shows_every_dataset_with_publisher_size_and_licence(capsys):
    assert main(["data", "prepare", "--list"]) == 0
    out = capsys.readouterr().out
    for source in SOURCES:
        assert f"{source.name}" in out and source.published_by in out
    assert out.count("licence ") == len(SOURCES)


def test_unknown_name_suggests_the_close_one(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'gopr'; did you mean gopro"):
        prepare_module.prepare("gopr", tmp_path, tmp_path / "data")
