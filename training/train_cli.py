"""`crema train CONFIG.yaml [--key value ...]`: train CREMA's modality adapters from a YAML config.

The config holds the fields of three dataclasses, parsed by `trl.TrlParser` (YAML values replace the defaults,
command-line `--key value` pairs override the YAML):
  - `CremaModelArguments`: the CREMA model folder to start from (e.g. made by `crema init`);
  - `CremaDataArguments`: the datasets (processed rows of CREMA inputs, or rows of the benchmark schema that are
    processed on the fly) and optional frozen-feature caching;
  - `CremaTrainingArguments`: `transformers.TrainingArguments` + CREMA's recipe (schedule, early exit, ...).

The run shows a tqdm progress bar, logs to whatever `report_to` names (e.g. TensorBoard), saves checkpoints that
`resume_from_checkpoint` continues exactly, and ends with the trained model (`save_pretrained` folder with its
processor), `early_exit.json` and `early_exit.png` (the early-exit indicator per modality over epochs, the paper's
Fig. 2) in `output_dir`. `training/configs/` has one config per paper benchmark with the authors' hyper-parameters.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from .arguments import CremaTrainingArguments


@dataclass
class CremaModelArguments:
    """Which model to train."""

    model_name_or_path: str = field(
        metadata={"help": "A saved CREMA folder or Hub id (e.g. from `crema init`), with its processor/tokenizer."}
    )
    language_model_dtype: str | None = field(
        default=None,
        metadata={"help": "Hold the frozen LLM in this dtype (e.g. 'bfloat16', as the reference holds T5); the "
                          "adapters and the fusion stay float32."},
    )


@dataclass
class CremaDataArguments:
    """Which data to train on. Either rows of CREMA's inputs (`input_ids`, `labels`, per modality
    `{m}_pixel_values` or cached `{m}_features`, ..., optionally `question_type` for the per-type accuracy), or
    rows of the benchmark schema (`crema_training.benchmark_datasets`: question, options, answer, media paths),
    which the model's processor turns into inputs as the DataLoader reads them."""

    train_dataset: str = field(
        metadata={"help": "A dataset saved with `save_to_disk` (Dataset or DatasetDict) or a `load_dataset` name."}
    )
    eval_dataset: str | None = field(default=None, metadata={"help": "Evaluation data (same forms)."})
    train_split: str = field(default="train", metadata={"help": "Split of a DatasetDict to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split of a DatasetDict to evaluate on."})
    cache_features: bool = field(
        default=False,
        metadata={"help": "Run the frozen encoders once per clip before training (`cache_frozen_features`) and "
                          "train from the cached features (no crop augmentation then)."},
    )
    prompt_preset: str = field(
        default="dataset",
        metadata={"help": "Benchmark-schema rows: prompts from each row's preset ('dataset', the reference's text), "
                          "the default prompts ('none'), or the processor's own preset ('processor')."},
    )
    depth_model: str | None = field(
        default=None,
        metadata={"help": "Benchmark-schema rows: the depth-estimation model (folder or Hub id) that renders depth "
                          "and normals from the clips for depth/normal adapters (else the processor's)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})


def build_parser():
    from trl import TrlParser

    return TrlParser(
        (CremaModelArguments, CremaDataArguments, CremaTrainingArguments),
        prog="crema train",
        description="Train CREMA's modality adapters and fusion: crema train CONFIG.yaml [--key value ...]",
    )


def parse_arguments(argv: Sequence[str]) -> tuple[CremaModelArguments, CremaDataArguments, CremaTrainingArguments]:
    """`[CONFIG.yaml] [--key value ...]` -> the three argument dataclasses (command line over YAML over defaults)."""
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        config = argv.pop(0)
        if not os.path.isfile(config):
            raise ValueError(f"Config file {config!r} not found; pass a YAML file (see training/configs/).")
        argv = ["--config", config, *argv]
    model_args, data_args, training_args = build_parser().parse_args_and_config(argv)
    if isinstance(training_args.resume_from_checkpoint, str) and training_args.resume_from_checkpoint.lower() in (
        "true", "last"
    ):
        training_args.resume_from_checkpoint = True
    return model_args, data_args, training_args


def load_split(path_or_name: str, split: str, limit: int | None = None):
    """A `datasets.Dataset` from a `save_to_disk` folder (a DatasetDict's `split`) or `load_dataset(name, split=)`."""
    import datasets

    if os.path.isdir(path_or_name) and any(
        os.path.isfile(os.path.join(path_or_name, name)) for name in ("dataset_dict.json", "state.json")
    ):
        dataset = datasets.load_from_disk(path_or_name)
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise ValueError(f"{path_or_name} has no split {split!r} (splits: {list(dataset)}).")
            dataset = dataset[split]
    else:
        try:
            dataset = datasets.load_dataset(path_or_name, split=split)
        except FileNotFoundError as error:
            raise ValueError(f"Dataset {path_or_name!r} not found ({error}).") from None
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


def as_training_data(dataset, model, processing, data_args: CremaDataArguments, training: bool, seed: int = 0):
    """What the trainer reads: processed rows as they are (in torch format, their encoders' features cached with
    `cache_features`); benchmark-schema rows processed on the fly (`TrainingExamples`), or once into cached
    features with `cache_features`."""
    from .schema_inputs import TrainingExamples, cache_training_features, is_benchmark_schema, plan_inputs

    if not is_benchmark_schema(dataset.column_names):
        if data_args.cache_features:
            from crema_processing.feature_cache import cache_frozen_features

            dataset = cache_frozen_features(dataset, model)
        return dataset.with_format("torch")
    if not hasattr(processing, "video_processor"):
        raise ValueError(
            "The dataset holds benchmark rows (media paths), which need the model's CremaProcessor to become inputs, "
            "but the model folder has none: save one there with `processor.save_pretrained(folder)`."
        )
    from .answer import check_processor_matches, depth_model_reference

    check_processor_matches(processing, model.config)
    if data_args.depth_model:
        processing.video_processor.depth_model_name_or_path = depth_model_reference(data_args.depth_model)
    plan = plan_inputs(model, processing, dataset, data_args.prompt_preset)
    if data_args.cache_features:
        return cache_training_features(dataset, processing, plan, model).with_format("torch")
    return TrainingExamples(dataset, processing, plan, training=training, seed=seed)


def load_model_and_processing(model_args: CremaModelArguments):
    """The CREMA model and its processor (or tokenizer, or None) from `model_name_or_path`."""
    import torch
    from transformers import AutoProcessor, AutoTokenizer

    import crema_processing  # noqa: F401  # registers CremaProcessor with AutoProcessor
    from modeling_crema import CremaForConditionalGeneration

    model = CremaForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
    if model_args.language_model_dtype:
        dtype = getattr(torch, model_args.language_model_dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"language_model_dtype={model_args.language_model_dtype!r} is not a torch dtype "
                             "(e.g. 'bfloat16', 'float16', 'float32').")
        model.language_model.to(dtype)
    processing = None
    for loader in (AutoProcessor, AutoTokenizer):
        try:
            processing = loader.from_pretrained(model_args.model_name_or_path)
            break
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return model, processing


def run_training(
    model_args: CremaModelArguments, data_args: CremaDataArguments, training_args: CremaTrainingArguments
) -> dict[str, Any]:
    """Loads, trains, saves; returns the final metrics (train, and eval when an eval dataset is given)."""
    from .callbacks import EarlyExitPlotCallback
    from .trainer import CremaTrainer

    model, processing = load_model_and_processing(model_args)
    if data_args.cache_features:
        model.to(training_args.device)
    train_dataset = as_training_data(
        load_split(data_args.train_dataset, data_args.train_split, data_args.max_train_samples), model, processing,
        data_args, training=True, seed=training_args.seed,
    )
    eval_dataset = None
    if data_args.eval_dataset:
        eval_dataset = as_training_data(
            load_split(data_args.eval_dataset, data_args.eval_split, data_args.max_eval_samples), model, processing,
            data_args, training=False,
        )

    trainer = CremaTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing,
    )
    trainer.add_callback(EarlyExitPlotCallback(trainer))
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or None)
    metrics = dict(result.metrics)
    trainer.save_model(training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `crema train` (everything after `crema train` is `argv`). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_args, data_args, training_args = parse_arguments(argv)
        run_training(model_args, data_args, training_args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    except (ValueError, OSError) as error:
        print(f"crema train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
