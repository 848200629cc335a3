"""BLIP-2 -> CREMA: reuse a `Blip2ForConditionalGeneration` checkpoint (T5 LLM) as CREMA's frozen backbone."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from transformers import Blip2ForConditionalGeneration
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


def crema_from_blip2(
    model_class,
    blip2_model_or_path: Blip2ForConditionalGeneration | str | os.PathLike,
    modalities: Sequence[Any] = ("video",),
    tokenizer=None,
    **config_kwargs: Any,
):
    """Builds `model_class` from a BLIP-2 model: backbone weights shared, each MMQA copying BLIP-2's queries,
    `language_projection` and vision `post_layernorm` (DESIGN §1.1). Without copying the backbone in memory:
    the CREMA skeleton is built on the meta device and takes BLIP-2's tensors by assignment."""
    if not isinstance(blip2_model_or_path, Blip2ForConditionalGeneration):
        path = blip2_model_or_path
        blip2_model_or_path = Blip2ForConditionalGeneration.from_pretrained(path)
        if tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError):
                logger.warning(f"No tokenizer found at {path}: frame and modality prefixes stay empty.")
    blip2 = blip2_model_or_path
    config = crema_config_from_blip2(blip2.config, modalities, **config_kwargs)
    requested, fusion = config.modalities, config.fusion_modalities
    with torch.device("meta"):
        model = model_class(config.without_modalities())
    result = model.load_state_dict(blip2.state_dict(), strict=False, assign=True)
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
    for spec in requested:
        model.add_modality(**spec)
    if config.use_fusion and fusion:
        model.set_fusion(fusion)
    if tokenizer is not None:
        model.set_prefix_tokens(tokenizer)
    model.config.name_or_path = getattr(blip2.config, "name_or_path", "") or ""
    return model
