"""TouchQA (the authors' QA on Touch&Go; paper Table 4): a fixed question, the material class as the answer.

Annotation file (`touchqa_train.json` / `touchqa_val.json`, as the authors' tools read them): a list of
`{video_id, question_id, start, end, answer}` (`label` is accepted for `answer`; a `question` field, when present,
replaces the fixed question "What material is the person touching?").

Media, as the authors' tools write them under `media_root`: the clip as frames `video_frames/{question_id}/` or as
`clips/{question_id}.mp4`, the touch (GelSight) clip as `touch_frames/{question_id}/` or
`touch_clips/{question_id}_touch.mp4`. `video_root=` / `touch_root=` name other folders holding
`{question_id}/` or `{question_id}.mp4` (`{question_id}_touch.mp4` for touch).

`read_sensor_qa` is shared with ThermalQA.
"""

from __future__ import annotations

import os
from typing import Any

from .schema import (
    NO_QUESTION_TYPE,
    AnnotatedRow,
    AnnotationError,
    MediaFolder,
    find_in_folders,
    finish,
    make_row,
    optional_folder,
    read_records,
    require_fields,
)

NAME = "touchqa"
TITLE = "TouchQA"
MODALITY_WORD = "touch map"
QUESTION_TYPES = (NO_QUESTION_TYPE,)
ROOTS = ("video", "touch")
DEFAULT_QUESTION = "What material is the person touching?"


def read_sensor_qa(
    annotation_file: str | os.PathLike,
    media_root: str | os.PathLike | None,
    *,
    dataset: str,
    sensor: str,
    modality_word: str,
    default_question: str,
    sensor_layout: tuple[tuple[str, tuple[str, ...]], ...],
    video_root: str | os.PathLike | None = None,
    sensor_root: str | os.PathLike | None = None,
    question: str | None = None,
) -> list[AnnotatedRow]:
    """Rows of a "frames + fixed question + class label" annotation file (TouchQA, ThermalQA). `sensor_layout`:
    (sub-folder of `media_root`, file-name patterns) pairs tried in order for the sensor clip."""
    path = os.fspath(annotation_file)
    video_folders: list[MediaFolder] = []
    sensor_folders: list[MediaFolder] = []
    if video_root is not None:
        video_folders.append(MediaFolder(optional_folder(video_root)))
    elif media_root is not None:
        video_folders += [MediaFolder(os.path.join(media_root, "video_frames")),
                          MediaFolder(os.path.join(media_root, "clips"), frames_folder=False)]
    patterns = tuple(dict.fromkeys(p for _, names in sensor_layout for p in names))
    if sensor_root is not None:
        sensor_folders.append(MediaFolder(optional_folder(sensor_root), patterns=patterns))
    elif media_root is not None:
        sensor_folders += [MediaFolder(os.path.join(media_root, folder), patterns=names,
                                       frames_folder=folder.endswith("frames"))
                           for folder, names in sensor_layout]
    rows = []
    for line, record in read_records(path):
        if isinstance(record, tuple):
            raise AnnotationError(path, line, "expected a list of question records, got a JSON object")
        require_fields(record, ("question_id",), path, line)
        label = record.get("answer", record.get("label"))
        if label is None or not str(label).strip():
            raise AnnotationError(path, line, "missing field answer (the class label; 'label' is accepted too)")
        question_id = str(record["question_id"]).strip()
        media = {}
        if video_folders:
            media["video"] = find_in_folders(video_folders, question_id)
        if sensor_folders:
            media[sensor] = find_in_folders(sensor_folders, question_id)
        text = str(record.get("question") or question or default_question).strip()
        rows.append(AnnotatedRow(line, make_row(
            id=question_id, dataset=dataset, prompt_preset=dataset, question_type=NO_QUESTION_TYPE, question=text,
            answer=str(label).strip(), modality_word=modality_word, **media,
        )))
    return rows


def read(
    annotation_file: str | os.PathLike,
    media_root: str | os.PathLike | None = None,
    *,
    video_root: str | os.PathLike | None = None,
    touch_root: str | os.PathLike | None = None,
    question: str | None = None,
) -> list[AnnotatedRow]:
    """The schema rows of a TouchQA annotation file, media paths not yet checked."""
    return read_sensor_qa(
        annotation_file, media_root, dataset=NAME, sensor="touch", modality_word=MODALITY_WORD,
        default_question=DEFAULT_QUESTION,
        sensor_layout=(("touch_frames", ("{stem}",)), ("touch_clips", ("{stem}_touch", "{stem}"))),
        video_root=video_root, sensor_root=touch_root, question=question,
    )


def build(
    annotation_file: str | os.PathLike,
    media_root: str | os.PathLike | None = None,
    *,
    on_missing: str = "skip",
    return_report: bool = False,
    **kwargs: Any,
):
    """A `datasets.Dataset` in the shared schema (see the module docstring for the media layout)."""
    rows = read(annotation_file, media_root, **kwargs)
    return finish(rows, annotation_file, NAME, on_missing, return_report)
