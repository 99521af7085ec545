"""MkDocs hooks (mkdocs.yml ``hooks:``): README.md is the site's front page, and links out of docs/ are checked.

README.md is the one source of the front page: docs/index.md only holds a comment, and
this hook puts README.md's text there with its ``docs/`` links made relative to docs/.
A link from a page to a repository file outside docs/ (``../benchmarks/README.md``) is
checked to exist, then pointed at the repository (``repo_url``) or written as the path,
since the site does not carry those files; a missing one is a warning, which
``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.restorekit")

LINK = re.compile(r"\[([^\]]*)\]\((?!https?://|#|mailto:)([^)\s]+)\)")


def repository_root(config: Any) -> Path:
    return Path(config["docs_dir"]).resolve().parent


def readme_as_front_page(readme: str) -> str:
    """README.md's links are relative to the repository root; on the site they are relative to docs/."""

    def relink(match: re.Match[str]) -> str:
        text, target = match.groups()
        return f"[{text}]({target.removeprefix('docs/')})"

    return LINK.sub(relink, readme)


def outside_links(markdown: str, page_path: Path, root: Path, docs: Path, repo_url: str | None, where: str) -> str:
    """Links that leave docs/: checked to exist, then made absolute (repo_url) or written as the path."""

    def relink(match: re.Match[str]) -> str:
        text, target = match.groups()
        path_part = target.split("#", 1)[0]
        resolved = (page_path.parent / path_part).resolve()
        if not path_part or resolved.is_relative_to(docs):
            return match.group(0)
        if not resolved.is_relative_to(root) or not resolved.exists():
            log.warning("%s links to %s, which is not in the repository", where, target)
            return match.group(0)
        relative = resolved.relative_to(root).as_posix()
        if repo_url:
            return f"[{text}]({repo_url.rstrip('/')}/tree/main/{relative})"
        return text if f"`{relative}" in text else f"{text} (`{relative}`)"

    return LINK.sub(relink, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = repository_root(config)
    docs = Path(config["docs_dir"]).resolve()
    where = page.file.src_uri
    if where == "index.md":
        markdown = readme_as_front_page((root / "README.md").read_text(encoding="utf-8"))
        where = "README.md"
    page_path = docs / page.file.src_uri
    return outside_links(markdown, page_path, root, docs, config.get("repo_url"), where)
