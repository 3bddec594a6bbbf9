"""Query files a person uploads to the app (crjepa/app/uploads.py): real BigEarthNet patch folders zipped read
band by name exactly as the converter reads them, crafted zips refused within limits, other files named."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from crjepa.app import uploads
from crjepa.data.schema import S1_BANDS, S2_BANDS, DataError


def zip_folder(folder: Path, target: Path, inside: bool = True) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{folder.name}/{file.name}" if inside else file.name)
    return target


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_real_patch_folders_read_like_the_converter_reads_them(ben_v1_dirs, tmp_path, sensor):
    from datasets_scripts.bigearthnet import read_s1, read_s2

    root, read, bands = {"s1": (ben_v1_dirs[0], read_s1, S1_BANDS), "s2": (ben_v1_dirs[1], read_s2, S2_BANDS)}[sensor]
    for number, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())[:2]):
        upload = uploads.read_upload(zip_folder(folder, tmp_path / f"{sensor}{number}.zip", inside=bool(number)))
        assert sorted(upload.bands) == sorted(bands) and upload.band_count == len(bands)
        assert np.array_equal(upload.stacked(list(bands)), read(folder, folder.name))


def test_a_truncated_band_file_is_refused_by_the_app_and_skipped_by_the_converter_alike(ben_v1_dirs, tmp_path):
    """Both read band files through `crjepa.data.images.read_band_file`: the same file fails both, each naming it."""
    import shutil

    from datasets_scripts.bigearthnet import BigEarthNetError, read_s2

    source = sorted(p for p in ben_v1_dirs[1].iterdir() if p.is_dir())[0]
    folder = shutil.copytree(source, tmp_path / source.name)
    b8a = folder / f"{folder.name}_B8A.tif"
    b8a.write_bytes(b8a.read_bytes()[:2000])
    with pytest.raises(BigEarthNetError, match=f"{b8a.name} \\(truncated or corrupt GeoTIFF\\)") as err:
        read_s2(folder, folder.name)
    assert err.value.reason == "corrupt GeoTIFF"
    with pytest.raises(DataError, match=f"p.zip: {folder.name}/{b8a.name} is not a readable GeoTIFF"):
        uploads.read_upload(zip_folder(folder, tmp_path / "p.zip"))


def test_zip_uploads_are_read_in_memory_within_limits(tmp_path, monkeypatch):
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not.zip: not a readable zip file"):
        uploads.read_upload(tmp_path / "not.zip")
    with zipfile.ZipFile(tmp_path / "names.zip", "w") as archive:  # a crafted member name is never a path
        archive.writestr("../../escape_B04.tif", b"not a tiff")
    with pytest.raises(DataError, match="names.zip: ../../escape_B04.tif is not a readable GeoTIFF"):
        uploads.read_upload(tmp_path / "names.zip")
    assert not (tmp_path.parent / "escape_B04.tif").exists()
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("p_B04.tif", b"\0" * (2 * 2**20))
    monkeypatch.setattr(uploads, "MAX_BAND_BYTES", 2**20)
    with pytest.raises(DataError, match="p_B04.tif unpacks to 2097152 bytes; a band file has at most 1048576"):
        uploads.read_upload(tmp_path / "big.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="holds no band GeoTIFFs"):
        uploads.read_upload(tmp_path / "empty.zip")
    (tmp_path / "q.txt").write_text("x")
    with pytest.raises(DataError, match=r"q.txt: cannot search with a .txt file; upload one of .png"):
        uploads.read_upload(tmp_path / "q.txt")
