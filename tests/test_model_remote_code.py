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
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining, CRJepaImageProcessor, CRJepaModel

from helpers import roundoff

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


def _run_elsewhere(tmp_path, name: str, script: str, folder) -> tuple[dict, str]:
    """Run ``script`` (saved as ``name``) on ``folder`` in a fresh Python whose working directory and path hold no
    project code, offline; returns the JSON of its last stdout line and its stderr."""
    (tmp_path / name).write_text(script)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(tmp_path / name), str(folder), str(tmp_path / "out.npz")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.mark.slow
def test_fresh_process_round_trip(tmp_path):
    torch.manual_seed(0)
    config = CRJepaConfig.from_preset("tiny")
    model = CRJepaModel(config).eval()
    proc = CRJepaImageProcessor.from_config(config)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    proc.save_pretrained(folder)

    files = set(os.listdir(folder))
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_crjepa.py",
        "modeling_crjepa.py",
        "losses.py",
        "devices.py",
        "image_processing_crjepa.py",
    } <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_crjepa.CRJepaConfig",
        "AutoModel": "modeling_crjepa.CRJepaModel",
        "AutoModelForPreTraining": "modeling_crjepa.CRJepaForPreTraining",
    }
    assert "auto_map" in json.loads((folder / "preprocessor_config.json").read_text())

    rng = np.random.default_rng(0)
    s1 = rng.normal(-15, 4, size=(4, 2, 120, 120)).astype(np.float32)
    s2 = rng.integers(0, 5000, size=(4, 12, 120, 120)).astype(np.uint16)
    np.savez(tmp_path / "inputs.npz", s1=s1, s2=s2)
    info, _ = _run_elsewhere(tmp_path, "load.py", LOADER, folder)
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


PIPELINE = textwrap.dedent("""
    import importlib.abc, json, sys, warnings
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_crjepa", "datasets_scripts", "crjepa"):
                raise ImportError("source package blocked: " + name)
    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining, pipeline
    from transformers.utils import logging
    logging.set_verbosity_warning()
    folder, out = sys.argv[1], sys.argv[2]
    image = Image.open(folder + "/../rgb.png")
    s2 = np.load(folder + "/../s2.npy")  # (12, H, W) uint16
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    unified = np.asarray(extractor(image, return_tensors=True))  # the rgb sensor, found by its 3 bands
    s2_cross = np.asarray(extractor(s2, sensor="s2", space="cross"))
    inferred = type(pipeline(model=folder, trust_remote_code=True)).__name__  # the task from custom_pipelines
    try:
        pipeline("image-feature-extraction", model=folder, trust_remote_code=False)
        refused = ""
    except ValueError as exc:
        refused = str(exc)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    pretraining = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    bf16 = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16).eval()
    proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixels = proc(image)["pixel_values"]  # float32, the rgb sensor found by its channel count
    with torch.no_grad():
        half = bf16(pixels, space="cross")
    np.savez(out, unified=unified, s2_cross=s2_cross, bf16_cross=half.image_embeds.float().numpy(),
             cross=encoder(pixels, space="cross").image_embeds.detach().numpy())
    print(json.dumps({"pipeline_model": type(extractor.model).__name__, "encoder": type(encoder).__name__,
                      "pipeline": type(extractor).__name__, "inferred": inferred,
                      "refused": "trust_remote_code=True" in refused,
                      "pretraining": type(pretraining).__name__, "predictors": sorted(pretraining.predictors),
                      "bf16_dtype": str(half.last_hidden_state.dtype),
                      "leaked": [m for m in sys.modules if m.split(".")[0] in ("modeling_crjepa", "crjepa")]}))
""")


def train_two_steps(config: CRJepaConfig) -> CRJepaForPreTraining:
    """A CRJepaForPreTraining after two AdamW steps on random pairs (weights away from the initialisation)."""
    torch.manual_seed(0)
    model = CRJepaForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = config.image_size
    for step in range(2):
        pixels = {s: torch.randn(4, c, size, size) for s, c in config.sensors.items()}
        model(pixels, sigreg_step=step).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.slow
def test_pipeline_and_auto_classes_on_a_pretraining_checkpoint_in_a_fresh_process(tmp_path):
    """pipeline("image-feature-extraction") (the crjepa pipeline the config registers: retrieval embeddings of a PIL
    RGB image and of a uint16 12-band array), AutoModel (encoder, predictors dropped without a warning),
    AutoModelForPreTraining and a bf16 model on float32 pixels, from remote code alone."""
    from PIL import Image

    config = CRJepaConfig.from_preset(
        "tiny",
        sensors={"rgb": 3, "s2": 12},
        sar_sensors=[],
        band_names={"rgb": ["R", "G", "B"], "s2": [f"B{i}" for i in range(12)]},
        band_mean={"rgb": [127.5] * 3, "s2": [1000.0] * 12},
        band_std={"rgb": [64.0] * 3, "s2": [500.0] * 12},
    )
    model = train_two_steps(config)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    CRJepaImageProcessor.from_config(config).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architectures"] == ["CRJepaForPreTraining"] and (folder / "pipeline_crjepa.py").is_file()
    assert saved["custom_pipelines"] == {
        "image-feature-extraction": {
            "impl": "pipeline_crjepa.CRJepaFeatureExtractionPipeline",
            "pt": ["AutoModel"],
            "type": "image",
        }
    }
    readme = (folder / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in readme and "CR-JEPA" in readme  # the crjepa card
    rgb = np.random.default_rng(0).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    s2 = np.random.default_rng(1).integers(0, 6000, size=(12, 50, 50), dtype=np.uint16)
    np.save(tmp_path / "s2.npy", s2)
    info, stderr = _run_elsewhere(tmp_path, "pipe.py", PIPELINE, folder)
    assert info == {
        "pipeline_model": "CRJepaModel",
        "encoder": "CRJepaModel",
        "pretraining": "CRJepaForPreTraining",
        "pipeline": "CRJepaFeatureExtractionPipeline",
        "inferred": "CRJepaFeatureExtractionPipeline",
        "refused": True,
        "predictors": ["aa", "bb", "cross"],
        "bf16_dtype": "torch.bfloat16",
        "leaked": [],
    }
    assert "predictors" not in stderr and "UNEXPECTED" not in stderr.upper()  # no warning storm

    out = np.load(tmp_path / "out.npz")
    processor = CRJepaImageProcessor.from_config(config)
    pixels = processor(np.asarray(Image.open(tmp_path / "rgb.png")), input_data_format="channels_last")["pixel_values"]
    assert out["unified"].shape == (config.retrieval_dim,)
    encoder = model.crjepa
    assert np.allclose(out["unified"], encoder.get_embeddings(pixels, "rgb", "unified")[0].numpy(), atol=1e-5)
    s2_pixels = processor(s2, sensor="s2")["pixel_values"]
    assert np.allclose(out["s2_cross"], encoder.get_embeddings(s2_pixels, "s2", "cross")[0].numpy(), atol=1e-5)
    assert np.allclose(out["cross"], encoder.get_embeddings(pixels, "rgb", "cross").numpy(), atol=1e-5)
    assert np.allclose(out["bf16_cross"], out["cross"], atol=0.05)


def legacy_checkpoint(folder):
    """A legacy (pre-N-sensor) checkpoint folder: config.json and state-dict names as the legacy CRJepaModel saved
    them (tests/data/two_sensor_reference.json: route codes aa, bb, ab, ba; keys stems.*, trunk.*, heads.*,
    predictors.*), weights from make_two_sensor_reference.reference_weights."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import save_file

    data = Path(__file__).parent / "data"
    spec = importlib.util.spec_from_file_location("make_two_sensor_reference", data / "make_two_sensor_reference.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    reference = json.loads((data / "two_sensor_reference.json").read_text())
    params = [(n, torch.nn.Parameter(torch.empty(shape))) for n, shape in reference["legacy_shapes"].items()]
    maker.reference_weights(params)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(reference["legacy_config"]))
    save_file(
        {n: p.detach().contiguous() for n, p in params}, str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    return maker, reference


def test_legacy_checkpoint_loads_into_the_encoder_and_the_pretraining_model(tmp_path, caplog):
    """A legacy checkpoint (keys stems.*, trunk.*, heads.*, predictors.*; route codes aa, bb, ab, ba) loads into both
    classes through from_pretrained: the pretraining model computes the recorded losses, the encoder the same
    embeddings; save_pretrained then writes it in the current format, which loads to the same numbers."""
    from safetensors import safe_open

    maker, reference = legacy_checkpoint(tmp_path / "legacy")
    pretraining, info = CRJepaForPreTraining.from_pretrained(tmp_path / "legacy", output_loading_info=True)
    assert all(not v for v in info.values() if isinstance(v, (list, set, dict))), info
    assert pretraining.config.routes == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    a, b, masks = maker.reference_inputs(pretraining.config)
    step, expected = reference["sigreg_step"], reference["variants"]["paper"]["losses"]["loss"]
    out = pretraining.train()({"s1": a, "s2": b}, sigreg_step=step, masks=masks)
    assert out.loss.item() == pytest.approx(expected, abs=roundoff(expected))
    encoder, info = CRJepaModel.from_pretrained(tmp_path / "legacy", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        assert torch.equal(
            encoder.eval().get_embeddings(a, "s1", "cross"), pretraining.eval().crjepa.get_embeddings(a, "s1", "cross")
        )
    assert "predictors" not in caplog.text

    pretraining.save_pretrained(tmp_path / "current")
    saved = json.loads((tmp_path / "current" / "config.json").read_text())
    assert saved["routes"] == pretraining.config.routes and set(saved["route_weights"]) == set(saved["routes"])
    assert saved["architectures"] == ["CRJepaForPreTraining"] and "AutoModelForPreTraining" in saved["auto_map"]
    with safe_open(str(tmp_path / "current" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {k.removeprefix("crjepa.") for k in keys} == set(reference["legacy_shapes"])
    assert all(k.startswith(("crjepa.", "predictors.")) for k in keys)
    again = CRJepaForPreTraining.from_pretrained(tmp_path / "current").train()
    out = again({"s1": a, "s2": b}, sigreg_step=step, masks=masks)
    assert out.loss.item() == pytest.approx(expected, abs=roundoff(expected))


def test_attn_implementation_selects_the_kernel_and_eager_equals_sdpa(tmp_path, monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = train_two_steps(CRJepaConfig.from_preset("tiny"))
    model.save_pretrained(tmp_path)
    eager = CRJepaModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = CRJepaModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    x = torch.randn(3, 12, 32, 32)
    with torch.no_grad():
        e, s = eager(x, sensor="s2", output_hidden_states=True), sdpa(x, sensor="s2", output_hidden_states=True)
    assert torch.allclose(e.last_hidden_state, s.last_hidden_state, atol=1e-5)
    assert torch.allclose(e.image_embeds, s.image_embeds, atol=1e-5)
    assert len(e.hidden_states) == model.config.num_hidden_layers + 1

    # the choice is real: with SDPA's kernel broken only the sdpa model fails
    def broken(*args, **kwargs):
        raise RuntimeError("sdpa kernel called")

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa", broken)
    with torch.no_grad():
        eager(x, sensor="s2")
        with pytest.raises(RuntimeError, match="sdpa kernel called"):
            sdpa(x, sensor="s2")
    # and the pretraining objective too: eager and sdpa give the same loss
    pretraining_eager = CRJepaForPreTraining.from_pretrained(tmp_path, attn_implementation="eager")
    assert pretraining_eager.predictors["cross"].blocks[0].cross_attn.config._attn_implementation == "eager"


def test_return_dict_false_gives_a_tuple_and_inputs_are_cast_to_the_models_dtype():
    model = CRJepaModel(CRJepaConfig.from_preset("tiny")).eval()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        as_tuple = model(x, return_dict=False)
        as_dict = model(x)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.last_hidden_state)
        assert torch.equal(as_tuple[1], as_dict.pooler_output)
        half = model.to(torch.bfloat16)(x, sensor="s1")  # float32 pixels into a bf16 model
    assert half.last_hidden_state.dtype == torch.bfloat16


def test_gradient_checkpointing_enable_gives_the_same_gradients():
    model = train_two_steps(CRJepaConfig.from_preset("tiny")).train()
    pixels = {
        s: torch.randn(4, c, 32, 32, generator=torch.Generator().manual_seed(3))
        for s, c in model.config.sensors.items()
    }
    masks = {s: (torch.arange(8).expand(4, 8), torch.arange(8, 16).expand(4, 8)) for s in model.config.sensors}

    def grads():
        model.zero_grad()
        model(pixels, sigreg_step=1, masks=masks).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert model.crjepa.trunk.blocks[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_push_to_hub_uploads_the_crjepa_card_and_can_push_the_encoder_only(tmp_path):
    """push_to_hub through an injected HfApi stand-in (offline): the uploaded folder holds the crjepa card,
    the image processor and, with encoder_only, a CRJepaModel without predictors."""
    uploads = []

    class OfflineApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

        def hf_hub_download(self, repo_id, filename, **kwargs):  # a new repo: no card yet
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(filename)

        def upload_folder(self, repo_id, folder_path, **kwargs):
            from safetensors import safe_open

            with safe_open(os.path.join(folder_path, "model.safetensors"), "pt") as f:
                keys = list(f.keys())
            uploads.append(
                {
                    "repo": repo_id,
                    "files": sorted(os.listdir(folder_path)),
                    "keys": keys,
                    "config": json.loads(open(os.path.join(folder_path, "config.json")).read()),
                    "card": open(os.path.join(folder_path, "README.md")).read(),
                }
            )
            return "ok"

    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
    assert model.push_to_hub("me/full", api=OfflineApi()) == "ok"
    assert model.push_to_hub("me/encoder", api=OfflineApi(), encoder_only=True, card="# my card\n") == "ok"
    full, encoder = uploads
    assert "CR-JEPA" in full["card"] and "image-feature-extraction" in full["card"]
    assert {"preprocessor_config.json", "modeling_crjepa.py", "README.md"} <= set(full["files"])
    assert any(k.startswith("predictors.") for k in full["keys"])
    assert encoder["card"] == "# my card\n" and encoder["config"]["architectures"] == ["CRJepaModel"]
    assert not any("predictors" in k for k in encoder["keys"]) and any(k.startswith("stems.") for k in encoder["keys"])


class RecordingApi:
    """An HfApi stand-in (offline) that records every call and what the uploaded folder held; ``card`` is the
    README.md already in the repo (None: the repo has none)."""

    def __init__(self, card: str | None = None, tmp_path=None) -> None:
        self.card, self.tmp_path, self.calls = card, tmp_path, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return type("Repo", (), {"repo_id": repo_id})()

    def hf_hub_download(self, repo_id, filename, **kwargs):
        from huggingface_hub.errors import EntryNotFoundError

        self.calls.append(("hf_hub_download", repo_id, {"filename": filename, **kwargs}))
        if self.card is None:
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        path = self.tmp_path / "hub_readme.md"
        path.write_text(self.card)
        return str(path)

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = sorted(os.listdir(folder_path))
        self.calls.append(
            (
                "upload_folder",
                repo_id,
                {**kwargs, "files": files, "card": open(os.path.join(folder_path, "README.md")).read()},
            )
        )
        return "commit"


def full_card() -> str:
    """A trained model's card: metadata with model-index results, a body with the results table."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    data = ModelCardData(
        model_name="crjepa-ben14k",
        library_name="transformers",
        tags=["crjepa"],
        eval_results=[
            EvalResult(
                task_type="image-feature-extraction",
                dataset_type="user/ben14k",
                dataset_name="BEN-14K",
                metric_type="crjepa_f1_at_k",
                metric_value=75.82,
                metric_config="s1->s2",
            )
        ],
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n# crjepa-ben14k\n\n| F1@5 | 75.82 |\n"))


def test_push_to_hub_passes_every_argument_through_and_keeps_the_full_card(tmp_path):
    """Every argument of transformers' push_to_hub reaches the client or the files (tags into the card's metadata,
    max_shard_size into the shards); the card is the one beside the loaded weights, else the repo's own (kept with
    its model-index), else the crjepa default; an unknown argument is a TypeError, never dropped."""
    from huggingface_hub import ModelCard

    torch.manual_seed(0)
    model = CRJepaModel(CRJepaConfig.from_preset("tiny"))
    hub = RecordingApi(card=full_card(), tmp_path=tmp_path)
    assert (
        model.push_to_hub(
            "me/model",
            commit_message="msg",
            commit_description="why",
            private=True,
            token="tok",
            revision="dev",
            create_pr=True,
            max_shard_size="100KB",
            tags=["sentinel-2"],
            api=hub,
        )
        == "commit"
    )
    (_, repo, created), (_, _, download), (_, _, upload) = hub.calls
    assert repo == "me/model" and created == {"private": True, "token": "tok", "exist_ok": True}
    assert download == {"filename": "README.md", "revision": "dev", "token": "tok"}
    files = upload.pop("files")
    assert {k: upload[k] for k in ("commit_message", "commit_description", "token", "revision", "create_pr")} == {
        "commit_message": "msg",
        "commit_description": "why",
        "token": "tok",
        "revision": "dev",
        "create_pr": True,
    }
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) > 1
    assert {"preprocessor_config.json", "pipeline_crjepa.py", "README.md"} <= set(files)
    pushed = ModelCard(upload["card"])
    assert pushed.data.tags == ["crjepa", "sentinel-2"] and "| F1@5 | 75.82 |" in pushed.text
    assert [(r.metric_type, r.metric_value) for r in pushed.data.eval_results] == [("crjepa_f1_at_k", 75.82)]

    # loaded from a trained model's folder: that folder's card travels (the repo has none yet)
    folder = tmp_path / "trained"
    model.save_pretrained(folder)
    (folder / "README.md").write_text(full_card())
    again = CRJepaModel.from_pretrained(folder)
    fresh = RecordingApi(card=None, tmp_path=tmp_path)
    again.push_to_hub("me/other", api=fresh)
    assert fresh.calls[-1][2]["card"] == full_card() and fresh.calls[-1][2]["commit_message"] == "Upload CR-JEPA model"
    # nothing anywhere: the crjepa default card, never transformers' generic one
    nothing = RecordingApi(card=None, tmp_path=tmp_path)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).push_to_hub("me/new", api=nothing)
    assert 'pipeline("image-feature-extraction"' in nothing.calls[-1][2]["card"]
    with pytest.raises(TypeError, match="safe_serialization"):
        model.push_to_hub("me/model", api=hub, safe_serialization=True)
