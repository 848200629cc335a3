"""A bfloat16 backbone with float32 adapters matches the float32 hand computation, at a tolerance derived from the
size of the LoRA's own effect, so that an adapter that is silently not applied (or not kept in float32) fails.

Setup: LoRA B drawn large (std 4), so that switching every LoRA off moves the logits by ~0.75 (max) while bf16
rounding moves them by ~0.02. Tolerance: the bf16 error must stay below 1/10 of the LoRA effect (max and norm);
a model that drops the LoRA has an error ~ the whole effect, 10x over. Expected values: BLIP-2's own ViT / Q-Former
(merged LoRA) / T5 in float32, the LLM input assembled by hand (paper layout, fusion computed by hand).
"""

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from reference_math import (
    HandMMQA,
    embed_ids,
    mmqa_forward,
    self_gated_fusion,
    set_random_mmqa,
    sharpen_cross_attention,
    vision_pre_layernorm_states,
)
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH, text_inputs, tiny_blip2, tiny_tokenizer

NAMES = ["video", "flow", "depth"]
LORA_STD = 4.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    blip2 = tiny_blip2()
    sharpen_cross_attention(blip2)
    model = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=NAMES, tokenizer=tokenizer, num_frames=NUM_FRAMES, lora_rank=4, fusion_modalities=NAMES
    ).eval()
    hand = {name: set_random_mmqa(model, name, seed=40 + i, scale=1.0, lora_std=LORA_STD) for i, name in enumerate(NAMES)}
    fusion = (model.fusion.projection.weight.detach().clone(), model.fusion.projection.bias.detach().clone())
    directory = tmp_path_factory.mktemp("bf16") / "crema"
    model.save_pretrained(directory)
    loaded = CremaForConditionalGeneration.from_pretrained(directory, dtype=torch.bfloat16).eval()
    generator = torch.Generator().manual_seed(1)
    pixels = {name: torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for name in NAMES}
    return tokenizer, blip2, hand, fusion, loaded, pixels


def _hand_encoder_input(blip2, tokenizer, hand, fusion, pixels, input_ids, attention_mask, with_lora=True):
    """[Frame i: v_i]_i [Frame i: e_i]_i prompt, everything in float32 from BLIP-2's modules."""
    table = blip2.language_model.get_input_embeddings().weight.detach()
    embeds = {}
    for name in NAMES:
        mmqa = hand[name] if with_lora else HandMMQA({}, 1.0, hand[name].query_tokens, hand[name].layernorm,
                                                      hand[name].projection)
        states = vision_pre_layernorm_states(blip2.vision_model, pixels[name])
        embeds[name] = mmqa_forward(blip2.qformer, mmqa, states).view(2, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH)
    fused = self_gated_fusion([embeds["flow"], embeds["depth"]], *fusion)
    pieces = []
    for tokens in (embeds["video"], fused):
        for frame in range(NUM_FRAMES):
            prefix = tokenizer(f"Frame {frame + 1}: ", add_special_tokens=False).input_ids
            pieces += [embed_ids(table, prefix, 2), tokens[:, frame]]
    visual = torch.cat(pieces, dim=1)
    mask = torch.cat([torch.ones(2, visual.shape[1], dtype=attention_mask.dtype), attention_mask], dim=1)
    return torch.cat([visual, table[input_ids]], dim=1), mask


def test_adapters_and_fusion_stay_float32_on_a_bfloat16_backbone(setup):
    *_, loaded, _ = setup
    assert loaded.language_model.dtype == torch.bfloat16 and loaded.vision_model.dtype == torch.bfloat16
    adapter_parameters = {
        name: parameter for name, parameter in loaded.named_parameters()
        if ".lora_" in name or name.startswith(("mmqa.", "fusion."))
    }
    assert any(".lora_B." in name for name in adapter_parameters) and any(n.startswith("fusion.") for n in adapter_parameters)
    wrong = {name: parameter.dtype for name, parameter in adapter_parameters.items() if parameter.dtype != torch.float32}
    assert not wrong, wrong
    trainable = [name for name, parameter in loaded.named_parameters() if parameter.requires_grad]
    assert trainable and all(name in adapter_parameters for name in trainable)


def test_bfloat16_logits_match_float32_hand_computation_within_a_fraction_of_the_lora_effect(setup):
    tokenizer, blip2, hand, fusion, loaded, pixels = setup
    text = text_inputs(tokenizer)
    logits = {}
    for with_lora in (True, False):
        inputs_embeds, mask = _hand_encoder_input(blip2, tokenizer, hand, fusion, pixels, text["input_ids"],
                                                  text["attention_mask"], with_lora)
        with torch.no_grad():
            logits[with_lora] = blip2.language_model(inputs_embeds=inputs_embeds, attention_mask=mask,
                                                     labels=text["labels"]).logits
    expected = logits[True]
    lora_effect = logits[True] - logits[False]
    assert lora_effect.abs().max() > 0.5  # the LoRA matters far beyond bf16 rounding (~0.02 here)

    with torch.no_grad():
        outputs = loaded(**text, **{f"{name}_pixel_values": value for name, value in pixels.items()})
    assert outputs.logits.dtype == torch.bfloat16 and torch.isfinite(outputs.loss)
    error = outputs.logits.float() - expected
    assert error.abs().max() < 0.1 * lora_effect.abs().max(), (error.abs().max(), lora_effect.abs().max())
    assert error.norm() < 0.1 * lora_effect.norm(), (error.norm(), lora_effect.norm())
    assert loaded.generate(**text, **{f"{n}_pixel_values": v for n, v in pixels.items()}, max_new_tokens=2).shape[0] == 2


def test_bfloat16_visual_tokens_match_float32_hand_computation(setup):
    tokenizer, blip2, hand, fusion, loaded, pixels = setup
    text = text_inputs(tokenizer)
    expected, _ = _hand_encoder_input(blip2, tokenizer, hand, fusion, pixels, text["input_ids"], text["attention_mask"])
    without_lora, _ = _hand_encoder_input(blip2, tokenizer, hand, fusion, pixels, text["input_ids"],
                                          text["attention_mask"], with_lora=False)
    with torch.no_grad():
        ours = loaded.prepare_language_model_inputs(
            text["input_ids"], text["attention_mask"], **{f"{name}_pixel_values": value for name, value in pixels.items()}
        ).inputs_embeds
    assert ours.dtype == torch.bfloat16
    error, lora_effect = ours.float() - expected, expected - without_lora
    assert error.norm() < 0.05 * lora_effect.norm(), (error.norm(), lora_effect.norm())
    assert error.abs().max() < 0.05 * lora_effect.abs().max(), (error.abs().max(), lora_effect.abs().max())
