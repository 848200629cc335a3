"""`crema train` on rows of the benchmark schema (question, options, answer, media paths): each row becomes the
model's inputs as the processor makes them, when the DataLoader reads it, or once into cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from crema_processing import CremaProcessor
from crema_training.benchmark_datasets import build_benchmark
from crema_training.schema_inputs import TrainingExamples, plan_inputs
from crema_training.train_cli import main
from media_fixtures import frame_with_index, write_video
from tiny_models import tiny_crema_model, tiny_tokenizer

NEXTQA_CSV = Path(__file__).parent / "fixtures" / "benchmarks" / "nextqa" / "val.csv"
CLIPS = ["1025/4010069381", "1025/4882821564", "0031/2834146886", "0031/6329077812"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny CREMA with video and flow adapters (flow derived from the clip) and its processor, and the
    NExT-QA fixture as a saved benchmark dataset over 16-frame clips whose frames encode their index."""
    root = tmp_path_factory.mktemp("benchmark-rows")
    for offset, relative in enumerate(CLIPS):
        (root / "videos" / relative).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / "videos" / f"{relative}.mp4", [frame_with_index(k + offset) for k in range(16)])
    rows = build_benchmark("nextqa", NEXTQA_CSV, media_root=root / "videos")
    rows.save_to_disk(str(root / "data"))
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "flow"], fusion=["video", "flow"], tokenizer=tokenizer)
    model.save_pretrained(root / "model")
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(root / "model")
    return root, rows, model


def _examples(saved, training):
    root, rows, model = saved
    processor = CremaProcessor.from_pretrained(root / "model")
    return TrainingExamples(rows, processor, plan_inputs(model, processor, rows), training=training, seed=3), processor


def test_an_example_is_what_the_processor_makes_of_its_row(saved):
    _, rows, _ = saved
    examples, processor = _examples(saved, training=False)
    assert len(examples) == 4 and examples.question_types == ["CH", "CW", "TN", "TP"]
    for index in range(len(rows)):
        row = rows[index]
        expected = processor(videos=[row["video"]], flow=True, question=[row["question"]], options=[row["options"]],
                             answer=[row["answer_index"]], prompt_preset=row["prompt_preset"], return_tensors="pt")
        example = examples[index]
        assert torch.equal(example["input_ids"], expected["input_ids"][0])
        assert torch.equal(example["labels"], expected["labels"][0])
        for key in ("video_pixel_values", "flow_pixel_values"):
            assert torch.equal(example[key], expected[key][0])
        assert example["question_type"] == row["question_type"]
        target = processor.tokenizer.decode(example["labels"], skip_special_tokens=True)
        assert target == f"Option {'ABCDE'[row['answer_index']]}"  # the answer, as the letter of its option


def _frame_levels(example):
    """The mean level of each sampled frame (the clips' frames differ by grey level)."""
    return example["video_pixel_values"].mean(dim=(1, 2, 3))


def test_training_draws_new_frames_each_epoch_and_the_same_ones_when_repeated(saved):
    examples, _ = _examples(saved, training=True)
    first = [_frame_levels(examples[i]) for i in range(4)]
    assert all(torch.equal(a, _frame_levels(examples[i])) for i, a in enumerate(first))  # a resumed run: the same
    examples.set_epoch(1)
    second = [_frame_levels(examples[i]) for i in range(4)]
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    fixed, _ = _examples(saved, training=False)  # evaluation: each segment's middle frame, whatever the epoch
    middle = _frame_levels(fixed[0])
    fixed.set_epoch(5)
    assert torch.equal(middle, _frame_levels(fixed[0]))
    assert not torch.equal(middle, first[0]) or not torch.equal(middle, second[0])


def _config(root, tmp_path, **values):
    config = dict(
        model_name_or_path=str(root / "model"), train_dataset=str(root / "data"), eval_dataset=str(root / "data"),
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, per_device_eval_batch_size=2,
        num_train_epochs=2, learning_rate=1e-3, warmup_steps=1, use_cpu=True, report_to=[], save_strategy="no",
        generation_num_beams=1, generation_max_new_tokens=3, disable_tqdm=True,
    )
    config.update(values)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _trained_lora(folder, modality):
    return {k: v for k, v in load_file(folder / "adapters" / modality / "adapter_model.safetensors").items()
            if "lora_B" in k}


@pytest.mark.parametrize("cache_features", [False, True])
def test_crema_train_reads_benchmark_rows(saved, tmp_path, cache_features, monkeypatch):
    root, _, model = saved
    epochs = []
    monkeypatch.setattr(TrainingExamples, "set_epoch", lambda self, epoch: epochs.append(epoch))
    assert main([str(_config(root, tmp_path)), "--cache_features", str(cache_features).lower()]) == 0
    assert sorted(set(epochs)) == ([] if cache_features else [0, 1])  # each epoch draws its own frames
    out = tmp_path / "out"
    for modality in ("video", "flow"):
        trained = _trained_lora(out, modality)
        assert trained and any(v.abs().sum() > 0 for v in trained.values())  # LoRA B starts at zero: it trained
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_accuracy_CH", "eval_accuracy_CW", "eval_accuracy_TN", "eval_accuracy_TP"} <= set(
        metrics)
    assert np.isfinite(json.loads((out / "train_results.json").read_text())["train_loss"])


def test_benchmark_rows_the_model_cannot_read_are_one_clear_error(saved, tmp_path, capsys):
    root, _, _ = saved
    tokenizer = tiny_tokenizer()
    thermal = tiny_crema_model(["video", "thermal"], tokenizer=tokenizer)
    thermal.save_pretrained(tmp_path / "thermal")
    CremaProcessor.from_model_config(thermal.config, tokenizer).save_pretrained(tmp_path / "thermal")
    assert main([str(_config(root, tmp_path, model_name_or_path=str(tmp_path / "thermal")))]) == 2
    error = capsys.readouterr().err
    assert "'thermal' adapter but the dataset has no 'thermal'" in error and "--root thermal=DIR" in error

    bare = tiny_crema_model(["video"], tokenizer=tokenizer)  # a folder with the tokenizer but no processor
    bare.save_pretrained(tmp_path / "bare")
    tokenizer.save_pretrained(tmp_path / "bare")
    assert main([str(_config(root, tmp_path, model_name_or_path=str(tmp_path / "bare")))]) == 2
    assert "processor makes 4 frames of 224x224 px, but the model reads 3 frames of 32x32 px" in capsys.readouterr().err


def test_each_epoch_reaches_the_dataset_on_every_rank():
    """accelerate forwards the epoch to the dataset in a single process only; the trainer's callback does it
    everywhere, before the DataLoader's workers copy the dataset (state.epoch is fractional after a mid-epoch
    resume)."""
    from transformers import TrainerControl, TrainerState

    from crema_training.callbacks import DatasetEpochCallback

    seen = []

    class Rows:
        def set_epoch(self, epoch):
            seen.append(epoch)

    callback = DatasetEpochCallback(Rows())
    for epoch in (0.0, 1.0, 2.5):
        callback.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl())
    assert seen == [0, 1, 2]


def test_open_ended_rows_train_on_their_answer_text_with_the_benchmarks_normalisation(tmp_path):
    """MUSIC-AVQA: audio from the clips' own tracks, and the label is the answer as the benchmark's preset writes
    it (`_` read as a space), under the preset's prompt."""
    from media_fixtures import indexed_video

    for video_id in ("00006835", "00007108"):
        indexed_video(tmp_path / f"{video_id}.mp4", 6, audio=True)
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "audio"], tokenizer=tokenizer, with_audio_encoder=True)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    rows = build_benchmark("music_avqa", NEXTQA_CSV.parents[1] / "music_avqa" / "avqa-test.json", media_root=tmp_path)
    examples = TrainingExamples(rows, processor, plan_inputs(model, processor, rows), training=False)
    for index in range(len(rows)):
        row, example = rows[index], examples[index]
        expected = tokenizer(row["answer"].replace("_", " ")).input_ids  # DESIGN §3: MUSIC-AVQA's `_` is a space
        assert example["labels"].tolist() == expected
        assert example["audio_input_values"].shape[0] == model.config.num_audio_segments
    assert any("_" in answer for answer in rows["answer"])  # the fixture exercises the normalisation
