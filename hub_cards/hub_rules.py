"""What the Hub accepts in card metadata, checked offline.

`RepoCard.validate()` posts the card to the Hub's `/api/validate-yaml` endpoint, which needs the network. Every card
written here is checked locally instead, against the rules that can be known without it:

- the YAML front matter parses back (with `yaml.safe_load` and with `ModelCard` / `SpaceCard`) to exactly the
  metadata that was meant, and a `model-index` parses back to the same `EvalResult`s;
- `pipeline_tag` is one of the Hub's pipeline types, `library_name` one that the cards use;
- `base_model`, `datasets` and a Space's `models` are repo ids (`huggingface_hub.utils.validate_repo_id`);
- a Space's `sdk`, `colorFrom` / `colorTo`, `emoji`, `sdk_version`, `app_file` and `short_description` follow the
  Spaces configuration reference.

What stays unchecked offline: whether the ids exist on the Hub, and the license id list. The Hub validates the
card again when it is uploaded.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Mapping

import yaml
from huggingface_hub import ModelCard, RepoCard, SpaceCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import CardData, model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id

#: The Hub's pipeline types: the keys of `PIPELINE_DATA` in huggingface.js (packages/tasks/src/pipelines.ts).
HUB_PIPELINE_TAGS = frozenset({
    "biology", "text-classification", "token-classification", "table-question-answering", "question-answering",
    "zero-shot-classification", "translation", "summarization", "feature-extraction", "text-generation",
    "text2text-generation", "fill-mask", "sentence-similarity", "text-to-speech", "text-to-audio",
    "automatic-speech-recognition", "audio-to-audio", "audio-classification", "audio-text-to-text",
    "voice-activity-detection", "depth-estimation", "image-classification", "object-detection", "image-segmentation",
    "text-to-image", "image-to-text", "image-to-image", "image-to-video", "unconditional-image-generation",
    "video-classification", "reinforcement-learning", "robotics", "tabular-classification", "tabular-regression",
    "tabular-to-text", "table-to-text", "multiple-choice", "text-ranking", "text-retrieval", "time-series-forecasting",
    "text-to-video", "image-text-to-text", "visual-question-answering", "document-question-answering",
    "zero-shot-image-classification", "graph-ml", "mask-generation", "zero-shot-object-detection", "text-to-3d",
    "image-to-3d", "image-feature-extraction", "video-text-to-text", "keypoint-detection",
    "visual-document-retrieval", "any-to-any", "other",
})
#: The libraries these cards name (both are in the Hub's model-libraries list).
LIBRARY_NAMES = frozenset({"transformers", "peft"})
#: Spaces configuration reference.
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SHORT_DESCRIPTION_MAX_LENGTH = 60
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?([a-z0-9.+-]*)$")


def front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata block of a card's text, parsed as the Hub does (same block regex, safe YAML)."""
    match = REGEX_YAML_BLOCK.search(text)
    if not match:
        raise ValueError("the card has no YAML metadata block (--- ... --- at its top)")
    data = yaml.safe_load(match.group(2)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"the card's metadata must be a mapping, got {type(data).__name__}")
    return data


def check_repo_id(value: Any, field: str) -> None:
    """`value` must be a Hub repo id (e.g. `Salesforce/blip2-flan-t5-xl`); ValueError naming `field` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"card field {field}: expected a Hub repo id, got {value!r}")
    try:
        validate_repo_id(value)
    except HFValidationError as error:
        raise ValueError(f"card field {field}: {value!r} is not a Hub repo id ({error})") from None


def _repo_ids(value: Any, field: str) -> None:
    for item in value if isinstance(value, list) else [value]:
        check_repo_id(item, field)


def _string_list(value: Any, field: str) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"card field {field}: expected a list of non-empty strings, got {value!r}")


def _finite_numbers(results: list) -> None:
    for result in results:
        value = result.metric_value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"card model-index: metric {result.metric_type!r} on {result.dataset_name!r} must be a "
                             f"finite number, got {value!r}")


def check_model_metadata(data: Mapping[str, Any]) -> None:
    """The rules of a model (or adapter) card's metadata that hold without the network."""
    if data.get("library_name") not in LIBRARY_NAMES:
        raise ValueError(f"card field library_name: expected one of {sorted(LIBRARY_NAMES)}, got "
                         f"{data.get('library_name')!r}")
    if "pipeline_tag" in data and data["pipeline_tag"] not in HUB_PIPELINE_TAGS:
        raise ValueError(f"card field pipeline_tag: {data['pipeline_tag']!r} is not one of the Hub's pipeline types")
    if "tags" in data:
        _string_list(data["tags"], "tags")
    for field in ("base_model", "datasets"):
        if field in data:
            _repo_ids(data[field], field)
    if "model-index" in data:
        name, results = model_index_to_eval_results(data["model-index"])
        if not isinstance(name, str) or not name:
            raise ValueError("card model-index: the model name is missing")
        _finite_numbers(results)


def check_space_metadata(data: Mapping[str, Any]) -> None:
    """The Spaces configuration reference, offline."""
    if data.get("sdk") not in SPACE_SDKS:
        raise ValueError(f"Space card field sdk: expected one of {SPACE_SDKS}, got {data.get('sdk')!r}")
    for field in ("colorFrom", "colorTo"):
        if data.get(field) not in SPACE_COLORS:
            raise ValueError(f"Space card field {field}: expected one of {SPACE_COLORS}, got {data.get(field)!r}")
    emoji = data.get("emoji")
    if not isinstance(emoji, str) or not is_emoji(emoji):
        raise ValueError(f"Space card field emoji: expected one emoji, got {emoji!r}")
    if not isinstance(data.get("title"), str) or not data["title"].strip():
        raise ValueError(f"Space card field title: expected a non-empty string, got {data.get('title')!r}")
    version = data.get("sdk_version")
    if data["sdk"] in ("gradio", "streamlit") and not (isinstance(version, str) and _VERSION.match(version)):
        raise ValueError(f"Space card field sdk_version: expected a version string such as '5.9.1', got {version!r}")
    app_file = data.get("app_file")
    if data["sdk"] in ("gradio", "streamlit") and not (isinstance(app_file, str) and app_file.endswith(".py")
                                                        and not app_file.startswith("/")):
        raise ValueError(f"Space card field app_file: expected a .py path inside the Space, got {app_file!r}")
    description = data.get("short_description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > SHORT_DESCRIPTION_MAX_LENGTH):
        raise ValueError(f"Space card field short_description: at most {SHORT_DESCRIPTION_MAX_LENGTH} characters, "
                         f"got {description!r}")
    for field in ("models", "datasets"):
        if field in data:
            _string_list(data[field], field)
            _repo_ids(data[field], field)
    if "tags" in data:
        _string_list(data["tags"], "tags")


def is_emoji(text: str) -> bool:
    """One emoji: symbols (So), with variation selectors, joiners, skin tones or keycaps only around them."""
    joiners = {"\u200d", "\ufe0f", "\ufe0e", "\u20e3"}
    symbols = [char for char in text if char not in joiners and not 0x1F3FB <= ord(char) <= 0x1F3FF]
    return 0 < len(symbols) <= 4 and all(unicodedata.category(char) == "So" for char in symbols)


def checked_card(card: RepoCard, meant: CardData | None = None) -> RepoCard:
    """Returns `card` after checking that its text parses back to exactly the metadata `meant` (default: its own),
    `EvalResult`s included, and that the metadata follows the Hub's rules."""
    meant = card.data if meant is None else meant
    text = str(card)
    expected = meant.to_dict()
    parsed = front_matter(text)
    if parsed != expected:
        raise ValueError(f"the card's YAML does not parse back to its metadata: meant {expected!r}, read {parsed!r}")
    reread = type(card)(text).data.to_dict()
    if reread != expected:
        raise ValueError(f"{type(card).__name__} reads other metadata back: {reread!r}")
    if isinstance(card, SpaceCard):
        check_space_metadata(parsed)
    elif isinstance(card, ModelCard):
        check_model_metadata(parsed)
        results = getattr(meant, "eval_results", None)
        if results:
            name, parsed_results = model_index_to_eval_results(parsed["model-index"])
            if (name, parsed_results) != (meant.model_name, grouped_by_dataset(results)):
                raise ValueError("the card's model-index does not parse back to its evaluation results")
    return card


def grouped_by_dataset(results: list) -> list:
    """`results` in the order a model-index stores them: grouped by task and dataset, in order of first appearance."""
    groups: dict[tuple, list] = {}
    for result in results:
        groups.setdefault(result.unique_identifier, []).append(result)
    return [result for group in groups.values() for result in group]
