"""Batches for training and evaluation, and the reference's training-clip augmentation.

`CremaTrainingCollator` is `crema_processing.CremaDataCollator` (pads text, stacks every `{modality}_{suffix}`
input, pixels or cached frozen features alike) plus the question type of each example as `question_type_ids`,
for the accuracy per question type during evaluation (the trainer removes it before the forward pass).

`random_resized_crop` is the reference's RandomResizedCrop(224, scale (0.5, 1), bicubic) of training clips,
applied on already-processed frames: one crop per clip (the same for all its frames), drawn independently per
modality. The trainer applies it with a generator seeded from the global step, so a resumed run draws the same
crops as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F
from transformers import BatchFeature

from crema_processing.feature_cache import CremaDataCollator

QUESTION_TYPE_IDS = "question_type_ids"


@dataclass
class CremaTrainingCollator(CremaDataCollator):
    """`CremaDataCollator` + `question_type_ids` (index of each row's `question_type_column` value in
    `question_types`) when both are available. `CremaTrainer` fills `question_types` from its datasets."""

    question_type_column: str = "question_type"
    question_types: list[str] | None = None

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        batch = super().__call__(rows)
        if self.question_types is not None and self.question_type_column in rows[0]:
            ids = []
            for row in rows:
                value = str(row[self.question_type_column])
                if value not in self.question_types:
                    raise ValueError(
                        f"Question type {value!r} is not among the known types {self.question_types}; build the "
                        "collator's `question_types` from every dataset it will see."
                    )
                ids.append(self.question_types.index(value))
            batch[QUESTION_TYPE_IDS] = torch.tensor(ids, dtype=torch.long)
        return batch


def crop_box(
    height: int, width: int, scale: Sequence[float], generator: torch.Generator,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) as torchvision's `RandomResizedCrop.get_params` draws them: up to 10
    tries of an area in `scale` and a log-uniform aspect ratio in `ratio`, else a central crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
            return top, left, crop_height, crop_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_width, crop_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_height, crop_width = height, int(round(height * max(ratio)))
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def random_resized_crop(
    pixel_values: torch.Tensor, generator: torch.Generator, scale: Sequence[float] = (0.5, 1.0)
) -> torch.Tensor:
    """(B, T, C, H, W) clips -> the same shape, each clip cropped by one random box and resized back (bicubic)."""
    if pixel_values.ndim != 5:
        raise ValueError(f"Expected clips of shape (B, T, C, H, W), got {tuple(pixel_values.shape)}.")
    height, width = pixel_values.shape[-2:]
    clips = []
    for clip in pixel_values:
        top, left, crop_height, crop_width = crop_box(height, width, scale, generator)
        crop = clip[..., top : top + crop_height, left : left + crop_width]
        clips.append(
            F.interpolate(crop.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        )
    return torch.stack(clips).to(pixel_values.dtype)
