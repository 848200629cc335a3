"""BLIP-2 -> CREMA: reuse a `Blip2ForConditionalGeneration` checkpoint (T5 LLM) as CREMA's frozen backbone."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from transformers import Blip2ForConditionalGeneration, PreTrainedModel
from transformers.utils import logging

from .configuration_crema import CremaConfig

logger = logging.get_logger(__name__)


def crema_config_from_blip2(blip2_config, modalities: Sequence[Any] = ("video",), **config_kwargs: Any) -> CremaConfig:
    """A CREMA config whose backbone sub-configs are those of `blip2_config`."""
    if getattr(blip2_config, "use_decoder_only_language_model", False):
        raise ValueError(
            "This BLIP-2 checkpoint uses a decoder-only LLM (e.g. OPT); CREMA needs a T5 / Flan-T5 BLIP-2 "
            "(e.g. Salesforce/blip2-flan-t5-xl)."
        )
    return CremaConfig(
        vision_config=blip2_config.vision_config.to_dict(),
        qformer_config=blip2_config.qformer_config.to_dict(),
        text_config=blip2_config.text_config.to_dict(),
        num_query_tokens=blip2_config.num_query_tokens,
        modalities=list(modalities),
        **config_kwargs,
    )


def load_audio_encoder(audio_encoder: PreTrainedModel | str | os.PathLike) -> PreTrainedModel:
    """A frozen `transformers` audio encoder (AST, CLAP audio, Whisper encoder, ...) from its own checkpoint."""
    if isinstance(audio_encoder, PreTrainedModel):
        return audio_encoder
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(audio_encoder)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot load the audio encoder {str(audio_encoder)!r} (`audio_encoder=`): {error}") from None


def crema_from_blip2(
    model_class,
    blip2_model_or_path: Blip2ForConditionalGeneration | str | os.PathLike,
    modalities: Sequence[Any] = ("video",),
    tokenizer=None,
    audio_encoder: PreTrainedModel | str | os.PathLike | None = None,
    **config_kwargs: Any,
):
    """Builds `model_class` from a BLIP-2 model: backbone weights shared, each MMQA copying BLIP-2's queries,
    `language_projection` and vision `post_layernorm` (DESIGN §1.1). Without copying the backbone in memory:
    the CREMA skeleton is built on the meta device and takes BLIP-2's tensors (and the audio encoder's) by
    assignment. The result is in eval mode, as `from_pretrained` returns models."""
    from .modeling_crema import tokenizer_is_usable

    if not isinstance(blip2_model_or_path, Blip2ForConditionalGeneration):
        path = blip2_model_or_path
        blip2_model_or_path = Blip2ForConditionalGeneration.from_pretrained(path)
        if tokenizer is None:
            tokenizer = _tokenizer_beside(path)
    elif tokenizer is None:
        logger.warning("`from_blip2` got a BLIP-2 instance without `tokenizer=`: the frame and modality prefixes "
                       "stay empty. Pass the LLM's tokenizer to get them.")
    if tokenizer is not None and not tokenizer_is_usable(tokenizer):
        logger.warning("The tokenizer given to `from_blip2` is empty: the frame and modality prefixes stay empty.")
        tokenizer = None
    blip2 = blip2_model_or_path
    audio_model = load_audio_encoder(audio_encoder) if audio_encoder is not None else None
    if audio_model is not None:
        # without where it was loaded from: as in transformers' own saved configs, a local path means nothing elsewhere
        audio_config = audio_model.config.to_dict()
        audio_config.pop("_name_or_path", None)
        config_kwargs["audio_config"] = audio_config
    config = crema_config_from_blip2(blip2.config, modalities, **config_kwargs)
    requested, fusion = config.modalities, config.fusion_modalities
    with torch.device("meta"):
        model = model_class(config.without_modalities())
    state = dict(blip2.state_dict())
    if audio_model is not None:
        state.update({f"audio_model.{key}": value for key, value in audio_model.state_dict().items()})
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"BLIP-2 weights do not fit CREMA's backbone: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    model.tie_weights()
    still_meta = [name for name, tensor in list(model.named_parameters()) + list(model.named_buffers()) if tensor.is_meta]
    if still_meta:
        raise ValueError(f"BLIP-2 conversion left tensors without values: {still_meta[:5]}")
    model.config.use_fusion = config.use_fusion
    if tokenizer is not None:
        model.set_prefix_tokens(tokenizer)
    for spec in requested:
        model.add_modality(**spec)
    if config.use_fusion and fusion:
        model.set_fusion(fusion)
    model.config.name_or_path = getattr(blip2.config, "name_or_path", "") or ""
    return model.eval()


def _tokenizer_beside(path: str | os.PathLike):
    """The tokenizer saved with a BLIP-2 checkpoint, or None (warned) when there is none: for a folder without
    tokenizer files `AutoTokenizer` returns an empty tokenizer rather than failing."""
    from transformers import AutoTokenizer

    from .modeling_crema import tokenizer_is_usable

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    if not tokenizer_is_usable(tokenizer):
        logger.warning(f"No tokenizer found at {path}: the frame and modality prefixes stay empty. Pass "
                       "`tokenizer=` (the LLM's tokenizer) to get them.")
        return None
    return tokenizer
