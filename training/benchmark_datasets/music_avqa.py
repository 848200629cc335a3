"""MUSIC-AVQA (open-ended audio-visual QA; paper Table 1).

Annotation file, as published (`avqa-test.json`, `json_update/`): a list of
`{video_id, question_id, type, question_content, templ_values, anser}`:
- `type` is a list `["Audio-Visual", "Counting"]` (the files store it as the JSON text of that list);
- `question_content` holds placeholders such as `<Object>`, `<Instrument>`, `<LR>`, filled in order from
  `templ_values` (also stored as the JSON text of a list). The reference replaced each placeholder name everywhere
  with the first value it met, so a question with two `<Object>`s got the first value twice; here the values go in
  order, one per placeholder;
- the answer field really is spelled `anser`. Answers keep the file's text (`acoustic_guitar`): the `music_avqa`
  prompt preset and the metrics read `_` as a space, as the reference did.

Question types (`question_type` = `{category}/{type}`): Audio/Counting, Audio/Comparative, Visual/Counting,
Visual/Location, Audio-Visual/{Existential, Location, Counting, Comparative, Temporal}.

Media: `video_root/{video_id}.mp4` (or a folder of frames); audio from `audio_root/{video_id}` + an audio or video
extension, by default the video files themselves (their audio track, as the reference).
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any

from .schema import (
    AnnotatedRow, AnnotationError, Folder, builder, check_question_type, find_media, make_row, media_folders,
    question_list, read_records, require_fields, resolve_roots, video_roots,
)

NAME = "music_avqa"
TITLE = "MUSIC-AVQA"
MODALITY_WORD = "audio"
QUESTION_TYPES = (
    "Audio/Counting", "Audio/Comparative",
    "Visual/Counting", "Visual/Location",
    "Audio-Visual/Existential", "Audio-Visual/Location", "Audio-Visual/Counting", "Audio-Visual/Comparative",
    "Audio-Visual/Temporal",
)
ROOTS = ("video", "audio", "flow", "depth", "normal")
PLACEHOLDER = re.compile(r"<([^<>]+)>")


def read(
    annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
    audio_root: Folder = None, flow_root: Folder = None, depth_root: Folder = None, normal_root: Folder = None,
) -> list[AnnotatedRow]:
    """The schema rows of a MUSIC-AVQA annotation file, media paths not yet checked."""
    path = os.fspath(annotation_file)
    audio = resolve_roots(media_root, {"audio": audio_root or video_root}, {"audio": ""})
    folders = media_folders({**video_roots(media_root, video_root, flow_root, depth_root, normal_root), **audio})
    rows = []
    for line, record in question_list(read_records(path), path):
        require_fields(record, ("video_id", "question_id", "type", "question_content"), path, line)
        if record.get("anser") is None and record.get("answer") is None:
            raise AnnotationError(path, line, "missing field anser (the answer; the file spells it 'anser')")
        answer = str(record["anser"] if record.get("anser") is not None else record["answer"]).strip()
        category, kind = _parse_list(record["type"], "type", path, line, length=2)
        question_type = check_question_type(f"{category}/{kind}", QUESTION_TYPES, path, line)
        question = fill_placeholders(
            str(record["question_content"]), _parse_list(record.get("templ_values") or [], "templ_values", path, line),
            path, line,
        )
        media = find_media(folders, str(record["video_id"]).strip())
        rows.append(AnnotatedRow(line, make_row(
            id=str(record["question_id"]).strip(), dataset=NAME, prompt_preset=NAME, question_type=question_type,
            question=question, answer=answer, modality_word=MODALITY_WORD, **media,
        )))
    return rows


build = builder(read, NAME, """A `datasets.Dataset` in the shared schema. `media_root`: the folder of the videos
(`MUSIC-AVQA-videos-Real`); `video_root`/`audio_root`/`flow_root`/... override it per modality.""")


def fill_placeholders(question: str, values: list[str], path: str = "", line: int | None = None) -> str:
    """`<Object>`-style placeholders replaced by `values` in order (one value per placeholder)."""
    names = PLACEHOLDER.findall(question)
    if len(names) != len(values):
        raise AnnotationError(
            path, line, f"question {question!r} has {len(names)} placeholder(s) but templ_values has {len(values)} "
            f"value(s) {values}"
        )
    remaining = iter(values)
    return PLACEHOLDER.sub(lambda match: str(next(remaining)), question).strip()


def _parse_list(value: Any, what: str, path: str, line: int, length: int | None = None) -> list[str]:
    """A list field, given as a list or as the text of one (JSON or Python literal, as the published files)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            value = []
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise AnnotationError(path, line, f"{what} is not a list: {text!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise AnnotationError(path, line, f"{what} must be a list of strings, got {value!r}")
    if length is not None and len(value) != length:
        raise AnnotationError(path, line, f"{what} must have {length} entries, got {list(value)!r}")
    return [str(v).strip() for v in value]
