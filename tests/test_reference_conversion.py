"""The authors' LAVIS checkpoints (DESIGN §4) convert to our adapters + fusion.

The "LAVIS" checkpoint is written here directly, never from our model: random tensors under the reference's names,
inserted in the order a LAVIS `state_dict()` lists them (module parameters first: `query_tokens_*` in the fixed
rgb, flow, norm, depth, audio, pc order; then `ln_audio` (registered with the audio encoder), the Q-Former's
per-layer LoRA in the fixed rgb, depth, flow, norm, audio, pc order, `t5_proj_*` / `ln_*` / `projection_audio`,
and `fusion.0`), with the training modality order in `checkpoint["config"]["model"]["modalities"]`. That order
differs from the key order, so a converter that infers it from the keys puts the fusion's blocks on the wrong
modalities. Expected MMQA outputs are computed from the LAVIS tensors with BLIP-2's own modules: ViT pre-LayerNorm
states -> `ln_m` (nn.LayerNorm, eps 1e-5) -> Q-Former with W + B@A (scale 1) and `query_tokens_m` -> `t5_proj_m`;
audio through `projection_audio` before `ln_audio`; point clouds + 0.01 x position embedding, no LayerNorm.
"""

import math

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from modeling_crema.convert_reference_checkpoint import convert_reference_checkpoint
from reference_math import (
    HandMMQA,
    embed_ids,
    mmqa_forward,
    point_position_embedding,
    self_gated_fusion,
    sharpen_cross_attention,
    vision_pre_layernorm_states,
)
from tiny_models import IMAGE_SIZE, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH, VISION_WIDTH, tiny_blip2, tiny_tokenizer

OURS = {"rgb": "video", "depth": "depth", "flow": "flow", "norm": "normal", "audio": "audio", "pc": "point_cloud"}
LAVIS_QUERY_ORDER = ["rgb", "flow", "norm", "depth", "audio", "pc"]  # CREMA.__init__ order
LAVIS_LORA_ORDER = ["rgb", "depth", "flow", "norm", "audio", "pc"]  # _LoRALayer_multimodal order
RANK, AUDIO_WIDTH, SEGMENTS, POINTS = 4, 24, 2, 8
LAVIS_EPS = 1e-5  # nn.LayerNorm's default, what LAVIS's `ln_m` use
QFORMER_WIDTH, LAYERS = 32, 2
#: MUSIC-AVQA and SQA3D training orders (DESIGN §4).
TRAINING_ORDERS = ["rgb_audio_flow_depth_norm", "rgb_pc_depth_norm"]


def _lavis_checkpoint(training_order: str, seed: int = 0):
    """A LAVIS CREMA state dict of random trainable tensors, keys in LAVIS's own order."""
    modalities = training_order.split("_")
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    state = {}
    for ref in LAVIS_QUERY_ORDER:  # nn.Parameters of the top module come first
        if ref in modalities:
            state[f"query_tokens_{ref}"] = rand(1, QUERY_COUNT, QFORMER_WIDTH, std=0.5)
    if "audio" in modalities:  # ln_audio is registered with the audio encoder, before the T5 and the Q-Former
        state["ln_audio.weight"], state["ln_audio.bias"] = rand(VISION_WIDTH, std=0.2, mean=1.0), rand(VISION_WIDTH, std=0.2)
    state["t5_model.shared.weight"] = rand(8, TEXT_WIDTH)  # a frozen tensor some checkpoints carry: ignored
    for layer in range(LAYERS):
        for projection in ("query", "value"):
            prefix = f"Qformer.bert.encoder.layer.{layer}.attention.self.{projection}"
            state[f"{prefix}.w.weight"] = rand(QFORMER_WIDTH, QFORMER_WIDTH)  # frozen base: ignored
            for ref in LAVIS_LORA_ORDER:
                if ref in modalities:
                    state[f"{prefix}.w_a_{ref}.weight"] = rand(RANK, QFORMER_WIDTH, std=1 / math.sqrt(QFORMER_WIDTH))
                    state[f"{prefix}.w_b_{ref}.weight"] = rand(QFORMER_WIDTH, RANK, std=0.5)
    for ref in LAVIS_QUERY_ORDER:
        if ref not in modalities:
            continue
        state[f"t5_proj_{ref}.weight"] = rand(TEXT_WIDTH, QFORMER_WIDTH, std=1 / math.sqrt(QFORMER_WIDTH))
        state[f"t5_proj_{ref}.bias"] = rand(TEXT_WIDTH, std=0.1)
        if ref == "audio":
            state["projection_audio.weight"] = rand(VISION_WIDTH, AUDIO_WIDTH, std=1 / math.sqrt(AUDIO_WIDTH))
            state["projection_audio.bias"] = rand(VISION_WIDTH, std=0.1)
        else:
            state[f"ln_{ref}.weight"], state[f"ln_{ref}.bias"] = rand(VISION_WIDTH, std=0.2, mean=1.0), rand(VISION_WIDTH, std=0.2)
    supportive = len(modalities) - 1
    state["fusion.0.weight"] = rand(TEXT_WIDTH, TEXT_WIDTH * supportive, std=0.3)
    state["fusion.0.bias"] = rand(TEXT_WIDTH, std=0.1)
    return state


def _hand_mmqa(state, ref, eps) -> HandMMQA:
    lora = {(layer, projection): (state[f"Qformer.bert.encoder.layer.{layer}.attention.self.{projection}.w_a_{ref}.weight"],
                                  state[f"Qformer.bert.encoder.layer.{layer}.attention.self.{projection}.w_b_{ref}.weight"])
            for layer in range(LAYERS) for projection in ("query", "value")}
    projection_audio = (state["projection_audio.weight"], state["projection_audio.bias"]) if ref == "audio" else None
    return HandMMQA(lora, 1.0, state[f"query_tokens_{ref}"], (state[f"ln_{ref}.weight"], state[f"ln_{ref}.bias"], eps),
                    (state[f"t5_proj_{ref}.weight"], state[f"t5_proj_{ref}.bias"]), projection_audio)


def _inputs(modalities, scale_audio: float = 1.0):
    generator = torch.Generator().manual_seed(5)
    inputs = {}
    for ref in modalities:
        name = OURS[ref]
        if ref == "audio":
            inputs["audio_features"] = scale_audio * torch.randn(2, SEGMENTS, 6, AUDIO_WIDTH, generator=generator)
        elif ref == "pc":
            inputs["point_cloud_features"] = 0.05 * torch.randn(2, POINTS, VISION_WIDTH, generator=generator)
            inputs["point_cloud_coordinates"] = torch.randint(0, 256, (2, POINTS, 3), generator=generator)
        else:
            inputs[f"{name}_pixel_values"] = torch.randn(2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return inputs


def _hand_embeds(blip2, state, ref, inputs, eps=LAVIS_EPS):
    mmqa = _hand_mmqa(state, ref, eps)
    if ref == "audio":
        features = inputs["audio_features"]
        return mmqa_forward(blip2.qformer, mmqa, features.flatten(0, 1)).view(2, SEGMENTS, QUERY_COUNT, TEXT_WIDTH)
    if ref == "pc":
        position = 0.01 * point_position_embedding(inputs["point_cloud_coordinates"], VISION_WIDTH)
        out = mmqa_forward(blip2.qformer, mmqa, inputs["point_cloud_features"], position_embedding=position,
                           normalize=False)
        return out.unsqueeze(1)
    states = vision_pre_layernorm_states(blip2.vision_model, inputs[f"{OURS[ref]}_pixel_values"])
    return mmqa_forward(blip2.qformer, mmqa, states).view(2, NUM_FRAMES, QUERY_COUNT, TEXT_WIDTH)


def _backbone():
    blip2 = tiny_blip2()
    sharpen_cross_attention(blip2)  # the Q-Former output then depends visibly on each modality's encoder input
    return blip2


def _converted_model(blip2, directory):
    model = CremaForConditionalGeneration.from_blip2(blip2, modalities=[], tokenizer=tiny_tokenizer(),
                                                     num_frames=NUM_FRAMES, token_layout="reference_concat").eval()
    for name in ("video", "audio", "flow", "depth", "normal", "point_cloud"):
        if (directory / "adapters" / name).exists():
            model.load_adapter(directory / "adapters" / name)
    model.load_fusion(directory / "fusion")
    return model.eval()


@pytest.fixture(scope="module", params=TRAINING_ORDERS)
def converted(request, tmp_path_factory):
    training_order = request.param
    state = _lavis_checkpoint(training_order)
    folder = tmp_path_factory.mktemp("lavis")
    torch.save({"model": state, "config": {"model": {"arch": "crema", "modalities": training_order}}, "epoch": 3},
               folder / "checkpoint_best.pth")
    order = convert_reference_checkpoint(folder / "checkpoint_best.pth", folder / "converted")
    blip2 = _backbone()
    return training_order.split("_"), state, order, blip2, _converted_model(blip2, folder / "converted")


def test_order_is_the_training_order_not_the_key_order(converted):
    modalities, state, order, _, model = converted
    assert order == [OURS[ref] for ref in modalities]
    assert model.fusion.modalities == order
    keys = [key.removeprefix("query_tokens_") for key in state if key.startswith("query_tokens_")]
    assert keys != modalities  # the key order differs: inferring from it would be wrong


def test_every_converted_tensor_lands_on_its_modality(converted):
    modalities, state, _, _, model = converted
    checked = 0
    for ref in modalities:
        name = OURS[ref]
        assert model.peft_config[name].r == RANK and model.peft_config[name].lora_alpha == RANK  # LAVIS scale 1
        for layer in range(LAYERS):
            for projection in ("query", "value"):
                lora = getattr(model.qformer.encoder.layer[layer].attention.attention, projection)
                prefix = f"Qformer.bert.encoder.layer.{layer}.attention.self.{projection}"
                assert torch.equal(lora.lora_A[name].weight, state[f"{prefix}.w_a_{ref}.weight"]), (name, prefix)
                assert torch.equal(lora.lora_B[name].weight, state[f"{prefix}.w_b_{ref}.weight"]), (name, prefix)
                checked += 2
        adapter = model.mmqa[name].modules_to_save[name]
        pairs = {f"query_tokens_{ref}": adapter.query_tokens.weight,
                 f"t5_proj_{ref}.weight": adapter.language_projection.weight,
                 f"t5_proj_{ref}.bias": adapter.language_projection.bias,
                 f"ln_{ref}.weight": adapter.input_layernorm.weight, f"ln_{ref}.bias": adapter.input_layernorm.bias}
        if ref == "audio":
            pairs.update({"projection_audio.weight": adapter.input_projection.weight,
                          "projection_audio.bias": adapter.input_projection.bias})
        for key, ours in pairs.items():
            assert torch.equal(ours, state[key]), (name, key)
            checked += 1
    assert torch.equal(model.fusion.projection.weight, state["fusion.0.weight"])
    assert torch.equal(model.fusion.projection.bias, state["fusion.0.bias"])
    trainable = [key for key in state if not key.endswith(".w.weight") and not key.startswith("t5_model.")]
    assert checked + 2 == len(trainable)


def test_mmqa_outputs_equal_hand_computation_from_the_lavis_tensors(converted):
    modalities, state, _, blip2, model = converted
    inputs = _inputs(modalities)
    for ref in modalities:
        name = OURS[ref]
        with torch.no_grad():
            ours = model.encode_modality(name, **{k: v for k, v in inputs.items() if k.startswith(name + "_")})
        expected = _hand_embeds(blip2, state, ref, inputs)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5,
                                   msg=lambda message: f"{name}: {message}")


def test_fused_tokens_use_the_fusion_blocks_in_training_order(converted, tokenizer):
    """reference_concat: [F_i v_i]_i [F_1 ... F_T] [e_1 ... e_T] prompt, e from `fusion.0` blocks in the order
    of the training modalities (audio averaged over segments, point cloud repeated over frames)."""
    modalities, state, _, blip2, model = converted
    inputs = _inputs(modalities)
    prompt = tokenizer(["Question: red or blue?", "Question: what is the person doing?"], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        prepared = model.prepare_language_model_inputs(prompt.input_ids, prompt.attention_mask, **inputs)
    embeds = {ref: _hand_embeds(blip2, state, ref, inputs) for ref in modalities}
    blocks = []
    for ref in modalities[1:]:
        block = embeds[ref]
        if ref == "audio":
            block = block.mean(dim=1, keepdim=True)
        blocks.append(block.expand(-1, NUM_FRAMES, -1, -1) if block.shape[1] == 1 else block)
    fused = self_gated_fusion(blocks, state["fusion.0.weight"], state["fusion.0.bias"])
    table = blip2.language_model.get_input_embeddings().weight.detach()
    frame_prefixes = [embed_ids(table, tokenizer(f"Frame {i + 1}: ", add_special_tokens=False).input_ids, 2)
                      for i in range(NUM_FRAMES)]
    pieces = [piece for i in range(NUM_FRAMES) for piece in (frame_prefixes[i], embeds["rgb"][:, i])]
    pieces += frame_prefixes + [fused[:, i] for i in range(NUM_FRAMES)] + [table[prompt.input_ids]]
    torch.testing.assert_close(prepared.inputs_embeds, torch.cat(pieces, dim=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ref", ["rgb", "audio"])
def test_converted_layernorms_use_lavis_eps(tmp_path, ref):
    """Low-variance audio features (and the tiny ViT's states), where the LayerNorm eps shows in the output."""
    state = _lavis_checkpoint("rgb_audio_flow_depth_norm")
    torch.save({"model": state, "config": {"model": {"modalities": "rgb_audio_flow_depth_norm"}}}, tmp_path / "c.pth")
    convert_reference_checkpoint(tmp_path / "c.pth", tmp_path / "converted")
    blip2 = _backbone()
    model = _converted_model(blip2, tmp_path / "converted")
    inputs = _inputs([ref], scale_audio=1e-3)
    name = OURS[ref]
    with torch.no_grad():
        ours = model.encode_modality(name, **inputs)
    assert model.mmqa[name].modules_to_save[name].input_layernorm.eps == LAVIS_EPS
    torch.testing.assert_close(ours, _hand_embeds(blip2, state, ref, inputs), rtol=1e-4, atol=1e-5)


def test_modality_order_given_by_hand_when_the_checkpoint_records_none(tmp_path):
    state = _lavis_checkpoint("rgb_audio_flow_depth_norm")
    torch.save({"model": state}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="does not record its modality order"):
        convert_reference_checkpoint(tmp_path / "bare.pth", tmp_path / "refused")
    order = convert_reference_checkpoint(tmp_path / "bare.pth", tmp_path / "out", modalities=["rgb", "audio", "flow", "depth", "norm"])
    assert order == ["video", "audio", "flow", "depth", "normal"]
    model = _converted_model(_backbone(), tmp_path / "out")
    assert model.fusion.modalities == order
    assert torch.equal(model.fusion.projection.weight, state["fusion.0.weight"])
    torch.save({"model": state, "config": {"model": {"modalities": "rgb_audio_flow_depth_norm"}}}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match="trained with modalities"):
        convert_reference_checkpoint(tmp_path / "c.pth", tmp_path / "other", modalities=["rgb", "flow", "norm", "depth", "audio"])
    with pytest.raises(ValueError, match="also holds adapters"):
        convert_reference_checkpoint(tmp_path / "bare.pth", tmp_path / "partial", modalities=["rgb", "audio"])


def test_reference_conversion_errors(tmp_path):
    torch.save({"model": {"visual_encoder.weight": torch.zeros(2)}}, tmp_path / "frozen_only.pth")
    with pytest.raises(ValueError, match="No CREMA adapter tensors"):
        convert_reference_checkpoint(tmp_path / "frozen_only.pth", tmp_path / "out", modalities=["rgb"])
    torch.save({"model": {"query_tokens_sonar": torch.zeros(1, 2, 3)}}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="Unknown reference modality 'sonar'"):
        convert_reference_checkpoint(tmp_path / "odd.pth", tmp_path / "out", modalities=["rgb"])
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Could not read reference checkpoint"):
        convert_reference_checkpoint(tmp_path / "broken.pth", tmp_path / "out")
