"""Frozen-feature caching (DESIGN §5): run the frozen encoders once per clip with `datasets.Dataset.map`, store
their pre-LayerNorm outputs as `{m}_features`, and collate cached rows back into model inputs, so training epochs
don't re-run the ViT / audio encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.utils import logging

from modeling_crema.modeling_crema import check_finite, modality_input_suffix


logger = logging.get_logger(__name__)

ENCODER_INPUT_SUFFIXES = ("pixel_values", "input_values")
# ndim of one example's encoder input: (T, 3, H, W) frames, (S, frames, mel) audio segments
_SINGLE_EXAMPLE_NDIM = {"pixel_values": 4, "input_values": 3}
TEXT_KEYS = ("input_ids", "attention_mask", "labels", "decoder_input_ids", "decoder_attention_mask")
_LONG_SUFFIXES = ("coordinates", "attention_mask")


def _split_key(key: str) -> tuple[str, str] | None:
    """`{m}_{suffix}` -> (m, suffix) for modality input keys (the model's own rule), None for others."""
    suffix = modality_input_suffix(key)
    return None if suffix is None else (key[: -len(suffix) - 1], suffix)


class FrozenFeatureCacher:
    """A function for `Dataset.map` (batched or not): for every `{m}_pixel_values` / `{m}_input_values` column it
    returns `{m}_features` = `model.encode_frozen_features(m, ...)`, the frozen encoder's pre-LayerNorm states
    ((G, N, D) per example: G = frames or audio segments). Remove the raw columns with `remove_columns` (what
    `cache_frozen_features` does) so training reads only the features."""

    def __init__(
        self,
        model: Any,
        modalities: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        storage_dtype: np.dtype | str = np.float32,
    ):
        self.model = model
        self.modalities = list(modalities) if modalities is not None else None
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.storage_dtype = np.dtype(storage_dtype)

    def input_columns(self, column_names: Sequence[str]) -> list[str]:
        """The encoder-input columns this cacher consumes."""
        columns = []
        for key in column_names:
            split = _split_key(key)
            if split is None or split[1] not in ENCODER_INPUT_SUFFIXES:
                continue
            if self.modalities is None or split[0] in self.modalities:
                columns.append(key)
        return columns

    @torch.no_grad()
    def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.input_columns(list(example.keys())):
            modality, suffix = _split_key(key)
            values = torch.as_tensor(np.asarray(example[key], dtype=np.float32))
            single = values.ndim == _SINGLE_EXAMPLE_NDIM[suffix]
            if single:
                values = values.unsqueeze(0)
            check_finite(modality, suffix, values)
            features = self.model.encode_frozen_features(modality, **{key: values.to(self.device)})
            check_finite(modality, "features", features)
            features = features.float().cpu().numpy().astype(self.storage_dtype)
            out[f"{modality}_features"] = features[0] if single else list(features)
        if not out:
            logger.warning(
                f"No `*_pixel_values` / `*_input_values` columns for modalities {self.modalities} in this example; "
                "nothing was encoded."
            )
        return out

    def fingerprint(self, dataset_fingerprint: str = "") -> str:
        """A cache fingerprint from the model config, a weight digest and the options (so `datasets` need not
        pickle-hash the whole model, and different weights never share a cache)."""
        digest = hashlib.sha256()
        digest.update(dataset_fingerprint.encode())
        config = getattr(self.model, "config", None)
        digest.update((config.to_json_string() if hasattr(config, "to_json_string") else repr(config)).encode())
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                stats = (float(parameter.detach().float().sum()), float(parameter.detach().float().abs().sum()))
                digest.update(f"{name}{tuple(parameter.shape)}{stats}".encode())
        digest.update(f"{self.modalities}{self.storage_dtype}".encode())
        return digest.hexdigest()[:32]


def cache_frozen_features(
    dataset: Any,
    model: Any,
    modalities: Sequence[str] | None = None,
    batch_size: int = 8,
    storage_dtype: np.dtype | str = np.float32,
    keep_inputs: bool = False,
    device: str | torch.device | None = None,
    **map_kwargs: Any,
) -> Any:
    """`dataset.map` with a `FrozenFeatureCacher`: every `{m}_pixel_values` / `{m}_input_values` column becomes a
    `{m}_features` column (raw columns dropped unless `keep_inputs`). Extra `map_kwargs` (e.g.
    `cache_file_name`, `num_proc`) go to `Dataset.map`."""
    cacher = FrozenFeatureCacher(model, modalities=modalities, device=device, storage_dtype=storage_dtype)
    columns = cacher.input_columns(dataset.column_names)
    if not columns:
        raise ValueError(
            f"The dataset has no encoder-input columns for modalities {modalities} (columns: {dataset.column_names}); "
            "process it with CremaProcessor first (it yields `{m}_pixel_values` / `{m}_input_values`)."
        )
    map_kwargs.setdefault("new_fingerprint", cacher.fingerprint(getattr(dataset, "_fingerprint", "") or ""))
    map_kwargs.setdefault("desc", "Caching frozen-encoder features")
    return dataset.map(
        cacher,
        batched=True,
        batch_size=batch_size,
        remove_columns=None if keep_inputs else columns,
        **map_kwargs,
    )


@dataclass
class CremaDataCollator:
    """Rows (processor outputs, or cached dataset rows) -> a model batch: pads `input_ids` / `attention_mask`
    (with `pad_token_id` / 0) and `labels` (with -100) on the right, stacks every `{m}_pixel_values`,
    `{m}_input_values`, `{m}_features`, `{m}_coordinates`, `{m}_attention_mask`; other columns are dropped.
    Floats become float32 (or `features_dtype` for `{m}_features`); masks and coordinates long.

    With `clip_column` (e.g. `"clip_id"`, when several questions share a clip), rows with the same value there share
    one copy of the modality inputs and the batch carries `clip_index` (each row's clip), so the model encodes each
    clip once per batch. Rows of one clip must then hold the same modality inputs."""

    pad_token_id: int = 0
    label_pad_token_id: int = -100
    features_dtype: torch.dtype = torch.float32
    clip_column: str | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> "CremaDataCollator":
        return cls(pad_token_id=tokenizer.pad_token_id, **kwargs)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        if not rows:
            raise ValueError("Cannot collate an empty list of rows.")
        batch: dict[str, torch.Tensor] = {}
        clip_rows = None  # with `clip_column`: the first row of each clip, whose modality inputs are stacked
        if self.clip_column is not None and self.clip_column in rows[0]:
            clip_rows, batch["clip_index"] = _clips_of(rows, self.clip_column)
        for key in rows[0].keys():
            if key not in TEXT_KEYS and _split_key(key) is None:
                continue  # not a model input (ids, paths, raw text, ...)
            missing = sum(key not in row for row in rows)
            if missing:
                raise ValueError(f"`{key}` is missing from {missing} of the {len(rows)} rows of the batch.")
            values = [row[key] for row in rows]
            if key in TEXT_KEYS:
                pad = {"labels": self.label_pad_token_id, "input_ids": self.pad_token_id}.get(key, 0)
                if key == "decoder_input_ids":
                    pad = self.pad_token_id
                batch[key] = _pad_sequences(values, pad)
                continue
            modality, suffix = _split_key(key)
            tensors = [_as_tensor(v) for v in values]
            if clip_rows is not None:
                tensors = _one_per_clip(tensors, clip_rows, batch["clip_index"], key, self.clip_column)
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1:
                raise ValueError(
                    f"Modality '{modality}': `{key}` has different shapes across the batch {sorted(shapes)}; "
                    "process all examples with the same number of frames/segments/points."
                )
            stacked = torch.stack(tensors)
            if suffix in _LONG_SUFFIXES:
                stacked = stacked.long()
            elif stacked.is_floating_point() or stacked.dtype in (torch.float64,):
                check_finite(modality, suffix, stacked)
                stacked = stacked.to(self.features_dtype if suffix == "features" else torch.float32)
            batch[key] = stacked
        return BatchFeature(batch)


def _clips_of(rows: Sequence[Mapping[str, Any]], column: str) -> tuple[list[int], torch.Tensor]:
    """(the first row of each distinct clip, in order of appearance; each row's position among those clips)."""
    positions: dict[Any, int] = {}
    first_rows, clip_index = [], []
    for index, row in enumerate(rows):
        if column not in row:
            raise ValueError(f"`{column}` (the collator's clip_column) is missing from row {index} of the batch.")
        clip = row[column]
        clip = clip.item() if isinstance(clip, torch.Tensor) else clip
        if clip not in positions:
            positions[clip] = len(first_rows)
            first_rows.append(index)
        clip_index.append(positions[clip])
    return first_rows, torch.tensor(clip_index, dtype=torch.long)


def _one_per_clip(tensors: list[torch.Tensor], first_rows: list[int], clip_index: torch.Tensor, key: str,
                  column: str) -> list[torch.Tensor]:
    """One tensor per clip, after checking that every row of a clip holds the same one."""
    for row, clip in enumerate(clip_index.tolist()):
        kept = tensors[first_rows[clip]]
        if row != first_rows[clip] and not (kept.shape == tensors[row].shape and torch.equal(kept, tensors[row])):
            raise ValueError(
                f"Rows {first_rows[clip]} and {row} of the batch have the same `{column}` but different `{key}`: rows "
                f"of one clip must hold the same modality inputs. Give each clip its own `{column}`, or collate "
                "without `clip_column`."
            )
    return [tensors[row] for row in first_rows]


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError("Ragged nested lists cannot be stacked into a tensor.")
    return torch.from_numpy(np.ascontiguousarray(array))


def _pad_sequences(values: Sequence[Any], pad_value: int) -> torch.Tensor:
    sequences = [_as_tensor(v).long().reshape(-1) for v in values]
    length = max(s.numel() for s in sequences)
    out = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    for i, sequence in enumerate(sequences):
        out[i, : sequence.numel()] = sequence
    return out
