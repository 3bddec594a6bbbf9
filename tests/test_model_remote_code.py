"""save_pretrained -> AutoModel/AutoConfig/AutoImageProcessor(trust_remote_code=True) in a fresh process.

The fresh process runs offline, with a fresh HF_HOME, in another working directory, and with the source
package blocked from import, so only the files copied into the checkpoint folder can serve the model.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from modeling_crjepa import CRJepaConfig, CRJepaImageProcessor, CRJepaModel

LOADER = textwrap.dedent("""
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_crjepa", "datasets_scripts"):
                raise ImportError("source package blocked: " + name)
    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel
    folder, out = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    data = np.load(folder + "/../inputs.npz")
    s1 = proc(list(data["s1"]), sensor="s1")["pixel_values"]
    s2 = proc(list(data["s2"]), sensor="s2")["pixel_values"]
    np.savez(out, s1_unified=model.get_embeddings(s1, sensor="s1", space="unified").numpy(),
             s2_cross=model.get_embeddings(s2, sensor="s2", space="cross").numpy(), s1_pixels=s1.numpy())
    leaked = [m for m in sys.modules if m.split(".")[0] in ("modeling_crjepa", "datasets_scripts")]
    print(json.dumps({"class": type(model).__name__, "module": type(model).__module__, "leaked": leaked,
                      "sensors": config.sensors, "proc": type(proc).__name__}))
""")


def test_fresh_process_round_trip(tmp_path):
    torch.manual_seed(0)
    config = CRJepaConfig.from_preset("tiny")
    model = CRJepaModel(config).eval()
    proc = CRJepaImageProcessor.from_config(config)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    proc.save_pretrained(folder)

    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_crjepa.py",
            "modeling_crjepa.py", "losses.py", "image_processing_crjepa.py"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_crjepa.CRJepaConfig", "AutoModel": "modeling_crjepa.CRJepaModel"}
    assert "auto_map" in json.loads((folder / "preprocessor_config.json").read_text())

    rng = np.random.default_rng(0)
    s1 = rng.normal(-15, 4, size=(4, 2, 120, 120)).astype(np.float32)
    s2 = rng.integers(0, 5000, size=(4, 12, 120, 120)).astype(np.uint16)
    np.savez(tmp_path / "inputs.npz", s1=s1, s2=s2)
    (tmp_path / "load.py").write_text(LOADER)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(folder), str(tmp_path / "out.npz")],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["class"] == "CRJepaModel" and info["module"].startswith("transformers_modules")
    assert info["leaked"] == [] and info["proc"] == "CRJepaImageProcessor"
    assert info["sensors"] == {"s1": 2, "s2": 12}

    out = np.load(tmp_path / "out.npz")
    pix1 = proc(list(s1), sensor="s1")["pixel_values"]
    pix2 = proc(list(s2), sensor="s2")["pixel_values"]
    assert np.allclose(out["s1_pixels"], pix1.numpy(), atol=1e-6)
    with torch.no_grad():
        assert np.allclose(out["s1_unified"], model.get_embeddings(pix1, "s1", "unified").numpy(), atol=1e-5)
        assert np.allclose(out["s2_cross"], model.get_embeddings(pix2, "s2", "cross").numpy(), atol=1e-5)


def test_in_process_auto_classes_and_weights_round_trip(tmp_path):
    from transformers import AutoConfig, AutoModel

    model = CRJepaModel(CRJepaConfig.from_preset("tiny", predictor_sharing="independent")).eval()
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    assert AutoConfig.from_pretrained(tmp_path, trust_remote_code=True).predictor_sharing == "independent"
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
