"""A non-editable install works too: the wheel carries the card templates and the package finds them there."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(p.name for p in (ROOT / "model_cards").glob("*.md"))


def test_wheel_ships_the_card_templates_and_uses_them(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves nothing (build/, egg-info) in the checkout
    skip_anywhere = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:  # outputs/ and data/ of the checkout, not crjepa/data
        top = {"outputs", "data"} if Path(folder) == ROOT else set()
        return set(skip_anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, source, ignore=ignore)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("crjepa-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {"crjepa/model_cards/model_card.md", "crjepa/model_cards/embeddings_card.md",
            "crjepa/model_cards/dataset_card.md"} <= names, sorted(n for n in names if "card" in n)
    assert TEMPLATES == ["dataset_card.md", "embeddings_card.md", "model_card.md"]
    # the unpacked wheel, imported without site processing (no editable-install hooks, so not this checkout)
    code = ("import crjepa.hub.cards as m, crjepa.hub.archive as h\n"
            "print(m.MODEL_CARD_TEMPLATE); print(h.CARD_TEMPLATE); print(m.card_template('dataset_card.md'))\n"
            "print(m.__file__)")
    env = {"PYTHONPATH": f"{tmp_path / 'site'}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}",
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.split()
    assert lines[-1].startswith(str(tmp_path / "site")), lines  # the installed copy was imported, not the repo
    for line in lines[:3]:
        path = Path(line)
        assert path.is_file() and path.is_relative_to(tmp_path / "site" / "crjepa" / "model_cards"), line
