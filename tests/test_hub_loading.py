"""`save_pretrained` / `from_pretrained`, Auto classes, and remote-code loading without this package installed."""

import json
import os
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from clean_env import IMPORT_GUARD, python_without_crema, run_isolated
from media_fixtures import media_dir, video_with_audio  # noqa: F401  (pytest fixtures)
from tiny_models import modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = tiny_crema_model(["video", "audio", "depth"], fusion=["video", "audio", "depth"], with_audio_encoder=True)
    randomize_lora_b(model)
    directory = tmp_path_factory.mktemp("crema") / "tiny-crema"
    model.save_pretrained(directory)
    return model, directory


def test_saved_layout(saved_model):
    _, directory = saved_model
    names = set(os.listdir(directory))
    assert {"config.json", "model.safetensors", "modeling_crema.py", "configuration_crema.py", "adapters"} <= names
    assert {"fusion", "mmqa.py", "adapters.py", "fusion.py", "saving.py"} <= names
    assert sorted(os.listdir(directory / "adapters")) == ["audio", "depth", "video"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "crema"
    assert config["auto_map"]["AutoModel"] == "modeling_crema.CremaForConditionalGeneration"
    assert config["auto_map"]["AutoConfig"] == "configuration_crema.CremaConfig"
    assert [spec["name"] for spec in config["modalities"]] == ["video", "audio", "depth"]


def test_base_checkpoint_has_no_adapter_keys(saved_model):
    model, directory = saved_model
    with safe_open(str(directory / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
    assert not any("lora_" in key or "base_layer" in key or key.startswith(("mmqa.", "fusion.")) for key in keys)
    assert "qformer.encoder.layer.0.attention.attention.query.weight" in keys
    assert "query_tokens" in keys and "language_projection.weight" in keys


def test_from_pretrained_round_trip(saved_model, tokenizer):
    model, directory = saved_model
    loaded = CremaForConditionalGeneration.from_pretrained(directory).eval()
    assert loaded.config.modality_names == ["video", "audio", "depth"]
    assert loaded.fusion is not None and loaded.fusion.modalities == ["video", "audio", "depth"]
    assert loaded.config.frame_prefix_token_ids == model.config.frame_prefix_token_ids
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}


def test_auto_classes(saved_model):
    _, directory = saved_model
    assert isinstance(AutoConfig.from_pretrained(directory), CremaConfig)
    assert isinstance(AutoModel.from_pretrained(directory), CremaForConditionalGeneration)
    assert isinstance(AutoModelForImageTextToText.from_pretrained(directory), CremaForConditionalGeneration)


def test_save_base_only(tmp_path):
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    model.save_pretrained(tmp_path / "base", save_adapters=False)
    assert not (tmp_path / "base" / "adapters").exists()
    base = CremaForConditionalGeneration.from_pretrained(tmp_path / "base")
    assert base.config.modality_names == [] and base.fusion is None
    assert model.config.modality_names == ["video", "depth"]  # the saving model is untouched


def test_trust_remote_code_in_clean_virtualenv(saved_model, tmp_path, tokenizer):
    """A virtualenv that sees torch/transformers/peft but not this package loads the model from its folder alone."""
    model, directory = saved_model
    python = python_without_crema(tmp_path)
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    torch.save(dict(batch), tmp_path / "batch.pt")
    torch.save(model(**batch).logits, tmp_path / "expected.pt")
    script = IMPORT_GUARD + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "CremaForConditionalGeneration"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        assert torch.equal(model(**batch).logits, expected)
        print("REMOTE-CODE-OK")
        """
    )
    result = run_isolated(python, script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-CODE-OK" in result.stdout


def test_model_and_processor_from_one_folder_with_remote_code(tmp_path, tokenizer, video_with_audio):
    """What a Hub user does: AutoProcessor + AutoModel from one repo, a video file in, an answer out."""
    from crema_processing import CremaProcessor

    model = tiny_crema_model(["video", "flow"], fusion=["video", "flow"])
    randomize_lora_b(model)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    directory = tmp_path / "crema-repo"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    question = {"videos": str(video_with_audio), "question": "What is the person doing?",
                "options": ["cooking", "dancing", "reading"], "flow": True}
    expected = model(**processor(**question)).logits
    torch.save(expected, tmp_path / "expected.pt")

    script = IMPORT_GUARD + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel, AutoProcessor
        processor = AutoProcessor.from_pretrained({str(directory)!r}, trust_remote_code=True)
        model = AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        inputs = processor(**{question!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        torch.testing.assert_close(model(**inputs).logits, expected)
        answer = processor.decode_answers(model.generate(**inputs, max_new_tokens=3), options=[{question["options"]!r}])
        print("ANSWER", answer)
        """
    )
    result = run_isolated(python_without_crema(tmp_path), script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ANSWER [" in result.stdout


