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
from dataclasses import dataclass

from .schema import (
    NO_QUESTION_TYPE, AnnotatedRow, AnnotationError, Folder, MediaFolder, builder, find_in_folders, make_row,
    optional_folder, question_list, read_records, require_fields,
)

NAME = "touchqa"
TITLE = "TouchQA"
MODALITY_WORD = "touch map"
QUESTION_TYPES = (NO_QUESTION_TYPE,)
ROOTS = ("video", "touch")
DEFAULT_QUESTION = "What material is the person touching?"


@dataclass(frozen=True)
class SensorQA:
    """What sets one "frames + fixed question + class label" benchmark (TouchQA, ThermalQA) apart. `sensor_layout`:
    (sub-folder of `media_root`, file-name patterns) pairs tried in order for the sensor clip."""

    dataset: str
    sensor: str
    modality_word: str
    default_question: str
    sensor_layout: tuple[tuple[str, tuple[str, ...]], ...]


def read_sensor_qa(
    spec: SensorQA,
    annotation_file: str | os.PathLike,
    media_root: Folder,
    video_root: Folder = None,
    sensor_root: Folder = None,
    question: str | None = None,
) -> list[AnnotatedRow]:
    """Rows of a "frames + fixed question + class label" annotation file (TouchQA, ThermalQA)."""
    path = os.fspath(annotation_file)
    video_folders: list[MediaFolder] = []
    sensor_folders: list[MediaFolder] = []
    if video_root is not None:
        video_folders.append(MediaFolder(optional_folder(video_root)))
    elif media_root is not None:
        video_folders += [MediaFolder(os.path.join(media_root, "video_frames")),
                          MediaFolder(os.path.join(media_root, "clips"), frames_folder=False)]
    patterns = tuple(dict.fromkeys(p for _, names in spec.sensor_layout for p in names))
    if sensor_root is not None:
        sensor_folders.append(MediaFolder(optional_folder(sensor_root), patterns=patterns))
    elif media_root is not None:
        sensor_folders += [MediaFolder(os.path.join(media_root, folder), patterns=names,
                                       frames_folder=folder.endswith("frames"))
                           for folder, names in spec.sensor_layout]
    rows = []
    for line, record in question_list(read_records(path), path):
        require_fields(record, ("question_id",), path, line)
        label = record.get("answer", record.get("label"))
        if label is None or not str(label).strip():
            raise AnnotationError(path, line, "missing field answer (the class label; 'label' is accepted too)")
        question_id = str(record["question_id"]).strip()
        media = {}
        if video_folders:
            media["video"] = find_in_folders(video_folders, question_id)
        if sensor_folders:
            media[spec.sensor] = find_in_folders(sensor_folders, question_id)
        text = str(record.get("question") or question or spec.default_question).strip()
        rows.append(AnnotatedRow(line, make_row(
            id=question_id, dataset=spec.dataset, prompt_preset=spec.dataset, question_type=NO_QUESTION_TYPE,
            question=text, answer=str(label).strip(), modality_word=spec.modality_word, **media,
        )))
    return rows


SENSOR_QA = SensorQA(NAME, "touch", MODALITY_WORD, DEFAULT_QUESTION,
                     (("touch_frames", ("{stem}",)), ("touch_clips", ("{stem}_touch", "{stem}"))))


def read(annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
         touch_root: Folder = None, question: str | None = None) -> list[AnnotatedRow]:
    """The schema rows of a TouchQA annotation file, media paths not yet checked."""
    return read_sensor_qa(SENSOR_QA, annotation_file, media_root, video_root, touch_root, question)


build = builder(read, NAME, "A `datasets.Dataset` in the shared schema (see the module docstring for the media "
                "layout).")
