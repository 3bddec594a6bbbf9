"""The retrieval-only copy of a saved CR-JEPA model folder, for publishing the encoder without the predictors."""

from __future__ import annotations

from pathlib import Path

from crjepa.utils.atomic import atomic_dir


def export_encoder(model_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """The retrieval-only copy of a saved CR-JEPA folder (a CRJepaForPreTraining run's ``output_dir/model``):
    CRJepaModel (stems, trunk, heads; no predictors) with its remote code, image processor and the folder's
    card, written atomically to ``output_dir`` (an existing folder only with ``overwrite`` or when it is an earlier
    export). Publishing this folder pushes the encoder only."""
    import shutil

    from crjepa.utils.files import check_safetensors_in
    from modeling_crjepa import CRJepaModel

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"No saved model in {model_dir} (config.json missing)")
    check_safetensors_in(model_dir)
    encoder = CRJepaModel.from_pretrained(model_dir)
    with atomic_dir(output_dir, kind="model-encoder", overwrite=overwrite) as tmp:
        for name in ("README.md", "preprocessor_config.json"):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        encoder.save_pretrained(tmp)
        if (model_dir / "preprocessor_config.json").is_file():  # the processor's remote code travels too
            shutil.copy2(model_dir / "image_processing_crjepa.py", tmp / "image_processing_crjepa.py")
    return Path(output_dir)


__all__ = ["export_encoder"]
