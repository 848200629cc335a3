"""Evaluation results for a card's `model-index`: from the JSON `crema eval` writes, or from a plain
`{metric: value}` mapping measured on one dataset.

`crema eval` results (`{"model", "dataset": {"name", "title", ...}, "summary": {...}, ...}`) become, per benchmark:
the paper's metric (`accuracy`), strict exact match (`exact_match`), and the accuracy of each column of the paper's
table (`accuracy`, named after the column), in percent with two decimals.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence, Union

from huggingface_hub import EvalResult

#: The Hub's pipeline type of video question answering (a video and a question in, text out).
TASK_TYPE = "video-text-to-text"
TASK_NAME = "Video Question Answering"

EvalInput = Union[EvalResult, Mapping[str, Any], str, os.PathLike]


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


def _percent(value: Any, what: str) -> float:
    return round(float(_number(value, what)), 2)


def from_crema_eval(result: Mapping[str, Any], source: str = "the crema eval results") -> list[EvalResult]:
    """The `EvalResult`s of one `crema eval` output (see `crema_training.evaluate.evaluate`)."""
    summary = result.get("summary")
    dataset = result.get("dataset") if isinstance(result.get("dataset"), Mapping) else {}
    if not isinstance(summary, Mapping):
        raise ValueError(f"{source}: `summary` must be an object as `crema eval` writes it")
    name = dataset.get("name") or summary.get("dataset")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: the dataset's name is missing (`dataset.name`)")
    common = dict(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=name,
                  dataset_name=str(dataset.get("title") or name))
    results = []
    for key, metric_type, metric_name in (("paper_accuracy", "accuracy", "Accuracy (paper metric)"),
                                          ("strict_accuracy", "exact_match", "Exact match")):
        if summary.get(key) is not None:
            results.append(EvalResult(**common, metric_type=metric_type, metric_name=metric_name,
                                      metric_value=_percent(summary[key], f"{source}: summary.{key}")))
    if not results:
        raise ValueError(f"{source}: the summary holds no accuracy (`paper_accuracy` / `strict_accuracy`)")
    for column in summary.get("columns") or []:
        group, label = str(column.get("group") or ""), str(column.get("label") or "")
        if (not group and label == "Avg.") or column.get("paper_accuracy") is None:
            continue  # the overall average is the paper metric above
        title = f"{group} {label}".strip()
        results.append(EvalResult(**common, metric_type="accuracy", metric_name=f"Accuracy ({title})",
                                  metric_value=_percent(column["paper_accuracy"], f"{source}: column {title!r}")))
    inside = summary.get("in_vocabulary")
    if isinstance(inside, Mapping) and inside.get("strict_accuracy") is not None:
        results.append(EvalResult(**common, metric_type="accuracy", metric_name="Accuracy (in-vocabulary answers)",
                                  metric_value=_percent(inside["strict_accuracy"], f"{source}: in_vocabulary")))
    return results


def from_metrics(metrics: Mapping[str, Any], dataset: str | None, dataset_name: str | None = None,
                 split: str | None = None, source: str = "the metrics") -> list[EvalResult]:
    """`{metric: value}` measured on `dataset` (a dataset id or name) -> one `EvalResult` per metric."""
    if not dataset:
        raise ValueError(f"{source}: a plain {{metric: value}} mapping needs the dataset it was measured on "
                         "(eval_dataset=... / --eval-dataset NAME)")
    if not metrics:
        raise ValueError(f"{source}: no metrics")
    return [
        EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset, dataset_name=dataset_name or dataset,
                   dataset_split=split, metric_type=str(metric),
                   metric_value=_number(value, f"{source}: metric {metric!r}"))
        for metric, value in metrics.items()
    ]


def _read(path: str | os.PathLike) -> Mapping[str, Any]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path} (evaluation results)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the evaluation results are not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (crema eval's output or {{metric: value}}), "
                         f"got {type(data).__name__}")
    return data


def eval_results_from(inputs: EvalInput | Sequence[EvalInput] | None, dataset: str | None = None) -> list[EvalResult]:
    """`EvalResult`s from any mix of `EvalResult`s, `crema eval` outputs and `{metric: value}` mappings (objects or
    paths of JSON files). `dataset`: what a plain mapping was measured on."""
    if inputs is None:
        return []
    items: Iterable[EvalInput] = (
        [inputs] if isinstance(inputs, (EvalResult, Mapping, str, os.PathLike)) else inputs
    )
    results: list[EvalResult] = []
    for item in items:
        if isinstance(item, EvalResult):
            results.append(item)
            continue
        source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else "the evaluation results"
        data = _read(item) if isinstance(item, (str, os.PathLike)) else item
        results.extend(from_crema_eval(data, source) if "summary" in data else from_metrics(data, dataset, source=source))
    return results
