"""CREMA's self-gated multimodal fusion (paper eq. 3): supportive modalities -> one gated token stream."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import cached_file

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
        save_file(tensors, os.path.join(staging, FUSION_WEIGHTS_NAME), metadata={"format": "pt"})


def read_fusion_folder(
    path_or_repo_id: str | os.PathLike, subfolder: str | None = None, **hub_kwargs: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Reads a local fusion folder or a Hub repo (optionally a subfolder): its config and tensors."""
    try:
        config_file = cached_file(str(path_or_repo_id), FUSION_CONFIG_NAME, subfolder=subfolder or "", **hub_kwargs)
        weights_file = cached_file(str(path_or_repo_id), FUSION_WEIGHTS_NAME, subfolder=subfolder or "", **hub_kwargs)
    except OSError as error:
        raise ValueError(
            f"No fusion found at {path_or_repo_id!r} (subfolder {subfolder!r}): expected {FUSION_CONFIG_NAME} and "
            f"{FUSION_WEIGHTS_NAME}, as written by `model.save_fusion(dir)`. Cause: {error}"
        ) from error
    with open(config_file) as handle:
        return json.load(handle), load_file(weights_file)
