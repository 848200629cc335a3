"""Forward, backward and generate of CREMA with 1, 3 and 5 modalities; frozen parts stay frozen."""

import pytest
import torch

from modeling_crema.modeling_crema import is_trainable_parameter_name
from tiny_models import (
    NUM_FRAMES,
    QUERY_COUNT,
    TEXT_WIDTH,
    modality_inputs,
    randomize_lora_b,
    text_inputs,
    tiny_crema_model,
)

MODALITY_SETS = {
    1: (["video"], None),
    3: (["video", "audio", "depth"], ["video", "audio", "depth"]),
    5: (["video", "audio", "flow", "depth", "point_cloud"], ["video", "audio", "flow", "depth", "point_cloud"]),
}


@pytest.mark.parametrize("count", sorted(MODALITY_SETS))
def test_forward_backward_generate(count, tokenizer):
    modalities, fusion = MODALITY_SETS[count]
    model = tiny_crema_model(modalities, fusion, with_audio_encoder=True)
    randomize_lora_b(model)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}

    outputs = model(**batch)
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    assert outputs.logits.shape == (2, batch["labels"].shape[1], model.config.text_config.vocab_size)
    assert outputs.used_modalities == modalities
    for name in modalities:
        groups = {"audio": model.config.num_audio_segments, "point_cloud": 1}.get(name, NUM_FRAMES)
        assert outputs.modality_embeds[name].shape == (2, groups, QUERY_COUNT, TEXT_WIDTH)

    outputs.loss.backward()
    # Point-cloud features reach the Q-Former without the input LayerNorm (3D-LLM / reference behaviour).
    unused = "mmqa.point_cloud.modules_to_save.point_cloud.input_layernorm."
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and name.startswith(unused):
            assert parameter.grad is None, name
        elif parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name

    generated = model.generate(**batch, max_new_tokens=4, num_beams=2)
    assert generated.shape[0] == 2 and 1 < generated.shape[1] <= 5
    assert torch.equal(generated[:, 0], torch.zeros(2, dtype=torch.long))  # T5 decoder start


def test_fused_token_count_does_not_grow_with_modalities(tokenizer):
    """With fusion the LLM sees 2 x T x (prefix + Q) visual tokens whatever the number of modalities."""
    prefix = len(tokenizer("Frame 1: ", add_special_tokens=False).input_ids)
    lengths = []
    for modalities in (["video", "depth"], ["video", "depth", "flow", "normal"]):
        model = tiny_crema_model(modalities, fusion=modalities)
        batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
        prepared = model.prepare_language_model_inputs(batch["input_ids"], batch["attention_mask"], **modality_inputs(model.config))
        lengths.append(prepared.inputs_embeds.shape[1] - batch["input_ids"].shape[1])
    assert lengths == [2 * NUM_FRAMES * (prefix + QUERY_COUNT)] * 2


def test_concat_adds_tokens_and_modality_prefix(tokenizer):
    model = tiny_crema_model(["video", "depth"])
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    prepared = model.prepare_language_model_inputs(batch["input_ids"], batch["attention_mask"], **modality_inputs(model.config))
    frame_prefix = len(tokenizer("Frame 1: ", add_special_tokens=False).input_ids)
    depth_prefix_ids = tokenizer("Depth: ", add_special_tokens=False).input_ids
    visual = prepared.inputs_embeds.shape[1] - batch["input_ids"].shape[1]
    assert visual == 2 * NUM_FRAMES * (frame_prefix + QUERY_COUNT) + len(depth_prefix_ids)
    # the depth block starts with the embedded "Depth: " prefix
    start = NUM_FRAMES * (frame_prefix + QUERY_COUNT)
    expected = model.get_input_embeddings()(torch.tensor(depth_prefix_ids))
    assert torch.equal(prepared.inputs_embeds[0, start : start + len(depth_prefix_ids)], expected)


def test_fusion_is_self_gated(tokenizer):
    model = tiny_crema_model(["video", "flow", "depth"], fusion=["video", "flow", "depth"])
    supportive = [torch.randn(2, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH) for _ in range(2)]
    linear = torch.nn.functional.linear(torch.cat(supportive, -1), model.fusion.projection.weight, model.fusion.projection.bias)
    assert torch.allclose(model.fusion(supportive), torch.sigmoid(linear) * linear)
    assert model.fusion.projection.in_features == 2 * TEXT_WIDTH


def test_only_mmqa_and_fusion_are_trainable():
    model = tiny_crema_model(["video", "audio", "depth"], fusion=["video", "audio", "depth"], with_audio_encoder=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_trainable_parameter_name(name) for name in trainable)
    prefixes = ("vision_model.", "audio_model.", "language_model.", "query_tokens", "language_projection.")
    assert not any(name.startswith(prefixes) for name in trainable)
    qformer_trainable = {name for name in trainable if name.startswith("qformer.")}
    assert qformer_trainable and all(".lora_" in name and ".attention.attention." in name for name in qformer_trainable)
    assert any(name.startswith("fusion.") for name in trainable)
    for name in ("video", "audio", "depth"):
        assert any(name_.startswith(f"mmqa.{name}.modules_to_save.{name}.") for name_ in trainable)


def test_training_step_changes_no_frozen_tensor(tokenizer):
    model = tiny_crema_model(["video", "audio", "depth"], fusion=["video", "audio", "depth"], with_audio_encoder=True)
    model.train()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, before in frozen_before.items():
        assert torch.equal(dict(model.named_parameters())[name], before), name
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])]
    assert len(changed) == len(trainable_before)


def test_frozen_encoders_stay_in_eval_mode():
    model = tiny_crema_model(["video", "audio"], with_audio_encoder=True).train()
    assert model.qformer.training and model.mmqa.training
    assert not model.vision_model.training and not model.language_model.training and not model.audio_model.training


def test_precomputed_features_match_pixels(tokenizer):
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    inputs = modality_inputs(model.config)
    text = text_inputs(tokenizer)
    cached = {
        f"{name}_features": model.encode_frozen_features(name, **inputs) for name in ("video", "depth")
    }
    assert cached["video_features"].shape[:2] == (2, NUM_FRAMES)
    assert torch.allclose(model(**inputs, **text).logits, model(**cached, **text).logits, atol=1e-5)


def test_a_modality_given_as_its_mmqa_output_answers_as_when_computed(tokenizer):
    """`{m}_mmqa_embeds` (what `encode_modality` returns) stands in for the modality's inputs: same logits, and no
    Q-Former pass for that modality."""
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    randomize_lora_b(model)
    inputs, text = modality_inputs(model.config), text_inputs(tokenizer)
    with torch.no_grad():
        depth_output = model.encode_modality("depth", depth_pixel_values=inputs["depth_pixel_values"])
    passes = []
    handle = model.qformer.register_forward_hook(lambda *_: passes.append(1))
    given = model(video_pixel_values=inputs["video_pixel_values"], depth_mmqa_embeds=depth_output, **text).logits
    handle.remove()
    assert len(passes) == 1  # video's only
    torch.testing.assert_close(given, model(**inputs, **text).logits, rtol=0, atol=1e-6)


def test_activation_checkpointing_keeps_each_modality_on_its_own_adapter(tokenizer):
    """Recomputation in the backward pass runs outside the routing block: it must still use the right LoRA."""
    modalities = ["video", "flow", "depth"]
    batch = None
    gradients = []
    for checkpointing in (False, True):
        model = tiny_crema_model(modalities, fusion=modalities, seed=0)
        randomize_lora_b(model)
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.qformer.encoder.layer[0].gradient_checkpointing
        batch = batch or {**modality_inputs(model.config), **text_inputs(tokenizer)}
        model(**batch).loss.backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    plain, checkpointed = gradients
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_reentrant_checkpointing_is_refused():
    model = tiny_crema_model(["video"])
    with pytest.raises(ValueError, match="non-reentrant"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})


def test_forward_without_answer_scores_the_first_answer_token(tokenizer):
    model = tiny_crema_model(["video"])
    text = text_inputs(tokenizer)
    inputs = {**modality_inputs(model.config), "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}
    outputs = model(**inputs)
    assert outputs.loss is None and outputs.logits.shape == (2, 1, model.config.text_config.vocab_size)
    first_step = model.generate(**inputs, max_new_tokens=1, do_sample=False)[:, 1]
    assert torch.equal(outputs.logits[:, 0].argmax(-1), first_step)


