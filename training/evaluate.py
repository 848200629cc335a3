"""`crema eval MODEL DATASET`: a saved CREMA model on a benchmark, with the accuracy per question type in the layout
of the paper's tables (the paper's lenient metric and strict exact match, `metrics.py`).

- DATASET is a benchmark name (`nextqa`, `music_avqa`, `sqa3d`, `perception_test`, `vggsound`, `touchqa`,
  `thermalqa`) with `--annotations FILE` and `--media-root DIR` (per-modality folders with `--root MODALITY=DIR`),
  or a folder saved with `Dataset.save_to_disk` from `crema_training.benchmark_datasets`.
- Multiple choice: the option letter with the highest score at the step after "Option" (the reference's
  prediction, DESIGN §3; `--mc-scoring likelihood` ranks the options by the log-likelihood of their whole target
  `Option {L}`, as `crema answer` does). Open-ended: beam search (5 beams, length penalty -1, 10 new tokens; 40
  for SQA3D), empty output -> "unanswerable".
- Resumable: each batch's predictions are appended to `OUT.predictions.jsonl` as soon as they are made; a rerun
  with the same model, dataset and settings skips the ids already there (`--overwrite` starts again). Batches are
  cut at fixed positions of the dataset, so a resumed run batches the remaining rows as an uninterrupted one would.
  The summary + per-example predictions JSON is written atomically at the end.

Importing this module imports only the standard library: torch, transformers and datasets are imported by
`run_eval` (so that `crema --help` stays instant).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cli_types import non_negative_int, positive_int
from .dataset_cli import add_benchmark_file_arguments, build_from_annotations
from .benchmark_datasets import BENCHMARKS, benchmark_info, missing_columns
from .metrics import accuracy_summary, format_table, score
from .schema_inputs import PROMPT_PRESET_MODES, InputPlan, PreparedGroup, Preparer, plan_inputs, prepare_batch

LOG_FORMAT = "crema-eval-predictions"
LOG_VERSION = 1
MC_SCORING = ("letter", "likelihood")


# ---------------------------------------------------------------------------------------------- arguments
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `crema eval` (no heavy imports)."""
    parser.add_argument("model", help="a saved CREMA folder (model + processor) or Hub id")
    parser.add_argument(
        "dataset",
        help=f"a benchmark ({', '.join(BENCHMARKS)}) read from --annotations and --media-root, or a folder saved "
        "with Dataset.save_to_disk from crema_training.benchmark_datasets",
    )
    add_benchmark_file_arguments(parser)
    run = parser.add_argument_group("evaluation")
    run.add_argument("--out", help="results JSON (default: crema-eval-DATASET.json); predictions go to "
                     "OUT.predictions.jsonl as they are made")
    run.add_argument("--overwrite", action="store_true", help="start again instead of resuming earlier predictions")
    run.add_argument("--batch-size", type=positive_int, default=8, help="questions per model call (default 8)")
    run.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N questions only")
    run.add_argument("--num-beams", type=positive_int, default=5, help="beams for open-ended answers (default 5)")
    run.add_argument("--max-new-tokens", type=positive_int, default=None,
                     help="longest open-ended answer (default: 40 for sqa3d, else 10)")
    run.add_argument("--mc-scoring", choices=MC_SCORING, default="letter",
                     help="multiple choice: the option letter's score after 'Option' (default, the reference's) or "
                     "the likelihood of the whole target 'Option L'")
    run.add_argument("--prompt-preset", choices=PROMPT_PRESET_MODES, default="dataset",
                     help="prompts: the benchmark's preset, i.e. the reference code's text (default; what converted "
                     "checkpoints saw), none (the paper's Table 11 prompts), or the saved processor's preset")
    run.add_argument("--depth-model", default=None,
                     help="depth-estimation model (folder or Hub id) for depth/normal adapters")
    run.add_argument("--num-workers", type=non_negative_int, default=0,
                     help="processes decoding clips while the model runs (default 0: in the main process)")
    run.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available, else cpu)")


def run_eval(args: argparse.Namespace) -> int:
    """`crema eval`: build or load the dataset, load the model, evaluate (resuming), print the table."""
    import torch

    from .answer import load_model_and_processor, local_or_hub

    dataset, source = load_eval_dataset(
        args.dataset, annotations=args.annotations, media_root=args.media_root, roots=dict(args.root),
        on_missing=args.on_missing, question=args.question, split=args.split, limit=args.limit,
    )
    name = source["name"]
    out = args.out or f"crema-eval-{name}.json"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_model_and_processor(args.model, device, depth_model=args.depth_model)
    model_source, is_local = local_or_hub(args.model)
    result = evaluate(
        model, processor, dataset, out,
        model_name=os.path.abspath(model_source) if is_local else model_source, source=source,
        batch_size=args.batch_size, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
        mc_scoring=args.mc_scoring, prompt_preset=args.prompt_preset, overwrite=args.overwrite,
        num_workers=args.num_workers,
    )
    if source.get("build") and source["build"]["skipped_missing_media"]:
        print(f"note: {source['build']['message']}")
    info = BENCHMARKS.get(name)
    print(format_table(result["summary"], title=info.title if info else name))
    print(f"wrote {out} (summary + {len(result['predictions'])} predictions) and {predictions_path(out)}")
    return 0


# ------------------------------------------------------------------------------------------------- dataset
def load_eval_dataset(
    dataset: str,
    *,
    annotations: str | None = None,
    media_root: str | None = None,
    roots: Mapping[str, str] | None = None,
    on_missing: str = "skip",
    question: str | None = None,
    split: str | None = None,
    limit: int | None = None,
):
    """(Dataset, source) from a benchmark name + its files, or from a folder saved with `save_to_disk`. `source`
    describes where it came from: `{"name", "kind", "path", "build"}`."""
    is_folder = os.path.isdir(dataset)
    try:
        benchmark_info(dataset)
        is_benchmark = not is_folder
    except ValueError:
        is_benchmark = False
    if is_benchmark:
        data, source = build_from_annotations(dataset, annotations, media_root, roots, on_missing, question, split)
    elif is_folder:
        given = [flag for flag, value in (("--annotations", annotations), ("--media-root", media_root),
                                          ("--root", roots or None), ("--question", question)) if value]
        if given:
            raise ValueError(f"{', '.join(given)}: only used with a benchmark name, not with a saved dataset folder")
        data = _load_saved(dataset, split)
        missing = missing_columns(data.column_names)
        if missing:
            raise ValueError(
                f"{dataset}: not a benchmark dataset (no column(s) {', '.join(missing)}); build it with "
                "`crema dataset` or crema_training.benchmark_datasets.build_benchmark"
            )
        if not len(data):
            raise ValueError(f"{dataset}: the dataset has no rows")
        names = sorted(set(data.unique("dataset")))
        if len(names) != 1:
            raise ValueError(f"{dataset} mixes benchmarks {', '.join(names)}: evaluate one at a time (Dataset.filter)")
        source = {"name": names[0], "kind": "saved", "path": os.path.abspath(dataset), "build": None}
    else:
        raise ValueError(
            f"{dataset}: neither a benchmark ({', '.join(BENCHMARKS)}) nor a folder saved with Dataset.save_to_disk"
        )
    if limit is not None and limit < len(data):
        data = data.select(range(limit))
    return data, source


def _load_saved(folder: str, split: str | None):
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(folder)
    if isinstance(data, DatasetDict):
        if split is None:
            if len(data) != 1:
                raise ValueError(f"{folder} holds the splits {', '.join(data)}: choose one with --split")
            split = next(iter(data))
        if split not in data:
            raise ValueError(f"--split {split}: {folder} holds the splits {', '.join(data)}")
        data = data[split]
    elif split is not None:
        raise ValueError(f"--split {split}: {folder} holds a single dataset, not a DatasetDict")
    return data


# ------------------------------------------------------------------------------------------------ answering
@dataclass
class Settings:
    num_beams: int = 5
    max_new_tokens: int = 10
    mc_scoring: str = "letter"
    prompt_preset: str = "dataset"

    def as_dict(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens, "mc_scoring": self.mc_scoring,
                "prompt_preset": self.prompt_preset}


def option_letter_step(processor: Any, num_options: int) -> tuple[list[int], int, list[int]]:
    """(teacher-forced target prefix, its last position, the letter token ids): the targets `Option A`,
    `Option B`, ... agree up to `position`, where each has its own letter token."""
    targets = [processor.build_target(i, ["-"] * num_options) for i in range(num_options)]
    ids = processor.tokenizer(targets).input_ids
    shortest = min(len(t) for t in ids)
    position = next((i for i in range(shortest) if len({t[i] for t in ids}) > 1), None)
    letters = [t[position] for t in ids] if position is not None else []
    if position is None or len(set(letters)) != num_options:
        raise ValueError(f"the tokenizer does not give each of the targets {targets} its own letter token")
    return list(ids[0][: position + 1]), position, letters


def predict_prepared(model: Any, processor: Any, prepared: Sequence[PreparedGroup], settings: Settings) -> list[dict]:
    """Answers for the prepared groups of one batch, as prediction records in the batch's row order."""
    import torch

    from .answer import option_log_likelihoods

    device = next(model.parameters()).device
    out: dict[int, dict[str, Any]] = {}
    with torch.no_grad():
        for group in prepared:
            inputs = {k: v.to(device) for k, v in group.inputs.items()}
            if group.rows[0]["options"]:
                counts = [len(row["options"]) for row in group.rows]
                if settings.mc_scoring == "letter":
                    prefix, position, letters = option_letter_step(processor, max(counts))
                    labels = torch.tensor([prefix] * len(group.rows), device=device)
                    logits = model(**inputs, labels=labels).logits[:, position, :].float()
                    scores = logits[:, letters]
                    for b, count in enumerate(counts):
                        scores[b, count:] = float("-inf")
                    chosen = scores.argmax(dim=-1).tolist()
                else:
                    chosen = []
                    for b, row in enumerate(group.rows):
                        single = {k: v[b : b + 1] for k, v in group.inputs.items()}
                        chosen.append(int(option_log_likelihoods(model, processor, single, row["options"]).argmax()))
                for b, row in enumerate(group.rows):
                    out[group.positions[b]] = _record(row, row["options"][chosen[b]], int(chosen[b]))
            else:
                generated = model.generate(
                    **inputs, num_beams=settings.num_beams, max_new_tokens=settings.max_new_tokens,
                    length_penalty=-1.0,
                )
                texts = processor.decode_answers(generated.cpu())
                for b, row in enumerate(group.rows):
                    out[group.positions[b]] = _record(row, texts[b], None)
    return [out[p] for p in sorted(out)]


def _record(row: Mapping[str, Any], prediction: str, prediction_index: int | None) -> dict[str, Any]:
    return {
        "id": row["id"], "question_type": row["question_type"], "question": row["question"],
        "prediction": prediction, "prediction_index": prediction_index,
        "answer": row["answer"], "answer_index": int(row["answer_index"]),
    }


# ------------------------------------------------------------------------------------------ files on disk
def predictions_path(out: str | os.PathLike) -> str:
    """Where the predictions of a run writing `out` are appended."""
    out = os.fspath(out)
    stem = out[: -len(".json")] if out.endswith(".json") else out
    return stem + ".predictions.jsonl"


class PredictionLog:
    """The JSONL file of a run: a header line (model, dataset, settings), then one prediction per line, appended
    and flushed batch by batch. Reopening it resumes: the header must match; a last line cut off by a kill is
    dropped."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def open(self, header: Mapping[str, Any], overwrite: bool = False) -> dict[str, dict[str, Any]]:
        """The predictions already made (id -> record); creates the file with `header` when there is none."""
        header = {"format": LOG_FORMAT, "version": LOG_VERSION, **header}
        if overwrite or not os.path.exists(self.path):
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(header, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            return {}
        with open(self.path, "rb") as handle:
            data = handle.read()
        if not data.strip():
            return self.open(header, overwrite=True)
        complete_end = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
        done: dict[str, dict[str, Any]] = {}
        offset = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            line_end = offset + len(raw) + 1
            if not raw.strip():
                offset = line_end
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                if offset < complete_end:
                    raise ValueError(f"{self.path}, line {number}: not a JSON prediction record; pass --overwrite "
                                     "to start again") from None
                if number == 1:  # only a cut-off header: start again
                    return self.open(header, overwrite=True)
                with open(self.path, "r+b") as handle:  # the last line, cut off by a kill: drop it
                    handle.truncate(offset)
                break
            if number == 1:
                self._check_header(record, header)
            elif not isinstance(record, dict) or "id" not in record:
                raise ValueError(f"{self.path}, line {number}: not a prediction record; pass --overwrite to start "
                                 "again")
            else:
                done[str(record["id"])] = record
            offset = line_end
        with open(self.path, "rb+") as handle:  # a complete last record without its newline: end the line
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
        return done

    def _check_header(self, found: Any, expected: Mapping[str, Any]) -> None:
        if not isinstance(found, dict) or found.get("format") != LOG_FORMAT:
            raise ValueError(f"{self.path} is not a crema eval predictions file; pass --overwrite to replace it, or "
                             "--out to write elsewhere")
        differences = [key for key in ("version", "model", "dataset", "source", "settings")
                       if found.get(key) != expected.get(key)]
        if differences:
            detail = "; ".join(f"{key}: {found.get(key)!r} there, {expected.get(key)!r} now" for key in differences)
            raise ValueError(f"{self.path} holds predictions of another run ({detail}); pass --overwrite to start "
                             "again, or --out to write elsewhere")

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# ------------------------------------------------------------------------------------------------ the loop
def evaluate(
    model: Any,
    processor: Any,
    dataset: Any,
    out: str | os.PathLike,
    *,
    model_name: str,
    source: Mapping[str, Any],
    batch_size: int = 8,
    num_beams: int = 5,
    max_new_tokens: int | None = None,
    mc_scoring: str = "letter",
    prompt_preset: str = "dataset",
    overwrite: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every question of `dataset` (a benchmark-schema Dataset) not yet in `OUT.predictions.jsonl`, then
    write and return `{"model", "dataset", "settings", "summary", "predictions"}` (also to `out`, atomically)."""
    from tqdm import tqdm

    if mc_scoring not in MC_SCORING:
        raise ValueError(f"mc_scoring must be one of {MC_SCORING}, got {mc_scoring!r}")
    name = source["name"]
    info = BENCHMARKS.get(name)
    settings = Settings(num_beams, max_new_tokens or (info.max_new_tokens if info else 10), mc_scoring,
                        prompt_preset)
    plan = plan_inputs(model, processor, dataset, prompt_preset)
    header = {"model": model_name, "dataset": name, "source": source["path"], "settings": settings.as_dict()}
    log = PredictionLog(predictions_path(out))
    done = log.open(header, overwrite=overwrite)

    ids = [str(i) for i in dataset["id"]]
    batches = []
    for start in range(0, len(ids), batch_size):  # fixed cuts: a resumed run batches like an uninterrupted one
        positions = [p for p in range(start, min(start + batch_size, len(ids))) if ids[p] not in done]
        if positions:
            batches.append(positions)
    remaining = sum(len(b) for b in batches)
    bar = tqdm(total=len(ids), initial=len(ids) - remaining, unit="question", desc=f"crema eval {name}",
               disable=not progress, mininterval=1.0, file=sys.stderr)
    try:
        for prepared in _prepared_batches(processor, plan, dataset, batches, num_workers):
            records = predict_prepared(model, processor, prepared, settings)
            log.append(records)
            for record in records:
                done[record["id"]] = record
            bar.update(len(records))
    finally:
        bar.close()

    predictions = []
    for example_id in ids:
        record = dict(done[example_id])
        record["correct"] = score(name, record["prediction"], record["answer"], record["prediction_index"],
                                  record["answer_index"])
        predictions.append(record)
    result = {
        "model": model_name,
        "dataset": {"name": name, "title": info.title if info else name, "source": source["path"],
                    "kind": source["kind"], "num_examples": len(ids), "build": source.get("build")},
        "settings": settings.as_dict(),
        "summary": accuracy_summary(predictions, name),
        "predictions": predictions,
    }
    write_json_atomic(out, result)
    return result


def _prepared_batches(processor: Any, plan: InputPlan, dataset: Any, batches: list[list[int]], num_workers: int):
    def rows(positions: list[int]) -> list[dict[str, Any]]:
        return [dataset[p] for p in positions]

    if num_workers <= 0:
        for positions in batches:
            yield prepare_batch(processor, plan, rows(positions))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader([rows(p) for p in batches], batch_size=None, shuffle=False, num_workers=num_workers,
                        collate_fn=Preparer(processor, plan))
    yield from loader
