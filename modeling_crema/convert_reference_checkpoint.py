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


#: LAVIS's `ln_{m}` LayerNorms use PyTorch's default eps (BLIP-2's `post_layernorm` in transformers: 1e-6).
LAVIS_LAYER_NORM_EPS = 1e-5
#: The token layout the authors' released training scripts (`espresso-concat-seq[-gradsel-es]`) used.
REFERENCE_CHECKPOINT_LAYOUT = "reference_concat"


def load_reference_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Reads a LAVIS `.pth` (only tensors and plain containers are accepted) or a `.safetensors` file.

    Returns the state dict and the training modality order the checkpoint records
    (`checkpoint["config"]["model"]["modalities"]`, e.g. "rgb_audio_flow_depth_norm"), or None.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Reference checkpoint {path!r} does not exist.")
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("modalities")
        return load_file(path), recorded.split("_") if recorded else None
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
    recorded = checkpoint.get("config", {}).get("model", {}).get("modalities") if "model" in checkpoint else None
    if recorded is not None and not isinstance(recorded, str):
        raise ValueError(f"{path!r}: config.model.modalities should be a string like 'rgb_audio_flow'; got {recorded!r}.")
    return state_dict, recorded.split("_") if recorded else None


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], modalities: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int], dict[str, torch.Tensor]]:
    """Splits reference tensors per modality under PEFT adapter keys.

    Returns (adapter tensors per modality, LoRA rank per modality, fusion tensors), in the order `modalities`
    (reference or our names, major first: the training `modalities` string) gives. The order is never inferred
    from the state dict, whose keys come in a fixed rgb, flow, norm, depth, audio, pc order: the fusion's weight
    blocks would land on the wrong modalities.
    """
    if not modalities:
        raise ValueError(
            "The checkpoint does not record its modality order (checkpoint['config']['model']['modalities']) and "
            "none was given: pass the training `modalities` in order, major first (e.g. --modalities "
            "rgb,audio,flow,depth,norm for MUSIC-AVQA)."
        )
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
    wanted = [REFERENCE_MODALITY_NAMES.get(name, name) for name in modalities]
    unknown = sorted(set(wanted) - set(adapters))
    if unknown:
        raise ValueError(f"Modalities {unknown} are not in the checkpoint, which holds {sorted(adapters)}.")
    extra = sorted(set(adapters) - set(wanted))
    if extra:
        raise ValueError(f"The checkpoint also holds adapters for {extra}, which the modality order {wanted} "
                         "does not place: give the full training order.")
    return {name: adapters[name] for name in wanted}, ranks, fusion


def convert_reference_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    lora_dropout: float = 0.1,
) -> list[str]:
    """Writes `output_dir/adapters/<modality>/` (PEFT) and `output_dir/fusion/`; returns the modality order.

    The order comes from the checkpoint's saved config, else from `modalities` (one of them is required; given
    both, they must agree). Load the result with `model.load_adapter(output_dir / "adapters" / m)` and
    `model.load_fusion(output_dir / "fusion")` on a CREMA built `from_blip2` of the same BLIP-2 the authors used
    (Flan-T5-XL) with `token_layout=REFERENCE_CHECKPOINT_LAYOUT` ("reference_concat"), the layout their released
    scripts trained with.
    """
    state_dict, recorded = load_reference_state_dict(checkpoint_path)
    if recorded and modalities:
        given = [REFERENCE_MODALITY_NAMES.get(name, name) for name in modalities]
        saved = [REFERENCE_MODALITY_NAMES.get(name, name) for name in recorded]
        if given != saved:
            raise ValueError(f"The checkpoint was trained with modalities {saved} (its saved config), but {given} "
                             "was given; drop the option to use the saved order.")
    adapters, ranks, fusion = convert_reference_state_dict(state_dict, recorded or modalities)
    order = list(adapters)
    for name, tensors in adapters.items():
        if name not in ranks:
            raise ValueError(f"Reference modality {name!r} has MMQA tensors but no LoRA weights (w_a_/w_b_).")
        projection = tensors.get(f"{PEFT_KEY_PREFIX}mmqa.{name}.input_projection.weight")
        spec = make_modality_spec(name, feature_size=None if projection is None else projection.shape[1],
                                  layer_norm_eps=LAVIS_LAYER_NORM_EPS)
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
