"""crjepa: CR-JEPA for cross-modal remote-sensing retrieval, Hugging Face-native.

`CRJepaConfig`, `CRJepaModel` (the encoder, AutoModel), `CRJepaForPreTraining` (encoder + predictors + objective,
AutoModelForPreTraining) and `CRJepaImageProcessor` are registered for the Auto classes: loading a saved folder
works with `AutoModel.from_pretrained(path, trust_remote_code=True)` without this package installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_crjepa import PRESETS, CRJepaConfig
from .image_processing_crjepa import CRJepaImageProcessor, preprocess_batch
from .modeling_crjepa import CRJepaForPreTraining, CRJepaModel, CRJepaModelOutput, CRJepaPreTrainingOutput

CRJepaConfig.register_for_auto_class()
CRJepaModel.register_for_auto_class("AutoModel")
CRJepaForPreTraining.register_for_auto_class("AutoModelForPreTraining")
CRJepaImageProcessor.register_for_auto_class("AutoImageProcessor")
AutoConfig.register("crjepa", CRJepaConfig, exist_ok=True)
AutoModel.register(CRJepaConfig, CRJepaModel, exist_ok=True)
AutoModelForPreTraining.register(CRJepaConfig, CRJepaForPreTraining, exist_ok=True)

__version__ = "0.1.0"
__all__ = [
    "CRJepaConfig",
    "CRJepaModel",
    "CRJepaForPreTraining",
    "CRJepaModelOutput",
    "CRJepaPreTrainingOutput",
    "CRJepaImageProcessor",
    "preprocess_batch",
    "PRESETS",
]
