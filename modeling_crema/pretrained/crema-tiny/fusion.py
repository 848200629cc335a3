"""CREMA's self-gated multimodal fusion (paper eq. 3): supportive modalities -> one gated token stream."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .checked_files import CHECKSUM_METADATA_KEY, read_json, read_safetensors, resolve_files, tensors_checksum
from .saving import atomic_directory


class SelfGatedFusion(nn.Module):
    """Channel-wise concat of the M-1 supportive modalities, one Linear back to the LLM width, then x * sigmoid(x).

    Input: a list of M-1 tensors (B, T, Q, H), in the order of `modalities[1:]`. Output: (B, T, Q, H).
    The module is tied to the ordered set of modalities it was built for (`modalities`, major modality first).
    """

    def __init__(self, hidden_size: int, modalities: list[str]):
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"The fusion needs a major and at least one supportive modality; got {modalities}.")
        self.modalities = list(modalities)
        self.hidden_size = hidden_size
        self.projection = nn.Linear(hidden_size * (len(modalities) - 1), hidden_size)

    @property
    def supportive_modalities(self) -> list[str]:
        return self.modalities[1:]

    def forward(self, supportive: list[torch.Tensor]) -> torch.Tensor:
        fused = self.projection(torch.cat(supportive, dim=-1))
        return torch.sigmoid(fused) * fused


FUSION_CONFIG_NAME = "fusion_config.json"
FUSION_WEIGHTS_NAME = "fusion.safetensors"


def write_fusion_folder(
    directory: str | os.PathLike, modalities: list[str], hidden_size: int, state_dict: dict[str, torch.Tensor]
) -> None:
    """Saves a fusion with the ordered modalities it was trained on (atomically)."""
    with atomic_directory(directory) as staging:
        with open(os.path.join(staging, FUSION_CONFIG_NAME), "w") as handle:
            json.dump({"modalities": list(modalities), "hidden_size": hidden_size}, handle)
        tensors = {key: value.detach().contiguous() for key, value in state_dict.items()}
        metadata = {"format": "pt", CHECKSUM_METADATA_KEY: tensors_checksum(tensors)}
        save_file(tensors, os.path.join(staging, FUSION_WEIGHTS_NAME), metadata=metadata)


@dataclass
class FusionFolder:
    """A saved fusion, read and checked (config fields, tensor keys and shapes) without touching any model."""

    location: str
    modalities: list[str]
    hidden_size: int
    tensors: dict[str, torch.Tensor]


def read_fusion_folder(path_or_repo_id: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any) -> FusionFolder:
    """Reads a local fusion folder or a Hub repo (optionally a subfolder); any problem is a `ValueError` naming it."""
    config_file, weights_file = resolve_files(
        path_or_repo_id, (FUSION_CONFIG_NAME, FUSION_WEIGHTS_NAME), subfolder, "fusion",
        "Expected a folder written by `model.save_fusion(dir)`.", **hub_kwargs,
    )
    config = read_json(config_file, "fusion config")
    modalities, hidden_size = config.get("modalities"), config.get("hidden_size")
    if not isinstance(modalities, list) or len(modalities) < 2 or not all(isinstance(m, str) for m in modalities):
        raise ValueError(f"{config_file}: `modalities` must list at least two modality names; got {modalities!r}.")
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size <= 0:
        raise ValueError(f"{config_file}: `hidden_size` must be a positive integer; got {hidden_size!r}.")
    tensors, _ = read_safetensors(weights_file)
    expected = {
        "projection.weight": (hidden_size, hidden_size * (len(modalities) - 1)),
        "projection.bias": (hidden_size,),
    }
    found = {key: tuple(value.shape) for key, value in tensors.items()}
    if found != expected:
        raise ValueError(f"{weights_file}: a fusion over {modalities} at width {hidden_size} needs tensors "
                         f"{expected}; the file holds {found}.")
    return FusionFolder(os.path.dirname(config_file), modalities, hidden_size, tensors)
