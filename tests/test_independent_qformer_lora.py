"""Each modality's MMQA output (DESIGN §1.1) equals a hand computation with transformers' own BLIP-2 modules.

Expected value, per modality m: BLIP-2's ViT pre-LayerNorm states -> m's input LayerNorm -> a deep copy of BLIP-2's
`Blip2QFormerModel` with self-attention query/value weights W + (alpha / r) B_m A_m, fed m's query tokens -> m's
language projection. Every modality gets different LoRA A/B, queries, LayerNorm and projection.
"""

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from reference_math import HandMMQA, mmqa_forward, set_random_mmqa, vision_pre_layernorm_states
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH, text_inputs, tiny_blip2, tiny_tokenizer

MODALITIES = ["video", "depth", "flow"]
RANK, ALPHA = 4, 8  # LoRA scale alpha / r = 2, so a scale of 1 (or alpha ignored) shows


@pytest.fixture(scope="module")
def built():
    blip2 = tiny_blip2()
    with torch.no_grad():  # a non-trivial post-LayerNorm, so that applying it (twice) shows
        blip2.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
        blip2.vision_model.post_layernorm.bias.uniform_(-0.5, 0.5)
    model = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=MODALITIES, tokenizer=tiny_tokenizer(), num_frames=NUM_FRAMES, lora_rank=RANK,
        lora_alpha=ALPHA,
    ).eval()
    hand = {name: set_random_mmqa(model, name, seed=10 + index, scale=ALPHA / RANK) for index, name in enumerate(MODALITIES)}
    generator = torch.Generator().manual_seed(3)
    pixels = {name: torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for name in MODALITIES}
    return blip2, model, hand, pixels


def _expected(blip2, mmqa: HandMMQA, pixels):
    states = vision_pre_layernorm_states(blip2.vision_model, pixels)
    return mmqa_forward(blip2.qformer, mmqa, states).view(pixels.shape[0], NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH)


@pytest.mark.parametrize("name", MODALITIES)
def test_mmqa_equals_blip2_qformer_with_merged_lora(built, name):
    blip2, model, hand, pixels = built
    with torch.no_grad():
        ours = model.encode_modality(name, **{f"{name}_pixel_values": pixels[name]})
    torch.testing.assert_close(ours, _expected(blip2, hand[name], pixels[name]), rtol=1e-4, atol=1e-5)


def test_all_modalities_in_one_call_each_use_their_own_adapter(built, tokenizer):
    blip2, model, hand, pixels = built
    text = text_inputs(tokenizer)
    inputs = {f"{name}_pixel_values": value for name, value in pixels.items()}
    with torch.no_grad():
        prepared = model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"], **inputs)
    for name in MODALITIES:
        torch.testing.assert_close(
            prepared.modality_embeds[name], _expected(blip2, hand[name], pixels[name]), rtol=1e-4, atol=1e-5,
            msg=lambda message: f"{name}: {message}",
        )


def test_cached_pre_layernorm_features_give_the_same_output(built):
    blip2, model, hand, pixels = built
    name = "depth"
    states = vision_pre_layernorm_states(blip2.vision_model, pixels[name]).view(2, NUM_FRAMES, -1, blip2.config.vision_config.hidden_size)
    with torch.no_grad():
        ours = model.encode_modality(name, depth_features=states)
    torch.testing.assert_close(ours, _expected(blip2, hand[name], pixels[name]), rtol=1e-4, atol=1e-5)


def test_the_hand_computation_can_tell_the_adapters_apart(built):
    """The comparisons above would miss nothing: LoRA, LayerNorm placement and adapter choice all move the output
    far beyond the tolerance."""
    blip2, _, hand, pixels = built
    video = hand["video"]
    expected = _expected(blip2, video, pixels["video"])
    variants = {
        "no LoRA": HandMMQA({}, video.scale, video.query_tokens, video.layernorm, video.projection),
        "LoRA scale 1": HandMMQA(video.lora, 1.0, video.query_tokens, video.layernorm, video.projection),
        "depth's LoRA": HandMMQA(hand["depth"].lora, video.scale, video.query_tokens, video.layernorm, video.projection),
    }
    for label, variant in variants.items():
        assert (_expected(blip2, variant, pixels["video"]) - expected).abs().max() > 1e-2, label
    states = vision_pre_layernorm_states(blip2.vision_model, pixels["video"])
    twice = mmqa_forward(blip2.qformer, video, blip2.vision_model.post_layernorm(states))  # LayerNorm applied twice
    assert (twice.view_as(expected) - expected).abs().max() > 1e-2
