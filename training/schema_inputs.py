"""Rows of the benchmark schema (`benchmark_datasets.schema`: question, options, answer and media paths) -> the
model's inputs, for `crema eval` and `crema train` alike.

`plan_inputs` decides once per dataset which columns feed which adapter (and refuses, naming the column and the
fix, what cannot be fed); `prepare_batch` runs the processor on a batch of rows. For training, `TrainingExamples`
processes each row when the Trainer's DataLoader asks for it (random frame per segment, labels from the answer),
and `cache_training_features` processes every row once and keeps only the frozen encoders' features.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DERIVED = ("flow", "depth", "normal")
#: `--prompt-preset`: each row's `prompt_preset` (the reference's text for its benchmark), none (the default prompts
#: of DESIGN §3 / paper Table 11), or whatever preset the saved processor has.
PROMPT_PRESET_MODES = ("dataset", "none", "processor")


@dataclass
class InputPlan:
    """How each of the model's modalities is fed from the dataset's columns (decided once per dataset)."""

    include_video: bool = False
    needs_video: bool = False
    derived: list[str] = field(default_factory=list)  # flow/depth/normal rendered from the video
    visual_columns: list[str] = field(default_factory=list)  # precomputed visual modalities: `visual={m: path}`
    companions: list[str] = field(default_factory=list)  # thermal / touch clips
    audio: str | None = None  # "column" (the audio column) or "video" (the videos' own track)
    point_clouds: list[tuple[str, str]] = field(default_factory=list)  # (features column, voxels column)
    prompt_preset: str = "dataset"  # one of PROMPT_PRESET_MODES

    def processor_kwargs(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        from crema_processing.point_cloud import load_point_cloud

        kwargs: dict[str, Any] = {}
        if self.needs_video:
            kwargs["videos"] = [row["video"] for row in rows]
            kwargs["include_video"] = self.include_video
        for name in self.derived:
            kwargs[name] = True
        if self.visual_columns:
            kwargs["visual"] = {name: [row[name] for row in rows] for name in self.visual_columns}
        for name in self.companions:
            kwargs[name] = [row[name] for row in rows]
        if self.audio == "column":
            kwargs["audio"] = [row["audio"] for row in rows]
        elif self.audio == "video":
            kwargs["audio"] = True
        for features, voxels in self.point_clouds:
            kwargs["point_cloud"] = [load_point_cloud(row[features], row[voxels]) for row in rows]
        return kwargs


def plan_inputs(model: Any, processor: Any, dataset: Any, prompt_preset: str = "dataset") -> InputPlan:
    """Which columns feed which of the model's adapters; one ValueError naming the modality, the missing column
    and the option that fixes it, before anything runs."""
    columns = set(dataset.column_names)
    ids = dataset["id"]

    def first_missing(column: str) -> str | None:
        """None when every row has the column, else the id of the first row without it."""
        if column not in columns:
            return ids[0]
        return next((ids[i] for i, value in enumerate(dataset[column]) if value is None), None)

    def refuse(modality: str, column: str, fix: str) -> ValueError:
        row = first_missing(column)
        return ValueError(f"the model has a {modality!r} adapter but the dataset has no {column!r} for question "
                          f"{row}: {fix}")

    if prompt_preset not in PROMPT_PRESET_MODES:
        raise ValueError(f"prompt_preset must be one of {PROMPT_PRESET_MODES}, got {prompt_preset!r}")
    accepts_preset = "prompt_preset" in inspect.signature(processor.__call__).parameters
    if prompt_preset != "processor" and not accepts_preset:
        raise ValueError(f"--prompt-preset {prompt_preset}: this processor has no prompt presets; use "
                         "--prompt-preset processor")
    plan = InputPlan(prompt_preset=prompt_preset)
    config = model.config
    for spec in config.modalities:
        name, encoder = spec["name"], spec["encoder"]
        if name == "video":
            if first_missing("video") is not None:
                raise refuse("video", "video", "build it with --media-root (or --root video=DIR)")
            plan.include_video = plan.needs_video = True
        elif name in DERIVED:
            if first_missing(name) is None:
                plan.visual_columns.append(name)
                continue
            if first_missing("video") is not None:
                raise refuse(name, "video", f"it is derived from the clip; build the dataset with --media-root, or "
                             f"give precomputed {name} frames with --root {name}=DIR")
            if name in ("depth", "normal"):
                video_processor = processor.video_processor
                if (getattr(video_processor, "depth_model_name_or_path", None) is None
                        and getattr(video_processor, "_depth_estimator", None) is None):
                    raise ValueError(f"the model has a {name!r} adapter, which needs a depth-estimation model: pass "
                                     f"--depth-model DIR_OR_ID, or precomputed {name} frames with --root {name}=DIR")
            plan.needs_video = True
            plan.derived.append(name)
        elif name == "audio":
            if encoder != "audio" or config.audio_config is None:
                raise ValueError(
                    "the model's 'audio' adapter takes precomputed audio features (the model has no audio encoder), "
                    "so it cannot read audio files: build the model with `crema init --audio-encoder DIR_OR_ID`"
                )
            if first_missing("audio") is None:
                plan.audio = "column"
            elif first_missing("video") is None:
                plan.audio, plan.needs_video = "video", True
            else:
                raise refuse("audio", "audio", "build the dataset with --media-root (or --root audio=DIR)")
        elif encoder == "point_cloud":
            features, voxels = name, f"{name}_voxels"
            for column in (features, voxels):
                if first_missing(column) is not None:
                    raise refuse(name, column, f"build the dataset with --media-root (or --root {name}=DIR)")
            plan.point_clouds.append((features, voxels))
        elif name in ("thermal", "touch"):
            if first_missing(name) is not None:
                raise refuse(name, name, f"build the dataset with --media-root (or --root {name}=DIR)")
            plan.companions.append(name)
        else:
            if first_missing(name) is not None:
                raise refuse(name, name, f"add a {name!r} column of clip paths to the dataset")
            plan.visual_columns.append(name)
    if len(plan.point_clouds) > 1:
        raise ValueError("a benchmark dataset feeds one point-cloud modality; the model has "
                         f"{', '.join(f for f, _ in plan.point_clouds)}")
    return plan


@dataclass
class PreparedGroup:
    """Rows of one batch that share a prompt form, and their processor outputs."""

    positions: list[int]
    rows: list[dict[str, Any]]
    inputs: dict[str, Any]


def prepare_batch(
    processor: Any,
    plan: InputPlan,
    rows: Sequence[Mapping[str, Any]],
    with_answers: bool = False,
    training: bool = False,
    generator: Any = None,
) -> list[PreparedGroup]:
    """Processor inputs for a batch: one processor call on lists per group of rows with the same prompt form
    (multiple choice or open-ended, modality word, prompt preset). The preset is the row's (`plan.prompt_preset`
    "dataset"), none ("none": the default prompts) or the processor's own ("processor"). `with_answers` adds the
    `labels` of each row's answer (the option index for multiple choice); `training` samples a random frame per
    segment (seeded by `generator`), as training clips are sampled."""
    groups: dict[tuple, list[int]] = {}
    for position, row in enumerate(rows):
        key = (bool(row["options"]), row["modality_word"], row["prompt_preset"])
        groups.setdefault(key, []).append(position)
    prepared = []
    for (multiple_choice, word, preset), positions in groups.items():
        members = [dict(rows[p]) for p in positions]
        kwargs = plan.processor_kwargs(members)
        kwargs["question"] = [row["question"] for row in members]
        if multiple_choice:
            kwargs["options"] = [list(row["options"]) for row in members]
        else:
            kwargs["situation"] = [row["situation"] or "" for row in members]
            kwargs["modality_word"] = word or None
        if with_answers:
            kwargs["answer"] = [int(row["answer_index"]) if multiple_choice else row["answer"] for row in members]
        if plan.prompt_preset == "dataset":
            kwargs["prompt_preset"] = preset
        elif plan.prompt_preset == "none":
            kwargs["prompt_preset"] = ""
        if training:
            kwargs.update(training=True, generator=generator)
        inputs = processor(**kwargs, return_tensors="pt")
        prepared.append(PreparedGroup(positions, members, {k: v for k, v in inputs.items()
                                                           if with_answers or k != "labels"}))
    return prepared


class Preparer:
    """`prepare_batch` as a picklable DataLoader collate function (for `crema eval --num-workers`)."""

    def __init__(self, processor: Any, plan: InputPlan):
        self.processor, self.plan = processor, plan

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> list[PreparedGroup]:
        return prepare_batch(self.processor, self.plan, rows)


# ------------------------------------------------------------------------------------------------ training
def is_benchmark_schema(column_names: Sequence[str]) -> bool:
    """True for rows of the benchmark schema (media paths, not yet processed into `input_ids`)."""
    from .benchmark_datasets import missing_columns

    return not missing_columns(column_names) and "input_ids" not in column_names


def split_examples(prepared: Sequence[PreparedGroup], count: int) -> list[dict[str, Any]]:
    """`prepare_batch(..., with_answers=True)` output -> one example per row, in the rows' order: its text without
    padding (`input_ids`, `attention_mask`, `labels`), every modality input of that row, and its `question_type`."""
    from crema_processing.feature_cache import TEXT_KEYS

    examples: list[dict[str, Any]] = [{} for _ in range(count)]
    for group in prepared:
        inputs = group.inputs
        for i, (position, row) in enumerate(zip(group.positions, group.rows)):
            keep = inputs["attention_mask"][i].bool()
            labels = inputs["labels"][i]
            example = {"input_ids": inputs["input_ids"][i][keep], "attention_mask": inputs["attention_mask"][i][keep],
                       "labels": labels[labels != -100]}
            example.update({key: value[i] for key, value in inputs.items() if key not in TEXT_KEYS})
            example["question_type"] = str(row["question_type"])
            examples[position] = example
    return examples


class TrainingExamples:
    """A map-style dataset of benchmark-schema rows, each processed when the DataLoader asks for it (decoding runs
    in the DataLoader's workers, nothing is stored): labels from the row's answer, and with `training` a random
    frame per segment drawn from (seed, epoch, row), so a resumed run sees the frames an uninterrupted one would.
    `CremaTrainer` calls `set_epoch` when each epoch begins, on every rank."""

    def __init__(self, rows: Any, processor: Any, plan: InputPlan, training: bool = True, seed: int = 0):
        self.rows = rows.with_format(None)
        self.processor, self.plan = processor, plan
        self.training, self.seed, self.epoch = training, int(seed), 0
        #: every question type, for the per-type accuracy of evaluation
        self.question_types = sorted({str(value) for value in self.rows["question_type"]})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np

        index = int(index)
        generator = np.random.default_rng([self.seed, self.epoch, index]) if self.training else None
        prepared = prepare_batch(self.processor, self.plan, [self.rows[index]], with_answers=True,
                                 training=self.training, generator=generator)
        return split_examples(prepared, 1)[0]


def cache_training_features(rows: Any, processor: Any, plan: InputPlan, model: Any, batch_size: int = 8,
                            **map_kwargs: Any) -> Any:
    """`rows.map`: every benchmark-schema row processed once (middle frame per segment) and run through the frozen
    encoders, keeping only the text, the `{m}_features` and the `question_type` (the raw pixels are never stored).
    The cache's fingerprint covers the rows, the model's weights, the processor's settings and the plan."""
    import numpy as np
    import torch

    from crema_processing.feature_cache import FrozenFeatureCacher

    cacher = FrozenFeatureCacher(model)
    rows = rows.with_format(None)

    def process_and_encode(batch: dict[str, list]) -> dict[str, list]:
        count = len(batch["id"])
        members = [{column: values[i] for column, values in batch.items()} for i in range(count)]
        examples = split_examples(prepare_batch(processor, plan, members, with_answers=True), count)
        encoder_inputs = cacher.input_columns(list(examples[0]))
        out = {key: [np.asarray(e[key]) if isinstance(e[key], torch.Tensor) else e[key] for e in examples]
               for key in examples[0] if key not in encoder_inputs}
        out.update(cacher({key: torch.stack([e[key] for e in examples]) for key in encoder_inputs}))
        return out

    settings = processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor)
    map_kwargs.setdefault("new_fingerprint", cacher.fingerprint(f"{rows._fingerprint}{settings}{plan!r}"))
    map_kwargs.setdefault("desc", "Processing media and caching frozen-encoder features")
    return rows.map(process_and_encode, batched=True, batch_size=batch_size, remove_columns=rows.column_names,
                    **map_kwargs)
