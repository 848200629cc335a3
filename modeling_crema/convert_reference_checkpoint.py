"""The authors' LAVIS checkpoints -> one PEFT adapter folder per modality + a fusion folder (DESIGN §4).

Reference names: `Qformer.bert.encoder.layer.{i}.attention.self.{query,value}.w_{a,b}_{m}.weight` (LoRA, scale 1),
`query_tokens_{m}`, `t5_proj_{m}.*`, `ln_{m}.*`, `projection_audio.*`, `fusion.0.*`, with m in
rgb, depth, flow, norm, audio, pc. Frozen backbone keys in the file are ignored (the backbone comes from BLIP-2).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Sequence

import torch
from safetensors.torch import load_file
from transformers.utils import logging

from .adapters import PEFT_KEY_PREFIX, modality_lora_config, write_adapter_folder
from .configuration_crema import make_modality_spec
from .fusion import write_fusion_folder

logger = logging.get_logger(__name__)

#: Reference modality suffix -> our modality name.
REFERENCE_MODALITY_NAMES = {
    "rgb": "video", "depth": "depth", "flow": "flow", "norm": "normal", "audio": "audio", "pc": "point_cloud",
}
_LORA_KEY = re.compile(
    r"^Qformer\.bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|value)\.w_([ab])_([a-z]+)\.weight$"
)
_MODULE_KEY = re.compile(r"^(query_tokens|t5_proj|ln)_([a-z]+)(?:\.(weight|bias))?$")


def load_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a LAVIS `.pth` (only tensors and plain containers are accepted) or a `.safetensors` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Reference checkpoint {path!r} does not exist.")
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for unsafe or corrupt pickles
        raise ValueError(
            f"Could not read reference checkpoint {path!r} safely (weights_only=True): {error}. "
            "Re-save it as {'model': state_dict} or as a .safetensors file."
        ) from error
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path!r} holds no state dict (expected a dict of tensors, or {{'model': state_dict}}).")
    return state_dict


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], modalities: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int], dict[str, torch.Tensor]]:
    """Splits reference tensors per modality under PEFT adapter keys.

    Returns (adapter tensors per modality, LoRA rank per modality, fusion tensors). `modalities` (reference or our
    names) fixes the order; by default the order of first appearance in the checkpoint.
    """
    adapters: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    ranks: dict[str, int] = {}
    order: list[str] = []
    fusion: dict[str, torch.Tensor] = {}
    ignored = 0

    def ours(reference: str) -> str:
        if reference not in REFERENCE_MODALITY_NAMES:
            raise ValueError(f"Unknown reference modality {reference!r}; expected one of {sorted(REFERENCE_MODALITY_NAMES)}.")
        name = REFERENCE_MODALITY_NAMES[reference]
        if name not in order:
            order.append(name)
        return name

    for key, tensor in state_dict.items():
        if match := _LORA_KEY.match(key):
            layer, projection, which, reference = match.groups()
            name = ours(reference)
            target = f"qformer.encoder.layer.{layer}.attention.attention.{projection}.lora_{which.upper()}.weight"
            adapters[name][PEFT_KEY_PREFIX + target] = tensor
            if which == "a":
                ranks[name] = tensor.shape[0]
        elif match := _MODULE_KEY.match(key):
            kind, reference, parameter = match.groups()
            name = ours(reference)
            module = {"query_tokens": "query_tokens", "t5_proj": "language_projection", "ln": "input_layernorm"}[kind]
            suffix = parameter or "weight"
            adapters[name][f"{PEFT_KEY_PREFIX}mmqa.{name}.{module}.{suffix}"] = tensor
        elif key.startswith("projection_audio."):
            name = ours("audio")
            adapters[name][f"{PEFT_KEY_PREFIX}mmqa.{name}.input_projection.{key.split('.')[-1]}"] = tensor
        elif key.startswith("fusion.0."):
            fusion[f"projection.{key.split('.')[-1]}"] = tensor
        else:
            ignored += 1
    if not adapters:
        raise ValueError("No CREMA adapter tensors found (keys like `query_tokens_rgb`, `...query.w_a_rgb.weight`).")
    if ignored:
        logger.info(f"Ignored {ignored} frozen-backbone tensors of the reference checkpoint.")
    if modalities is not None:
        wanted = [REFERENCE_MODALITY_NAMES.get(name, name) for name in modalities]
        unknown = sorted(set(wanted) - set(adapters))
        if unknown:
            raise ValueError(f"Modalities {unknown} are not in the checkpoint, which holds {order}.")
        order = wanted + [name for name in order if name not in wanted]
    return {name: adapters[name] for name in order}, ranks, fusion


def convert_reference_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    lora_dropout: float = 0.1,
) -> list[str]:
    """Writes `output_dir/adapters/<modality>/` (PEFT) and `output_dir/fusion/`; returns the modality order.

    Load them with `model.load_adapter(output_dir / "adapters" / m)` and `model.load_fusion(output_dir / "fusion")`
    on a CREMA built `from_blip2` of the same BLIP-2 the authors used (Flan-T5-XL) with `token_layout="reference"`,
    the layout their code trained with.
    """
    adapters, ranks, fusion = convert_reference_state_dict(load_reference_state_dict(checkpoint_path), modalities)
    order = list(adapters)
    for name, tensors in adapters.items():
        if name not in ranks:
            raise ValueError(f"Reference modality {name!r} has MMQA tensors but no LoRA weights (w_a_/w_b_).")
        projection = tensors.get(f"{PEFT_KEY_PREFIX}mmqa.{name}.input_projection.weight")
        spec = make_modality_spec(name, feature_size=None if projection is None else projection.shape[1])
        if spec["feature_size"] is None:
            spec["feature_size"] = tensors[f"{PEFT_KEY_PREFIX}mmqa.{name}.input_layernorm.weight"].shape[0]
        config = modality_lora_config(name, rank=ranks[name], alpha=ranks[name], dropout=lora_dropout)
        write_adapter_folder(os.path.join(output_dir, "adapters", name), config, tensors, spec)
    if fusion:
        hidden = fusion["projection.weight"].shape[0]
        expected = len(order) - 1
        if fusion["projection.weight"].shape[1] != hidden * expected:
            raise ValueError(
                f"Reference fusion takes {fusion['projection.weight'].shape[1]} inputs, expected {hidden} x "
                f"{expected} supportive modalities of {order}."
            )
        write_fusion_folder(os.path.join(output_dir, "fusion"), order, hidden, fusion)
    return order
