"""`crjepa app --export-space` (crjepa/app/space.py): the Space folder's metadata, requirements and app.py, and the
exported app.py serving an archive in a fresh process from the folder's own copy of the code."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from crjepa.app.space import export_space, requirements
from crjepa.cli import main

from helpers import free_port, offline_env, run_python, synthetic_pairs, write_app_archive


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory, model) -> Path:
    return write_app_archive(tmp_path_factory.mktemp("space") / "emb", model, synthetic_pairs({"test": 12}), 12)


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def test_export_writes_the_space_metadata_requirements_and_app(tmp_path, capsys):
    import importlib.metadata

    space = tmp_path / "space"
    assert (
        main(
            [
                "app",
                "someone/crjepa-ben14k-embeddings",
                "--model",
                "someone/crjepa-ben14k",
                "--data",
                "someone/ben14k",
                "--export-space",
                str(space),
            ]
        )
        == 0
    )
    assert f"Wrote the Space folder {space}" in capsys.readouterr().out
    meta = front_matter(space / "README.md")
    assert (
        meta["sdk"] == "gradio"
        and meta["sdk_version"] == importlib.metadata.version("gradio")
        and meta["app_file"] == "app.py"
    )
    assert meta["models"] == ["someone/crjepa-ben14k"]
    assert meta["datasets"] == ["someone/crjepa-ben14k-embeddings", "someone/ben14k"]
    needed = (space / "requirements.txt").read_text().split()
    assert any(line.startswith("gradio") for line in needed) and any(line.startswith("faiss-cpu") for line in needed)
    assert not any(line.startswith("crjepa") for line in needed)  # the code travels in the folder
    for package in ("crjepa", "modeling_crjepa", "datasets_scripts"):
        assert (space / package / "__init__.py").is_file() and not list((space / package).rglob("__pycache__"))
    namespace: dict = {"__name__": "exported"}
    exec(compile((space / "app.py").read_text(), "app.py", "exec"), namespace)  # noqa: S102 - our own template
    assert (namespace["ARCHIVE"], namespace["MODEL"], namespace["DATA"]) == (
        "someone/crjepa-ben14k-embeddings",
        "someone/crjepa-ben14k",
        "someone/ben14k",
    )
    assert main(["app", "someone/other", "--export-space", str(space)]) == 0  # its own earlier output: replaced
    assert "someone/other" in (space / "app.py").read_text() and "models" not in front_matter(space / "README.md")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["app", "someone/other", "--export-space", str(tmp_path / "mine")]) == 2  # never someone's folder
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_pip_requirement_replaces_the_copied_code(tmp_path):
    spec = "crjepa[app] @ git+https://example.org/crjepa@v1"
    folder = export_space(tmp_path / "space", "someone/emb", requirement=spec)
    assert (folder / "requirements.txt").read_text() == spec + "\n" and not (folder / "crjepa").exists()
    assert requirements(None) == [line for line in requirements(None) if "extra" not in line]  # markers resolved


@pytest.mark.slow
def test_the_exported_app_serves_a_local_archive_from_its_own_code(archive_dir, tmp_path):
    space = export_space(tmp_path / "space", str(archive_dir), model=str(archive_dir.parent / "model"), data="recorded")
    where = run_python(
        ["-c", "import crjepa, modeling_crjepa; print(crjepa.__file__, modeling_crjepa.__file__)"], space, PYTHONPATH=""
    )
    assert where.returncode == 0 and all(Path(p).is_relative_to(space) for p in where.stdout.split()), where.stdout
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=space,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**offline_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1"), "PYTHONPATH": ""},
    )
    try:
        seen = []
        for line in proc.stdout:  # the app's own line says it serves (an event on the pipe)
            seen.append(line)
            if line.startswith("crjepa app: serving"):
                break
        else:
            pytest.fail(f"app.py stopped before serving:\n{''.join(seen)[-3000:]}")
        assert line.strip().endswith(f"at http://127.0.0.1:{port}/")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config") as response:
            config = json.loads(response.read())
        texts = json.dumps(config)
        assert "CR-JEPA retrieval" in texts and "12 items" in texts and "crjepa-upload" in texts  # model loaded
    finally:
        proc.terminate()
        proc.wait()
