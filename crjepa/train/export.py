"""A training checkpoint -> a ``from_pretrained`` folder (model + image processor + card with fresh scores).

A long run saves ``output_dir/checkpoints/step_N`` (accelerate's ``save_state``: weights in model.safetensors,
optimiser and RNG state beside them) and writes ``output_dir/model`` only at the end. A user who stops the run
early still wants to evaluate or publish what it learned: `export_checkpoint` builds the model from the run
configuration stored in the checkpoint's trainer_state.json, loads the checkpoint's safetensors weights (never
the pickled optimiser / RNG files), scores it on the run's data as the run's ``eval`` section says, and writes
the folder atomically. The ``crjepa export-checkpoint`` command calls it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crjepa.train.checkpoints import CHECKPOINT_PREFIX, list_checkpoints, read_state
from crjepa.train.config import ConfigError, RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

WEIGHTS_FILE = "model.safetensors"


def find_checkpoint(path: str | os.PathLike, step: int | None = None) -> Path:
    """The checkpoint folder of a run's ``output_dir`` (the latest, or the one of ``step``), or ``path`` itself
    when it is a checkpoint folder. A ConfigError lists what exists when nothing fits."""
    path = Path(path).expanduser()
    if (path / WEIGHTS_FILE).is_file() and path.name.startswith(CHECKPOINT_PREFIX):
        return path
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise ConfigError(
            f"No complete checkpoint under {path / 'checkpoints'} (give a run's output_dir, or a "
            "checkpoints/step_N folder)"
        )
    if step is None:
        return checkpoints[-1]
    for checkpoint in checkpoints:
        if int(checkpoint.name[len(CHECKPOINT_PREFIX) :]) == int(step):
            return checkpoint
    steps = [int(c.name[len(CHECKPOINT_PREFIX) :]) for c in checkpoints]
    raise ConfigError(f"No checkpoint of step {step} under {path / 'checkpoints'}; steps available: {steps}")


def load_checkpoint_model(checkpoint: str | os.PathLike) -> tuple[PreTrainedModel, RunConfig, dict[str, Any]]:
    """(model in eval mode, run configuration, trainer state) of a checkpoint folder."""
    from safetensors.torch import load_file

    from crjepa.baselines.models import model_for_config
    from crjepa.train.config import build_model_config

    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    run_config = state.get("run_config")
    if not isinstance(run_config, dict):
        raise ConfigError(
            f"{checkpoint / 'trainer_state.json'} holds no run configuration (a checkpoint written "
            "before crjepa stored it); rerun from its YAML with --resume to save a new one"
        )
    from crjepa.utils.files import FileCheckError, check_safetensors

    try:
        check_safetensors(checkpoint / WEIGHTS_FILE)
    except FileCheckError as exc:
        raise ConfigError(str(exc)) from None
    model = model_for_config(build_model_config(run_config))
    weights = load_file(str(checkpoint / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{checkpoint / WEIGHTS_FILE} does not fit the run's model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval(), run_config, state


def export_checkpoint(
    path: str | os.PathLike,
    output: str | os.PathLike,
    step: int | None = None,
    evaluate: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write a checkpoint as a ``from_pretrained`` folder at ``output``: config.json + model.safetensors + the
    remote code, the image processor, and a model card whose scores come from evaluating the checkpoint on the
    run's data (``evaluate=False``: a card without scores is not written; README.md is then omitted).

    Returns {"checkpoint", "step", "output", "results"}.
    """
    import torch

    from crjepa.hub.cards import render_model_card
    from crjepa.utils.atomic import atomic_dir, check_not_inside
    from modeling_crjepa import CRJepaImageProcessor

    checkpoint = find_checkpoint(path, step)
    check_not_inside(output, checkpoint, what="-o folder")
    model, run_config, state = load_checkpoint_model(checkpoint)
    model = model.to(torch.device(device))
    results = None
    if evaluate:
        from crjepa.eval.retrieval import evaluate_retrieval
        from crjepa.train.data import load_data
        from crjepa.train.evaluation import retrieval_encoder

        ev = run_config["eval"]
        dataset = load_data(run_config, model.config)
        results = evaluate_retrieval(
            retrieval_encoder(model),
            dataset,
            query_split=ev["query_split"],
            gallery_split=ev["gallery_split"],
            k=ev["k"],
            batch_size=ev["batch_size"],
            dataset_name=run_config["data"]["name"] or str(run_config["data"]["source"]),
        )
    with atomic_dir(output, "model") as tmp:
        model.save_pretrained(tmp)
        CRJepaImageProcessor.from_config(model.config).save_pretrained(tmp)
        if results is not None:
            summary = {
                "steps": state["step"],
                "total_steps": state.get("total_steps", "n/a"),
                "epochs": run_config["training"]["epochs"],
                "num_parameters": f"{model.num_parameters() / 1e6:.2f}M",
            }
            render_model_card(model.config, run_config, results, training_summary=summary).save(tmp / "README.md")
    return {"checkpoint": str(checkpoint), "step": state["step"], "output": str(Path(output)), "results": results}


__all__ = ["export_checkpoint", "find_checkpoint", "load_checkpoint_model"]
