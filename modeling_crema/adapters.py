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
from typing import Any, Callable, Iterator

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import cast_adapter_dtype
from peft.utils import ModulesToSaveWrapper
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.utils import cached_file, logging

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
    for layer in layers:
        layer._active_adapter = [modality]
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


def expected_adapter_shapes(model: nn.Module, modality: str) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in adapter_state_dict(model, modality).items()}


def load_adapter_state_dict(model: nn.Module, modality: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Copies saved adapter tensors into the injected adapter, refusing any key or shape that does not match."""
    expected = expected_adapter_shapes(model, modality)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"Adapter for modality {modality!r} does not fit this model: missing keys {missing[:4]}"
            f"{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
            f"{'...' if len(unexpected) > 4 else ''}. Was it saved for another backbone or another LoRA layout?"
        )
    for key, shape in expected.items():
        if state_dict[key].shape != shape:
            raise ValueError(
                f"Adapter for modality {modality!r} was saved for a different backbone width: {key} has shape "
                f"{tuple(state_dict[key].shape)}, this model expects {tuple(shape)}."
            )
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
) -> None:
    """Writes one adapter folder atomically (an interrupted save leaves any previous folder intact)."""
    with atomic_directory(directory) as staging:
        lora_config.save_pretrained(staging)
        metadata = {"format": "pt", MODALITY_METADATA_KEY: json.dumps(modality_spec)}
        save_file(state_dict, os.path.join(staging, ADAPTER_WEIGHTS_NAME), metadata=metadata)


def read_adapter_folder(
    path_or_repo_id: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any
) -> tuple[LoraConfig, dict[str, torch.Tensor], dict[str, Any] | None]:
    """Reads a local adapter folder or a Hub repo (optionally a subfolder): config, tensors, modality spec."""
    try:
        config_file = cached_file(str(path_or_repo_id), ADAPTER_CONFIG_NAME, subfolder=subfolder or "", **hub_kwargs)
        weights_file = cached_file(str(path_or_repo_id), ADAPTER_WEIGHTS_NAME, subfolder=subfolder or "", **hub_kwargs)
    except OSError as error:
        where = f"{path_or_repo_id}" + (f"/{subfolder}" if subfolder else "")
        raise ValueError(
            f"No modality adapter found at {where!r}: expected {ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME} "
            f"(a folder written by `model.save_adapter(dir, modality)`). Cause: {error}"
        ) from error
    lora_config = LoraConfig.from_pretrained(os.path.dirname(config_file))
    with safe_open(weights_file, framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    spec = json.loads(metadata[MODALITY_METADATA_KEY]) if MODALITY_METADATA_KEY in metadata else None
    return lora_config, tensors, spec
