"""One modality = one PEFT adapter: plain PEFT folders, bit-exact round trips, hot swap, gradient isolation."""

import json

import pytest
import torch
from peft import LoraConfig
from safetensors import safe_open

from modeling_crema.adapters import ADAPTER_WEIGHTS_NAME, adapter_state_dict
from tiny_models import modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model


def _adapter_tensors(model, name):
    return adapter_state_dict(model, name)


def test_saved_adapter_is_a_plain_peft_folder(tmp_path):
    model = tiny_crema_model(["video", "thermal"])
    model.save_adapter(tmp_path / "thermal", "thermal")
    assert sorted(p.name for p in (tmp_path / "thermal").iterdir()) == ["README.md", "adapter_config.json", ADAPTER_WEIGHTS_NAME]
    config = LoraConfig.from_pretrained(tmp_path / "thermal")
    assert config.r == 4 and config.lora_alpha == 4 and config.modules_to_save == ["mmqa.thermal"]
    assert config.target_modules == r"qformer\.encoder\.layer\.\d+\.attention\.attention\.(query|value)"
    with safe_open(str(tmp_path / "thermal" / ADAPTER_WEIGHTS_NAME), "pt") as handle:
        keys = set(handle.keys())
        spec = json.loads(handle.metadata()["crema_modality"])
    assert spec["name"] == "thermal" and spec["encoder"] == "vision"
    assert all(key.startswith("base_model.model.") for key in keys)
    # LoRA on self-attention query/value of both Q-Former layers, A and B, plus the MMQA module
    assert sum(".lora_A." in key or ".lora_B." in key for key in keys) == 2 * 2 * 2
    assert "base_model.model.mmqa.thermal.query_tokens.weight" in keys
    assert "base_model.model.mmqa.thermal.language_projection.weight" in keys
    assert not any("video" in key for key in keys)


def test_adapter_round_trip_is_bit_exact(tmp_path, tokenizer):
    source = tiny_crema_model(["video", "depth"], seed=0)
    randomize_lora_b(source)
    with torch.no_grad():
        for p in source.mmqa.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    for name in ("video", "depth"):
        source.save_adapter(tmp_path / name, name)

    target = tiny_crema_model(["video"], seed=0)  # same backbone, different adapters
    target.remove_modality("video")
    for name in ("video", "depth"):
        assert target.load_adapter(tmp_path / name) == name
    for name in ("video", "depth"):
        saved, loaded = _adapter_tensors(source, name), _adapter_tensors(target, name)
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    batch = {**modality_inputs(source.config), **text_inputs(tokenizer)}
    assert torch.equal(source(**batch).logits, target(**batch).logits)


def test_hot_swap_without_reloading_the_base(tmp_path, tokenizer):
    model = tiny_crema_model(["video", "depth"])
    randomize_lora_b(model, seed=3, modalities=["depth"])
    model.save_adapter(tmp_path / "depth_a", "depth")
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    logits_a = model(**batch).logits
    backbone = model.vision_model.embeddings.patch_embedding.weight

    randomize_lora_b(model, seed=4, modalities=["depth"])
    model.save_adapter(tmp_path / "depth_b", "depth")
    logits_b = model(**batch).logits
    assert not torch.allclose(logits_a, logits_b)

    model.load_adapter(tmp_path / "depth_a", adapter_name="depth")
    assert torch.equal(model(**batch).logits, logits_a)
    model.load_adapter(tmp_path / "depth_b", adapter_name="depth")
    assert torch.equal(model(**batch).logits, logits_b)
    assert model.vision_model.embeddings.patch_embedding.weight is backbone
    assert model.config.modality_names == ["video", "depth"]


def test_add_and_remove_modalities():
    model = tiny_crema_model(["video"])
    model.add_modality("thermal")
    assert model.config.modality_names == ["video", "thermal"]
    assert any(".lora_A.thermal." in n for n, _ in model.named_parameters())
    # a new MMQA starts as BLIP-2's queries and projection
    assert torch.equal(model.mmqa["thermal"].modules_to_save["thermal"].query_tokens.weight, model.query_tokens)
    assert not model.mmqa["thermal"].training  # follows the eval-mode model: no LoRA dropout at inference
    model.remove_modality("thermal")
    assert model.config.modality_names == ["video"]
    assert not any("thermal" in n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="already has an adapter"):
        model.add_modality("video")


def test_each_adapter_gets_gradients_only_from_its_own_modality(tokenizer):
    """Joint pass over three modalities == each modality trained alone, adapter by adapter."""
    names = ["video", "flow", "depth"]
    joint = tiny_crema_model(names, seed=0)
    randomize_lora_b(joint)
    inputs = modality_inputs(joint.config)
    weights = {"video": 1.0, "flow": -2.0, "depth": 0.5}
    loss = sum(weights[n] * joint.encode_modality(n, **inputs).pow(2).mean() for n in names)
    loss.backward()
    joint_grads = {n: p.grad.clone() for n, p in joint.named_parameters() if p.requires_grad}

    for name in names:
        alone = tiny_crema_model(names, seed=0)
        randomize_lora_b(alone)
        (weights[name] * alone.encode_modality(name, **inputs).pow(2).mean()).backward()
        for parameter_name, parameter in alone.named_parameters():
            if not parameter.requires_grad:
                continue
            owned = f".{name}." in parameter_name
            if owned:
                assert torch.allclose(parameter.grad, joint_grads[parameter_name], atol=1e-6), parameter_name
            else:  # another modality's adapter sees nothing from this modality's pass
                assert parameter.grad is None or not parameter.grad.any(), parameter_name


def test_adapter_for_another_backbone_width_is_refused(tmp_path):
    wide = tiny_crema_model(["video"], text_config={"model_type": "t5", "d_model": 48, "d_kv": 8, "d_ff": 64,
                                                    "num_layers": 1, "num_heads": 4, "vocab_size": 128})
    wide.save_adapter(tmp_path / "video", "video")
    model = tiny_crema_model(["video"])
    before = _adapter_tensors(model, "video")
    with pytest.raises(ValueError, match=r"video: Adapter for modality 'video' does not fit this model: it was saved for a different backbone width"):
        model.load_adapter(tmp_path / "video")
    after = _adapter_tensors(model, "video")  # the adapter that was there survives a failed swap
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_adapter_folder_error(tmp_path):
    model = tiny_crema_model(["video"])
    with pytest.raises(ValueError, match=r"No modality adapter at .*nothing_here.*no such folder"):
        model.load_adapter(tmp_path / "nothing_here")


class FakeHfApi:
    """Records what would be sent to the Hub."""

    calls: dict = {}

    def __init__(self, token=None):
        FakeHfApi.calls["token"] = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeHfApi.calls["repo"] = (repo_id, private, exist_ok)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message, create_pr=False):
        import pathlib

        root = pathlib.Path(folder_path)
        FakeHfApi.calls["files"] = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        FakeHfApi.calls["message"] = commit_message
        return f"https://huggingface.co/{repo_id}/commit/1"


def test_push_adapter_to_hub_uploads_one_adapter_folder(monkeypatch):
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHfApi)
    model = tiny_crema_model(["video", "thermal"])
    url = model.push_adapter_to_hub("user/crema-thermal", "thermal", token="t")
    assert url.endswith("/commit/1")
    assert FakeHfApi.calls["repo"] == ("user/crema-thermal", None, True) and FakeHfApi.calls["token"] == "t"
    assert FakeHfApi.calls["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "thermal" in FakeHfApi.calls["message"]


def test_save_pretrained_push_to_hub_uploads_adapters_too(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHfApi)
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    model.save_pretrained(tmp_path / "crema-tiny", push_to_hub=True, repo_id="user/crema-tiny")
    assert FakeHfApi.calls["repo"][0] == "user/crema-tiny"
    files = FakeHfApi.calls["files"]
    assert {"config.json", "model.safetensors", "modeling_crema.py", "fusion/fusion.safetensors",
            "adapters/depth/adapter_model.safetensors", "adapters/video/adapter_config.json"} <= set(files)


def test_interrupted_adapter_save_keeps_previous_folder(tmp_path, monkeypatch):
    model = tiny_crema_model(["video"])
    model.save_adapter(tmp_path / "video", "video")
    before = (tmp_path / "video" / ADAPTER_WEIGHTS_NAME).read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr("modeling_crema.adapters.save_file", explode)
    randomize_lora_b(model)
    with pytest.raises(KeyboardInterrupt):
        model.save_adapter(tmp_path / "video", "video")
    assert (tmp_path / "video" / ADAPTER_WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video"]


def test_plain_peft_loads_a_saved_adapter(tmp_path):
    """`PeftModel.from_pretrained` (no crema code involved in loading) restores the same tensors."""
    from peft import PeftModel

    source = tiny_crema_model(["video", "thermal"])
    randomize_lora_b(source)
    source.save_adapter(tmp_path / "thermal", "thermal")

    base = tiny_crema_model([])
    base.mmqa["thermal"] = base._new_query_adapter(feature_size=48)  # the module PEFT's modules_to_save wraps
    loaded = PeftModel.from_pretrained(base, tmp_path / "thermal", adapter_name="thermal").base_model.model
    saved = _adapter_tensors(source, "thermal")
    layer = loaded.qformer.encoder.layer[1].attention.attention.value
    assert torch.equal(layer.lora_B["thermal"].weight,
                       saved["base_model.model.qformer.encoder.layer.1.attention.attention.value.lora_B.weight"])
    restored = loaded.mmqa["thermal"].modules_to_save["thermal"]
    assert torch.equal(restored.language_projection.weight,
                       saved["base_model.model.mmqa.thermal.language_projection.weight"])


def test_swapping_the_major_modality_keeps_its_place(tmp_path, tokenizer):
    model = tiny_crema_model(["video", "depth"])  # no fusion: the first modality is the major one
    model.save_adapter(tmp_path / "video", "video")
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    before = model(**batch).logits
    model.load_adapter(tmp_path / "video")
    assert model.config.modality_names == ["video", "depth"]
    assert torch.equal(model(**batch).logits, before)


def test_load_an_adapter_under_another_name(tmp_path):
    source = tiny_crema_model(["video", "thermal"])
    randomize_lora_b(source)
    source.save_adapter(tmp_path / "thermal", "thermal")
    model = tiny_crema_model(["video"])
    assert model.load_adapter(tmp_path / "thermal", adapter_name="thermal_v2") == "thermal_v2"
    saved, loaded = _adapter_tensors(source, "thermal"), _adapter_tensors(model, "thermal_v2")
    renamed = {key.replace(".mmqa.thermal.", ".mmqa.thermal_v2."): value for key, value in saved.items()}
    assert renamed.keys() == loaded.keys() and all(torch.equal(renamed[k], loaded[k]) for k in renamed)


def test_load_adapter_by_hub_id_from_the_local_hub_cache(tmp_path):
    """A Hub id resolves through the Hub cache (here filled by hand, offline) exactly like a download would."""
    source = tiny_crema_model(["video", "thermal"])
    randomize_lora_b(source)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--user--crema-thermal"
    source.save_adapter(repo / "snapshots" / commit, "thermal")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)

    model = tiny_crema_model(["video"])
    name = model.load_adapter("user/crema-thermal", cache_dir=str(tmp_path / "cache"), local_files_only=True)
    assert name == "thermal"
    saved, loaded = _adapter_tensors(source, "thermal"), _adapter_tensors(model, "thermal")
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
