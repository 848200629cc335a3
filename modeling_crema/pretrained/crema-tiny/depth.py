"""Depth maps from any `transformers` depth-estimation model (DESIGN §5: no hand-made pipeline), rendered as
3-channel images for the shared ViT.

Two renderings matter (`render_depth(depth, colormap)`, `CremaVideoProcessor(depth_colormap=...)`):

- "gray" (default): per-frame min-max scaling to [0, 255], larger depth value = brighter.
- "zoedepth": the reference's depth images (DESIGN §3), made with ZoeDepth's `colorize` and the reversed grey
  colour map: normalised by the 2nd and 85th percentiles (`(d - p2) / (p85 - p2)`, not clipped), looked up in
  matplotlib's 256-entry `gray_r` table (values below 0 -> white, above 1 -> black), so near = bright for metric
  depth; pixels equal to -99 are grey (128). The reference ran ZoeDepth-NK: use `Intel/zoedepth-nyu-kitti` as
  the depth model for paper fidelity (`depth_model_name_or_path="Intel/zoedepth-nyu-kitti"`). It expects metric
  depth (larger = farther); relative models such as DPT or Depth Anything give inverse depth, for which the
  rendering is the negative.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging

from .optional_dependencies import require_cv2


logger = logging.get_logger(__name__)

#: The depth model the reference used (ZoeDepth-NK), as a `transformers` checkpoint.
REFERENCE_DEPTH_MODEL = "Intel/zoedepth-nyu-kitti"
DEPTH_MODEL_HINT = (
    "any `transformers` depth-estimation model id or local path works, e.g. "
    "'depth-anything/Depth-Anything-V2-Small-hf' or 'Intel/dpt-hybrid-midas'"
)


class DepthEstimator:
    """A frozen depth-estimation model plus its image processor, loaded with the Auto classes.

    Called on a list of RGB uint8 frames it returns one float32 depth map per frame at that frame's size (the
    model's raw output: relative inverse depth for DPT / Depth Anything, metric depth for ZoeDepth).

    ZoeDepth's image processor pads each image by `int(sqrt(side / 2) * 3)` pixels per border (reflection): that
    border is cut from its prediction before resizing to the frame, as ZoeDepth's post-processing does (without
    needing torchvision). `flip_average` averages the prediction with that of the horizontally flipped image, as
    ZoeDepth's own `infer_pil` does; None (default) turns it on for ZoeDepth models only.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        flip_average: bool | None = None,
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
        is_zoedepth = getattr(self.model.config, "model_type", None) == "zoedepth"
        self.flip_average = is_zoedepth if flip_average is None else bool(flip_average)
        # ZoeDepth pads its inputs; the padding is cut from the prediction (its `post_process_depth_estimation`)
        self.removes_padding = is_zoedepth and bool(getattr(self.image_processor, "do_pad", False))

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        depths: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = list(frames[start : start + self.batch_size])
            inputs = self.image_processor(images=[Image.fromarray(f) for f in chunk], return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            predicted = self._predict(inputs)
            for depth, frame in zip(predicted, chunk):
                if self.removes_padding:
                    depth = remove_zoedepth_padding(depth, frame.shape[:2])
                resized = torch.nn.functional.interpolate(
                    depth[None, None], size=frame.shape[:2], mode="bicubic", align_corners=False
                )[0, 0]
                depths.append(resized.cpu().numpy().astype(np.float32))
        return depths

    def _predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, h, w) depth at the model's resolution, averaged with the flipped image's when `flip_average`."""
        predicted = self.model(**inputs).predicted_depth.float()
        if predicted.ndim == 4:
            predicted = predicted[:, 0]
        if self.flip_average:
            flipped = dict(inputs, pixel_values=torch.flip(inputs["pixel_values"], dims=[-1]))
            mirrored = self.model(**flipped).predicted_depth.float()
            if mirrored.ndim == 4:
                mirrored = mirrored[:, 0]
            predicted = (predicted + torch.flip(mirrored, dims=[-1])) / 2
        return predicted


def zoedepth_padding(height: int, width: int) -> tuple[int, int]:
    """The padding ZoeDepth's image processor adds to each border of a `height` x `width` image."""
    return int(np.sqrt(height / 2) * 3), int(np.sqrt(width / 2) * 3)


def remove_zoedepth_padding(depth: torch.Tensor, source_size: tuple[int, int]) -> torch.Tensor:
    """ZoeDepth's post-processing: resize a (h, w) prediction to the padded source size (bicubic), then cut the
    padding off, giving a depth map of `source_size`."""
    height, width = int(source_size[0]), int(source_size[1])
    pad_h, pad_w = zoedepth_padding(height, width)
    padded = torch.nn.functional.interpolate(
        depth[None, None].float(), size=(height + 2 * pad_h, width + 2 * pad_w), mode="bicubic", align_corners=False
    )[0, 0]
    return padded[pad_h : pad_h + height, pad_w : pad_w + width]


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """Min-max scale a depth map to [0, 1] (a constant map gives zeros)."""
    if not np.isfinite(depth).all():
        raise ValueError("Depth map contains NaN or infinite values.")
    low, high = float(depth.min()), float(depth.max())
    if high - low < 1e-12:
        return np.zeros_like(depth, dtype=np.float32)
    return ((depth - low) / (high - low)).astype(np.float32)


def gray_r_lookup_table(size: int = 256) -> np.ndarray:
    """matplotlib's reversed grey colour map as uint8 grey levels, computed the way matplotlib builds and converts
    its lookup table (`_create_lookup_table` of the segments (0, 1) -> (1, 0), then `(lut * 255).astype(uint8)`),
    so the levels are bit-identical to `matplotlib.colormaps["gray_r"](x, bytes=True)`."""
    x = np.array([0.0, 1.0]) * (size - 1)
    xind = (size - 1) * np.linspace(0, 1, size)
    ind = np.searchsorted(x, xind)[1:-1]
    distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    y0, y1 = np.array([1.0, 0.0]), np.array([1.0, 0.0])
    lut = np.clip(np.concatenate([[y1[0]], distance * (y0[ind] - y1[ind - 1]) + y1[ind - 1], [y0[-1]]]), 0.0, 1.0)
    return (lut * 255).astype(np.uint8)


def colorize_depth(
    depth: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    low_percentile: float = 2.0,
    high_percentile: float = 85.0,
    invalid_value: float = -99,
    background: int = 128,
) -> np.ndarray:
    """ZoeDepth's `colorize(depth, cmap="gray_r")` as an HxWx3 uint8 RGB image (the reference's depth frames,
    read back as RGB).

    `vmin` / `vmax` default to the 2nd / 85th percentiles of the valid pixels (those not equal to
    `invalid_value`); `x = (depth - vmin) / (vmax - vmin)` (all zeros when vmin == vmax), not clipped; the grey
    level is `gray_r[int(x * 256)]` with `x == 1` -> the last entry, `x < 0` -> the first (white), `x > 1` -> the
    last (black); invalid pixels get `background`.
    """
    value = np.asarray(depth)
    value = (value if value.dtype.kind == "f" else value.astype(np.float64)).squeeze()
    if value.ndim != 2:
        raise ValueError(f"A depth map must be 2-D, got shape {np.shape(depth)}.")
    invalid = value == invalid_value
    valid = value[~invalid]
    if not np.isfinite(valid).all():
        raise ValueError("Depth map contains NaN or infinite values.")
    if valid.size == 0:
        return np.full(value.shape + (3,), background, dtype=np.uint8)
    # the same expressions, in the same dtype, as ZoeDepth's `colorize` and matplotlib's colour-map lookup
    vmin = np.percentile(valid, low_percentile) if vmin is None else vmin
    vmax = np.percentile(valid, high_percentile) if vmax is None else vmax
    value = (value - vmin) / (vmax - vmin) if vmin != vmax else value * 0.0
    table = gray_r_lookup_table()
    size = len(table)
    scaled = np.array(value, copy=True)
    scaled *= size
    scaled[scaled == size] = size - 1
    under, over = scaled < 0, scaled >= size
    index = np.where(under | over, 0, scaled).astype(np.int64)
    index[under] = 0  # matplotlib's "under" colour of gray_r is its first entry (white)
    index[over] = size - 1  # and its "over" colour the last one (black)
    grey = table[index]
    grey[invalid] = background
    return np.repeat(grey[:, :, None], 3, axis=2)


# colour map name -> OpenCV colour map constant (grey needs no OpenCV; "zoedepth" is `colorize_depth`)
DEPTH_COLORMAPS = {
    "gray": None,
    "zoedepth": None,
    "inferno": "COLORMAP_INFERNO",
    "magma": "COLORMAP_MAGMA",
    "viridis": "COLORMAP_VIRIDIS",
    "turbo": "COLORMAP_TURBO",
    "jet": "COLORMAP_JET",
}


def render_depth(depth: np.ndarray, colormap: str = "gray") -> np.ndarray:
    """Depth map -> HxWx3 uint8 RGB image: "zoedepth" = the reference's rendering (`colorize_depth`: 2-85
    percentile normalisation, reversed grey, near = bright); otherwise per-frame min-max scaled, grey or an
    OpenCV colour map."""
    if colormap not in DEPTH_COLORMAPS:
        raise ValueError(f"Unknown depth colormap {colormap!r}; choose one of {sorted(DEPTH_COLORMAPS)}.")
    if colormap == "zoedepth":
        if not np.isfinite(depth).all():
            raise ValueError("Depth map contains NaN or infinite values.")
        return colorize_depth(depth)
    grey = np.round(normalize_depth(depth) * 255.0).astype(np.uint8)
    if DEPTH_COLORMAPS[colormap] is None:
        return np.repeat(grey[:, :, None], 3, axis=2)
    cv2 = require_cv2(f"The '{colormap}' depth colour map")
    code = getattr(cv2, DEPTH_COLORMAPS[colormap])
    return cv2.cvtColor(cv2.applyColorMap(grey, code), cv2.COLOR_BGR2RGB)
