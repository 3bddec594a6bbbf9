"""`crjepa app --export-space DIR`: a Hugging Face Space folder that serves the same app (`crjepa.app.ui.serve`)
for a Hub embeddings archive, a Hub model and, for the pictures, a Hub data set.

The folder holds ``app.py`` (reads CRJEPA_ARCHIVE / CRJEPA_MODEL / CRJEPA_DATA, defaulting to what was exported,
and calls ``serve``), ``requirements.txt`` and ``README.md`` whose YAML header is the Space's metadata (sdk gradio
at the installed version, app_file, the model and data sets it uses). crjepa is not on PyPI, so by default the
code of this installation (crjepa, modeling_crjepa and the data builders) is copied into the folder and
requirements.txt lists its dependencies; ``requirement`` names a pip requirement for crjepa instead (e.g. a git URL).
The folder is written atomically (`crjepa.utils.atomic.atomic_dir`); it is pushed with `hf upload USER/SPACE DIR
--repo-type space`.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

from crjepa.app import INSTALL_HINT, gradio_version
from crjepa.utils.atomic import atomic_dir

OUTPUT_KIND = "space"
VENDORED = ("crjepa", "modeling_crjepa", "datasets_scripts")
"""Packages copied into a Space folder: the app, the model (also loaded without remote code) and the builders
(the 'synthetic' data source)."""
RESOURCES = ("configs", "model_cards")
"""crjepa's packaged files (card templates, run configurations), copied as an installed wheel holds them."""

APP_TEMPLATE = '''"""A Hugging Face Space: the CR-JEPA search app (`crjepa app`) over an embeddings archive.

Written by `crjepa app --export-space`. What it serves can be changed without editing this file, with the Space's
variables (Settings -> Variables and secrets): CRJEPA_ARCHIVE (a Hub dataset id or folder of an embeddings archive),
CRJEPA_MODEL (the model that embedded it: enables search by image), CRJEPA_DATA (where the pictures come from: a Hub
dataset id of the exported images, 'recorded', 'synthetic'; empty: no pictures).
"""

import os

from crjepa.app.ui import serve

ARCHIVE = os.environ.get("CRJEPA_ARCHIVE") or {archive!r}
MODEL = os.environ.get("CRJEPA_MODEL", {model!r}) or None
DATA = os.environ.get("CRJEPA_DATA", {data!r}) or None

if __name__ == "__main__":
    serve(ARCHIVE, model=MODEL, data=DATA)  # host and port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set by Spaces)
'''

BODY = """
# CR-JEPA retrieval: {title}

Cross-modal remote-sensing retrieval with CR-JEPA (Hossain et al., arXiv 2606.00706). Pick an archive item (type to
search its ids) or upload an image (.npy, GeoTIFF, PNG, or a BigEarthNet patch folder as .zip) and see its top-k
in every direction, framed green when they share a label with the query.

- embeddings archive: `{archive}`
- model: `{model}`
- pictures from: `{data}`

Served by `crjepa.app` (exported with `crjepa app --export-space`); change what it serves with the Space variables
CRJEPA_ARCHIVE, CRJEPA_MODEL and CRJEPA_DATA.
"""

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _hub_id(value: str | None) -> str | None:
    """``value`` when it names a Hub repo (user/name) rather than a local folder."""
    return value if value and _HUB_ID.fullmatch(value) and not Path(value).expanduser().exists() else None


def requirements(requirement: str | None = None) -> list[str]:
    """The lines of requirements.txt: crjepa's own dependencies and its app extra (its code is copied into the
    folder), or ``requirement`` (how to install crjepa[app]) alone."""
    if requirement:
        return [requirement]
    try:
        declared = importlib.metadata.requires("crjepa") or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "crjepa is not installed (pip install -e .), so its dependencies are unknown; pass --requirement"
        ) from None
    lines = []
    for line in declared:
        spec, _, marker = line.partition(";")
        marker = marker.replace(" ", "")
        if not marker or marker in ('extra=="app"', "extra=='app'"):
            lines.append(spec.strip())
    return lines


def export_space(
    folder: str | Path,
    archive: str,
    model: str | None = None,
    data: str | None = None,
    requirement: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the Space folder (see the module doc); returns its path. ``archive`` / ``model`` / ``data`` are what
    the app serves: Hub ids for a Space on the Hub (a local path works only where that path exists)."""
    from huggingface_hub import SpaceCard, SpaceCardData

    sdk_version = gradio_version()  # the Space runs the Gradio this app was tested with

    folder = Path(folder)
    title = archive.rstrip("/").rsplit("/", 1)[-1]
    card_data = SpaceCardData(
        title=f"CR-JEPA search: {title}"[:60],
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        license="apache-2.0",
        models=[m for m in [_hub_id(model)] if m] or None,
        datasets=[d for d in dict.fromkeys([_hub_id(archive), _hub_id(data)]) if d] or None,
        tags=["crjepa", "remote-sensing", "image-retrieval"],
        emoji="🛰️",
        colorFrom="green",
        colorTo="blue",
        pinned=False,
        short_description="Cross-modal remote-sensing retrieval with CR-JEPA",
    )
    card = SpaceCard(
        f"---\n{card_data.to_yaml()}\n---\n"
        + BODY.format(title=title, archive=archive, model=model or "none (search by id only)", data=data or "none")
    )
    with atomic_dir(folder, kind=OUTPUT_KIND, overwrite=overwrite) as tmp:
        (tmp / "app.py").write_text(APP_TEMPLATE.format(archive=str(archive), model=model or "", data=data or ""))
        (tmp / "requirements.txt").write_text("\n".join(requirements(requirement)) + "\n")
        card.save(tmp / "README.md")
        if not requirement:
            from crjepa.utils.resources import resource_dir

            skip = shutil.ignore_patterns("__pycache__", "*.pyc")
            for package in VENDORED:
                shutil.copytree(_package_folder(package), tmp / package, ignore=skip)
            for kind in RESOURCES:  # where an installed wheel keeps them (crjepa.utils.resources)
                shutil.copytree(resource_dir(kind), tmp / "crjepa" / kind, ignore=skip, dirs_exist_ok=True)
    return folder


def _package_folder(name: str) -> Path:
    """The folder of an installed (or checked-out) package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"cannot find the code of {name} to copy into the Space; pass --requirement")
    return Path(list(spec.submodule_search_locations)[0])


__all__ = ["APP_TEMPLATE", "INSTALL_HINT", "OUTPUT_KIND", "VENDORED", "export_space", "requirements"]
