"""VGGSound as open-ended QA over its audio classes (paper Table 12).

Annotation file, as published: `vggsound.csv` without a header, rows `youtube_id, start_seconds, label, split`
(split `train` or `test`; labels with commas are quoted). The paper asks a question about the clip and takes the
class label as the answer; it does not publish the question, so `DEFAULT_QUESTION` is this package's choice
(`question=` replaces it). `split=` keeps one split.

Media: `video_root/{youtube_id}_{start:06d}.mp4` (the usual file name of downloaded VGGSound clips; also
`{youtube_id}_{start}` and `{youtube_id}`); audio from `audio_root` (same names, an audio or video file), by
default the video files' own track.
"""

from __future__ import annotations

import os

from .schema import (
    NO_QUESTION_TYPE, AnnotatedRow, AnnotationError, Folder, builder, find_media, make_row, media_folders, parse_int,
    read_csv, resolve_roots,
)

NAME = "vggsound"
TITLE = "VGGSound"
MODALITY_WORD = "audio"
QUESTION_TYPES = (NO_QUESTION_TYPE,)
ROOTS = ("video", "audio")
DEFAULT_QUESTION = "What is making the sound in the video?"
FIELDS = ("youtube_id", "start_seconds", "label", "split")


def read(
    annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
    audio_root: Folder = None, split: str | None = None, question: str | None = None,
) -> list[AnnotatedRow]:
    """The schema rows of `vggsound.csv` (one split with `split=`), media paths not yet checked."""
    path = os.fspath(annotation_file)
    if os.path.splitext(path)[1].lower() != ".csv":
        raise AnnotationError(path, None, "expected the VGGSound csv (youtube_id, start_seconds, label, split)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such annotation file: {path}")
    roots = resolve_roots(media_root, {"video": video_root, "audio": audio_root or video_root},
                          {"video": "", "audio": ""})
    folders = media_folders(roots)
    question = (question or DEFAULT_QUESTION).strip()
    rows = []
    records = read_csv(path, header=False, fieldnames=FIELDS)
    for number, (line, record) in enumerate(records):
        if number == 0 and not record["start_seconds"].strip().lstrip("-").isdigit() and "label" in record.values():
            continue  # a header row someone added
        start = parse_int(record["start_seconds"], "start_seconds", path, line)
        label = record["label"].strip()
        if not record["youtube_id"].strip() or not label:
            raise AnnotationError(path, line, "empty youtube_id or label")
        if split is not None and record["split"].strip() != split:
            continue
        youtube_id = record["youtube_id"].strip()
        stems = (f"{youtube_id}_{start:06d}", f"{youtube_id}_{start}", youtube_id)
        media = find_media(folders, *stems)
        rows.append(AnnotatedRow(line, make_row(
            id=stems[0], dataset=NAME, prompt_preset=NAME, question_type=NO_QUESTION_TYPE, question=question,
            answer=label, modality_word=MODALITY_WORD, **media,
        )))
    return rows


build = builder(read, NAME, """A `datasets.Dataset` in the shared schema. `media_root`: the clips folder;
`split="test"` keeps the test split; `question=` replaces `DEFAULT_QUESTION`.""")
