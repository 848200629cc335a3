"""The one `datasets.Dataset` schema every benchmark builder produces, and what the builders share: reading
annotation files with line numbers, finding media files, the missing-media policy.

Columns (one row = one question about one clip):

| column | type | meaning |
|---|---|---|
| `id` | string | unique per row (NExT-QA `{video}_{qid}`, MUSIC-AVQA / SQA3D `question_id`, ...) |
| `dataset` | string | the benchmark: nextqa, music_avqa, sqa3d, perception_test, vggsound, touchqa, thermalqa |
| `prompt_preset` | string | the benchmark's prompt preset name (DESIGN §3), for the processor |
| `question_type` | string | the benchmark's own type code (NExT-QA `CW`, MUSIC-AVQA `Audio-Visual/Counting`, SQA3D `What`); `all` when it has none |
| `question` | string | the question text (MUSIC-AVQA placeholders filled in) |
| `situation` | string | SQA3D's situation, prepended to the prompt; empty elsewhere |
| `options` | list of string | the answer options of multiple choice; empty for open-ended questions |
| `answer` | string | the answer text (for multiple choice, the correct option's text) |
| `answer_index` | int64 | the correct option's index; -1 for open-ended questions |
| `modality_word` | string | the open-ended prompt's fixed modality word (audio, 3D Model, touch map, thermal heatmap); empty for multiple choice |
| `video` | string or null | the RGB clip: a video file or a folder of frames |
| `audio` | string or null | an audio file, or a video file whose audio track is used |
| `flow`, `depth`, `normal` | string or null | precomputed frames of that modality (a folder or a video); null = derive from `video` |
| `thermal`, `touch` | string or null | the companion clip (video file or folder of frames) |
| `point_cloud` | string or null | 3D features `{scene}.pt` [N, D] |
| `point_cloud_voxels` | string or null | their voxel coordinates `{scene}.npy` [N, 3] |

Media paths are absolute. A media column is null when the builder was given no folder for that modality.
Only the standard library is imported here; `datasets` is imported when a dataset is made.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

logger = logging.getLogger(__name__)

#: Media columns, in the order of the schema. Each holds a path or None.
MEDIA_COLUMNS = ("video", "audio", "flow", "depth", "normal", "thermal", "touch", "point_cloud", "point_cloud_voxels")
#: Text and label columns, in the order of the schema.
TEXT_COLUMNS = (
    "id", "dataset", "prompt_preset", "question_type", "question", "situation", "options", "answer", "answer_index",
    "modality_word",
)
COLUMNS = TEXT_COLUMNS + MEDIA_COLUMNS
#: `question_type` of benchmarks without question types.
NO_QUESTION_TYPE = "all"
ON_MISSING_CHOICES = ("skip", "error")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac") + VIDEO_EXTENSIONS
#: A folder (or file) argument of a builder; None = not given.
Folder = Union[str, os.PathLike, None]


def features():
    """The `datasets.Features` of the schema."""
    from datasets import Features, List, Value

    columns = {name: Value("string") for name in COLUMNS}
    columns["options"] = List(Value("string"))
    columns["answer_index"] = Value("int64")
    return Features({name: columns[name] for name in COLUMNS})


class AnnotationError(ValueError):
    """A malformed annotation file: the message starts with `FILE, line N:`."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        where = f"{os.fspath(path)}, line {line}" if line else os.fspath(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = os.fspath(path), line


@dataclass
class AnnotatedRow:
    """One schema row and where it came from (for error messages)."""

    line: int
    row: dict[str, Any]


def make_row(
    *,
    id: str,
    dataset: str,
    prompt_preset: str,
    question_type: str,
    question: str,
    answer: str,
    options: Sequence[str] = (),
    answer_index: int = -1,
    situation: str = "",
    modality_word: str = "",
    **media: str | None,
) -> dict[str, Any]:
    """A schema row; media columns not given are None."""
    unknown = sorted(set(media) - set(MEDIA_COLUMNS))
    if unknown:
        raise TypeError(f"Unknown media columns {unknown}; the schema has {list(MEDIA_COLUMNS)}.")
    row = {
        "id": str(id), "dataset": dataset, "prompt_preset": prompt_preset, "question_type": str(question_type),
        "question": str(question), "situation": str(situation or ""), "options": [str(o) for o in options],
        "answer": str(answer), "answer_index": int(answer_index), "modality_word": modality_word,
    }
    for column in MEDIA_COLUMNS:
        value = media.get(column)
        row[column] = None if value is None else os.fspath(value)
    return row


@dataclass
class BuildReport:
    """What a builder kept and skipped."""

    dataset: str
    annotation_file: str
    rows_read: int
    rows_kept: int
    skipped_missing_media: int = 0
    first_missing: str | None = None  # "PATH (FILE, line N)"

    def message(self) -> str:
        text = f"{self.dataset}: {self.rows_kept} of {self.rows_read} annotation rows of {self.annotation_file}"
        if self.skipped_missing_media:
            text += (
                f" (skipped {self.skipped_missing_media} whose media files are missing; first missing: "
                f"{self.first_missing})"
            )
        return text


def check_media(
    rows: Sequence[AnnotatedRow], annotation_file: str | os.PathLike, dataset: str, on_missing: str = "skip"
) -> tuple[list[AnnotatedRow], BuildReport]:
    """Drop (`on_missing="skip"`, logged with the count and the first missing path) or refuse
    (`on_missing="error"`, a ValueError naming the file, line and path) rows whose media files do not exist.
    Also refuses duplicate ids (naming both lines)."""
    if on_missing not in ON_MISSING_CHOICES:
        raise ValueError(f"on_missing must be one of {ON_MISSING_CHOICES}, got {on_missing!r}.")
    annotation_file = os.fspath(annotation_file)
    seen: dict[str, int] = {}
    for item in rows:
        first = seen.setdefault(item.row["id"], item.line)
        if first != item.line:
            raise AnnotationError(
                annotation_file, item.line, f"duplicate id {item.row['id']!r} (also on line {first})"
            )
    kept: list[AnnotatedRow] = []
    report = BuildReport(dataset, annotation_file, rows_read=len(rows), rows_kept=0)
    for item in rows:
        missing = next(
            (item.row[c] for c in MEDIA_COLUMNS if item.row[c] is not None and not os.path.exists(item.row[c])), None
        )
        if missing is None:
            kept.append(item)
            continue
        if on_missing == "error":
            raise AnnotationError(annotation_file, item.line, f"media file not found: {missing}")
        report.skipped_missing_media += 1
        if report.first_missing is None:
            report.first_missing = f"{missing} ({annotation_file}, line {item.line})"
    report.rows_kept = len(kept)
    if report.skipped_missing_media:
        logger.warning(report.message())
    return kept, report


def rows_to_dataset(rows: Iterable[AnnotatedRow | dict[str, Any]]):
    """A `datasets.Dataset` with the schema's features (an empty one when there are no rows)."""
    from datasets import Dataset

    table = {name: [] for name in COLUMNS}
    for item in rows:
        row = item.row if isinstance(item, AnnotatedRow) else item
        for name in COLUMNS:
            table[name].append(row[name])
    return Dataset.from_dict(table, features=features())


def finish(
    rows: Sequence[AnnotatedRow],
    annotation_file: str | os.PathLike,
    dataset: str,
    on_missing: str = "skip",
    return_report: bool = False,
):
    """`check_media` then `rows_to_dataset`: the Dataset, or (Dataset, BuildReport) with `return_report`."""
    kept, report = check_media(rows, annotation_file, dataset, on_missing)
    data = rows_to_dataset(kept)
    return (data, report) if return_report else data


def builder(read: Callable[..., list[AnnotatedRow]], dataset: str, doc: str) -> Callable[..., Any]:
    """A benchmark's `build` (its `read`, then `finish`), so every builder checks media and reports alike."""

    def build(
        annotation_file: str | os.PathLike,
        media_root: Folder = None,
        *,
        on_missing: str = "skip",
        return_report: bool = False,
        **kwargs: Any,
    ):
        rows = read(annotation_file, media_root, **kwargs)
        return finish(rows, annotation_file, dataset, on_missing, return_report)

    build.__doc__, build.__module__, build.__qualname__ = doc, read.__module__, "build"
    return build


def missing_columns(column_names: Iterable[str]) -> list[str]:
    """The schema columns a dataset lacks."""
    present = set(column_names)
    return [name for name in COLUMNS if name not in present]


# ------------------------------------------------------------------------------------- reading annotation files
def read_records(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line, record) for each record of a `.csv` (dicts keyed by the header), `.jsonl` (one value per line) or
    `.json` file (the items of a top-level array, or the (key, value) pairs of a top-level object, with the line
    where each starts). Malformed files raise `AnnotationError` with the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such annotation file: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    raise AnnotationError(path, None, f"unsupported annotation file type {suffix!r} (expected .csv, .json or .jsonl)")


def read_csv(path: str, header: bool = True, fieldnames: Sequence[str] | None = None) -> list[tuple[int, Any]]:
    """Rows of a csv file: dicts keyed by the header (or by `fieldnames` for a file without one), with the line
    where each row ends. A row with more or fewer fields than the header is refused."""
    records = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        names = list(fieldnames) if fieldnames is not None else None
        try:
            for values in reader:
                if not values or all(not v.strip() for v in values):
                    continue
                if names is None and header:
                    names = [v.strip() for v in values]
                    continue
                if len(values) != len(names):
                    raise AnnotationError(
                        path, reader.line_num, f"expected {len(names)} fields ({', '.join(names)}), got {len(values)}"
                    )
                records.append((reader.line_num, dict(zip(names, values))))
        except csv.Error as error:
            raise AnnotationError(path, reader.line_num, f"invalid csv ({error})") from None
    return records


def _read_jsonl(path: str) -> list[tuple[int, Any]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                records.append((number, json.loads(text)))
            except json.JSONDecodeError as error:
                raise AnnotationError(path, number, f"invalid JSON ({error.msg}, column {error.colno})") from None
    return records


def _read_json(path: str) -> list[tuple[int, Any]]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    decoder = json.JSONDecoder()
    lines = _LineCounter(text)
    records: list[tuple[int, Any]] = []
    try:
        index = _skip_space(text, 0)
        if index >= len(text):
            raise AnnotationError(path, 1, "the file is empty")
        opening = text[index]
        if opening not in "[{":
            raise AnnotationError(path, lines.at(index), "expected a JSON array or object of records")
        index = _skip_space(text, index + 1)
        closing = "]" if opening == "[" else "}"
        if index < len(text) and text[index] == closing:
            index += 1
        else:
            while True:
                start = index
                if opening == "{":
                    key, index = decoder.raw_decode(text, index)
                    index = _skip_space(text, index)
                    if index >= len(text) or text[index] != ":":
                        raise AnnotationError(path, lines.at(index), "expected ':' after an object key")
                    value, index = decoder.raw_decode(text, _skip_space(text, index + 1))
                    records.append((lines.at(start), (key, value)))
                else:
                    value, index = decoder.raw_decode(text, index)
                    records.append((lines.at(start), value))
                index = _skip_space(text, index)
                if index < len(text) and text[index] == ",":
                    index = _skip_space(text, index + 1)
                    continue
                if index < len(text) and text[index] == closing:
                    index += 1
                    break
                raise AnnotationError(path, lines.at(index), f"expected ',' or '{closing}' between records")
        if _skip_space(text, index) < len(text):
            raise AnnotationError(path, lines.at(_skip_space(text, index)), "extra data after the JSON value")
    except json.JSONDecodeError as error:
        raise AnnotationError(path, error.lineno, f"invalid JSON ({error.msg}, column {error.colno})") from None
    return records


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


class _LineCounter:
    """Line number of increasing character offsets, counting newlines incrementally."""

    def __init__(self, text: str):
        self.text, self.offset, self.line = text, 0, 1

    def at(self, index: int) -> int:
        if index < self.offset:
            return self.text.count("\n", 0, index) + 1
        self.line += self.text.count("\n", self.offset, index)
        self.offset = index
        return self.line


def question_list(records: Iterable[tuple[int, Any]], path: str) -> Iterator[tuple[int, Any]]:
    """The records of a file that must hold a list of questions: a top-level JSON object is refused, not misread."""
    for line, record in records:
        if isinstance(record, tuple):
            raise AnnotationError(path, line, "expected a list of question records, got a JSON object")
        yield line, record


def require_fields(record: Any, fields: Sequence[str], path: str, line: int) -> None:
    """Refuse a record that is not an object or lacks one of `fields`."""
    if not isinstance(record, dict):
        raise AnnotationError(path, line, f"expected an object with fields {list(fields)}, got {type(record).__name__}")
    missing = [name for name in fields if name not in record or record[name] is None]
    if missing:
        raise AnnotationError(path, line, f"missing field(s) {', '.join(missing)}")


def parse_int(value: Any, what: str, path: str, line: int) -> int:
    if isinstance(value, bool):
        raise AnnotationError(path, line, f"{what} must be a whole number, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) and "." in value else value
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError
            number = int(number)
        return int(number)
    except (TypeError, ValueError):
        raise AnnotationError(path, line, f"{what} must be a whole number, got {value!r}") from None


def check_question_type(value: str, known: Iterable[str], path: str, line: int) -> str:
    known = list(known)
    if value not in known:
        raise AnnotationError(path, line, f"unknown question type {value!r} (known: {', '.join(known)})")
    return value


# ------------------------------------------------------------------------------------------------- media files
class MediaFolder:
    """Finds the file of a clip under one folder: `{pattern}` + one of `extensions`, or a folder of frames named
    `{pattern}` (a stem may contain `/` for subfolders). Folder listings are cached, so a large annotation file
    costs one listing per folder, not one `stat` per candidate."""

    def __init__(
        self,
        root: str | os.PathLike,
        extensions: Sequence[str] = VIDEO_EXTENSIONS,
        patterns: Sequence[str] = ("{stem}",),
        frames_folder: bool = True,
    ):
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.extensions = tuple(extensions)
        self.patterns = tuple(patterns)
        self.frames_folder = frames_folder
        self._listings: dict[str, dict[str, bool]] = {}

    def _listing(self, folder: str) -> dict[str, bool]:
        if folder not in self._listings:
            try:
                with os.scandir(folder) as entries:
                    self._listings[folder] = {entry.name: entry.is_dir() for entry in entries}
            except OSError:
                self._listings[folder] = {}
        return self._listings[folder]

    def candidates(self, stem: str) -> Iterator[tuple[str, bool]]:
        """(relative path, is a folder) in the order they are tried."""
        for pattern in self.patterns:
            name = pattern.format(stem=stem)
            if self.frames_folder:
                yield name, True
            if os.path.splitext(name)[1].lower() in self.extensions:
                yield name, False
            for extension in self.extensions:
                yield name + extension, False

    def find(self, *stems: str | int) -> str:
        """The existing file or frames folder for the first of `stems` that has one; when none exists, the first
        file candidate (which the missing-media check then reports as missing)."""
        path = self.find_existing(*stems)
        if path is not None:
            return path
        return os.path.join(self.root, self.patterns[0].format(stem=_clean(stems[0])) + self.extensions[0])

    def find_existing(self, *stems: str | int) -> str | None:
        for stem in stems:
            for name, is_folder in self.candidates(_clean(stem)):
                folder, base = os.path.split(os.path.join(self.root, name))
                listing = self._listing(folder)
                if base in listing and listing[base] == is_folder:
                    return os.path.join(folder, base)
        return None


def find_in_folders(folders: Sequence[MediaFolder], *stems: str | int) -> str:
    """The first existing match over several folders (e.g. frame folders, then clips), else the first folder's
    first candidate."""
    for folder in folders:
        path = folder.find_existing(*stems)
        if path is not None:
            return path
    return folders[0].find(*stems)


def media_folders(roots: dict[str, str | None]) -> dict[str, MediaFolder]:
    """A `MediaFolder` per given root (audio ones match audio files, not frame folders), so builders agree on it."""
    return {
        m: MediaFolder(root, AUDIO_EXTENSIONS, frames_folder=False) if m == "audio" else MediaFolder(root)
        for m, root in roots.items() if root is not None
    }


def find_media(folders: dict[str, MediaFolder], *stems: str | int) -> dict[str, str]:
    """Each folder's file for `stems`, keyed by modality: the media columns of one row."""
    return {m: folder.find(*stems) for m, folder in folders.items()}


def _clean(stem: str | int) -> str:
    return str(stem).strip().strip("/")


def optional_folder(path: str | os.PathLike | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))


def resolve_roots(
    media_root: str | os.PathLike | None, given: dict[str, str | os.PathLike | None], defaults: dict[str, str | None]
) -> dict[str, str | None]:
    """Per-modality folders: an explicit `{m}_root` wins; else `media_root` joined with the benchmark's default
    sub-folder for m (`""` = `media_root` itself, None = not looked for)."""
    roots: dict[str, str | None] = {}
    for modality in set(defaults) | set(given):
        if given.get(modality) is not None:
            roots[modality] = optional_folder(given[modality])
        elif media_root is not None and defaults.get(modality) is not None:
            roots[modality] = optional_folder(os.path.join(os.fspath(media_root), defaults[modality]))
        else:
            roots[modality] = None
    return roots


def video_roots(
    media_root: Folder, video: Folder, flow: Folder, depth: Folder, normal: Folder
) -> dict[str, str | None]:
    """The roots of a video benchmark (clips in `media_root` unless given; flow/depth/normal frames only where
    given), which several benchmarks share."""
    return resolve_roots(
        media_root, {"video": video, "flow": flow, "depth": depth, "normal": normal},
        {"video": "", "flow": None, "depth": None, "normal": None},
    )


@dataclass
class BenchmarkInfo:
    """What a benchmark is: its builder, prompt preset and question types (used by `crema eval`)."""

    name: str
    title: str
    build: Any
    read: Any
    answer_format: str  # "multiple_choice" or "open_ended"
    modality_word: str
    question_types: tuple[str, ...]
    max_new_tokens: int = 10
    roots: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # extra keyword options of the builder (e.g. "question", "split")
    aliases: tuple[str, ...] = field(default_factory=tuple)
