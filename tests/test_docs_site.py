"""The documentation site builds with ``mkdocs build --strict``: a broken link, anchor or API
reference fails the suite. The site is written to a temporary folder, never into the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from mkdocs_hooks import outside_links, readme_as_front_page  # noqa: E402

pytest.importorskip("mkdocs", reason="the dev extra installs MkDocs")
pytest.importorskip("mkdocstrings_handlers.python", reason="the dev extra installs mkdocstrings[python]")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_every_docs_page_is_on_the_site(site: Path) -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (site / name).is_file(), f"docs/{page.name} is not on the site (mkdocs.yml nav?)"


def test_the_front_page_is_the_readme(site: Path) -> None:
    front = (site / "index.html").read_text(encoding="utf-8")
    assert "Three ways to use it" in front and "From downloads, or your own pairs" in front
    assert 'href="models/#provenance"' in front  # README's docs/models.md#provenance, relative to docs/


@pytest.mark.parametrize(
    ("page", "names"),
    [
        (
            "building",
            ["restorekit.building.build_model", "restorekit.building.build", "restorekit.building.build_part"],
        ),
        ("registry", ["restorekit.registry.register", "restorekit.registry.Registry", "restorekit.listing.list_parts"]),
        ("contracts", ["restorekit.contracts.Body", "restorekit.contracts.Backbone", "restorekit.contracts.Loss"]),
        (
            "recipes",
            ["restorekit.recipes.load_recipe", "restorekit.recipes.merge", "restorekit.recipes.validate_recipe"],
        ),
        (
            "engine",
            [
                "restorekit.engine.train.train",
                "restorekit.engine.evaluate.evaluate",
                "restorekit.engine.infer.restore_tensor",
                "restorekit.engine.export.export_model",
            ],
        ),
        ("pretrained", ["restorekit.pretrained.save_pretrained", "restorekit.pretrained.from_pretrained"]),
        ("metrics", ["restorekit.metrics.psnr", "restorekit.metrics.ssim"]),
    ],
)
def test_the_api_reference_documents_the_public_api(site: Path, page: str, names: list[str]) -> None:
    html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
    for name in names:
        assert f'id="{name}"' in html, f"api/{page} has no entry for {name}"


def test_readme_links_are_made_relative_to_docs() -> None:
    text = "see [models](docs/models.md#provenance), [demo](scripts/demo.sh) and [arXiv](https://arxiv.org/abs/1)"
    assert readme_as_front_page(text) == (
        "see [models](models.md#provenance), [demo](scripts/demo.sh) and [arXiv](https://arxiv.org/abs/1)"
    )


def test_links_out_of_docs_are_checked_and_rewritten(caplog: pytest.LogCaptureFixture) -> None:
    docs = ROOT / "docs"
    page = docs / "interfaces.md"
    text = "[the contracts](../src/restorekit/contracts.py), [gone](../src/nothere.py), [here](models.md)"
    plain = outside_links(text, page, ROOT, docs, None, "interfaces.md")
    assert plain.startswith(
        "the contracts (`src/restorekit/contracts.py`), [gone](../src/nothere.py), [here](models.md)"
    )
    assert "links to ../src/nothere.py, which is not in the repository" in caplog.text
    linked = outside_links("[c](../src/restorekit/contracts.py)", page, ROOT, docs, "https://x/y/", "p")
    assert linked == "[c](https://x/y/tree/main/src/restorekit/contracts.py)"
