"""Point-cloud and non-visual adapter details; the token layouts themselves are checked against hand-built
sequences in test_independent_token_layout.py and test_reference_layouts.py."""

import torch

from tiny_models import modality_inputs, text_inputs, tiny_crema_model


def test_point_cloud_coordinates_outside_the_grid_are_refused(tokenizer):
    import pytest

    model = tiny_crema_model(["video", "point_cloud"])
    inputs = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    inputs["point_cloud_coordinates"] = inputs["point_cloud_coordinates"].clone()
    inputs["point_cloud_coordinates"][0, 0, 1] = 300
    with pytest.raises(ValueError, match=r"'point_cloud': voxel coordinates must lie in \[0, 256\).*300"):
        model(**inputs)


def test_new_non_visual_adapters_start_with_an_identity_layernorm():
    model = tiny_crema_model(["video"])
    with torch.no_grad():
        model.vision_model.post_layernorm.weight.uniform_(0.5, 1.5)
        model.vision_model.post_layernorm.bias.uniform_(-0.5, 0.5)
    model.add_modality("point_cloud")
    model.add_modality("audio", feature_size=24)
    model.add_modality("thermal")
    for name in ("point_cloud", "audio"):
        norm = model.mmqa[name].modules_to_save[name].input_layernorm
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))
    thermal_norm = model.mmqa["thermal"].modules_to_save["thermal"].input_layernorm
    assert torch.equal(thermal_norm.weight, model.vision_model.post_layernorm.weight)
    assert torch.equal(thermal_norm.bias, model.vision_model.post_layernorm.bias)
