"""crjepa.utils.files: a safetensors header is checked against the file before any library reads it."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from crjepa.utils.files import FileCheckError, check_safetensors


def _write(path, header: dict, payload: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def test_a_safetensors_header_must_fit_its_file(tmp_path):
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"w": np.ones((4, 3), np.float32), "b": np.zeros(2, np.int64)}, str(good))
    check_safetensors(good)  # what safetensors writes passes
    payload = bytes(48)
    cases = {
        "length": (b"\xff" * 8 + b"{}", "its header claims 18,446,744,073,709,551,615 bytes"),
        "json": (None, "its header is not JSON"),
        "offsets": (
            {"w": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 2**40]}},
            "tensor 'w' lies at bytes [0, 1099511627776], outside the 48 data bytes",
        ),
        "shape": (
            {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 48]}},
            "tensor 'w' (F32 [4, 4]) does not fill its 48 bytes",
        ),
        "dtype": ({"w": {"dtype": "OBJ", "shape": [4, 3], "data_offsets": [0, 48]}}, "tensor 'w' has no known dtype"),
        "negative": ({"w": {"dtype": "F32", "shape": [-4, 3], "data_offsets": [0, 48]}}, "tensor 'w' has shape"),
    }
    for name, (header, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if isinstance(header, bytes):
            path.write_bytes(header)
        elif header is None:
            path.write_bytes(struct.pack("<Q", 5) + b"{nope" + payload)
        else:
            _write(path, header, payload)
        with pytest.raises(FileCheckError, match="is not a valid safetensors file") as raised:
            check_safetensors(path)
        assert message in str(raised.value) and str(path) in str(raised.value), name
