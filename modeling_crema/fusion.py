"""CREMA's self-gated multimodal fusion (paper eq. 3): supportive modalities -> one gated token stream."""

from __future__ import annotations

import torch
from torch import nn


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
