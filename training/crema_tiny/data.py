"""CREMA-Synth clips -> tensors, once per clip: every rendering as the CREMA processor makes it (RGB frames, the
processor's own Farneback flow derived from the clip, thermal / depth / normal companions), and every question's
prompt and target tokens exactly as the processor builds them."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .backbone import IMAGE_SIZE, NUM_FRAMES

RENDERINGS = ("video", "flow", "depth", "normal", "thermal")


def make_processor(tokenizer, config=None, image_size: int = IMAGE_SIZE):
    from crema_processing import CremaProcessor

    if config is None:
        config = SimpleNamespace(vision_config=SimpleNamespace(image_size=image_size), num_frames=NUM_FRAMES,
                                 audio_config=None, num_audio_segments=2, max_points=5000)
    return CremaProcessor.from_model_config(config, tokenizer)


def process_split(dataset, processor, renderings=RENDERINGS, progress: bool = True):
    """(clips, rows): clips maps clip_id -> {m: (T, 3, H, W) float tensor}; rows are dicts with clip_id,
    question_type, input_ids, labels, options, answer_index."""
    from tqdm.auto import tqdm

    from ..synth import processor_inputs

    clips: dict[str, dict[str, torch.Tensor]] = {}
    rows = []
    for row in tqdm(dataset, desc="processing clips", disable=not progress):
        if row["clip_id"] not in clips:
            kwargs = processor_inputs(row, modalities=renderings)
            out = processor(**kwargs, return_tensors="pt")
            clips[row["clip_id"]] = {m: out[f"{m}_pixel_values"][0].clone() for m in renderings}
        text = processor(question=row["question"], options=row["options"], answer=row["answer_index"],
                         include_video=False, return_tensors="pt")
        rows.append({
            "clip_id": row["clip_id"], "question_type": row["question_type"],
            "needed_modalities": list(row["needed_modalities"]), "options": list(row["options"]),
            "answer_index": int(row["answer_index"]), "question": row["question"],
            "input_ids": text["input_ids"][0].tolist(), "labels": text["labels"][0].tolist(),
        })
    return clips, rows
