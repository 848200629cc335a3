"""Trainable-parameter report per modality adapter and fusion, also at the paper's size without any weights."""

from __future__ import annotations

from typing import Sequence

import torch

from .configuration_crema import CremaConfig
from .modality_names import PAPER_LETTERS  # noqa: F401  (re-exported: the paper's one-letter names)
from .modeling_crema import CremaForConditionalGeneration

#: The paper's backbone, BLIP-2 Flan-T5-XL (DESIGN §1).
PAPER_BACKBONE = dict(
    vision_config=dict(
        hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16, image_size=224,
        patch_size=14,
    ),
    qformer_config=dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30522,
    ),
    text_config=dict(
        model_type="t5", vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24,
        num_heads=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,  # Flan-T5's
    ),
    num_query_tokens=32,
    num_frames=4,
    lora_rank=64,
    lora_dropout=0.1,
)
#: Encoder width of the paper's non-visual encoders: BEATs audio features are 768-d, 3D-LLM point features 1408-d.
PAPER_FEATURE_SIZES = {"audio": 768}


def paper_config(modalities: Sequence[str], use_fusion: bool | None = None) -> CremaConfig:
    """The paper's configuration for `modalities`; like the paper, fusion from three modalities on."""
    use_fusion = len(modalities) >= 3 if use_fusion is None else use_fusion
    specs = [
        {"name": name, "feature_size": PAPER_FEATURE_SIZES.get(name), "encoder": None}
        for name in modalities
    ]
    return CremaConfig(
        **PAPER_BACKBONE,
        modalities=specs,
        use_fusion=use_fusion,
        fusion_modalities=list(modalities) if use_fusion else None,
    )


def build_on_meta(config: CremaConfig) -> CremaForConditionalGeneration:
    """The model's structure without allocating weights (any size fits)."""
    with torch.device("meta"):
        return CremaForConditionalGeneration(config)


def trainable_parameter_rows(model: CremaForConditionalGeneration) -> list[tuple[str, int]]:
    """(component, trainable parameter count) for each modality's MMQA, the fusion, and the total."""
    counts = {name: 0 for name in model.config.modality_names}
    counts["fusion"] = 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        parts = name.split(".")
        if parts[0] == "fusion":
            owner = "fusion"
        elif parts[0] == "mmqa":
            owner = parts[1]
        else:  # lora_A.<modality>.weight inside the Q-Former
            owner = parts[[i for i, part in enumerate(parts) if part.startswith("lora_")][0] + 1]
        counts[owner] += parameter.numel()
    rows = [(f"MMQA {name}", counts[name]) for name in model.config.modality_names]
    if model.fusion is not None:
        rows.append((f"fusion ({len(model.fusion.modalities)} modalities)", counts["fusion"]))
    rows.append(("total trainable", sum(count for _, count in rows)))
    # PEFT keeps a frozen original next to each trainable `mmqa.<m>` copy: that is not backbone.
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and not n.startswith("mmqa."))
    rows.append(("frozen backbone", frozen))
    return rows


def format_parameter_table(rows: list[tuple[str, int]], title: str = "") -> str:
    width = max(len(name) for name, _ in rows)
    lines = [title] if title else []
    lines += [f"{'component'.ljust(width)}  {'parameters':>14}", f"{'-' * width}  {'-' * 14}"]
    lines += [f"{name.ljust(width)}  {count:>14,}" for name, count in rows]
    return "\n".join(lines)


def paper_parameter_rows(modalities: Sequence[str], use_fusion: bool | None = None) -> list[tuple[str, int]]:
    return trainable_parameter_rows(build_on_meta(paper_config(modalities, use_fusion)))
