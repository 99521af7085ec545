"""One restore path for every front end: the options ``restorekit restore`` takes, as a value,
and the loaded model that applies them.

``restorekit restore`` and ``restorekit app`` both build a :class:`RestoreOptions`,
load it once with :func:`load_restorer` and write files with :meth:`Restorer.restore`
(``engine.infer.restore_files``), so a file the app writes is byte for byte the one the
command writes for the same weights and options. A new restore option (an inference
runtime, say) is a field here and a branch in :func:`load_restorer`; both front ends
pass it through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from restorekit.engine.distributed import pick_device
from restorekit.engine.ensemble import SelfEnsemble
from restorekit.engine.infer import inference_amp, restore_files
from restorekit.engine.loading import load_model_for_inference, recipe_for_weights
from restorekit.engine.memory import parse_memory
from restorekit.engine.runtime import RUNTIMES, select_runtime
from restorekit.errors import RecipeError


@dataclass(frozen=True)
class RestoreOptions:
    """What a restore is asked for; the defaults are ``restorekit restore``'s."""

    weights: str | None = None  # run/checkpoint/package folder, Hub id, file; None: the recipe's own weights
    recipe: str | None = None  # default: the run folder's or package's recipe
    overrides: Sequence[str] = field(default_factory=tuple)
    device: str = "auto"
    precision: str = "auto"
    use_ema: bool = True
    verify_weights: bool = True
    self_ensemble: bool = False
    tile: int | str = "auto"  # pixels, 0 for whole images, or auto (from max_memory)
    overlap: int = 32
    max_memory: str | int | None = None  # 8G, 512M or bytes; only with tile auto
    runtime: str = "eager"  # eager, onnxruntime or auto (engine.runtime.RUNTIMES); fixed when loaded

    def checked(self) -> RestoreOptions:
        """These options, or a RecipeError naming the option that cannot work."""
        tile = self.tile
        if tile != "auto" and (not isinstance(tile, int) or tile < 0):
            raise RecipeError(f"--tile must be >= 0 (0: always the whole image), got {tile}")
        if self.overlap < 0 or (tile not in (0, "auto") and self.overlap >= tile):
            raise RecipeError(f"--overlap ({self.overlap}) must be >= 0 and smaller than --tile ({tile})")
        if self.max_memory is not None and tile != "auto":
            raise RecipeError(f"--max-memory sets the tile size; it does not apply with --tile {tile}")
        if self.runtime not in RUNTIMES:
            raise RecipeError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.max_memory is not None:
            parse_memory(self.max_memory)  # a malformed budget is refused before the model loads
        return self

    def with_(self, **changes: object) -> RestoreOptions:
        """A copy with ``changes`` (the app's per-request tile, overlap, ensemble)."""
        return replace(self, **changes).checked()  # type: ignore[arg-type]


@dataclass
class Restorer:
    """A model loaded for :class:`RestoreOptions`, ready to restore files."""

    model: nn.Module  # without the self-ensemble: that is applied per call; it plans the tiles
    device: torch.device
    amp: bool | str
    weights: Path  # the weights file loaded
    notes: list[str]
    runner: nn.Module | None = None  # what restores the tiles (engine.runtime.select_runtime); None: model

    def restore(
        self,
        pairs: list[tuple[Path, Path]],
        options: RestoreOptions,
        *,
        progress: bool = False,
        overwrite: bool = False,
        on_progress: Callable[[Path, int, int], None] | None = None,
    ) -> None:
        """Restore each (input, output) pair with ``options``' tiling, budget and ensemble."""
        options.checked()
        model, runner = self.model, self.runner or self.model
        if options.self_ensemble:
            model, runner = SelfEnsemble(model), SelfEnsemble(runner)
        restore_files(
            model,
            pairs,
            runner=runner,
            tile=options.tile or None,
            overlap=options.overlap,
            device=self.device,
            amp=self.amp,
            max_memory=None if options.max_memory is None else parse_memory(options.max_memory),
            progress=progress,
            overwrite=overwrite,
            on_progress=on_progress,
        )


def load_restorer(options: RestoreOptions) -> Restorer:
    """Build the model of ``options.recipe`` / the weights' recipe and load ``options.weights`` into it."""
    options.checked()
    recipe = recipe_for_weights(options.weights, options.recipe, list(options.overrides))
    device = pick_device(options.device)
    model, weights, notes = load_model_for_inference(
        recipe, options.weights, use_ema=options.use_ema, device=device, verify_weights=options.verify_weights
    )
    runner, runtime = select_runtime(options.runtime, model, recipe["model"], device)
    amp = inference_amp(options.precision, recipe, device)
    return Restorer(model, device, amp, weights, [*notes, runtime], runner=runner)
