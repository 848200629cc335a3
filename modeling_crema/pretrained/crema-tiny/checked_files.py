"""Reading saved adapter and fusion files so that damage is reported, never loaded.

Every problem becomes one `ValueError` naming the file and what is wrong: a missing folder, invalid JSON, a
truncated or zero-filled safetensors file, a checksum mismatch (bit rot), NaN/inf or absurdly large values.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from safetensors import safe_open
from transformers.utils import cached_file

from .saving import recover_interrupted_save

#: Safetensors metadata key of the SHA-256 of a file's tensors, written by every crema save.
CHECKSUM_METADATA_KEY = "crema_sha256"
#: Trained adapter and fusion weights are O(1); a value beyond this is a flipped exponent bit, not a weight.
MAX_PLAUSIBLE_MAGNITUDE = 1e6


def resolve_files(
    path_or_repo_id: str | os.PathLike, names: tuple[str, ...], subfolder: str | None, what: str, hint: str,
    **hub_kwargs: Any,
) -> list[str]:
    """Local paths of `names` in a folder or Hub repo (optionally a subfolder); recovers interrupted saves first."""
    where = os.path.join(str(path_or_repo_id), subfolder) if subfolder else str(path_or_repo_id)
    recover_interrupted_save(where)  # a no-op unless an interrupted save of that folder left something behind
    if os.path.isdir(str(path_or_repo_id)):
        if not os.path.isdir(where):
            raise ValueError(f"No {what} at {where!r}: no such folder. {hint}")
    elif not _could_be_repo_id(str(path_or_repo_id)):
        raise ValueError(f"No {what} at {where!r}: no such folder (and not a Hub repo id). {hint}")
    files = []
    for name in names:
        try:
            files.append(cached_file(str(path_or_repo_id), name, subfolder=subfolder or "", **hub_kwargs))
        except OSError as error:
            raise ValueError(f"No {what} at {where!r}: {name} is missing or unreachable ({error}). {hint}") from None
    return files


def _could_be_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not text.startswith((".", "~"))


def read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is not valid JSON ({error}); save or download it again.") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object, got {type(content).__name__}.")
    return content


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().contiguous().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, checked for damage (see the module docstring)."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own SafetensorError for truncated or zeroed files
        raise ValueError(
            f"{path} cannot be read as a safetensors file ({error}): it is truncated or damaged; save or "
            "download it again."
        ) from None
    expected = metadata.get(CHECKSUM_METADATA_KEY)
    if expected is not None and tensors_checksum(tensors) != expected:
        raise ValueError(f"{path}: the tensors do not match the checksum stored at save time (the file is "
                         "damaged); save or download it again.")
    for key, tensor in tensors.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {key!r} contains NaN or inf values; the file is damaged or the "
                             "adapter diverged in training.")
        largest = float(tensor.abs().max())
        if largest > MAX_PLAUSIBLE_MAGNITUDE:
            raise ValueError(f"{path}: tensor {key!r} holds an implausible value ({largest:.3g}); the file is "
                             "damaged (e.g. a flipped bit).")
    return tensors, metadata
