"""Plain helpers shared by the test modules (fixtures live in conftest.py). Test modules import from here,
never from each other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np

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


def run_python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process (offline, this checkout on the path), output captured."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=offline_env(**env),
                          timeout=300)


def roundoff(scale: float, dtype: object = np.float32, ulps: int = ROUNDOFF_ULPS) -> float:
    """The absolute tolerance for a `dtype` computation whose magnitude is `scale`: `ulps` units of roundoff
    (machine epsilon) at that scale. The scale is the quantity's own size, never the difference being checked:
    a tensor's norm for its elements, norm x sqrt(numel) for a sum of elements that cancel, 1 for unit vectors."""
    return ulps * float(np.finfo(dtype).eps) * float(scale)


def assert_close_at_scale(actual: object, expected: object, scale: float | None = None, dtype: object = np.float32,
                          ulps: int = ROUNDOFF_ULPS) -> None:
    """`actual` equals `expected` up to roundoff at `scale` (default: the largest magnitude in `expected`)."""
    got, want = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
                 for x in (actual, expected))
    scale = float(np.abs(want).max(initial=0.0)) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=0, atol=roundoff(scale, dtype, ulps))


def wait_for(event: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Wait until `event()` holds (a file appeared, a line was written) while `process` runs; fail at once if the
    process exits first. No deadline of its own: load only makes the wait longer, and a hang is pytest-timeout's."""
    while not event():
        if process.poll() is not None:
            raise AssertionError(f"the process exited with status {process.returncode} before {what}")
        time.sleep(0.05)


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
        with rasterio.open(path, "w", driver="GTiff", width=chw.shape[2], height=chw.shape[1], count=chw.shape[0],
                           dtype=chw.dtype.name) as dst:
            dst.write(chw)
    return chw


def write_app_archive(folder: Path, model, pairs: datasets.Dataset, num_pairs: int) -> Path:
    """An embeddings archive of ``pairs`` (the synthetic rows of ``synthetic_pairs`` with ``num_pairs`` per split)
    with metadata (split, row number), stored exact indices and its recorded source, as `crjepa app` opens it; the
    model is saved beside it as ``model/``."""
    from crjepa.eval.retrieval import compute_embeddings
    from crjepa.hub.archive import build_indices, config_summary, model_fingerprint, write_embeddings_dataset

    model.save_pretrained(folder.parent / "model")
    emb = compute_embeddings(model, pairs, batch_size=64)
    fingerprint = model_fingerprint(model)
    return write_embeddings_dataset(
        folder, emb.ids, emb.labels, emb.class_names, emb.vectors,
        metadata={"split": pairs["split"], "row": [str(i) for i in range(len(pairs))]}, model_fingerprint=fingerprint,
        config_summary=config_summary(model.config), source={"dataset": "synthetic", "num_pairs": num_pairs},
        indices=build_indices(emb.vectors, emb.ids, kind="exact", fingerprint=fingerprint))


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
