"""crjepa/cli/search.py: `crjepa search` prints the exact top-k (by id without torch, by image with the model), the
grid's frames show relevance, a recorded data source is used only when asked and checked first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crjepa.cli import main
from crjepa.eval.visualize import NOT_RELEVANT, RELEVANT, grid_size, tile_origin
from modeling_crjepa import CRJepaModel

from helpers import CLI_QUERY, cli_section, folder_files, one_error_line, parquet_export, run_python


def test_search_prints_the_exact_top_k_and_writes_the_grid(cli_workdir):
    from crjepa.hub.archive import load_embeddings

    text = cli_section(cli_workdir, "search")
    results = json.loads(text[: text.rindex("}") + 1])
    assert list(results) == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    archive = load_embeddings(cli_workdir / "emb")
    q = archive.position(CLI_QUERY)
    scores = archive.vectors["s1_cross"][q] @ archive.vectors["s2_cross"].T
    assert [h["id"] for h in results["s1->s2"]] == [archive.ids[i] for i in np.argsort(-scores)[:4]]
    assert all(h["id"] != CLI_QUERY for h in results["s1->s1"])
    assert all(len(hits) == 4 and hits[0]["labels"] for hits in results.values())

    grid = Image.open(cli_workdir / "grid.png")
    grid.verify()
    grid = Image.open(cli_workdir / "grid.png").convert("RGB")
    assert grid.size == grid_size(4, 4, tile=40)
    query_labels = archive.labels[q]
    for row, direction in enumerate(results):  # frame colour = relevance (shares a label with the query)
        for column, hit in enumerate(results[direction], start=1):
            relevant = bool((archive.labels[archive.position(hit["id"])] & query_labels).any())
            x, y = tile_origin(row, column, tile=40)
            assert grid.getpixel((x + 1, y + 1)) == (RELEVANT if relevant else NOT_RELEVANT)


def test_search_by_id_runs_without_torch(cli_workdir, tmp_path):
    """Searching a finished archive by id needs neither the model nor torch (an archive pulled from the Hub by a
    user with faiss alone): the whole command runs in a fresh process that never imports torch."""
    script = (
        "import json, sys; from crjepa.cli import main; "
        f"code = main(['search', {str(cli_workdir / 'emb')!r}, '--id', {CLI_QUERY!r}, '-k', '3', '--json']); "
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
        "'transformers': 'transformers' in sys.modules}))"
    )
    proc = run_python(["-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"code": 0, "torch": False, "transformers": False}
    hits = json.loads("\n".join(lines[:-1]))
    assert list(hits) == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"] and all(len(h) == 3 for h in hits.values())


def test_search_by_image_file(cli_workdir, capsys):
    from crjepa.cli.common import load_data

    image = load_data({"dataset": "synthetic", "num_pairs": 48}, "test").with_format("numpy")[3]["s2"]
    np.save(cli_workdir / "query.npy", image)
    code = main(
        [
            "search",
            str(cli_workdir / "emb"),
            "--image",
            str(cli_workdir / "query.npy"),
            "--sensor",
            "s2",
            "--model",
            str(cli_workdir / "model"),
            "--device",
            "cpu",
            "-k",
            "3",
            "--json",
        ]
    )
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ["s2->s1", "s2->s2"]
    assert results["s2->s2"][0]["id"] == CLI_QUERY and results["s2->s2"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_results_name_the_query_labels_and_each_hits_relevance(cli_workdir, capsys):
    from crjepa.hub.archive import load_embeddings

    assert main(["search", str(cli_workdir / "emb"), "--id", CLI_QUERY, "-k", "3", "--direction", "s1->s2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    archive = load_embeddings(cli_workdir / "emb")
    query = set(archive.class_names[c] for c in np.flatnonzero(archive.labels[archive.position(CLI_QUERY)]))
    shown = ", ".join(sorted(query, key=archive.class_names.index))
    assert lines[0] == f"S1->S2  (query: {CLI_QUERY}; labels: {shown})"
    hits = archive.search_by_id(CLI_QUERY, "s1->s2", 3)
    for line, hit in zip(lines[1:], hits, strict=True):
        shared = len(query & set(hit.labels))
        verdict = "relevant" if shared else "not relevant"
        assert f"{hit.id}  {verdict}, {shared}/{len(query)} labels shared  [{', '.join(hit.labels)}]" in line, line


def test_recorded_source_of_an_archive_embedded_from_an_absolute_path(cli_workdir, tmp_path, monkeypatch, capsys):
    """The published record names only the folder's last component (no local path); the archive also keeps the
    absolute path in a local file that is never uploaded, so `--png --data recorded` works from any folder."""
    from huggingface_hub.utils import filter_repo_objects

    from crjepa.hub.access import LOCAL_ONLY, push_folder
    from crjepa.utils.atomic import MARKER_FILE

    data = parquet_export(tmp_path / "private" / "export")
    emb = tmp_path / "emb"
    assert main(["embed", str(cli_workdir / "model"), str(data), "-o", str(emb), "--device", "cpu"]) == 0
    assert json.loads((emb / "embeddings_info.json").read_text())["source"]["dataset"] == "export"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["search", str(emb), "--id", CLI_QUERY, "-k", "2", "--png", "g.png", "--data", "recorded"]) == 0, (
        capsys.readouterr().err
    )
    assert Image.open(elsewhere / "g.png").size == grid_size(4, 2)

    class Recorder:
        def whoami(self):
            return {"name": "me"}

        def create_repo(self, *args, **kwargs):
            return "https://huggingface.co/datasets/me/emb"

        def upload_folder(self, folder_path, ignore_patterns, **kwargs):
            files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
            self.uploaded = list(filter_repo_objects(files, ignore_patterns=ignore_patterns))

    api = Recorder()
    push_folder(emb, "me/emb", api=api)
    assert ".crjepa-source.json" in LOCAL_ONLY and (emb / ".crjepa-source.json").is_file()
    assert ".crjepa-source.json" not in api.uploaded and MARKER_FILE not in api.uploaded and api.uploaded
    assert not any(
        str(tmp_path) in (emb / f).read_text(errors="ignore") for f in api.uploaded if f.endswith((".json", ".md"))
    )


def test_the_synthetic_source_a_training_run_records_is_accepted_within_bounds(tmp_path):
    """`--data recorded` on the quick start's archive: training records the synthetic split sizes of its YAML."""
    from crjepa.cli.search import recorded_source
    from crjepa.train.config import load_run_config

    options = load_run_config(None, [])["data"]["options"]  # configs/cpu_default.yaml, the quick start
    source = {"dataset": "synthetic", "split": "test", **options}
    assert recorded_source(source, tmp_path) == source
    with pytest.raises(ValueError, match=r"num_test=10000000 is outside \[0, 100000\]"):
        recorded_source({**source, "num_test": 10_000_000}, tmp_path)


def test_downloaded_archive_fields_are_not_trusted(cli_workdir, tmp_path, capsys):
    """A crafted `source` is used only when asked (--data recorded) and checked first; an archive without a
    fingerprint never passes the model check; bad fields give one error line naming the file."""
    from crjepa.hub.archive import EmbeddingsError, load_embeddings

    crafted = tmp_path / "crafted"
    shutil.copytree(cli_workdir / "emb", crafted)
    info_file = crafted / "embeddings_info.json"
    info = json.loads(info_file.read_text())
    info["source"] = {"dataset": "synthetic", "num_pairs": 10_000_000, "image_size": 20_000, "split": "test"}
    info_file.write_text(json.dumps(info))
    search = ["search", str(crafted), "--id", CLI_QUERY, "-k", "2", "--png", str(tmp_path / "g.png")]
    assert main(search) == 2
    assert "pass --data recorded to use it" in capsys.readouterr().err  # never regenerated without asking
    assert main([*search, "--data", "recorded"]) == 2
    assert "num_pairs=10000000 is outside" in capsys.readouterr().err and not (tmp_path / "g.png").exists()

    model = CRJepaModel.from_pretrained(cli_workdir / "model")
    capsys.readouterr()  # the weight-loading progress bar
    info["model_fingerprint"] = ""
    info_file.write_text(json.dumps(info))
    with pytest.raises(EmbeddingsError, match="records no model fingerprint"):
        load_embeddings(crafted, model=model)
    for field, value, message in (
        ("dimension", 10**9, "dimension must be an integer"),
        ("vector_columns", ["../../etc_cross"], "vector_columns must be a list"),
        ("indices", {"s1_cross": "ondisk"}, "indices must map"),
    ):
        bad = {**info, field: value}
        info_file.write_text(json.dumps(bad))
        assert main(["search", str(crafted), "--id", CLI_QUERY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(info_file) in err and message in err, err


def test_bad_query_images_and_index_parameters_are_one_line(cli_workdir, tmp_path, capsys):
    """`search --image` of shape (12, 0, 0) or of dates or strings, and `index --param M=-4` (std::bad_alloc) or
    `nlist=0` (faiss crashed) ended in tracebacks."""
    import datetime

    images = {
        "empty": (np.zeros((12, 0, 0), np.uint16), "is 0x0 pixels"),
        "dates": (np.full((12, 4, 4), np.datetime64(datetime.date(2020, 1, 1))), "holds datetime64[D] values"),
        "strings": (np.full((12, 4, 4), "a"), "holds <U1 values"),
        "channels": (np.zeros((5, 8, 8), np.uint16), "has 5 channel(s); the model's 's2' images have 12"),
    }
    for name, (array, message) in images.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert (
            main(
                [
                    "search",
                    str(cli_workdir / "emb"),
                    "--image",
                    str(tmp_path / f"{name}.npy"),
                    "--sensor",
                    "s2",
                    "--model",
                    str(cli_workdir / "model"),
                    "--device",
                    "cpu",
                ]
            )
            == 2
        )
        assert message in one_error_line(capsys.readouterr().err), name
    archive = tmp_path / "emb"
    shutil.copytree(cli_workdir / "emb", archive)
    before = folder_files(archive)
    for params, message in (
        (["--kind", "hnsw", "--param", "M=1000"], "M=1000 must be an integer in [2, 512]"),
        (["--kind", "ivfpq", "--param", "nlist=0"], "nlist=0 must be an integer in [1, "),
    ):
        assert main(["index", str(archive), *params]) == 2
        assert message in one_error_line(capsys.readouterr().err)
        assert folder_files(archive) == before
