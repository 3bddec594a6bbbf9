"""The Gradio page of `crjepa app` and ``serve``, which the command and an exported Space's app.py both call.

Layout: the query (by archive id, with search-as-you-type over the ids, or by an uploaded image when the model is
loaded), direction / target, k and filters on the left; the result rows on the right (`crjepa.app.render`); the
archive's card facts and per-direction scores below. Every handler turns a bad input into a message in the page
(`#crjepa-message`); an unexpected error is logged on the server and reported in one line, never as a traceback.
"""

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crjepa.app import require_gradio
from crjepa.app.engine import ALL, AUTO, MAX_K, AppError, Explorer, Filter, load_explorer
from crjepa.app.render import CSS, empty_html, results_html, scores_svg
from crjepa.app.uploads import UPLOAD_SUFFIXES
from crjepa.errors import CRJepaError

logger = logging.getLogger(__name__)

NO_FIELD = "(none)"
ID_CHOICES_LIMIT = 20_000
"""Archives with at most this many ids send them all to the page, whose id list filters them as the person types;
larger ones get a search box whose text the server matches (the first SUGGESTIONS ids, the first one picked)."""
SUGGESTIONS = 100
DEFAULT_K = 5  # the paper's F1@5
ERRORS = (CRJepaError, FileNotFoundError)
"""What a search turns into a message in the page: problems a person can fix (`crjepa.errors.CRJepaError`: a bad
query, filter, upload or archive) and a missing file; anything else is a bug, logged with its traceback."""


def _warning(text: str) -> str:
    """A problem, as the page's message shows it (one line, bold, a warning sign the browser test looks for)."""
    return f"**⚠ {' '.join(str(text).split())}**"


def _run(search: Callable[[], list[Any]], where: Filter) -> tuple[str, str]:
    """(message, results HTML) of one search; problems become a message, never an exception in the page."""
    try:
        rows = search()
    except ERRORS as err:
        return _warning(str(err)), empty_html("No results: see the message above.")
    except Exception as err:  # a bug: keep the page alive, the traceback goes to the server log
        logger.exception("search failed")
        return (
            _warning(
                f"The search failed on the server ({type(err).__name__}: {err}); the details are in the server log"
            ),
            empty_html("No results."),
        )
    counts = ", ".join(f"{row.direction}: {len(row.results)}" for row in rows)
    note = f" · filter: {where.describe()}" if where else ""
    return f"Results ({counts}){note}", results_html(rows)


def _filter(labels: list[str] | None, field: str | None, value: str | None) -> Filter:
    return Filter(tuple(labels or ()), None if field in (None, "", NO_FIELD) else field, value or "")


def build_app(explorer: Explorer, id_choices_limit: int | None = None) -> Any:
    """The page for one explorer, as a ``gr.Blocks`` (launch it with ``serve`` or ``.launch(css=CSS)``)."""
    import gradio as gr

    archive = explorer.archive
    source = dict(archive.info.get("source") or {})
    title = f"CR-JEPA retrieval · {source.get('dataset') or archive.path.name}"
    first_id = explorer.matching_ids("", limit=1)[0]
    k_max = max(1, min(MAX_K, len(archive) - 1))
    every_id = len(archive) <= (ID_CHOICES_LIMIT if id_choices_limit is None else id_choices_limit)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n{len(archive):,} items · sensors {', '.join(archive.sensors)} · "
            f"{len(archive.class_names)} classes · frames: green = shares a label with the query, red = "
            "does not"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Tabs():
                    with gr.Tab("By archive id", id="by-id"):
                        id_search = (
                            None
                            if every_id
                            else gr.Textbox(
                                label="Search the ids",
                                placeholder=f"part of an id ({len(archive):,} ids)",
                                elem_id="crjepa-id-search",
                            )
                        )
                        query_id = gr.Dropdown(
                            choices=explorer.matching_ids("", limit=ID_CHOICES_LIMIT if every_id else SUGGESTIONS),
                            value=first_id,
                            label="Archive id",
                            allow_custom_value=True,
                            filterable=True,
                            info="type to search the ids" if every_id else f"the first {SUGGESTIONS} matches",
                            elem_id="crjepa-id",
                        )
                        direction = gr.Dropdown(
                            choices=[("every direction", ALL)]
                            + [(d.upper().replace("->", " → "), d) for d in explorer.directions],
                            value=ALL,
                            label="Direction",
                            elem_id="crjepa-direction",
                        )
                        by_id = gr.Button("Search", variant="primary", elem_id="crjepa-search-id")
                    with gr.Tab("By image", id="by-image"):
                        if explorer.model is not None:
                            upload = gr.File(
                                label="Query image", file_types=list(UPLOAD_SUFFIXES), elem_id="crjepa-upload"
                            )
                            gr.Markdown(".npy (C, H, W), GeoTIFF, PNG, or a BigEarthNet patch folder as .zip")
                            sensor = gr.Dropdown(
                                choices=[("tell from the bands", AUTO)]
                                + [(s, s) for s in explorer.model.config.sensors],
                                value=AUTO,
                                label="Its sensor",
                            )
                            target = gr.Dropdown(
                                choices=[("every sensor", ALL)] + [(s, s) for s in archive.sensors],
                                value=ALL,
                                label="Search in",
                            )
                            by_image = gr.Button("Search by image", variant="primary", elem_id="crjepa-search-image")
                        else:
                            gr.Markdown(
                                "Searching by image needs the model that embedded the archive: start the "
                                "app with `--model MODEL`.",
                                elem_id="crjepa-no-model",
                            )
                k = gr.Slider(
                    1, k_max, value=min(DEFAULT_K, k_max), step=1, label="Results per direction (k)", elem_id="crjepa-k"
                )
                with gr.Accordion("Filters", open=False):
                    labels = gr.Dropdown(
                        choices=archive.class_names,
                        value=[],
                        multiselect=True,
                        label="Labels (results have any of them)",
                        elem_id="crjepa-labels",
                    )
                    fields = list(archive.metadata)
                    field = gr.Dropdown(
                        choices=[NO_FIELD, *fields], value=NO_FIELD, label="Metadata field", visible=bool(fields)
                    )
                    value = gr.Textbox(
                        label="Value",
                        placeholder="a value; a, b (any); low..high (a range)",
                        visible=bool(fields),
                        elem_id="crjepa-value",
                    )
            with gr.Column(scale=4):
                message = gr.Markdown("", elem_id="crjepa-message")
                results = gr.HTML(empty_html("Pick an id and press Search."), elem_id="crjepa-results")
        with gr.Accordion("About this archive", open=True):
            with gr.Row():
                gr.Markdown(
                    "\n".join(f"- **{what}**: {text}" for what, text in explorer.facts()), elem_id="crjepa-facts"
                )
                if explorer.scores:
                    gr.HTML(scores_svg(explorer.scores), elem_id="crjepa-scores")

        def suggest(text: str) -> Any:
            matches = explorer.matching_ids(text, limit=SUGGESTIONS)
            return gr.Dropdown(choices=matches, value=matches[0] if matches else None)

        def search_id(
            archive_id: str, chosen: str, k_value: float, chosen_labels: list[str], field_name: str, field_value: str
        ) -> tuple[str, str]:
            where = _filter(chosen_labels, field_name, field_value)
            return _run(lambda: explorer.search_id(archive_id, chosen, k_value, where), where)

        if id_search is not None:  # the server's matches of the latest text (read when the event runs, so a
            # fast typist's last keystroke wins; the dropdown's own key-up data would be the first deferred one)
            id_search.input(suggest, id_search, query_id, show_progress="hidden", trigger_mode="always_last")
        id_inputs = [query_id, direction, k, labels, field, value]
        by_id.click(search_id, id_inputs, [message, results])
        query_id.select(search_id, id_inputs, [message, results])
        demo.load(search_id, id_inputs, [message, results])

        if explorer.model is not None:

            def search_image(
                file: Any,
                chosen_sensor: str,
                chosen_target: str,
                k_value: float,
                chosen_labels: list[str],
                field_name: str,
                field_value: str,
            ) -> tuple[str, str]:
                where = _filter(chosen_labels, field_name, field_value)
                path = file if isinstance(file, (str, Path)) or file is None else getattr(file, "name", None)
                name = _upload_name(path)
                return _run(
                    lambda: explorer.search_image(path, chosen_sensor, chosen_target, k_value, where, name=name), where
                )

            by_image.click(search_image, [upload, sensor, target, k, labels, field, value], [message, results])
    return demo


def _upload_name(path: str | Path | None) -> str | None:
    """The name a person gave the file (Gradio keeps it as the last component of its cached copy)."""
    return Path(path).name if path else None


THEME_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]


def serve(
    archive: str | Path,
    model: str | None = None,
    data: str | None = None,
    host: str | None = None,
    port: int | None = None,
    backend: Any = None,
    block: bool = True,
    say: Callable[[str], None] | None = None,
) -> Any:
    """Open the archive (and model, images, scores) and serve the page; returns the Blocks (with ``block=False``
    the server runs in the background: ``.close()`` it). ``host`` / ``port`` None: Gradio's defaults and its
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT variables (what a Space sets). The entry point of a Space's app.py:
    library messages are shown as ``warning: ...`` lines on stderr (`crjepa.utils.logs.show_messages`)."""
    from crjepa.utils.logs import show_messages

    show_messages()
    require_gradio()
    import gradio as gr

    explorer = load_explorer(archive, model=model, data=data, backend=backend)
    demo = build_app(explorer)
    theme = gr.themes.Soft(primary_hue="emerald", font=THEME_FONTS, font_mono=["ui-monospace", "monospace"])
    try:
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            theme=theme,
            css=CSS,
            footer_links=[],
            show_error=False,
        )
    except OSError as err:  # the port is taken, or the address is not this machine's
        where = f"{host or os.environ.get('GRADIO_SERVER_NAME') or '127.0.0.1'}:{port or 'the default port'}"
        raise AppError(
            f"cannot serve on {where} ({str(err).splitlines()[0]}); choose another --port or --host"
        ) from None
    (say or (lambda text: print(text, flush=True)))(f"crjepa app: serving {archive} at {url}")
    if block:
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            print("crjepa app: stopped", file=sys.stderr)
        finally:
            demo.close()
    return demo


__all__ = ["build_app", "serve"]
