"""What a saved CREMA model or adapter folder holds, read from its files without torch.

Parameter counts come from the safetensors headers (an adapter file holds exactly the modality's trainable
tensors: its LoRA A/B and its MMQA module; `fusion.safetensors` the fusion's), so a card can be written for a folder
on any machine. With `check=True`, adapter and fusion files are also read with `modeling_crema`'s checked reading
(checksum, NaN/inf, LoRA rank) when that package is importable; damage is one `ValueError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTERS_FOLDER = "adapters"
FUSION_FOLDER = "fusion"
FUSION_CONFIG_NAME = "fusion_config.json"
FUSION_WEIGHTS_NAME = "fusion.safetensors"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
MODALITY_METADATA_KEY = "crema_modality"
MODEL_HINT = "Expected a folder written by `model.save_pretrained(dir)` (config.json with model_type 'crema')."
ADAPTER_HINT = "Expected a folder written by `model.save_adapter(dir, modality)`."


@dataclass(frozen=True)
class AdapterFacts:
    """One modality adapter folder: what its card says about it."""

    folder: str
    modality: str
    rank: int
    alpha: float
    dropout: float
    parameters: int
    encoder: str | None = None
    feature_size: int | None = None
    prefix: str | None = None
    #: `base_model_name_or_path` of its adapter_config.json: the BLIP-2 the CREMA model was built from, if recorded.
    base_model_name_or_path: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    """One CREMA model folder: its config and, per modality, its adapter; the fusion; the frozen backbone size."""

    folder: str
    config: dict[str, Any]
    adapters: dict[str, AdapterFacts]
    fusion_modalities: list[str] | None
    fusion_parameters: int
    frozen_parameters: int
    custom_pipelines: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        return [spec["name"] for spec in self.config.get("modalities") or []]

    @property
    def trainable_parameters(self) -> int:
        return sum(adapter.parameters for adapter in self.adapters.values()) + self.fusion_parameters


# ------------------------------------------------------------------------------------------------ reading files
def read_json_file(path: str, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: the {what} is needed.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error}); save or download it again.") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object, got {type(content).__name__}.")
    return content


def read_safetensors_header(path: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The tensor table and metadata of a safetensors file (header only); ValueError naming a damaged file."""
    damaged = f"{path} cannot be read as a safetensors file: it is truncated or damaged; save or download it again."
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length <= 0 or 8 + length > size:
                raise ValueError(damaged)
            header = json.loads(handle.read(length))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(damaged) from None
    if not isinstance(header, dict):
        raise ValueError(damaged)
    metadata = header.pop("__metadata__", None) or {}
    try:
        end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(damaged) from None
    if 8 + length + end != size:
        raise ValueError(damaged)
    return header, metadata


def count_parameters(header: dict[str, dict[str, Any]]) -> int:
    return sum(math.prod(entry["shape"]) for entry in header.values())


def _checked_by_modeling_crema(kind: str, folder: str) -> None:
    """Reads an adapter or fusion folder with modeling_crema's checked reading (when importable)."""
    try:
        if kind == "adapter":
            from modeling_crema.adapters import read_adapter_folder as read
        else:
            from modeling_crema.fusion import read_fusion_folder as read
    except ImportError:
        logger.info("modeling_crema is not importable: %s checked by its safetensors header only.", folder)
        return
    read(folder)


# ------------------------------------------------------------------------------------------------ folder kinds
def folder_kind(folder: str | os.PathLike) -> str:
    """"model" (a CREMA model folder) or "adapter" (one modality adapter folder); ValueError otherwise."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        config = read_json_file(os.path.join(folder, CONFIG_NAME), "model config")
        if config.get("model_type") != "crema":
            raise ValueError(f"{folder} is not a CREMA model folder: its config.json has model_type "
                             f"{config.get('model_type')!r}, not 'crema'. {MODEL_HINT}")
        return "model"
    if os.path.isfile(os.path.join(folder, ADAPTER_CONFIG_NAME)):
        return "adapter"
    raise ValueError(f"{folder} is not a CREMA model or adapter folder: it has neither {CONFIG_NAME} nor "
                     f"{ADAPTER_CONFIG_NAME}. Expected a folder written by `model.save_pretrained(dir)` or by "
                     "`model.save_adapter(dir, modality)`.")


def read_adapter_facts(folder: str | os.PathLike, check: bool = True) -> AdapterFacts:
    """The facts of one adapter folder. `check`: also read every tensor with modeling_crema's checks."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    config_path = os.path.join(folder, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise ValueError(f"{folder} is not a modality adapter folder: {ADAPTER_CONFIG_NAME} is missing. {ADAPTER_HINT}")
    config = read_json_file(config_path, "adapter config")
    header, metadata = read_safetensors_header(os.path.join(folder, ADAPTER_WEIGHTS_NAME))
    spec: dict[str, Any] = {}
    if MODALITY_METADATA_KEY in metadata:
        try:
            spec = json.loads(metadata[MODALITY_METADATA_KEY])
        except json.JSONDecodeError:
            raise ValueError(f"{os.path.join(folder, ADAPTER_WEIGHTS_NAME)}: the modality description is not valid "
                             "JSON; save it again.") from None
    saved = [name.split(".", 1)[1] for name in config.get("modules_to_save") or [] if name.startswith("mmqa.")]
    modality = saved[0] if len(saved) == 1 else spec.get("name") if isinstance(spec, dict) else None
    if not modality:
        raise ValueError(f"{folder} is not a CREMA modality adapter: {ADAPTER_CONFIG_NAME} names no `mmqa.<modality>` "
                         f"module to save (a PEFT adapter of another model?). {ADAPTER_HINT}")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    for name, value in (("r", rank), ("lora_alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{config_path}: `{name}` must be a positive number; got {value!r}.")
    if check:
        _checked_by_modeling_crema("adapter", folder)
    return AdapterFacts(
        folder=folder,
        modality=modality,
        rank=int(rank),
        alpha=alpha,
        dropout=float(config.get("lora_dropout") or 0.0),
        parameters=count_parameters(header),
        encoder=spec.get("encoder") if isinstance(spec, dict) else None,
        feature_size=spec.get("feature_size") if isinstance(spec, dict) else None,
        prefix=spec.get("prefix") if isinstance(spec, dict) else None,
        base_model_name_or_path=config.get("base_model_name_or_path") or None,
    )


def _frozen_parameters(folder: str) -> int:
    single = os.path.join(folder, WEIGHTS_NAME)
    if os.path.isfile(single):
        return count_parameters(read_safetensors_header(single)[0])
    index_path = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if not os.path.isfile(index_path):
        raise ValueError(f"{folder} holds no model weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}). {MODEL_HINT}")
    weight_map = read_json_file(index_path, "weights index").get("weight_map") or {}
    return sum(count_parameters(read_safetensors_header(os.path.join(folder, shard))[0])
               for shard in sorted(set(weight_map.values())))


def read_model_facts(folder: str | os.PathLike, check: bool = True) -> ModelFacts:
    """The facts of a CREMA model folder (config, adapters/<m>/, fusion/, weights). `check`: also read every
    adapter and the fusion with modeling_crema's checks."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    if not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        if os.path.isfile(os.path.join(folder, ADAPTER_CONFIG_NAME)):
            raise ValueError(f"{folder} is a modality adapter folder, not a CREMA model folder: push it with "
                             "`crema push-adapter` (push_adapter).")
        raise ValueError(f"{folder} is not a CREMA model folder: {CONFIG_NAME} is missing. {MODEL_HINT}")
    folder_kind(folder)  # checks model_type
    config = read_json_file(os.path.join(folder, CONFIG_NAME), "model config")
    modalities = config.get("modalities") or []
    if not isinstance(modalities, list) or not all(isinstance(spec, dict) and "name" in spec for spec in modalities):
        raise ValueError(f"{os.path.join(folder, CONFIG_NAME)}: `modalities` must be a list of modality specs.")
    adapters = {}
    for spec in modalities:
        adapter_folder = os.path.join(folder, ADAPTERS_FOLDER, spec["name"])
        if not os.path.isdir(adapter_folder):
            raise ValueError(f"{adapter_folder} is missing: {CONFIG_NAME} lists modality {spec['name']!r}. Save the "
                             "model again with `save_pretrained`.")
        adapters[spec["name"]] = read_adapter_facts(adapter_folder, check=check)
    fusion_modalities = config.get("fusion_modalities") if config.get("use_fusion") else None
    fusion_parameters = 0
    if fusion_modalities:  # saved whenever the model has a fusion module (`save_pretrained`)
        fusion_folder = os.path.join(folder, FUSION_FOLDER)
        read_json_file(os.path.join(fusion_folder, FUSION_CONFIG_NAME), "fusion config")
        fusion_parameters = count_parameters(read_safetensors_header(os.path.join(fusion_folder, FUSION_WEIGHTS_NAME))[0])
        if check:
            _checked_by_modeling_crema("fusion", fusion_folder)
    else:
        fusion_modalities = None
    return ModelFacts(
        folder=folder,
        config=config,
        adapters=adapters,
        fusion_modalities=list(fusion_modalities) if fusion_modalities else None,
        fusion_parameters=fusion_parameters,
        frozen_parameters=_frozen_parameters(folder),
        custom_pipelines=sorted(config.get("custom_pipelines") or {}),
    )
