"""CREMA's equations (DESIGN §1) written out by hand for the independent tests.

Everything here uses plain torch and the `transformers` BLIP-2 / T5 modules (`Blip2QFormerModel`,
`Blip2VisionModel`, the T5 `language_model`), never a forward of `modeling_crema`, so that a test comparing the
model with these functions does not compare the model with itself. The only link to the model is
`set_random_mmqa`, which writes known random tensors into a model's adapter so the test holds its own copies.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


# ------------------------------------------------------------------------------------------- one modality's MMQA
@dataclass
class HandMMQA:
    """The tensors of one modality's MMQA (DESIGN §1.1), as a test wrote them into the model.

    lora: {(layer index, "query" | "value"): (A (r, in), B (out, r))}; scale: lora_alpha / r.
    layernorm: (weight, bias, eps) of the input LayerNorm. input_projection: (weight, bias) or None.
    """

    lora: dict
    scale: float
    query_tokens: torch.Tensor
    layernorm: tuple
    projection: tuple
    input_projection: tuple | None = None


def merged_qformer(base_qformer, lora: dict, scale: float):
    """A deep copy of a plain `Blip2QFormerModel` whose self-attention query/value weights are W + scale * B @ A."""
    qformer = copy.deepcopy(base_qformer).eval()
    with torch.no_grad():
        for (index, projection), (lora_a, lora_b) in lora.items():
            linear = getattr(qformer.encoder.layer[index].attention.attention, projection)
            linear.weight += scale * lora_b @ lora_a
    return qformer


def vision_pre_layernorm_states(vision_model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B*T, N, D): the ViT's last hidden states *before* its `post_layernorm`."""
    with torch.no_grad():
        outputs = vision_model(pixel_values.flatten(0, 1), output_hidden_states=True)
    return outputs.hidden_states[-1]


def mmqa_forward(
    base_qformer,
    mmqa: HandMMQA,
    states: torch.Tensor,
    encoder_mask: torch.Tensor | None = None,
    position_embedding: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Encoder states (N_clips, tokens, width) -> (input projection) -> (+ position) -> (input LayerNorm) ->
    Q-Former with W + scale*B@A and m's query tokens -> language projection: (N_clips, Q, text width)."""
    states = states.float()
    if mmqa.input_projection is not None:
        states = F.linear(states, *mmqa.input_projection)
    if position_embedding is not None:
        states = states + position_embedding
    if normalize:
        weight, bias, eps = mmqa.layernorm
        states = F.layer_norm(states, (states.shape[-1],), weight, bias, eps)
    qformer = merged_qformer(base_qformer, mmqa.lora, mmqa.scale)
    with torch.no_grad():
        query_output = qformer(
            query_embeds=mmqa.query_tokens.expand(states.shape[0], -1, -1),
            encoder_hidden_states=states,
            encoder_attention_mask=encoder_mask,
        ).last_hidden_state
    return F.linear(query_output, *mmqa.projection)


def set_random_mmqa(
    model, modality: str, seed: int, scale: float, lora_std: float = 0.3, layernorm_eps: float | None = None
) -> HandMMQA:
    """Writes random LoRA A/B, query tokens, input LayerNorm and projections into `modality`'s adapter of a CREMA
    model and returns the same tensors (the test's own copies). `scale` is the LoRA scale the test expects
    (alpha / r from the config it built), `layernorm_eps` the LayerNorm eps it expects (default: the module's)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=generator) * std + mean

    lora = {}
    with torch.no_grad():
        for index, layer in enumerate(model.qformer.encoder.layer):
            for projection in ("query", "value"):
                wrapped = getattr(layer.attention.attention, projection)
                a_layer, b_layer = wrapped.lora_A[modality], wrapped.lora_B[modality]
                lora_a = rand(*a_layer.weight.shape, std=1 / math.sqrt(a_layer.weight.shape[1]))
                lora_b = rand(*b_layer.weight.shape, std=lora_std)
                a_layer.weight.copy_(lora_a)
                b_layer.weight.copy_(lora_b)
                lora[(index, projection)] = (lora_a.clone(), lora_b.clone())
        adapter = model.mmqa[modality].modules_to_save[modality]
        query_tokens = rand(*adapter.query_tokens.weight.shape, std=0.5)
        adapter.query_tokens.weight.copy_(query_tokens)
        norm = adapter.input_layernorm
        norm_weight, norm_bias = rand(*norm.weight.shape, std=0.2, mean=1.0), rand(*norm.bias.shape, std=0.2)
        norm.weight.copy_(norm_weight)
        norm.bias.copy_(norm_bias)
        projection = adapter.language_projection
        projection_weight = rand(*projection.weight.shape, std=1 / math.sqrt(projection.weight.shape[1]))
        projection_bias = rand(*projection.bias.shape, std=0.1)
        projection.weight.copy_(projection_weight)
        projection.bias.copy_(projection_bias)
        input_projection = None
        if adapter.input_projection is not None:
            weight = rand(*adapter.input_projection.weight.shape, std=1 / math.sqrt(adapter.input_projection.weight.shape[1]))
            bias = rand(*adapter.input_projection.bias.shape, std=0.1)
            adapter.input_projection.weight.copy_(weight)
            adapter.input_projection.bias.copy_(bias)
            input_projection = (weight, bias)
    eps = norm.eps if layernorm_eps is None else layernorm_eps
    return HandMMQA(lora, scale, query_tokens, (norm_weight, norm_bias, eps), (projection_weight, projection_bias),
                    input_projection)


# ------------------------------------------------------------------------------------- point-cloud positions
def positional_encoding_1d(positions: int, channels: int) -> torch.Tensor:
    """`positional_encodings.torch_encodings.PositionalEncoding1D(channels)` over `positions` positions, as 3D-LLM
    and the CREMA reference build it: frequencies over the channel count rounded up to even, sin and cos
    interleaved (sin f0, cos f0, sin f1, ...), cut to `channels`. Returns (positions, channels)."""
    even = int(math.ceil(channels / 2) * 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, even, 2).float() / even))
    sin_inp = torch.einsum("i,j->ij", torch.arange(positions).float(), inv_freq)
    table = torch.zeros(positions, even)
    table[:, 0::2] = sin_inp.sin()
    table[:, 1::2] = sin_inp.cos()
    return table[:, :channels]


def point_position_embedding(coordinates: torch.Tensor, width: int, grid: int = 256) -> torch.Tensor:
    """The reference's `all_pcs`: per point, [table[x], table[y], table[z]] with table = PositionalEncoding1D(width
    // 3) over `grid` positions, written into the first 3 * (width // 3) channels of a zero (…, width) tensor."""
    channels = width // 3
    table = positional_encoding_1d(grid, channels)
    embedding = torch.zeros(*coordinates.shape[:-1], width)
    embedding[..., : 3 * channels] = torch.cat([table[coordinates[..., axis].long()] for axis in range(3)], dim=-1)
    return embedding


# ------------------------------------------------------------------------------------------------- fusion
def self_gated_fusion(
    supportive: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor, gated: bool = True
) -> torch.Tensor:
    """Paper eq. 3: x = Linear(concat_channels(supportive)); x * sigmoid(x). Written as a sum over the weight's
    column blocks, one block per supportive modality (block k multiplies supportive[k])."""
    width = supportive[0].shape[-1]
    x = bias.clone()
    for index, tensor in enumerate(supportive):
        block = weight[:, index * width : (index + 1) * width]
        x = x + tensor @ block.T
    return x * (1.0 / (1.0 + torch.exp(-x))) if gated else x


# ------------------------------------------------------------------------------------------- LLM input / loss
def embed_ids(embedding_weight: torch.Tensor, ids: list[int], batch: int) -> torch.Tensor:
    """Token ids -> (batch, len, width) rows of the embedding table."""
    return embedding_weight[torch.tensor(ids, dtype=torch.long)].unsqueeze(0).expand(batch, -1, -1)


def summed_answer_nll(language_model, inputs_embeds, attention_mask, labels) -> torch.Tensor:
    """Per example, -sum over answer tokens (labels != -100) of log p(label), from the T5 module directly."""
    with torch.no_grad():
        logits = language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    total = torch.zeros(labels.shape[0])
    for row in range(labels.shape[0]):
        for step in range(labels.shape[1]):
            token = int(labels[row, step])
            if token != -100:
                total[row] -= log_probs[row, step, token]
    return total


def sharpen_cross_attention(blip2, gain: float = 3.0, seed: int = 0) -> None:
    """Redraws the Q-Former cross-attention key/value/output weights of a tiny random BLIP-2 (or CREMA) backbone at
    a larger scale (std gain / sqrt(width)), so that the Q-Former output depends visibly on its encoder states (with
    BLIP-2's 0.02 init it barely does, and a wrong encoder input would hide under the test tolerance)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in blip2.qformer.encoder.layer:
            if getattr(layer, "has_cross_attention", False):
                cross = layer.crossattention
                for linear in (cross.attention.key, cross.attention.value, cross.output.dense):
                    width = linear.weight.shape[1]
                    linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * gain / math.sqrt(width))
