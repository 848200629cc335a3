"""Pieces shared by the model and adapter cards: tags, the paper, repo-id detection, Markdown helpers."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

PAPER_URL = "https://arxiv.org/abs/2402.05889"
#: Links the card to the CREMA paper's page on the Hub.
PAPER_TAG = "arxiv:2402.05889"
PIPELINE_TAG = "video-text-to-text"
BASE_TAGS = ("crema", "video-question-answering", "multimodal", "peft", "lora")


def hub_id(value: str | None) -> str | None:
    """`value` when it names a Hub repo (`namespace/name`, not a local path), else None: a local BLIP-2 folder
    recorded at build time says nothing to a reader of the card."""
    if not value or value.count("/") != 1 or value.startswith((".", "/", "~")) or os.path.exists(value):
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def tags(modalities: Iterable[str], extra: Sequence[str] = ()) -> list[str]:
    out: list[str] = []
    for tag in (*BASE_TAGS, *modalities, *extra, PAPER_TAG):
        if tag not in out:
            out.append(tag)
    return out


def card_data(
    *,
    name: str,
    library_name: str,
    modalities: Iterable[str],
    base_model: str | None,
    datasets: Sequence[str],
    license: str | None,
    extra_tags: Sequence[str],
    results: Sequence[EvalResult],
    model_name: str | None,
    crema: dict,
) -> ModelCardData:
    """The metadata model and adapter cards share; they differ in the library, the modalities and the `crema`
    block. `model_name` (the `model-index` name) is only written with evaluation results."""
    return ModelCardData(
        base_model=base_model,
        datasets=list(datasets) or None,
        license=license,
        library_name=library_name,
        pipeline_tag=PIPELINE_TAG,
        tags=tags(modalities, extra_tags),
        eval_results=list(results) or None,
        model_name=(model_name or name.split("/")[-1]) if results else None,
        crema=crema,
    )


def count(value: int) -> str:
    return f"{value:,}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def eval_section(results: Sequence[EvalResult]) -> str:
    if not results:
        return ""
    rows = [(r.dataset_name, r.metric_name or r.metric_type, r.metric_value) for r in results]
    return "## Evaluation\n\n" + table(("dataset", "metric", "value"), rows, ("---", "---", "---:")) + "\n\n"


def code(language: str, text: str) -> str:
    return f"```{language}\n{text.strip()}\n```\n"
