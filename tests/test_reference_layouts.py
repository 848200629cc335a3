"""The authors' released layouts: `reference_concat` (their training scripts) and `rgb-skip` (their zero-shot
mode). Expected token sequences are written out from DESIGN §1.4 and computed by hand from the per-modality
embeddings, the fusion's weights (x·sigmoid(x)) and the LLM's embedding table."""

import pytest
import torch

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, modality_inputs, randomize_lora_b, text_inputs, tiny_blip2
from tiny_models import tiny_crema_model


def _fused_by_hand(model, embeds):
    weight, bias = model.fusion.projection.weight, model.fusion.projection.bias
    x = torch.cat([embeds[name] for name in model.fusion.modalities[1:]], dim=-1) @ weight.T + bias
    return x * torch.sigmoid(x)


def test_reference_concat_layout_token_order(tokenizer):
    names = ["video", "flow", "depth"]
    model = tiny_crema_model(names, fusion=names, token_layout="reference_concat")
    randomize_lora_b(model)
    with torch.no_grad():
        model.fusion.projection.weight.normal_(std=0.2)
        text = text_inputs(tokenizer)
        out = model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"],
                                                  **modality_inputs(model.config))
    embed = model.get_input_embeddings()
    prefix = [embed(torch.tensor(tokenizer(f"Frame {i + 1}: ", add_special_tokens=False).input_ids))
              .expand(2, -1, -1) for i in range(NUM_FRAMES)]
    video, fused = out.modality_embeds["video"], _fused_by_hand(model, out.modality_embeds)
    expected = torch.cat(
        [piece for i in range(NUM_FRAMES) for piece in (prefix[i], video[:, i])]  # [F1 v1 ... FT vT]
        + prefix                                                                   # [F1 ... FT]
        + [fused[:, i] for i in range(NUM_FRAMES)]                                 # [e1 ... eT]
        + [embed(text["input_ids"])],
        dim=1,
    )
    torch.testing.assert_close(out.inputs_embeds, expected)


def test_reference_add_layout_adds_the_fusion_to_the_video_tokens(tokenizer):
    names = ["video", "flow", "depth"]
    model = tiny_crema_model(names, fusion=names, token_layout="reference_add")
    with torch.no_grad():
        model.fusion.projection.weight.normal_(std=0.2)
        text = text_inputs(tokenizer)
        out = model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"],
                                                  **modality_inputs(model.config))
    embed = model.get_input_embeddings()
    summed = out.modality_embeds["video"] + _fused_by_hand(model, out.modality_embeds)
    pieces = []
    for i in range(NUM_FRAMES):
        pieces += [embed(torch.tensor(tokenizer(f"Frame {i + 1}: ", add_special_tokens=False).input_ids))
                   .expand(2, -1, -1), summed[:, i]]
    torch.testing.assert_close(out.inputs_embeds, torch.cat(pieces + [embed(text["input_ids"])], dim=1))


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match=r"token_layout must be one of .*reference_concat"):
        CremaConfig(token_layout="interleaved")


def test_rgb_skip_gives_plain_blip2_tokens_for_video_only(tokenizer):
    """`modalities_without_lora=["video"]`: video skips its (trained) LoRA, so its tokens are BLIP-2's own
    Q-Former output per frame, while depth keeps its LoRA."""
    blip2 = tiny_blip2()
    model = CremaForConditionalGeneration.from_blip2(blip2, modalities=["video", "depth"], tokenizer=tokenizer,
                                                     num_frames=NUM_FRAMES, modalities_without_lora=["video"])
    randomize_lora_b(model)
    pixels = torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        blip2_tokens = blip2.get_image_features(pixels.flatten(0, 1), return_dict=True).pooler_output
        video = model.encode_modality("video", video_pixel_values=pixels)
        depth = model.encode_modality("depth", depth_pixel_values=pixels)
    expected = blip2_tokens.view(2, NUM_FRAMES, QUERY_COUNT, -1)
    torch.testing.assert_close(video, expected, rtol=1e-5, atol=1e-6)
    assert (depth - expected).abs().max() > 1e-3  # depth's LoRA still applies
