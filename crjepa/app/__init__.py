"""crjepa.app: look at retrieval results in the browser (`crjepa app ARCHIVE`), locally or as a Hugging Face Space.

    crjepa.app.uploads  query files a person uploads: .npy, GeoTIFF, PNG, a BigEarthNet patch folder as a zip
    crjepa.app.engine   the search behind the page, without Gradio: filters, swappable search backends, errors
                        for people, the archive's card facts and scores
    crjepa.app.render   result rows -> the HTML tiles of the page (pictures from crjepa.eval.visualize)
    crjepa.app.ui       the Gradio page (``build_app``) and ``serve`` (the `crjepa app` command, a Space's app.py)
    crjepa.app.space    ``export_space``: a Space folder (app.py, requirements.txt, README.md with Space metadata)

Gradio is an optional dependency (``pip install "crjepa[app]"``); only crjepa.app.ui imports it.
"""

from crjepa.errors import CRJepaError

INSTALL_HINT = 'pip install "crjepa[app]"'
"""The command that installs what the app needs (Gradio), named by every message about it."""


class AppDependencyError(CRJepaError, ImportError):
    """Gradio is missing: the one line says how to install it."""


def require_gradio() -> None:
    """Raise AppDependencyError naming the install command when Gradio cannot be imported. Gradio's usage
    analytics are off unless GRADIO_ANALYTICS_ENABLED says otherwise (set before Gradio is first imported)."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401  (importable: the app can run)
    except ImportError as err:
        raise AppDependencyError(f"the app needs Gradio, which is not installed ({err}): {INSTALL_HINT}") from None


def gradio_version() -> str:
    """The installed Gradio's version, found without importing it (a Space export needs only the number);
    AppDependencyError naming the install command when Gradio is not there."""
    import importlib.metadata
    import importlib.util

    try:
        found = importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise AppDependencyError(f"the app needs Gradio, which is not installed: {INSTALL_HINT}")
    return importlib.metadata.version("gradio")
