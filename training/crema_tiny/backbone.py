"""The crema-tiny backbone: a `Blip2ForConditionalGeneration` (ViT, Q-Former, T5) sized to learn CREMA-Synth on a
CPU, its audio encoder (a tiny Audio Spectrogram Transformer, `ASTModel`), and a word-level T5-style tokenizer over
every word CREMA-Synth prompts, frame/modality prefixes and targets use."""

from __future__ import annotations

import math

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    ASTConfig,
    ASTModel,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

#: crema-tiny's frame side: at 32 px (4-8 px objects) the 8 px-patch ViT did not learn shape.
IMAGE_SIZE = 64
NUM_FRAMES = 4
NUM_QUERY_TOKENS = 8
#: The whole clip's audio is one segment: 200 fbank frames (10 ms hop) cover CREMA-Synth's 2 s clips.
NUM_AUDIO_SEGMENTS = 1
AUDIO_FRAMES = 200
AUDIO_MEL_BINS = 32


def _corpus() -> list[str]:
    from ..synth import vocabulary as V

    # the processor's multiple-choice prompt words and the model's modality prefixes
    # (crema_processing.prompts.MULTIPLE_CHOICE_INSTRUCTION, modeling_crema.modality_names)
    lines = ["Considering the information presented in the frame, select the correct answer from the options.",
             "Question: Option A: B: C: D: E:", "Video: Audio: Optical Flow: Depth: Surface Normal: 3D Model:",
             "Thermal: Touch:"]
    lines += [f"Frame {i}:" for i in range(1, 17)]
    for template in V.QUESTION_TEMPLATES:
        lines.append(template.text.replace("{color}", " ".join(V.COLORS)).replace("{shape}", " ".join(V.SHAPES)))
        lines.append(" ".join(template.options))
    return lines


def build_tokenizer(corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A T5-style word-level tokenizer (pad=0, eos=1, unk=2) over the words of `corpus` (default: the CREMA-Synth
    prompt vocabulary)."""
    pre_tokenizer = pre_tokenizers.Whitespace()
    lines = _corpus() if corpus is None else corpus
    words = sorted({word for line in lines for word, _ in pre_tokenizer.pre_tokenize_str(line)})
    vocab = {token: index for index, token in enumerate(["<pad>", "</s>", "<unk>"] + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def backbone_config(vocab_size: int, image_size: int = IMAGE_SIZE) -> Blip2Config:
    vision_width, width = 64, 64
    return Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=vision_width, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            image_size=image_size, patch_size=8, initializer_range=0.02,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=width, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            cross_attention_frequency=1, encoder_hidden_size=vision_width, vocab_size=vocab_size,
        ).to_dict(),
        text_config=T5Config(
            vocab_size=vocab_size, d_model=width, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
            num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
            tie_word_embeddings=False,
        ).to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS,
    )


def build_backbone(tokenizer: PreTrainedTokenizerFast, seed: int = 0,
                   image_size: int = IMAGE_SIZE) -> Blip2ForConditionalGeneration:
    """A randomly initialised tiny BLIP-2 (T5) whose visual tokens start at the scale of the T5 word embeddings."""
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(backbone_config(len(tokenizer), image_size))
    with torch.no_grad():
        model.query_tokens.normal_(std=1.0)  # transformers initialises them to zeros
        projection = model.language_projection
        # Q-Former outputs are LayerNorm-ed (~unit scale): give the projected tokens the word embeddings' scale.
        projection.weight.normal_(std=1.0 / math.sqrt(projection.in_features))
        projection.bias.zero_()
        # untied T5 head: keep the initial logits near unit scale (the default gives ~8x larger, loss ~24)
        head = model.language_model.lm_head
        head.weight.normal_(std=1.0 / math.sqrt(head.in_features))
    return model


def audio_encoder_config() -> ASTConfig:
    """A 2-layer AST over 32 mel bins x 200 frames, as wide as the ViT (its states enter the Q-Former without an
    input projection). 8 x 8 patches every 4 frames (40 ms) keep each beep (at least 80 ms, gaps of at least
    120 ms) in patches of its own, so that beeps can be counted."""
    return ASTConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
        frequency_stride=8, time_stride=4, num_mel_bins=AUDIO_MEL_BINS, max_length=AUDIO_FRAMES,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def build_audio_encoder(seed: int = 0) -> ASTModel:
    """A randomly initialised tiny AST, to be trained on its own (`audio_encoder.pretrain_audio_encoder`)."""
    torch.manual_seed(seed)
    return ASTModel(audio_encoder_config())


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
