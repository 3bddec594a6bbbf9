"""Query files a person uploads to the app: an image file (.npy, GeoTIFF, PNG/JPEG) or a BigEarthNet patch folder
as a zip.

A zip holds one patch folder as bigearth.net ships it (v1 or reBEN): ``<patch>_B01.tif ... <patch>_B12.tif`` (S2,
bands at 10, 20 and 60 m) or ``<patch>_VV.tif``, ``<patch>_VH.tif`` (S1), with or without the folder. Bands are
matched by the name in the file name, never by position; coarser bands are upsampled by pixel repetition to the
finest band's size. The band files are read and stacked by the code the BigEarthNet converter reads them with
(`crjepa.data.images`: `band_name`, `read_band_file`, `stack_bands`); images by `read_image`. What is the app's
own is the zip: it is read in memory with limits on its members and sizes, so a crafted archive cannot fill the
memory or the disk, and nothing is written under a name taken from it.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crjepa.data.images import IMAGE_SUFFIXES, band_name, read_band_file, read_image, stack_bands
from crjepa.data.schema import DataError

MAX_ZIP_MEMBERS = 256
MAX_BAND_BYTES = 64 * 2**20
"""Largest uncompressed band file read from a zip (a 10980 x 10980 uint16 tile is ~230 MB; a patch is ~30 KB)."""
MAX_ZIP_BYTES = 512 * 2**20
UPLOAD_SUFFIXES = (*IMAGE_SUFFIXES, ".zip")


@dataclass
class Upload:
    """A query file as read: ``image`` (C, H, W) for an image file, or ``bands`` {band name: (H, W)} for a patch
    folder, whose sensor is told by its band names."""

    name: str
    image: np.ndarray | None = None
    bands: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def band_count(self) -> int:
        return len(self.bands) if self.image is None else int(self.image.shape[0])

    def stacked(self, names: list[str]) -> np.ndarray:
        """The image (C, H, W): an image file as read, a patch folder's bands in the order ``names``."""
        if self.image is not None:
            return self.image
        return stack_bands(self.bands, names, self.name)


def read_upload(path: str | Path, name: str | None = None) -> Upload:
    """Read an uploaded query file; a DataError (one sentence naming the file) for anything unreadable."""
    path = Path(path)
    name = name or path.name
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return Upload(name, bands=read_patch_zip(path, name))
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"{name}: cannot search with a {suffix or 'suffix-less'} file; upload one of "
            f"{', '.join(UPLOAD_SUFFIXES)} (a BigEarthNet patch folder as a .zip)"
        )
    image = read_image(path)
    if image.dtype.kind not in "uif" or image.size == 0:
        raise DataError(f"{name}: holds {image.dtype} values of shape {image.shape}; upload a numeric (C, H, W) image")
    return Upload(name, image=image)


def read_patch_zip(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    """The bands of the one patch folder in a zip: {band name: (H, W) array}."""
    name = name or Path(path).name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{name}: not a readable zip file ({err})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise DataError(
                f"{name}: {len(members)} files, {sum(m.file_size for m in members)} bytes unpacked; a "
                f"patch folder has at most {MAX_ZIP_MEMBERS} files and {MAX_ZIP_BYTES} bytes"
            )
        bands: dict[str, np.ndarray] = {}
        with tempfile.TemporaryDirectory(prefix="crjepa-upload-") as tmp:
            for member in members:
                band = band_name(member.filename)
                if band is None:
                    continue  # the patch's JSON metadata, readme files: not pixels
                band = band.upper()
                if band in bands:
                    raise DataError(f"{name}: band {band} appears twice ({member.filename}); zip one patch folder")
                if member.file_size > MAX_BAND_BYTES:
                    raise DataError(
                        f"{name}: {member.filename} unpacks to {member.file_size} bytes; a band file "
                        f"has at most {MAX_BAND_BYTES}"
                    )
                file = Path(tmp) / f"band{len(bands)}.tif"  # never a name taken from the zip
                try:
                    file.write_bytes(archive.read(member))
                except (zipfile.BadZipFile, OSError, RuntimeError) as err:
                    raise DataError(f"{name}: cannot unpack {member.filename} ({err})") from None
                try:
                    image, _ = read_band_file(file)
                except DataError:
                    raise DataError(f"{name}: {member.filename} is not a readable GeoTIFF") from None
                if image.shape[0] != 1:
                    raise DataError(
                        f"{name}: {member.filename} holds {image.shape[0]} bands; a patch folder holds "
                        "one band per file"
                    )
                bands[band] = image[0]
    if not bands:
        raise DataError(
            f"{name}: holds no band GeoTIFFs (<patch>_<band>.tif, e.g. _B04.tif or _VV.tif); zip a "
            "BigEarthNet patch folder"
        )
    return bands


__all__ = [
    "MAX_BAND_BYTES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "UPLOAD_SUFFIXES",
    "Upload",
    "read_patch_zip",
    "read_upload",
]
