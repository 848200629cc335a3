"""What a newcomer does first: build from BLIP-2 (with or without a tokenizer or an audio encoder), answer twice,
load adapters made elsewhere, and load adapter folders with plain PEFT."""

import pytest
import torch
from peft import PeftModel
from transformers import ASTConfig, ASTModel
from transformers.utils import logging

from modeling_crema import CremaForConditionalGeneration
from modeling_crema.adapters import adapter_state_dict
from tiny_models import (
    NUM_FRAMES,
    QUERY_COUNT,
    modality_inputs,
    randomize_lora_b,
    text_inputs,
    tiny_audio_config,
    tiny_blip2,
    tiny_crema_model,
)


@pytest.fixture
def warnings_log(caplog):
    logging.enable_propagation()
    with caplog.at_level("WARNING"):
        yield caplog
    logging.disable_propagation()


def test_from_blip2_returns_an_eval_mode_model_that_answers_the_same_twice(tokenizer):
    blip2 = tiny_blip2()
    blip2.config.qformer_config.hidden_dropout_prob = 0.5  # dropout that would make two calls differ in train mode
    model = CremaForConditionalGeneration.from_blip2(blip2, modalities=["video", "depth"], tokenizer=tokenizer,
                                                     lora_dropout=0.5, num_frames=NUM_FRAMES)
    assert not model.training and not any(module.training for module in model.modules())
    randomize_lora_b(model)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    assert torch.equal(model(**batch).logits, model(**batch).logits)
    batch.pop("labels")
    first = model.generate(**batch, num_beams=2, max_new_tokens=4)
    assert torch.equal(first, model.generate(**batch, num_beams=2, max_new_tokens=4))


def test_blip2_folder_without_tokenizer_warns_once_and_works_without_prefixes(tmp_path, tokenizer, warnings_log):
    tiny_blip2().save_pretrained(tmp_path / "blip2")  # weights only, no tokenizer files
    model = CremaForConditionalGeneration.from_blip2(tmp_path / "blip2", modalities=["video", "depth"],
                                                     num_frames=NUM_FRAMES)
    assert warnings_log.text.count("No tokenizer found") == 1
    assert model.config.frame_prefix_token_ids == []
    assert all(spec["prefix_token_ids"] == [] for spec in model.config.modalities)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    outputs = model(**batch)
    prompt_length = batch["input_ids"].shape[1]
    # no prefixes: video frames then depth, Q tokens each, then the prompt
    assert outputs.inputs_embeds.shape[1] == 2 * NUM_FRAMES * QUERY_COUNT + prompt_length


def test_blip2_instance_without_tokenizer_warns(warnings_log):
    CremaForConditionalGeneration.from_blip2(tiny_blip2(), modalities=["video"], num_frames=NUM_FRAMES)
    assert "without `tokenizer=`" in warnings_log.text


def test_empty_tokenizer_is_detected_and_prefixes_are_kept(tmp_path, tokenizer, warnings_log):
    from transformers import AutoTokenizer

    tiny_blip2().save_pretrained(tmp_path / "blip2")
    empty = AutoTokenizer.from_pretrained(tmp_path / "blip2")  # what transformers returns for a folder without files
    model = tiny_crema_model(["video"])
    prefixes = [list(ids) for ids in model.config.frame_prefix_token_ids]
    model.set_prefix_tokens(empty)
    assert "tokenizer" in warnings_log.text and "empty" in warnings_log.text
    assert model.config.frame_prefix_token_ids == prefixes


def test_some_empty_frame_prefixes_mean_no_prefix_for_those_frames(tokenizer):
    model = tiny_crema_model(["video"])
    model.config.frame_prefix_token_ids = [[], [5, 6], []]
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    outputs = model(**batch)
    assert outputs.inputs_embeds.shape[1] == NUM_FRAMES * QUERY_COUNT + 2 + batch["input_ids"].shape[1]


def test_adapter_saved_without_prefix_ids_gets_its_prefix_tokenised_on_load(tmp_path, tokenizer):
    untokenised = tiny_crema_model(["video"])
    untokenised.prefix_tokenizer = None
    untokenised.add_modality("thermal")
    assert untokenised.config.modality("thermal")["prefix_token_ids"] == []
    untokenised.save_adapter(tmp_path / "thermal", "thermal")

    model = tiny_crema_model(["video"], tokenizer=tokenizer)
    model.load_adapter(tmp_path / "thermal")
    expected = tokenizer("Thermal: ", add_special_tokens=False).input_ids
    assert expected and model.config.modality("thermal")["prefix_token_ids"] == expected


def test_new_modality_on_a_model_with_a_tokenizer_gets_its_prefix(tokenizer):
    model = tiny_crema_model(["video"], tokenizer=tokenizer)
    model.add_modality("depth")
    assert model.config.modality("depth")["prefix_token_ids"] == tokenizer("Depth: ", add_special_tokens=False).input_ids


def test_audio_segments_get_no_frame_prefixes(tokenizer):
    """Paper layout without fusion: [Frame i: video_i]_i, then "Audio: " and the S segments without "Frame i"."""
    model = tiny_crema_model(["video", "audio"], with_audio_encoder=True, tokenizer=tokenizer)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    frame_prefix = sum(len(ids) for ids in model.config.frame_prefix_token_ids)
    audio_prefix = len(tokenizer("Audio: ", add_special_tokens=False).input_ids)
    segments = model.config.num_audio_segments
    expected = frame_prefix + NUM_FRAMES * QUERY_COUNT + audio_prefix + segments * QUERY_COUNT
    assert model(**batch).inputs_embeds.shape[1] == expected + batch["input_ids"].shape[1]


@pytest.fixture(scope="module")
def ast_folder(tmp_path_factory):
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("ast") / "tiny-ast"
    ASTModel(ASTConfig(**tiny_audio_config())).eval().save_pretrained(folder)
    return folder


def test_audio_encoder_is_loaded_from_its_own_checkpoint_and_saved_with_the_model(ast_folder, tmp_path, tokenizer):
    model = CremaForConditionalGeneration.from_blip2(
        tiny_blip2(), modalities=["video", "audio"], tokenizer=tokenizer, audio_encoder=ast_folder,
        num_frames=NUM_FRAMES,
    )
    ast = ASTModel.from_pretrained(ast_folder)
    for key, value in ast.state_dict().items():
        assert torch.equal(model.audio_model.state_dict()[key], value), key
    assert model.config.modality("audio")["feature_size"] == ast.config.hidden_size
    assert not any(p.requires_grad for p in model.audio_model.parameters())
    randomize_lora_b(model)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    expected = model(**batch).logits

    model.save_pretrained(tmp_path / "crema")
    reloaded = CremaForConditionalGeneration.from_pretrained(tmp_path / "crema")
    assert torch.equal(reloaded(**batch).logits, expected)


def test_audio_encoder_that_cannot_be_loaded_names_the_option(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot load the audio encoder .*`audio_encoder=`"):
        CremaForConditionalGeneration.from_blip2(tiny_blip2(), modalities=["video", "audio"],
                                                 audio_encoder=str(tmp_path))


def test_without_an_audio_encoder_audio_takes_beats_features():
    model = tiny_crema_model(["video", "audio"])
    assert model.config.modality("audio")["feature_size"] == 768
    adapter = model.mmqa["audio"].modules_to_save["audio"]
    assert adapter.input_projection.weight.shape == (model.config.vision_config.hidden_size, 768)


def test_plain_peft_loads_exactly_the_lora_tensors_and_load_adapter_loads_all(tmp_path):
    """What the README states: `PeftModel.from_pretrained` restores the LoRA tensors of a CREMA adapter folder but
    not its MMQA module (queries, LayerNorm, projections); `model.load_adapter` restores every tensor."""
    source = tiny_crema_model(["video", "thermal"])
    randomize_lora_b(source)
    with torch.no_grad():
        for parameter in source.mmqa.parameters():
            parameter.add_(0.5)
    source.save_adapter(tmp_path / "thermal", "thermal")
    saved = adapter_state_dict(source, "thermal")
    lora_keys = {key for key in saved if ".lora_" in key}
    mmqa_keys = set(saved) - lora_keys
    assert len(lora_keys) == 8 and len(mmqa_keys) == 5

    peft_model = PeftModel.from_pretrained(tiny_crema_model(["video"]), tmp_path / "thermal", adapter_name="thermal")
    loaded = peft_model.state_dict()
    for key in lora_keys:  # PEFT's own keys carry the adapter name
        peft_key = key.replace(".weight", ".thermal.weight")
        assert torch.equal(loaded[peft_key], saved[key]), key
    assert "thermal" not in peft_model.base_model.model.mmqa

    model = tiny_crema_model(["video"])
    model.load_adapter(tmp_path / "thermal")
    restored = adapter_state_dict(model, "thermal")
    assert restored.keys() == saved.keys() and all(torch.equal(restored[k], saved[k]) for k in saved)
