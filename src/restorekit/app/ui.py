"""The Gradio page of ``restorekit app``: models, uploads, restore options, a before/after view, downloads.

Offline by construction: analytics off (``analytics_enabled=False`` here, and
``restorekit app`` sets ``GRADIO_ANALYTICS_ENABLED=False`` before Gradio is imported,
which also stops its version check), no share link unless asked, system fonts (Gradio's
default theme would fetch Google Fonts), served on 127.0.0.1 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from restorekit.app.session import Restored, Session, scores_table
from restorekit.engine.restoring import RestoreOptions
from restorekit.errors import RestorekitError

TITLE = "restorekit: restore images"
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
SLIDER = getattr(gr, "ImageSlider", None)  # Gradio 5.x and later; a side-by-side pair otherwise


def _view_label(result: Restored) -> str:
    return f"{result.source.name} - {result.model}"


def _tile(text: str) -> int | str:
    text = (text or "auto").strip()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise gr.Error(f"tile: a number of pixels or auto, got {text!r}") from None


def build_app(session: Session, defaults: RestoreOptions) -> gr.Blocks:
    """The page; each request restores through ``session`` (the restore command's code path)."""
    labels = list(session.models)

    def restore(
        files: Sequence[str] | None,
        chosen: Sequence[str],
        tile: str,
        overlap: float,
        max_memory: str,
        self_ensemble: bool,
        target: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
    ) -> tuple[Any, ...]:
        options = {"tile": _tile(tile), "overlap": int(overlap), "self_ensemble": bool(self_ensemble),
                   "max_memory": (max_memory or "").strip() or None}  # fmt: skip
        try:
            results = session.restore(
                list(files or []),
                list(chosen or []),
                options,
                target=target,
                on_progress=lambda fraction, what: progress(fraction, desc=f"restoring {what}"),
            )
        except (RestorekitError, OSError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        views = {_view_label(r): r for r in results}
        first = results[0]
        return (
            _pair(first),
            gr.update(choices=list(views), value=_view_label(first), visible=len(views) > 1),
            [str(r.output) for r in results],
            scores_table(results),
            {k: (str(r.source), str(r.output)) for k, r in views.items()},
        )

    def show(view: str, views: dict[str, tuple[str, str]]) -> Any:
        pair = (views or {}).get(view)
        return pair if pair is not None else gr.update()

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nEach file is restored by the code `restorekit restore` runs, with the same options.")
        with gr.Row():
            with gr.Column():
                models = gr.CheckboxGroup(labels, value=labels[:1], label="models (several to compare)",
                                          elem_id="models")  # fmt: skip
                files = gr.File(file_count="multiple", label="images to restore", elem_id="inputs")
                target = gr.File(label="clean target (optional): PSNR/SSIM", elem_id="target")
                with gr.Row():
                    tile = gr.Textbox(str(defaults.tile), label="tile (pixels or auto)", elem_id="tile")
                    overlap = gr.Number(defaults.overlap, label="overlap", precision=0, elem_id="overlap")
                    budget = gr.Textbox(str(defaults.max_memory or ""), label="memory budget (8G; empty: default)",
                                        elem_id="max-memory")  # fmt: skip
                ensemble = gr.Checkbox(defaults.self_ensemble, label="x8 self-ensemble (8x slower)", elem_id="ensemble")
                run = gr.Button("Restore", variant="primary", elem_id="restore")
                scores = gr.Markdown(elem_id="scores")
            with gr.Column():
                if SLIDER is not None:
                    compare = SLIDER(label="before / after", type="filepath", elem_id="compare")
                else:
                    compare = gr.Gallery(label="before / after", columns=2, elem_id="compare")
                view = gr.Dropdown([], label="show", visible=False, elem_id="view")
                downloads = gr.File(label="restored files", file_count="multiple", elem_id="downloads")
        views = gr.State({})
        run.click(
            restore,
            inputs=[files, models, tile, overlap, budget, ensemble, target],
            outputs=[compare, view, downloads, scores, views],
        )
        view.change(show, inputs=[view, views], outputs=[compare])
    return demo


def _pair(result: Restored) -> Any:
    return (str(result.source), str(result.output)) if SLIDER is not None else [str(result.source), str(result.output)]


def launch(
    demo: gr.Blocks, *, host: str, port: int | None, share: bool, workdir: Path, block: bool = True
) -> tuple[Any, str]:
    """Serve ``demo`` (``block=False``: return at once, for tests); returns (the app, its local URL)."""
    app, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        allowed_paths=[str(workdir)],
        theme=THEME,
        ssr_mode=False,
        quiet=not block,  # the command prints the address; a test does not
        show_error=True,
    )
    return app, url
