"""The release: one version source, CITATION.cff in step with the model cards' BibTeX, and a wheel
that installs into a fresh virtualenv and runs there, recipes included, from outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
import yaml
from PIL import Image

import restorekit
from restorekit import build_model
from restorekit.engine.infer import restore_tensor
from restorekit.model_card import CITATIONS

ROOT = Path(__file__).resolve().parents[1]
CITED = ["dino_ir", "restormer", "promptir", "adair", "moce_ir"]


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "src/restorekit/version.py"
    source = (ROOT / "src" / "restorekit" / "version.py").read_text(encoding="utf-8")
    assert re.findall(r'^__version__ = "([^"]+)"', source, re.MULTILINE) == [restorekit.__version__]
    assert not re.search(r"^__version__ =", (ROOT / "src" / "restorekit" / "__init__.py").read_text(), re.MULTILINE)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == restorekit.__version__


def bibtex_field(entry: str, name: str) -> str:
    return re.search(rf"^\s*{name}=\{{(.*)\}},?$", entry, re.MULTILINE).group(1)


def bibtex_authors(entry: str) -> list[tuple[str, str]]:
    """(family, given) of each author, from 'Family, Given' or 'Given Family'."""
    people = []
    for name in bibtex_field(entry, "author").split(" and "):
        if "," in name:
            family, given = (part.strip() for part in name.split(",", 1))
        else:
            *given_parts, family = name.split()
            given = " ".join(given_parts)
        people.append((family, given))
    return people


def test_citation_cff_lists_dino_ir_and_each_body_as_the_model_cards_cite_them() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["title"].startswith("restorekit")
    references = citation["references"]
    assert len(references) == len(CITED)
    for key, reference in zip(CITED, references):
        entry = CITATIONS[key]
        assert reference["title"] == bibtex_field(entry, "title").replace("{", "").replace("}", ""), key
        assert [(a["family-names"], a["given-names"]) for a in reference["authors"]] == bibtex_authors(entry), key
        # MoCE-IR's README cites its 2024 arXiv preprint; CITATION.cff its CVPR 2025 paper
        year = "2025" if key == "moce_ir" else bibtex_field(entry, "year")
        assert str(reference["year"]) == year, key
    assert bibtex_authors(CITATIONS["dino_ir"])[0] == ("Lin", "Xin")
    arxiv = {key: ref.get("identifiers", [{}])[0].get("value") for key, ref in zip(CITED, references)}
    assert arxiv["dino_ir"] == "arXiv:2312.01677" and arxiv["adair"] == "arXiv:2403.14614"
    assert arxiv["moce_ir"] == "arXiv:2411.18466" and arxiv["promptir"] == "arXiv:2306.13090"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (sdist, then the wheel from it) once, into a temporary folder."""
    pytest.importorskip("build", reason="the dev extra installs build")
    pytest.importorskip("hatchling", reason="the dev extra installs hatchling (built without isolation, offline)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: Path) -> None:
    pytest.importorskip("twine", reason="the dev extra installs twine")
    version = restorekit.__version__
    files = sorted(p.name for p in dist.iterdir())
    assert files == [f"restorekit-{version}-py3-none-any.whl", f"restorekit-{version}.tar.gz"]
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.count("PASSED") == 2, done.stdout + done.stderr


def test_the_wheel_installs_in_a_fresh_venv_and_lists_and_restores_from_outside_the_repo(
    dist: Path, tmp_path: Path
) -> None:
    wheel = next(dist.glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # pip from this interpreter installs into the fresh one; --no-deps: torch & co. come from below
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)  # fmt: skip
    # Only now (pip saw nothing of it) the fresh venv sees this venv's packages, after its own:
    # `venv --system-site-packages` from inside a venv would show the base interpreter's instead.
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())  # fmt: skip
    (site / "_test_release_shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=outside, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    where = run(str(python), "-c", "import restorekit; print(restorekit.__file__, restorekit.__version__)")
    assert where.startswith(str(site)) and where.split()[1] == restorekit.__version__
    listing = run(str(venv / "bin" / "restorekit"), "list")
    assert "dino_ir" in listing and "restormer" in listing
    recipes = run(str(venv / "bin" / "restorekit"), "list", "recipes")
    assert "demo/restormer_tiny" in recipes and "dino_ir_5task" in recipes  # shipped inside the wheel

    torch.manual_seed(0)
    model = build_model("demo/restormer_tiny").eval()
    torch.save(model.state_dict(), outside / "tiny.pth")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(image).save(outside / "in.png")
    run(str(venv / "bin" / "restorekit"), "restore", "in.png", "out.png", "--recipe", "demo/restormer_tiny",
        "--weights", "tiny.pth", "--tile", "0", "--no-progress")  # fmt: skip
    with torch.no_grad():
        lq = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        expected = (restore_tensor(model, lq)[0].permute(1, 2, 0).numpy() * 255).round()
    restored = np.asarray(Image.open(outside / "out.png"), dtype=np.float64)
    assert restored.shape == image.shape
    assert np.abs(restored - expected).max() <= 1  # the installed wheel restores as the source does
    assert np.abs(restored - image).max() > 1  # and it did restore something
