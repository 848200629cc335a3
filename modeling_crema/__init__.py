"""CREMA for `transformers`: importing this package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_crema import CremaConfig, make_modality_spec
from .fusion import SelfGatedFusion
from .modeling_crema import CremaForConditionalGeneration, CremaForConditionalGenerationOutput, CremaPreTrainedModel

AutoConfig.register(CremaConfig.model_type, CremaConfig, exist_ok=True)
AutoModel.register(CremaConfig, CremaForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(CremaConfig, CremaForConditionalGeneration, exist_ok=True)

__all__ = [
    "CremaConfig",
    "CremaForConditionalGeneration",
    "CremaForConditionalGenerationOutput",
    "CremaPreTrainedModel",
    "SelfGatedFusion",
    "make_modality_spec",
]
