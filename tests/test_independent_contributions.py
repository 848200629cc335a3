"""`modality_contributions` (leave-one-out, DESIGN §5) against a hand computation that never calls the model:
each modality's MMQA output from BLIP-2's own ViT and Q-Former (merged LoRA), the LLM input assembled token by
token (paper layout; a left-out supportive modality is a zero block in the fusion, or absent from the concat),
T5's `language_model` run on it, and the answer NLL summed over the answer tokens (padding -100 excluded)."""

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from reference_math import (
    embed_ids,
    mmqa_forward,
    self_gated_fusion,
    set_random_mmqa,
    sharpen_cross_attention,
    summed_answer_nll,
    vision_pre_layernorm_states,
)
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH, tiny_blip2, tiny_tokenizer

NAMES = ["video", "flow", "depth"]
PREFIXES = {"flow": "Optical Flow: ", "depth": "Depth: "}


def _build(fusion: bool):
    blip2 = tiny_blip2()
    sharpen_cross_attention(blip2)
    model = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=NAMES, tokenizer=tiny_tokenizer(), num_frames=NUM_FRAMES, lora_rank=4,
        fusion_modalities=NAMES if fusion else None, use_fusion=fusion,
    ).eval()
    assert (model.fusion is not None) == fusion
    hand = {name: set_random_mmqa(model, name, seed=30 + index, scale=1.0) for index, name in enumerate(NAMES)}
    if fusion:
        with torch.no_grad():
            model.fusion.projection.weight.normal_(std=0.3)
    generator = torch.Generator().manual_seed(9)
    pixels = {name: torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for name in NAMES}
    embeds = {
        name: mmqa_forward(blip2.qformer, hand[name], vision_pre_layernorm_states(blip2.vision_model, pixels[name]))
        .view(2, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH)
        for name in NAMES
    }
    return blip2, model, pixels, embeds


def _text(tokenizer):
    prompt = tokenizer(["Question: what is the person doing?", "Question: red or blue?"], padding=True,
                       return_tensors="pt")
    labels = tokenizer(["dancing", "red or blue"], padding=True, return_tensors="pt").input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    assert (labels == -100).any()  # a padded answer: the -100 positions must not count
    return prompt.input_ids, prompt.attention_mask, labels


def _hand_inputs(model, blip2, tokenizer, embeds, present, input_ids, attention_mask):
    """Paper layout: [F_i v_i]_i then [F_i e_i]_i (fusion) or ["Prefix: " F_i s_i]_i per present modality."""
    table = blip2.language_model.get_input_embeddings().weight.detach()

    def text(value):
        return embed_ids(table, tokenizer(value, add_special_tokens=False).input_ids, 2)

    def frames(per_frame):
        return [piece for i in range(NUM_FRAMES) for piece in (text(f"Frame {i + 1}: "), per_frame[:, i])]

    pieces = frames(embeds["video"])
    if model.fusion is not None:
        blocks = [embeds[name] if name in present else torch.zeros_like(embeds["video"]) for name in NAMES[1:]]
        pieces += frames(self_gated_fusion(blocks, model.fusion.projection.weight.detach(),
                                           model.fusion.projection.bias.detach()))
    else:
        for name in NAMES[1:]:
            if name in present:
                pieces += [text(PREFIXES[name])] + frames(embeds[name])
    visual = torch.cat(pieces, dim=1)
    inputs_embeds = torch.cat([visual, table[input_ids]], dim=1)
    mask = torch.cat([torch.ones(2, visual.shape[1], dtype=attention_mask.dtype), attention_mask], dim=1)
    return inputs_embeds, mask


def _hand_contributions(model, blip2, tokenizer, embeds, input_ids, attention_mask, labels):
    def nll(present):
        inputs_embeds, mask = _hand_inputs(model, blip2, tokenizer, embeds, present, input_ids, attention_mask)
        return summed_answer_nll(blip2.language_model, inputs_embeds, mask, labels)

    full = nll(NAMES)
    return {name: nll([other for other in NAMES if other != name]) - full for name in NAMES[1:]}


@pytest.mark.parametrize("fusion", [True, False])
def test_contributions_equal_hand_leave_one_out_nll(tokenizer, fusion):
    blip2, model, pixels, embeds = _build(fusion)
    input_ids, attention_mask, labels = _text(tokenizer)
    expected = _hand_contributions(model, blip2, tokenizer, embeds, input_ids, attention_mask, labels)
    contributions = model.modality_contributions(
        input_ids, attention_mask, labels=labels, **{f"{name}_pixel_values": value for name, value in pixels.items()}
    )
    assert sorted(contributions) == ["depth", "flow"]
    for name in ("flow", "depth"):
        assert expected[name].abs().max() > 1e-3, name  # leaving it out really changes the answer likelihood
        torch.testing.assert_close(contributions[name], expected[name], rtol=1e-3, atol=1e-4,
                                   msg=lambda message: f"{name}: {message}")


def test_contributions_without_labels_score_the_greedy_answer(tokenizer):
    blip2, model, pixels, embeds = _build(fusion=True)
    input_ids, attention_mask, _ = _text(tokenizer)
    inputs_embeds, mask = _hand_inputs(model, blip2, tokenizer, embeds, NAMES, input_ids, attention_mask)
    with torch.no_grad():
        answer = blip2.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=mask, max_new_tokens=10,
                                               do_sample=False, num_beams=1)
    labels = answer[:, 1:].masked_fill(answer[:, 1:] == tokenizer.pad_token_id, -100)
    expected = _hand_contributions(model, blip2, tokenizer, embeds, input_ids, attention_mask, labels)
    contributions = model.modality_contributions(
        input_ids, attention_mask, **{f"{name}_pixel_values": value for name, value in pixels.items()}
    )
    for name in ("flow", "depth"):
        torch.testing.assert_close(contributions[name], expected[name], rtol=1e-3, atol=1e-4)
