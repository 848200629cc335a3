"""Answering one question about one clip with a saved CREMA model (`crema init`, `crema answer`).

Multiple choice is answered by ranking the options: the log-likelihood of each target `Option {L}` under the
model, teacher-forced (robust to whatever the first generated token is). Open-ended questions are answered by
beam search with DESIGN §3's settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Modalities the processor derives from the RGB clip itself.
DERIVED_FROM_VIDEO = ("flow", "depth", "normal")


@dataclass
class Answer:
    text: str
    used_modalities: list[str]
    option_index: int | None = None
    option_log_likelihoods: list[float] = field(default_factory=list)


def build_model_folder(
    blip2_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    modalities: Sequence[str],
    use_fusion: bool | None = None,
    **config_kwargs: Any,
) -> None:
    """CREMA from a BLIP-2 (T5) checkpoint + its processor, saved together (untrained adapters: a starting point
    for training, or a base to load trained adapters onto)."""
    from transformers import AutoTokenizer

    from crema_processing import CremaProcessor
    from modeling_crema import CremaForConditionalGeneration

    modalities = list(modalities)
    use_fusion = len(modalities) >= 3 if use_fusion is None else use_fusion
    tokenizer = AutoTokenizer.from_pretrained(blip2_name_or_path)
    model = CremaForConditionalGeneration.from_blip2(
        blip2_name_or_path,
        modalities=modalities,
        tokenizer=tokenizer,
        use_fusion=use_fusion,
        fusion_modalities=modalities if use_fusion and len(modalities) > 1 else None,
        **config_kwargs,
    )
    model.save_pretrained(output_dir)
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(output_dir)


def load_model_and_processor(model_name_or_path: str | os.PathLike, device: str = "cpu"):
    from crema_processing import CremaProcessor
    from modeling_crema import CremaForConditionalGeneration

    model = CremaForConditionalGeneration.from_pretrained(model_name_or_path).to(device).eval()
    processor = CremaProcessor.from_pretrained(model_name_or_path)
    return model, processor


def modality_arguments(model, companions: dict[str, Any]) -> dict[str, Any]:
    """Processor keyword arguments for every modality the model has an adapter for."""
    arguments: dict[str, Any] = {}
    for name in model.config.modality_names:
        if name == "video":
            continue
        if name in DERIVED_FROM_VIDEO:
            arguments[name] = True
        elif name == "audio":
            arguments["audio"] = companions.get("audio") or True  # a separate file, else the clip's own track
        elif name in ("thermal", "touch", "point_cloud"):
            if companions.get(name) is None:
                raise ValueError(f"The model has a {name!r} adapter: pass its input file (--{name.replace('_', '-')}).")
            arguments[name] = companions[name]
        else:
            if companions.get(name) is None:
                raise ValueError(f"The model has a {name!r} adapter: pass a companion clip for it.")
            arguments.setdefault("visual", {})[name] = companions[name]
    return arguments


@torch.no_grad()
def option_log_likelihoods(model, processor, inputs: dict[str, torch.Tensor], options: Sequence[str]) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities of each target `Option {L}` (one row per option)."""
    targets = [processor.build_target(index, options) for index in range(len(options))]
    labels = processor.tokenizer(targets, padding=True, return_tensors="pt").input_ids
    labels[labels == processor.tokenizer.pad_token_id] = -100
    repeated = {key: value.expand(len(options), *value.shape[1:]) for key, value in inputs.items() if key != "labels"}
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in repeated.items()}, labels=labels.to(device)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels.to(device) != -100
    picked = log_probs.gather(-1, labels.clamp(min=0).to(device).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1).cpu()


@torch.no_grad()
def answer_question(
    model,
    processor,
    video: Any,
    question: str,
    options: Sequence[str] | None = None,
    companions: dict[str, Any] | None = None,
    num_beams: int = 5,
    max_new_tokens: int = 10,
) -> Answer:
    inputs = processor(
        videos=video, question=question, options=options, **modality_arguments(model, companions or {}),
        return_tensors="pt",
    )
    inputs = {key: value for key, value in inputs.items() if key != "labels"}
    used = list(model.config.modality_names)
    if options:
        scores = option_log_likelihoods(model, processor, inputs, options)
        best = int(scores.argmax())
        return Answer(str(options[best]), used, best, scores.tolist())
    device = next(model.parameters()).device
    generated = model.generate(
        **{k: v.to(device) for k, v in inputs.items()},
        num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=-1.0,
    )
    return Answer(processor.decode_answers(generated.cpu())[0], used)
