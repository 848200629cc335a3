"""Configuration of CREMA: a frozen BLIP-2 backbone plus one MMQA adapter per modality and a self-gated fusion."""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig
from transformers.utils import logging

from .modality_names import DEFAULT_MODALITY_PREFIXES
from .token_layout import TOKEN_LAYOUTS

logger = logging.get_logger(__name__)

#: How a modality reaches the Q-Former.
#: "vision": rendered to RGB frames and encoded by the shared frozen ViT (video, flow, depth, normal, thermal, touch).
#: "audio": per-segment inputs for the frozen audio encoder (``audio_config``), or precomputed audio features.
#: "features": precomputed encoder features only (no encoder runs inside the model).
#: "point_cloud": precomputed 3D features [N, D] plus voxel coordinates, with a sinusoidal position embedding.
ENCODER_KINDS = ("vision", "audio", "features", "point_cloud")


#: The fields of a modality spec (what `make_modality_spec` takes and an adapter file's metadata may hold).
MODALITY_SPEC_FIELDS = ("name", "encoder", "feature_size", "prefix", "prefix_token_ids", "layer_norm_eps")

#: Default encoder kind of the well-known modalities.
DEFAULT_ENCODER_KINDS = {"audio": "audio", "point_cloud": "point_cloud"}


def make_modality_spec(
    name: str,
    encoder: str | None = None,
    feature_size: int | None = None,
    prefix: str | None = None,
    prefix_token_ids: list[int] | None = None,
    layer_norm_eps: float | None = None,
) -> dict[str, Any]:
    """Builds the JSON-serialisable description of one modality, filling the defaults of well-known names.

    `layer_norm_eps`: eps of the modality's input LayerNorm; None means the vision encoder's (BLIP-2's 1e-6).
    Adapters converted from the authors' LAVIS checkpoints use LAVIS's 1e-5."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(
            f"Modality name {name!r} is not valid: use a Python identifier such as 'thermal' or 'point_cloud' "
            "(it becomes part of parameter names and input keys like '{name}_pixel_values')."
        )
    encoder = encoder or DEFAULT_ENCODER_KINDS.get(name, "vision")
    if encoder not in ENCODER_KINDS:
        raise ValueError(f"Modality {name!r}: unknown encoder kind {encoder!r}; expected one of {ENCODER_KINDS}.")
    return {
        "name": name,
        "encoder": encoder,
        "feature_size": feature_size,
        "prefix": DEFAULT_MODALITY_PREFIXES.get(name, f"{name.replace('_', ' ').title()}: ")
        if prefix is None
        else prefix,
        "prefix_token_ids": list(prefix_token_ids or []),
        "layer_norm_eps": layer_norm_eps,
    }


class CremaConfig(PreTrainedConfig):
    r"""
    Configuration of [`CremaForConditionalGeneration`].

    The backbone sub-configs are those of `Blip2Config` (vision encoder, Q-Former, T5 language model); the rest
    describes the trainable MMQA adapters and the fusion.

    Args:
        vision_config / qformer_config / text_config: the frozen BLIP-2 parts (`Blip2VisionConfig`,
            `Blip2QFormerConfig`, any `T5Config`).
        audio_config: optional config of a frozen `transformers` audio encoder (e.g. `ASTConfig`); without it,
            audio modalities take precomputed features (e.g. BEATs outputs).
        audio_feature_size: width of precomputed audio features when there is no audio encoder (768: BEATs).
        num_query_tokens: query tokens per modality (32 in BLIP-2).
        modalities: ordered list of modality specs (see `make_modality_spec`); the first is the major modality.
        num_frames: frames T per clip for per-frame modalities.
        num_audio_segments: audio segments S per clip.
        lora_rank / lora_alpha / lora_dropout: LoRA on the Q-Former self-attention query and value.
        use_fusion: fuse the supportive modalities with the self-gated fusion (else plain concatenation).
        token_layout: "paper" (DESIGN §1.4: fused tokens concatenated after the major modality's),
            "reference_concat" (the authors' released training scripts: use it with their converted checkpoints) or
            "reference_add" (alias "reference": the authors' non-concat branch). See `token_layout.py`.
        modalities_without_lora: modalities whose Q-Former pass runs without their LoRA (the authors' zero-shot
            "rgb-skip": plain BLIP-2 query outputs for video).
        fusion_modalities: the ordered modalities the fusion was built for (major first).
        frame_prefix_template: text put before each frame's tokens ("Frame {i}: ", i from 1).
        frame_prefix_token_ids: its token ids per frame (filled by `set_prefix_tokens`); empty means no prefixes.
        point_cloud_only_prefix_token_ids: the token ids of "Audio: ", which the reference layouts put before a
            point cloud that is the only input (as the authors' code does; filled by `set_prefix_tokens`).
        max_points / point_position_scale / point_grid_size: point-cloud padding, position-embedding scale and the
            voxel grid (coordinates must lie in [0, point_grid_size)).
        question_templates: the questions the adapters were trained on, when they are a closed set (e.g.
            crema-tiny's CREMA-Synth templates): dicts with "question" (`{slot}` stands for one or more words),
            "options" and "needs" (modalities). The pipeline notes a question outside them; None: no such set.
    """

    model_type = "crema"
    _auto_class = "AutoConfig"
    sub_configs_defaults = {
        "vision_config": Blip2VisionConfig,
        "qformer_config": Blip2QFormerConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="t5"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="audio-spectrogram-transformer", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    modalities: list | None = None
    num_frames: int = 4
    num_audio_segments: int = 2
    lora_rank: int = 64
    lora_alpha: int | None = None
    lora_dropout: float = 0.1
    use_fusion: bool = True
    fusion_modalities: list | None = None
    token_layout: str = "paper"
    modalities_without_lora: list | None = None
    frame_prefix_template: str = "Frame {i}: "
    frame_prefix_token_ids: list | None = None
    point_cloud_only_prefix_token_ids: list | None = None
    audio_feature_size: int = 768
    max_points: int = 5000
    point_position_scale: float = 0.01
    point_grid_size: int = 256
    initializer_range: float = 0.02
    question_templates: list | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        self.is_encoder_decoder = True
        if not getattr(self.text_config, "is_encoder_decoder", False):
            raise ValueError(
                f"CREMA needs an encoder-decoder language model (Flan-T5 / T5); got text_config of type "
                f"{self.text_config.model_type!r}. Decoder-only LLMs are not supported yet."
            )
        if self.token_layout not in TOKEN_LAYOUTS:
            raise ValueError(f"token_layout must be one of {TOKEN_LAYOUTS}; got {self.token_layout!r}.")
        self.modalities_without_lora = list(self.modalities_without_lora or [])
        specs = [
            make_modality_spec(**spec) if isinstance(spec, dict) else make_modality_spec(spec)
            for spec in (self.modalities or [])
        ]
        names = [spec["name"] for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate modality names in {names}: each modality has exactly one adapter.")
        for spec in specs:
            if spec["feature_size"] is None:
                spec["feature_size"] = self.default_feature_size(spec["encoder"])
        self.modalities = specs
        self.frame_prefix_token_ids = [list(ids) for ids in (self.frame_prefix_token_ids or [])]
        self.point_cloud_only_prefix_token_ids = list(self.point_cloud_only_prefix_token_ids or [])
        if self.fusion_modalities is not None:
            self.fusion_modalities = list(self.fusion_modalities)

    def default_feature_size(self, encoder: str) -> int:
        """Width of the features an encoder kind produces before the MMQA input projection."""
        if encoder == "audio":
            return self.audio_config.hidden_size if self.audio_config is not None else self.audio_feature_size
        return self.vision_config.hidden_size

    @property
    def modality_names(self) -> list[str]:
        return [spec["name"] for spec in self.modalities]

    def modality(self, name: str) -> dict[str, Any]:
        """The spec of one attached modality, with an error that lists the attached ones."""
        for spec in self.modalities:
            if spec["name"] == name:
                return spec
        raise ValueError(
            f"Unknown modality {name!r}: this model has adapters for {self.modality_names}. "
            f"Add one with `model.add_modality({name!r}, ...)` or `model.load_adapter(path, adapter_name={name!r})`."
        )

    @property
    def fusion_active(self) -> bool:
        """Whether the self-gated fusion is used (needs at least one supportive modality)."""
        return bool(self.use_fusion and self.fusion_modalities and len(self.fusion_modalities) >= 2)

    def without_modalities(self) -> "CremaConfig":
        """A copy describing only the frozen backbone (what `save_pretrained` stores as the base)."""
        base = copy.deepcopy(self)
        base.modalities = []
        base.fusion_modalities = None
        return base


__all__ = ["CremaConfig", "make_modality_spec", "ENCODER_KINDS", "DEFAULT_MODALITY_PREFIXES", "MODALITY_SPEC_FIELDS"]
