"""Make the reference fixtures of tests/test_bodies_reference.py from the official code.

Each entry of ``REFERENCES`` names an official model file, builds it at a tiny
configuration with seeded weights, runs it on a fixed odd-sized input (reflect-padded
to a multiple of 8 and cropped back, as the official test scripts do) and writes
``tests/fixtures/<name>.safetensors`` holding:

* ``input`` and ``output``: the input batch and the official model's output;
* for a reference with a training pass (MoCE-IR), ``train/output`` and ``train/loss``: the
  official model in training mode with its random draws made zero, and its loss attribute;
  for each variant on the same weights (MoCE-IR at ``topk=2``), ``<variant>/output`` ...;
* ``release/<key>``: the weights in the layout of the official release, one tensor per
  key of the released file, its nesting joined by ``/`` (``release/params/<name>`` for a
  BasicSR ``.pth``, ``release/state_dict/net.<name>`` for a Lightning ``.ckpt``);
* metadata: the restorekit body spec of the same model, the released file's name, the
  official repository, commit, file and constructor arguments, and how it was made.

The tests rebuild the released file from ``release/`` and load it through the body's
``weights:`` key; they never need the official code. Run this script again (with the
official checkouts) only to add or remake a fixture::

    git clone https://github.com/swz30/Restormer /tmp/official/Restormer
    git clone https://github.com/va1shn9v/PromptIR /tmp/official/PromptIR
    git clone https://github.com/c-yn/AdaIR /tmp/official/AdaIR
    git clone https://github.com/eduardzamfir/MoCE-IR /tmp/official/MoCE-IR
    python scripts/make_reference_fixtures.py \
        --checkout swz30/Restormer=/tmp/official/Restormer \
        --checkout va1shn9v/PromptIR=/tmp/official/PromptIR \
        --checkout c-yn/AdaIR=/tmp/official/AdaIR \
        --checkout eduardzamfir/MoCE-IR=/tmp/official/MoCE-IR

Official code is imported from the checkout, never copied into this repository. Its
runtime needs beyond torch are ``einops`` and, for MoCE-IR's file (which imports it
for its FLOP count), ``fvcore``. A new body is one more ``Reference`` entry and one
more name in the test's list.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
INPUT_SHAPE = (2, 19, 23)  # batch, height, width: odd sides, so padding and cropping are tested
PERTURBATION = 0.1  # added to every seeded parameter, so unit norms and temperatures are not trivial

# -- the released layouts --------------------------------------------------------------


def basicsr_pth(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Restormer's releases: a BasicSR ``.pth`` with the weights under ``params``."""
    return {"params": state}


def lightning_ckpt(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """PromptIR's release: a Lightning ``.ckpt``, the model under ``state_dict`` as ``net.<name>``."""
    return {"state_dict": {f"net.{k}": v for k, v in state.items()}}


@dataclass(frozen=True)
class Reference:
    """One fixture: an official model at a tiny configuration and the same model in restorekit."""

    name: str  # the fixture's file stem
    repo: str  # the official repository (owner/name); its checkout is passed with --checkout
    module_file: str  # the model file inside the checkout
    class_name: str
    official_kwargs: dict[str, Any]
    body: dict[str, Any]  # the restorekit body spec of the same model (without weights)
    release: Callable[[dict[str, torch.Tensor]], dict[str, Any]]
    release_file: str  # the name the released file would have (its suffix picks the reader)
    in_channels: int = 3
    seed: int = 0
    # Exact source edits applied before import, each of which must match exactly once.
    # Only for files that hard-code the widths of their default size (see PROMPTIR_WIDTHS).
    patches: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    tiny_globals: dict[str, int] = field(default_factory=dict)  # names the patches refer to
    default_globals: dict[str, int] = field(default_factory=dict)  # their values at the default size
    default_kwargs: dict[str, Any] = field(default_factory=dict)  # builds the default size
    # (class name, attribute, value) set on every such module once built: a switch the
    # official constructor lacks (see MOCE_NO_ROUTING_NOISE). Each must match a module.
    attributes: tuple[tuple[str, str, Any], ...] = field(default_factory=tuple)
    # Run the official model on one image at a time, as its test script (batch 1) does,
    # for code whose batched inference differs from its per-image one (MoCE-IR).
    one_image_at_a_time: bool = False
    # The fixture stores the weights in this dtype; float16 halves a fixture whose tiny
    # size is still large. The model's float32 tensors are rounded to it before the
    # official output is computed, so the stored values are exactly those it ran with.
    weights_dtype: torch.dtype = torch.float32
    # Also run the official model in training mode, its random draws made zero (see
    # training_pass), and store ``train/output`` and ``train/loss``, the value of this
    # attribute after the forward (MoCE-IR's ``total_loss``, the balance loss).
    train_loss_attribute: str | None = None
    # (class name, attribute, value) set for the training pass only (MoCE-IR's load loss
    # divides by noise_std, so the training pass keeps the constructor's value).
    train_attributes: tuple[tuple[str, str, Any], ...] = field(default_factory=tuple)
    # Variants on the same weights: name -> (official kwargs, body spec keys) overriding the
    # reference's; their outputs are stored under ``<name>/`` (``<name>/output``, and
    # ``<name>/train/...`` with a training pass).
    variants: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)


TINY = {"dim": 4, "num_blocks": [1, 2, 1, 1], "heads": [1, 2, 4, 8], "num_refinement_blocks": 2}
TINY_OFFICIAL = {**TINY, "ffn_expansion_factor": 2.66}

# The official PromptIR file hard-codes the channel counts of its default size (dim 48,
# prompt dims 64/128/320, prompt sizes 64/32/16, 5 prompts). These edits turn each
# literal into the expression it stands for, in the constructor only; forward() is
# untouched. At the default size the edited file builds the same state-dict shapes as
# the original (checked by check_patches_keep_default_shapes).
PROMPTIR_WIDTHS: tuple[tuple[str, str], ...] = (
    (
        "PromptGenBlock(prompt_dim=64,prompt_len=5,prompt_size = 64,lin_dim = 96)",
        "PromptGenBlock(prompt_dim=TINY['p1'],prompt_len=TINY['n'],prompt_size=TINY['s1'],lin_dim=dim*2)",
    ),
    (
        "PromptGenBlock(prompt_dim=128,prompt_len=5,prompt_size = 32,lin_dim = 192)",
        "PromptGenBlock(prompt_dim=TINY['p2'],prompt_len=TINY['n'],prompt_size=TINY['s2'],lin_dim=dim*4)",
    ),
    (
        "PromptGenBlock(prompt_dim=320,prompt_len=5,prompt_size = 16,lin_dim = 384)",
        "PromptGenBlock(prompt_dim=TINY['p3'],prompt_len=TINY['n'],prompt_size=TINY['s3'],lin_dim=dim*8)",
    ),
    ("nn.Conv2d(64,64,kernel_size=1,bias=bias)", "nn.Conv2d(TINY['p1'],TINY['p1'],kernel_size=1,bias=bias)"),
    ("nn.Conv2d(128,128,kernel_size=1,bias=bias)", "nn.Conv2d(TINY['p2'],TINY['p2'],kernel_size=1,bias=bias)"),
    ("nn.Conv2d(320,256,kernel_size=1,bias=bias)", "nn.Conv2d(TINY['p3'],2*TINY['p2'],kernel_size=1,bias=bias)"),
    ("nn.Conv2d(dim + 64,dim,", "nn.Conv2d(dim + TINY['p1'],dim,"),
    ("nn.Conv2d(int(dim*2**1) + 128,", "nn.Conv2d(int(dim*2**1) + TINY['p2'],"),
    ("nn.Conv2d(int(dim*2**2) + 256,", "nn.Conv2d(int(dim*2**2) + 2*TINY['p2'],"),
    ("nn.Conv2d(int(dim*2**1)+192,", "nn.Conv2d(int(dim*2**1)+int(dim*2**2),"),
    ("TransformerBlock(dim=int(dim*2**2) + 512,", "TransformerBlock(dim=int(dim*2**3) + TINY['p3'],"),
    ("nn.Conv2d(int(dim*2**2)+512,", "nn.Conv2d(int(dim*2**3)+TINY['p3'],"),
    ("TransformerBlock(dim=int(dim*2**1) + 224,", "TransformerBlock(dim=int(dim*2**2) + TINY['p2'],"),
    ("nn.Conv2d(int(dim*2**1)+224,", "nn.Conv2d(int(dim*2**2)+TINY['p2'],"),
    ("TransformerBlock(dim=int(dim*2**1)+64,", "TransformerBlock(dim=int(dim*2**1)+TINY['p1'],"),
    ("nn.Conv2d(int(dim*2**1)+64,", "nn.Conv2d(int(dim*2**1)+TINY['p1'],"),
)
PROMPTIR_DEFAULT_SIZE = {"p1": 64, "p2": 128, "p3": 320, "s1": 64, "s2": 32, "s3": 16, "n": 5}
PROMPTIR_TINY = {"p1": 4, "p2": 8, "p3": 20, "s1": 8, "s2": 4, "s3": 4, "n": 3}  # 1/16 the widths

# AdaIR's smallest width: fre3's channel gate reduces 2*dim channels 16-fold.
ADAIR_TINY = {"dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 2, 4, 8], "num_refinement_blocks": 1}
# MoCE-IR at its released structure (4 experts of spread ranks, top 1, constant depth),
# dim 8 (the smallest for 'spread' ranks dim/8 .. dim); two blocks at decoder level 2.
MOCE_TINY = {
    "dim": 8,
    "num_blocks": [1, 1, 1, 1],
    "num_dec_blocks": [1, 2, 1],
    "heads": [1, 2, 4, 8],
    "num_refinement_blocks": 1,
}
MOCE_OFFICIAL = {
    **MOCE_TINY,
    "levels": 4,
    "ffn_expansion_factor": 2,
    "rank": 2,
    "num_experts": 4,
    "topk": 1,
    "rank_type": "spread",
    "depth_type": "constant",
    "stage_depth": [1, 1, 1],
    "with_complexity": False,
    "complexity_scale": "max",
}  # the released recipe's arguments
# The official router adds noise of std noise_std to its logits at inference too; zero
# makes the official output deterministic, as the body's routing_noise_at_eval: false.
MOCE_NO_ROUTING_NOISE = (("RoutingFunction", "noise_std", 0.0),)
# In the training pass the draws are zero instead (training_pass); noise_std keeps its
# constructor value 1 / num_experts, which the load term of the balance loss divides by.
MOCE_TRAINING_NOISE_STD = (("RoutingFunction", "noise_std", 1.0 / MOCE_OFFICIAL["num_experts"]),)

REFERENCES: tuple[Reference, ...] = (
    Reference(
        name="restormer",
        repo="swz30/Restormer",
        module_file="basicsr/models/archs/restormer_arch.py",
        class_name="Restormer",
        official_kwargs=dict(TINY_OFFICIAL),
        body={"type": "restormer", **TINY},
        release=basicsr_pth,
        release_file="restormer.pth",
    ),
    Reference(  # every other knob of the official constructor, in one model
        name="restormer_dual_pixel_bias_free",
        repo="swz30/Restormer",
        module_file="basicsr/models/archs/restormer_arch.py",
        class_name="Restormer",
        official_kwargs={
            **TINY_OFFICIAL,
            "inp_channels": 6,
            "dual_pixel_task": True,
            "LayerNorm_type": "BiasFree",
            "bias": True,
        },
        body={
            "type": "restormer",
            **TINY,
            "in_channels": 6,
            "dual_pixel_task": True,
            "layernorm_type": "BiasFree",
            "bias": True,
        },
        release=basicsr_pth,
        release_file="dual_pixel_defocus_deblurring.pth",
        in_channels=6,
        seed=1,
    ),
    Reference(
        name="promptir",
        repo="va1shn9v/PromptIR",
        module_file="net/model.py",
        class_name="PromptIR",
        official_kwargs={**TINY_OFFICIAL, "decoder": True},
        body={
            "type": "promptir",
            **TINY,
            "prompt_dims": [PROMPTIR_TINY[k] for k in ("p1", "p2", "p3")],
            "prompt_sizes": [PROMPTIR_TINY[k] for k in ("s1", "s2", "s3")],
            "prompt_len": PROMPTIR_TINY["n"],
        },
        release=lightning_ckpt,
        release_file="promptir_model.ckpt",
        seed=2,
        patches=PROMPTIR_WIDTHS,
        tiny_globals=PROMPTIR_TINY,
        default_globals=PROMPTIR_DEFAULT_SIZE,
        default_kwargs={"decoder": True},
    ),
    Reference(
        name="adair",
        repo="c-yn/AdaIR",
        module_file="net/model.py",
        class_name="AdaIR",
        official_kwargs={**ADAIR_TINY, "ffn_expansion_factor": 2.66, "decoder": True},
        body={"type": "adair", **ADAIR_TINY},
        release=lightning_ckpt,
        release_file="adair5d.ckpt",
        seed=12,
        weights_dtype=torch.float16,
    ),
    Reference(
        name="moce_ir",
        repo="eduardzamfir/MoCE-IR",
        module_file="src/net/moce_ir.py",
        class_name="MoCEIR",
        official_kwargs=MOCE_OFFICIAL,
        body={"type": "moce_ir", **MOCE_TINY, "routing_noise_at_eval": False},
        release=lightning_ckpt,
        release_file="last.ckpt",
        seed=20,
        weights_dtype=torch.float16,
        attributes=MOCE_NO_ROUTING_NOISE,
        one_image_at_a_time=True,
        train_loss_attribute="total_loss",
        train_attributes=MOCE_TRAINING_NOISE_STD,
        variants={"top_k2": ({"topk": 2}, {"top_k": 2})},
    ),
)


# -- building the official model ----------------------------------------------------------
def patched_source(path: Path, patches: tuple[tuple[str, str], ...]) -> str:
    text = path.read_text(encoding="utf-8")
    for old, new in patches:
        count = text.count(old)
        if count != 1:
            raise SystemExit(
                f"{path}: the edit {old!r} matches {count} times (expected once); "
                f"the official file changed, review PROMPTIR_WIDTHS"
            )
        text = text.replace(old, new)
    return text


def import_official(ref: Reference, checkout: Path, tiny: dict[str, int], scratch: Path) -> ModuleType:
    """The official model file as a module (edited copy in ``scratch`` when it has patches)."""
    source = checkout / ref.module_file
    if not source.is_file():
        raise SystemExit(f"{source} does not exist: is {checkout} a checkout of {ref.repo}?")
    if ref.patches:
        edited = scratch / f"{ref.name}_{Path(ref.module_file).name}"
        edited.write_text(patched_source(source, ref.patches), encoding="utf-8")
        source = edited
    spec = importlib.util.spec_from_file_location(f"official_{ref.name}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.TINY = dict(tiny)  # the names the patches refer to
    return module


def check_patches_keep_default_shapes(ref: Reference, checkout: Path, scratch: Path) -> None:
    """The edited file at the default size has the original file's state-dict shapes."""
    if not ref.patches:
        return
    original = import_official(replace(ref, patches=()), checkout, {}, scratch)
    edited = import_official(ref, checkout, ref.default_globals, scratch)
    with torch.device("meta"):  # shapes only: nothing is allocated
        want = {k: v.shape for k, v in getattr(original, ref.class_name)(**ref.default_kwargs).state_dict().items()}
        got = {k: v.shape for k, v in getattr(edited, ref.class_name)(**ref.default_kwargs).state_dict().items()}
    if want != got:
        differing = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise SystemExit(f"{ref.name}: the width edits change the default model: {differing[:5]}")


def seeded_model(module: ModuleType, ref: Reference) -> torch.nn.Module:
    torch.manual_seed(ref.seed)
    model = getattr(module, ref.class_name)(**ref.official_kwargs)
    gen = torch.Generator().manual_seed(ref.seed + 1000)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.add_(PERTURBATION * torch.randn(param.shape, generator=gen))
        for tensor in model.state_dict().values():  # views of the parameters and buffers
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.to(ref.weights_dtype))
    set_attributes(model, ref)
    return model.eval()


def set_attributes(model: torch.nn.Module, ref: Reference) -> None:
    """Set ``ref.attributes`` on the built official model; each must find its modules."""
    for class_name, attribute, value in ref.attributes:
        modules = [m for m in model.modules() if type(m).__name__ == class_name]
        if not modules:
            raise SystemExit(f"{ref.name}: no {class_name} module to set {attribute} on")
        for found in modules:
            if not hasattr(found, attribute):
                raise SystemExit(f"{ref.name}: {class_name} has no attribute {attribute!r}")
            setattr(found, attribute, value)


def official_output(model: torch.nn.Module, x: torch.Tensor, one_image_at_a_time: bool = False) -> torch.Tensor:
    """As the official test scripts: reflect-pad to a multiple of 8, run, crop back."""
    if one_image_at_a_time:
        return torch.cat([official_output(model, image[None]) for image in x])
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, -w % 8, 0, -h % 8), mode="reflect")
    with torch.no_grad():
        return model(padded)[..., :h, :w].contiguous()


def training_pass(model: torch.nn.Module, x: torch.Tensor, ref: Reference) -> dict[str, torch.Tensor]:
    """The official model in training mode on the whole batch, every ``torch.randn_like`` draw zero.

    Padded and cropped as :func:`official_output`. Returns ``train/output`` and
    ``train/loss`` (``ref.train_loss_attribute`` after the forward). MoCE-IR's training
    path dispatches each image to the experts it chose, so a batch is per image here.
    """
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, -w % 8, 0, -h % 8), mode="reflect")
    set_attributes(model, replace(ref, attributes=ref.train_attributes))
    draw = torch.randn_like
    torch.randn_like = torch.zeros_like  # the router's noise off; restored below
    try:
        with torch.no_grad():
            out = model.train()(padded)[..., :h, :w].contiguous()
        loss = torch.as_tensor(getattr(model, str(ref.train_loss_attribute)), dtype=torch.float32).reshape(1)
    finally:
        torch.randn_like = draw
        set_attributes(model, ref)
        model.eval()
    return {"train/output": out, "train/loss": loss.detach().clone()}


def official_results(model: torch.nn.Module, x: torch.Tensor, ref: Reference) -> dict[str, torch.Tensor]:
    """``output`` and, with ``ref.train_loss_attribute``, the training pass's tensors."""
    out = {"output": official_output(model, x, ref.one_image_at_a_time)}
    if ref.train_loss_attribute:
        out.update(training_pass(model, x, ref))
    return out


def variant_results(
    ref: Reference, module: ModuleType, model: torch.nn.Module, x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each variant's results on the same (stored) weights, under ``<name>/``."""
    out: dict[str, torch.Tensor] = {}
    for name, (official_kwargs, _) in ref.variants.items():
        torch.manual_seed(ref.seed)
        variant = getattr(module, ref.class_name)(**{**ref.official_kwargs, **official_kwargs})
        variant.load_state_dict(model.state_dict())
        set_attributes(variant, ref)
        for key, tensor in official_results(variant.eval(), x, ref).items():
            out[f"{name}/{key}"] = tensor
    return out


# -- writing --------------------------------------------------------------------------
def flatten(tree: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        if "/" in key:
            raise SystemExit(f"key {key!r} holds '/', which the fixture uses to join its nesting")
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value.detach().contiguous()
    return out


def commit_of(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown (not a git checkout)"


def make(ref: Reference, checkout: Path, out_dir: Path, scratch: Path) -> Path:
    check_patches_keep_default_shapes(ref, checkout, scratch)
    module = import_official(ref, checkout, ref.tiny_globals, scratch)
    model = seeded_model(module, ref)
    gen = torch.Generator().manual_seed(ref.seed + 2000)
    batch, height, width = INPUT_SHAPE
    x = torch.rand(batch, ref.in_channels, height, width, generator=gen)
    results = {**official_results(model, x, ref), **variant_results(ref, module, model, x)}
    y = results["output"]
    if (y - x[:, : y.shape[1]]).abs().mean() < 0.05:
        raise SystemExit(f"{ref.name}: the output is nearly the input; the fixture would test little")
    state = {k: v.to(ref.weights_dtype) if v.dtype == torch.float32 else v for k, v in model.state_dict().items()}
    tensors = {"input": x, **results, **flatten(ref.release(state), "release/")}
    metadata = {
        "body": json.dumps(ref.body),
        "release_file": ref.release_file,
        "official": json.dumps(
            {
                "repo": ref.repo,
                "commit": commit_of(checkout),
                "file": ref.module_file,
                "class": ref.class_name,
                "kwargs": ref.official_kwargs,
                "width_edits": len(ref.patches),
                "attributes": ref.attributes,
                "one_image_at_a_time": ref.one_image_at_a_time,
                "training_pass": {
                    "loss_attribute": ref.train_loss_attribute,
                    "attributes": ref.train_attributes,
                    "draws": "torch.randn_like returns zeros",
                }
                if ref.train_loss_attribute
                else None,
            }
        ),
        "variants": json.dumps({name: {"official": o, "body": b} for name, (o, b) in ref.variants.items()}),
        "made_with": json.dumps(
            {
                "script": "scripts/make_reference_fixtures.py",
                "seed": ref.seed,
                "perturbation": PERTURBATION,
                "torch": torch.__version__,
                "weights_dtype": str(ref.weights_dtype).removeprefix("torch."),
            }
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{ref.name}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def parse_checkouts(values: list[str]) -> dict[str, Path]:
    checkouts = {}
    for value in values:
        repo, sep, path = value.partition("=")
        if not sep or not path:
            raise SystemExit(f"--checkout {value!r}: write it as OWNER/NAME=PATH")
        checkouts[repo] = Path(path).expanduser().resolve()
    return checkouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="OWNER/NAME=PATH",
        help="a checkout of an official repository (repeat for each)",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="fixtures to make")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    checkouts = parse_checkouts(args.checkout)
    chosen = [r for r in REFERENCES if not args.only or r.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        known = ", ".join(r.name for r in REFERENCES)
        raise SystemExit(f"--only: unknown fixture name among {args.only} (known: {known})")
    torch.set_num_threads(1)
    made = 0
    with tempfile.TemporaryDirectory() as scratch:
        for ref in chosen:
            if ref.repo not in checkouts:
                print(f"skip {ref.name}: no --checkout {ref.repo}=PATH", file=sys.stderr)
                continue
            path = make(ref, checkouts[ref.repo], args.out, Path(scratch))
            print(
                f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
                f"({path.stat().st_size / 1024:.0f} KiB)"
            )
            made += 1
    return 0 if made else 1


if __name__ == "__main__":
    raise SystemExit(main())
