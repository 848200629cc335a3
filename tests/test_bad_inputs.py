"""Each bad input raises a ValueError naming the modality, what was expected and what was got."""

import pytest
import torch

from modeling_crema import CremaConfig
from tiny_models import IMAGE_SIZE, NUM_FRAMES, modality_inputs, text_inputs, tiny_crema_model


@pytest.fixture(scope="module")
def model():
    return tiny_crema_model(["video", "audio", "depth", "point_cloud"], fusion=["video", "audio", "depth"],
                            with_audio_encoder=True)


@pytest.fixture()
def batch(model, tokenizer):
    return {**modality_inputs(model.config), **text_inputs(tokenizer)}


def test_unknown_modality_input(model, batch):
    batch["thermal_pixel_values"] = batch["video_pixel_values"]
    with pytest.raises(ValueError, match=r"modality 'thermal', which has no adapter.*add_modality\('thermal'\)"):
        model(**batch)


def test_unknown_modality_name_in_subset(model, batch):
    with pytest.raises(ValueError, match=r"Unknown modality 'sonar'.*\['video', 'audio', 'depth', 'point_cloud'\]"):
        model(**batch, modalities=["video", "sonar"])


def test_invalid_modality_name_and_encoder():
    with pytest.raises(ValueError, match="not valid"):
        CremaConfig(modalities=["optical-flow"])
    with pytest.raises(ValueError, match=r"Modality 'lidar': unknown encoder kind 'laser'"):
        CremaConfig(modalities=[{"name": "lidar", "encoder": "laser"}])


def test_missing_input_for_fused_modality(model, batch):
    del batch["depth_pixel_values"]
    with pytest.raises(ValueError, match=r"Missing inputs for modalities \['depth'\].*modalities="):
        model(**batch)


def test_requested_modality_without_input(model, batch):
    del batch["depth_pixel_values"]
    with pytest.raises(ValueError, match=r"'depth' was requested in `modalities` but no input"):
        model(**batch, modalities=["video", "depth"])


def test_wrong_feature_width(model, batch):
    batch["point_cloud_features"] = torch.randn(2, 10, 7)
    with pytest.raises(ValueError, match=r"Modality 'point_cloud'.*feature width 48.*got \(2, 1, 10, 7\)"):
        model(**batch)


def test_mmqa_output_of_the_wrong_shape_or_beside_other_inputs(model, batch):
    depth_output = model.encode_modality("depth", depth_pixel_values=batch["depth_pixel_values"])
    with pytest.raises(ValueError, match=r"`depth_mmqa_embeds` \(its MMQA output\) replaces.*\['depth_pixel_values'\]"):
        model(**batch, depth_mmqa_embeds=depth_output)
    batch["depth_mmqa_embeds"] = depth_output[..., :-1]
    del batch["depth_pixel_values"]
    with pytest.raises(ValueError, match=rf"`depth_mmqa_embeds` must be \(B, G, {depth_output.shape[2]}, "
                                         rf"{depth_output.shape[3]}\).*got \(2, {NUM_FRAMES}, "):
        model(**batch)
    batch["depth_mmqa_embeds"] = depth_output.detach().clone().fill_(float("nan"))
    with pytest.raises(ValueError, match=r"`depth_mmqa_embeds` contains NaN"):
        model(**batch)


def test_wrong_frame_count(model, batch):
    batch["depth_pixel_values"] = batch["depth_pixel_values"][:, :2]
    with pytest.raises(ValueError, match=rf"Modality 'depth': expected {NUM_FRAMES} frames .*got 2"):
        model(**batch)


def test_wrong_image_size(model, batch):
    batch["video_pixel_values"] = torch.randn(2, NUM_FRAMES, 3, 16, 16)
    with pytest.raises(ValueError, match=rf"'video'.*\(B, T, 3, {IMAGE_SIZE}, {IMAGE_SIZE}\); got \(2, {NUM_FRAMES}, 3, 16, 16\)"):
        model(**batch)


@pytest.mark.parametrize("key", ["video_pixel_values", "audio_input_values", "point_cloud_features"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values(model, batch, key, bad):
    batch[key] = batch[key].clone()
    batch[key].view(-1)[3] = bad
    modality = "point_cloud" if key.startswith("point_cloud") else key.split("_")[0]
    with pytest.raises(ValueError, match=rf"Modality '{modality}'.*NaN or inf"):
        model(**batch)


def test_batch_size_mismatch(model, batch):
    batch["depth_pixel_values"] = batch["depth_pixel_values"][:1]
    with pytest.raises(ValueError, match=r"Modality 'depth' has batch size 1, the prompt has 2"):
        model(**batch)


def test_point_cloud_without_coordinates(model, batch):
    del batch["point_cloud_coordinates"]
    with pytest.raises(ValueError, match=r"'point_cloud' needs `point_cloud_coordinates`"):
        model(**batch)


def test_no_adapters_at_all(tokenizer):
    model = tiny_crema_model([])
    with pytest.raises(ValueError, match=r"no modality adapters.*add_modality"):
        model(**text_inputs(tokenizer))


def test_features_only_modality_without_features(tokenizer):
    model = tiny_crema_model(["video", "audio"])  # no audio encoder: audio must come as features
    batch = {**modality_inputs(model.config, names=["video"]), **text_inputs(tokenizer)}
    batch["audio_input_values"] = torch.randn(2, 2, 64, 32)
    with pytest.raises(ValueError, match=r"'audio' \(encoder 'audio'\) has no encoder.*`audio_features` of shape "
                                         r"\(B, N, 768\).*BEATs.*audio_encoder="):
        model(**batch)


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "NaN/inf or fractional"),
    (3.5, "NaN/inf or fractional"),
])
def test_point_coordinates_must_be_integer_voxels(model, batch, bad, message):
    coordinates = batch["point_cloud_coordinates"].float()
    coordinates[1, 2, 0] = bad
    batch["point_cloud_coordinates"] = coordinates
    with pytest.raises(ValueError, match=rf"'point_cloud': `point_cloud_coordinates` must be integer voxel.*{message}"):
        model(**batch)


def test_integral_float_coordinates_are_accepted(model, batch):
    reference = model(**batch).logits
    batch["point_cloud_coordinates"] = batch["point_cloud_coordinates"].float()
    assert torch.equal(model(**batch).logits, reference)


def test_all_masked_point_cloud(model, batch):
    batch["point_cloud_attention_mask"][1] = 0
    with pytest.raises(ValueError, match=r"'point_cloud': `point_cloud_attention_mask` masks out every token of "
                                         r"example\(s\) \[1\]"):
        model(**batch)


@pytest.mark.parametrize("modality, key, value", [
    ("video", "video_pixel_values", 1e30), ("depth", "depth_pixel_values", -5e3),
    ("audio", "audio_input_values", 1e12), ("point_cloud", "point_cloud_features", 1e20),
])
def test_finite_but_absurd_values(model, batch, modality, key, value):
    batch[key][0, 0] = value
    with pytest.raises(ValueError, match=rf"'{modality}': `{key}` holds values up to .*normalised"):
        model(**batch)


def test_fusion_of_unattached_modality():
    model = tiny_crema_model(["video", "depth"])
    with pytest.raises(ValueError, match=r"Unknown modality 'flow'"):
        model.set_fusion(["video", "flow"])


def test_load_fusion_needs_its_adapters(tmp_path):
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    model.save_fusion(tmp_path / "fusion")
    other = tiny_crema_model(["video"])
    with pytest.raises(ValueError, match=r"trained on modalities \['video', 'depth'\].*no adapter for \['depth'\]"):
        other.load_fusion(tmp_path / "fusion")
