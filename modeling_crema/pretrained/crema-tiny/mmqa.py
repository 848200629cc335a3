"""The per-modality parts of an MMQA adapter that are not LoRA: query tokens, input LayerNorm and projections.

The LoRA half of each MMQA lives inside the shared frozen Q-Former (see `adapters.py`); this module holds the rest,
so that one PEFT adapter (LoRA + `modules_to_save=["mmqa.<modality>"]`) carries a whole modality.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class QueryTokens(nn.Module):
    """Learned query embeddings, wrapped in a module so PEFT saves them under a stable key."""

    def __init__(self, num_query_tokens: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, num_query_tokens, hidden_size))

    def forward(self, batch_size: int) -> torch.Tensor:
        # Without autograd, expand a detached view: a view of a Parameter made under no_grad confuses tracers such
        # as FlopCounterMode ("Expected gradient function to be set").
        weight = self.weight if torch.is_grad_enabled() else self.weight.detach()
        return weight.expand(batch_size, -1, -1)


class ModalityQueryAdapter(nn.Module):
    """Encoder features of one modality -> Q-Former inputs, and Q-Former outputs -> LLM embeddings.

    Shapes: `prepare_encoder_states` maps (N_clips, tokens, feature_size) to (N_clips, tokens, encoder_hidden_size);
    `project_to_language` maps (N_clips, num_query_tokens, qformer_hidden) to (..., text_hidden).
    """

    def __init__(
        self,
        feature_size: int,
        encoder_hidden_size: int,
        qformer_hidden_size: int,
        text_hidden_size: int,
        num_query_tokens: int,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        # Only encoders of another width (e.g. 768-d audio features) need an input projection.
        self.input_projection = (
            nn.Linear(feature_size, encoder_hidden_size) if feature_size != encoder_hidden_size else None
        )
        # Replaces the ViT's post-LayerNorm (LAVIS `ln_vision`), so that each modality normalises its own features.
        self.input_layernorm = nn.LayerNorm(encoder_hidden_size, eps=layer_norm_eps)
        self.query_tokens = QueryTokens(num_query_tokens, qformer_hidden_size)
        self.language_projection = nn.Linear(qformer_hidden_size, text_hidden_size)

    def prepare_encoder_states(
        self, features: torch.Tensor, position_embedding: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """`normalize=False` skips the input LayerNorm: point-cloud features reach the Q-Former as they are, as
        in 3D-LLM and the authors' code (the LayerNorm still exists, so parameter counts match the paper)."""
        features = features.to(self.input_layernorm.weight.dtype)  # frozen encoders may run in bf16/fp16
        if self.input_projection is not None:
            features = self.input_projection(features)
        if position_embedding is not None:
            features = features + position_embedding.to(features.dtype)
        return self.input_layernorm(features) if normalize else features

    def project_to_language(self, query_output: torch.Tensor) -> torch.Tensor:
        return self.language_projection(query_output.to(self.language_projection.weight.dtype))


def sinusoidal_point_embedding(coordinates: torch.Tensor, width: int) -> torch.Tensor:
    """Fixed sin/cos embedding of voxel coordinates, as 3D-LLM builds it (`PositionalEncoding1D(width // 3)` per
    axis: interleaved sin/cos over ceil(c / 2) frequencies, cut to c = width // 3 channels), zero-padded to width.

    coordinates: (..., 3) integer voxel indices. Returns (..., width) float32.
    """
    channels = width // 3
    even = 2 * math.ceil(channels / 2)
    frequencies = 1.0 / (10000 ** (torch.arange(0, even, 2, dtype=torch.float32, device=coordinates.device) / even))
    axes = []
    for axis in range(3):
        angles = coordinates[..., axis : axis + 1].float() * frequencies
        interleaved = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        axes.append(interleaved[..., :channels])
    embedding = torch.cat(axes, dim=-1)
    return nn.functional.pad(embedding, (0, width - embedding.shape[-1]))


def kaiming_uniform_(linear: nn.Linear) -> None:
    """The default `nn.Linear` initialisation, used for freshly added input projections."""
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
    if linear.bias is not None:
        bound = 1 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0
        nn.init.uniform_(linear.bias, -bound, bound)
