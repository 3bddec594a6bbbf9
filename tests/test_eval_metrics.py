"""Retrieval metrics against independent references (scikit-learn, torchmetrics, hand arithmetic)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torchmetrics.retrieval import RetrievalMAP, RetrievalPrecision

from crjepa.eval.metrics import f1_at_k, mean_average_precision, precision_at_k

MODULES = Path(__file__).resolve().parents[1] / "crjepa" / "eval" / "metrics_modules"


def _random_case(nq: int = 40, ng: int = 60, classes: int = 6, seed: int = 0, multi: bool = True):
    """Continuous positive similarities (no ties, torchmetrics ignores preds <= 0) and multi-hot labels."""
    rng = np.random.default_rng(seed)
    sim = rng.uniform(0.01, 1.0, (nq, ng))
    if multi:
        ql = (rng.random((nq, classes)) < 0.35).astype(np.int64)
        gl = (rng.random((ng, classes)) < 0.35).astype(np.int64)
        ql[np.arange(nq), rng.integers(0, classes, nq)] = 1  # at least one label each
        gl[np.arange(ng), rng.integers(0, classes, ng)] = 1
    else:
        ql = np.eye(classes, dtype=np.int64)[rng.integers(0, classes, nq)]
        gl = np.eye(classes, dtype=np.int64)[rng.integers(0, classes, ng)]
    return sim, ql, gl


def _relevance(ql: np.ndarray, gl: np.ndarray, relevance: str) -> np.ndarray:
    if relevance == "same_class":
        return (ql[:, None, :] == gl[None, :, :]).all(axis=2)
    return (ql @ gl.T) > 0


def _torchmetrics(metric, sim: np.ndarray, rel: np.ndarray) -> float:
    nq, ng = sim.shape
    indexes = torch.arange(nq).repeat_interleave(ng)
    return float(metric(torch.tensor(sim.ravel()), torch.tensor(rel.ravel()), indexes=indexes))


@pytest.mark.parametrize("relevance", ["same_class", "any_shared"])
@pytest.mark.parametrize("multi", [True, False])
def test_global_map_equals_sklearn(relevance: str, multi: bool) -> None:
    sim, ql, gl = _random_case(seed=1, multi=multi)
    rel = _relevance(ql, gl, relevance)
    expected = np.mean([average_precision_score(r, s) if r.any() else 0.0 for r, s in zip(rel, sim)])
    got = mean_average_precision(sim, ql, gl, relevance=relevance)
    assert got == pytest.approx(expected, abs=1e-12)
    # chunking does not change the value; torch input is accepted
    assert mean_average_precision(torch.tensor(sim), ql, gl, relevance=relevance, chunk_size=7) == pytest.approx(got)


@pytest.mark.parametrize("relevance", ["same_class", "any_shared"])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_map_at_k_and_precision_equal_torchmetrics(relevance: str, k: int) -> None:
    sim, ql, gl = _random_case(seed=2)
    rel = _relevance(ql, gl, relevance)
    assert mean_average_precision(sim, ql, gl, k=k, relevance=relevance) == pytest.approx(
        _torchmetrics(RetrievalMAP(top_k=k), sim, rel), abs=1e-6
    )
    assert precision_at_k(sim, ql, gl, k=k, relevance=relevance) == pytest.approx(
        _torchmetrics(RetrievalPrecision(top_k=k), sim, rel), abs=1e-6
    )
    # and the global mAP equals torchmetrics without top_k
    assert mean_average_precision(sim, ql, gl, relevance=relevance) == pytest.approx(
        _torchmetrics(RetrievalMAP(), sim, rel), abs=1e-6
    )


def test_map_at_k_min_k_relevant_normaliser_by_hand() -> None:
    # one query (class 0), gallery ranked by similarity: rel, not, rel, rel, not
    sim = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    ql, gl = np.array([0]), np.array([0, 1, 0, 0, 1])
    # top 3: hits at ranks 1 and 3 -> precision sum 1/1 + 2/3 = 5/3
    # "retrieved": / 2 relevant in the top 3 = 5/6; "min_k_relevant": / min(3, 3 relevant overall) = 5/9
    assert mean_average_precision(sim, ql, gl, k=3) == pytest.approx(5 / 6)
    assert mean_average_precision(sim, ql, gl, k=3, normalizer="min_k_relevant") == pytest.approx(5 / 9)
    # global: ranks 1, 3, 4 -> (1 + 2/3 + 3/4) / 3 = 29/36
    assert mean_average_precision(sim, ql, gl) == pytest.approx(29 / 36)


def test_f1_paper_and_csmae_by_hand() -> None:
    # query labels {0, 1}; three gallery items ranked first to last:
    #   g0 = {0}       : |n| = 1, P = 1/1, R = 1/2, F1 = 2*1*0.5/1.5 = 2/3
    #   g1 = {0, 1, 2} : |n| = 2, P = 2/3, R = 2/2, F1 = 2*(2/3)*1/(5/3) = 4/5
    #   g2 = {3}       : |n| = 0, P = R = F1 = 0
    sim = np.array([[0.9, 0.5, 0.1]])
    ql = np.array([[1, 1, 0, 0]])
    gl = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]])
    # paper, k=2: (2/3 + 4/5) / 2 = 11/15;  k=3: (2/3 + 4/5 + 0) / 3 = 22/45
    assert f1_at_k(sim, ql, gl, k=2) == pytest.approx(11 / 15)
    assert f1_at_k(sim, ql, gl, k=3) == pytest.approx(22 / 45)
    # csmae, k=2: P = (1 + 2/3)/2 = 5/6, R = (1/2 + 1)/2 = 3/4, F1 = 2*(5/6)*(3/4)/(5/6 + 3/4) = 15/19
    assert f1_at_k(sim, ql, gl, k=2, variant="csmae") == pytest.approx(15 / 19)


def test_f1_csmae_harmonic_mean_is_global() -> None:
    # two queries, k=1, each retrieving one item:
    #   q0 = {0}    retrieves {0, 1}: P = 1/2, R = 1/1
    #   q1 = {0, 1} retrieves {0}   : P = 1/1, R = 1/2
    # global: P = 3/4, R = 3/4 -> F1 = 3/4.  (Per-query harmonic means would give (2/3 + 2/3)/2 = 2/3,
    # which is also the paper variant here: item F1 = 2|n|/(|Yq|+|Yr|) = 2/3 for both.)
    sim = np.array([[1.0, 0.0], [0.0, 1.0]])
    ql = np.array([[1, 0], [1, 1]])
    gl = np.array([[1, 1], [1, 0]])
    assert f1_at_k(sim, ql, gl, k=1, variant="csmae") == pytest.approx(3 / 4)
    assert f1_at_k(sim, ql, gl, k=1, variant="paper") == pytest.approx(2 / 3)


def test_f1_paper_equals_loop_reference() -> None:
    sim, ql, gl = _random_case(nq=25, ng=50, seed=3)
    k = 7
    expected = []
    for s, q in zip(sim, ql):
        top = np.argsort(-s)[:k]
        item = []
        for r in gl[top]:
            n = np.logical_and(q, r).sum()
            p, rc = n / r.sum(), n / q.sum()
            item.append(2 * p * rc / (p + rc) if n else 0.0)
        expected.append(np.mean(item))
    assert f1_at_k(sim, ql, gl, k=k) == pytest.approx(np.mean(expected))


def test_ties_break_to_lower_gallery_index() -> None:
    sim = np.array([[0.5, 0.9, 0.5, 0.5]])
    ql, gl = np.array([0]), np.array([1, 1, 0, 0])
    # ranking: 1 (0.9), then ties 0, 2, 3 in index order -> top 2 = {1, 0}: no relevant; top 3 adds 2
    assert precision_at_k(sim, ql, gl, k=2) == 0.0
    assert precision_at_k(sim, ql, gl, k=3) == pytest.approx(1 / 3)
    assert precision_at_k(sim, ql, gl, k=2, chunk_size=1) == 0.0


def test_exclude_self_removes_diagonal() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T  # cosine: the diagonal (1) is each query's best match
    labels = np.eye(3, dtype=int)[rng.integers(0, 3, 30)]
    # with the self-match, P@1 is 1 (every item retrieves itself); without it, it equals P@1 on the
    # similarity with the diagonal pushed to the bottom
    assert precision_at_k(sim, labels, labels, k=1) == 1.0
    masked = sim.copy()
    np.fill_diagonal(masked, -np.inf)
    expected = precision_at_k(masked, labels, labels, k=1)
    assert expected < 1.0
    assert precision_at_k(sim, labels, labels, k=1, exclude_self=True) == pytest.approx(expected)
    # global mAP: the self item is neither ranked nor counted as relevant (sklearn on the off-diagonal)
    off = ~np.eye(30, dtype=bool)
    rel = (labels @ labels.T) > 0
    ref = np.mean([average_precision_score(rel[i][off[i]], sim[i][off[i]]) for i in range(30)])
    assert mean_average_precision(sim, labels, labels, exclude_self=True) == pytest.approx(ref)
    # the same via ids
    ids = np.array([f"scene_{i}" for i in range(30)])
    assert mean_average_precision(sim, labels, labels, query_ids=ids, gallery_ids=ids) == pytest.approx(ref)
    with pytest.raises(ValueError, match="square"):
        precision_at_k(sim[:5], labels[:5], labels, exclude_self=True)
    with pytest.raises(ValueError, match="only 29"):
        precision_at_k(sim, labels, labels, k=30, exclude_self=True)


def test_bad_inputs_give_clear_errors() -> None:
    sim, ql, gl = _random_case()
    with pytest.raises(ValueError, match="shape"):
        precision_at_k(sim.T, ql, gl)
    with pytest.raises(ValueError, match="relevance"):
        precision_at_k(sim, ql, gl, relevance="same")
    with pytest.raises(ValueError, match="NaN"):
        precision_at_k(np.full_like(sim, np.nan), ql, gl)


CASES = [  # module, package function, compute() kwargs, single-label (class ids) inputs
    ("crjepa_f1_at_k", f1_at_k, {"k": 5, "variant": "csmae"}, False),
    ("crjepa_map", mean_average_precision, {"relevance": "any_shared"}, False),
    ("crjepa_map", mean_average_precision, {"k": 4, "exclude_self": True}, True),
    ("crjepa_precision_at_k", precision_at_k, {"k": 3, "relevance": "any_shared"}, False),
]


@pytest.mark.slow
def test_evaluate_modules_match_package(tmp_path: Path) -> None:
    """evaluate.load offline (fresh HF_HOME and cache, module copied out of the repo, crjepa unimportable: the
    modules stand alone) gives the package value, for a whole compute() and for queries streamed with add_batch; each
    module has its metric card. One subprocess: importing evaluate is slow."""
    sim, ql, gl = _random_case(nq=12, ng=12, seed=5)
    class_ids = ql.argmax(axis=1)
    shutil.copytree(MODULES, tmp_path / "modules")
    np.savez(tmp_path / "case.npz", sim=sim, ql=ql, gl=gl, ids=class_ids)
    script = textwrap.dedent(
        """
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("crjepa", "modeling_crjepa", "datasets_scripts"):
                    raise ImportError("crjepa blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import evaluate
        tmp, cases = sys.argv[1], json.loads(sys.argv[2])
        case = np.load(tmp + "/case.npz")
        results = []
        for module, kwargs, single in cases:
            ql, gl = (case["ids"], case["ids"]) if single else (case["ql"], case["gl"])
            metric = evaluate.load(f"{tmp}/modules/{module}", cache_dir=tmp + "/cache")
            whole = metric.compute(similarity=case["sim"], query_labels=ql, gallery_labels=gl, **kwargs)
            for rows in (slice(0, 5), slice(5, 12)):
                metric.add_batch(similarity=case["sim"][rows], query_labels=ql[rows])
            batched = metric.compute(gallery_labels=gl, **kwargs)
            results.append([whole, batched])
        assert not [m for m in sys.modules if m.split(".")[0] == "crjepa"]
        print(json.dumps(results))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    cases = json.dumps([[module, kwargs, single] for module, _, kwargs, single in CASES])
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), cases],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for module in {module for module, *_ in CASES}:
        card = (MODULES / module / "README.md").read_text()
        assert "tags:\n- evaluate\n- metric" in card and f'evaluate.load("{module}' in card.replace("path/to/", "")
    for (module, function, kwargs, single), (whole, batched) in zip(CASES, results):
        labels = (class_ids, class_ids) if single else (ql, gl)
        expected = function(sim, *labels, **kwargs)
        key = module.removeprefix("crjepa_")
        assert whole == {key: pytest.approx(expected, abs=1e-9)}, module
        assert batched == {key: pytest.approx(expected, abs=1e-9)}, module
