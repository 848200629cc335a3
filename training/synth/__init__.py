"""CREMA-Synth: a procedural video-QA benchmark whose questions each need a given modality (RGB, optical flow,
depth, thermal, surface normals, audio) or a pair of them. Importing this package is cheap: the generator (numpy,
PyAV, OpenCV, datasets) loads on first use."""

from __future__ import annotations

from typing import Any

from .vocabulary import MODALITIES, QUESTION_TEMPLATES, QUESTION_TYPES

__all__ = [
    "MODALITIES", "QUESTION_TEMPLATES", "QUESTION_TYPES", "generate_crema_synth", "load_crema_synth",
    "processor_inputs",
]

_LAZY = {"generate_crema_synth", "load_crema_synth", "processor_inputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
