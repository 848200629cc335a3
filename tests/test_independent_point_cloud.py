"""Point clouds (DESIGN §1.2): Q-Former input = features + 0.01 x the 3D-LLM sinusoidal embedding of the voxel
coordinates, written out from its formula here; the MMQA output is then a hand-run BLIP-2 Q-Former.

The 3D-LLM / CREMA reference embedding: `PositionalEncoding1D(width // 3)` over 256 positions per axis (frequencies
over the channel count rounded up to even, sin and cos interleaved), the three axes concatenated into the first
3 * (width // 3) channels, the rest zero. Paper size: width 1408 -> 469 channels per axis + 1 zero channel. The
tiny backbone here has width 52 = 3 x 17 + 1: an odd per-axis count and one zero channel, as at paper size.
"""

import math

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from modeling_crema import CremaForConditionalGeneration
from modeling_crema.mmqa import sinusoidal_point_embedding
from reference_math import (
    mmqa_forward,
    point_position_embedding,
    positional_encoding_1d,
    set_random_mmqa,
    sharpen_cross_attention,
)
from tiny_models import NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH, tiny_backbone_kwargs, tiny_tokenizer

WIDTH = 52
POINTS = 9
RANK = 4


def _blip2_of_width(width: int) -> Blip2ForConditionalGeneration:
    kwargs = tiny_backbone_kwargs()
    kwargs["vision_config"]["hidden_size"] = width
    kwargs["qformer_config"]["encoder_hidden_size"] = width
    torch.manual_seed(0)
    blip2 = Blip2ForConditionalGeneration(Blip2Config(**kwargs)).eval()
    with torch.no_grad():
        blip2.query_tokens.normal_(std=0.02)
    return blip2


@pytest.fixture(scope="module")
def built():
    blip2 = _blip2_of_width(WIDTH)
    sharpen_cross_attention(blip2)
    model = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=["video", "point_cloud"], tokenizer=tiny_tokenizer(), num_frames=NUM_FRAMES, lora_rank=RANK,
    ).eval()
    hand = set_random_mmqa(model, "point_cloud", seed=5, scale=1.0)
    generator = torch.Generator().manual_seed(7)
    # Features of the size of the position term, so that a wrong embedding moves the output well past tolerance.
    inputs = {
        "point_cloud_features": 0.05 * torch.randn(2, POINTS, WIDTH, generator=generator),
        "point_cloud_coordinates": torch.randint(0, 256, (2, POINTS, 3), generator=generator),
    }
    inputs["point_cloud_coordinates"][0, 0] = torch.tensor([0, 1, 255])
    return blip2, model, hand, inputs


def test_positional_encoding_table_values():
    """Spot values of PositionalEncoding1D(17): channel 2k = sin(p / 10000^(2k / 18)), 2k+1 = cos(...)."""
    table = positional_encoding_1d(256, 17)
    assert table.shape == (256, 17)
    for position in (0, 1, 37, 255):
        for channel in range(17):
            frequency = 1.0 / 10000 ** ((channel // 2) * 2 / 18)
            value = math.sin(position * frequency) if channel % 2 == 0 else math.cos(position * frequency)
            assert table[position, channel].item() == pytest.approx(value, abs=2e-5)


@pytest.mark.parametrize("width", [1408, WIDTH, 48])
def test_sinusoidal_point_embedding_is_3d_llm_positional_encoding_per_axis(width):
    coordinates = torch.tensor([[0, 1, 255], [17, 128, 3], [255, 0, 100]])
    expected = point_position_embedding(coordinates, width)
    torch.testing.assert_close(sinusoidal_point_embedding(coordinates, width), expected, rtol=0, atol=1e-5)
    channels = width // 3
    assert torch.equal(expected[:, 3 * channels :], torch.zeros(3, width - 3 * channels))


def test_qformer_input_is_features_plus_scaled_position_embedding(built):
    """The exact tensor the Q-Former cross-attends to: no LayerNorm for point clouds (3D-LLM / reference)."""
    _, model, _, inputs = built
    seen = {}

    def record(module, args, kwargs):
        seen.update(kwargs)

    handle = model.qformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model.encode_modality("point_cloud", **inputs)
    finally:
        handle.remove()
    coordinates = inputs["point_cloud_coordinates"]
    expected = inputs["point_cloud_features"] + 0.01 * point_position_embedding(coordinates, WIDTH)
    torch.testing.assert_close(seen["encoder_hidden_states"], expected, rtol=0, atol=1e-6)


def test_point_cloud_mmqa_equals_hand_run_blip2_qformer(built):
    blip2, model, hand, inputs = built
    position = 0.01 * point_position_embedding(inputs["point_cloud_coordinates"], WIDTH)
    expected = mmqa_forward(blip2.qformer, hand, inputs["point_cloud_features"], position_embedding=position,
                            normalize=False)
    with torch.no_grad():
        ours = model.encode_modality("point_cloud", **inputs)
    assert ours.shape == (2, 1, QUERY_COUNT, TEXT_WIDTH)
    torch.testing.assert_close(ours[:, 0], expected, rtol=1e-4, atol=1e-5)
    # the position term really matters at this tolerance: without it (or unscaled) the output is far off
    for wrong in (None, 100 * position):
        other = mmqa_forward(blip2.qformer, hand, inputs["point_cloud_features"], position_embedding=wrong,
                             normalize=False)
        assert (other - expected).abs().max() > 1e-2
