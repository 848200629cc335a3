"""The encoder attention mask (point-cloud padding, padded precomputed features) reaches the Q-Former's
cross-attention: padded rows cannot influence the output, and the output equals a hand-run BLIP-2 Q-Former given
that mask, and equals one run on the unpadded rows alone (no mask needed there)."""

import pytest
import torch

from modeling_crema import CremaForConditionalGeneration
from reference_math import mmqa_forward, point_position_embedding, set_random_mmqa, sharpen_cross_attention
from tiny_models import QUERY_COUNT, TEXT_WIDTH, VISION_WIDTH, tiny_blip2, tiny_tokenizer

POINTS = 10
GROUPS, TOKENS, SONAR_WIDTH = 2, 6, 20


@pytest.fixture(scope="module")
def built():
    blip2 = tiny_blip2()
    sharpen_cross_attention(blip2)
    modalities = ["video", "point_cloud", {"name": "sonar", "encoder": "features", "feature_size": SONAR_WIDTH}]
    model = CremaForConditionalGeneration.from_blip2(
        blip2, modalities=modalities, tokenizer=tiny_tokenizer(), num_frames=GROUPS, lora_rank=4
    ).eval()
    hand = {name: set_random_mmqa(model, name, seed=20 + index, scale=1.0)
            for index, name in enumerate(["point_cloud", "sonar"])}
    generator = torch.Generator().manual_seed(11)
    mask = torch.ones(2, POINTS, dtype=torch.long)
    mask[0, 6:] = 0
    mask[1, 9:] = 0
    point_cloud = {
        "point_cloud_features": 0.05 * torch.randn(2, POINTS, VISION_WIDTH, generator=generator),
        "point_cloud_coordinates": torch.randint(0, 256, (2, POINTS, 3), generator=generator),
        "point_cloud_attention_mask": mask,
    }
    sonar_mask = torch.ones(2, GROUPS, TOKENS, dtype=torch.long)
    sonar_mask[0, 1, 4:] = 0  # not symmetric in (batch, group): a transposed mask shows
    sonar_mask[1, 1, 2:] = 0
    sonar = {
        "sonar_features": torch.randn(2, GROUPS, TOKENS, SONAR_WIDTH, generator=generator),
        "sonar_attention_mask": sonar_mask,
    }
    return blip2, model, hand, point_cloud, sonar


def _encode(model, name, inputs):
    with torch.no_grad():
        return model.encode_modality(name, **inputs)


def _with_garbage_in_padding(inputs, name, seed):
    """Padded rows replaced by large, different values (features and, for points, coordinates)."""
    generator = torch.Generator().manual_seed(seed)
    garbage = dict(inputs)
    padded = inputs[f"{name}_attention_mask"] == 0
    features = inputs[f"{name}_features"].clone()
    features[padded] = 50 * torch.randn(features[padded].shape, generator=generator)
    garbage[f"{name}_features"] = features
    if f"{name}_coordinates" in inputs:
        coordinates = inputs[f"{name}_coordinates"].clone()
        coordinates[padded] = torch.randint(0, 256, coordinates[padded].shape, generator=generator)
        garbage[f"{name}_coordinates"] = coordinates
    return garbage


@pytest.mark.parametrize("name", ["point_cloud", "sonar"])
def test_padded_rows_do_not_influence_the_output(built, name):
    _, model, _, point_cloud, sonar = built
    inputs = {"point_cloud": point_cloud, "sonar": sonar}[name]
    clean = _encode(model, name, inputs)
    garbage = _encode(model, name, _with_garbage_in_padding(inputs, name, seed=1))
    torch.testing.assert_close(garbage, clean, rtol=1e-5, atol=1e-6)
    # ... while the same garbage in *valid* rows does change it (the check above can fail)
    unmasked = dict(inputs, **{f"{name}_attention_mask": torch.ones_like(inputs[f"{name}_attention_mask"])})
    changed = _with_garbage_in_padding(inputs, name, seed=1)
    changed[f"{name}_attention_mask"] = unmasked[f"{name}_attention_mask"]
    assert (_encode(model, name, changed) - clean).abs().max() > 1e-2


def test_point_cloud_output_equals_hand_run_qformer_with_the_mask(built):
    blip2, model, hand, inputs, _ = built
    features, coordinates = inputs["point_cloud_features"], inputs["point_cloud_coordinates"]
    mask = inputs["point_cloud_attention_mask"]
    states = features + 0.01 * point_position_embedding(coordinates, VISION_WIDTH)
    ours = _encode(model, "point_cloud", inputs)[:, 0]
    expected = mmqa_forward(blip2.qformer, hand["point_cloud"], states, encoder_mask=mask, normalize=False)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    for row in range(2):  # masking = attending to the valid rows only
        valid = mask[row].bool()
        alone = mmqa_forward(blip2.qformer, hand["point_cloud"], states[row : row + 1, valid], normalize=False)
        torch.testing.assert_close(ours[row : row + 1], alone, rtol=1e-4, atol=1e-5)
    unmasked = mmqa_forward(blip2.qformer, hand["point_cloud"], states, normalize=False)
    assert (unmasked - expected).abs().max() > 1e-2


def test_grouped_features_output_equals_hand_run_qformer_with_the_mask(built):
    blip2, model, hand, _, inputs = built
    features, mask = inputs["sonar_features"], inputs["sonar_attention_mask"]
    ours = _encode(model, "sonar", inputs)
    assert ours.shape == (2, GROUPS, QUERY_COUNT, TEXT_WIDTH)
    expected = mmqa_forward(blip2.qformer, hand["sonar"], features.flatten(0, 1), encoder_mask=mask.flatten(0, 1))
    torch.testing.assert_close(ours.flatten(0, 1), expected, rtol=1e-4, atol=1e-5)
    for row in range(2):
        for group in range(GROUPS):
            valid = mask[row, group].bool()
            alone = mmqa_forward(blip2.qformer, hand["sonar"], features[row, group : group + 1, valid])
            torch.testing.assert_close(ours[row, group : group + 1], alone, rtol=1e-4, atol=1e-5)
