"""CremaTrainer: modality-sequential and joint updates, the adaptive early exit, the reference's optimiser and
schedule, checkpoints and exact resume, cached features, evaluation, and bad input refused before any step."""

from __future__ import annotations

import math
import os

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel, TrainerCallback

from crema_processing.feature_cache import cache_frozen_features
from crema_training.arguments import CremaTrainingArguments
from crema_training.data_collator import CremaTrainingCollator, random_resized_crop
from crema_training.early_exit import ModalityEarlyExit
from crema_training.trainer import (
    CHECKPOINT_MARKER,
    AnswerAccuracy,
    CremaTrainer,
    ReferenceLRSchedule,
    last_complete_checkpoint,
)
from modeling_crema.adapters import adapter_state_dict
from tiny_models import modality_inputs, randomize_lora_b, tiny_crema_model, without_dropout


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ helpers
def build_model(modalities=("video", "depth"), fusion=True, seed=0, tokenizer=None):
    model = tiny_crema_model(list(modalities), fusion=list(modalities) if fusion else None, seed=seed,
                             tokenizer=tokenizer)
    randomize_lora_b(model, seed=seed + 1)  # non-zero LoRA B: every LoRA A gets a gradient too
    return model


def build_dataset(model, tokenizer, size=4, seed=0, answers=("blue", "red"), types=("color", "count"), seeds=None):
    """Rows of processor-like inputs: prompt ids, answer labels, per-modality pixels/features, a question type.
    `seeds` overrides the data seed of some modalities."""
    rows = {"input_ids": [], "labels": [], "question_type": []}
    for index in range(size):
        for position, name in enumerate(model.config.modality_names):
            modality_seed = (seeds or {}).get(name, seed)
            inputs = modality_inputs(model.config, batch=1, seed=modality_seed * 1000 + 100 * position + index,
                                     names=[name])
            for key, value in inputs.items():
                rows.setdefault(key, []).append(value[0].numpy())
        rows["input_ids"].append(tokenizer("Question: red or blue?").input_ids)
        rows["labels"].append(tokenizer(answers[index % len(answers)]).input_ids)
        rows["question_type"].append(types[index % len(types)])
    return datasets.Dataset.from_dict(rows).with_format("torch")


def training_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        num_train_epochs=1,
        learning_rate=1e-2,
        lr_schedule="trainer",
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        llm_dropout=False,
        random_resized_crop=False,
        train_sampling_strategy="sequential",
        generation_num_beams=1,
        generation_max_new_tokens=3,
    )
    values.update(overrides)
    return CremaTrainingArguments(**values)


def trainable_snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def owner(name):
    """Which adapter ('video', ...) or 'fusion' a trainable parameter belongs to (read from its name)."""
    if name.startswith("fusion."):
        return "fusion"
    parts = name.split(".")
    if parts[0] == "mmqa":
        return parts[1]
    return parts[parts.index(next(p for p in parts if p in ("lora_A", "lora_B"))) + 1]


def all_adapter_tensors(model):
    tensors = {f"{m}:{k}": v.clone() for m in model.config.modality_names for k, v in adapter_state_dict(model, m).items()}
    if model.fusion is not None:
        tensors.update({f"fusion:{k}": v.detach().clone() for k, v in model.fusion.state_dict().items()})
    return tensors


class SubStepRecorder(TrainerCallback):
    """Snapshots the trainable tensors around every optimiser step, with the modality of the sub-step."""

    def __init__(self, trainer):
        self.trainer, self.steps, self._before = trainer, [], None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.model
        self._before = trainable_snapshot(model)
        self._with_grad = {n for n, p in model.named_parameters() if p.grad is not None}

    def on_optimizer_step(self, args, state, control, **kwargs):
        after = trainable_snapshot(self.trainer.model)
        changed = {name for name in after if not torch.equal(after[name], self._before[name])}
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        self.steps.append((self.trainer.current_modality, changed, self._with_grad, state.global_step, lr))


# ------------------------------------------------------------------------------------------------ schedules
def test_sequential_substeps_touch_only_the_current_adapter_and_the_fusion(tmp_path, tokenizer):
    model = build_model(("video", "depth", "flow"), tokenizer=tokenizer)
    order = ["flow", "video", "depth"]  # the configured order, not the model's
    args = training_args(tmp_path, modalities=order, max_steps=2)
    trainer = CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer))
    recorder = SubStepRecorder(trainer)
    trainer.add_callback(recorder)
    names = set(trainable_snapshot(model))
    trainer.train()

    assert [step[0] for step in recorder.steps] == order * 2
    for modality, changed, with_grad, global_step, _ in recorder.steps:
        expected = {name for name in names if owner(name) in (modality, "fusion")}
        assert changed == expected, f"sub-step {modality}: changed {sorted(changed ^ expected)[:4]}"
        assert with_grad == expected  # the other adapters have no gradient at all (not a zero one)
    # One LR-scheduler step per minibatch: the three sub-steps of a minibatch share its global step.
    assert [step[3] for step in recorder.steps] == [0, 0, 0, 1, 1, 1]
    assert trainer.lr_scheduler.last_epoch == 2 and trainer.state.global_step == 2


def test_joint_schedule_updates_every_adapter_and_the_fusion_at_once(tmp_path, tokenizer):
    model = build_model(("video", "depth", "flow"), tokenizer=tokenizer)
    args = training_args(tmp_path, modality_schedule="joint", max_steps=2)
    trainer = CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer))
    recorder = SubStepRecorder(trainer)
    trainer.add_callback(recorder)
    names = set(trainable_snapshot(model))
    trainer.train()
    assert len(recorder.steps) == 2
    for modality, changed, _, _, _ in recorder.steps:
        assert modality is None and changed == names


def test_sequential_with_gradient_accumulation_equals_the_larger_batch(tmp_path, tokenizer):
    """Each modality accumulates over all micro-batches of the step before its sub-step (equal-length answers, so
    the mean over two micro-batches is the mean over the batch of two)."""
    results = []
    for batch, accumulation in ((2, 1), (1, 2)):
        model = without_dropout(build_model(tokenizer=tokenizer))
        dataset = build_dataset(model, tokenizer, answers=("blue", "red"))
        args = training_args(tmp_path / f"ga{accumulation}", per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=2)
        trainer = CremaTrainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
        results.append(all_adapter_tensors(model))
    start = all_adapter_tensors(build_model(tokenizer=tokenizer))
    assert any(not torch.equal(start[key], results[0][key]) for key in start)
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-6)


def test_reused_mmqa_outputs_give_the_updates_of_recomputing_them_with_fewer_qformer_passes(tmp_path, tokenizer):
    """With dropout off, reusing each modality's MMQA output until its adapter moves changes nothing but the number
    of Q-Former passes: per minibatch M with gradients plus 2 (M - 1) without (each other modality once before the
    first sub-step, then each updated one once more), against M x M recomputing them."""
    modalities, steps = ("video", "depth", "flow"), 2
    results, passes = {}, {}
    for reuse in (False, True):
        model = without_dropout(build_model(modalities, tokenizer=tokenizer))
        calls = []
        model.qformer.register_forward_hook(lambda *_: calls.append(1))
        args = training_args(tmp_path / f"reuse{reuse}", max_steps=steps, reuse_modality_embeddings=reuse)
        CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer)).train()
        results[reuse], passes[reuse] = all_adapter_tensors(model), len(calls)
    count = len(modalities)
    assert passes == {False: steps * count * count, True: steps * (count + 2 * (count - 1))}
    start = all_adapter_tensors(build_model(modalities, tokenizer=tokenizer))
    assert all(not torch.equal(start[key], results[True][key]) for key in start if key.startswith("fusion:"))
    for key in results[False]:
        torch.testing.assert_close(results[True][key], results[False][key], rtol=0, atol=1e-7)


def test_without_qformer_dropout_reused_mmqa_outputs_are_exact(tmp_path, tokenizer):
    """`qformer_dropout=False` runs the frozen Q-Former (and its LoRA) in eval mode while training, so reusing the
    MMQA outputs gives the adapters of recomputing them; with its dropout on (the default) they differ, as each
    reused output keeps the dropout of its first pass."""
    modalities = ("video", "depth", "flow")
    for dropout in (False, True):
        results = {}
        for reuse in (False, True):
            model = build_model(modalities, tokenizer=tokenizer)
            args = training_args(tmp_path / f"{dropout}{reuse}", max_steps=2, reuse_modality_embeddings=reuse,
                                 qformer_dropout=dropout)
            CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer)).train()
            results[reuse] = all_adapter_tensors(model)
        same = all(torch.allclose(results[True][key], results[False][key], rtol=0, atol=1e-7) for key in results[False])
        assert same is not dropout


def test_qformer_dropout_option_sets_the_qformer_mode_while_training(tmp_path, tokenizer):
    for enabled in (True, False):
        model = build_model(tokenizer=tokenizer)
        seen = []
        model.qformer.register_forward_hook(lambda module, args, output: seen.append(module.training))
        for schedule in ("sequential", "joint"):
            args = training_args(tmp_path / schedule, qformer_dropout=enabled, max_steps=1, modality_schedule=schedule)
            CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer)).train()
        assert seen and set(seen) == {enabled}
        assert model.qformer.training == model.training  # the model's own mode again afterwards


def test_llm_dropout_option_sets_the_frozen_llm_mode_while_training(tmp_path, tokenizer):
    for enabled in (True, False):
        model = build_model(tokenizer=tokenizer)
        seen = []
        model.language_model.register_forward_hook(lambda module, args, output: seen.append(module.training))
        trainer = CremaTrainer(model=model, args=training_args(tmp_path, llm_dropout=enabled, max_steps=1),
                               train_dataset=build_dataset(model, tokenizer))
        trainer.train()
        assert seen and set(seen) == {enabled}
        assert not model.language_model.training  # back to the model's own invariant afterwards


# ------------------------------------------------------------------------------------------------ early exit
def test_early_exit_rule_on_a_constructed_gradient_history():
    """ḡ[j] > τ · mean(ḡ[0..j-1]) from the start epoch on; earlier spikes never exit but count in the mean."""
    exit_ = ModalityEarlyExit(["video", "audio", "depth"], tau=1.4, start_epoch=5)
    history = {
        # epochs 0-4 average 1.0, epoch 5 at 1.41 > 1.4 * 1.0: exits after epoch 5
        "video": [1.0, 1.0, 1.0, 1.0, 1.0, 1.41, 1.0],
        # epoch 5 at 1.39 < 1.4: stays; epoch 6 at 1.5 > 1.4 * mean(1,1,1,1,1,1.39) = 1.4 * 1.065: exits after 6
        "audio": [1.0, 1.0, 1.0, 1.0, 1.0, 1.39, 1.5],
        # a spike at epoch 2 (before the start epoch) never exits; the mean of all earlier epochs includes it:
        # epoch 5 at 2.0 < 1.4 * mean(1, 1, 5, 1, 1) = 1.4 * 1.8 = 2.52, epoch 6 at 3.0 > 1.4 * 1.833 = 2.567
        "depth": [1.0, 1.0, 5.0, 1.0, 1.0, 2.0, 3.0],
    }
    for epoch in range(7):
        for name, values in history.items():
            if name in exit_.active_modalities():
                # two measurements per epoch whose average is the listed value (the whole epoch counts)
                exit_.record(name, values[epoch] - 0.5)
                exit_.record(name, values[epoch] + 0.5)
        exit_.close_epoch()
    assert exit_.exited == {"video": 5, "audio": 6, "depth": 6}
    assert exit_.indicators["video"][5] == pytest.approx(1.41 / 1.4)
    assert exit_.indicators["audio"][5] == pytest.approx(1.39 / 1.4)
    assert exit_.indicators["depth"][2] == pytest.approx(5.0 / (1.4 * 1.0))  # above 1, but before epoch 5
    assert exit_.history["video"][6] is None  # an exited modality is no longer measured
    assert exit_.all_exited


def test_early_exit_decision_uses_the_reduced_statistics():
    """With a reduction (sum over ranks) every rank decides from the same global averages."""
    ranks = [ModalityEarlyExit(["video"], tau=1.5, start_epoch=1) for _ in range(2)]
    # per-rank norms of epochs 0 and 1: rank 0 alone would stay (1.0 < 1.5 * 1.0), rank 1 alone would exit
    # (4.0 > 1.5 * 2.0)
    local = [[1.0, 1.0], [2.0, 4.0]]
    for epoch in range(2):
        for rank, exit_ in enumerate(ranks):
            exit_.record("video", local[rank][epoch])
        totals = torch.tensor([[sum(local[r][epoch] for r in range(2)), 2.0]], dtype=torch.float64)
        for exit_ in ranks:
            exit_.close_epoch(reduce=lambda tensor, totals=totals: totals.clone())
    # global averages 1.5 then 2.5 > 1.5 * 1.5: both ranks exit after epoch 1
    assert [exit_.exited["video"] for exit_ in ranks] == [1, 1]


def test_early_exit_through_the_trainer_stops_training(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    args = training_args(tmp_path, num_train_epochs=4, early_exit_tau=1e-6, early_exit_start_epoch=1)
    trainer = CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer))
    trainer.train()
    assert trainer.early_exit.exited == {"video": 1, "depth": 1}
    assert trainer.state.global_step == 2 * 2  # stopped after epoch 1 (2 steps per epoch), not after 4 epochs
    logged = [entry for entry in trainer.state.log_history if "early_exit/video/indicator" in entry]
    assert logged and logged[-1]["early_exit/video/indicator"] > 1


def test_an_exited_modality_stops_changing_but_still_shapes_the_output(tmp_path, tokenizer):
    results = []
    for depth_seed in (0, 7):
        model = build_model(tokenizer=tokenizer)
        dataset = build_dataset(model, tokenizer, seeds={"depth": depth_seed})  # only the exited modality differs
        before = all_adapter_tensors(model)
        trainer = CremaTrainer(model=model, args=training_args(tmp_path, max_steps=2), train_dataset=dataset)
        trainer.early_exit.exited["depth"] = 0  # depth exited after epoch 0
        trainer.train()
        after = all_adapter_tensors(model)
        for key in before:
            if key.startswith("depth:"):
                assert torch.equal(before[key], after[key]), key
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(("video:", "fusion:")))
        results.append(after)
    # the exited modality still runs in the forward pass: its frames change what the others learn
    assert any(not torch.equal(results[0][k], results[1][k]) for k in results[0] if k.startswith("video:"))


# ------------------------------------------------------------------------------------------------ optimiser
def test_reference_learning_rate_schedule():
    schedule = ReferenceLRSchedule(peak_lr=2e-4, warmup_start_lr=1e-8, warmup_steps=4, min_lr=1e-5,
                                   steps_per_epoch=10, num_epochs=4)
    # epoch 0: linear warm-up from 1e-8 over 4 steps, then the peak until the epoch ends
    assert schedule.learning_rate(0) == pytest.approx(1e-8)
    assert schedule.learning_rate(2) == pytest.approx(1e-8 + (2e-4 - 1e-8) / 2)
    assert schedule.learning_rate(4) == schedule.learning_rate(9) == pytest.approx(2e-4)
    # epoch e >= 1: min_lr + (peak - min_lr) (1 + cos(pi e / 4)) / 2, constant within the epoch
    for epoch in (1, 2, 3):
        expected = 1e-5 + (2e-4 - 1e-5) * (1 + math.cos(math.pi * epoch / 4)) / 2
        assert schedule.learning_rate(10 * epoch) == schedule.learning_rate(10 * epoch + 9) == pytest.approx(expected)


def test_optimizer_groups_follow_the_reference(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    args = training_args(tmp_path, lr_schedule="reference", warmup_steps=2, num_train_epochs=2, weight_decay=0.05)
    trainer = CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer))
    recorder = SubStepRecorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    assert set(groups) == {"video", "video/no_decay", "depth", "depth/no_decay", "fusion", "fusion/no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in ("video", "depth", "fusion") for p in groups[g]["params"]}
    not_decayed = {names[id(p)] for g in groups if g.endswith("no_decay") for p in groups[g]["params"]}
    assert groups["video"]["weight_decay"] == 0.05 and groups["video/no_decay"]["weight_decay"] == 0.0
    assert "mmqa.video.modules_to_save.video.query_tokens.weight" in decayed  # query tokens ARE decayed
    assert "fusion.projection.weight" in decayed and "fusion.projection.bias" in not_decayed
    assert "mmqa.video.modules_to_save.video.input_layernorm.weight" in not_decayed
    assert all(".lora_" in n for n in decayed if n.startswith("qformer."))
    # learning rate per optimiser step (2 steps per epoch, 2 epochs, warm-up 2 steps, peak 1e-2)
    lrs = [step[4] for step in recorder.steps if step[0] == "depth"]
    assert lrs == pytest.approx([1e-8, 1e-8 + (1e-2 - 1e-8) / 2, 0.5e-2, 0.5e-2])


# ------------------------------------------------------------------------------------------------ checkpoints
class Interrupt(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt


def resume_args(tmp_path, name):
    return training_args(
        tmp_path, output_dir=str(tmp_path / name), num_train_epochs=3, save_strategy="steps", save_steps=1,
        llm_dropout=True, random_resized_crop=True, train_sampling_strategy="random", early_exit_start_epoch=1,
        lr_schedule="reference", warmup_steps=2,
    )


def test_interrupted_run_resumes_exactly(tmp_path, tokenizer):
    """The reference's LLM dropout and crops, sequential updates, early-exit statistics, the reference LR schedule:
    interrupt after step 3 (mid-epoch 1) and resume; the result equals the uninterrupted run's, bit for bit."""
    model = build_model(tokenizer=tokenizer)
    trainer = CremaTrainer(model=model, args=resume_args(tmp_path, "full"), train_dataset=build_dataset(model, tokenizer))
    trainer.train()
    expected, expected_exit = all_adapter_tensors(model), trainer.early_exit.state_dict()

    model = build_model(tokenizer=tokenizer)
    trainer = CremaTrainer(model=model, args=resume_args(tmp_path, "cut"), train_dataset=build_dataset(model, tokenizer),
                           callbacks=[InterruptAfterSave(3)])
    with pytest.raises(Interrupt):
        trainer.train()
    checkpoint = tmp_path / "cut" / "checkpoint-3"
    assert sorted(os.listdir(checkpoint / "adapters")) == ["depth", "video"]
    assert (checkpoint / "fusion" / "fusion.safetensors").is_file() and (checkpoint / "early_exit.json").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # the frozen backbone is not copied into checkpoints
    assert not any(name.endswith((".bin", ".pt")) for sub in ("adapters/video", "fusion")
                   for name in os.listdir(checkpoint / sub))

    model = build_model(tokenizer=tokenizer)  # same frozen backbone; other adapter values, which the checkpoint replaces
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    trainer = CremaTrainer(model=model, args=resume_args(tmp_path, "cut"), train_dataset=build_dataset(model, tokenizer))
    trainer.train(resume_from_checkpoint=True)
    resumed = all_adapter_tensors(model)
    assert trainer.state.global_step == 6
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)
    assert trainer.early_exit.state_dict() == expected_exit


def test_an_incomplete_checkpoint_is_never_resumed_from(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    args = training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer)).train()
    run = tmp_path / "run"
    assert last_complete_checkpoint(run) == str(run / "checkpoint-2")
    os.remove(run / "checkpoint-2" / CHECKPOINT_MARKER)  # as if the save of step 2 had been interrupted
    assert last_complete_checkpoint(run) == str(run / "checkpoint-1")
    trainer = CremaTrainer(model=build_model(tokenizer=tokenizer), args=args,
                           train_dataset=build_dataset(model, tokenizer))
    with pytest.raises(ValueError, match="not a complete CREMA checkpoint.*checkpoint-1"):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))


def test_resume_from_a_checkpoint_of_another_modality_set_is_refused_before_training(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    args = training_args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
    CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer)).train()

    other = build_model(("video", "flow"), tokenizer=tokenizer)
    before = all_adapter_tensors(other)
    trainer = CremaTrainer(model=other, args=args, train_dataset=build_dataset(other, tokenizer))
    with pytest.raises(ValueError, match=r"saved for modalities \['video', 'depth'\].*model has \['video', 'flow'\]"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-1"))
    assert trainer.state.global_step == 0 and trainer.optimizer is None
    after = all_adapter_tensors(other)
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_final_save_is_the_model_folder(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    trainer = CremaTrainer(model=model, args=training_args(tmp_path, max_steps=1),
                           train_dataset=build_dataset(model, tokenizer), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert {"config.json", "model.safetensors", "adapters", "fusion", "training_args.json"} <= set(
        os.listdir(tmp_path / "final"))
    assert not (tmp_path / "final" / "training_args.bin").exists()
    loaded = AutoModel.from_pretrained(tmp_path / "final", trust_remote_code=True)
    saved, reloaded = all_adapter_tensors(model), all_adapter_tensors(loaded)
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)


# ------------------------------------------------------------------------------------------------ inputs
def test_cached_features_give_the_same_loss_as_pixels(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    pixels = build_dataset(model, tokenizer)
    cached = cache_frozen_features(pixels.with_format(None), model, batch_size=4).with_format("torch")
    assert "video_features" in cached.column_names and "video_pixel_values" not in cached.column_names
    runs = []
    for schedule in ("sequential", "joint"):
        for dataset in (pixels, cached):
            model = without_dropout(build_model(tokenizer=tokenizer))
            args = training_args(tmp_path, modality_schedule=schedule, max_steps=2)
            trainer = CremaTrainer(model=model, args=args, train_dataset=dataset)
            trainer.train()
            losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
            runs.append((losses, all_adapter_tensors(model)))
    for pixel_run, cached_run in (runs[0:2], runs[2:4]):
        assert len(pixel_run[0]) == 2
        assert pixel_run[0] == pytest.approx(cached_run[0], rel=1e-5)
        for key in pixel_run[1]:
            torch.testing.assert_close(pixel_run[1][key], cached_run[1][key], rtol=1e-4, atol=1e-6)


def test_random_resized_crop_is_one_crop_per_clip_and_reproducible():
    frame = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32)
    clips = frame.expand(2, 4, 3, 32, 32).clone()  # two identical clips of four identical frames
    first = random_resized_crop(clips, torch.Generator().manual_seed(0), scale=(0.5, 1.0))
    again = random_resized_crop(clips, torch.Generator().manual_seed(0), scale=(0.5, 1.0))
    assert first.shape == clips.shape and torch.equal(first, again)
    assert all(torch.equal(first[b, t], first[b, 0]) for b in range(2) for t in range(4))  # same crop for all frames
    assert not torch.equal(first[0], first[1])  # each clip its own crop
    assert not torch.equal(first[0, 0], frame)


def test_evaluation_reports_accuracy_per_question_type(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    eval_dataset = build_dataset(model, tokenizer, size=4, types=("where", "count"))
    trainer = CremaTrainer(model=model, args=training_args(tmp_path), train_dataset=build_dataset(model, tokenizer),
                           eval_dataset=eval_dataset, processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_accuracy_where", "eval_accuracy_count"} <= set(metrics)

    accuracy = AnswerAccuracy(tokenizer, ["a", "b"])
    answers = tokenizer(["blue", "red", "two", "blue"], padding=True, return_tensors="np").input_ids
    predicted = tokenizer(["blue", "red", "three", "green"], padding=True, return_tensors="np").input_ids
    from transformers import EvalPrediction

    scores = accuracy(EvalPrediction(predictions=predicted, label_ids=(answers, np.array([0, 0, 1, 1]))))
    assert scores == {"accuracy": 0.5, "accuracy_a": 1.0, "accuracy_b": 0.0}


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_clear_error_before_training(tmp_path, tokenizer):
    model = build_model(tokenizer=tokenizer)
    dataset = build_dataset(model, tokenizer)
    with pytest.raises(ValueError, match=r"\['audio'\], which this model has no adapter"):
        CremaTrainer(model=model, args=training_args(tmp_path, modalities=["video", "audio"]), train_dataset=dataset)
    with pytest.raises(ValueError, match=r"no inputs for modalities \['depth'\]"):
        CremaTrainer(model=model, args=training_args(tmp_path), train_dataset=dataset.remove_columns("depth_pixel_values"))
    video_only = build_model(("video",), fusion=False, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"inputs for modalities \['depth'\].*no adapter"):
        CremaTrainer(model=video_only, args=training_args(tmp_path), train_dataset=dataset)
    with pytest.raises(ValueError, match="is empty"):
        CremaTrainer(model=model, args=training_args(tmp_path), train_dataset=dataset.select([]))
    with pytest.raises(ValueError, match=r"τ\) must be > 0"):
        training_args(tmp_path, early_exit_tau=0.0)
    with pytest.raises(ValueError, match="modality_schedule"):
        training_args(tmp_path, modality_schedule="alternating")
    # gradient accumulation with the sequential schedule is handled (see the accumulation test), not refused
    assert training_args(tmp_path, gradient_accumulation_steps=2).modality_schedule == "sequential"


def test_collator_adds_question_type_ids(tokenizer):
    collator = CremaTrainingCollator(pad_token_id=0, question_types=["color", "count"])
    rows = [{"input_ids": [5, 1], "labels": [7, 1], "question_type": "count"},
            {"input_ids": [5, 6, 1], "labels": [7, 1], "question_type": "color"}]
    batch = collator(rows)
    assert batch["question_type_ids"].tolist() == [1, 0] and batch["input_ids"].shape == (2, 3)
    with pytest.raises(ValueError, match="not among the known types"):
        collator([{**rows[0], "question_type": "where"}])
