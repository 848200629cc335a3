"""The self-gated fusion (paper eq. 3, DESIGN §1.3) computed by hand from the fusion's weights and the
per-modality LLM-space embeddings: audio averaged over its segments, a point cloud repeated over the T frames,
x = W · concat_channels(supportive) + b, fused = x · sigmoid(x); absent supportive modalities contribute zeros."""

import pytest
import torch

from reference_math import self_gated_fusion, sharpen_cross_attention
from tiny_models import NUM_FRAMES, QUERY_COUNT, modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model

MODALITIES = ["video", {"name": "audio", "feature_size": 24}, "depth", "point_cloud"]
NAMES = ["video", "audio", "depth", "point_cloud"]


def _model(layout="paper"):  # "reference_add": fused tokens added to the video tokens
    model = tiny_crema_model(MODALITIES, fusion=NAMES, token_layout=layout)
    randomize_lora_b(model)
    sharpen_cross_attention(model)  # per-segment / per-modality embeddings then differ visibly
    return model


def _inputs(model, tokenizer):
    inputs = modality_inputs(model.config)  # audio: (B, 2 segments, 6, 24) precomputed features
    text = text_inputs(tokenizer)
    return inputs, text


def _prepare(model, inputs, text, modalities=None):
    with torch.no_grad():
        return model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"], modalities, **inputs)


def _hand_fused(model, embeds, present=NAMES, gated=True):
    """Supportive blocks in the fusion's order [audio, depth, point_cloud], each (B, T, Q, H)."""
    video = embeds["video"]
    blocks = []
    for name in ["audio", "depth", "point_cloud"]:
        if name not in present:
            blocks.append(torch.zeros_like(video))
        elif name == "audio":  # (B, S, Q, H): mean over the S segments, then the same tokens for every frame
            mean = sum(embeds[name][:, segment] for segment in range(embeds[name].shape[1])) / embeds[name].shape[1]
            blocks.append(mean.unsqueeze(1).repeat(1, NUM_FRAMES, 1, 1))
        elif name == "point_cloud":  # (B, 1, Q, H): repeated over the frames
            blocks.append(embeds[name].repeat(1, NUM_FRAMES, 1, 1))
        else:
            blocks.append(embeds[name])
    weight, bias = model.fusion.projection.weight.detach(), model.fusion.projection.bias.detach()
    return self_gated_fusion(blocks, weight, bias, gated=gated)


def _fused_slots_paper(model, inputs_embeds):
    """Paper layout: [Frame i: v_i]_i then [Frame i: e_i]_i -> the (B, T, Q, H) fused slots."""
    prefix = [len(ids) for ids in model.config.frame_prefix_token_ids]
    position = sum(prefix) + NUM_FRAMES * QUERY_COUNT
    slots = []
    for frame in range(NUM_FRAMES):
        position += prefix[frame]
        slots.append(inputs_embeds[:, position : position + QUERY_COUNT])
        position += QUERY_COUNT
    return torch.stack(slots, dim=1)


def test_audio_segments_differ_so_their_mean_is_not_any_one_segment(tokenizer):
    model = _model()
    inputs, text = _inputs(model, tokenizer)
    audio = _prepare(model, inputs, text).modality_embeds["audio"]
    assert audio.shape[1] == 2 and (audio[:, 0] - audio[:, 1]).abs().max() > 0.1


def test_paper_fused_tokens_equal_hand_self_gated_fusion(tokenizer):
    model = _model()
    inputs, text = _inputs(model, tokenizer)
    prepared = _prepare(model, inputs, text)
    expected = _hand_fused(model, prepared.modality_embeds)
    torch.testing.assert_close(_fused_slots_paper(model, prepared.inputs_embeds), expected, rtol=1e-5, atol=1e-5)
    # the gate is doing something: x * sigmoid(x) is far from x at these values
    assert (_hand_fused(model, prepared.modality_embeds, gated=False) - expected).abs().max() > 0.05


def test_reference_layout_adds_hand_fused_tokens_to_the_major_modality(tokenizer):
    model = _model("reference_add")
    inputs, text = _inputs(model, tokenizer)
    prepared = _prepare(model, inputs, text)
    expected = prepared.modality_embeds["video"] + _hand_fused(model, prepared.modality_embeds)
    prefix = [len(ids) for ids in model.config.frame_prefix_token_ids]
    position = 0
    for frame in range(NUM_FRAMES):
        position += prefix[frame]
        torch.testing.assert_close(prepared.inputs_embeds[:, position : position + QUERY_COUNT], expected[:, frame],
                                   rtol=1e-5, atol=1e-5)
        position += QUERY_COUNT
    assert position == prepared.inputs_embeds.shape[1] - text["input_ids"].shape[1]


@pytest.mark.parametrize("absent", ["audio", "depth"])
def test_absent_supportive_modality_is_a_zero_block(tokenizer, absent):
    model = _model()
    inputs, text = _inputs(model, tokenizer)
    subset = [name for name in NAMES if name != absent]
    inputs = {key: value for key, value in inputs.items() if not key.startswith(absent + "_")}
    prepared = _prepare(model, inputs, text, modalities=subset)
    expected = _hand_fused(model, prepared.modality_embeds, present=subset)
    torch.testing.assert_close(_fused_slots_paper(model, prepared.inputs_embeds), expected, rtol=1e-5, atol=1e-5)
