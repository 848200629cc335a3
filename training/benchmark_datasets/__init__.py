"""Builders for the benchmarks of the paper: each reads the official annotation file (and finds the media files)
and returns a `datasets.Dataset` in one shared schema (`schema.py` documents the columns).

```python
from crema_training.benchmark_datasets import build_benchmark

dataset = build_benchmark("nextqa", "nextqa/val.csv", media_root="NExTVideo")       # map_vid_vidorID.json found there
dataset = build_benchmark("sqa3d", "sqa_task/test.json", media_root="scannet_feat", video_root="scannet_videos")
dataset.save_to_disk("sqa3d-test")                                                 # `crema eval MODEL sqa3d-test`
```

Importing this package imports only the standard library (`datasets` is imported when a dataset is made).
"""

from __future__ import annotations

import os
from typing import Any

from . import music_avqa, nextqa, perception_test, sqa3d, thermalqa, touchqa, vggsound
from .schema import (
    COLUMNS,
    MEDIA_COLUMNS,
    NO_QUESTION_TYPE,
    AnnotationError,
    BenchmarkInfo,
    BuildReport,
    features,
    missing_columns,
    rows_to_dataset,
)


def _info(module, answer_format: str, max_new_tokens: int = 10, options: tuple[str, ...] = (),
          aliases: tuple[str, ...] = ()) -> BenchmarkInfo:
    return BenchmarkInfo(
        name=module.NAME, title=module.TITLE, build=module.build, read=module.read, answer_format=answer_format,
        modality_word=getattr(module, "MODALITY_WORD", ""), question_types=tuple(module.QUESTION_TYPES),
        max_new_tokens=max_new_tokens, roots=tuple(module.ROOTS), options=options, aliases=aliases,
    )


#: The benchmarks, by name (also the `dataset` and `prompt_preset` value of their rows). `max_new_tokens` is
#: the reference's generation length (DESIGN §3: 10 for MUSIC-AVQA, 40 for SQA3D).
BENCHMARKS: dict[str, BenchmarkInfo] = {
    info.name: info
    for info in (
        _info(nextqa, "multiple_choice", aliases=("next-qa", "next_qa")),
        _info(music_avqa, "open_ended", aliases=("music-avqa", "musicavqa", "avqa")),
        _info(sqa3d, "open_ended", max_new_tokens=40),
        _info(perception_test, "multiple_choice", aliases=("perception-test", "perceptiontest", "perception")),
        _info(vggsound, "open_ended", options=("question", "split")),
        _info(touchqa, "open_ended", options=("question",), aliases=("touch-qa", "touch_qa")),
        _info(thermalqa, "open_ended", options=("question",), aliases=("thermal-qa", "thermal_qa")),
    )
}


def benchmark_info(name: str) -> BenchmarkInfo:
    """The benchmark called `name` (its name or an alias, case-insensitive); a ValueError lists the known ones."""
    key = name.strip().lower()
    for info in BENCHMARKS.values():
        if key == info.name or key in info.aliases:
            return info
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def build_benchmark(
    name: str,
    annotation_file: str | os.PathLike,
    media_root: str | os.PathLike | None = None,
    *,
    on_missing: str = "skip",
    return_report: bool = False,
    **kwargs: Any,
):
    """`benchmark_info(name).build(...)`: the benchmark's rows as a `datasets.Dataset` in the shared schema.

    Args:
        annotation_file: the official annotation file (see each module's docstring for the formats).
        media_root: the folder of the benchmark's media in its published layout (`None`: media columns stay
            null and nothing is checked).
        on_missing: `"skip"` rows whose media files are missing (logged with the count and the first path) or
            raise (`"error"`) naming the annotation file, line and path.
        return_report: also return the `BuildReport` (rows read, kept, skipped, first missing path).
        kwargs: per-modality folders (`video_root=`, `audio_root=`, `point_cloud_root=`, ...) and the builder's
            options (`question=`, `split=` for VGGSound).
    """
    info = benchmark_info(name)
    accepted = {f"{m}_root" for m in info.roots} | set(info.options) | ({"video_map"} if info.name == "nextqa" else set())
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"{info.name} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted)) or 'no options'}"
        )
    return info.build(annotation_file, media_root, on_missing=on_missing, return_report=return_report, **kwargs)


__all__ = [
    "BENCHMARKS", "COLUMNS", "MEDIA_COLUMNS", "NO_QUESTION_TYPE", "AnnotationError", "BenchmarkInfo", "BuildReport",
    "benchmark_info", "build_benchmark", "features", "missing_columns", "rows_to_dataset",
]
