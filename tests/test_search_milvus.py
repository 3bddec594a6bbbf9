"""The Milvus backend (crjepa/search/milvus.py) on Milvus Lite: results equal faiss's, calibrated recall holds on
fresh queries, filters select inside Milvus, foreign collections are refused, the load streams and resumes (a fake
client that, like a Milvus server, keeps duplicate inserts; a real kill of the CLI mid-load), the extra's absence is
one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from crjepa.hub.archive import EmbeddingsError, load_embeddings, write_embeddings_dataset  # noqa: E402
from crjepa.search import milvus  # noqa: E402
from crjepa.search.index import default_params  # noqa: E402
from helpers import offline_env  # noqa: E402

CLASSES = ["Arable land", "Pastures", "Coniferous forest", "Urban fabric", "Inland waters"]


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 40, spread: float = 0.8) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_archive(folder: Path, n: int = 1200, dim: int = 32, seed: int = 0, rows_per_shard: int = 500,
                  present_s1: np.ndarray | None = None, fresh: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A two-sensor archive (unified + cross columns) with labels, a tile and a date per row. ``fresh`` more
    vectors per column, drawn the same way, are returned under "<column>/fresh" (queries not in the archive)."""
    rng = np.random.default_rng(seed)
    drawn = {name: clustered(rng, n + fresh, dim) for name in ("s1_unified", "s2_unified", "s1_cross", "s2_cross")}
    vectors = {name: x[:n] for name, x in drawn.items()}
    labels = [sorted({int(i % 5), int(rng.integers(0, 5))}) for i in range(n)]
    metadata = {"tile": [f"T{i % 7}" for i in range(n)], "s2_date": [f"2017-{1 + i % 12:02d}-{1 + i % 28:02d}"
                                                                     for i in range(n)]}
    present = None if present_s1 is None else {"s1": present_s1, "s2": np.ones(n, bool)}
    write_embeddings_dataset(folder, [f"p{i:05d}" for i in range(n)], labels, CLASSES, vectors, metadata,
                             model_fingerprint="abc123", rows_per_shard=rows_per_shard, present=present)
    return folder, {**vectors, **{f"{name}/fresh": x[n:] for name, x in drawn.items()}}


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """An archive (some rows without s1) loaded into Milvus Lite with exact (FLAT) collections."""
    present = np.ones(1200, bool)
    present[::9] = False
    folder, vectors = write_archive(tmp_path_factory.mktemp("milvus") / "emb", present_s1=present)
    uri = str(folder.parent / "flat.db")
    records = milvus.index_archive(folder, uri, index_type="FLAT", batch_rows=300)
    return folder, uri, vectors, present, records


# ---------------------------------------------------------------------------------------------- plans (no engine)
def test_index_params_come_from_the_faiss_rules_at_segment_size():
    n, dim = 50_000_000, 256
    lite, server = milvus.segment_rows(True, dim), milvus.segment_rows(False, dim)
    assert (lite, server) == (100_000, 1 << 20)
    ivf = default_params("ivfpq", server, dim)[1]
    assert milvus.index_params("IVF_PQ", n, dim, server) == {"nlist": ivf["nlist"], "m": ivf["m"], "nbits": 8}
    assert milvus.index_params("IVF_FLAT", n, dim, lite) == {"nlist": default_params("ivfpq", lite, dim)[1]["nlist"]}
    assert milvus.index_params("IVF_FLAT", 3000, dim, lite)["nlist"] == default_params("ivfpq", 3000, dim)[1]["nlist"]
    hnsw = default_params("hnsw", n, dim)[1]
    assert milvus.index_params("HNSW", n, dim, server) == {"M": hnsw["M"], "efConstruction": hnsw["efConstruction"]}
    assert milvus.index_params("DISKANN", n, dim, server) == {} == milvus.index_params("FLAT", n, dim, server)
    assert milvus.resolve_index_type("auto", 1000, lite=True) == "FLAT"
    assert milvus.resolve_index_type("auto", 10**6, lite=True) == "IVF_FLAT"
    assert milvus.resolve_index_type("auto", 10**6, lite=False) == "HNSW"
    assert milvus.resolve_index_type("auto", 10**8, lite=False) == "DISKANN"
    for kind in ("IVF_PQ", "DISKANN"):
        assert milvus.resolve_index_type(kind, 10**6, lite=False) == kind
        with pytest.raises(ValueError, match="Milvus Lite .* offers only FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ"):
            milvus.resolve_index_type(kind, 10**6, lite=True)
    assert milvus.knob_ladder("DISKANN", {}, 20)[0] == 24 and milvus.knob_ladder("HNSW", {}, 10)[0] == 16
    assert milvus.knob_ladder("IVF_PQ", {"nlist": 64}, 10) == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]
    assert milvus.knob_ladder("FLAT", {}, 10) == []


def test_filter_expressions_check_names_and_quote_values():
    info = {"class_names": CLASSES, "metadata_columns": ["tile", "s2_date"]}
    expr = milvus.filter_expression(info, ["Arable land"], {"tile": 'T"1\\'}, {"s2_date": ("2017-06-01", "")})
    assert expr == 'array_contains(labels, 0) and tile == "T\\"1\\\\" and s2_date >= "2017-06-01"'
    with pytest.raises(EmbeddingsError, match="unknown class 'Forest'.*Arable land"):
        milvus.filter_expression(info, ["Forest"])
    with pytest.raises(EmbeddingsError, match="no metadata column 'date'.*'tile', 's2_date'"):
        milvus.filter_expression(info, equal={"date": "x"})


def test_missing_pymilvus_is_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys):
    from crjepa.cli import main

    folder, _ = write_archive(tmp_path / "emb", n=20)
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    assert main(["index", str(folder), "--backend", "milvus", "--uri", str(tmp_path / "m.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "crjepa[milvus]"' in err[0] and err[0].startswith("crjepa index: error:")
    assert main(["search", str(folder), "--id", "p00001", "--label", "Pastures"]) == 2  # filters need Milvus
    assert "--backend milvus" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- on Milvus Lite
def test_flat_collections_return_what_faiss_returns(flat):
    folder, uri, vectors, present, records = flat
    assert {r["rows"] for c, r in records.items() if c.startswith("s1")} == {int(present.sum())}
    reference, engine = load_embeddings(folder), load_embeddings(folder, milvus_uri=uri)
    for query in ("p00003", "p00500"):
        for direction in ("s1->s2", "s2->s1", "s1->s1", "s2->s2"):
            expected, found = reference.search_by_id(query, direction, 8), engine.search_by_id(query, direction, 8)
            assert [h.id for h in found] == [h.id for h in expected], direction
            assert [h.labels for h in found] == [h.labels for h in expected]
            assert [h.metadata for h in found] == [h.metadata for h in expected] and found[0].metadata["tile"]
            assert [h.position for h in found] == [h.position for h in expected]
            np.testing.assert_allclose([h.score for h in found], [h.score for h in expected], atol=1e-5)
    with pytest.raises(EmbeddingsError, match="No item with id 'p00009' and a 's1' vector"):
        engine.search_by_id("p00009", "s1->s2")  # row 9 has no s1 image: not in the s1 collections


def test_filters_select_before_the_top_k_inside_milvus(flat):
    folder, uri, vectors, present, _ = flat
    engine = load_embeddings(folder, milvus_uri=uri)
    reference = load_embeddings(folder)
    where = engine.filter(["Urban fabric"], {"tile": "T3"}, {"s2_date": ("2017-03-01", "2017-09-30")})
    labels, meta = reference.labels, reference.metadata
    match = np.array([bool(labels[i, 3]) and meta["tile"][i] == "T3" and "2017-03-01" <= meta["s2_date"][i]
                      <= "2017-09-30" for i in range(len(reference))])
    query = reference.vectors["s2_unified"][0]
    scores = reference.vectors["s2_unified"] @ query
    expected = [reference.ids[i] for i in np.argsort(-np.where(match, scores, -np.inf), kind="stable")[:10]]
    hits = engine.search(query, "s2_unified", 10, where=where)
    assert [h.id for h in hits] == expected and all(h.metadata["tile"] == "T3" for h in hits)
    unfiltered = {reference.ids[i] for i in np.argsort(-scores)[:10]}
    assert len(unfiltered & set(expected)) < 10  # filtering the unfiltered top-10 afterwards would find fewer
    assert engine.search(query, "s2_unified", 5, where='tile == "nowhere"') == []


def test_another_archive_is_refused_and_a_complete_load_reruns_as_a_no_op(flat, tmp_path):
    folder, uri, *_ = flat
    other, _ = write_archive(tmp_path / "emb", n=300, seed=1)
    with pytest.raises(EmbeddingsError, match="holds another archive .*--overwrite"):
        milvus.index_archive(other, uri, index_type="FLAT", prefix="crjepa_emb", columns=["s1_cross"])
    again = milvus.index_archive(folder, uri, index_type="auto", columns=["s1_cross"])["s1_cross"]
    assert again["state"] == "complete" and again["rows"] == flat[4]["s1_cross"]["rows"]
    with pytest.raises(EmbeddingsError, match="is a FLAT .*--overwrite"):
        milvus.index_archive(folder, uri, index_type="HNSW", columns=["s1_cross"])
    with pytest.raises(EmbeddingsError, match="holds another archive"):
        load_embeddings(other, milvus_uri=uri, milvus_prefix="crjepa_emb").search_by_id("p00001", "s1->s2")


@pytest.mark.parametrize("kind", ["IVF_FLAT", "HNSW"])
def test_calibrated_search_params_keep_their_recall_on_fresh_queries(kind, tmp_path):
    folder, vectors = write_archive(tmp_path / "emb", n=3000, seed=2, fresh=300)
    uri = str(tmp_path / "cal.db")
    record = milvus.index_archive(folder, uri, index_type=kind, recall=0.9, columns=["s2_unified"],
                                  calibration_budget_s=0.0)["s2_unified"]
    cal, knob = record["calibration"], milvus.KNOB[kind]
    assert cal["met"] and cal["queries"] == 300 and cal["index_type"] == kind and record["rows"] == 3000
    assert record["search"] == cal["params"] and set(cal["params"]) == {knob}
    assert [p[knob] for p in cal["points"]] == milvus.knob_ladder(kind, record["build"], 10)[:len(cal["points"])]
    if kind == "IVF_FLAT":  # the knob acts: the first rung misses the target, the chosen one meets it
        assert cal["points"][0]["recall"] < 0.9 <= cal["recall"]
    index = load_embeddings(folder, milvus_uri=uri).index("s2_unified")
    fresh = vectors["s2_unified/fresh"]  # drawn like the archive's vectors, not in it
    exact = np.argsort(-(fresh @ vectors["s2_unified"].T), axis=1)[:, :10]
    found = index.search(fresh, 10)[1]
    ids = np.array([f"p{i:05d}" for i in range(3000)])[exact]
    recall = (found[:, :, None] == ids[:, None, :]).any(axis=2).mean()
    assert recall >= 0.9 - 4 * max(cal["recall_se"], 0.005), (recall, cal)
    assert index.search(fresh[:1], 3, recall=0.99)[1].shape == (1, 3)  # another calibrated point, per call


class RecordingClient:
    """The client calls the loader makes, kept like a Milvus server keeps them: a second insert of an id is a
    duplicate row (only upsert replaces). ``stop_after`` interrupts the run after that many progress records."""

    def __init__(self, stop_after: int | None = None, keep: bool = True) -> None:
        import pyarrow as pa

        self.pa, self.stop_after, self.records, self.keep, self.count = pa, stop_after, 0, keep, 0
        self.rows: dict[str, list[dict]] = {}
        self.props: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, int]] = []
        self.arrow_peak = 0

    create_schema = staticmethod(lambda **kw: __import__("pymilvus").MilvusClient.create_schema(**kw))
    prepare_index_params = staticmethod(lambda: __import__("pymilvus").MilvusClient.prepare_index_params())

    def has_collection(self, name):
        return name in self.props

    def create_collection(self, name, schema):
        self.props[name], self.rows[name] = {}, []

    def describe_collection(self, name):
        return {"properties": dict(self.props[name])}

    def alter_collection_properties(self, name, properties):
        if properties.get("crjepa.rows_done", "0") != "0":
            self.records += 1
            if self.stop_after is not None and self.records == self.stop_after:
                raise KeyboardInterrupt  # killed between an acknowledged insert and its progress record
        self.props[name].update(properties)

    def _write(self, kind, name, data):
        self.arrow_peak = max(self.arrow_peak, self.pa.total_allocated_bytes())
        self.calls.append((kind, len(data)))
        self.count += len(data)
        if not self.keep:  # count only: memory measurements see the loader, not this fake server
            return
        if kind == "upsert":
            ids = {r["id"] for r in data}
            self.rows[name] = [r for r in self.rows[name] if r["id"] not in ids]
        self.rows[name] += data

    def insert(self, name, data):
        self._write("insert", name, data)

    def upsert(self, name, data):
        self._write("upsert", name, data)

    def flush(self, name):
        pass

    def list_indexes(self, name):
        return ["vector"] if "index" in self.props[name] else []

    def create_index(self, name, params, sync=True):
        self.props[name]["index"] = "yes"

    def describe_index(self, name, index_name):
        return {"state": "Finished"}

    def load_collection(self, name):
        pass

    def query(self, name, filter, output_fields, consistency_level):
        return [{"count(*)": len(self.rows[name]) if self.keep else self.count}]


def test_a_resumed_load_upserts_the_batch_in_flight_and_inserts_every_row_once(tmp_path, monkeypatch):
    folder, vectors = write_archive(tmp_path / "emb", n=1000, rows_per_shard=300)
    client = RecordingClient(stop_after=4)
    monkeypatch.setattr(milvus, "connect", lambda uri, token=None: client)
    with pytest.raises(KeyboardInterrupt):
        milvus.index_archive(folder, "server.db", index_type="FLAT", columns=["s2_cross"], batch_rows=128)
    name = "crjepa_emb_s2_cross"
    # shards of 300 rows read in batches of 128: 128, 256, 300 recorded; 300-428 inserted, its record lost
    assert client.props[name]["crjepa.rows_done"] == "300" and len(client.rows[name]) == 428
    client.stop_after, client.calls = None, []
    record = milvus.index_archive(folder, "server.db", index_type="FLAT", columns=["s2_cross"], batch_rows=128)
    assert client.calls[0] == ("upsert", 128) and {kind for kind, _ in client.calls[1:]} == {"insert"}
    ids = [r["id"] for r in client.rows[name]]
    assert sorted(ids) == [f"p{i:05d}" for i in range(1000)] and record["s2_cross"]["state"] == "complete"
    stored = {r["id"]: r for r in client.rows[name]}
    np.testing.assert_allclose(np.stack([stored[f"p{i:05d}"]["vector"] for i in range(1000)]), vectors["s2_cross"],
                               atol=1e-6)
    assert stored["p00003"]["row"] == 3 and stored["p00003"]["tile"] == "T3"


def _load_peaks(folder: Path, monkeypatch) -> tuple[int, int]:
    """(Arrow bytes, Python/numpy bytes) the loader held at its peak (the fake server keeps nothing)."""
    import tracemalloc

    import pyarrow as pa

    client = RecordingClient(keep=False)
    monkeypatch.setattr(milvus, "connect", lambda uri, token=None: client)
    base = pa.total_allocated_bytes()
    tracemalloc.start()
    milvus.index_archive(folder, "server.db", index_type="FLAT", columns=["s2_cross"], batch_rows=250)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return client.arrow_peak - base, python_peak


def test_the_load_streams_memory_flat_in_the_archive_size(tmp_path, monkeypatch):
    small = _load_peaks(write_archive(tmp_path / "small" / "emb", n=4000, dim=64, rows_per_shard=1000)[0],
                        monkeypatch)
    large = _load_peaks(write_archive(tmp_path / "large" / "emb", n=16_000, dim=64, rows_per_shard=1000)[0],
                        monkeypatch)
    column = 16_000 * 64 * 4  # the large archive's s2_cross column: 4 MB
    assert large[0] < 1.5 * small[0] + 100_000 and large[0] < column / 2, (small, large)  # Arrow: a row group
    assert large[1] < 1.5 * small[1] + 100_000, (small, large)  # Python / numpy: a batch


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_kill_mid_load_and_rerun_loads_every_row_once(tmp_path):
    folder, vectors = write_archive(tmp_path / "emb", n=6000, rows_per_shard=1000)
    uri = str(tmp_path / "kill.db")
    command = [sys.executable, "-m", "crjepa.cli", "index", str(folder), "--backend", "milvus", "--uri", uri,
               "--columns", "s2_cross", "--index-type", "IVF_FLAT", "--batch-rows", "40", "--recall", "0.9"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=offline_env())
    lines = []
    for line in first.stdout:  # wait for the event: the fifth batch recorded
        lines.append(line)
        if len(lines) == 5:
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    assert first.returncode == -signal.SIGKILL and lines[-1].startswith("s2_cross: 200/6000"), lines
    again = subprocess.run(command, capture_output=True, text=True, env=offline_env(), timeout=600)
    assert again.returncode == 0, again.stderr
    progress = [line for line in again.stdout.splitlines() if "rows loaded" in line]
    resumed_at = int(progress[0].split()[1].split("/")[0])
    assert 200 < resumed_at < 6000, progress[0]  # resumed where the killed run stopped, not from the start
    assert "recall@10" in again.stdout and "IVF_FLAT" in again.stdout
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    client.load_collection("crjepa_emb_s2_cross")
    rows = client.query("crjepa_emb_s2_cross", filter="row >= 0", output_fields=["id", "row", "vector"], limit=16384)
    assert len(rows) == 6000 and sorted(r["id"] for r in rows) == [f"p{i:05d}" for i in range(6000)]
    order = np.argsort([r["row"] for r in rows])
    np.testing.assert_allclose(np.array([rows[i]["vector"] for i in order]), vectors["s2_cross"], atol=1e-6)
    count = client.query("crjepa_emb_s2_cross", filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert count == 6000


@pytest.mark.slow
def test_cli_search_by_uri_prints_the_faiss_shape_with_filters(flat, capsys):
    from crjepa.cli import main

    folder, uri, *_ = flat
    assert main(["search", str(folder), "--id", "p00004", "--direction", "s2->s1", "-k", "5", "--json"]) == 0
    faiss_hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert main(["search", str(folder), "--id", "p00004", "--direction", "s2->s1", "-k", "5", "--json",
                 "--backend", "milvus", "--uri", uri]) == 0
    milvus_hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert [set(h) for h in milvus_hits] == [set(h) for h in faiss_hits]
    assert [h["id"] for h in milvus_hits] == [h["id"] for h in faiss_hits]
    assert main(["search", str(folder), "--id", "p00004", "--direction", "s2->s1", "--json", "--backend", "milvus",
                 "--uri", uri, "--label", "Pastures", "--meta", "tile=T2", "--range", "s2_date=2017-02-01.."]) == 0
    hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert hits and all("Pastures" in h["labels"] and h["metadata"]["tile"] == "T2" and
                        h["metadata"]["s2_date"] >= "2017-02-01" for h in hits)
    assert main(["search", str(folder), "--id", "p00004", "--backend", "milvus", "--uri", uri, "--label", "Moon"]) == 2
    assert "unknown class 'Moon'" in capsys.readouterr().err
    assert os.path.isdir(uri)
