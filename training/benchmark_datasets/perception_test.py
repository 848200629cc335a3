"""PerceptionTest, multiple-choice video QA (3 options; paper Table 13).

Annotation files:
- the official `mc_question_*.json`: an object keyed by video id,
  `{"video_1234": {"metadata": {...}, "mc_question": [{"id", "question", "options", "answer_id", "area",
  "reasoning", "tag"}, ...], ...}}`; `question_type` is the question's `area` (memory, abstraction, physics,
  semantics). The test split hides `answer_id`: evaluate on the validation split;
- the NExT-QA-like form (csv or a json list `{video, qid, question, num_option, a0.., answer}`, optionally with an
  `area` or `type` field; `all` without one).

Media: `video_root/{video_id}.mp4` or a folder of frames `video_root/{video_id}/`.
"""

from __future__ import annotations

import os

from .nextqa import multiple_choice_rows
from .schema import (
    NO_QUESTION_TYPE, AnnotatedRow, AnnotationError, Folder, builder, check_question_type, find_media, make_row,
    media_folders, parse_int, read_records, require_fields, video_roots,
)

NAME = "perception_test"
TITLE = "PerceptionTest"
AREAS = ("memory", "abstraction", "physics", "semantics")
QUESTION_TYPES = AREAS + (NO_QUESTION_TYPE,)
ROOTS = ("video", "flow", "depth", "normal")


def read(
    annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
    flow_root: Folder = None, depth_root: Folder = None, normal_root: Folder = None,
) -> list[AnnotatedRow]:
    """The schema rows of a PerceptionTest annotation file, media paths not yet checked."""
    path = os.fspath(annotation_file)
    roots = video_roots(media_root, video_root, flow_root, depth_root, normal_root)
    records = read_records(path)
    if not records or not isinstance(records[0][1], tuple):
        return multiple_choice_rows(
            records, path, dataset=NAME, question_types=QUESTION_TYPES, roots=roots,
            type_fields=("area", "type"), default_type=NO_QUESTION_TYPE,
        )
    folders = media_folders(roots)
    rows = []
    for line, (video_key, entry) in records:
        if not isinstance(entry, dict):
            raise AnnotationError(path, line, f"video {video_key!r}: expected an object, got {type(entry).__name__}")
        metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else {}
        video_id = str(metadata.get("video_id") or video_key)
        questions = entry.get("mc_question") or []
        if not isinstance(questions, list):
            raise AnnotationError(path, line, f"video {video_key!r}: mc_question must be a list")
        media = find_media(folders, video_id)
        for question in questions:
            require_fields(question, ("id", "question", "options"), path, line)
            if question.get("answer_id") is None:
                raise AnnotationError(
                    path, line, f"video {video_key!r}, question {question['id']}: no answer_id (the test split "
                    "hides the answers; evaluate on the validation split)"
                )
            options = question["options"]
            if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
                raise AnnotationError(path, line, f"video {video_key!r}, question {question['id']}: options must "
                                      "be a non-empty list of strings")
            answer_index = parse_int(question["answer_id"], "answer_id", path, line)
            if not 0 <= answer_index < len(options):
                raise AnnotationError(path, line, f"video {video_key!r}, question {question['id']}: answer_id "
                                      f"{answer_index} is out of range for {len(options)} options")
            area = str(question.get("area") or NO_QUESTION_TYPE).strip()
            check_question_type(area, QUESTION_TYPES, path, line)
            rows.append(AnnotatedRow(line, make_row(
                id=f"{video_id}_{question['id']}", dataset=NAME, prompt_preset=NAME, question_type=area,
                question=str(question["question"]).strip(), options=[o.strip() for o in options],
                answer=options[answer_index].strip(), answer_index=answer_index, **media,
            )))
    return rows


build = builder(read, NAME, """A `datasets.Dataset` in the shared schema. `media_root`: the videos folder;
`video_root`/`flow_root`/... override it per modality.""")
