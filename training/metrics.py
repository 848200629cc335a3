"""Answer accuracy as the paper reports it (DESIGN §3), and as strict exact match, per question type and in the
column layout of the paper's tables. Pure functions of strings and lists: no torch, no model.

Two scores per answer:
- `strict`: exact match after lower-casing, trimming and collapsing spaces (and dropping a final period); for
  multiple choice, the chosen option is the answer's option. MUSIC-AVQA reads `_` as a space on both sides (its
  answers are written `acoustic_guitar`; the reference trained on `acoustic guitar`).
- `paper`: the lenient metric of the reference code, which produced the paper's numbers:
  - MUSIC-AVQA: a prediction that is a digit 1-10 becomes its word, then it is correct when it is a substring of
    the answer (`guitar` counts for `acoustic guitar`; `_` is a space on both sides);
  - SQA3D: commas dropped, lower-cased, first line only; when the answer is one word only the prediction's last
    word is kept; digits become words; correct when it is a substring of the answer;
  - multiple choice, VGGSound, TouchQA, ThermalQA: the same as strict (the paper matches the answer directly).
An empty prediction counts as "unanswerable" for both (DESIGN §3), so it never matches by being empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UNANSWERABLE = "unanswerable"
#: The reference's number_mapping.
NUMBER_WORDS = {
    "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven", "8": "eight",
    "9": "nine", "10": "ten",
}
METRICS = ("paper", "strict")


# ------------------------------------------------------------------------------------------- one answer
def normalize_text(text: str, underscores_as_spaces: bool = False) -> str:
    """Lower-case, trim, collapse spaces, drop a final period; empty -> "unanswerable"."""
    text = str(text)
    if underscores_as_spaces:
        text = text.replace("_", " ")
    text = re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()
    return text or UNANSWERABLE


def exact_match(prediction: str, answer: str, underscores_as_spaces: bool = False) -> bool:
    """Strict exact match of two answers after `normalize_text`."""
    return normalize_text(prediction, underscores_as_spaces) == normalize_text(answer, underscores_as_spaces)


def music_avqa_paper_correct(prediction: str, answer: str) -> bool:
    """The reference's MUSIC-AVQA metric: digits to words, then `prediction in answer` (substring), with `_` read
    as a space on both sides (a model trained on the file's `acoustic_guitar` answers says so)."""
    prediction = str(prediction).replace("_", " ").strip() or UNANSWERABLE
    answer = str(answer).replace("_", " ")
    prediction = NUMBER_WORDS.get(prediction, prediction)
    return prediction in answer


def sqa3d_paper_correct(prediction: str, answer: str) -> bool:
    """The reference's SQA3D metric: drop commas, first line, lower-case, keep the last word when the answer is
    one word, digits to words, then `prediction in answer` (substring)."""
    prediction = str(prediction).replace(",", "").replace("<pad>", "").replace("</s>", "").strip()
    prediction = prediction.split("\n")[0].lower() or UNANSWERABLE
    answer = str(answer)
    if len(answer.split(" ")) == 1:
        prediction = prediction.split(" ")[-1]
    prediction = NUMBER_WORDS.get(prediction, prediction)
    return prediction in answer


def multiple_choice_correct(prediction_index: int | None, answer_index: int) -> bool:
    """The chosen option is the answer's option."""
    return prediction_index is not None and int(prediction_index) == int(answer_index)


def score(
    dataset: str,
    prediction: str,
    answer: str,
    prediction_index: int | None = None,
    answer_index: int = -1,
) -> dict[str, bool]:
    """`{"paper": ..., "strict": ...}` for one answer of `dataset` (a benchmark name; others are scored with
    exact match). Multiple choice (`answer_index >= 0`) compares the option indices."""
    if answer_index is not None and int(answer_index) >= 0:
        correct = multiple_choice_correct(prediction_index, answer_index)
        return {"paper": correct, "strict": correct}
    if dataset == "music_avqa":
        return {"paper": music_avqa_paper_correct(prediction, answer),
                "strict": exact_match(prediction, answer, underscores_as_spaces=True)}
    if dataset == "sqa3d":
        return {"paper": sqa3d_paper_correct(prediction, answer), "strict": exact_match(prediction, answer)}
    strict = exact_match(prediction, answer)
    return {"paper": strict, "strict": strict}


# ------------------------------------------------------------------------------------------ table layouts
@dataclass(frozen=True)
class Column:
    label: str
    question_types: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    title: str
    columns: tuple[Column, ...]
    average: bool = True  # a pooled "Avg." column over the group's questions


@dataclass(frozen=True)
class TableLayout:
    """A paper table's accuracy columns: groups of columns (each pooling question types), then the overall Avg."""

    title: str
    groups: tuple[Group, ...]
    #: also report accuracy over the answers that are one of the dataset's answers (the paper's Table 12 brackets)
    in_vocabulary: bool = False


def _group(title: str, *columns: tuple[str, tuple[str, ...]], average: bool = True) -> Group:
    return Group(title, tuple(Column(label, types) for label, types in columns), average)


#: Paper Tables 1 (MUSIC-AVQA), 2 (SQA3D), 3 (NExT-QA), 12 (VGGSound), 13 (PerceptionTest), 4 (TouchQA,
#: ThermalQA). Group averages pool the group's questions, as the benchmarks' own evaluation scripts do.
TABLE_LAYOUTS: dict[str, TableLayout] = {
    "music_avqa": TableLayout("MUSIC-AVQA", (
        _group("Audio", ("Cnt.", ("Audio/Counting",)), ("Com.", ("Audio/Comparative",))),
        _group("Visual", ("Cnt.", ("Visual/Counting",)), ("Loc.", ("Visual/Location",))),
        _group("Audio-Visual", ("Ext.", ("Audio-Visual/Existential",)), ("Loc.", ("Audio-Visual/Location",)),
               ("Cnt.", ("Audio-Visual/Counting",)), ("Com.", ("Audio-Visual/Comparative",)),
               ("Tem.", ("Audio-Visual/Temporal",))),
    )),
    "sqa3d": TableLayout("SQA3D", (
        _group("", ("What", ("What",)), ("Is", ("Is",)), ("How", ("How",)), ("Can", ("Can",)),
               ("Which", ("Which",)), ("Others", ("Other",)), average=False),
    )),
    "nextqa": TableLayout("NExT-QA", (
        _group("Causal", ("How", ("CH",)), ("Why", ("CW",))),
        _group("Temporal", ("P.&N.", ("TP", "TN")), ("Pre.", ("TC",))),
        _group("Descriptive", ("Cnt.", ("DC",)), ("Loc.", ("DL",)), ("Otr.", ("DO",))),
    )),
    "perception_test": TableLayout("PerceptionTest", (
        _group("", ("Mem.", ("memory",)), ("Abs.", ("abstraction",)), ("Phys.", ("physics",)),
               ("Sem.", ("semantics",)), average=False),
    )),
    "vggsound": TableLayout("VGGSound", (), in_vocabulary=True),
    "touchqa": TableLayout("TouchQA", (), in_vocabulary=True),
    "thermalqa": TableLayout("ThermalQA", (), in_vocabulary=True),
}


def table_layout(dataset: str) -> TableLayout:
    """The paper's layout for `dataset`; other datasets get one column per question type (sorted)."""
    return TABLE_LAYOUTS.get(dataset, TableLayout(dataset, ()))


# ------------------------------------------------------------------------------------------------ summaries
def _counts(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total = len(records)
    out: dict[str, Any] = {"total": total}
    for metric in METRICS:
        correct = sum(1 for r in records if r["correct"][metric])
        out[f"{metric}_correct"] = correct
        out[f"{metric}_accuracy"] = 100.0 * correct / total if total else None
    return out


def accuracy_summary(records: Iterable[Mapping[str, Any]], dataset: str) -> dict[str, Any]:
    """Accuracy of scored records (each with `question_type`, `correct: {"paper": bool, "strict": bool}`, and for
    the in-vocabulary accuracy `prediction`/`answer`):

    `{"dataset", "total", "paper_correct", "paper_accuracy", "strict_correct", "strict_accuracy",
      "per_question_type": {type: counts}, "columns": [{"group", "label", "question_types", counts...}],
      "in_vocabulary": counts (classification benchmarks only)}`; accuracies in percent (None without questions).
    """
    records = list(records)
    layout = table_layout(dataset)
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_type.setdefault(str(record["question_type"]), []).append(record)
    summary: dict[str, Any] = {"dataset": dataset, **_counts(records)}
    summary["per_question_type"] = {name: _counts(by_type[name]) for name in sorted(by_type)}
    columns = []
    groups = layout.groups or ((Group("", tuple(Column(t, (t,)) for t in sorted(by_type)), average=False),)
                               if len(by_type) > 1 else ())
    for group in groups:
        for column in group.columns:
            rows = [r for t in column.question_types for r in by_type.get(t, [])]
            columns.append({"group": group.title, "label": column.label, "question_types": list(column.question_types),
                            **_counts(rows)})
        if group.average:
            types = [t for column in group.columns for t in column.question_types]
            rows = [r for t in types for r in by_type.get(t, [])]
            columns.append({"group": group.title, "label": "Avg.", "question_types": types, **_counts(rows)})
    columns.append({"group": "", "label": "Avg.", "question_types": sorted(by_type), **_counts(records)})
    summary["columns"] = columns
    if layout.in_vocabulary:
        vocabulary = {normalize_text(r["answer"]) for r in records}
        inside = [r for r in records if normalize_text(r["prediction"]) in vocabulary]
        summary["in_vocabulary"] = _counts(inside)
    return summary


def format_table(summary: Mapping[str, Any], title: str | None = None) -> str:
    """The summary as text in the paper's layout: a row of group names, a row of column labels, then the paper
    metric, strict exact match and the number of questions per column."""
    columns = summary["columns"]
    width = max([7] + [len(c["label"]) + 2 for c in columns])
    name_width = 18
    spans: list[tuple[str, int]] = []
    for column in columns:
        if spans and spans[-1][0] == column["group"]:
            spans[-1] = (column["group"], spans[-1][1] + 1)
        else:
            spans.append((column["group"], 1))
    head = title or summary.get("dataset", "")
    lines = [f"{head} ({summary['total']} questions)"]
    if any(group for group, _ in spans):
        lines.append(" " * name_width + "".join(group.center(width * count) for group, count in spans).rstrip())
    lines.append(" " * name_width + "".join(c["label"].rjust(width) for c in columns))

    def row(name: str, key: str, entries: Sequence[Mapping[str, Any]], digits: int = 1) -> str:
        cells = []
        for entry in entries:
            value = entry[key]
            cells.append(("-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value))
                         .rjust(width))
        return name.ljust(name_width) + "".join(cells)

    lines.append(row("paper metric", "paper_accuracy", columns))
    lines.append(row("exact match", "strict_accuracy", columns))
    lines.append(row("questions", "total", columns))
    if "in_vocabulary" in summary:
        inside = summary["in_vocabulary"]
        accuracy = inside["strict_accuracy"]
        lines.append(
            f"in-vocabulary answers only: {'-' if accuracy is None else f'{accuracy:.1f}'} "
            f"({inside['total']} of {summary['total']} predictions are one of the dataset's answers)"
        )
    return "\n".join(lines)
