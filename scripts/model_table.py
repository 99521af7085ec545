"""Write the table of docs/models.md: parameters and GMACs of every builtin recipe's model.

Each model is built at full size on the ``meta`` device (no memory, no compute) and
run once at 1x3xSxS under ``torch.utils.flop_counter.FlopCounterMode``; GMACs are
the counted FLOPs / 2 (convolutions, matmuls and attention; no elementwise ops).
Backbone weights are not needed: shapes decide both counts.

    python scripts/model_table.py            # rewrite the table in docs/models.md
    python scripts/model_table.py --check    # exit 1 if docs/models.md is out of date
    python scripts/model_table.py --print    # print the table only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "models.md"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def _describe(model: Any) -> tuple[str, str]:
    """(body, backbone) names of a model for the table."""
    body = getattr(model, "body", model)
    backbone = getattr(model, "backbone", None)
    return type(body).__name__, (getattr(backbone, "name", type(backbone).__name__) if backbone is not None else "-")


def measure(name: str, size: int) -> dict[str, Any]:
    """Parameter counts and GMACs of the model of recipe ``name`` at ``size`` x ``size``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from restorekit import build_model, load_recipe
    from restorekit.params import count_params

    recipe = load_recipe(name)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # random-init warnings: weights do not matter here
        model = build_model(recipe["model"]).eval()
        x = torch.empty(1, 3, size, size)
    trainable, frozen = count_params(model)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    backbone_flops = sum(per_module.get(f"{root}.backbone", {}).values())
    body, backbone = _describe(model)
    return {
        "recipe": name,
        "model": recipe["model"].get("type", "?"),
        "body": body,
        "backbone": backbone,
        "trainable": trainable,
        "frozen": frozen,
        "gmacs": counter.get_total_flops() / 2e9,
        "backbone_gmacs": backbone_flops / 2e9,
    }


def recipe_names() -> list[str]:
    """Every builtin recipe that has a model."""
    from restorekit.recipes import builtin_recipe_dir, load_recipe

    folder = builtin_recipe_dir()
    names = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    return [n for n in names if load_recipe(n).get("model")]


def table(size: int) -> str:
    rows = [measure(name, size) for name in recipe_names()]
    lines = [
        f"| recipe | model | body | backbone | trainable params | frozen params | GMACs @{size}x{size} | of which backbone |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['recipe']}` | {r['model']} | {r['body']} | {r['backbone']} | {r['trainable'] / 1e6:.2f} M "
            f"| {r['frozen'] / 1e6:.2f} M | {r['gmacs']:.1f} | {r['backbone_gmacs']:.1f} |"
        )
    return "\n".join(lines)


def replace_table(text: str, new_table: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="square input side (default 256)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/models.md is out of date")
    mode.add_argument("--print", dest="print_only", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    new_table = table(args.size)
    if args.print_only:
        print(new_table)
        return 0
    text = DOC.read_text(encoding="utf-8")
    updated = replace_table(text, new_table)
    if args.check:
        if updated != text:
            print(f"{DOC} is out of date; run python scripts/model_table.py", file=sys.stderr)
            return 1
        return 0
    if updated != text:
        write_atomic(DOC, updated)
    print(new_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
