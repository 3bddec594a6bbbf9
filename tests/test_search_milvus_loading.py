"""crjepa/search/milvus/loading.py on Milvus Lite: calibrated recall holds on fresh queries, foreign collections are
refused, the load streams and resumes (a fake client that, like a Milvus server, keeps duplicate inserts; a real kill
of the CLI mid-load)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from crjepa.hub.archive import EmbeddingsError, load_embeddings  # noqa: E402
from crjepa.search import milvus  # noqa: E402
from crjepa.search.milvus import loading  # noqa: E402

from helpers import offline_env, write_search_archive  # noqa: E402


def test_another_archive_is_refused_and_a_complete_load_reruns_as_a_no_op(milvus_flat, tmp_path):
    folder, uri, *_ = milvus_flat
    other, _ = write_search_archive(tmp_path / "emb", n=300, seed=1)
    with pytest.raises(EmbeddingsError, match="holds another archive .*--overwrite"):
        milvus.index_archive(other, uri, index_type="FLAT", prefix="crjepa_emb", columns=["s1_cross"])
    again = milvus.index_archive(folder, uri, index_type="auto", columns=["s1_cross"])["s1_cross"]
    assert again["state"] == "complete" and again["rows"] == milvus_flat[4]["s1_cross"]["rows"]
    with pytest.raises(EmbeddingsError, match="is a FLAT .*--overwrite"):
        milvus.index_archive(folder, uri, index_type="HNSW", columns=["s1_cross"])
    with pytest.raises(EmbeddingsError, match="holds another archive"):
        load_embeddings(other, milvus_uri=uri, milvus_prefix="crjepa_emb").search_by_id("p00001", "s1->s2")


@pytest.mark.parametrize("kind", ["IVF_FLAT", "HNSW"])
def test_calibrated_search_params_keep_their_recall_on_fresh_queries(kind, tmp_path):
    folder, vectors = write_search_archive(tmp_path / "emb", n=3000, seed=2, fresh=300)
    uri = str(tmp_path / "cal.db")
    record = milvus.index_archive(
        folder, uri, index_type=kind, recall=0.9, columns=["s2_unified"], calibration_budget_s=0.0
    )["s2_unified"]
    cal, knob = record["calibration"], milvus.KNOB[kind]
    assert cal["met"] and cal["queries"] == 300 and cal["index_type"] == kind and record["rows"] == 3000
    assert record["search"] == cal["params"] and set(cal["params"]) == {knob}
    assert [p[knob] for p in cal["points"]] == milvus.knob_ladder(kind, record["build"], 10)[: len(cal["points"])]
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
    folder, vectors = write_search_archive(tmp_path / "emb", n=1000, rows_per_shard=300)
    client = RecordingClient(stop_after=4)
    monkeypatch.setattr(loading, "connect", lambda uri, token=None: client)
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
    np.testing.assert_allclose(
        np.stack([stored[f"p{i:05d}"]["vector"] for i in range(1000)]), vectors["s2_cross"], atol=1e-6
    )
    assert stored["p00003"]["row"] == 3 and stored["p00003"]["tile"] == "T3"


def _load_peaks(folder: Path, monkeypatch) -> tuple[int, int]:
    """(Arrow bytes, Python/numpy bytes) the loader held at its peak (the fake server keeps nothing)."""
    import tracemalloc

    import pyarrow as pa

    client = RecordingClient(keep=False)
    monkeypatch.setattr(loading, "connect", lambda uri, token=None: client)
    base = pa.total_allocated_bytes()
    tracemalloc.start()
    milvus.index_archive(folder, "server.db", index_type="FLAT", columns=["s2_cross"], batch_rows=250)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return client.arrow_peak - base, python_peak


def test_the_load_streams_memory_flat_in_the_archive_size(tmp_path, monkeypatch):
    small = _load_peaks(
        write_search_archive(tmp_path / "small" / "emb", n=4000, dim=64, rows_per_shard=1000)[0], monkeypatch
    )
    large = _load_peaks(
        write_search_archive(tmp_path / "large" / "emb", n=16_000, dim=64, rows_per_shard=1000)[0], monkeypatch
    )
    column = 16_000 * 64 * 4  # the large archive's s2_cross column: 4 MB
    assert large[0] < 1.5 * small[0] + 100_000 and large[0] < column / 2, (small, large)  # Arrow: a row group
    assert large[1] < 1.5 * small[1] + 100_000, (small, large)  # Python / numpy: a batch


@pytest.mark.slow
def test_kill_mid_load_and_rerun_loads_every_row_once(tmp_path):
    folder, vectors = write_search_archive(tmp_path / "emb", n=6000, rows_per_shard=1000)
    uri = str(tmp_path / "kill.db")
    command = [
        sys.executable,
        "-m",
        "crjepa.cli",
        "index",
        str(folder),
        "--backend",
        "milvus",
        "--uri",
        uri,
        "--columns",
        "s2_cross",
        "--index-type",
        "IVF_FLAT",
        "--batch-rows",
        "40",
        "--recall",
        "0.9",
    ]
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
