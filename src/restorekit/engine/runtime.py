"""Run a model through ONNX Runtime behind the same tiler and self-ensemble as eager.

:class:`OnnxRuntimeModel` is a module whose forward runs an exported graph in ONNX
Runtime: :func:`restorekit.engine.infer.restore_tensor` tiles and blends, and
:class:`~restorekit.engine.ensemble.SelfEnsemble` flips and rotates around it exactly
as around the eager model (one code path, two backends).

Which graph serves a call of ``H x W``:

* the **any-size** export (dynamic height and width), wherever it equals eager: always,
  unless a guided model's pass rule is windowed (or budgeted) and its token grid at that
  size exceeds one window, where the any-size graph would run one global pass
  (:mod:`restorekit.engine.export`);
* there, an export for that **fixed size**, which traces the windowed pass exactly. A
  tiled restore calls the model on tiles of one size, so it needs one such export.

Each export is checked against eager when written (max absolute difference <= 1e-4)
and cached in :func:`cache_dir`, keyed by the weights' hash, the model spec, the
versions of restorekit, torch, onnx and onnxruntime, and the size; an entry is written
as a folder renamed into place (complete or absent), and one whose file does not match
its recorded hash, or whose record is stale, is rebuilt.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from restorekit.backbones.guide import fits
from restorekit.contracts import GuidedModel
from restorekit.engine.export import CHECK_SIZES, MIN_SIDE, ExportError, export_model, pad_multiple
from restorekit.errors import RestorekitError
from restorekit.io.atomic import publish_dir, write_text
from restorekit.io.weight_files import file_sha256
from restorekit.version import __version__

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "onnxruntime", "auto")
CACHE_ENV = "RESTOREKIT_CACHE"
CACHE_FORMAT = 1  # bump when an entry's layout or the export changes meaning
MODEL_FILE, ENTRY_FILE = "model.onnx", "entry.json"
SMALL_CHECK_SIZES = ((31, 23), (MIN_SIDE, 21))  # any-size checks when a small guide window excludes CHECK_SIZES
FIXED_SIZES = 4  # fixed-size exports one model makes at most (each takes as long as a few restores)
Size = tuple[int, int] | None  # (height, width) of a fixed-size export; None: any size


class RuntimeUnavailableError(RestorekitError, RuntimeError):
    """``--runtime onnxruntime`` asked for where it cannot run; the message says why."""


def cache_dir() -> Path:
    """The exports' folder: ``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``,
    else ``~/.cache/restorekit``; exports go to its ``onnx/`` subfolder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "restorekit"


def versions() -> dict[str, str | None]:
    """The versions an export depends on (part of its cache key)."""
    found: dict[str, str | None] = {"restorekit": __version__, "torch": torch.__version__}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's state dict: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def any_size_export_exact(model: nn.Module, height: int, width: int) -> bool:
    """Whether the any-size export restores ``height x width`` as eager does: false only
    where a guided model's rule is not global and its token grid exceeds one window."""
    multiple = pad_multiple(model)
    padded_h, padded_w = (multiple * -(-side // multiple) for side in (height, width))
    for module in model.modules():
        if isinstance(module, GuidedModel) and module.guide_pass.rule != "global":
            guide = module.guide_pass
            prepared = guide.prepare(torch.empty(1, 1, padded_h, padded_w, device="meta"))
            if not fits(guide.full_grid(module.backbone, *prepared.shape[-2:]), guide.window):
                return False
    return True


class ExportCache:
    """Exported graphs on disk, one folder per key (module doc)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "onnx"

    @staticmethod
    def digest(key: Mapping[str, Any]) -> str:
        text = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def entry(self, key: Mapping[str, Any]) -> Path:
        return self.root / self.digest(key)

    def problem(self, key: Mapping[str, Any]) -> str | None:
        """Why the entry of ``key`` cannot be used (None: it can); absent counts as a problem."""
        folder = self.entry(key)
        if not folder.is_dir():
            return "not cached yet"
        try:
            record = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"its record {folder / ENTRY_FILE} is unreadable ({type(exc).__name__})"
        if record.get("key") != json.loads(json.dumps(key, default=str)):
            return "its record is stale (another key)"
        model = folder / MODEL_FILE
        if not model.is_file() or model.stat().st_size != record.get("bytes"):
            return f"{model} is missing or truncated"
        if file_sha256(model) != record.get("sha256"):
            return f"{model} does not match its recorded sha256"
        return None

    def get(self, key: Mapping[str, Any], model: nn.Module, size: Size,
            check_sizes: Sequence[tuple[int, int]] | None = None) -> Path:  # fmt: skip
        """The checked graph of ``key``: the cached one, else exported from ``model`` now."""
        problem = self.problem(key)
        if problem is None:
            return self.entry(key) / MODEL_FILE
        if problem != "not cached yet":
            logger.warning("ONNX cache entry %s: %s; rebuilding it", self.entry(key), problem)
        return self.build(key, model, size, check_sizes)

    def build(self, key: Mapping[str, Any], model: nn.Module, size: Size,
              check_sizes: Sequence[tuple[int, int]] | None = None) -> Path:  # fmt: skip
        """Export ``model`` into a scratch folder, check it against eager (at ``check_sizes``,
        default: the export's own), and rename the folder into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.entry(key)
        scratch = self.root / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            what = "any size" if size is None else f"{size[0]}x{size[1]}"
            logger.info("exporting the model to ONNX (%s) into %s", what, target)
            report = export_model(model, scratch / MODEL_FILE, "onnx", size=size, check_sizes=check_sizes)
            record = {
                "key": key,
                "bytes": (scratch / MODEL_FILE).stat().st_size,
                "sha256": file_sha256(scratch / MODEL_FILE),
                "max_difference": {f"{h}x{w}": d for (h, w), d in report.differences.items()},
            }
            write_text(scratch / ENTRY_FILE, json.dumps(record, indent=1, default=str) + "\n")
            publish_dir(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target / MODEL_FILE


def ort() -> Any:
    """The ``onnxruntime`` module (the one import of it: restorekit[export] is optional)."""
    import onnxruntime  # optional extra: restorekit[export]

    return onnxruntime


def session_options() -> Any:
    """ONNX Runtime options: as many intra-op threads as torch uses (``torch.get_num_threads()``,
    which ``train.threads`` and the tests set), one inter-op thread, quiet logs."""
    options = ort().SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


class OrtSession:
    """One ONNX Runtime session over a graph: torch tensors in and out, on the CPU or CUDA."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.device = device
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort().InferenceSession(str(path), session_options(), providers=providers)
        self.input, self.output = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return self._on_cuda(x)
        out = self.session.run([self.output], {self.input: x.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(out[0]).to(x.device)

    def _on_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """Bound to torch's CUDA buffers: no copy through the host."""
        x = x.detach().to(self.device, torch.float32).contiguous()
        out = torch.empty_like(x)  # a restorer's output has its input's shape
        index = x.device.index or 0
        torch.cuda.current_stream(x.device).synchronize()
        binding = self.session.io_binding()
        binding.bind_input(self.input, "cuda", index, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


class OnnxRuntimeModel(nn.Module):
    """``model`` run by ONNX Runtime (module doc); ``eager_fallback``: a size whose export
    fails runs eager instead, with a warning (``--runtime auto``), rather than raising.

    Whole images of many sizes beyond one guide window (an evaluation set) would each need
    an export of their own: past ``fixed_sizes`` of them, further sizes run eager, with a
    warning (a tiled restore needs one, or two with a rotating self-ensemble).
    """

    def __init__(self, model: nn.Module, spec: Mapping[str, Any], *, device: torch.device | str = "cpu",
                 cache: ExportCache | None = None, eager_fallback: bool = False,
                 fixed_sizes: int = FIXED_SIZES) -> None:  # fmt: skip
        super().__init__()
        self.model = model.eval()  # exported, and the reference each export is checked against
        self.device = torch.device(device)
        self.cache = cache or ExportCache()
        self.eager_fallback, self.fixed_sizes = eager_fallback, int(fixed_sizes)
        self.base_key = {
            "format": CACHE_FORMAT,
            "weights": weights_digest(model),
            "model": json.loads(json.dumps(dict(spec), sort_keys=True, default=str)),
            "versions": versions(),
        }
        self._sessions: dict[Size, OrtSession | None] = {}  # None: that size runs eager

    def serving_size(self, height: int, width: int) -> Size:
        """The export that serves ``height x width``: None (any size) or that size."""
        return None if any_size_export_exact(self.model, height, width) else (height, width)

    def check_sizes(self, size: Size) -> list[tuple[int, int]]:
        """Where an export is checked against eager: its size, or for the any-size graph two
        sizes it serves (export's CHECK_SIZES where the guide grid fits one window there)."""
        if size is not None:
            return [size]
        candidates = [*CHECK_SIZES, *SMALL_CHECK_SIZES]
        served = [s for s in candidates if any_size_export_exact(self.model, *s)][:2]
        if not served:
            raise ExportError(
                f"the any-size graph serves none of the sizes {candidates} (the guide window is too small)"
            )
        return served

    def key(self, size: Size) -> dict[str, Any]:
        return {**self.base_key, "size": None if size is None else list(size)}

    def prepare(self, size: Size = None) -> OrtSession | None:
        """The session of the export for ``size`` (exported and cached on first use)."""
        if size not in self._sessions:
            if size is not None and sum(1 for s in self._sessions if s is not None) >= self.fixed_sizes:
                logger.warning(
                    "%dx%d needs an export of its own (its guide grid exceeds one window) and %d sizes "
                    "were exported already: running it eager",
                    *size,
                    self.fixed_sizes,
                )
                self._sessions[size] = None
                return None
            try:
                path = self.cache.get(self.key(size), self._exportable(), size, self.check_sizes(size))
                self._sessions[size] = OrtSession(path, self.device)
            except ExportError as exc:
                if not self.eager_fallback:
                    raise
                what = "any size" if size is None else f"{size[0]}x{size[1]}"
                logger.warning("the model does not export for %s (%s): running it eager there", what, exc)
                self._sessions[size] = None
        return self._sessions[size]

    def _exportable(self) -> nn.Module:
        """The model on the CPU in float32, as export needs it (a copy when it lives elsewhere)."""
        first = next(iter(self.model.parameters()), None)
        if first is None or (first.device.type == "cpu" and first.dtype == torch.float32):
            return self.model
        return copy.deepcopy(self.model).to("cpu", torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.prepare(self.serving_size(x.shape[-2], x.shape[-1]))
        return self.model(x) if session is None else session(x)


def onnxruntime_available() -> bool:
    """Whether restorekit[export] is installed: onnxruntime, and onnxscript for the exporter."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))


def select_runtime(name: str, model: nn.Module, spec: Mapping[str, Any], device: torch.device,
                   cache: ExportCache | None = None) -> tuple[nn.Module, str]:  # fmt: skip
    """(what restores: ``model`` or an :class:`OnnxRuntimeModel` around it, a line saying which
    runtime runs and why). ``auto``: ONNX Runtime on the CPU when it is installed and the model
    exports (the any-size graph is exported, or found cached, now), else eager."""
    if name not in RUNTIMES:
        raise RuntimeUnavailableError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    if name == "eager":
        return model, "runtime: eager (PyTorch)"
    if not onnxruntime_available():
        if name == "onnxruntime":
            raise RuntimeUnavailableError(
                "--runtime onnxruntime needs onnx, onnxscript and onnxruntime: pip install 'restorekit[export]'"
            )
        return model, "runtime: eager (auto: onnxruntime is not installed)"
    if name == "auto" and device.type != "cpu":
        return model, f"runtime: eager (auto: ONNX Runtime is picked on the CPU only, the device is {device})"
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort().get_available_providers():
            raise RuntimeUnavailableError(
                "--runtime onnxruntime on CUDA needs onnxruntime-gpu (its CUDAExecutionProvider); or pass --device cpu"
            )
    restorer = OnnxRuntimeModel(model, spec, device=device, cache=cache)
    try:
        restorer.prepare(None)
    except ExportError as exc:
        if name == "onnxruntime":
            raise
        return model, f"runtime: eager (auto: the model does not export: {str(exc)[:300]})"
    restorer.eager_fallback = name == "auto"
    provider = "CUDA" if device.type == "cuda" else f"CPU, {max(1, torch.get_num_threads())} threads"
    why = "auto: installed and the model exports; " if name == "auto" else ""
    return restorer, f"runtime: onnxruntime ({why}{provider}; exports cached in {restorer.cache.root})"
