"""The `crjepa` command end to end on a tiny saved model, the offline push, and the PNG result grid."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_python
from modeling_crjepa import CRJepaConfig, CRJepaModel
from crjepa.cli import build_parser, main
from crjepa.eval.visualize import NOT_RELEVANT, RELEVANT, display_image, grid_size, tile_origin

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["embed", "index", "search", "evaluate", "export-checkpoint", "push", "app"]
QUERY = "synthetic-test-0-000003"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny saved model, then embed -> index -> search (--png, --json) -> evaluate in one fresh process
    through the real entry point (`main`), as `crjepa ...` would run them."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(root / "model")
    commands = [
        ["embed", "model", "synthetic", "--num-pairs", "48", "--split", "test", "-o", "emb", "--batch-size", "16"],
        ["index", "emb", "--kind", "hnsw", "--param", "efSearch=32"],
        ["search", "emb", "--id", QUERY, "-k", "4", "--png", "grid.png", "--data", "recorded", "--tile", "40",
         "--json"],
        ["evaluate", "model", "synthetic", "--num-pairs", "48", "--query-split", "validation",
         "--gallery-split", "test", "--output-dir", "eval"],
    ]
    script = textwrap.dedent(f"""
        import sys
        from crjepa.cli import main
        for argv in {commands!r}:
            print("=== " + argv[0], flush=True)
            code = main(argv)
            print("=== rc", code, flush=True)
            if code:
                sys.exit(code)
    """)
    proc = run_python(["-c", script], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (root / "stdout.txt").write_text(proc.stdout)
    (root / "stderr.txt").write_text(proc.stderr)
    return root


def section(workdir: Path, command: str) -> str:
    text = (workdir / "stdout.txt").read_text()
    return text.split(f"=== {command}\n", 1)[1].split("=== rc", 1)[0]


def test_help_of_the_command_and_every_subcommand(tmp_path, capsys):
    proc = run_python(["-m", "crjepa.cli", "--help"], tmp_path)
    assert proc.returncode == 0 and "usage: crjepa" in proc.stdout
    for name in SUBCOMMANDS:
        assert name in proc.stdout
    if shutil.which("crjepa"):  # the console script, when the package is installed
        assert subprocess.run(["crjepa", "--help"], capture_output=True).returncode == 0
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: crjepa {name}") and len(out.splitlines()) > 5


def test_embed_writes_an_archive_and_index_adds_hnsw(workdir):
    info = json.loads((workdir / "emb" / "embeddings_info.json").read_text())
    assert info["num_rows"] == 48 and info["vector_columns"] == ["s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    assert info["source"] == {"dataset": "synthetic", "seed": 0, "num_pairs": 48, "split": "test"}
    assert info["indices"] == dict.fromkeys(info["vector_columns"], "hnsw")
    assert "Wrote 48 items" in section(workdir, "embed")
    meta = json.loads((workdir / "emb" / "faiss" / "s2_cross" / "index.json").read_text())
    assert meta["kind"] == "hnsw" and meta["params"]["efSearch"] == 32
    assert "hnsw" in (workdir / "emb" / "README.md").read_text()


def test_search_prints_the_exact_top_k_and_writes_the_grid(workdir):
    from crjepa.hub.archive import load_embeddings

    text = section(workdir, "search")
    results = json.loads(text[: text.rindex("}") + 1])
    assert list(results) == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    archive = load_embeddings(workdir / "emb")
    q = archive.position(QUERY)
    scores = archive.vectors["s1_cross"][q] @ archive.vectors["s2_cross"].T
    assert [h["id"] for h in results["s1->s2"]] == [archive.ids[i] for i in np.argsort(-scores)[:4]]
    assert all(h["id"] != QUERY for h in results["s1->s1"])
    assert all(len(hits) == 4 and hits[0]["labels"] for hits in results.values())

    grid = Image.open(workdir / "grid.png")
    grid.verify()
    grid = Image.open(workdir / "grid.png").convert("RGB")
    assert grid.size == grid_size(4, 4, tile=40)
    query_labels = archive.labels[q]
    for row, direction in enumerate(results):  # frame colour = relevance (shares a label with the query)
        for column, hit in enumerate(results[direction], start=1):
            relevant = bool((archive.labels[archive.position(hit["id"])] & query_labels).any())
            x, y = tile_origin(row, column, tile=40)
            assert grid.getpixel((x + 1, y + 1)) == (RELEVANT if relevant else NOT_RELEVANT)


def test_evaluate_writes_the_four_direction_table(workdir):
    table = (workdir / "eval" / "retrieval_results.md").read_text().splitlines()
    assert table[0] == "| metric | S1->S1 | S2->S2 | S1->S2 | S2->S1 |"
    data = json.loads((workdir / "eval" / "retrieval_results.json").read_text())
    assert (data["query_split"], data["gallery_split"]) == ("validation", "test")
    assert (data["num_queries"], data["num_gallery"]) == (48, 48)
    assert all(0 <= v <= 1 for values in data["metrics"].values() for v in values.values())
    assert table[2] in section(workdir, "evaluate")
    # the printed table says what it scored: data set, splits and counts
    assert ("synthetic, queries from the validation split, gallery from the test split: 48 queries x 48 gallery "
            "items (in %):\n| metric |") in section(workdir, "evaluate")


def test_search_by_id_runs_without_torch(workdir, tmp_path):
    """Searching a finished archive by id needs neither the model nor torch (an archive pulled from the Hub by a
    user with faiss alone): the whole command runs in a fresh process that never imports torch."""
    script = ("import json, sys; from crjepa.cli import main; "
              f"code = main(['search', {str(workdir / 'emb')!r}, '--id', {QUERY!r}, '-k', '3', '--json']); "
              "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
              "'transformers': 'transformers' in sys.modules}))")
    proc = run_python(["-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"code": 0, "torch": False, "transformers": False}
    hits = json.loads("\n".join(lines[:-1]))
    assert list(hits) == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"] and all(len(h) == 3 for h in hits.values())


def test_directions_module_names_the_models_spaces():
    from crjepa.eval.directions import SPACES
    from modeling_crjepa.modeling_crjepa import SPACES as MODEL_SPACES

    assert SPACES == MODEL_SPACES


def test_search_by_image_file(workdir, capsys):
    from crjepa.cli import _load_data

    image = _load_data({"dataset": "synthetic", "num_pairs": 48}, "test").with_format("numpy")[3]["s2"]
    np.save(workdir / "query.npy", image)
    code = main(["search", str(workdir / "emb"), "--image", str(workdir / "query.npy"), "--sensor", "s2",
                 "--model", str(workdir / "model"), "--device", "cpu", "-k", "3", "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ["s2->s1", "s2->s2"]
    assert results["s2->s2"][0]["id"] == QUERY and results["s2->s2"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_text_results_name_the_query_labels_and_each_hits_relevance(workdir, capsys):
    from crjepa.hub.archive import load_embeddings

    assert main(["search", str(workdir / "emb"), "--id", QUERY, "-k", "3", "--direction", "s1->s2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    archive = load_embeddings(workdir / "emb")
    query = set(archive.class_names[c] for c in np.flatnonzero(archive.labels[archive.position(QUERY)]))
    assert lines[0] == f"S1->S2  (query: {QUERY}; labels: {', '.join(sorted(query, key=archive.class_names.index))})"
    hits = archive.search_by_id(QUERY, "s1->s2", 3)
    for line, hit in zip(lines[1:], hits, strict=True):
        shared = len(query & set(hit.labels))
        verdict = "relevant" if shared else "not relevant"
        assert f"{hit.id}  {verdict}, {shared}/{len(query)} labels shared  [{', '.join(hit.labels)}]" in line, line


def _parquet_export(folder: Path, num_pairs: int = 8) -> Path:
    from crjepa.cli import _load_data

    _load_data({"dataset": "synthetic", "num_pairs": num_pairs}, "test").to_parquet(
        str(folder / "data" / "test-00000-of-00001.parquet"))
    return folder


def test_recorded_source_of_an_archive_embedded_from_an_absolute_path(workdir, tmp_path, monkeypatch, capsys):
    """The published record names only the folder's last component (no local path); the archive also keeps the
    absolute path in a local file that is never uploaded, so `--png --data recorded` works from any folder."""
    from huggingface_hub.utils import filter_repo_objects

    from crjepa.hub.access import LOCAL_ONLY, push_folder
    from crjepa.utils.atomic import MARKER_FILE

    data = _parquet_export(tmp_path / "private" / "export")
    emb = tmp_path / "emb"
    assert main(["embed", str(workdir / "model"), str(data), "-o", str(emb), "--device", "cpu"]) == 0
    assert json.loads((emb / "embeddings_info.json").read_text())["source"]["dataset"] == "export"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["search", str(emb), "--id", QUERY, "-k", "2", "--png", "g.png", "--data", "recorded"]) == 0, \
        capsys.readouterr().err
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
    assert not any(str(tmp_path) in (emb / f).read_text(errors="ignore") for f in api.uploaded if f.endswith(
        (".json", ".md")))


def test_embed_and_evaluate_take_a_hub_data_set_id(workdir, tmp_path, monkeypatch, capsys):
    """`crjepa embed MODEL user/name` streams the Hub data set (its export's Parquet); `evaluate` loads it. The Hub
    is stood in for by `datasets.load_dataset` serving a local export under that id."""
    import datasets

    export = _parquet_export(tmp_path / "export", num_pairs=12)
    real = datasets.load_dataset
    asked = []

    def hub(path, *args, **kwargs):
        if path != "someone/crjepa-export":
            return real(path, *args, **kwargs)
        asked.append(kwargs.get("streaming", False))
        files = {"test": sorted(str(f) for f in (export / "data").glob("test-*.parquet"))}
        return real("parquet", data_files=files, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    assert main(["embed", str(workdir / "model"), "someone/crjepa-export", "-o", str(tmp_path / "emb"),
                 "--device", "cpu"]) == 0
    info = json.loads((tmp_path / "emb" / "embeddings_info.json").read_text())
    assert info["num_rows"] == 12 and info["source"]["dataset"] == "someone/crjepa-export"
    assert main(["evaluate", str(workdir / "model"), "someone/crjepa-export", "--device", "cpu"]) == 0
    assert asked == [True, False]  # embed streams, evaluate loads
    assert "Hub data set id" in build_parser()._subparsers._group_actions[0].choices["embed"].format_help()
    monkeypatch.setattr(datasets, "load_dataset", real)
    capsys.readouterr()
    assert main(["embed", str(workdir / "model"), "nobody/not-cached", "-o", str(tmp_path / "emb2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading progress bar
    assert err.startswith("crjepa embed: error: Cannot load the Hub data set 'nobody/not-cached'"), err
    assert main(["embed", str(workdir / "model"), "./not/here", "-o", str(tmp_path / "emb3")]) == 2
    assert "neither 'synthetic', a folder of Parquet files, nor a Hub data set id" in capsys.readouterr().err


def test_errors_are_one_line_without_traceback(workdir, capsys):
    assert main(["search", str(workdir / "emb"), "--id", "missing-id"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crjepa search: error: No item with id 'missing-id'") and "Traceback" not in err
    assert main(["search", str(workdir / "emb"), "--image", str(workdir / "query.npy")]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_offline_push_fails_with_one_clear_sentence(workdir, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": ""}
    proc = run_python(["-m", "crjepa.cli", "push", str(workdir / "emb"), "someone/crjepa-emb"], tmp_path,
                      **env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------------- issue 16
def test_embed_never_replaces_an_unrelated_folder_or_file(workdir, tmp_path, capsys):
    """`embed -o` on an existing unrelated folder used to delete it and exit 0; now it stops before any work."""
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    args = ["embed", str(workdir / "model"), "synthetic", "--num-pairs", "8", "--split", "test", "--device", "cpu"]
    for target in (precious, a_file):
        assert main([*args, "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and str(target) in err and "--overwrite" in err, err
    assert (precious / "chapter1.tex").read_text() == "years of work" and a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "thesis"]  # nothing hidden moved aside
    # an earlier archive is replaced; --overwrite replaces anything
    assert main([*args, "-o", str(workdir / "emb-again")]) == 0
    assert main([*args, "-o", str(workdir / "emb-again")]) == 0
    assert main([*args, "-o", str(precious), "--overwrite"]) == 0
    assert not (precious / "chapter1.tex").exists() and (precious / "embeddings_info.json").is_file()
    capsys.readouterr()


def test_archive_is_published_without_local_paths_and_with_the_umask(workdir, tmp_path):
    data = tmp_path / "private" / "parquet-export"
    from crjepa.cli import _load_data

    _load_data({"dataset": "synthetic", "num_pairs": 8}, "test").to_parquet(str(data / "data" / "test-00000-of-00001.parquet"))
    old = os.umask(0o022)
    try:
        code = main(["embed", str(workdir / "model"), str(data), "-o", str(tmp_path / "emb"), "--device", "cpu"])
    finally:
        os.umask(old)
    assert code == 0
    info = (tmp_path / "emb" / "embeddings_info.json").read_text()
    card = (tmp_path / "emb" / "README.md").read_text()
    assert str(tmp_path) not in info and str(tmp_path) not in card
    assert json.loads(info)["source"]["dataset"] == "parquet-export"
    assert (tmp_path / "emb").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_the_synthetic_source_a_training_run_records_is_accepted_within_bounds(tmp_path):
    """`--data recorded` on the quick start's archive: training records the synthetic split sizes of its YAML."""
    from crjepa.cli import recorded_source
    from crjepa.train.config import load_run_config

    options = load_run_config(None, [])["data"]["options"]  # configs/cpu_default.yaml, the quick start
    source = {"dataset": "synthetic", "split": "test", **options}
    assert recorded_source(source, tmp_path) == source
    with pytest.raises(ValueError, match=r"num_test=10000000 is outside \[0, 100000\]"):
        recorded_source({**source, "num_test": 10_000_000}, tmp_path)


def test_downloaded_archive_fields_are_not_trusted(workdir, tmp_path, capsys):
    """A crafted `source` is used only when asked (--data recorded) and checked first; an archive without a
    fingerprint never passes the model check; bad fields give one error line naming the file."""
    from crjepa.hub.archive import EmbeddingsError, load_embeddings

    crafted = tmp_path / "crafted"
    shutil.copytree(workdir / "emb", crafted)
    info_file = crafted / "embeddings_info.json"
    info = json.loads(info_file.read_text())
    info["source"] = {"dataset": "synthetic", "num_pairs": 10_000_000, "image_size": 20_000, "split": "test"}
    info_file.write_text(json.dumps(info))
    search = ["search", str(crafted), "--id", QUERY, "-k", "2", "--png", str(tmp_path / "g.png")]
    assert main(search) == 2
    assert "pass --data recorded to use it" in capsys.readouterr().err  # never regenerated without asking
    assert main([*search, "--data", "recorded"]) == 2
    assert "num_pairs=10000000 is outside" in capsys.readouterr().err and not (tmp_path / "g.png").exists()

    model = CRJepaModel.from_pretrained(workdir / "model")
    capsys.readouterr()  # the weight-loading progress bar
    info["model_fingerprint"] = ""
    info_file.write_text(json.dumps(info))
    with pytest.raises(EmbeddingsError, match="records no model fingerprint"):
        load_embeddings(crafted, model=model)
    for field, value, message in (("dimension", 10**9, "dimension must be an integer"),
                                  ("vector_columns", ["../../etc_cross"], "vector_columns must be a list"),
                                  ("indices", {"s1_cross": "ondisk"}, "indices must map")):
        bad = {**info, field: value}
        info_file.write_text(json.dumps(bad))
        assert main(["search", str(crafted), "--id", QUERY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(info_file) in err and message in err, err


def test_bad_files_give_one_error_line_naming_the_file(workdir, tmp_path, capsys):
    """Issue 16 item 8: truncated index.faiss, unknown key in index.json, corrupt PNG query, embed -o on a
    read-only file system."""
    broken = tmp_path / "emb"
    shutil.copytree(workdir / "emb", broken)
    index_file = broken / "faiss" / "s1_cross" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    assert main(["search", str(broken), "--id", QUERY, "--direction", "s1->s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(index_file) in err and "truncated or corrupt" in err, err
    shutil.rmtree(broken)
    shutil.copytree(workdir / "emb", broken)
    meta_file = broken / "faiss" / "s2_cross" / "index.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "extra": 1}))
    assert main(["search", str(broken), "--id", QUERY, "--direction", "s1->s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(meta_file) in err and "unknown key(s) ['extra']" in err, err

    png = tmp_path / "query.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["search", str(workdir / "emb"), "--image", str(png), "--sensor", "s2", "--model",
                 str(workdir / "model"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(png) in err and "not a readable image" in err, err

    readonly = Path("/proc/crjepa-emb")  # a file system nobody (not even root) may create folders in
    assert main(["embed", str(workdir / "model"), "synthetic", "--num-pairs", "8", "-o", str(readonly / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(readonly) in err and "choose a writable path" in err, err


def test_help_quotes_every_direction(capsys):
    """Typed as shown, an unquoted s1->s2 makes the shell write a file named s2 (issue 12)."""
    import re

    texts = [build_parser().format_help()]
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        texts.append(capsys.readouterr().out)
    arrows = [m for text in texts for m in re.finditer(r"\S*->\S*", text)]
    assert arrows, "the help shows directions"
    for match in arrows:
        assert match.group().lstrip("(").startswith("'"), match.group()


def test_user_errors_are_one_line_with_exit_2(tmp_path):
    proc = run_python(["-m", "crjepa.cli", "search", str(tmp_path), "--id", "x", "--direction", "s1->s9"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("crjepa search: error:")
def test_index_recall_prints_and_records_the_calibration(workdir, tmp_path, capsys):
    folder = tmp_path / "emb"
    shutil.copytree(workdir / "emb", folder)
    assert main(["index", str(folder), "--kind", "hnsw", "--recall", "0.9", "--columns", "s2_cross"]) == 0
    out = capsys.readouterr().out
    assert "s2_cross: hnsw recall@10 " in out and "for target 0.9, measured on 4 held-out archive vectors" in out
    assert " q/s on " in out and "efSearch" in out and "calibration " in out
    info = json.loads((folder / "embeddings_info.json").read_text())
    cal = info["index_calibration"]["s2_cross"]
    assert cal["target"] == 0.9 and cal["queries"] == 4 and cal["qps"] > 0
    card = (folder / "README.md").read_text()
    assert f"calibrated for recall@10 >= 0.9: measured {cal['recall']:.3f}" in card
    assert "on 4 held-out archive vectors" in card


# ---------------------------------------------------------------------------------------------- nothing lost
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    """The command's one `error:` line (progress bars may share stderr), asserting there is no other and no
    traceback or usage block."""
    found = re.findall(r"crjepa [\w-]+: error: [^\r\n]*", err)
    assert len(found) == 1 and err.count("error:") == 1, err[-2000:]
    assert "Traceback" not in err and "usage:" not in err, err[-2000:]
    return found[0]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


EMBED_SMALL = ["synthetic", "--num-pairs", "8", "--split", "test", "--device", "cpu", "--batch-size", "4",
               "--shard-rows", "4"]


def test_embed_keeps_the_old_archive_until_the_new_one_is_complete(workdir, tmp_path, capsys, monkeypatch):
    """`crjepa embed` deleted the folder it was about to write before loading the model: a typo in the model path
    (or any failure) lost the earlier archive, with or without --overwrite. Now the new archive is written beside
    the old one and swapped in only when complete; a failed run can be resumed."""
    import errno

    import crjepa.hub.embedding as embedding

    for name, run_folder in (("plain", False), ("embedded", True)):  # training's embeddings/ has no .embed/
        old = tmp_path / name
        shutil.copytree(workdir / "emb", old)
        if not run_folder:
            shutil.rmtree(old / ".embed")
        before = _files(old)
        for extra in ([], ["--overwrite"]):
            assert main(["embed", str(workdir / "modle"), *EMBED_SMALL, "-o", str(old), *extra]) == 2
            assert "Cannot load a CR-JEPA model" in _one_error_line(capsys.readouterr().err)
            assert _files(old) == before, (name, extra)

    real = embedding.embed_shards

    def disk_full_after_one_shard(*args, **kwargs):
        def stop(shard: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "data/test-00001.parquet")

        return real(*args, **{**kwargs, "on_shard": stop})

    monkeypatch.setattr(embedding, "embed_shards", disk_full_after_one_shard)
    assert main(["embed", str(workdir / "model"), *EMBED_SMALL, "-o", str(old)]) == 2
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert _files(old) == before  # the old archive (48 rows) is whole
    staging = tmp_path / ".embedded.embed-new"
    assert [p.name for p in (staging / "data").iterdir()] == ["test-00000.parquet"]  # the new one waits beside it
    monkeypatch.undo()
    assert main(["embed", str(workdir / "model"), *EMBED_SMALL, "-o", str(old)]) == 0  # the same command resumes
    assert "1 shards written, 1 already done" in capsys.readouterr().out
    assert json.loads((old / "embeddings_info.json").read_text())["num_rows"] == 8 and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded", "plain"]


def test_embed_refuses_an_output_equal_to_inside_or_holding_its_input(workdir, tmp_path, capsys):
    """`crjepa embed M D -o D --overwrite` deleted the input data set itself."""
    from crjepa.cli import _load_data

    data = tmp_path / "export"
    _load_data({"dataset": "synthetic", "num_pairs": 8}, "test").to_parquet(
        str(data / "data" / "test-00000-of-00001.parquet"))
    before = _files(data)
    for output, relation in ((data, "is the input"), (data / "emb", "lies inside the input"),
                             (tmp_path, "contains the input")):
        assert main(["embed", str(workdir / "model"), str(data), "-o", str(output), "--overwrite",
                     "--device", "cpu"]) == 2
        assert relation in _one_error_line(capsys.readouterr().err)
        assert _files(data) == before and not (data / "emb").exists()


def test_arguments_out_of_range_are_one_line_before_any_work(workdir, tmp_path, capsys):
    """`--batch-size 0` (ZeroDivisionError), `--image-size 100000` (a 74.5 TiB allocation), `search --tile 200000`
    (MemoryError) ended in tracebacks: every argument is now range-checked by the parser, one line, exit 2."""
    out, png = tmp_path / "out", tmp_path / "g.png"
    embed = ["embed", str(workdir / "model"), "synthetic", "--num-pairs", "8", "-o", str(out)]
    search = ["search", str(workdir / "emb"), "--id", QUERY]
    cases = [
        (embed + ["--batch-size", "0"], "--batch-size: must be an integer in [1, 65536], found 0"),
        (embed + ["--batch-size", "-5"], "--batch-size: must be an integer in [1, 65536], found -5"),
        (embed + ["--image-size", "100000"], "--image-size: must be an integer in [8, 512], found 100000"),
        (embed + ["--num-processes", "0"], "--num-processes: must be an integer in [1, 256]"),
        (embed + ["--shard-rows", "0"], "--shard-rows: must be an integer"),
        (embed + ["--recall", "1.5"], "--recall: must be a number in (0, 1]"),
        (embed + ["--num-workers", "-1"], "--num-workers: must be an integer in [0, 256]"),
        (embed + ["--device", "cuda:7"], "--device cuda:7: no such GPU here"),
        (search + ["--png", str(png), "--data", "synthetic", "--tile", "200000"],
         "--tile: must be an integer in [8, 1024]"),
        (search + ["-k", "0"], "-k: must be an integer in [1, 100000], found 0"),
        (["evaluate", str(workdir / "model"), "synthetic", "-k", "0"], "-k: must be an integer in [1, 100000]"),
        (["index", str(workdir / "emb"), "--recall", "0"], "--recall: must be a number in (0, 1]"),
    ]
    for argv, message in cases:
        assert _run(argv) == 2, argv
        assert message in _one_error_line(capsys.readouterr().err), argv
        assert not out.exists() and not png.exists()


def test_bad_query_images_and_index_parameters_are_one_line(workdir, tmp_path, capsys):
    """`search --image` of shape (12, 0, 0) or of dates or strings, and `index --param M=-4` (std::bad_alloc) or
    `nlist=0` (faiss crashed) ended in tracebacks."""
    import datetime

    images = {"empty": (np.zeros((12, 0, 0), np.uint16), "is 0x0 pixels"),
              "dates": (np.full((12, 4, 4), np.datetime64(datetime.date(2020, 1, 1))), "holds datetime64[D] values"),
              "strings": (np.full((12, 4, 4), "a"), "holds <U1 values"),
              "channels": (np.zeros((5, 8, 8), np.uint16), "has 5 channel(s); the model's 's2' images have 12")}
    for name, (array, message) in images.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert main(["search", str(workdir / "emb"), "--image", str(tmp_path / f"{name}.npy"), "--sensor", "s2",
                     "--model", str(workdir / "model"), "--device", "cpu"]) == 2
        assert message in _one_error_line(capsys.readouterr().err), name
    archive = tmp_path / "emb"
    shutil.copytree(workdir / "emb", archive)
    before = _files(archive)
    for params, message in ((["--kind", "hnsw", "--param", "M=1000"], "M=1000 must be an integer in [2, 512]"),
                            (["--kind", "ivfpq", "--param", "nlist=0"], "nlist=0 must be an integer in [1, ")):
        assert main(["index", str(archive), *params]) == 2
        assert message in _one_error_line(capsys.readouterr().err)
        assert _files(archive) == before


def test_a_crafted_safetensors_header_is_one_line(workdir, tmp_path, capsys):
    """A model whose safetensors header points past the file ended in a SafetensorError traceback."""
    import struct

    model = tmp_path / "model"
    shutil.copytree(workdir / "model", model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 2**40]
    raw = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])
    for argv in (["embed", str(model), *EMBED_SMALL, "-o", str(tmp_path / "out")],
                 ["evaluate", str(model), "synthetic", "--num-pairs", "8", "--device", "cpu"]):
        assert main(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"{weights} is not a valid safetensors file: tensor {name!r} lies at bytes [0, 1099511627776]" in line
    assert not (tmp_path / "out").exists()


def test_crjepa_index_on_a_real_full_disk_keeps_the_archive(workdir, small_disk, capsys):
    """faiss reported the full disk as a RuntimeError traceback (and the indices written before it replaced the old
    ones while the info still listed those); now: one line, and the archive's indices, info and card as before."""
    from helpers import fill_disk

    disk = small_disk("8m")
    archive = disk / "emb"
    shutil.copytree(workdir / "emb", archive, ignore=shutil.ignore_patterns("faiss"))  # an archive without indices
    info = json.loads((archive / "embeddings_info.json").read_text())
    (archive / "embeddings_info.json").write_text(json.dumps({**info, "indices": {}, "index_calibration": {}}))
    before = _files(archive)
    filler = fill_disk(disk, leave=8 << 10)  # less than one exact index: faiss' own write fails
    assert main(["index", str(archive), "--kind", "exact"]) == 2
    assert "No space left on device" in _one_error_line(capsys.readouterr().err)
    assert _files(archive) == before
    assert not [p for p in archive.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]
    filler.unlink()
    assert main(["index", str(archive), "--kind", "exact"]) == 0
    assert json.loads((archive / "embeddings_info.json").read_text())["indices"] == dict.fromkeys(
        ["s1_unified", "s1_cross", "s2_unified", "s2_cross"], "exact")
