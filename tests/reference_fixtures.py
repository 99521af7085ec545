"""Read the official-code reference fixtures (made by scripts/make_reference_fixtures.py).

A fixture is one safetensors file: ``input``, ``output`` (the official model's output
on that input), ``release/<key>`` (the weights in the layout of the official release,
nesting joined by ``/``; float16 in the larger fixtures, read back as the float32 of
the released files) and metadata (the restorekit body spec, the released file's name,
where the official code came from). See tests/fixtures/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASE_PREFIX = "release/"


@dataclass(frozen=True)
class Reference:
    """One fixture, read."""

    name: str
    body: dict[str, Any]  # the restorekit body spec of the official model (no weights)
    release_file: str  # the released file's name; its suffix is the layout (.pth, .ckpt)
    release: dict[str, Any]  # the released file's content (nested, tensors at the leaves)
    input: torch.Tensor
    output: torch.Tensor
    official: dict[str, Any]  # repo, commit, file, class, constructor arguments
    # Further official results: ``train/output`` and ``train/loss`` (a training pass with the
    # random draws zero), ``<variant>/output`` ... for each variant on the same weights.
    results: dict[str, torch.Tensor] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"official": .., "body": ..}

    def write_release(self, folder: Path) -> Path:
        """The released file, as the official project ships it (``torch.save``)."""
        path = folder / self.release_file
        torch.save(self.release, path)
        return path


def nest(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``{"a/b": t}`` -> ``{"a": {"b": t}}``."""
    tree: dict[str, Any] = {}
    for key, tensor in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = tensor
    return tree


def read_reference(name: str) -> Reference:
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    release = {
        k[len(RELEASE_PREFIX) :]: v.float() if v.dtype == torch.float16 else v
        for k, v in tensors.items()
        if k.startswith(RELEASE_PREFIX)
    }
    return Reference(
        name=name,
        body=json.loads(meta["body"]),
        release_file=meta["release_file"],
        release=nest(release),
        input=tensors["input"],
        output=tensors["output"],
        official=json.loads(meta["official"]),
        results={k: v for k, v in tensors.items() if "/" in k and not k.startswith(RELEASE_PREFIX)},
        variants=json.loads(meta.get("variants", "{}")),
    )
