"""Export a model to ``torch.export`` (``.pt2``) or ONNX with dynamic height and width, then check it.

After writing, the exported model and the eager one restore the same random images
at two sizes (neither the example's) and the export fails when they differ by more
than the tolerance (max absolute difference on [0, 1] images; ONNX runs in onnxruntime).

What dynamic sizes needed (``torch.export`` refuses a graph whose shapes it cannot
prove for every size in the range):

* **Padding outside the body, as a multiple by construction.** A body pads to a
  multiple of 8 with ``if pad:`` and its down-samplings need even sides, which
  the tracer cannot prove for ``H + (-H % 8)``. :class:`PaddedModel` pads to
  ``8 * ((H + 7) // 8)`` instead (the same reflect padding the body does, but a
  size the tracer knows is a multiple of 8), so the body's own padding is provably
  empty; it crops back with ``index_select`` (a slice's contiguity check would pin
  whether H was already a multiple of 8). The example input is 61 x 77, not a
  multiple of 8, so no size relation of the example is taken for a rule; its batch is
  2, since a size of 1 would be taken as a constant.
* **The DINOv2 guide on a symbolic grid.** The grid ``ceil(H / 8)`` is integer
  arithmetic (``math.ceil`` of a float would bake the example's grid in), the grid
  stays symbolic through the backbone's checks, and the position embeddings are
  resized by float64 matrices built from the symbolic grid
  (:mod:`restorekit.backbones.pos_embed`), where ``F.interpolate`` with Meta's scale
  factor ``(n + 0.1) / 37`` would specialise to the example size.
* **One global guide pass.** How many windows a windowed (or budgeted) guide pass
  runs depends on the size, which one graph for every size cannot hold: the trace
  would be cut to grids that fit one window (296 px at stride 8). The guided model is
  traced with its pass rule set to ``global``, so the exported model equals the eager
  one up to one window and runs one global pass beyond it (a warning says so).

**A fixed size** (``size=(H, W)``, ``restorekit export --tile N``): height and width are
constants of the graph (the batch stays dynamic), so the windowed guidance pass, whose
window count is fixed at that size, is traced exactly as eager runs it. Tiled restores
through ONNX Runtime use such a graph for their tiles (:mod:`restorekit.engine.runtime`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restorekit.contracts import Body, GuidedModel
from restorekit.errors import RestorekitError
from restorekit.io.atomic import atomic_path

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}
EXAMPLE_SIZE = (2, 61, 77)  # batch 2 (1 would be taken as a constant), sides not multiples of the padding
CHECK_SIZES = ((64, 64), (45, 83))
TOLERANCE = 1e-4
MIN_SIDE, MAX_SIDE = 16, 8192


class ExportError(RestorekitError, RuntimeError):
    """The model could not be exported, or the export does not restore as the eager model does."""


@dataclass
class ExportReport:
    path: Path
    format: str
    seconds: float
    differences: dict[tuple[int, int], float] = field(default_factory=dict)  # size -> max |exported - eager|
    tolerance: float = TOLERANCE


class PaddedModel(nn.Module):
    """``model`` with its padding done first, to a size the tracer knows is a multiple (see the module doc)."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model, self.multiple = model, int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        m = self.multiple
        if m > 1:
            pads = (0, m * ((width + m - 1) // m) - width, 0, m * ((height + m - 1) // m) - height)
            x = torch.nn.functional.pad(x, pads, mode="reflect")
        out = self.model(x)
        rows = torch.arange(height, device=out.device)
        cols = torch.arange(width, device=out.device)
        return out.index_select(-2, rows).index_select(-1, cols)


def pad_multiple(model: nn.Module) -> int:
    """The multiple a model pads its input to: that of its bodies (1 when it has none)."""
    return math.lcm(1, *(int(m.pad_multiple) for m in model.modules() if isinstance(m, Body)))


def export_model(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    *,
    program: Any = None,
    check_sizes: Sequence[tuple[int, int]] | None = None,
    tolerance: float = TOLERANCE,
    replace: bool = True,
    size: tuple[int, int] | None = None,
) -> ExportReport:
    """Write ``model`` (eval mode, CPU, float32) to ``path``, load it back and check it against the eager model.

    ``program`` is an earlier :func:`trace` of ``PaddedModel(model, ...)``, to write
    one trace in several formats. The file is written beside ``path`` and renamed
    onto it; ``replace=False``: created only if no file has that name by then. ``size``:
    a graph for that (height, width) only (see the module doc), checked at that size;
    None: any size, checked at CHECK_SIZES.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not tolerance >= 0:
        raise ExportError(f"the tolerance must be a number >= 0, got {tolerance}")
    path = Path(path)
    model = model.eval().to("cpu", torch.float32)
    if check_sizes is None:
        check_sizes = CHECK_SIZES if size is None else (tuple(size),)
    start = time.perf_counter()
    if program is None:
        program = trace(PaddedModel(model, pad_multiple(model)).eval(), size=size)
    with atomic_path(path, replace=replace) as tmp:
        run = _write_onnx(program, tmp) if fmt == "onnx" else _write_program(program, tmp)
    report = ExportReport(path, fmt, time.perf_counter() - start, tolerance=tolerance)
    report.differences = compare(model, run, check_sizes)
    worst = max(report.differences.values())
    if not worst <= tolerance:  # also catches NaN
        raise ExportError(
            f"{path}: the exported model differs from the eager one by {worst:.3g} (max absolute, images in "
            f"[0, 1]) > tolerance {tolerance:g} at sizes {list(report.differences)}; the file is kept for inspection"
        )
    return report


@contextlib.contextmanager
def global_guide_pass(module: nn.Module) -> Iterator[None]:
    """Guided models inside ``module`` run one global guide pass while the block runs
    (see the module doc); their own rule is restored after."""
    guided = [m for m in module.modules() if isinstance(m, GuidedModel) and m.guide_pass.rule != "global"]
    saved = [m.guide_pass for m in guided]
    for m in guided:
        window = m.guide_pass.window
        log.warning(
            "%s: exported with one global guide pass instead of %r (a graph for every size cannot "
            "hold a number of windows that depends on the size): the same as the eager model while "
            "the token grid fits %d x %d, one global pass beyond",
            type(m).__name__,
            m.guide_pass.rule,
            window,
            window,
        )
        m.guide_pass = dataclasses.replace(m.guide_pass, rule="global")
    try:
        yield
    finally:
        for m, rule in zip(guided, saved):
            m.guide_pass = rule


def trace(module: nn.Module, size: tuple[int, int] | None = None) -> Any:
    """``torch.export`` with a dynamic batch, and a dynamic height and width (sides
    MIN_SIDE..MAX_SIDE, one global guidance pass) or, with ``size``, that fixed size
    (the model's own guidance pass, windows included)."""
    batch, height, width = EXAMPLE_SIZE
    dims = {0: torch.export.Dim.DYNAMIC(min=1, max=1024)}
    if size is None:
        dims.update({axis: torch.export.Dim.DYNAMIC(min=MIN_SIDE, max=MAX_SIDE) for axis in (2, 3)})
        guide_rule = global_guide_pass(module)
    else:
        height, width = check_size(size)
        guide_rule = contextlib.nullcontext()
    example = torch.rand(batch, 3, height, width)
    try:
        with torch.no_grad(), warnings.catch_warnings(), guide_rule:
            warnings.filterwarnings("ignore", message=".*was assigned during export.*")  # MSF's last_gate
            return torch.export.export(module, (example,), dynamic_shapes={"x": dims}, strict=False)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: say which model and why
        what = "dynamic height and width" if size is None else f"size {height}x{width}"
        raise ExportError(
            f"torch.export could not trace {type(module.model).__name__} with {what}: "
            f"{type(exc).__name__}: {str(exc)[:2000]}"
        ) from exc


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a fixed-size export, each side MIN_SIDE..MAX_SIDE."""
    height, width = (int(side) for side in size)
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ExportError(f"an export size must be {MIN_SIDE}..{MAX_SIDE} pixels a side, got {height}x{width}")
    return height, width


def _write_program(program: Any, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return lambda x: loaded(x)


def _write_onnx(program: Any, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    try:  # why: the optional extra [export], needed by --format onnx only
        import onnxruntime
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime: pip install 'restorekit[export]' ({exc})"
        ) from exc
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, dynamo=True)
            onnx_program.save(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            f"torch.onnx could not convert the traced model: {type(exc).__name__}: {str(exc)[:2000]}"
        ) from exc
    log.debug("torch.onnx: %s", chatter.getvalue().strip())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


@torch.no_grad()
def compare(
    model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], sizes: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], float]:
    """Max absolute difference between the exported and the eager model, per size."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for size in sizes:
        x = torch.rand(1, 3, *size, generator=generator)
        out[tuple(size)] = float((run(x).float() - model(x).float()).abs().max())
    return out
