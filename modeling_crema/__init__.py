"""CREMA for `transformers`: importing this package registers it with the Auto classes and registers the
`crema-video-question-answering` pipeline."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_crema import CremaConfig, make_modality_spec
from .fusion import SelfGatedFusion
from .modeling_crema import CremaForConditionalGeneration, CremaForConditionalGenerationOutput, CremaPreTrainedModel
from .pipeline_crema import CremaVideoQuestionAnsweringPipeline

AutoConfig.register(CremaConfig.model_type, CremaConfig, exist_ok=True)
AutoModel.register(CremaConfig, CremaForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(CremaConfig, CremaForConditionalGeneration, exist_ok=True)

__all__ = [
    "CremaConfig",
    "CremaForConditionalGeneration",
    "CremaForConditionalGenerationOutput",
    "CremaPreTrainedModel",
    "CremaVideoQuestionAnsweringPipeline",
    "SelfGatedFusion",
    "make_modality_spec",
]
