"""`crema dataset NAME --annotations FILE --media-root DIR --out DIR --as-split SPLIT`: one of the paper's benchmarks,
read from its official files, saved as a split of a `DatasetDict` folder that `crema train` and `crema eval` read.

Building it once (rather than from the annotation files at every run) checks every media path up front, reports the
questions whose files are missing, and gives training configs one folder with a `train` and a `test` split. Saving
is atomic: the folder holds its old splits or the new set, never a half-written split.

Importing this module imports only the standard library: `datasets` is imported when a dataset is built.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from .benchmark_datasets import BENCHMARKS, benchmark_info


def parse_root(text: str) -> tuple[str, str]:
    """`MODALITY=DIR` of `--root`."""
    modality, separator, folder = text.partition("=")
    if not separator or not modality or not folder:
        raise argparse.ArgumentTypeError(f"expected MODALITY=DIR, got {text!r}")
    return modality, folder


def add_benchmark_file_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that locate a benchmark's files (shared by `crema dataset` and `crema eval`)."""
    data = parser.add_argument_group("benchmark files (with a benchmark name)")
    data.add_argument("--annotations", help="the benchmark's official annotation file (csv/json)")
    data.add_argument("--media-root", help="the folder of the benchmark's media (videos, frames, features)")
    data.add_argument("--root", action="append", type=parse_root, default=[], metavar="MODALITY=DIR",
                      help="a folder for one modality, e.g. point_cloud=DIR, audio=DIR, flow=DIR (repeatable)")
    data.add_argument("--on-missing", choices=("skip", "error"), default="skip",
                      help="annotation rows whose media files are missing: skip them (default, reported) or stop")
    data.add_argument("--question", help="the fixed question of vggsound/touchqa/thermalqa (default: the built-in one)")
    data.add_argument("--split", help="vggsound: the csv split to keep (e.g. test); a saved DatasetDict: its split")


def build_from_annotations(
    name: str,
    annotations: str | None,
    media_root: str | None = None,
    roots: Mapping[str, str] | None = None,
    on_missing: str = "skip",
    question: str | None = None,
    split: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(Dataset, source) of benchmark `name` built from its annotation file; `source` is `{"name", "kind", "path",
    "build"}` with the build report (rows read, kept, skipped for missing media and the first missing path)."""
    info = benchmark_info(name)
    if annotations is None:
        raise ValueError(f"{info.name}: pass its annotation file with --annotations FILE (and --media-root DIR)")
    roots = dict(roots or {})
    unknown = sorted(set(roots) - set(info.roots))
    if unknown:
        raise ValueError(f"--root {', '.join(unknown)}: {info.name} reads {', '.join(info.roots)}")
    kwargs: dict[str, Any] = {f"{modality}_root": folder for modality, folder in roots.items()}
    for option, value in (("question", question), ("split", split)):
        if value is None:
            continue
        if option not in info.options:
            users = [b.name for b in BENCHMARKS.values() if option in b.options]
            raise ValueError(f"--{option} is only used by {', '.join(users)}")
        kwargs[option] = value
    data, report = info.build(annotations, media_root, on_missing=on_missing, return_report=True, **kwargs)
    build = {"rows_read": report.rows_read, "rows_kept": report.rows_kept,
             "skipped_missing_media": report.skipped_missing_media, "first_missing": report.first_missing,
             "message": report.message()}
    source = {"name": info.name, "kind": "annotations", "path": os.path.abspath(annotations), "build": build}
    if not len(data):
        raise ValueError(f"{info.name}: no questions: {report.message()}")
    return data, source


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `crema dataset` (no heavy imports)."""
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="BENCHMARK",
                        help=f"one of {', '.join(BENCHMARKS)}")
    add_benchmark_file_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="the DatasetDict folder to write (created, or a split added)")
    out.add_argument("--as-split", default="train", help="the split these questions become (default: train)")
    out.add_argument("--overwrite", action="store_true", help="replace the split if the folder already has it")


def existing_splits(out: str | os.PathLike, split: str, overwrite: bool = False) -> dict[str, Any]:
    """The splits already saved in `out` (none for a new or empty folder); refuses a folder that is not a saved
    `DatasetDict`, and an existing `split` unless `overwrite`. Checked before anything is built."""
    import datasets

    from modeling_crema.saving import recover_interrupted_save

    out = os.fspath(out)
    recover_interrupted_save(out)
    if not (os.path.isdir(out) and os.listdir(out)):
        return {}
    if not os.path.isfile(os.path.join(out, "dataset_dict.json")):
        raise ValueError(f"--out {out}: the folder exists and is not a DatasetDict saved with save_to_disk; "
                         "choose a new or empty folder")
    splits = dict(datasets.load_from_disk(out))
    if split in splits and not overwrite:
        raise ValueError(f"--out {out} already has the split {split!r} ({len(splits[split])} questions): pass "
                         "--overwrite to replace it, or --as-split another name")
    return splits


def save_split(data: Any, out: str | os.PathLike, split: str, overwrite: bool = False) -> list[str]:
    """Saves `data` as split `split` of the `DatasetDict` folder `out`, keeping its other splits; atomic (the
    folder is swapped in one step). Returns the folder's splits."""
    import datasets

    from modeling_crema.saving import atomic_directory

    splits = existing_splits(out, split, overwrite)
    splits[split] = data
    with atomic_directory(out) as staging:
        datasets.DatasetDict(splits).save_to_disk(staging)
    return list(splits)


def run_dataset(args: argparse.Namespace) -> int:
    """`crema dataset`: build the benchmark's rows and save them as a split of `--out`."""
    existing_splits(args.out, args.as_split, args.overwrite)  # refuse a bad target before reading any file
    data, source = build_from_annotations(args.benchmark, args.annotations, args.media_root, dict(args.root),
                                          args.on_missing, args.question, args.split)
    splits = save_split(data, args.out, args.as_split, overwrite=args.overwrite)
    build = source["build"]
    if build["skipped_missing_media"]:
        print(f"note: {build['message']}")
    print(f"saved {len(data)} {source['name']} questions as split {args.as_split!r} of {args.out} "
          f"(splits: {', '.join(splits)})")
    return 0
