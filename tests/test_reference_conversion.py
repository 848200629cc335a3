"""The authors' LAVIS checkpoint layout (DESIGN §4) converts to our adapters + fusion with identical outputs."""

import pytest
import torch

from modeling_crema.convert_reference_checkpoint import convert_reference_checkpoint
from tiny_models import modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model

OURS_TO_REFERENCE = {"video": "rgb", "audio": "audio", "depth": "depth", "normal": "norm", "point_cloud": "pc"}
MODALITIES = ["video", "audio", "depth", "point_cloud"]


def _trained_model():
    # audio as 24-d precomputed features (the paper's BEATs features are 768-d): it gets an input projection
    model = tiny_crema_model(
        ["video", {"name": "audio", "feature_size": 24}, "depth", "point_cloud"], fusion=MODALITIES,
        token_layout="reference",
    )
    randomize_lora_b(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and ".lora_B." not in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _reference_state_dict(model):
    """Writes the model's trainable tensors under the authors' LAVIS names, by hand."""
    state = {}
    for i, layer in enumerate(model.qformer.encoder.layer):
        for projection in ("query", "value"):
            lora = getattr(layer.attention.attention, projection)
            prefix = f"Qformer.bert.encoder.layer.{i}.attention.self.{projection}"
            state[f"{prefix}.w.weight"] = lora.base_layer.weight  # frozen copy: ignored by the converter
            for ours, ref in OURS_TO_REFERENCE.items():
                if ours in lora.lora_A:
                    state[f"{prefix}.w_a_{ref}.weight"] = lora.lora_A[ours].weight
                    state[f"{prefix}.w_b_{ref}.weight"] = lora.lora_B[ours].weight
    for ours in MODALITIES:
        ref = OURS_TO_REFERENCE[ours]
        mmqa = model.mmqa[ours].modules_to_save[ours]
        state[f"query_tokens_{ref}"] = mmqa.query_tokens.weight
        state[f"t5_proj_{ref}.weight"] = mmqa.language_projection.weight
        state[f"t5_proj_{ref}.bias"] = mmqa.language_projection.bias
        state[f"ln_{ref}.weight"] = mmqa.input_layernorm.weight
        state[f"ln_{ref}.bias"] = mmqa.input_layernorm.bias
    audio = model.mmqa["audio"].modules_to_save["audio"].input_projection
    state["projection_audio.weight"], state["projection_audio.bias"] = audio.weight, audio.bias
    state["fusion.0.weight"] = model.fusion.projection.weight
    state["fusion.0.bias"] = model.fusion.projection.bias
    state["t5_model.shared.weight"] = model.language_model.shared.weight  # frozen: ignored
    return {k: v.detach().clone() for k, v in state.items()}


def test_reference_checkpoint_converts_to_identical_model(tmp_path, tokenizer):
    trained = _trained_model()
    torch.save({"model": _reference_state_dict(trained), "epoch": 3}, tmp_path / "checkpoint_best.pth")

    order = convert_reference_checkpoint(tmp_path / "checkpoint_best.pth", tmp_path / "converted")
    assert order == MODALITIES

    fresh = tiny_crema_model([], token_layout="reference")  # same backbone (seed 0), no adapters yet
    for name in order:
        fresh.load_adapter(tmp_path / "converted" / "adapters" / name)
    fresh.load_fusion(tmp_path / "converted" / "fusion")
    assert fresh.config.modality("audio")["feature_size"] == 24
    assert fresh.config.modality("point_cloud")["encoder"] == "point_cloud"

    batch = {**modality_inputs(trained.config), **text_inputs(tokenizer)}
    torch.testing.assert_close(fresh(**batch).logits, trained(**batch).logits, rtol=0, atol=0)


def test_reference_conversion_errors(tmp_path):
    torch.save({"model": {"visual_encoder.weight": torch.zeros(2)}}, tmp_path / "frozen_only.pth")
    with pytest.raises(ValueError, match="No CREMA adapter tensors"):
        convert_reference_checkpoint(tmp_path / "frozen_only.pth", tmp_path / "out")
    torch.save({"model": {"query_tokens_sonar": torch.zeros(1, 2, 3)}}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="Unknown reference modality 'sonar'"):
        convert_reference_checkpoint(tmp_path / "odd.pth", tmp_path / "out")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Could not read reference checkpoint"):
        convert_reference_checkpoint(tmp_path / "broken.pth", tmp_path / "out")
