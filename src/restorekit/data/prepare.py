"""``restorekit data prepare``: from a dataset as its authors publish it to the protocol layout.

One generic preparer for every row of :mod:`restorekit.data.sources`:

1. the download (a zip or tar, or its unpacked folder) is unpacked safely into a
   work folder under ``<root>/.restorekit-prepare/`` (same file system as the data,
   so the final rename is atomic);
2. each file's path is matched against the row's parts; every part must find its
   expected number of files, or nothing is written and the error names the
   download, the part, the counts and a few of the files found instead;
3. the home folder is built beside the data in the work folder (files moved out of
   the unpacked archive, copied from a folder, or symlinked with ``--link``), a
   ``.prepared.json`` note goes in, and the folder is renamed into place;
4. the work folder is deleted, whatever happened.

A home that exists already is left alone: prepared by this command (its note names
the dataset) it is reported as done; otherwise the command stops and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from restorekit.data.archives import archive_kind, extract, list_files
from restorekit.data.sources import Part, Source, find_source
from restorekit.errors import DataError
from restorekit.io.atomic import fsync_dir
from restorekit.io.weight_files import file_sha256

MARKER = ".prepared.json"
WORK_FOLDER = ".restorekit-prepare"
_SHOWN = 5


@dataclass
class PrepareResult:
    source: Source
    home: Path
    already: bool  # prepared by an earlier run: nothing was written
    counts: dict[str, int]  # part -> files written (or recorded by the earlier run)


def _bar(total: int, desc: str, progress: bool) -> Iterator[int]:
    # disable=None: shown on a terminal only
    yield from tqdm(range(total), desc=desc, unit="file", file=sys.stderr, disable=None if progress else True)


def read_subset(path: Path) -> set[str]:
    """File names listed one a line (a leading folder such as ``synthetic/part1/`` is ignored)."""
    if not path.is_file():
        raise DataError(f"--subset: list file not found: {path}")
    names = {PurePosixPath(line.strip()).name for line in path.read_text().splitlines() if line.strip()}
    if not names:
        raise DataError(f"--subset: {path} lists no file")
    return names


def match_parts(
    source: Source, files: Iterable[str], where: str, subset: set[str] | None = None
) -> list[list[tuple[str, str]]]:
    """Per part, the (path in the download, target under the home) pairs; a DataError when any count is off."""
    files = list(files)
    regexes = [part.regex() for part in source.parts]
    found: list[list[tuple[str, str, dict[str, str]]]] = [[] for _ in source.parts]
    unmatched = []
    for rel in files:
        for index, (part, regex) in enumerate(zip(source.parts, regexes)):
            hit = regex.search(rel)
            if hit:
                fields = {k: v for k, v in hit.groupdict().items() if v is not None}
                target = part.target.format(name=PurePosixPath(rel).name, **fields)
                found[index].append((rel, target, fields))
                break
        else:
            unmatched.append(rel)
    if subset is not None:
        found = _apply_subset(source, found, subset, where)
    problems = []
    for part, hits in zip(source.parts, found):
        if (part.counts and len(hits) not in part.counts) or not hits:
            expected = " or ".join(f"{c:,}" for c in part.counts) if part.counts else "at least one"
            problems.append(f"{part.what}: expected {expected}, found {len(hits):,} (paths matching {part.pattern})")
    if problems:
        others = f"; other files there: {', '.join(unmatched[:_SHOWN])}" if unmatched else "; no other file there"
        if len(unmatched) > _SHOWN:
            others += f" and {len(unmatched) - _SHOWN:,} more"
        looks = (
            "it does not look like " + source.title
            if all(not hits for hits in found)
            else "a file is missing or the copy is incomplete"
        )
        raise DataError(
            f"{where}: {looks} ({len(files):,} files read). "
            + "; ".join(problems)
            + others
            + f". See `restorekit data prepare --list` and docs/data.md#{source.name}"
        )
    _refuse_collisions(found, where)
    return [[(rel, target) for rel, target, _ in hits] for hits in found]


def _apply_subset(
    source: Source, found: list[list[tuple[str, str, dict[str, str]]]], subset: set[str], where: str
) -> list[list[tuple[str, str, dict[str, str]]]]:
    """Keep the listed files of the first part, and of the other parts the ids those still use."""
    first = [hit for hit in found[0] if PurePosixPath(hit[0]).name in subset]
    missing = subset - {PurePosixPath(hit[0]).name for hit in first}
    if missing:
        shown = ", ".join(sorted(missing)[:_SHOWN])
        raise DataError(
            f"{where}: {len(missing):,} of the {len(subset):,} files of --subset are not in the download "
            f"(e.g. {shown}); is it the complete {source.title}?"
        )
    ids = {hit[2].get("id") for hit in first}
    kept = [first]
    for hits in found[1:]:
        kept.append([hit for hit in hits if "id" not in hit[2] or hit[2]["id"] in ids])
    return kept


def _refuse_collisions(found: list[list[tuple[str, str, dict[str, str]]]], where: str) -> None:
    seen: dict[str, str] = {}
    for hits in found:
        for rel, target, _ in hits:
            if target in seen:
                raise DataError(f"{where}: {seen[target]} and {rel} would both become {target}; keep one of them")
            seen[target] = rel


def _check_sha256(source: Source, archive: Path) -> None:
    expected = source.sha256.get(archive.name)
    if expected and file_sha256(archive) != expected.lower():
        raise DataError(f"{archive}: SHA-256 differs from the one its authors publish ({expected}); download it again")


def already_prepared(source: Source, home: Path) -> dict | None:
    """The note of an earlier run for this dataset, None when ``home`` does not exist."""
    if not home.exists():
        return None
    try:
        note = json.loads((home / MARKER).read_text())
    except (OSError, ValueError):
        note = None
    if not isinstance(note, dict) or note.get("dataset") != source.name:
        raise DataError(
            f"{home} exists and was not written by `restorekit data prepare {source.name}`; "
            "move it away (or pass another --root) and run again"
        )
    return note


def prepare(
    name: str,
    source_path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    link: bool = False,
    subset: str | os.PathLike | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Write dataset ``name`` from ``source_path`` into its home under ``root`` (see the module doc)."""
    source = find_source(name)
    root, download = Path(root).expanduser(), Path(source_path).expanduser()
    home = root / source.home
    note = already_prepared(source, home)
    if note is not None:
        return PrepareResult(source, home, True, dict(note.get("counts", {})))
    if not download.exists():
        raise DataError(f"{download}: no such file or folder (the {source.title} download)")
    if source.needs_subset and subset is None:
        raise DataError(
            f"{source.name}: pass --subset LIST, the list of the protocol's images (PromptIR's or AdaIR's "
            "data_dir/hazy/hazy_outside.txt: 72,135 images), or --subset all for every image of the download"
        )
    wanted = None if subset is None or str(subset) == "all" else read_subset(Path(subset))
    kind = archive_kind(download)
    if kind is not None and link:
        raise DataError(f"{download}: --link needs an unpacked folder, not an archive (unpack it and pass the folder)")
    if kind is not None:
        _check_sha256(source, download)
    work = root / WORK_FOLDER / f"{source.name}-{os.getpid()}"
    try:
        work.mkdir(parents=True)
        if kind is not None:
            top = re.sub(r"\.(zip|tar|tgz|tbz2|txz|tar\.\w+)$", "", download.name, flags=re.IGNORECASE)
            files_root = work / "unpacked"
            extract(download, files_root / top, lambda n: _bar(n, f"unpacking {download.name}", progress))
        else:
            files_root, top = download.resolve().parent, download.resolve().name
        files = [f"{top}/{rel}" for rel in list_files(files_root / top)]
        parts = match_parts(source, files, str(download), wanted)
        build = work / "home"
        counts = _write(parts, source.parts, files_root, build, move=kind is not None, link=link, progress=progress)
        note = {"dataset": source.name, "source": str(download.resolve()), "link": link, "counts": counts}
        (build / MARKER).write_text(json.dumps(note, indent=2) + "\n")
        home.parent.mkdir(parents=True, exist_ok=True)
        os.rename(build, home)
        fsync_dir(home.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            (root / WORK_FOLDER).rmdir()
        except OSError:
            pass  # another preparation is running, or a folder is left by a killed one: kept
    return PrepareResult(source, home, False, counts)


def _write(
    parts: list[list[tuple[str, str]]],
    specs: tuple[Part, ...],
    files_root: Path,
    build: Path,
    *,
    move: bool,
    link: bool,
    progress: bool,
) -> dict[str, int]:
    pairs = [pair for hits in parts for pair in hits]
    verb = "linking" if link else "moving" if move else "copying"
    for index in _bar(len(pairs), f"{verb} files", progress):
        rel, target = pairs[index]
        src, dst = files_root / rel, build / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(src.resolve(), dst)
        elif move:
            os.rename(src, dst)
        else:
            shutil.copy2(src, dst)
    return {spec.what: len(hits) for spec, hits in zip(specs, parts)}
