"""Checks of files a library is about to read, for the sizes they declare: a downloaded or damaged file must not make
a reader allocate what the file cannot hold, nor fail with a library's traceback.

`check_safetensors`: a safetensors file's header (length, JSON, every tensor's dtype, shape and byte range) against
the file's real size, before safetensors, transformers or accelerate open it. Imports only the standard library.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from crjepa.errors import CRJepaError

__all__ = ["FileCheckError", "check_safetensors", "check_safetensors_in"]

SAFETENSORS_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_SAFETENSORS_HEADER = 100 << 20
"""safetensors' own limit on the header (JSON) size."""


class FileCheckError(CRJepaError, ValueError):
    """A file whose declared sizes or structure do not fit its real size; the message names it and what to do."""


def check_safetensors(path: str | os.PathLike[str]) -> None:
    """Raise `FileCheckError` unless ``path`` is a safetensors file whose header fits the file: a header length
    within the file (and safetensors' 100 MiB limit), a JSON object, and for every tensor a known dtype, a shape of
    non-negative integers and a byte range inside the data whose length is the shape's."""
    path = Path(path)
    size = path.stat().st_size
    again = "download it again or re-save the model"

    def bad(why: str) -> FileCheckError:
        return FileCheckError(f"{path} is not a valid safetensors file: {why}; {again}")

    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"it has {size} bytes, fewer than a header")
        length = int.from_bytes(head, "little")
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise bad(f"its header claims {length:,} bytes, the file has {size - 8:,} after the length")
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise bad("its __metadata__ is not a mapping of strings")
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has no known dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise bad(f"tensor {name!r} has shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data
        ):
            raise bad(f"tensor {name!r} lies at bytes {offsets!r}, outside the {data:,} data bytes")
        if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise bad(f"tensor {name!r} ({entry['dtype']} {shape}) does not fill its {offsets[1] - offsets[0]:,} bytes")


def check_safetensors_in(folder: str | os.PathLike[str]) -> None:
    """`check_safetensors` on every ``*.safetensors`` file of a folder (a model or a checkpoint)."""
    for file in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(file)
