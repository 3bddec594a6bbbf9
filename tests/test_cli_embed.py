"""crjepa/cli/embed.py: `crjepa embed` writes an archive, never replaces an unrelated folder or its own input, keeps
the old archive until the new one is complete, and publishes no local path."""

from __future__ import annotations

import json
import os
import shutil

from crjepa.cli import main

from helpers import EMBED_SMALL, cli_section, folder_files, one_error_line


def test_embed_writes_an_archive_and_index_adds_hnsw(cli_workdir):
    info = json.loads((cli_workdir / "emb" / "embeddings_info.json").read_text())
    assert info["num_rows"] == 48 and info["vector_columns"] == ["s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    assert info["source"] == {"dataset": "synthetic", "seed": 0, "num_pairs": 48, "split": "test"}
    assert info["indices"] == dict.fromkeys(info["vector_columns"], "hnsw")
    assert "Wrote 48 items" in cli_section(cli_workdir, "embed")
    meta = json.loads((cli_workdir / "emb" / "faiss" / "s2_cross" / "index.json").read_text())
    assert meta["kind"] == "hnsw" and meta["params"]["efSearch"] == 32
    assert "hnsw" in (cli_workdir / "emb" / "README.md").read_text()


def test_embed_never_replaces_an_unrelated_folder_or_file(cli_workdir, tmp_path, capsys):
    """`embed -o` on an existing unrelated folder used to delete it and exit 0; now it stops before any work."""
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    args = ["embed", str(cli_workdir / "model"), "synthetic", "--num-pairs", "8", "--split", "test", "--device", "cpu"]
    for target in (precious, a_file):
        assert main([*args, "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and str(target) in err and "--overwrite" in err, err
    assert (precious / "chapter1.tex").read_text() == "years of work" and a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "thesis"]  # nothing hidden moved aside
    # an earlier archive is replaced; --overwrite replaces anything
    assert main([*args, "-o", str(cli_workdir / "emb-again")]) == 0
    assert main([*args, "-o", str(cli_workdir / "emb-again")]) == 0
    assert main([*args, "-o", str(precious), "--overwrite"]) == 0
    assert not (precious / "chapter1.tex").exists() and (precious / "embeddings_info.json").is_file()
    capsys.readouterr()


def test_archive_is_published_without_local_paths_and_with_the_umask(cli_workdir, tmp_path):
    data = tmp_path / "private" / "parquet-export"
    from crjepa.cli.common import load_data

    load_data({"dataset": "synthetic", "num_pairs": 8}, "test").to_parquet(
        str(data / "data" / "test-00000-of-00001.parquet")
    )
    old = os.umask(0o022)
    try:
        code = main(["embed", str(cli_workdir / "model"), str(data), "-o", str(tmp_path / "emb"), "--device", "cpu"])
    finally:
        os.umask(old)
    assert code == 0
    info = (tmp_path / "emb" / "embeddings_info.json").read_text()
    card = (tmp_path / "emb" / "README.md").read_text()
    assert str(tmp_path) not in info and str(tmp_path) not in card
    assert json.loads(info)["source"]["dataset"] == "parquet-export"
    assert (tmp_path / "emb").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_embed_keeps_the_old_archive_until_the_new_one_is_complete(cli_workdir, tmp_path, capsys, monkeypatch):
    """`crjepa embed` deleted the folder it was about to write before loading the model: a typo in the model path
    (or any failure) lost the earlier archive, with or without --overwrite. Now the new archive is written beside
    the old one and swapped in only when complete; a failed run can be resumed."""
    import errno

    import crjepa.hub.embedding as embedding

    for name, run_folder in (("plain", False), ("embedded", True)):  # training's embeddings/ has no .embed/
        old = tmp_path / name
        shutil.copytree(cli_workdir / "emb", old)
        if not run_folder:
            shutil.rmtree(old / ".embed")
        before = folder_files(old)
        for extra in ([], ["--overwrite"]):
            assert main(["embed", str(cli_workdir / "modle"), *EMBED_SMALL, "-o", str(old), *extra]) == 2
            assert "Cannot load a CR-JEPA model" in one_error_line(capsys.readouterr().err)
            assert folder_files(old) == before, (name, extra)

    real = embedding.embed_shards

    def disk_full_after_one_shard(*args, **kwargs):
        def stop(shard: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", "data/test-00001.parquet")

        return real(*args, **{**kwargs, "on_shard": stop})

    monkeypatch.setattr(embedding, "embed_shards", disk_full_after_one_shard)
    assert main(["embed", str(cli_workdir / "model"), *EMBED_SMALL, "-o", str(old)]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert folder_files(old) == before  # the old archive (48 rows) is whole
    staging = tmp_path / ".embedded.embed-new"
    assert [p.name for p in (staging / "data").iterdir()] == ["test-00000.parquet"]  # the new one waits beside it
    monkeypatch.undo()
    assert main(["embed", str(cli_workdir / "model"), *EMBED_SMALL, "-o", str(old)]) == 0  # the same command resumes
    assert "1 shards written, 1 already done" in capsys.readouterr().out
    assert json.loads((old / "embeddings_info.json").read_text())["num_rows"] == 8 and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded", "plain"]


def test_embed_refuses_an_output_equal_to_inside_or_holding_its_input(cli_workdir, tmp_path, capsys):
    """`crjepa embed M D -o D --overwrite` deleted the input data set itself."""
    from crjepa.cli.common import load_data

    data = tmp_path / "export"
    load_data({"dataset": "synthetic", "num_pairs": 8}, "test").to_parquet(
        str(data / "data" / "test-00000-of-00001.parquet")
    )
    before = folder_files(data)
    for output, relation in (
        (data, "is the input"),
        (data / "emb", "lies inside the input"),
        (tmp_path, "contains the input"),
    ):
        assert (
            main(["embed", str(cli_workdir / "model"), str(data), "-o", str(output), "--overwrite", "--device", "cpu"])
            == 2
        )
        assert relation in one_error_line(capsys.readouterr().err)
        assert folder_files(data) == before and not (data / "emb").exists()
