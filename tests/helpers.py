"""Plain helpers shared by the test modules (fixtures live in conftest.py). Test modules import from here,
never from each other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout importable, the Hub offline."""
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}


def run_python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process (offline, this checkout on the path), output captured."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=offline_env(**env),
                          timeout=300)


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
