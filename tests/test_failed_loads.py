"""A failed load never changes the model: damaged or mismatched files are refused with one `ValueError` naming the
file, and the model keeps exactly its tensors, adapters, order, fusion and outputs."""

import copy
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_crema import CremaForConditionalGeneration
from modeling_crema.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from modeling_crema.fusion import FUSION_CONFIG_NAME, FUSION_WEIGHTS_NAME
from tiny_models import modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model


@pytest.fixture
def model():
    model = tiny_crema_model(["video", "thermal", "depth"], fusion=["video", "thermal", "depth"])
    randomize_lora_b(model, seed=5)
    with torch.no_grad():
        model.fusion.projection.weight.normal_(std=0.1)
    return model


@pytest.fixture
def thermal_folder(tmp_path, model):
    """A valid thermal adapter with other weights than the model's, to be damaged by each test."""
    source = tiny_crema_model(["video", "thermal"], seed=3)
    randomize_lora_b(source, seed=9)
    source.save_adapter(tmp_path / "thermal", "thermal")
    return tmp_path / "thermal"


def snapshot(model, tokenizer):
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    return {
        "tensors": {key: value.clone() for key, value in model.state_dict().items()},
        "modalities": copy.deepcopy(model.config.modalities),
        "fusion": (model.config.fusion_modalities, model.config.use_fusion, model.fusion.modalities),
        "peft": sorted(model.peft_config),
        "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad),
        "logits": model(**batch).logits,
        "batch": batch,
    }


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before["tensors"].keys()
    assert all(torch.equal(after[key], before["tensors"][key]) for key in after)
    assert model.config.modalities == before["modalities"]
    assert (model.config.fusion_modalities, model.config.use_fusion, model.fusion.modalities) == before["fusion"]
    assert sorted(model.peft_config) == before["peft"]
    assert sorted(name for name, p in model.named_parameters() if p.requires_grad) == before["trainable"]
    assert torch.equal(model(**before["batch"]).logits, before["logits"])


def rewrite_metadata(folder, **changes):
    tensors = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
    from safetensors import safe_open

    with safe_open(str(folder / ADAPTER_WEIGHTS_NAME), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata.update(changes)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS_NAME), metadata=metadata)


def test_unknown_spec_field_is_refused_and_the_live_adapter_survives_a_later_save(model, thermal_folder, tokenizer, tmp_path):
    spec = {"name": "thermal", "encoder": "vision", "feature_size": 48, "prefix": "Thermal: ", "prefix_token_ids": [],
            "colour_map": "inferno"}
    rewrite_metadata(thermal_folder, crema_modality=json.dumps(spec))
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"thermal.*adapter_model.safetensors: unknown modality fields \['colour_map'\]"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)
    model.save_pretrained(tmp_path / "saved")  # the thermal adapter (still referenced by the fusion) is saved
    reloaded = CremaForConditionalGeneration.from_pretrained(tmp_path / "saved")
    assert reloaded.config.modality_names == ["video", "thermal", "depth"]
    assert torch.equal(reloaded(**before["batch"]).logits, before["logits"])


@pytest.mark.parametrize("damage", ["truncated", "zero-filled", "empty"])
def test_damaged_weights_file_is_named(model, thermal_folder, tokenizer, damage):
    weights = thermal_folder / ADAPTER_WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "zero-filled": bytes(len(data)), "empty": b""}[damage])
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=rf"{ADAPTER_WEIGHTS_NAME} cannot be read as a safetensors file.*truncated or damaged"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def test_invalid_adapter_config_json_is_named(model, thermal_folder, tokenizer):
    (thermal_folder / ADAPTER_CONFIG_NAME).write_text('{"r": 4, "lora_alpha": ')
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=rf"{ADAPTER_CONFIG_NAME}: the adapter config is not valid JSON"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def test_rank_in_config_that_disagrees_with_tensors_is_blamed_on_the_config(model, thermal_folder, tokenizer):
    config = json.loads((thermal_folder / ADAPTER_CONFIG_NAME).read_text())
    config["r"] = 8  # the tensors have rank 4
    (thermal_folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"adapter_config.json says r=8, but tensor .*lora_A.* \(rank 4\)"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


@pytest.mark.parametrize("alpha", [0, -4, "four"])
def test_non_positive_lora_alpha_is_refused(model, thermal_folder, tokenizer, alpha):
    config = json.loads((thermal_folder / ADAPTER_CONFIG_NAME).read_text())
    config["lora_alpha"] = alpha
    (thermal_folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"`lora_alpha` must be a positive number"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def _flip_exponent_bit_of_first_float(path):
    """Flips the highest exponent bit of the first non-zero float32 weight below 1 (a silent bit rot: the value
    becomes ~1e38 times larger)."""
    data = bytearray(path.read_bytes())
    header_size = struct.unpack("<Q", data[:8])[0]
    start = 8 + header_size
    for offset in range(start, len(data), 4):
        value = struct.unpack("<f", data[offset : offset + 4])[0]
        if 1e-3 < abs(value) < 1:
            data[offset + 3] ^= 0x40
            path.write_bytes(bytes(data))
            return
    raise AssertionError("no weight to flip")


def test_bit_flip_is_caught_by_the_checksum(model, thermal_folder, tokenizer):
    _flip_exponent_bit_of_first_float(thermal_folder / ADAPTER_WEIGHTS_NAME)
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"do not match the checksum stored at save time"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def test_bit_flip_in_a_file_without_checksum_is_caught_by_its_magnitude(model, thermal_folder, tokenizer):
    """Adapters written by plain PEFT carry no checksum; a flipped exponent bit still shows as an absurd value."""
    tensors = load_file(str(thermal_folder / ADAPTER_WEIGHTS_NAME))
    save_file(tensors, str(thermal_folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    _flip_exponent_bit_of_first_float(thermal_folder / ADAPTER_WEIGHTS_NAME)
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"(implausible value|NaN or inf)"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def test_nan_tensor_is_named(model, thermal_folder, tokenizer):
    tensors = load_file(str(thermal_folder / ADAPTER_WEIGHTS_NAME))
    key = next(k for k in tensors if "query_tokens" in k)
    tensors[key][0, 0, 0] = float("nan")
    save_file(tensors, str(thermal_folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=rf"tensor '{key}' contains NaN or inf"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


def test_failure_in_the_middle_of_a_swap_restores_everything(model, thermal_folder, tokenizer, monkeypatch):
    """Even an unexpected error after the old adapter was removed leaves the model as it was."""
    before = snapshot(model, tokenizer)

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    # the last step of a swap, after the old adapter was removed and the new one loaded
    monkeypatch.setattr(CremaForConditionalGeneration, "_move_modality", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.load_adapter(thermal_folder)
    monkeypatch.undo()
    assert_unchanged(model, before)
    assert model.load_adapter(thermal_folder) == "thermal"  # and a later good load works
    assert model.config.modality_names == ["video", "thermal", "depth"]


def test_missing_weights_file_is_named(model, thermal_folder, tokenizer):
    (thermal_folder / ADAPTER_WEIGHTS_NAME).unlink()
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=rf"No modality adapter at .*thermal.*{ADAPTER_WEIGHTS_NAME} is missing"):
        model.load_adapter(thermal_folder)
    assert_unchanged(model, before)


@pytest.fixture
def fusion_folder(tmp_path, model):
    model.save_fusion(tmp_path / "fusion")
    return tmp_path / "fusion"


def test_fusion_with_wrong_shapes_is_refused_before_the_fusion_is_replaced(model, fusion_folder, tokenizer):
    tensors = load_file(str(fusion_folder / FUSION_WEIGHTS_NAME))
    tensors["projection.weight"] = tensors["projection.weight"][:, :40].contiguous()  # one supportive block only
    save_file(tensors, str(fusion_folder / FUSION_WEIGHTS_NAME))
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=r"fusion.safetensors: a fusion over \['video', 'thermal', 'depth'\] at width 40"):
        model.load_fusion(fusion_folder)
    assert_unchanged(model, before)


@pytest.mark.parametrize("content", ['{"modalities": ["video"', '{"modalities": "video", "hidden_size": 40}',
                                     '{"modalities": ["video", "thermal"], "hidden_size": -1}'])
def test_bad_fusion_config_is_named(model, fusion_folder, tokenizer, content):
    (fusion_folder / FUSION_CONFIG_NAME).write_text(content)
    before = snapshot(model, tokenizer)
    with pytest.raises(ValueError, match=rf"{FUSION_CONFIG_NAME}"):
        model.load_fusion(fusion_folder)
    assert_unchanged(model, before)


def test_fusion_load_error_after_the_swap_restores_the_previous_fusion(model, fusion_folder, tokenizer, monkeypatch):
    before = snapshot(model, tokenizer)
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        model.load_fusion(fusion_folder)
    monkeypatch.undo()
    assert_unchanged(model, before)


def test_damaged_adapter_inside_a_model_folder_names_that_file(model, tmp_path):
    model.save_pretrained(tmp_path / "crema")
    weights = tmp_path / "crema" / "adapters" / "depth" / ADAPTER_WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"adapters/depth/adapter_model.safetensors cannot be read"):
        CremaForConditionalGeneration.from_pretrained(tmp_path / "crema")
