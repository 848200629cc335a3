"""ThermalQA (the authors' QA on Thermal-IM; paper Table 4): a fixed question, the action label as the answer.

Annotation file (`thermalqa_train.json` / `thermalqa_val.json`): a list of `{video_id, question_id, start, answer}`
(`label` is accepted for `answer`; a `question` field replaces the fixed question "What action might have occurred
before this video?").

Media, as the authors' tools write them under `media_root`: the clip as `video_frames/{question_id}/` or
`clips/{question_id}.mp4`, the thermal clip as `thermal_frames/{question_id}/` or
`thermal_clips/{question_id}_touch.mp4` (the authors' tool names thermal clips `_touch` too; `_thermal` and a
bare `{question_id}` are accepted). `video_root=` / `thermal_root=` name other folders.
"""

from __future__ import annotations

import os

from .schema import NO_QUESTION_TYPE, AnnotatedRow, Folder, builder
from .touchqa import SensorQA, read_sensor_qa

NAME = "thermalqa"
TITLE = "ThermalQA"
MODALITY_WORD = "thermal heatmap"
QUESTION_TYPES = (NO_QUESTION_TYPE,)
ROOTS = ("video", "thermal")
DEFAULT_QUESTION = "What action might have occurred before this video?"


SENSOR_QA = SensorQA(NAME, "thermal", MODALITY_WORD, DEFAULT_QUESTION, (
    ("thermal_frames", ("{stem}",)), ("thermal_clips", ("{stem}_touch", "{stem}_thermal", "{stem}")),
))


def read(annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
         thermal_root: Folder = None, question: str | None = None) -> list[AnnotatedRow]:
    """The schema rows of a ThermalQA annotation file, media paths not yet checked."""
    return read_sensor_qa(SENSOR_QA, annotation_file, media_root, video_root, thermal_root, question)


build = builder(read, NAME, "A `datasets.Dataset` in the shared schema (see the module docstring for the media "
                "layout).")
