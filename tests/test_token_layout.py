"""The two LLM-input layouts: the paper's (DESIGN §1.4) and the authors' reference code's."""

import math

import torch

from modeling_crema.mmqa import sinusoidal_point_embedding
from tiny_models import NUM_FRAMES, QUERY_COUNT, modality_inputs, text_inputs, tiny_crema_model


def _prepared(model, tokenizer):
    text = text_inputs(tokenizer)
    inputs = modality_inputs(model.config)
    prepared = model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"], **inputs)
    return prepared, prepared.inputs_embeds.shape[1] - text["input_ids"].shape[1]


def _frame_prefix_length(tokenizer):
    return len(tokenizer("Frame 1: ", add_special_tokens=False).input_ids)


def test_reference_fusion_adds_the_gated_tokens_to_the_major_modality(tokenizer):
    names = ["video", "flow", "depth"]
    paper = tiny_crema_model(names, fusion=names)
    reference = tiny_crema_model(names, fusion=names, token_layout="reference")
    p = _frame_prefix_length(tokenizer)
    paper_out, paper_visual = _prepared(paper, tokenizer)
    reference_out, reference_visual = _prepared(reference, tokenizer)
    assert paper_visual == 2 * NUM_FRAMES * (p + QUERY_COUNT)
    assert reference_visual == NUM_FRAMES * (p + QUERY_COUNT)
    embeds = reference_out.modality_embeds
    fused = reference.fusion([embeds["flow"], embeds["depth"]])
    for frame in range(NUM_FRAMES):
        start = frame * (p + QUERY_COUNT) + p
        torch.testing.assert_close(
            reference_out.inputs_embeds[:, start : start + QUERY_COUNT], embeds["video"][:, frame] + fused[:, frame]
        )


def test_reference_concat_shares_frame_prefixes_and_puts_audio_last_without_prefix(tokenizer):
    names = ["video", "depth", "audio", "point_cloud"]
    model = tiny_crema_model(names, token_layout="reference", with_audio_encoder=True)
    p = _frame_prefix_length(tokenizer)
    pc_prefix = len(tokenizer("3D Model: ", add_special_tokens=False).input_ids)
    prepared, visual = _prepared(model, tokenizer)
    segments = model.config.num_audio_segments
    assert visual == NUM_FRAMES * (p + 2 * QUERY_COUNT) + segments * QUERY_COUNT + pc_prefix + QUERY_COUNT
    embeds = prepared.modality_embeds
    second_frame = (p + 2 * QUERY_COUNT) + p  # [Frame 1: video depth][Frame 2: video ...
    torch.testing.assert_close(prepared.inputs_embeds[:, second_frame : second_frame + QUERY_COUNT], embeds["video"][:, 1])
    depth_start = second_frame + QUERY_COUNT
    torch.testing.assert_close(prepared.inputs_embeds[:, depth_start : depth_start + QUERY_COUNT], embeds["depth"][:, 1])
    audio_start = NUM_FRAMES * (p + 2 * QUERY_COUNT)
    torch.testing.assert_close(
        prepared.inputs_embeds[:, audio_start : audio_start + segments * QUERY_COUNT], embeds["audio"].flatten(1, 2)
    )


def test_paper_concat_gives_each_supportive_modality_its_prefix(tokenizer):
    model = tiny_crema_model(["video", "depth", "point_cloud"])
    p = _frame_prefix_length(tokenizer)
    depth_prefix = len(tokenizer("Depth: ", add_special_tokens=False).input_ids)
    pc_prefix = len(tokenizer("3D Model: ", add_special_tokens=False).input_ids)
    _, visual = _prepared(model, tokenizer)
    assert visual == 2 * NUM_FRAMES * (p + QUERY_COUNT) + depth_prefix + pc_prefix + QUERY_COUNT


def test_point_embedding_matches_3d_llm_positional_encoding():
    """Independent re-statement of `positional_encodings.PositionalEncoding1D(1408 // 3)` applied per axis."""
    width, channels = 1408, 1408 // 3
    even = int(math.ceil(channels / 2) * 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, even, 2).float() / even))
    table = torch.zeros(256, even)
    angles = torch.arange(256).float()[:, None] * inv_freq[None]
    table[:, 0::2], table[:, 1::2] = angles.sin(), angles.cos()
    table = table[:, :channels]
    coordinates = torch.tensor([[0, 5, 255], [17, 128, 3]])
    expected = torch.zeros(2, width)
    expected[:, : 3 * channels] = torch.cat([table[coordinates[:, axis]] for axis in range(3)], dim=-1)
    torch.testing.assert_close(sinusoidal_point_embedding(coordinates, width), expected)


def test_point_cloud_coordinates_outside_the_grid_are_refused(tokenizer):
    import pytest

    model = tiny_crema_model(["video", "point_cloud"])
    inputs = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    inputs["point_cloud_coordinates"] = inputs["point_cloud_coordinates"].clone()
    inputs["point_cloud_coordinates"][0, 0, 1] = 300
    with pytest.raises(ValueError, match=r"'point_cloud': voxel coordinates must lie in \[0, 256\).*300"):
        model(**inputs)


def test_new_non_visual_adapters_start_with_an_identity_layernorm():
    model = tiny_crema_model(["video"])
    with torch.no_grad():
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
        model.vision_model.post_layernorm.bias.uniform_(-0.5, 0.5)
    model.add_modality("point_cloud")
    model.add_modality("audio", feature_size=24)
    model.add_modality("thermal")
    for name in ("point_cloud", "audio"):
        norm = model.mmqa[name].modules_to_save[name].input_layernorm
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))
    thermal_norm = model.mmqa["thermal"].modules_to_save["thermal"].input_layernorm
    assert torch.equal(thermal_norm.weight, model.vision_model.post_layernorm.weight)
    assert torch.equal(thermal_norm.bias, model.vision_model.post_layernorm.bias)
