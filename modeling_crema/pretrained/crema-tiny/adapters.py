"""PEFT glue: one LoRA adapter per modality on the shared frozen Q-Former, its routing, and its folder format.

A modality adapter = LoRA on the Q-Former self-attention query/value (all layers) + `modules_to_save=["mmqa.<m>"]`
(query tokens, input LayerNorm, projections). Saved folders are plain PEFT: `adapter_config.json` +
`adapter_model.safetensors` (keys prefixed `base_model.model.` as `PeftModel.save_pretrained` writes them); the
modality's spec (encoder kind, feature width, LLM prefix) travels in the safetensors metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import cast_adapter_dtype, check_target_module_exists
from peft.utils import ModulesToSaveWrapper
from safetensors.torch import save_file
from torch import nn
from transformers.utils import logging

from .checked_files import CHECKSUM_METADATA_KEY, read_json, read_safetensors, resolve_files, tensors_checksum
from .configuration_crema import MODALITY_SPEC_FIELDS
from .saving import atomic_directory

logger = logging.get_logger(__name__)

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."
MODALITY_METADATA_KEY = "crema_modality"
#: Full-match regex of the Q-Former self-attention query/value Linears (cross-attention, key, FFN stay untouched).
QFORMER_LORA_TARGETS = r"qformer\.encoder\.layer\.\d+\.attention\.attention\.(query|value)"


def modality_lora_config(
    modality: str,
    rank: int,
    alpha: int | None,
    dropout: float,
    base_model_name_or_path: str | None = None,
) -> LoraConfig:
    """The PEFT config of one modality's MMQA (DESIGN §1.1: rank 64, alpha = rank, dropout 0.1)."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        target_modules=QFORMER_LORA_TARGETS,
        modules_to_save=[f"mmqa.{modality}"],
        bias="none",
        init_lora_weights=True,
        base_model_name_or_path=base_model_name_or_path,
    )


def inject_modality_adapter(model: nn.Module, lora_config: LoraConfig, modality: str) -> None:
    """Adds LoRA `modality` to the Q-Former and wraps `mmqa.<modality>` as its module to save."""
    with warnings.catch_warnings():
        # PEFT warns whenever a second adapter is injected; several adapters are the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(lora_config, model, adapter_name=modality)
    # LoRA weights train in float32 even on a bf16/fp16 backbone (PEFT casts inputs to the adapter's dtype).
    cast_adapter_dtype(model, adapter_name=modality, autocast_adapter_dtype=True)


def lora_layers(module: nn.Module) -> Iterator[LoraLayer]:
    for submodule in module.modules():
        if isinstance(submodule, LoraLayer):
            yield submodule


def remove_modality_adapter(model: nn.Module, modality: str) -> None:
    """Deletes LoRA `modality` from every Q-Former layer and drops its `mmqa` module and PEFT config."""
    for layer in lora_layers(model.qformer):
        if modality in layer.lora_A:
            for name in layer.adapter_layer_names + layer.other_param_names:
                container = getattr(layer, name, None)
                if isinstance(container, (nn.ModuleDict, nn.ParameterDict, dict)) and modality in container:
                    del container[modality]
            layer._active_adapter = [name for name in layer.active_adapters if name != modality]
    if modality in model.mmqa:
        del model.mmqa[modality]
    getattr(model, "peft_config", {}).pop(modality, None)


@contextlib.contextmanager
def route_to_modality(model: nn.Module, modality: str) -> Iterator[None]:
    """Makes the Q-Former's LoRA layers apply only `modality`'s adapter inside the block.

    Only the routing changes: unlike PEFT's `set_adapter`, `requires_grad` of the other adapters is left alone,
    so several adapters can be trained in one forward pass, each on its own modality's Q-Former pass.
    """
    layers = list(lora_layers(model.qformer))
    previous = [layer._active_adapter for layer in layers]
    previous_modality = getattr(model, "routed_modality", None)
    # `modalities_without_lora` (the reference's zero-shot "rgb-skip"): the plain frozen Q-Former
    active = [] if modality in (getattr(model.config, "modalities_without_lora", None) or []) else [modality]
    for layer in layers:
        layer._active_adapter = active
    model.routed_modality = modality  # read by activation checkpointing to route its recomputation the same way
    try:
        yield
    finally:
        for layer, active in zip(layers, previous):
            layer._active_adapter = active
        model.routed_modality = previous_modality


def checkpoint_with_routing(model: nn.Module, checkpoint_function: Callable) -> Callable:
    """Wraps a `torch.utils.checkpoint` function so a Q-Former layer's recomputation in the backward pass (which
    runs outside `route_to_modality`) uses the same modality's LoRA as its forward pass did."""
    if getattr(checkpoint_function, "keywords", {}).get("use_reentrant", False):
        raise ValueError(
            "CREMA needs non-reentrant activation checkpointing (its modality routing is restored through "
            "`context_fn`): pass {'use_reentrant': False}."
        )

    def checkpoint_routed(function: Callable, *args: Any, **kwargs: Any) -> Any:
        modality = getattr(model, "routed_modality", None)
        if modality is None:
            return checkpoint_function(function, *args, **kwargs)

        def contexts():
            return contextlib.nullcontext(), route_to_modality(model, modality)

        return checkpoint_function(function, *args, context_fn=contexts, **kwargs)

    return checkpoint_routed


def modality_module(model: nn.Module, modality: str) -> nn.Module:
    """The trainable copy of `mmqa.<modality>` (PEFT keeps a frozen original next to it; never read that one)."""
    module = model.mmqa[modality]
    if isinstance(module, ModulesToSaveWrapper):
        return module.modules_to_save[modality]
    return module


def adapter_state_dict(model: nn.Module, modality: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the keys `PeftModel.save_pretrained` would write."""
    state = get_peft_model_state_dict(model, adapter_name=modality, save_embedding_layers=False)
    return {PEFT_KEY_PREFIX + key: value.detach().contiguous() for key, value in state.items()}


def load_adapter_state_dict(model: nn.Module, modality: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Copies saved adapter tensors (already checked by `adapter_fit_problems`) into the injected adapter."""
    # The model holds injected layers, not a PeftModel: its keys carry no `base_model.model.` prefix.
    unprefixed = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in state_dict.items()}
    result = set_peft_model_state_dict(model, unprefixed, adapter_name=modality)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"Adapter for modality {modality!r}: keys not loaded: {result.unexpected_keys[:4]}")


def write_adapter_folder(
    directory: str | os.PathLike,
    lora_config: LoraConfig,
    state_dict: dict[str, torch.Tensor],
    modality_spec: dict[str, Any],
    finish: Callable[[str], None] | None = None,
) -> None:
    """Writes one adapter folder atomically (an interrupted save leaves any previous folder intact).

    `finish(staging)` adds files to the save before it replaces the folder (e.g. its Hub card, README.md)."""
    with atomic_directory(directory) as staging:
        lora_config.save_pretrained(staging)
        metadata = {
            "format": "pt",
            MODALITY_METADATA_KEY: json.dumps(modality_spec),
            CHECKSUM_METADATA_KEY: tensors_checksum(state_dict),
        }
        save_file(state_dict, os.path.join(staging, ADAPTER_WEIGHTS_NAME), metadata=metadata)
        if finish is not None:
            finish(staging)


@dataclass
class AdapterFolder:
    """What one adapter folder holds, read and checked without touching any model."""

    location: str
    lora_config: LoraConfig
    tensors: dict[str, torch.Tensor]
    spec: dict[str, Any] | None

    @property
    def saved_modality(self) -> str | None:
        """The modality the adapter was saved for, read from its `mmqa.<modality>.` keys."""
        for key in self.tensors:
            parts = key.split(".")
            if "mmqa" in parts[:-1]:
                return parts[parts.index("mmqa") + 1]
        return None

    def renamed(self, modality: str) -> dict[str, torch.Tensor]:
        """The tensors with their `mmqa.<saved>.` keys renamed to `mmqa.<modality>.`."""
        saved = self.saved_modality
        if saved is None or saved == modality:
            return dict(self.tensors)
        return {key.replace(f".mmqa.{saved}.", f".mmqa.{modality}."): value for key, value in self.tensors.items()}


def read_adapter_folder(path_or_repo_id: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any) -> AdapterFolder:
    """Reads and checks a local adapter folder or a Hub repo (optionally a subfolder).

    Any problem (missing or damaged file, invalid JSON, unknown spec fields, a LoRA rank that disagrees with the
    tensors, NaN/inf) is one `ValueError` naming the file.
    """
    config_file, weights_file = resolve_files(
        path_or_repo_id, (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME), subfolder, "modality adapter",
        "Expected a folder written by `model.save_adapter(dir, modality)`.", **hub_kwargs,
    )
    location = os.path.dirname(config_file)
    config_dict = read_json(config_file, "adapter config")
    try:
        lora_config = LoraConfig.from_pretrained(location)
    except Exception as error:  # PEFT raises TypeError / ValueError / KeyError for fields it cannot take
        raise ValueError(f"{config_file} is not a usable LoRA adapter config ({error}).") from None
    for field_name in ("r", "lora_alpha"):
        value = config_dict.get(field_name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{config_file}: `{field_name}` must be a positive number; got {value!r}.")
    tensors, metadata = read_safetensors(weights_file)
    spec = None
    if MODALITY_METADATA_KEY in metadata:
        try:
            spec = json.loads(metadata[MODALITY_METADATA_KEY])
        except json.JSONDecodeError as error:
            raise ValueError(f"{weights_file}: the modality description is not valid JSON ({error}).") from None
        if not isinstance(spec, dict):
            raise ValueError(f"{weights_file}: the modality description must be a JSON object; got {spec!r}.")
        unknown = sorted(set(spec) - set(MODALITY_SPEC_FIELDS))
        if unknown:
            raise ValueError(f"{weights_file}: unknown modality fields {unknown}; known fields are "
                             f"{list(MODALITY_SPEC_FIELDS)} (was it saved by a newer crema?).")
    for key, tensor in tensors.items():
        rank_axis = 0 if ".lora_A." in key else 1 if ".lora_B." in key else None
        if rank_axis is not None and (tensor.ndim != 2 or tensor.shape[rank_axis] != lora_config.r):
            raise ValueError(
                f"{location}: {ADAPTER_CONFIG_NAME} says r={lora_config.r}, but tensor {key!r} has shape "
                f"{tuple(tensor.shape)} (rank {tensor.shape[rank_axis] if tensor.ndim == 2 else '?'}); the config "
                "and the weights do not belong together."
            )
    return AdapterFolder(location, lora_config, tensors, spec)


def expected_adapter_shapes(model: nn.Module, modality: str, lora_config: LoraConfig, feature_size: int) -> dict[str, tuple]:
    """Keys and shapes a `modality` adapter with `lora_config` must have on `model`, computed without changing it."""
    expected: dict[str, tuple] = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if parts[0] in ("mmqa", "fusion") or any(part.startswith("lora_") or part == "base_layer" for part in parts):
            continue
        if isinstance(module, (nn.Linear, LoraLayer)) and check_target_module_exists(lora_config, name):
            base = module.get_base_layer() if isinstance(module, LoraLayer) else module
            expected[f"{PEFT_KEY_PREFIX}{name}.lora_A.weight"] = (lora_config.r, base.in_features)
            expected[f"{PEFT_KEY_PREFIX}{name}.lora_B.weight"] = (base.out_features, lora_config.r)
    with torch.device("meta"):
        mmqa = model.build_query_adapter(feature_size)
    for key, value in mmqa.state_dict().items():
        expected[f"{PEFT_KEY_PREFIX}mmqa.{modality}.{key}"] = tuple(value.shape)
    return expected


def adapter_fit_problem(expected: dict[str, tuple], tensors: dict[str, torch.Tensor]) -> str | None:
    """Why `tensors` cannot be an adapter with the `expected` keys and shapes (None if they fit)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        return (f"missing keys {missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
                f"{'...' if len(unexpected) > 4 else ''}: was it saved for another LoRA layout?")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            return (f"it was saved for a different backbone width: {key} has shape {tuple(tensors[key].shape)}, "
                    f"this model expects {shape}")
    return None
