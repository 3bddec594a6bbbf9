"""crjepa/cli/common.py: the data sources (a Hub data set id, streamed or loaded) and the models the commands load; a
crafted model file is one error line."""

from __future__ import annotations

import json
import shutil

from crjepa.cli import build_parser, main

from helpers import EMBED_SMALL, one_error_line, parquet_export


def test_embed_and_evaluate_take_a_hub_data_set_id(cli_workdir, tmp_path, monkeypatch, capsys):
    """`crjepa embed MODEL user/name` streams the Hub data set (its export's Parquet); `evaluate` loads it. The Hub
    is stood in for by `datasets.load_dataset` serving a local export under that id."""
    import datasets

    export = parquet_export(tmp_path / "export", num_pairs=12)
    real = datasets.load_dataset
    asked = []

    def hub(path, *args, **kwargs):
        if path != "someone/crjepa-export":
            return real(path, *args, **kwargs)
        asked.append(kwargs.get("streaming", False))
        files = {"test": sorted(str(f) for f in (export / "data").glob("test-*.parquet"))}
        return real("parquet", data_files=files, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    assert (
        main(
            [
                "embed",
                str(cli_workdir / "model"),
                "someone/crjepa-export",
                "-o",
                str(tmp_path / "emb"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    info = json.loads((tmp_path / "emb" / "embeddings_info.json").read_text())
    assert info["num_rows"] == 12 and info["source"]["dataset"] == "someone/crjepa-export"
    assert main(["evaluate", str(cli_workdir / "model"), "someone/crjepa-export", "--device", "cpu"]) == 0
    assert asked == [True, False]  # embed streams, evaluate loads
    assert "Hub data set id" in build_parser()._subparsers._group_actions[0].choices["embed"].format_help()
    monkeypatch.setattr(datasets, "load_dataset", real)
    capsys.readouterr()
    assert main(["embed", str(cli_workdir / "model"), "nobody/not-cached", "-o", str(tmp_path / "emb2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert err.startswith("crjepa embed: error: Cannot load the Hub data set 'nobody/not-cached'"), err
    assert main(["embed", str(cli_workdir / "model"), "./not/here", "-o", str(tmp_path / "emb3")]) == 2
    assert "neither 'synthetic', a folder of Parquet files, nor a Hub data set id" in capsys.readouterr().err


def test_a_crafted_safetensors_header_is_one_line(cli_workdir, tmp_path, capsys):
    """A model whose safetensors header points past the file ended in a SafetensorError traceback."""
    import struct

    model = tmp_path / "model"
    shutil.copytree(cli_workdir / "model", model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 2**40]
    raw = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    for argv in (
        ["embed", str(model), *EMBED_SMALL, "-o", str(tmp_path / "out")],
        ["evaluate", str(model), "synthetic", "--num-pairs", "8", "--device", "cpu"],
    ):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{weights} is not a valid safetensors file: tensor {name!r} lies at bytes [0, 1099511627776]" in line
    assert not (tmp_path / "out").exists()
