"""Depth maps from any `transformers` depth-estimation model (DESIGN §5: no hand-made pipeline), rendered as
3-channel images for the shared ViT."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

from .optional_dependencies import require_cv2


logger = logging.get_logger(__name__)

DEPTH_MODEL_HINT = (
    "any `transformers` depth-estimation model id or local path works, e.g. "
    "'depth-anything/Depth-Anything-V2-Small-hf' or 'Intel/dpt-hybrid-midas'"
)


class DepthEstimator:
    """A frozen depth-estimation model plus its image processor, loaded with the Auto classes.

    Called on a list of RGB uint8 frames it returns one float32 depth map per frame at that frame's size (the
    model's raw output: relative inverse depth for DPT / Depth Anything, metric depth for ZoeDepth)."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        **from_pretrained_kwargs,
    ):
        if not model_name_or_path:
            raise ValueError(f"The 'depth' modality needs a depth-estimation model; {DEPTH_MODEL_HINT}.")
        self.model_name_or_path = str(model_name_or_path)
        # imported here: loading the Auto model machinery costs seconds and only depth needs it
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            self.image_processor = AutoImageProcessor.from_pretrained(self.model_name_or_path, **from_pretrained_kwargs)
            self.model = AutoModelForDepthEstimation.from_pretrained(
                self.model_name_or_path, dtype=dtype, **from_pretrained_kwargs
            )
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Could not load the depth-estimation model '{self.model_name_or_path}' ({error}); "
                f"{DEPTH_MODEL_HINT}."
            ) from error
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        depths: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = list(frames[start : start + self.batch_size])
            inputs = self.image_processor(images=[Image.fromarray(f) for f in chunk], return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            predicted = self.model(**inputs).predicted_depth.float()
            if predicted.ndim == 4:
                predicted = predicted[:, 0]
            for depth, frame in zip(predicted, chunk):
                resized = torch.nn.functional.interpolate(
                    depth[None, None], size=frame.shape[:2], mode="bicubic", align_corners=False
                )[0, 0]
                depths.append(resized.cpu().numpy().astype(np.float32))
        return depths


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """Min-max scale a depth map to [0, 1] (a constant map gives zeros)."""
    if not np.isfinite(depth).all():
        raise ValueError("Depth map contains NaN or infinite values.")
    low, high = float(depth.min()), float(depth.max())
    if high - low < 1e-12:
        return np.zeros_like(depth, dtype=np.float32)
    return ((depth - low) / (high - low)).astype(np.float32)


# colour map name -> OpenCV colour map constant (grey needs no OpenCV)
DEPTH_COLORMAPS = {
    "gray": None,
    "inferno": "COLORMAP_INFERNO",
    "magma": "COLORMAP_MAGMA",
    "viridis": "COLORMAP_VIRIDIS",
    "turbo": "COLORMAP_TURBO",
    "jet": "COLORMAP_JET",
}


def render_depth(depth: np.ndarray, colormap: str = "gray") -> np.ndarray:
    """Depth map -> HxWx3 uint8 RGB image (per-frame min-max scaled; grey or an OpenCV colour map)."""
    if colormap not in DEPTH_COLORMAPS:
        raise ValueError(f"Unknown depth colormap {colormap!r}; choose one of {sorted(DEPTH_COLORMAPS)}.")
    grey = np.round(normalize_depth(depth) * 255.0).astype(np.uint8)
    if DEPTH_COLORMAPS[colormap] is None:
        return np.repeat(grey[:, :, None], 3, axis=2)
    cv2 = require_cv2(f"The '{colormap}' depth colour map")
    code = getattr(cv2, DEPTH_COLORMAPS[colormap])
    return cv2.cvtColor(cv2.applyColorMap(grey, code), cv2.COLOR_BGR2RGB)
