"""NExT-QA (multiple choice, 5 options; paper Table 3).

Annotation files, as published:
- the official csv: `video, frame_count, width, height, question, answer, qid, type, a0, a1, a2, a3, a4`
  (`answer` = index of the correct option);
- the SeViLA / reference json (the authors' format): a list of `{video, num_option, qid, a0..a4, answer, question}`
  where `qid` is `{type}_{video}_{qid}` and `video` is already the `map_vid_vidorID.json` path.

Question types: CW/CH (causal why/how), TN/TP/TC (temporal next/previous/current), DC/DL/DO (descriptive count,
location, other).

Media: `video_root/{video}` + a video extension, or a folder of frames `video_root/{video}/`. The official videos
sit in sub-folders (`NExTVideo/1025/4010069381.mp4`): `map_vid_vidorID.json` (found in `video_root` or beside the
annotation file, or passed as `video_map=`) maps each id to that path. Precomputed flow/depth/normal frames, when
given (`flow_root=`, ...), are found under the same relative path (the reference keeps them in sibling folders
`{video_root}_flow/`, `_depth/`, `_norm/`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .schema import (
    AnnotatedRow, AnnotationError, Folder, builder, check_question_type, find_media, make_row, media_folders,
    parse_int, question_list, read_records, require_fields, video_roots,
)

NAME = "nextqa"
TITLE = "NExT-QA"
QUESTION_TYPES = ("CW", "CH", "TN", "TP", "TC", "DC", "DL", "DO")
ROOTS = ("video", "flow", "depth", "normal")
VIDEO_MAP_NAME = "map_vid_vidorID.json"
MAX_OPTIONS = 10


def read(
    annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
    flow_root: Folder = None, depth_root: Folder = None, normal_root: Folder = None,
    video_map: str | os.PathLike | dict[str, str] | None = None,
) -> list[AnnotatedRow]:
    """The schema rows of a NExT-QA annotation file (csv or json), media paths not yet checked."""
    path = os.fspath(annotation_file)
    roots = video_roots(media_root, video_root, flow_root, depth_root, normal_root)
    mapping = load_video_map(video_map, roots["video"], path)
    return multiple_choice_rows(
        read_records(path), path, dataset=NAME, question_types=QUESTION_TYPES, roots=roots, video_map=mapping,
    )


build = builder(read, NAME, """A `datasets.Dataset` in the shared schema (see `schema.py`). `media_root`: the
videos folder; `video_root`/`flow_root`/`depth_root`/`normal_root` override it per modality; `video_map`: a
`map_vid_vidorID.json` path or dict. Rows whose media are missing are skipped (`on_missing="skip"`, logged) or
refused (`"error"`).""")


def load_video_map(
    video_map: str | os.PathLike | dict[str, str] | None, video_root: str | None, annotation_file: str
) -> dict[str, str]:
    """id -> relative video path: the given dict or file, else `map_vid_vidorID.json` found in the video folder
    or beside the annotation file, else {}."""
    if isinstance(video_map, dict):
        return {str(k): str(v) for k, v in video_map.items()}
    if video_map is None:
        candidates = [os.path.join(folder, VIDEO_MAP_NAME)
                      for folder in (video_root, os.path.dirname(os.path.abspath(annotation_file))) if folder]
        video_map = next((c for c in candidates if os.path.isfile(c)), None)
        if video_map is None:
            return {}
    video_map = os.fspath(video_map)
    if not os.path.isfile(video_map):
        raise FileNotFoundError(f"no such video map file: {video_map}")
    with open(video_map, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise AnnotationError(video_map, error.lineno, f"invalid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise AnnotationError(video_map, 1, "expected a JSON object mapping video ids to paths")
    return {str(k): str(v) for k, v in data.items()}


def multiple_choice_rows(
    records: list[tuple[int, Any]],
    path: str,
    *,
    dataset: str,
    question_types: tuple[str, ...],
    roots: dict[str, str | None],
    video_map: dict[str, str] | None = None,
    type_fields: tuple[str, ...] = ("type",),
    default_type: str | None = None,
) -> list[AnnotatedRow]:
    """Rows of NExT-QA-style multiple choice records (`video, question, answer, qid, type, a0..`; also used for
    PerceptionTest in the same form). The type comes from a `type_fields` field, else the `{type}_` prefix of
    `qid` (SeViLA json), else `default_type` (an error when None)."""
    video_map = video_map or {}
    folders = media_folders(roots)
    rows = []
    for line, record in question_list(records, path):
        require_fields(record, ("video", "question", "answer", "qid"), path, line)
        video = str(record["video"]).strip()
        qid = str(record["qid"]).strip()
        question_type = next((str(record[f]).strip() for f in type_fields if str(record.get(f) or "").strip()), None)
        parts = qid.split("_")
        if len(parts) >= 3 and parts[0] in question_types:  # SeViLA qid: {type}_{video}_{qid}
            question_type = question_type or parts[0]
            example_id = "_".join(parts[1:])
        else:
            example_id = f"{os.path.basename(video)}_{qid}"
        if question_type is None:
            if default_type is None:
                raise AnnotationError(path, line, f"no question type (a {'/'.join(type_fields)} field or a "
                                      "'{type}_' prefix of qid)")
            question_type = default_type
        check_question_type(question_type, question_types, path, line)
        options = _options(record, path, line)
        answer_index = parse_int(record["answer"], "answer (the correct option's index)", path, line)
        if not 0 <= answer_index < len(options):
            raise AnnotationError(path, line, f"answer index {answer_index} is out of range for {len(options)} options")
        media = find_media(folders, video_map.get(video, video))
        rows.append(AnnotatedRow(line, make_row(
            id=example_id, dataset=dataset, prompt_preset=dataset, question_type=question_type,
            question=str(record["question"]).strip(), options=options, answer=options[answer_index],
            answer_index=answer_index, **media,
        )))
    return rows


def _options(record: dict[str, Any], path: str, line: int) -> list[str]:
    if record.get("num_option") not in (None, ""):
        count = parse_int(record["num_option"], "num_option", path, line)
        if not 1 <= count <= MAX_OPTIONS:
            raise AnnotationError(path, line, f"num_option must be 1..{MAX_OPTIONS}, got {count}")
        missing = [f"a{i}" for i in range(count) if record.get(f"a{i}") is None]
        if missing:
            raise AnnotationError(path, line, f"num_option is {count} but option(s) {', '.join(missing)} are missing")
    else:
        count = 0
        while count < MAX_OPTIONS and str(record.get(f"a{count}") or "").strip():
            count += 1
        if count == 0:
            raise AnnotationError(path, line, "no options (fields a0, a1, ...)")
    options = [str(record[f"a{i}"]).strip() for i in range(count)]
    empty = [f"a{i}" for i, option in enumerate(options) if not option]
    if empty:
        raise AnnotationError(path, line, f"empty option(s) {', '.join(empty)}")
    return options
