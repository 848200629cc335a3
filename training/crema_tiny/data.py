"""CREMA-Synth clips -> tensors, once per clip: every rendering as the CREMA processor makes it (RGB frames, the
processor's own Farneback flow derived from the clip, the AST fbank of the clip's audio track, thermal / depth /
normal companions), and every question's prompt and target tokens exactly as the processor builds them."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .backbone import IMAGE_SIZE, NUM_AUDIO_SEGMENTS, NUM_FRAMES, audio_encoder_config

RENDERINGS = ("video", "audio", "flow", "depth", "normal", "thermal")


def input_key(modality: str) -> str:
    """The processor's (and the model's) input name of a rendering."""
    return f"{modality}_input_values" if modality == "audio" else f"{modality}_pixel_values"


def make_processor(tokenizer, config=None, image_size: int = IMAGE_SIZE):
    from crema_processing import CremaProcessor

    if config is None:
        config = SimpleNamespace(vision_config=SimpleNamespace(image_size=image_size), num_frames=NUM_FRAMES,
                                 audio_config=audio_encoder_config(), num_audio_segments=NUM_AUDIO_SEGMENTS,
                                 max_points=5000)
    return CremaProcessor.from_model_config(config, tokenizer)


def tokenized_row(processor, clip_id: str, question: dict) -> dict:
    """A question (CREMA-Synth's row fields) with the processor's prompt and target tokens."""
    text = processor(question=question["question"], options=question["options"], answer=question["answer_index"],
                     include_video=False, return_tensors="pt")
    return {
        "clip_id": clip_id, "question_type": question["question_type"],
        "needed_modalities": list(question["needed_modalities"]), "options": list(question["options"]),
        "answer_index": int(question["answer_index"]), "question": question["question"],
        "input_ids": text["input_ids"][0].tolist(), "labels": text["labels"][0].tolist(),
    }


def process_split(dataset, processor, renderings=RENDERINGS, progress: bool = True):
    """(clips, rows): clips maps clip_id -> {m: (T, 3, H, W) frames, or (S, frames, mel bins) for audio}; rows are
    dicts with clip_id, question_type, needed_modalities, input_ids, labels, options, answer_index."""
    from tqdm.auto import tqdm

    from ..synth import processor_inputs

    clips: dict[str, dict[str, torch.Tensor]] = {}
    rows = []
    for row in tqdm(dataset, desc="processing clips", disable=not progress):
        if row["clip_id"] not in clips:
            kwargs = processor_inputs(row, modalities=renderings)
            out = processor(**kwargs, return_tensors="pt")
            clips[row["clip_id"]] = {m: out[input_key(m)][0].clone() for m in renderings}
        rows.append(tokenized_row(processor, row["clip_id"], row))
    return clips, rows
