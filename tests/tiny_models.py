"""Tiny backbones, tokenizer and inputs built in code, so no test needs a Hub download."""

from __future__ import annotations

import torch
from transformers import (
    ASTConfig,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from modeling_crema import CremaConfig, CremaForConditionalGeneration

IMAGE_SIZE = 32
NUM_FRAMES = 3
VISION_WIDTH = 48
TEXT_WIDTH = 40
QUERY_COUNT = 4
AUDIO_WIDTH = 24

_CORPUS = [
    "Question: what is the person doing? Option A: cooking Option B: dancing Option C: reading",
    "Option D: running Option E: sleeping Considering the information presented in the frame,",
    "select the correct answer from the options. Based on the frames and audio information,",
    "answer the question using a single word or phrase. 3D Model thermal heatmap touch map",
    "Frame 1: Frame 2: Frame 3: Frame 4: Video: Audio: Depth: Optical Flow: Surface Normal: Thermal: Touch:",
    "guitar piano violin yes no two three one red blue green left right unanswerable",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small deterministic T5-style word-level tokenizer (pad=0, eos=1, unk=2) over the prompt vocabulary."""
    from crema_training.crema_tiny.backbone import build_tokenizer

    return build_tokenizer(_CORPUS)


def tiny_backbone_kwargs(vocab_size: int = 128) -> dict:
    return dict(
        vision_config=Blip2VisionConfig(
            hidden_size=VISION_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=8,
            initializer_range=0.02,  # BLIP-2's default (1e-10) would make the tiny ViT's features ~1e-9
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            cross_attention_frequency=2,
            encoder_hidden_size=VISION_WIDTH,
            vocab_size=vocab_size,
        ).to_dict(),
        text_config=T5Config(
            vocab_size=vocab_size,
            d_model=TEXT_WIDTH,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ).to_dict(),
        num_query_tokens=QUERY_COUNT,
    )


def tiny_audio_config() -> dict:
    return ASTConfig(
        hidden_size=AUDIO_WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        max_length=64,
        num_mel_bins=32,
    ).to_dict()


def tiny_crema_config(modalities=("video",), fusion=None, with_audio_encoder=False, **overrides) -> CremaConfig:
    kwargs = tiny_backbone_kwargs()
    if with_audio_encoder:
        kwargs["audio_config"] = tiny_audio_config()
    kwargs.update(
        modalities=list(modalities),
        fusion_modalities=list(fusion) if fusion else None,
        use_fusion=bool(fusion),
        num_frames=NUM_FRAMES,
        lora_rank=4,
        lora_dropout=0.0,
    )
    kwargs.update(overrides)
    return CremaConfig(**kwargs)


def tiny_crema_model(modalities=("video",), fusion=None, seed: int = 0, tokenizer=None, **overrides):
    """A random tiny CREMA in eval mode, with frame/modality prefixes from `tiny_tokenizer()`."""
    torch.manual_seed(seed)
    model = CremaForConditionalGeneration(tiny_crema_config(modalities, fusion, **overrides))
    model.set_prefix_tokens(tokenizer or tiny_tokenizer())
    return model.eval()


def tiny_blip2(seed: int = 0) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(Blip2Config(**tiny_backbone_kwargs()))
    with torch.no_grad():
        model.query_tokens.normal_(std=0.02)  # BLIP-2 initialises them to zeros; trained ones are not
    return model.eval()


def randomize_lora_b(model: CremaForConditionalGeneration, seed: int = 1, modalities=None) -> None:
    """LoRA B starts at zero (adapter = identity); tests that look at adapter effects make it non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            owner = name.split(".lora_B.")[-1].split(".")[0]
            if ".lora_B." in name and (modalities is None or owner in modalities):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def modality_inputs(model_config: CremaConfig, batch: int = 2, seed: int = 0, names=None) -> dict:
    """Random inputs for every attached modality of a tiny config (shapes as the processors produce)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for spec in model_config.modalities:
        name = spec["name"]
        if names is not None and name not in names:
            continue
        if spec["encoder"] == "vision":
            inputs[f"{name}_pixel_values"] = torch.randn(
                batch, model_config.num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator
            )
        elif spec["encoder"] == "audio" and model_config.audio_config is not None:
            inputs[f"{name}_input_values"] = torch.randn(
                batch, model_config.num_audio_segments, 64, 32, generator=generator
            )
        elif spec["encoder"] == "point_cloud":
            points = 10
            inputs[f"{name}_features"] = torch.randn(batch, points, spec["feature_size"], generator=generator)
            inputs[f"{name}_coordinates"] = torch.randint(0, 256, (batch, points, 3), generator=generator)
            mask = torch.ones(batch, points, dtype=torch.long)
            mask[0, 7:] = 0
            inputs[f"{name}_attention_mask"] = mask
        else:
            groups = model_config.num_audio_segments if spec["encoder"] == "audio" else model_config.num_frames
            inputs[f"{name}_features"] = torch.randn(batch, groups, 6, spec["feature_size"], generator=generator)
    return inputs


def without_dropout(model):
    """Q-Former dropout off (it is active in train mode), for comparisons that must not depend on random draws."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # the attention's functional dropout
    return model


def text_inputs(tokenizer, batch: int = 2) -> dict:
    questions = ["Question: what is the person doing?", "Question: red or blue?"][:batch]
    answers = ["dancing", "blue"][:batch]
    encoded = tokenizer(questions, padding=True, return_tensors="pt")
    labels = tokenizer(answers, padding=True, return_tensors="pt").input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    return {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask, "labels": labels}
