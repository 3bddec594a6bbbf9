"""crjepa/hub/archive/loading.py: an archive loads in a fresh process (search equals exact numpy), from the Hub through
snapshot_download, and costs its labels, not rows x classes."""

from __future__ import annotations

import json
import textwrap

import numpy as np

from crjepa.hub.archive import load_embeddings, write_embeddings_dataset

from helpers import exact_top_k, run_python


def test_archive_loads_in_a_fresh_process_and_search_equals_exact_numpy(archive_dir, archive_embeddings):
    queries = [archive_embeddings.ids[i] for i in (0, 7, 33, 79)]
    script = textwrap.dedent(f"""
        import json, sys
        from crjepa.hub.archive import load_embeddings
        archive = load_embeddings({str(archive_dir)!r})
        assert sorted(archive.indices) == ['s1_cross', 's1_unified', 's2_cross', 's2_unified'], archive.indices
        out = {{d: [[h.id for h in archive.search_by_id(q, d, k=5)] for q in {queries!r}]
               for d in ('s1->s2', 's2->s1', 's2->s2')}}
        print(json.dumps(out))
    """)
    proc = run_python(["-c", script], cwd=archive_dir.parent)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = np.array([archive_embeddings.ids.index(q) for q in queries])
    ids = np.array(archive_embeddings.ids)
    cross = exact_top_k(archive_embeddings["s1_cross"][rows], archive_embeddings["s2_cross"], 5)
    assert found["s1->s2"] == ids[cross].tolist()
    back = exact_top_k(archive_embeddings["s2_cross"][rows], archive_embeddings["s1_cross"], 5)
    assert found["s2->s1"] == ids[back].tolist()
    same = exact_top_k(archive_embeddings["s2_unified"][rows], archive_embeddings["s2_unified"], 5, exclude=rows)
    assert found["s2->s2"] == ids[same].tolist()
    assert not set(queries) & {i for hits in found["s2->s2"] for i in hits[:1]}  # self removed


def test_load_from_hub_uses_snapshot_download(archive_dir):
    class FakeDownloadApi:
        def snapshot_download(self, repo_id, repo_type=None, revision=None, token=None):
            assert (repo_id, repo_type) == ("someone/emb", "dataset")
            return str(archive_dir)

    archive = load_embeddings("someone/emb", api=FakeDownloadApi())
    assert len(archive) == 80 and archive.dimension == 32


def test_an_archive_declaring_100k_classes_costs_its_labels_not_rows_x_classes(tmp_path):
    """class_names within MAX_CLASSES (100,000) made loading allocate a dense rows x classes matrix (3.2 GB for a
    19 MB archive); labels are now kept as lists and multi-hot rows are built on request."""
    import tracemalloc

    rows, classes = 4000, 100_000
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, 8)).astype(np.float32)
    labels = [[int(c) for c in rng.choice(classes, 2, replace=False)] for _ in range(rows)]
    names = [f"class-{i}" for i in range(classes)]
    folder = write_embeddings_dataset(
        tmp_path / "wide",
        [f"id{i}" for i in range(rows)],
        labels,
        names,
        {"s2_unified": vectors},
        model_fingerprint="ab",
    )
    tracemalloc.start()
    try:
        archive = load_embeddings(folder, load_indices=False)
        hits = archive.search_by_id("id7", "s2->s2", k=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB traced; a dense label matrix is {rows * classes / 1e6:.0f} MB"
    assert archive.labels.shape == (rows, classes) and sorted(archive.labels.classes(7)) == sorted(labels[7])
    row = archive.labels[7]
    assert row.shape == (classes,) and row.sum() == 2 and row[labels[7]].all()
    assert all(hit.labels == [names[c] for c in sorted(labels[hit.position])] for hit in hits)
