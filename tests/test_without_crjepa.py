"""What a Hugging Face user gets without crjepa installed: a fresh virtual environment in which crjepa,
modeling_crjepa and datasets_scripts cannot be imported runs AutoModel + AutoImageProcessor + the pipeline on a
12-band uint16 array from a saved checkpoint, `load_dataset` (and streaming) of an export with warnings turned into
errors, and `evaluate.load` of the metric modules.

How the package is excluded, honestly and in seconds: ``python -m venv --without-pip`` makes an empty environment;
one ``.pth`` file in it lists this environment's site-packages folders as plain paths, so the installed libraries
(torch, transformers, datasets, evaluate, ...) import, but the ``.pth`` files inside those folders are never run
(they are processed only for site directories), and with them the editable install's import hook that maps crjepa
to this checkout. A ``sitecustomize`` there also refuses the three names (so a non-editable install of crjepa
would be excluded too); the script checks each import fails before it does anything else, and that none of the
three was imported at the end. It runs from an empty working folder with PYTHONPATH unset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaImageProcessor, CRJepaModel

BLOCKED = ("crjepa", "modeling_crjepa", "datasets_scripts")
METRICS = Path(__file__).resolve().parents[1] / "crjepa" / "eval" / "metrics_modules"

SITECUSTOMIZE = textwrap.dedent(f"""
    import importlib.abc, sys

    class _RefuseCrjepa(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (this environment has no crjepa)")

    sys.meta_path.insert(0, _RefuseCrjepa())
""")

USER_SCRIPT = textwrap.dedent("""
    import importlib, json, logging, sys, warnings

    for name in ("crjepa", "modeling_crjepa", "datasets_scripts"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        raise SystemExit(f"{name} is importable: the environment is not crjepa-free")

    warned = []
    class Collect(logging.Handler):
        def emit(self, record):
            warned.append(f"{record.name}: {record.getMessage()}")
    logging.getLogger().addHandler(Collect(level=logging.WARNING))
    warnings.simplefilter("error")  # every Python warning is an error from here on

    import numpy as np, torch
    from transformers import AutoImageProcessor, AutoModel, pipeline

    checkpoint, export, metrics, out = sys.argv[1:5]
    s2 = np.load(checkpoint + "/../s2.npy")  # (12, 120, 120) uint16, native reflectance
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    pixels = processor(s2, sensor="s2")["pixel_values"]
    direct = model.get_embeddings(pixels, sensor="s2", space="cross")[0]
    embed = pipeline("image-feature-extraction", model=checkpoint, trust_remote_code=True)
    piped = embed(s2, sensor="s2", space="cross", return_tensors=True)
    channel_last = embed(s2.transpose(1, 2, 0), space="cross", return_tensors=True)  # sensor from its 12 bands
    model_warnings = list(warned)

    from datasets import load_dataset
    ds = load_dataset(export)
    streamed = load_dataset(export, streaming=True)
    rows = iter(streamed["test"])
    first = next(rows)["id"]
    del rows, streamed
    dataset_warnings = [w for w in warned if w not in model_warnings]

    import evaluate
    case = np.load(checkpoint + "/../metric_case.npz")
    f1 = evaluate.load(metrics + "/crjepa_f1_at_k").compute(similarity=case["sim"], query_labels=case["labels"],
                                                            gallery_labels=case["labels"], k=3)

    np.savez(out, direct=direct.numpy(), piped=piped.numpy(), channel_last=channel_last.numpy(),
             pixels=pixels.numpy())
    print(json.dumps({
        "leaked": sorted({m.split(".")[0] for m in sys.modules} & {"crjepa", "modeling_crjepa", "datasets_scripts"}),
        "model": type(model).__module__ + "." + type(model).__name__, "pipeline": type(embed).__name__,
        "splits": {name: len(split) for name, split in ds.items()}, "first_test_id": first,
        "model_warnings": model_warnings, "dataset_warnings": dataset_warnings, "f1": f1,
    }))
""")


def crjepa_free_python(venv: Path) -> Path:
    """A fresh venv seeing this environment's libraries but not crjepa (see the module docstring)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "host_libraries.pth").write_text("".join(f"{path}\n" for path in ours))  # plain paths: no hooks run
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return python


@pytest.mark.slow
def test_checkpoint_pipeline_export_and_metrics_work_in_a_venv_without_crjepa(tmp_path):
    from crjepa.eval.metrics import f1_at_k
    from datasets_scripts.common import export_builder
    from datasets_scripts.synthetic import SyntheticPairs

    torch.manual_seed(0)
    config = CRJepaConfig.from_preset("tiny")
    model = CRJepaModel(config).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)  # weights, config, remote code with the pipeline, image processor, card
    s2 = np.random.default_rng(0).integers(0, 10_000, size=(12, 120, 120), dtype=np.uint16)
    np.save(tmp_path / "s2.npy", s2)
    export = export_builder(
        SyntheticPairs(cache_dir=str(tmp_path / "cache"), num_train=6, num_validation=3, num_test=4, image_size=16),
        tmp_path / "export",
        num_proc=2,
    )
    rng = np.random.default_rng(1)
    sim, labels = rng.normal(size=(8, 8)), (rng.random((8, 5)) < 0.4).astype(np.int64)
    np.savez(tmp_path / "metric_case.npz", sim=sim, labels=labels)
    metrics = tmp_path / "metrics_modules"
    shutil.copytree(METRICS, metrics)  # the modules as a user downloads them (the link becomes a file)

    python = crjepa_free_python(tmp_path / "venv")
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run(
        [str(python), str(tmp_path / "user.py"), str(checkpoint), str(export), str(metrics), str(tmp_path / "out.npz")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["leaked"] == [] and info["model"].startswith("transformers_modules.")
    assert info["pipeline"] == "CRJepaFeatureExtractionPipeline"
    assert info["model_warnings"] == [] and info["dataset_warnings"] == []
    assert info["splits"] == {"train": 6, "validation": 3, "test": 4} and info["first_test_id"].startswith("synthetic")
    assert info["f1"] == {"f1_at_k": pytest.approx(f1_at_k(sim, labels, labels, k=3), abs=1e-12)}

    out = np.load(tmp_path / "out.npz")
    pixels = CRJepaImageProcessor.from_config(config)(s2, sensor="s2")["pixel_values"]
    expected = model.get_embeddings(pixels, sensor="s2", space="cross")[0].numpy()
    assert np.allclose(out["pixels"], pixels.numpy(), atol=1e-6)
    for name in ("direct", "piped", "channel_last"):  # the same retrieval embedding every way, as with crjepa
        assert np.allclose(out[name], expected, atol=1e-6), name
