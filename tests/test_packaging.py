"""A non-editable install works too: the wheel carries the card templates and the package finds them there."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # builds and installs the wheel
TEMPLATES = sorted(p.name for p in (ROOT / "model_cards").glob("*.md"))


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """The wheel built from a copy of this checkout, unpacked: a non-editable install (`pip install .`)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "src"  # a copy, so the build leaves nothing (build/, egg-info) in the checkout
    skip_anywhere = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache")

    def ignore(folder: str, names: list[str]) -> set[str]:  # outputs/ and data/ of the checkout, not crjepa/data
        top = {"outputs", "data"} if Path(folder) == ROOT else set()
        return set(skip_anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, source, ignore=ignore)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("crjepa-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    return tmp_path / "site"


def _site_env(site: Path) -> dict[str, str]:
    """Import the unpacked wheel without site processing (no editable-install hooks, so not this checkout)."""
    return {
        "PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}",
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }


def test_wheel_ships_the_card_templates_and_uses_them(wheel_site, tmp_path):
    names = {str(p.relative_to(wheel_site)) for p in wheel_site.rglob("*") if p.is_file()}
    assert {
        "crjepa/model_cards/model_card.md",
        "crjepa/model_cards/embeddings_card.md",
        "crjepa/model_cards/dataset_card.md",
    } <= names, sorted(n for n in names if "card" in n)
    assert TEMPLATES == ["dataset_card.md", "embeddings_card.md", "model_card.md"]
    metrics = (ROOT / "crjepa" / "eval" / "metrics.py").read_bytes()
    for module in ("crjepa_f1_at_k", "crjepa_map", "crjepa_precision_at_k"):  # the evaluate modules, whole
        folder = wheel_site / "crjepa" / "eval" / "metrics_modules" / module
        assert (folder / f"{module}.py").is_file() and (folder / "README.md").is_file(), module
        assert (folder / "retrieval_metrics.py").read_bytes() == metrics, module  # the link, as a plain file
    assert "modeling_crjepa/pipeline_crjepa.py" in names
    # the unpacked wheel, imported without site processing (no editable-install hooks, so not this checkout)
    code = (
        "import crjepa.hub.cards as m, crjepa.hub.archive, crjepa.cli\n"  # the sub-packages are in the wheel too
        "print(m.MODEL_CARD_TEMPLATE); print(m.EMBEDDINGS_CARD_TEMPLATE)\n"
        "print(m.card_template('dataset_card.md'))\n"
        "print(m.__file__)"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_site_env(wheel_site),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.split()
    assert lines[-1].startswith(str(wheel_site)), lines  # the installed copy was imported, not the repo
    for line in lines[:3]:
        path = Path(line)
        assert path.is_file() and path.is_relative_to(wheel_site / "crjepa" / "model_cards"), line


def test_python_m_train_accelerate_runs_from_a_non_editable_install(wheel_site, reben_export, tmp_path):
    """The default config and `--config paper_ben14k.yaml` come from the installed package."""
    assert (wheel_site / "crjepa" / "configs" / "cpu_default.yaml").is_file()
    assert (wheel_site / "crjepa" / "configs" / "baselines" / "contrastive.yaml").is_file()
    assert not (wheel_site / "configs").exists()
    tiny = [
        "--model.preset",
        "tiny",
        "--data.batch_size",
        "4",
        "--training.max_steps",
        "1",
        "--training.compile",
        "none",
        "--logging.report_to",
        "none",
        "--logging.progress_bar",
        "false",
        "--eval.batch_size",
        "8",
    ]
    for config, data in (
        (None, ["--data.options", "{num_train: 8, num_validation: 0, num_test: 6, image_size: 32}"]),
        ("configs/paper_ben14k.yaml", ["--data.path", str(reben_export)]),
    ):
        argv = [
            "-S",
            "-m",
            "train_accelerate",
            *(["--config", config] if config else []),
            *data,
            *tiny,
            "--output_dir",
            str(tmp_path / f"run{bool(config)}"),
        ]
        run = subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_site_env(wheel_site),
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        card = (tmp_path / f"run{bool(config)}" / "model" / "README.md").read_text()
        assert ("BigEarthNet-MM (reben)" if config else "synthetic") in card
