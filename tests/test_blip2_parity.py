"""CREMA built from BLIP-2 reproduces BLIP-2 exactly while its adapters are still the identity."""

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, text_inputs, tiny_blip2


@pytest.fixture(scope="module")
def pair():
    from tiny_models import tiny_tokenizer

    blip2 = tiny_blip2()
    crema = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=["video"], tokenizer=tiny_tokenizer(), num_frames=NUM_FRAMES
    ).eval()
    return blip2, crema


def test_qformer_outputs_match_blip2_per_frame(pair):
    blip2, crema = pair
    pixels = torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        reference = blip2.get_image_features(pixels.flatten(0, 1), return_dict=True)
        ours = crema.encode_modality("video", video_pixel_values=pixels)
    expected = reference.pooler_output.view(2, NUM_FRAMES, QUERY_COUNT, -1)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # and the pre-projection Q-Former states, via the same routing
    torch.testing.assert_close(
        crema.encode_frozen_features("video", video_pixel_values=pixels).flatten(0, 1),
        blip2.vision_model(pixels.flatten(0, 1), output_hidden_states=True).hidden_states[-1],
        rtol=1e-5, atol=1e-6,
    )


def test_llm_inputs_match_blip2(pair, tokenizer):
    blip2, crema = pair
    pixels = torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    text = text_inputs(tokenizer)
    with torch.no_grad():
        prepared = crema.prepare_language_model_inputs(text["input_ids"], text["attention_mask"], video_pixel_values=pixels)
        per_frame = blip2.get_image_features(pixels.flatten(0, 1), return_dict=True).pooler_output
        prompt = blip2.get_input_embeddings()(text["input_ids"])
    per_frame = per_frame.view(2, NUM_FRAMES, QUERY_COUNT, -1)
    prefix_ids = crema.config.frame_prefix_token_ids
    position = 0
    for frame in range(NUM_FRAMES):
        prefix = blip2.get_input_embeddings()(torch.tensor(prefix_ids[frame]))
        torch.testing.assert_close(prepared.inputs_embeds[0, position : position + len(prefix)], prefix)
        position += len(prefix)
        torch.testing.assert_close(prepared.inputs_embeds[:, position : position + QUERY_COUNT], per_frame[:, frame])
        position += QUERY_COUNT
    torch.testing.assert_close(prepared.inputs_embeds[:, position:], prompt)
    assert prepared.attention_mask[:, :position].all()
    assert torch.equal(prepared.attention_mask[:, position:], text["attention_mask"])


def test_backbone_weights_are_blip2s_and_frozen(pair):
    blip2, crema = pair
    blip2_state = blip2.state_dict()
    for key, value in crema.base_state_dict().items():
        assert torch.equal(value, blip2_state[key]), key
    assert not any(p.requires_grad for n, p in crema.named_parameters() if not n.startswith(("mmqa.", "fusion.")) and "lora_" not in n)
    adapter = crema.mmqa["video"].modules_to_save["video"]
    assert torch.equal(adapter.query_tokens.weight, blip2.query_tokens)
    assert torch.equal(adapter.language_projection.weight, blip2.language_projection.weight)
    assert torch.equal(adapter.input_layernorm.weight, blip2.vision_model.post_layernorm.weight)


def test_from_blip2_path_and_decoder_only_refused(tmp_path, tokenizer):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    blip2 = tiny_blip2()
    blip2.save_pretrained(tmp_path / "blip2")
    tokenizer.save_pretrained(tmp_path / "blip2")
    crema = CremaForConditionalGeneration.from_blip2(tmp_path / "blip2", modalities=["video", "audio"],
                                                     num_frames=NUM_FRAMES)
    assert crema.config.modality_names == ["video", "audio"]
    assert crema.config.frame_prefix_token_ids[0] == tokenizer("Frame 1: ", add_special_tokens=False).input_ids
    opt = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=blip2.config.vision_config.to_dict(), qformer_config=blip2.config.qformer_config.to_dict(),
        text_config=OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=16, num_attention_heads=2,
                              vocab_size=64, word_embed_proj_dim=16).to_dict(), num_query_tokens=4))
    with pytest.raises(ValueError, match="decoder-only LLM"):
        CremaForConditionalGeneration.from_blip2(opt)


def test_from_blip2_audio_encoder_folder_leaves_no_local_path_in_the_saved_config(tmp_path, tokenizer):
    """The audio encoder's config is copied into CREMA's without `_name_or_path`: a folder of this machine would
    mean nothing to whoever loads the saved model elsewhere."""
    from transformers import ASTConfig, ASTModel

    from tiny_models import tiny_audio_config

    encoder_folder = tmp_path / "my-audio-encoder"
    encoder = ASTModel(ASTConfig(**tiny_audio_config()))
    encoder.save_pretrained(encoder_folder)
    crema = CremaForConditionalGeneration.from_blip2(tiny_blip2(), modalities=["video", "audio"], tokenizer=tokenizer,
                                                     num_frames=NUM_FRAMES, audio_encoder=str(encoder_folder))
    assert crema.config.audio_config.hidden_size == encoder.config.hidden_size
    crema.save_pretrained(tmp_path / "crema")
    assert str(encoder_folder) not in (tmp_path / "crema" / "config.json").read_text()
