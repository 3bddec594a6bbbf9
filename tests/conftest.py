"""Fixtures shared by the test modules: the tiny model, the real BigEarthNet data (folders, LMDB, exports) and
small real file systems. Plain helper functions are in tests/helpers.py."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import crjepa.search  # noqa: F401  (before any test imports faiss: picks OpenBLAS's kernels, crjepa/search/blas.py)
from crjepa.utils.logs import PACKAGES

from helpers import (
    BENV2_IN_WHEEL,
    build_bigearthnet,
    real_data_wheel,
    reben_product,
    run_python,
    write_band_tif,
)

if TYPE_CHECKING:
    from modeling_crjepa import CRJepaModel


# ------------------------------------------------------------------------------------------ logging
@pytest.fixture(autouse=True)
def package_loggers_as_python_leaves_them() -> Iterator[None]:
    """Each test starts with the package loggers as a fresh process has them: entry points run in-process here
    (`main(argv)`) configure them for the rest of their process (`crjepa.utils.logs.show_messages`)."""
    yield
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


# ----------------------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model() -> CRJepaModel:
    """The tiny CR-JEPA model (seed 0, eval mode): what the retrieval, archive and search tests embed with."""
    import torch

    from modeling_crjepa import CRJepaConfig, CRJepaModel

    torch.manual_seed(0)
    return CRJepaModel(CRJepaConfig.from_preset("tiny")).eval()


# ------------------------------------------------------------------------------------------ real BigEarthNet data
# (where the patches come from: tests/helpers.py, next to `real_data_wheel`)
@pytest.fixture(scope="session")
def ben_v1_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 6 real BigEarthNet v1 pairs of bigearthnet-common's wheel, extracted once: (s1_dir, s2_dir)."""
    root = tmp_path_factory.mktemp("ben_v1")
    with zipfile.ZipFile(real_data_wheel("bigearthnet-common")) as wheel:
        for sensor in ("S1", "S2"):
            member = f"bigearthnet_common/BigEarthNet-{sensor}-Example.tar.bz2"
            wheel.extract(member, root)
            with tarfile.open(root / member) as tar:
                tar.extractall(root, filter="data")
    shutil.rmtree(root / "bigearthnet_common")
    return root / "BigEarthNet-S1-Example", root / "BigEarthNet-S2-Example"


@pytest.fixture(scope="session")
def ben_v1_all(ben_v1_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """Subset `all` built once from the untouched real v1 pairs: (builder, DatasetDict)."""
    return build_bigearthnet(*ben_v1_dirs, "all", tmp_path_factory.mktemp("ben_v1_all"))


@pytest.fixture(scope="session")
def reben_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 24 real reBEN pairs of configilm's wheel as a BigEarthNet v2 download: {"s1": BigEarthNet-S1,
    "s2": BigEarthNet-S2, "metadata": metadata.parquet, "snow_cloud_metadata": ...}.

    Layout as bigearth.net ships it: ``BigEarthNet-S2/<product>/<patch_id>/<patch_id>_B01.tif`` (10 m bands
    120x120, 20 m 60x60, 60 m 20x20, uint16) and ``BigEarthNet-S1/<product>/<s1_name>/<s1_name>_VV.tif, _VH.tif``
    (120x120 float32), plus the real metadata parquet files. Real patch and folder names.
    """
    import lmdb  # the dev extra (a missing reader fails the real-data tests, never skips them)
    from safetensors.numpy import load as load_safetensors

    root = tmp_path_factory.mktemp("reben")
    raw = root / "raw"
    with zipfile.ZipFile(real_data_wheel("configilm")) as wheel:
        members = [
            m
            for m in wheel.namelist()
            if m.startswith(BENV2_IN_WHEEL) and (m.endswith(".parquet") or "/BigEarthNet-V2-LMDB/" in m)
        ]
        wheel.extractall(raw, members)
    source = raw / BENV2_IN_WHEEL
    out = {
        "s1": root / "BigEarthNet-S1",
        "s2": root / "BigEarthNet-S2",
        "metadata": root / "metadata.parquet",
        "snow_cloud_metadata": root / "metadata_for_patches_with_snow_cloud_or_shadow.parquet",
    }
    shutil.copy(source / "metadata.parquet", out["metadata"])
    shutil.copy(source / "metadata_for_patches_with_snow_cloud_or_shadow.parquet", out["snow_cloud_metadata"])
    env = lmdb.open(str(source / "BigEarthNet-V2-LMDB"), readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                name = key.decode()
                bands = load_safetensors(bytes(value))  # {band name: native array}: mapped by name
                if name.startswith("S2"):
                    folder = out["s2"] / reben_product(name, 2) / name
                else:
                    folder = out["s1"] / reben_product(name, 3) / name
                folder.mkdir(parents=True)
                for band, array in bands.items():
                    write_band_tif(folder / f"{name}_{band}.tif", array)
    finally:
        env.close()
    shutil.rmtree(raw)
    return out


@pytest.fixture(scope="session")
def reben_lmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 24 real reBEN pairs as ConfigILM distributes them: the ``BigEarthNet-V2-LMDB`` folder (one
    safetensors file per patch name) with ``metadata.parquet`` beside it, as unpacked from configilm's wheel."""
    root = tmp_path_factory.mktemp("reben_lmdb")
    with zipfile.ZipFile(real_data_wheel("configilm")) as wheel:
        members = [
            m
            for m in wheel.namelist()
            if m.startswith(BENV2_IN_WHEEL) and (m.endswith(".parquet") or "/BigEarthNet-V2-LMDB/" in m)
        ]
        wheel.extractall(root, members)
    shutil.move(root / BENV2_IN_WHEEL, root / "BENv2")
    shutil.rmtree(root / "configilm")
    return root / "BENv2" / "BigEarthNet-V2-LMDB"


@pytest.fixture(scope="session")
def reben_export(reben_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reBEN pairs exported by the real CLI: `python -m datasets_scripts bigearthnet --subset reben`."""
    out = tmp_path_factory.mktemp("reben_export") / "reben"
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s1-dir",
            reben_dirs["s1"],
            "--s2-dir",
            reben_dirs["s2"],
            "--reben-metadata",
            reben_dirs["metadata"],
            "--subset",
            "reben",
            "--output-dir",
            out,
            "--num-proc",
            "1",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def reben_s2_export(reben_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An S2-only archive: the reBEN S2 folder alone (no --s1-dir), exported by the real CLI."""
    out = tmp_path_factory.mktemp("reben_s2_export") / "s2only"
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s2-dir",
            reben_dirs["s2"],
            "--reben-metadata",
            reben_dirs["metadata"],
            "--subset",
            "reben",
            "--output-dir",
            out,
            "--num-proc",
            "1",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


# ------------------------------------------------------------------------------------------ small real file systems
# A real ENOSPC or read-only disk, not a monkeypatched OSError, so the libraries' own error paths (torch's zip
# writer, safetensors, faiss, pyarrow) run.
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """A factory: ``small_disk(size="24m", readonly=False)`` mounts a fresh tmpfs of that size under tmp_path and
    returns its path (unmounted after the test). Skips the test, saying why, where mounting is not allowed (not
    root / no CAP_SYS_ADMIN, or not Linux). Fill it with `helpers.fill_disk`."""
    if not shutil.which("mount") or sys.platform != "linux":
        pytest.skip("a real full disk needs a tmpfs mount: Linux with mount(8) only")
    mounts: list[Path] = []

    def make(size: str = "24m", readonly: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        options = f"size={size},mode=0777" + (",ro" if readonly else "")
        run = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
        if run.returncode:
            why = run.stderr.strip() or "mount failed"
            pytest.skip(f"cannot mount a small tmpfs for a real full disk here ({why}; needs root or CAP_SYS_ADMIN)")
        mounts.append(path)
        return path

    yield make
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="session")
def cli_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny saved model, then embed -> index -> search (--png, --json) -> evaluate in one fresh process
    through the real entry point (`main`), as `crjepa ...` would run them; each command's stdout is a section of
    stdout.txt (`helpers.cli_section`)."""
    import textwrap

    import torch

    from modeling_crjepa import CRJepaConfig, CRJepaModel

    from helpers import CLI_QUERY, run_python

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(root / "model")
    commands = [
        ["embed", "model", "synthetic", "--num-pairs", "48", "--split", "test", "-o", "emb", "--batch-size", "16"],
        ["index", "emb", "--kind", "hnsw", "--param", "efSearch=32"],
        [
            "search",
            "emb",
            "--id",
            CLI_QUERY,
            "-k",
            "4",
            "--png",
            "grid.png",
            "--data",
            "recorded",
            "--tile",
            "40",
            "--json",
        ],
        [
            "evaluate",
            "model",
            "synthetic",
            "--num-pairs",
            "48",
            "--query-split",
            "validation",
            "--gallery-split",
            "test",
            "--output-dir",
            "eval",
        ],
    ]
    script = textwrap.dedent(f"""
        import sys
        from crjepa.cli import main
        for argv in {commands!r}:
            print("=== " + argv[0], flush=True)
            code = main(argv)
            print("=== rc", code, flush=True)
            if code:
                sys.exit(code)
    """)
    proc = run_python(["-c", script], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (root / "stdout.txt").write_text(proc.stdout)
    (root / "stderr.txt").write_text(proc.stderr)
    return root


@pytest.fixture(scope="session")
def milvus_flat(tmp_path_factory: pytest.TempPathFactory):
    """An archive (some rows without s1) loaded into Milvus Lite with exact (FLAT) collections:
    (folder, uri, vectors, present, records)."""
    import numpy as np

    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from crjepa.search import milvus

    from helpers import write_search_archive

    present = np.ones(1200, bool)
    present[::9] = False
    folder, vectors = write_search_archive(tmp_path_factory.mktemp("milvus") / "emb", present_s1=present)
    uri = str(folder.parent / "flat.db")
    records = milvus.index_archive(folder, uri, index_type="FLAT", batch_rows=300)
    return folder, uri, vectors, present, records


@pytest.fixture(scope="module")
def archive_pairs():
    """80 synthetic test pairs (what `archive_dir` embeds)."""
    from helpers import synthetic_pairs

    return synthetic_pairs({"test": 80})


@pytest.fixture(scope="module")
def archive_embeddings(model, archive_pairs):
    """`compute_embeddings` of `archive_pairs` by the tiny `model`."""
    from crjepa.eval.retrieval import compute_embeddings

    return compute_embeddings(model, archive_pairs, batch_size=32)


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory, model, archive_pairs, archive_embeddings) -> Path:
    """The embeddings archive of `archive_embeddings` with exact indices (`helpers.write_model_archive`)."""
    from helpers import write_model_archive

    return write_model_archive(tmp_path_factory.mktemp("hub") / "emb", model, archive_pairs, archive_embeddings)
