"""Fetch the real BigEarthNet patches the tests use: two PyPI wheels, downloaded once into a cache.

    python tests/fetch_real_data.py        # needs PyPI once; the tests then run offline

- bigearthnet-common 2.8.0 ships 6 real BigEarthNet v1 S1/S2 pairs (tar.bz2 archives) and the metadata CSVs
  that define BEN-14K;
- configilm 0.7.1 ships 24 real BigEarthNet v2 (reBEN) pairs as safetensors in an LMDB, with the real reBEN
  metadata parquet (configilm/extra/mock_data/BENv2/).
The tests read their data files and never import their code (tests/conftest.py turns them into the folder
layouts bigearth.net distributes). Each wheel is pinned by its sha256: pip checks it on download, and the tests
check it again before they read a wheel. The cache is ``$CRJEPA_TEST_WHEELS`` (default
``~/.cache/crjepa-test-wheels``); a wheel already there with the right hash is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WHEELS = {
    "bigearthnet-common": (
        "2.8.0",
        "bigearthnet_common-2.8.0-py3-none-any.whl",
        "6c2bcf2b1d39a3f48925b0d941557152f9e523576fbb9d2b881a842ed92fd6af",
    ),
    "configilm": (
        "0.7.1",
        "configilm-0.7.1-py3-none-any.whl",
        "54e8c2424c55bb4e68dfda07593e155e9ecfa6c60b50585c4b378076934cf5e3",
    ),
}
"""PyPI name -> (version, wheel file, sha256 of the wheel)."""

WHEEL_CACHE = Path(os.environ.get("CRJEPA_TEST_WHEELS", Path.home() / ".cache" / "crjepa-test-wheels"))
FETCH_COMMAND = "python tests/fetch_real_data.py"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_wheel(name: str) -> Path | None:
    """The cached wheel of `name` if it is there with its pinned hash, else None."""
    _, file, digest = WHEELS[name]
    path = WHEEL_CACHE / file
    return path if path.is_file() and sha256(path) == digest else None


def fetch(name: str) -> Path:
    """Download the wheel of `name` into the cache (pip checks the pinned hash) unless it is there already."""
    version, file, digest = WHEELS[name]
    path = cached_wheel(name)
    if path is not None:
        return path
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WHEEL_CACHE) as tmp:  # beside the cache: the rename stays on one disk
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{name}=={version} --hash=sha256:{digest}\n")
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "-q",
                "-r",
                str(requirements),
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode or not (Path(tmp) / file).is_file():
            raise RuntimeError(f"pip could not download {name}=={version} (needs PyPI): {run.stderr.strip()[-800:]}")
        os.replace(Path(tmp) / file, WHEEL_CACHE / file)
    path = cached_wheel(name)
    if path is None:
        raise RuntimeError(f"{WHEEL_CACHE / file} does not have the pinned sha256 {digest}")
    return path


def main() -> int:
    for name in WHEELS:
        try:
            print(f"{name}: {fetch(name)}")
        except (OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
