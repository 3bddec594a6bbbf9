"""Plain helpers shared by the test modules (fixtures live in conftest.py). Test modules import from here,
never from each other or from conftest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pytest

if TYPE_CHECKING:
    from datasets_scripts.bigearthnet import BigEarthNetMM

REPO = Path(__file__).resolve().parent.parent

ROUNDOFF_ULPS = 128
"""Units of roundoff two code paths of one float computation may differ by in these tests. The same numbers
computed on another CPU (AVX2 vs AVX-512 kernels, AMD vs Intel), with another thread count or another batch
split sum in another order; the largest difference seen (the two-sensor objective's losses and gradients, AMD EPYC
vs Intel Xeon, 1 or 2 threads) was ~7 units at the quantity's scale, so 128 leaves a wide margin while a real
change (a wrong weight, a missing term) moves values by far more."""


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout importable, the Hub offline."""
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}


def run_python(
    args: list[str | os.PathLike], cwd: Path = REPO, timeout: int = 300, **env: str
) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process (offline, this checkout on the path), output captured; a module runs as
    ``run_python(["-m", "datasets_scripts", ...])``."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=offline_env(**env),
        timeout=timeout,
    )


def roundoff(scale: float, dtype: object = np.float32, ulps: int = ROUNDOFF_ULPS) -> float:
    """The absolute tolerance for a `dtype` computation whose magnitude is `scale`: `ulps` units of roundoff
    (machine epsilon) at that scale. The scale is the quantity's own size, never the difference being checked:
    a tensor's norm for its elements, norm x sqrt(numel) for a sum of elements that cancel, 1 for unit vectors."""
    return ulps * float(np.finfo(dtype).eps) * float(scale)


def assert_close_at_scale(
    actual: object, expected: object, scale: float | None = None, dtype: object = np.float32, ulps: int = ROUNDOFF_ULPS
) -> None:
    """`actual` equals `expected` up to roundoff at `scale` (default: the largest magnitude in `expected`)."""
    got, want = (
        np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64) for x in (actual, expected)
    )
    scale = float(np.abs(want).max(initial=0.0)) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=0, atol=roundoff(scale, dtype, ulps))


def wait_for(event: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Wait until `event()` holds (a file appeared, a line was written) while `process` runs; fail at once if the
    process exits first. No deadline of its own: load only makes the wait longer, and a hang is pytest-timeout's."""
    while not event():
        if process.poll() is not None:
            raise AssertionError(f"the process exited with status {process.returncode} before {what}")
        time.sleep(0.05)


def repository_files() -> list[Path]:
    """The files of the checkout (tracked, plus new ones git does not ignore)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / line for line in listing.splitlines() if (REPO / line).is_file()]


def small_run_args(num_train: int, num_test: int, batch_size: int) -> list[str]:
    """Command-line overrides of a short synthetic training run (2 epochs, logging every step, no tracker, exact
    indices) on ``num_train`` / ``num_test`` pairs of 32 px."""
    options = f"{{num_train: {num_train}, num_validation: 0, num_test: {num_test}, image_size: 32, seed: 0}}"
    rest = (
        "--epochs 2 --warmup_epochs 0.5 --lr 2e-3 --model.sigreg_num_directions 64 --eval.batch_size 128 "
        "--checkpoint.every_steps 0 --logging.every_steps 1 --logging.report_to none --logging.progress_bar false "
        "--embeddings.index exact"
    )
    return ["--data.options", options, "--data.batch_size", str(batch_size), *rest.split()]


def free_port() -> int:
    """A TCP port nothing listens on (for gloo / accelerate rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_pairs(sizes: dict[str, int], seed: int = 0) -> datasets.Dataset:
    """Contract-shaped paired rows (id, s1, s2, labels, split) from the built-in generator."""
    from datasets_scripts import synthetic

    parts = [synthetic.to_columns(synthetic.generate(n, seed=seed, split=split)) for split, n in sizes.items()]
    columns = {key: [v for part in parts for v in list(part[key])] for key in parts[0]}
    return datasets.Dataset.from_dict(columns, features=synthetic.features())


_IMAGE_RNG = np.random.default_rng(0)


def random_image(shape: tuple[int, ...], dtype: object = np.uint8) -> np.ndarray:
    """Random pixels of ``shape``: SAR-like dB values (normal around -12) for a float dtype, 0..254 otherwise."""
    if np.dtype(dtype).kind == "f":
        return _IMAGE_RNG.normal(-12, 4, shape).astype(dtype)
    return _IMAGE_RNG.integers(0, 255, shape).astype(dtype)


def rows_by_id(builder: datasets.DatasetBuilder) -> dict[str, dict]:
    """A builder prepared and read back: {id: row as numpy, with ``_split`` the `datasets` split it is in}."""
    builder.download_and_prepare()
    dd = builder.as_dataset()
    return {r["id"]: {**r, "_split": name} for name in dd for r in dd[name].with_format("numpy")}


def write_png(path: Path, chw: np.ndarray) -> np.ndarray:
    """Save a (C, H, W) uint8 array as PNG (1 channel: L, 3: RGB, 4: RGBA)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)).save(path)
    return chw


def write_tif(path: Path, chw: np.ndarray) -> np.ndarray:
    """Save a (C, H, W) array as a plain (not georeferenced) GeoTIFF with rasterio."""
    import warnings

    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced
        with rasterio.open(
            path, "w", driver="GTiff", width=chw.shape[2], height=chw.shape[1], count=chw.shape[0], dtype=chw.dtype.name
        ) as dst:
            dst.write(chw)
    return chw


def write_band_tif(path: Path, band: np.ndarray, crs: str = "EPSG:32633") -> None:
    """Save one (H, W) band as a georeferenced single-band GeoTIFF covering a 1.2 km BigEarthNet patch, as
    bigearth.net ships each band file."""
    import rasterio

    pixel = 1200 / band.shape[0]  # every band covers the same 1.2 km x 1.2 km patch
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=band.shape[0],
        width=band.shape[1],
        count=1,
        dtype=band.dtype,
        crs=crs,
        transform=rasterio.Affine(pixel, 0, 400_000, 0, -pixel, 5_342_400),
    ) as dst:
        dst.write(band, 1)


def write_app_archive(folder: Path, model, pairs: datasets.Dataset, num_pairs: int) -> Path:
    """An embeddings archive of ``pairs`` (the synthetic rows of ``synthetic_pairs`` with ``num_pairs`` per split)
    with metadata (split, row number), stored exact indices and its recorded source, as `crjepa app` opens it; the
    model is saved beside it as ``model/``."""
    from crjepa.eval.retrieval import compute_embeddings
    from crjepa.hub.archive import (
        build_indices,
        config_summary,
        model_fingerprint,
        write_embeddings_dataset,
    )

    model.save_pretrained(folder.parent / "model")
    emb = compute_embeddings(model, pairs, batch_size=64)
    fingerprint = model_fingerprint(model)
    return write_embeddings_dataset(
        folder,
        emb.ids,
        emb.labels,
        emb.class_names,
        emb.vectors,
        metadata={"split": pairs["split"], "row": [str(i) for i in range(len(pairs))]},
        model_fingerprint=fingerprint,
        config_summary=config_summary(model.config),
        source={"dataset": "synthetic", "num_pairs": num_pairs},
        indices=build_indices(emb.vectors, emb.ids, kind="exact", fingerprint=fingerprint),
    )


def write_marked_folder(target: Path, kind: str = "faiss-index", overwrite: bool = False, text: str = "new") -> None:
    """An output folder of ``kind`` written through `crjepa.utils.atomic.atomic_dir`, holding payload.txt = text."""
    from crjepa.utils.atomic import atomic_dir

    with atomic_dir(target, kind=kind, overwrite=overwrite) as tmp:
        (tmp / "payload.txt").write_text(text)


def fill_disk(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` free bytes with one preallocated file (``.filler``);
    returns it (delete it to free the space again)."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = Path(folder) / ".filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(free - leave, 1))
    return filler


def peak_rss_kib() -> int | None:
    """This process's peak resident memory since the last `reset_peak_rss` (Linux VmHWM), or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the peak of `peak_rss_kib` to the current resident memory (Linux clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return peak_rss_kib() is not None


# ------------------------------------------------------------------------------------------ real BigEarthNet data
# Real patches come from two PyPI wheels, downloaded once into a cache by tests/fetch_real_data.py (the tests are
# offline): bigearthnet-common==2.8.0 holds 6 real BigEarthNet v1 S1/S2 pairs (tar.bz2 archives in the package
# folder); configilm==0.7.1 holds 24 real BigEarthNet v2 (reBEN) pairs as safetensors in an LMDB, with the real
# reBEN metadata parquet. They are read with `lmdb` + `safetensors` (no pickles): the wheels' code is never
# imported, and configilm's BENv1 LMDB, which holds pickles, is never opened. The fixtures of conftest.py turn them
# into the folder layouts bigearth.net distributes (a GeoTIFF per band at native size).
BENV2_IN_WHEEL = "configilm/extra/mock_data/BENv2/"
"""Where configilm's wheel keeps the reBEN sample (the LMDB folder and the metadata parquet files)."""


def real_data_wheel(name: str) -> Path:
    """The cached wheel of `name` (tests/fetch_real_data.py: WHEELS), checked against its pinned hash. A missing
    wheel FAILS the test with the command that fetches it: the tests never download, and never skip real data."""
    from fetch_real_data import FETCH_COMMAND, WHEEL_CACHE, WHEELS, cached_wheel

    path = cached_wheel(name)
    if path is None:
        version, file, _ = WHEELS[name]
        pytest.fail(
            f"the real-data wheel {name}=={version} is not in {WHEEL_CACHE} (or is not the pinned file "
            f"{file}): run `{FETCH_COMMAND}` once (it needs PyPI; the tests then run offline)"
        )
    return path


def reben_product(name: str, parts: int) -> str:
    """reBEN's product folder of a patch: the patch name without its last `parts` fields."""
    return "_".join(name.split("_")[:-parts])


def reben_pairs(reben_dirs: dict[str, Path]) -> list[dict]:
    """The rows of the real reBEN metadata.parquet (patch_id, s1_name, labels, split, country, ...)."""
    import pyarrow.parquet as pq

    return pq.read_table(reben_dirs["metadata"]).to_pylist()


BEN_V1_EXAMPLES: dict[str, tuple[str, str, str]] = {
    "S2A_MSIL2A_20170613T101031_87_48": ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", "Austria", "test"),
    "S2A_MSIL2A_20170617T113321_36_85": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", "Ireland", "train"),
    "S2A_MSIL2A_20170617T113321_4_55": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55", "Ireland", "train"),
    "S2A_MSIL2A_20171221T112501_56_35": ("S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35", "Portugal", "train"),
    "S2B_MSIL2A_20170924T93020_69_24": ("S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24", "Finland", "train"),
    "S2B_MSIL2A_20180204T94161_57_38": ("S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38", "Finland", "unassigned"),
}
"""The 6 real v1 pairs of bigearthnet-common (fixture `ben_v1_dirs`): S2 name -> (S1 name, country, official
split); the last one is on the official snow list (`BEN_V1_SNOWY`)."""
BEN_V1_SNOWY = "S2B_MSIL2A_20180204T94161_57_38"


def copy_ben_v1(ben_v1_dirs: tuple[Path, Path], dst: Path) -> tuple[Path, Path]:
    """A writable copy of the real v1 pairs (to damage): (dst/S1, dst/S2)."""
    import shutil

    s1, s2 = dst / "S1", dst / "S2"
    shutil.copytree(ben_v1_dirs[0], s1)
    shutil.copytree(ben_v1_dirs[1], s2)
    return s1, s2


def build_bigearthnet(
    s1: Path | None, s2: Path, subset: str, cache: Path, **kw: object
) -> tuple[BigEarthNetMM, datasets.DatasetDict]:
    """`BigEarthNetMM(...)` prepared in ``cache`` (``num_proc`` from ``kw``): (builder, its DatasetDict)."""
    from datasets_scripts.bigearthnet import BigEarthNetMM

    num_proc = kw.pop("num_proc", None)
    builder = BigEarthNetMM(s1_dir=s1, s2_dir=s2, subset=subset, cache_dir=str(cache), **kw)
    builder.download_and_prepare(num_proc=num_proc)
    return builder, builder.as_dataset()


def read_native_band(path: Path) -> np.ndarray:
    """A band GeoTIFF's pixels as stored (no resampling), with rasterio."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def run_datasets_scripts(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m datasets_scripts ARGV` in this process (its `main`): (exit status, stdout, stderr)."""
    from datasets_scripts.__main__ import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) float32 random unit vectors."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(
    rng: np.random.Generator, n: int, nq: int, d: int, clusters: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Archive (n, d) and queries (nq, d): unit vectors around shared random cluster centres (search tests)."""
    centres = unit_vectors(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n + nq)]
    x += spread * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


SEARCH_ARCHIVE_CLASSES = ["Arable land", "Pastures", "Coniferous forest", "Urban fabric", "Inland waters"]
"""The classes of `write_search_archive`'s archives."""


def write_search_archive(
    folder: Path,
    n: int = 1200,
    dim: int = 32,
    seed: int = 0,
    rows_per_shard: int = 500,
    present_s1: np.ndarray | None = None,
    fresh: int = 0,
) -> tuple[Path, dict[str, np.ndarray]]:
    """A two-sensor archive (unified + cross columns, clustered unit vectors) with labels, a tile and a date per row,
    ids ``p00000``...; ``present_s1``: the rows having an s1 image. ``fresh`` more vectors per column, drawn the same
    way, are returned under "<column>/fresh" (queries not in the archive)."""
    from crjepa.hub.archive import write_embeddings_dataset

    rng = np.random.default_rng(seed)

    def clustered(count: int, clusters: int = 40, spread: float = 0.8) -> np.ndarray:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        x = centres[rng.integers(0, clusters, count)] + spread * rng.standard_normal((count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    drawn = {name: clustered(n + fresh) for name in ("s1_unified", "s2_unified", "s1_cross", "s2_cross")}
    vectors = {name: x[:n] for name, x in drawn.items()}
    labels = [sorted({int(i % 5), int(rng.integers(0, 5))}) for i in range(n)]
    metadata = {
        "tile": [f"T{i % 7}" for i in range(n)],
        "s2_date": [f"2017-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
    }
    present = None if present_s1 is None else {"s1": present_s1, "s2": np.ones(n, bool)}
    write_embeddings_dataset(
        folder,
        [f"p{i:05d}" for i in range(n)],
        labels,
        SEARCH_ARCHIVE_CLASSES,
        vectors,
        metadata,
        model_fingerprint="abc123",
        rows_per_shard=rows_per_shard,
        present=present,
    )
    return folder, {**vectors, **{f"{name}/fresh": x[n:] for name, x in drawn.items()}}


def write_model_archive(folder: Path, model, pairs: datasets.Dataset, embeddings, indices: bool = True) -> Path:
    """The embeddings archive of ``embeddings`` (`compute_embeddings` of ``pairs`` by ``model``): the split as
    metadata, exact indices (``indices``), a model repo id and the synthetic source recorded."""
    from crjepa.hub.archive import build_indices, config_summary, model_fingerprint, write_embeddings_dataset

    fingerprint = model_fingerprint(model)
    built = (
        build_indices(embeddings.vectors, embeddings.ids, kind="exact", fingerprint=fingerprint) if indices else None
    )
    return write_embeddings_dataset(
        folder,
        embeddings.ids,
        embeddings.labels,
        embeddings.class_names,
        embeddings.vectors,
        metadata={"split": pairs["split"]},
        model_fingerprint=fingerprint,
        config_summary=config_summary(model.config),
        indices=built,
        model_repo_id="someone/crjepa-tiny",
        source={"dataset": "synthetic"},
    )


def exact_top_k(queries: np.ndarray, gallery: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows of the top-k of each query by inner product (numpy, stable order); ``exclude``: one row per query."""
    scores = queries @ gallery.T
    if exclude is not None:
        scores[np.arange(len(queries)), exclude] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


class FakeHubApi:
    """A Hub client recording what `crjepa.hub.access.push_folder` asks of it."""

    def __init__(self, token: str | None = "hf_fake", fail_whoami: bool = False) -> None:
        self.token, self.fail_whoami, self.calls = token, fail_whoami, []

    def whoami(self, token=None):
        self.calls.append(("whoami", token))
        if self.fail_whoami:
            raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")
        return {"name": "someone"}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


CLI_QUERY = "synthetic-test-0-000003"
"""An archive id of the `cli_workdir` fixture's archive (the query its recorded search used)."""
EMBED_SMALL = [
    "synthetic",
    "--num-pairs",
    "8",
    "--split",
    "test",
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--shard-rows",
    "4",
]
"""`crjepa embed MODEL` arguments for a tiny run: 8 synthetic test pairs in shards of 4 rows."""


def cli_section(workdir: Path, command: str) -> str:
    """The stdout of one command of the `cli_workdir` fixture's run."""
    text = (workdir / "stdout.txt").read_text()
    return text.split(f"=== {command}\n", 1)[1].split("=== rc", 1)[0]


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): equal before and after means nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    """The command's one `error:` line (progress bars may share stderr), asserting there is no other and no
    traceback or usage block."""
    import re

    found = re.findall(r"crjepa [\w-]+: error: [^\r\n]*", err)
    assert len(found) == 1 and err.count("error:") == 1, err[-2000:]
    assert "Traceback" not in err and "usage:" not in err, err[-2000:]
    return found[0]


def parquet_export(folder: Path, num_pairs: int = 8) -> Path:
    """A folder exported like `python -m datasets_scripts` does: the synthetic test split as data/test-*.parquet."""
    from crjepa.cli.common import load_data

    load_data({"dataset": "synthetic", "num_pairs": num_pairs}, "test").to_parquet(
        str(folder / "data" / "test-00000-of-00001.parquet")
    )
    return folder
