"""GFLOPs per answer of CREMA at the paper's size (BLIP-2 Flan-T5-XL, 4 frames, 224 px): fusion vs concatenation.

Each part of one answer is counted on PyTorch's `meta` device (no weights, no memory, no download) with
`torch.utils.flop_counter.FlopCounterMode`, separately:
  - encoders: the frozen ViT on (B·T, 3, 224, 224) pixels per visual modality; audio's encoder is BEATs in the paper,
    which is not in the model (it takes precomputed features), so an AST of BEATs' size stands in for it (12 layers,
    768-d, 2 segments of 512 frames x 128 mel bins, 16x16 patches without overlap) — or 0 with `--audio-encoder none`;
  - Q-Former: one pass per modality (its LoRA, input LayerNorm/projection, query tokens and language projection
    included) on its query tokens and the encoder states;
  - fusion: the model's own LLM input assembly (`prepare_language_model_inputs` with the Q-Former outputs above):
    the self-gated fusion's Linear, prefixes and layout;
  - LLM: the T5 encoder on `inputs_embeds` of the assembled length (the visual tokens + the prompt), without an
    attention mask (every position is real), plus one teacher-forced decoder pass over the answer tokens (the
    same matrix products as decoding them one by one with a KV cache; the cross-attention keys/values of the
    encoder output are computed once, as with the cache).
FlopCounterMode counts 2 FLOPs per multiply-accumulate (matrix products, convolutions and attention only:
normalisation, softmax and activations are not counted); GMACs = GFLOPs / 2.

Token-length assumptions (Flan-T5's sentencepiece tokenizer is not available offline; `--tokenizer PATH` uses a
real one): a prefix "Frame 1: " is 4 tokens ("▁Frame", "▁1", ":" and the "▁" the fast tokenizer keeps for the
trailing space), and in general a prefix of w words is w + 2 tokens ("Depth: " 3, "Optical Flow: " 4); the NExT-QA
prompt (question, five options, instruction) is `--prompt-tokens` (80) tokens; the answer "Option A" is
`--answer-tokens` (3: "▁Option", "▁A", "</s>") decoder steps.

    python benchmarks/gflops.py [--frames 4] [--prompt-tokens 80] [--answer-tokens 3] [--audio-encoder none]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ASTConfig, ASTModel

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from modeling_crema.adapters import modality_module, route_to_modality
from modeling_crema.parameter_report import PAPER_LETTERS, paper_config

#: The rows: V alone, then 2-5 modalities (the paper's NExT-QA set, and MUSIC-AVQA's with audio).
MODALITY_SETS = [("V",), ("V", "F"), ("V", "F", "D"), ("V", "F", "D", "N"), ("V", "A", "F", "D", "N")]
#: The paper's GFLOPs, keyed by (modalities, mode): NExT-QA (Table 3: CREMA, whose two-modality rows concatenate,
#: and the BLIP-2 baseline, four fully trained Q-Formers whose tokens are concatenated; Table 7: concat vs fusion),
#: and MUSIC-AVQA (Table 1) for the row with audio.
PAPER_GFLOPS = {
    (("V",), "-"): "1.30K",
    (("V", "F"), "concat"): "2.22K (BLIP-2: 2.21K)",
    (("V", "F", "D"), "concat"): "BLIP-2: 5.03K",
    (("V", "F", "D"), "fusion"): "2.34K",
    (("V", "F", "D", "N"), "concat"): "6.14K (BLIP-2: 6.12K)",
    (("V", "F", "D", "N"), "fusion"): "2.47K",
    (("V", "A", "F", "D", "N"), "fusion"): "1.84K (MUSIC-AVQA)",
}
#: BEATs (iter3+, AS2M) per segment: 512 fbank frames x 128 mel bins -> 16x16 patches -> 256 tokens of width 768.
BEATS_SEGMENTS, BEATS_FRAMES, BEATS_MEL_BINS, BEATS_TOKENS = 2, 512, 128, 256
BEATS_SIZED_AST = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16,
    frequency_stride=16, time_stride=16, max_length=BEATS_FRAMES, num_mel_bins=BEATS_MEL_BINS,
)


def assumed_prefix_length(text: str) -> int:
    """Flan-T5 tokens of a prefix such as "Frame 1: ": one per word, the colon, and the trailing "▁"."""
    return len(text.split()) + 2 if text else 0


@dataclass
class AnswerCount:
    """FLOPs of one answer (batch 1), per part."""

    modalities: tuple[str, ...]
    mode: str  # "-" (one modality), "concat" or "fusion"
    llm_input_tokens: int = 0
    flops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("encoders", "qformer", "fusion", "llm"), 0))

    @property
    def total(self) -> int:
        return sum(self.flops.values())


def counted(function: Callable[[], object]) -> tuple[object, int]:
    """Runs `function` under FlopCounterMode: (its result, FLOPs)."""
    with FlopCounterMode(display=False) as counter:
        result = function()
    return result, counter.get_total_flops()


def meta_model(config: CremaConfig) -> CremaForConditionalGeneration:
    """The model's structure on `meta`, in eval mode (no dropout) and without gradients (counting only)."""
    with torch.device("meta"):
        model = CremaForConditionalGeneration(config)
    return model.eval().requires_grad_(False)


def qformer_pass(model: CremaForConditionalGeneration, name: str, features: torch.Tensor) -> torch.Tensor:
    """`encode_modality` after the frozen encoder, without the encoder mask (all ones; masks do not run on meta):
    (B, G, N, D) encoder states -> (B, G, Q, LLM width)."""
    batch, groups = features.shape[:2]
    adapter = modality_module(model, name)
    states = adapter.prepare_encoder_states(features.flatten(0, 1))
    with route_to_modality(model, name):
        output = model.qformer(query_embeds=adapter.query_tokens(batch * groups), encoder_hidden_states=states)
    embeds = adapter.project_to_language(output.last_hidden_state)
    return embeds.view(batch, groups, *embeds.shape[1:])


def count_answer(
    config: CremaConfig,
    prompt_tokens: int,
    answer_tokens: int,
    audio_encoder_config: ASTConfig | None = None,
    audio_shape: tuple[int, int, int] = (BEATS_SEGMENTS, BEATS_TOKENS, 768),
    encoder_cache: dict | None = None,
) -> tuple[dict[str, int], int]:
    """FLOPs per part of one answer (batch 1) and the LLM encoder's input length, for any CREMA config.

    Visual modalities run through the model's ViT; audio (precomputed features, width `audio_shape[-1]`) through
    `audio_encoder_config`'s AST on (segments, 512, 128) inputs when given (else its encoder counts 0).
    `encoder_cache`: frozen-encoder counts by encoder kind, reused for every modality with the same encoder and
    input shape (the same computation: one count of the ViT serves V, F, D and N); share it only between configs
    with the same backbone.
    """
    encoder_cache = {} if encoder_cache is None else encoder_cache
    model = meta_model(config)
    frames, size = config.num_frames, config.vision_config.image_size
    flops = dict.fromkeys(("encoders", "qformer", "fusion", "llm"), 0)
    embeds = {}
    for spec in config.modalities:
        name = spec["name"]
        if spec["encoder"] == "vision":
            pixels = torch.empty(1, frames, 3, size, size, device="meta")
            if ("vision", pixels.shape) not in encoder_cache:
                encoder_cache["vision", pixels.shape] = counted(
                    lambda: model.encode_frozen_features(name, **{f"{name}_pixel_values": pixels})
                )
            features, encoder_flops = encoder_cache["vision", pixels.shape]
        elif spec["encoder"] == "audio":
            features, encoder_flops = torch.empty(1, *audio_shape, device="meta"), 0
            if audio_encoder_config is not None and ("audio", audio_shape) in encoder_cache:
                encoder_flops = encoder_cache["audio", audio_shape]
            elif audio_encoder_config is not None:
                with torch.device("meta"):
                    audio_model = ASTModel(audio_encoder_config).eval().requires_grad_(False)
                segments = torch.empty(
                    audio_shape[0], audio_encoder_config.max_length, audio_encoder_config.num_mel_bins, device="meta"
                )
                _, encoder_flops = counted(lambda: audio_model(input_values=segments))
                encoder_cache["audio", audio_shape] = encoder_flops
        else:
            raise ValueError(f"{name!r}: only vision and audio modalities are counted here.")
        flops["encoders"] += encoder_flops
        embeds[name], qformer_flops = counted(lambda: qformer_pass(model, name, features))
        flops["qformer"] += qformer_flops

    prompt = torch.zeros(1, prompt_tokens, dtype=torch.long, device="meta")
    placeholders = {f"{name}_features": torch.empty(0, device="meta") for name in embeds}
    # The model's own assembly (fusion, prefixes, layout), fed the Q-Former outputs counted above.
    with mock.patch.object(model, "encode_modality", side_effect=lambda name, **_: embeds[name]):
        prepared, flops["fusion"] = counted(lambda: model.prepare_language_model_inputs(prompt, **placeholders))
    language_model = model.language_model
    encoder_outputs, encoder_flops = counted(lambda: language_model.get_encoder()(inputs_embeds=prepared.inputs_embeds))
    answer = torch.zeros(1, answer_tokens, dtype=torch.long, device="meta")
    _, decoder_flops = counted(lambda: language_model(encoder_outputs=encoder_outputs, decoder_input_ids=answer))
    flops["llm"] = encoder_flops + decoder_flops
    return flops, prepared.inputs_embeds.shape[1]


def paper_size_config(letters: Sequence[str], fusion: bool, frames: int, tokenizer=None) -> CremaConfig:
    """The paper's configuration, prefixes filled (real tokenizer or the assumed lengths)."""
    names = [PAPER_LETTERS[letter] for letter in letters]
    config = paper_config(names, use_fusion=fusion and len(names) > 1)
    config.num_frames = frames
    for spec in config.modalities:
        if spec["name"] == "audio":
            # Precomputed BEATs features through the "audio" path: averaged over segments by the fusion (the
            # "features" kind that `paper_config` uses is not aligned to the frames, so it cannot be fused).
            spec["encoder"] = "audio"
    if tokenizer is not None:
        template = config.frame_prefix_template
        config.frame_prefix_token_ids = [tokenizer(template.format(i=i + 1), add_special_tokens=False).input_ids
                                         for i in range(frames)]
        for spec in config.modalities:
            spec["prefix_token_ids"] = tokenizer(spec["prefix"], add_special_tokens=False).input_ids
    else:  # only the lengths matter on meta
        config.frame_prefix_token_ids = [
            [3] * assumed_prefix_length(config.frame_prefix_template.format(i=i + 1)) for i in range(frames)
        ]
        for spec in config.modalities:
            spec["prefix_token_ids"] = [3] * assumed_prefix_length(spec["prefix"])
    return config


def gflops_rows(
    make_config: Callable[[Sequence[str], bool], CremaConfig],
    modality_sets: Sequence[Sequence[str]] = MODALITY_SETS,
    prompt_tokens: int = 80,
    answer_tokens: int = 3,
    audio_encoder_config: ASTConfig | None = None,
    audio_shape: tuple[int, int, int] = (BEATS_SEGMENTS, BEATS_TOKENS, 768),
) -> list[AnswerCount]:
    """One row per modality set and mode: one modality alone, else concat then fusion. `make_config(letters,
    fusion)` builds each configuration (all on the same backbone)."""
    rows, encoder_cache = [], {}
    for letters in modality_sets:
        for mode in (["-"] if len(letters) == 1 else ["concat", "fusion"]):
            flops, tokens = count_answer(make_config(letters, mode == "fusion"), prompt_tokens, answer_tokens,
                                         audio_encoder_config, audio_shape, encoder_cache)
            rows.append(AnswerCount(tuple(letters), mode, tokens, flops))
    return rows


def format_table(rows: list[AnswerCount], paper: dict | None = None) -> str:
    """Markdown: parts in GMACs (as the paper seems to count), totals in GMACs and GFLOPs, the paper's figure."""
    paper = PAPER_GFLOPS if paper is None else paper
    lines = [
        "| modalities | mode | LLM input tokens | encoders | Q-Former | fusion | LLM | without encoders | total GMACs "
        "| total GFLOPs | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        parts = " | ".join(f"{row.flops[key] / 2e9:,.1f}" for key in ("encoders", "qformer", "fusion", "llm"))
        reported = paper.get((row.modalities, row.mode))
        lines.append(
            f"| {','.join(row.modalities)} | {row.mode} | {row.llm_input_tokens} | {parts} | "
            f"{(row.total - row.flops['encoders']) / 2e9:,.0f} | {row.total / 2e9:,.0f} | "
            f"{row.total / 1e9:,.0f} | {reported or ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=80)
    parser.add_argument("--answer-tokens", type=int, default=3)
    parser.add_argument("--audio-encoder", choices=("beats-sized-ast", "none"), default="beats-sized-ast")
    parser.add_argument("--tokenizer", help="a local Flan-T5 tokenizer folder for the exact prefix lengths")
    args = parser.parse_args()
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    audio = ASTConfig(**BEATS_SIZED_AST) if args.audio_encoder == "beats-sized-ast" else None
    start = time.perf_counter()
    rows = gflops_rows(
        lambda letters, fusion: paper_size_config(letters, fusion, args.frames, tokenizer),
        prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens, audio_encoder_config=audio,
    )
    prefix = "tokenised" if tokenizer else f"{assumed_prefix_length('Frame 1: ')} tokens (assumed)"
    print(
        f"BLIP-2 Flan-T5-XL size on meta, batch 1, {args.frames} frames of 224 px, prompt {args.prompt_tokens} "
        f"tokens, {args.answer_tokens} answer tokens, frame prefix {prefix}, audio encoder: "
        f"{'AST of BEATs size' if audio else 'not counted'}. Parts in GMACs (FlopCounterMode FLOPs / 2); "
        f"torch {torch.__version__}; counted in {time.perf_counter() - start:.0f} s."
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
