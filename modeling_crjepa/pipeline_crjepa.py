"""The `image-feature-extraction` pipeline of CR-JEPA checkpoints: native-band images of any sensor -> the
retrieval embeddings.

transformers' own image-feature-extraction pipeline turns every input into a 3-band RGB image and returns trunk
tokens, so it cannot serve a Sentinel-1 (2 bands, dB) or Sentinel-2 (12 bands, uint16) model and returns the wrong
vectors for any. Every checkpoint therefore names this class in its config (``custom_pipelines``, written by
`CRJepaPreTrainedModel.save_pretrained`, which copies this file beside the model's), so

    pipeline("image-feature-extraction", model=CHECKPOINT, trust_remote_code=True)(image, sensor="s2", space="cross")

runs CRJepaImageProcessor and `get_embeddings` on any sensor's images. This file travels as remote code: it imports
only torch, numpy, transformers and its siblings.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeGuard

import numpy as np
import torch
from transformers import Pipeline

from .image_processing_crjepa import CRJepaImageProcessor

PIPELINE_TASK = "image-feature-extraction"
"""The task the checkpoints register this pipeline under: the Hub's task for embedding models (the card's
pipeline_tag), so the call the card's tag suggests is the one that works."""
PIPELINE_CONFIG = {
    PIPELINE_TASK: {"impl": "pipeline_crjepa.CRJepaFeatureExtractionPipeline", "pt": ["AutoModel"], "type": "image"}
}
"""config.custom_pipelines of every saved checkpoint (transformers' format: module.Class, the Auto classes)."""


class EmbeddingModel(Protocol):
    """What the pipeline needs of its model: CRJepaModel's retrieval API, and the config its processor is built
    from when none was saved (a PreTrainedModel's, so Any here)."""

    config: Any

    def get_embeddings(self, pixel_values: torch.Tensor, sensor: str, space: str = "unified") -> torch.Tensor: ...


def has_embeddings(model: object) -> TypeGuard[EmbeddingModel]:
    """Whether `model` serves get_embeddings (a CR-JEPA model: this package's class or the remote-code copy)."""
    return hasattr(model, "get_embeddings")


def is_crjepa_processor(processor: object) -> TypeGuard[CRJepaImageProcessor]:
    """Whether `processor` is a CRJepaImageProcessor: this module's class or the remote-code copy of it."""
    return isinstance(processor, CRJepaImageProcessor) or type(processor).__name__ == "CRJepaImageProcessor"


class ImageBatch:
    """A list of images that goes through the pipeline as one input (one forward pass), split again at the end;
    not a list itself, since transformers' Pipeline runs the items of a list one by one."""

    def __init__(self, images: list[Any] | tuple[Any, ...]) -> None:
        self.images = list(images)


class CRJepaFeatureExtractionPipeline(Pipeline):
    """Retrieval embeddings of one sensor's images: ``pipe(images, sensor=None, space="unified")``.

    images: one image (numpy array, torch tensor, PIL image, or a .npy / PNG / JPEG path) at the sensor's native size
    and dtype (S2 uint16 reflectance, S1 float32 dB, RGB uint8), channel-first (C, H, W) or channel-last (H, W, C);
    a batched (B, ...) array; or a list of images (one forward pass for the whole list).
    sensor: which stem (None: the only sensor with the images' channel count, else the config's default sensor).
    space: "unified" (same-sensor search) or "cross" (cross-sensor search). input_data_format: force the layout.
    return_tensors: False (default, as transformers' image-feature-extraction pipeline): lists of floats; True: torch
    tensors. One image gives a (retrieval_dim,) vector, a batched array a (B, retrieval_dim) one, a list a list of
    vectors. The vectors are L2-normalised: rank by inner product. They equal
    ``model.get_embeddings(processor(images, sensor=...)["pixel_values"], sensor, space)``.
    """

    # Pipeline declares these flags as None-typed class attributes; booleans are what it reads
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = True  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_tokenizer = False  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not has_embeddings(self.model):
            raise ValueError(
                f"CRJepaFeatureExtractionPipeline needs a CR-JEPA model (get_embeddings), found "
                f"{type(self.model).__name__}"
            )
        if not is_crjepa_processor(self.image_processor):
            # a folder saved without its processor, or another processor: the one the model's config defines
            self.image_processor = CRJepaImageProcessor.from_config(self.model.config)

    # The overrides below take the images under their own name and the stage parameters that
    # _sanitize_parameters returns as keyword arguments; Pipeline's signatures type those as **dict and the
    # model outputs as ModelOutput, which no subclass can match.
    def __call__(self, images: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """See the class docstring; a list of images runs as one batch."""
        if isinstance(images, (list, tuple)):
            images = ImageBatch(images)
        return super().__call__(images, **kwargs)

    def _sanitize_parameters(
        self,
        sensor: str | None = None,
        space: str | None = None,
        return_tensors: bool | None = None,
        input_data_format: Any = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(
                f"The CR-JEPA pipeline got unexpected argument(s) {sorted(kwargs)}; it takes sensor, "
                "space, return_tensors, input_data_format"
            )
        preprocess = {"sensor": sensor, "input_data_format": input_data_format}
        forward = {} if space is None else {"space": space}
        postprocess = {} if return_tensors is None else {"return_tensors": return_tensors}
        return preprocess, forward, postprocess

    def preprocess(  # type: ignore[override]
        self,
        images: Any,
        sensor: str | None = None,
        input_data_format: Any = None,
    ) -> dict[str, Any]:
        batched = isinstance(images, ImageBatch)
        if not batched and isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            shape = "batch"
        else:
            shape = "list" if batched else "single"
        processor = self.image_processor
        assert is_crjepa_processor(processor)  # __init__ made it one
        batch, sensor = processor.read(images.images if batched else images, sensor, input_data_format)
        pixels = processor.preprocess(batch, sensor=sensor, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "sensor": sensor, "shape": shape}

    def _forward(  # type: ignore[override]
        self,
        model_inputs: dict[str, Any],
        space: str = "unified",
    ) -> dict[str, Any]:
        model = self.model
        assert has_embeddings(model)  # checked in __init__
        embeddings = model.get_embeddings(model_inputs["pixel_values"], sensor=model_inputs["sensor"], space=space)
        return {"embeddings": embeddings, "shape": model_inputs["shape"]}

    def postprocess(  # type: ignore[override]
        self,
        model_outputs: dict[str, Any],
        return_tensors: bool = False,
    ) -> Any:
        embeddings = model_outputs["embeddings"].float().cpu()
        shape = model_outputs["shape"]
        if shape == "single":
            embeddings = embeddings[0]
        if shape == "list":
            return [e if return_tensors else e.tolist() for e in embeddings]
        return embeddings if return_tensors else embeddings.tolist()


__all__ = ["CRJepaFeatureExtractionPipeline", "ImageBatch", "PIPELINE_CONFIG", "PIPELINE_TASK"]
