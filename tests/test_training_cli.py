"""`crema train CONFIG.yaml [--key value ...]` (TrlParser: YAML + command-line overrides) and the paper configs."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel

from crema_training.train_cli import main, parse_arguments
from test_training_trainer import build_dataset, build_model

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_run(tmp_path, tokenizer, **config):
    """A saved tiny CREMA (with its tokenizer), a saved dataset and a YAML config."""
    model = build_model(tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    build_dataset(model, tokenizer).with_format(None).save_to_disk(str(tmp_path / "data"))
    values = dict(
        model_name_or_path=str(tmp_path / "model"), train_dataset=str(tmp_path / "data"),
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_train_epochs=3, learning_rate=2.0e-4,
        warmup_steps=1, early_exit_tau=1.4, early_exit_start_epoch=1, use_cpu=True, logging_steps=1,
        report_to=["tensorboard"], save_strategy="epoch", llm_dropout=True, random_resized_crop=True,
        modalities=["depth", "video"],
    )
    values.update(config)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_train_from_a_yaml_config_with_overrides(tmp_path, tokenizer, capsys):
    config = write_run(tmp_path, tokenizer)
    _, _, args = parse_arguments([str(config), "--learning_rate", "0.01", "--early_exit_tau", "1.8"])
    assert args.learning_rate == 0.01 and args.early_exit_tau == 1.8  # command line over YAML
    assert args.modalities == ["depth", "video"] and args.num_train_epochs == 3 and args.warmup_steps == 1  # YAML

    # trains from cached frozen features (the frozen ViT runs once per clip, before training)
    assert main([str(config), "--learning_rate", "0.01", "--num_train_epochs", "2", "--cache_features", "true"]) == 0
    out = tmp_path / "out"
    trained = AutoModel.from_pretrained(out, trust_remote_code=True)  # the save_pretrained folder, with the adapters
    assert trained.config.modality_names == ["video", "depth"] and trained.fusion is not None
    assert (out / "adapters" / "video" / "adapter_model.safetensors").is_file()
    state = json.loads((out / "early_exit.json").read_text())
    assert state["modalities"] == ["depth", "video"] and len(state["history"]["video"]) == 2
    assert (out / "early_exit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert glob.glob(str(out / "**" / "events.out.tfevents.*"), recursive=True)  # TensorBoard through report_to
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    trainer_state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [entry["learning_rate"] for entry in trainer_state["log_history"] if "learning_rate" in entry][:2] == \
        pytest.approx([1e-8, 0.01])  # the override reached the optimiser (warm-up 1 step from 1e-8)


def test_bad_configs_are_one_clear_error(tmp_path, tokenizer, capsys):
    config = write_run(tmp_path, tokenizer, modalities=["video", "audio"])
    assert main([str(config)]) == 2
    assert "['audio'], which this model has no adapter" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("checkpoint-*"))

    assert main([str(config), "--modalities", "video", "depth", "--early_exit_tau", "0"]) == 2
    assert "must be > 0" in capsys.readouterr().err

    config.write_text(config.read_text() + "no_such_option: 3\n")
    assert main([str(config)]) == 2
    assert "no_such_option" in capsys.readouterr().err

    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


# The paper's hyper-parameters (paper Table 10, DESIGN §2): lr, epochs, batch per GPU, accumulation, warm-up, τ, order.
PAPER = {
    "music_avqa.yaml": dict(learning_rate=2e-4, num_train_epochs=20, per_device_train_batch_size=16,
                            gradient_accumulation_steps=1, warmup_steps=1000, early_exit=True, early_exit_tau=1.4,
                            min_lr=0.0, modalities=["video", "audio", "flow", "depth", "normal"]),
    "sqa3d.yaml": dict(learning_rate=2e-4, num_train_epochs=20, per_device_train_batch_size=16,
                       gradient_accumulation_steps=1, warmup_steps=1000, early_exit=True, early_exit_tau=1.8,
                       min_lr=1e-5, modalities=["video", "point_cloud", "depth", "normal"]),
    "nextqa.yaml": dict(learning_rate=1e-4, num_train_epochs=10, per_device_train_batch_size=8,
                        gradient_accumulation_steps=2, warmup_steps=1000, early_exit=False,
                        modalities=["video", "flow", "depth", "normal"]),
    # Not in Table 10: the closest benchmark's settings (each file says which)
    "perception_test.yaml": dict(learning_rate=1e-4, num_train_epochs=10, per_device_train_batch_size=16,
                                 gradient_accumulation_steps=1, warmup_steps=1000, early_exit=False,
                                 modalities=["video", "flow"]),
    "vggsound.yaml": dict(learning_rate=2e-4, num_train_epochs=20, per_device_train_batch_size=24,
                          gradient_accumulation_steps=1, warmup_steps=1000, early_exit=True, early_exit_tau=1.4,
                          modalities=["video", "audio"]),
    "touchqa.yaml": dict(learning_rate=1e-4, num_train_epochs=10, per_device_train_batch_size=16,
                         gradient_accumulation_steps=1, warmup_steps=1000, early_exit=False,
                         modalities=["video", "touch", "normal"]),
    "thermalqa.yaml": dict(learning_rate=1e-4, num_train_epochs=10, per_device_train_batch_size=16,
                           gradient_accumulation_steps=1, warmup_steps=1000, early_exit=False,
                           modalities=["video", "thermal", "depth"]),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_hold_the_reference_hyper_parameters(name):
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(PAPER)
    _, _, args = parse_arguments([str(CONFIGS / name), "--fp16", "false", "--output_dir", "unused"])
    for key, value in PAPER[name].items():
        assert getattr(args, key) == value, key
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2, args.seed) == (0.05, 0.9, 0.999, 42)
    assert args.lr_schedule == "reference" and args.warmup_start_lr == 1e-8 and args.max_grad_norm == 0.0
    assert args.modality_schedule == "sequential" and args.llm_dropout and args.random_resized_crop
    assert yaml.safe_load((CONFIGS / name).read_text())["fp16"] is True  # the reference's fp16 autocast


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = CONFIGS.parent / "accelerate_configs"
    kinds = {path.name: str(load_config_from_file(str(path)).distributed_type) for path in folder.glob("*.yaml")}
    assert kinds == {"multi_gpu.yaml": "DistributedType.MULTI_GPU", "single_gpu_bf16.yaml": "DistributedType.NO",
                     "fsdp_frozen_backbone.yaml": "DistributedType.FSDP",
                     "deepspeed_zero2.yaml": "DistributedType.DEEPSPEED"}
