"""Several questions about one clip: `clip_index` (the model encodes each clip once), the collator's `clip_column`
(one copy of a clip's inputs per batch), `ClipGroupedSampler` (whole clips per batch) and the trainer's
`clip_column`. Expected values come from the per-row path (one input row per prompt)."""

from __future__ import annotations

import datasets
import pytest
import torch

from crema_processing.feature_cache import CremaDataCollator
from crema_training.arguments import CremaTrainingArguments
from crema_training.clip_sampler import ClipGroupedSampler
from crema_training.trainer import CremaTrainer
from modeling_crema.adapters import adapter_state_dict
from tiny_models import modality_inputs, randomize_lora_b, tiny_crema_model, without_dropout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODALITIES = ("video", "depth")
QUESTIONS = ["Question: red or blue?", "Question: what is the person doing?", "Question: one two three?"]
ANSWERS = ["blue", "dancing", "two"]


def build_model(tokenizer, seed=0):
    model = tiny_crema_model(list(MODALITIES), fusion=list(MODALITIES), seed=seed, tokenizer=tokenizer)
    randomize_lora_b(model, seed=seed + 1)
    return model


def clip_rows(model, tokenizer, clips=4, questions=3):
    """`clips` clips with `questions` questions each (rows of one clip side by side), as a torch-formatted dataset
    with a `clip_id` column."""
    rows = {"clip_id": [], "input_ids": [], "labels": [], "question_type": []}
    for clip in range(clips):
        inputs = modality_inputs(model.config, batch=1, seed=10 + clip)
        for question in range(questions):
            rows["clip_id"].append(f"clip-{clip}")
            rows["input_ids"].append(tokenizer(QUESTIONS[question % 3]).input_ids)
            rows["labels"].append(tokenizer(ANSWERS[(clip + question) % 3]).input_ids)
            rows["question_type"].append(f"type-{question % 3}")
            for key, value in inputs.items():
                rows.setdefault(key, []).append(value[0].numpy())
    return datasets.Dataset.from_dict(rows).with_format("torch")


# ------------------------------------------------------------------------------------------------ the model
def test_clip_index_gives_the_per_row_outputs_with_one_qformer_pass_per_clip(tokenizer):
    model = build_model(tokenizer).eval()
    clip_inputs = modality_inputs(model.config, batch=3, seed=4)
    clip_index = torch.tensor([2, 0, 2, 1, 0])
    encoded = tokenizer([QUESTIONS[i % 3] for i in range(5)], padding=True, return_tensors="pt")
    labels = tokenizer([ANSWERS[i % 3] for i in range(5)], padding=True, return_tensors="pt").input_ids
    text = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask, "labels": labels}
    queries = []
    model.qformer.register_forward_pre_hook(lambda module, args, kwargs: queries.append(kwargs["query_embeds"].shape[0]),
                                            with_kwargs=True)
    with torch.no_grad():
        per_row = model(**text, **{key: value[clip_index] for key, value in clip_inputs.items()})
        rows_passes, queries[:] = list(queries), []
        shared = model(**text, clip_index=clip_index, **clip_inputs)
    torch.testing.assert_close(shared.logits, per_row.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared.loss, per_row.loss, rtol=0, atol=1e-6)
    for name in MODALITIES:
        assert shared.modality_embeds[name].shape[0] == 5
    frames = model.config.num_frames
    assert rows_passes == [5 * frames] * len(MODALITIES) and queries == [3 * frames] * len(MODALITIES)
    with torch.no_grad():
        generated = model.generate(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask,
                                   clip_index=clip_index, max_new_tokens=3, **clip_inputs)
        expected = model.generate(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, max_new_tokens=3,
                                  **{key: value[clip_index] for key, value in clip_inputs.items()})
    assert torch.equal(generated, expected)


def test_gradients_through_clip_index_are_the_sums_over_the_clips_questions(tokenizer):
    """Training with shared clips: the adapters' gradients equal those of the per-row batch (dropout off)."""
    grads = {}
    clip_inputs = modality_inputs(build_model(tokenizer).config, batch=2, seed=5)
    clip_index = torch.tensor([0, 1, 1, 0])
    encoded = tokenizer([QUESTIONS[i % 3] for i in range(4)], padding=True, return_tensors="pt")
    labels = tokenizer([ANSWERS[i % 3] for i in range(4)], padding=True, return_tensors="pt").input_ids
    for shared in (False, True):
        model = without_dropout(build_model(tokenizer)).train()
        inputs = dict(clip_inputs, clip_index=clip_index) if shared else {
            key: value[clip_index] for key, value in clip_inputs.items()}
        model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask, labels=labels, **inputs).loss.backward()
        grads[shared] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and any("lora_A" in name for name in grads[True])
    for name in grads[False]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "clip_index, message",
    [(torch.tensor([0, 3]), r"values in \[0, 3\].*has 2 input rows"),
     (torch.tensor([[0, 1]]), r"must be integers of shape \(2,\)"),
     (torch.tensor([0.0, 1.0]), r"must be integers of shape \(2,\)"),
     (torch.tensor([-1, 0]), r"each value must lie in \[0, 2\)")],
)
def test_a_wrong_clip_index_is_a_clear_error(tokenizer, clip_index, message):
    model = build_model(tokenizer).eval()
    encoded = tokenizer(QUESTIONS[:2], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=message):
        model(input_ids=encoded.input_ids, clip_index=clip_index, **modality_inputs(model.config, batch=2))


def test_fewer_input_rows_than_prompts_without_clip_index_names_it(tokenizer):
    model = build_model(tokenizer).eval()
    encoded = tokenizer(QUESTIONS, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=r"batch size 2, the prompt has 3.*`clip_index`"):
        model(input_ids=encoded.input_ids, **modality_inputs(model.config, batch=2))


# ------------------------------------------------------------------------------------------------ the collator
def test_collator_passes_each_clips_inputs_once_with_its_clip_index(tokenizer):
    model = build_model(tokenizer)
    dataset = clip_rows(model, tokenizer, clips=3, questions=2)
    rows = [dataset[i] for i in (4, 0, 5, 2, 1)]  # clips 2, 0, 2, 1, 0
    batch = CremaDataCollator(clip_column="clip_id")(rows)
    assert batch["clip_index"].tolist() == [0, 1, 0, 2, 1]
    assert batch["input_ids"].shape[0] == 5 and batch["labels"].shape[0] == 5
    for key in ("video_pixel_values", "depth_pixel_values"):
        assert torch.equal(batch[key], torch.stack([dataset[i][key] for i in (4, 0, 2)]))
    plain = CremaDataCollator()(rows)
    assert "clip_index" not in plain and plain["video_pixel_values"].shape[0] == 5


def test_collator_refuses_one_clip_id_with_different_inputs(tokenizer):
    model = build_model(tokenizer)
    dataset = clip_rows(model, tokenizer, clips=2, questions=1)
    rows = [dict(dataset[0]), dict(dataset[1])]
    rows[1]["clip_id"] = rows[0]["clip_id"]
    with pytest.raises(ValueError, match=r"same `clip_id` but different `\w+_(pixel_values|features)`"):
        CremaDataCollator(clip_column="clip_id")(rows)


# ------------------------------------------------------------------------------------------------ the sampler
def test_clip_grouped_sampler_keeps_clips_together_and_reshuffles_each_epoch():
    clip_ids = ["a", "b", "c", "a", "d", "b", "c", "a", "d", "e"]
    sampler = ClipGroupedSampler(clip_ids, seed=3)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(clip_ids))) and len(sampler) == len(clip_ids)
        runs = [clip_ids[i] for i in order]
        blocks = [clip for position, clip in enumerate(runs) if position == 0 or runs[position - 1] != clip]
        assert sorted(blocks) == sorted(set(clip_ids))  # each clip's rows form one block
        orders.append(order)
    assert len({tuple(order) for order in orders}) > 1
    again = ClipGroupedSampler(clip_ids, seed=3)
    again.set_epoch(2)
    assert list(again) == orders[2]


# ------------------------------------------------------------------------------------------------ the trainer
def training_args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=6, num_train_epochs=1,
                  learning_rate=1e-2, lr_schedule="trainer", lr_scheduler_type="constant", warmup_steps=0,
                  save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, llm_dropout=False,
                  random_resized_crop=False, early_exit=False, seed=7)
    values.update(overrides)
    return CremaTrainingArguments(**values)


def test_trainer_with_clip_column_trains_as_the_per_row_batches_in_the_same_order(tmp_path, tokenizer):
    """Whole clips per batch, each clip's MMQA computed once per sub-step: with dropout off, the adapters end where
    the per-row run ends when it sees the same rows in the same batches."""
    model = without_dropout(build_model(tokenizer))
    dataset = clip_rows(model, tokenizer, clips=4, questions=3)
    passes, video_rows = [], []
    model.qformer.register_forward_pre_hook(lambda module, args, kwargs: passes.append(kwargs["query_embeds"].shape[0]),
                                            with_kwargs=True)
    model.register_forward_pre_hook(lambda module, args, kwargs: video_rows.append(
        (kwargs["video_features"].shape[0], kwargs["input_ids"].shape[0])), with_kwargs=True)
    CremaTrainer(model=model, args=training_args(tmp_path, clip_column="clip_id"), train_dataset=dataset).train()
    # 2 batches of 6 rows = 2 whole clips each; 2 sub-steps per batch, each encoding 2 modalities of 2 clips
    assert video_rows == [(2, 6)] * 4
    assert passes == [2 * model.config.num_frames] * 8
    grouped = {m: adapter_state_dict(model, m) for m in MODALITIES}

    sampler = ClipGroupedSampler(list(dataset["clip_id"]), seed=7)
    sampler.set_epoch(0)
    model = without_dropout(build_model(tokenizer))
    ordered = dataset.select(list(sampler))
    CremaTrainer(model=model, args=training_args(tmp_path / "rows", train_sampling_strategy="sequential"),
                 train_dataset=ordered).train()
    start = build_model(tokenizer)
    for m in MODALITIES:
        per_row, initial = adapter_state_dict(model, m), adapter_state_dict(start, m)
        assert any(not torch.equal(per_row[key], initial[key]) for key in per_row)
        for key in per_row:
            torch.testing.assert_close(grouped[m][key], per_row[key], rtol=1e-4, atol=1e-6)


def test_trainer_refuses_a_clip_column_the_dataset_lacks(tmp_path, tokenizer):
    model = build_model(tokenizer)
    dataset = clip_rows(model, tokenizer, clips=2, questions=1).remove_columns("clip_id")
    with pytest.raises(ValueError, match=r"clip_column='clip_id' is not a column of the train_dataset"):
        CremaTrainer(model=model, args=training_args(tmp_path, clip_column="clip_id"), train_dataset=dataset)


def test_evaluation_with_clip_column_gives_the_per_row_results_with_fewer_qformer_passes(tmp_path, tokenizer):
    model = build_model(tokenizer).eval()
    dataset = clip_rows(model, tokenizer, clips=2, questions=3)
    results, passes = {}, {}
    for column in (None, "clip_id"):
        calls = []
        hook = model.qformer.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append(kwargs["query_embeds"].shape[0]), with_kwargs=True)
        args = training_args(tmp_path / str(column), clip_column=column, per_device_eval_batch_size=6,
                             generation_num_beams=2, generation_max_new_tokens=3)
        trainer = CremaTrainer(model=model, args=args, eval_dataset=dataset, processing_class=tokenizer)
        results[column], passes[column] = trainer.evaluate(), sum(calls)
        hook.remove()
    frames, modalities = model.config.num_frames, len(MODALITIES)
    assert passes == {None: 2 * 6 * frames * modalities, "clip_id": 2 * 2 * frames * modalities}  # loss + generate
    assert results["clip_id"]["eval_accuracy"] == results[None]["eval_accuracy"]
    assert results["clip_id"]["eval_loss"] == pytest.approx(results[None]["eval_loss"], abs=1e-5)
