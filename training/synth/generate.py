"""`generate_crema_synth`: write the clips, companion renders and the question `DatasetDict` of CREMA-Synth.

Layout of the output folder::

    clips/<id>.mp4       RGB video (H.264) + mono 16 kHz AAC audio track
    depth/<id>.mp4       depth render (grey, near = bright)
    thermal/<id>.mp4     thermal render (inferno heat map, hot = bright yellow)
    normal/<id>.mp4      surface-normal render (RGB = (n + 1) / 2 * 255)
    dataset/             `DatasetDict.save_to_disk` (paths relative to the output folder)
    synth_config.json    the generation parameters

Every clip is drawn from its own random stream, `SeedSequence([seed, crc32(split), index])`: the same seed gives
the same scenes, files and rows whatever the number of worker processes, and a split's clips do not depend on how
many clips the other splits have."""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import vocabulary as V

GENERATOR_VERSION = "crema-synth-1"
PATH_COLUMNS = ("video", "depth", "thermal", "normal")
COMPANIONS = ("depth", "thermal", "normal")
FOLDERS = {"video": "clips", "depth": "depth", "thermal": "thermal", "normal": "normal"}
OUTPUTS = ("clips", "depth", "thermal", "normal", "dataset", "synth_config.json")
DEFAULT_SPLITS = {"train": 1000, "validation": 100, "test": 100}
#: Largest object radius (fraction of the frame side) that still leaves a moving object room in the frame.
MAX_OBJECT_RADIUS = 0.25


def clip_seed(seed: int, split: str, index: int) -> "Any":
    import numpy as np

    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def _object_counts(question_types: Sequence[str] | None) -> tuple[int, ...]:
    """Object counts of the clips: those the question types about objects need (a type asked about any clip, e.g.
    beeps, fits them all), or one and two when every type is asked about any clip."""
    wanted = V.QUESTION_TYPES if question_types is None else tuple(question_types)
    counts = {V.TEMPLATES_BY_NAME[name].num_objects for name in wanted} - {None}
    return tuple(sorted(counts)) if counts else (1, 2)


def make_clip(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Render and write one clip (all its files) and return its question rows (paths relative to the output
    folder). `job` holds the output folder, split, index and generation parameters; runs in worker processes."""
    import numpy as np

    from .media import write_clip
    from .questions import scene_questions
    from .render import render_audio, render_frames
    from .scene import sample_scene

    split, index, root = job["split"], job["index"], Path(job["output_dir"])
    clip_id = f"{split}-{index:06d}"
    scene_seed, question_seed = clip_seed(job["seed"], split, index).spawn(2)
    scene_rng = np.random.default_rng(scene_seed)
    counts = job["object_counts"]
    num_objects = counts[int(scene_rng.integers(len(counts)))]
    scene = sample_scene(
        scene_rng, clip_id, image_size=job["image_size"], fps=job["fps"], seconds=job["seconds"],
        sampled_frames=job["sampled_frames"], motion=job["motion"], num_objects=num_objects,
        radius_range=tuple(job["object_radius"]),
    )
    frames = render_frames(scene)
    paths = {m: f"{FOLDERS[m]}/{clip_id}.mp4" for m in PATH_COLUMNS}
    write_clip(root / paths["video"], frames["video"], scene.fps, audio=render_audio(scene),
               sampling_rate=V.AUDIO_SAMPLING_RATE)
    for name in COMPANIONS:
        write_clip(root / paths[name], frames[name], scene.fps)
    questions = scene_questions(
        scene, np.random.default_rng(question_seed), job["question_types"], job["questions_per_clip"],
        job["shuffle_options"],
    )
    scene_json = json.dumps(scene.to_dict(), sort_keys=True)
    return [
        {"id": f"{clip_id}-{q['question_type']}", "clip_id": clip_id, "split": split, **paths, **q,
         "num_objects": len(scene.objects), "scene": scene_json}
        for q in questions
    ]


def dataset_features() -> "Any":
    from datasets import Features, List, Value

    text = Value("string")
    return Features(
        {
            "id": text, "clip_id": text, "split": text, "video": text, "depth": text, "thermal": text,
            "normal": text, "question": text, "options": List(text), "answer": text, "answer_index": Value("int32"),
            "question_type": text, "needed_modalities": List(text), "num_objects": Value("int32"), "scene": text,
        }
    )


def check_parameters(
    num_clips_per_split: Mapping[str, int], image_size: int, fps: float, seconds: float, sampled_frames: int,
    motion: str, question_types: Sequence[str] | None, questions_per_clip: int | None,
    object_radius: tuple[float, ...],
) -> None:
    """Raise a ValueError naming the parameter for any setting the generator cannot honour."""
    from .scene import MOTION_MODES

    if not num_clips_per_split:
        raise ValueError("num_clips_per_split is empty: give at least one split, e.g. {'train': 100}.")
    for split, count in num_clips_per_split.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(split)):
            raise ValueError(f"Split name {split!r} must be letters, digits or underscores (it names files).")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"The number of clips of split {split!r} must be a whole number >= 0, got {count!r}.")
    if sum(num_clips_per_split.values()) == 0:
        raise ValueError("Every split has 0 clips: nothing to generate.")
    if not isinstance(image_size, int) or image_size < 32 or image_size % 2 or image_size > 512:
        raise ValueError(f"image_size must be an even number of pixels in [32, 512], got {image_size!r}.")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}.")
    if not seconds >= 1.0:
        raise ValueError(f"seconds must be at least 1 (room for three beeps), got {seconds!r}.")
    if not isinstance(sampled_frames, int) or sampled_frames < 1:
        raise ValueError(f"sampled_frames must be a whole number >= 1, got {sampled_frames!r}.")
    if motion not in MOTION_MODES:
        raise ValueError(f"motion must be one of {MOTION_MODES}, got {motion!r}.")
    frames, needed = int(round(seconds * fps)), 2 * (sampled_frames if motion == "cuts" else 1)
    if frames < max(needed, 2):
        raise ValueError(
            f"{seconds:g} s at {fps:g} fps is {frames} frames; motion needs at least {max(needed, 2)} "
            f"(two per sampled frame): raise fps or seconds."
        )
    if question_types is not None:
        unknown = [name for name in question_types if name not in V.QUESTION_TYPES]
        if unknown or not question_types:
            raise ValueError(f"Unknown question types {unknown}; choose from {', '.join(V.QUESTION_TYPES)}.")
    if questions_per_clip is not None and (not isinstance(questions_per_clip, int) or questions_per_clip < 1):
        raise ValueError(f"questions_per_clip must be a whole number >= 1 or None (all), got {questions_per_clip!r}.")
    if len(object_radius) != 2 or not 0 < object_radius[0] <= object_radius[1] <= MAX_OBJECT_RADIUS:
        raise ValueError(
            f"object_radius must be (min, max) fractions of the frame side with 0 < min <= max <= "
            f"{MAX_OBJECT_RADIUS:g}, got {tuple(object_radius)!r}."
        )


def _prepare_output(output_dir: Path, overwrite: bool) -> None:
    existing = [name for name in OUTPUTS if (output_dir / name).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"'{output_dir}' already holds CREMA-Synth output ({', '.join(existing)}); choose another folder or "
            "pass overwrite=True (--overwrite)."
        )
    for name in existing:
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for folder in FOLDERS.values():
        (output_dir / folder).mkdir(parents=True, exist_ok=True)


def generate_crema_synth(
    output_dir: str | os.PathLike,
    num_clips_per_split: Mapping[str, int] | None = None,
    seed: int = 0,
    image_size: int = 64,
    fps: float = 8.0,
    seconds: float = 2.0,
    sampled_frames: int = 4,
    motion: str = "cuts",
    question_types: Sequence[str] | None = None,
    questions_per_clip: int | None = None,
    shuffle_options: bool = True,
    object_radius: tuple[float, float] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> "Any":
    """Generate CREMA-Synth into `output_dir` and return its `DatasetDict` (paths made absolute; the copy saved
    in `output_dir/dataset` keeps them relative, `load_crema_synth` resolves them).

    Args:
        num_clips_per_split: clips per split, default {"train": 1000, "validation": 100, "test": 100}.
        seed: the same seed gives the same scenes, files and rows.
        image_size: frame side in pixels (square frames; even, >= 32).
        fps, seconds: frame rate and duration of every clip (fps * seconds frames).
        sampled_frames: the frames T the model samples per clip (uniform segments). With `motion="cuts"` the
            objects jump to new random places between segments, so the sampled RGB frames say nothing about the
            motion, which only optical flow (each sampled frame and the next one) shows.
        motion: "cuts" (above) or "continuous" (one steady motion over the whole clip, visible in RGB too).
        question_types: restrict to these templates (`vocabulary.QUESTION_TYPES`); default all. Clips get the object
            counts these templates need (the audio ones fit any).
        questions_per_clip: ask this many applicable templates per clip at random; default all of them.
        shuffle_options: shuffle the multiple-choice options of every question.
        object_radius: (min, max) object radius as a fraction of the frame side, drawn uniformly (default
            `scene.RADIUS_RANGE`, 0.06-0.12). Larger objects show their shape to models that read small frames.
        num_workers: processes that render clips (default: the CPU count, up to 8; 0 renders in this process).
        overwrite: replace an earlier CREMA-Synth output in `output_dir` (only its own files and folders).
        progress: show a tqdm progress bar.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a worker process re-running a script that calls us without a main guard: touch nothing
        raise RuntimeError(
            "generate_crema_synth was called while a worker process was starting: call it under "
            "`if __name__ == '__main__':` in scripts. Nothing was written."
        )
    from .scene import RADIUS_RANGE

    num_clips_per_split = dict(DEFAULT_SPLITS if num_clips_per_split is None else num_clips_per_split)
    question_types = None if question_types is None else tuple(question_types)
    object_radius = RADIUS_RANGE if object_radius is None else tuple(object_radius)
    check_parameters(num_clips_per_split, image_size, fps, seconds, sampled_frames, motion, question_types,
                     questions_per_clip, object_radius)
    output_dir = Path(output_dir)
    _prepare_output(output_dir, overwrite)
    common = {
        "output_dir": str(output_dir), "seed": int(seed), "image_size": int(image_size), "fps": float(fps),
        "seconds": float(seconds), "sampled_frames": int(sampled_frames), "motion": motion,
        "question_types": question_types, "questions_per_clip": questions_per_clip,
        "shuffle_options": bool(shuffle_options), "object_counts": _object_counts(question_types),
        "object_radius": [float(r) for r in object_radius],
    }
    jobs = [
        {**common, "split": split, "index": index}
        for split, count in num_clips_per_split.items()
        for index in range(count)
    ]
    rows = _run_jobs(jobs, num_workers, progress)

    from datasets import Dataset, DatasetDict

    features = dataset_features()
    per_split: dict[str, list[dict]] = {split: [] for split in num_clips_per_split}
    for clip_rows in rows:
        for row in clip_rows:
            per_split[row["split"]].append(row)
    dataset = DatasetDict(
        {
            split: Dataset.from_dict({name: [row[name] for row in split_rows] for name in features}, features=features)
            for split, split_rows in per_split.items()
            if split_rows  # a split of 0 clips is left out (`datasets` cannot load an empty split back)
        }
    )
    _save(dataset, output_dir / "dataset", progress)
    config = {
        "generator": GENERATOR_VERSION, "seed": int(seed), "num_clips_per_split": num_clips_per_split,
        "image_size": image_size, "fps": fps, "seconds": seconds, "sampled_frames": sampled_frames,
        "motion": motion, "question_types": list(question_types or V.QUESTION_TYPES),
        "questions_per_clip": questions_per_clip, "shuffle_options": shuffle_options,
        "object_radius": list(object_radius), "audio_sampling_rate": V.AUDIO_SAMPLING_RATE,
        "num_questions": {split: len(split_rows) for split, split_rows in per_split.items()},
    }
    (output_dir / "synth_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return load_crema_synth(output_dir)


def _save(dataset: "Any", path: Path, progress: bool) -> None:
    import datasets

    enabled = not datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(path))
    finally:
        if enabled and not progress:
            datasets.enable_progress_bars()


def _run_jobs(jobs: list[dict], num_workers: int | None, progress: bool) -> list[list[dict]]:
    from tqdm.auto import tqdm

    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), desc="CREMA-Synth clips", unit="clip", disable=not progress)
    try:
        if num_workers > 1 and len(jobs) >= 4 * num_workers:
            results = _run_in_pool(jobs, num_workers, bar)
            if results is not None:
                return results
            bar.reset()
        results = []
        for job in jobs:
            results.append(make_clip(job))
            bar.update()
        return results
    finally:
        bar.close()


def _run_in_pool(jobs: list[dict], num_workers: int, bar: "Any") -> list[list[dict]] | None:
    """The jobs' results from `num_workers` processes, in order; None (with a warning) when the processes could
    not start, e.g. from a script without a main guard."""
    import multiprocessing
    import warnings
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: safe whatever threads the calling process runs (a forked copy of a threaded process can hang)
    context = multiprocessing.get_context("spawn")
    results = []
    try:
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            for clip_rows in pool.map(make_clip, jobs, chunksize=8):
                results.append(clip_rows)
                bar.update()
    except BrokenProcessPool:
        warnings.warn(
            "CREMA-Synth worker processes could not start (a script that calls generate_crema_synth needs "
            "`if __name__ == '__main__':`); rendering in this process instead.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return results


def load_crema_synth(output_dir: str | os.PathLike, absolute_paths: bool = True) -> "Any":
    """Load a generated CREMA-Synth `DatasetDict` from `output_dir`; with `absolute_paths` the video and companion
    columns are joined to `output_dir` so they open from any working directory."""
    from datasets import DatasetDict, Value, load_from_disk

    output_dir = Path(output_dir)
    if not (output_dir / "dataset").is_dir():
        raise ValueError(f"'{output_dir}' holds no CREMA-Synth dataset (no 'dataset' folder); generate it first.")
    dataset = load_from_disk(str(output_dir / "dataset"))
    if not absolute_paths:
        return dataset
    root = output_dir.resolve()
    resolved = {}
    for split, data in dataset.items():
        columns = data.column_names
        for name in PATH_COLUMNS:
            values = [str(root / path) for path in data[name]]
            data = data.remove_columns(name).add_column(name, values, feature=Value("string"))
        resolved[split] = data.select_columns(columns)
    return DatasetDict(resolved)


def processor_inputs(row: Mapping[str, Any] | Sequence[Mapping[str, Any]], modalities: Sequence[str] = V.MODALITIES,
                     with_answer: bool = True) -> dict[str, Any]:
    """Keyword arguments for `CremaProcessor(...)` from a row (or a list of rows) of CREMA-Synth, for the given
    modalities: the RGB clip, flow derived from it (`flow=True`), the clip's own audio track (`audio=True`), the
    thermal companion (`thermal=`), and the depth and normal renders as precomputed companions (`visual=`)."""
    rows = [row] if isinstance(row, Mapping) else list(row)
    single = isinstance(row, Mapping)
    unknown = [m for m in modalities if m not in V.MODALITIES]
    if unknown:
        raise ValueError(f"Unknown CREMA-Synth modalities {unknown}; known: {', '.join(V.MODALITIES)}.")

    def pick(name: str) -> Any:
        return rows[0][name] if single else [r[name] for r in rows]

    kwargs: dict[str, Any] = {"videos": pick("video"), "question": pick("question"), "options": pick("options")}
    if with_answer:
        kwargs["answer"] = pick("answer_index")
    if "video" not in modalities:
        kwargs["include_video"] = False
    if "flow" in modalities:
        kwargs["flow"] = True
    if "audio" in modalities:
        kwargs["audio"] = True
    if "thermal" in modalities:
        kwargs["thermal"] = pick("thermal")
    visual = {m: pick(m) for m in ("depth", "normal") if m in modalities}
    if visual:
        kwargs["visual"] = visual
    return kwargs
