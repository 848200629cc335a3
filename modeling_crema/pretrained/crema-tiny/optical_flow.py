"""Optical flow as a 3-channel image for the shared ViT (DESIGN §1.2, §5): OpenCV Farneback offline, colour-coded
the usual way (hue = direction, value = magnitude). A learned estimator (RAFT, Unimatch as in the paper) can be
plugged in through `register_flow_estimator` without touching the rest of the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .optional_dependencies import require_cv2
from .video_decoding import shrink_frame


# (frame_a, frame_b) HxWx3 uint8 RGB -> HxWx2 float32 flow in pixels (x to the right, y downwards).
FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]

DEFAULT_FARNEBACK_PARAMS: dict[str, Any] = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}


def farneback_flow(frame_a: np.ndarray, frame_b: np.ndarray, **params: Any) -> np.ndarray:
    """Dense Farneback flow from `frame_a` to `frame_b` (RGB uint8), HxWx2 float32 in pixels."""
    if frame_a.shape != frame_b.shape:
        raise ValueError(f"Flow needs two frames of the same size, got {frame_a.shape} and {frame_b.shape}.")
    options = {**DEFAULT_FARNEBACK_PARAMS, **params}
    cv2 = require_cv2("Farneback optical flow (OpenCV)")
    gray_a = cv2.cvtColor(frame_a, cv2.COLOR_RGB2GRAY)
    gray_b = cv2.cvtColor(frame_b, cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, **options)
    return flow.astype(np.float32)


_FLOW_ESTIMATORS: dict[str, FlowEstimator] = {"farneback": farneback_flow}


def register_flow_estimator(name: str, estimator: FlowEstimator) -> None:
    """Make a flow estimator selectable by name (`CremaVideoProcessor(flow_method=name)`), e.g. a RAFT/Unimatch
    wrapper that loads its weights when they are present. It maps two RGB uint8 frames to HxWx2 pixel flow."""
    _FLOW_ESTIMATORS[name] = estimator


def get_flow_estimator(name: str) -> FlowEstimator:
    """The estimator registered under `name` ("farneback" is built in)."""
    if name not in _FLOW_ESTIMATORS:
        raise ValueError(
            f"Unknown optical-flow method {name!r}. Available: {sorted(_FLOW_ESTIMATORS)}; register a learned "
            "estimator with `crema_processing.register_flow_estimator(name, fn)`."
        )
    return _FLOW_ESTIMATORS[name]


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code HxWx2 flow as an RGB uint8 image: hue = direction (OpenCV convention, hue 0 = red = motion to
    the right, angle measured towards +y i.e. downwards), saturation full, value = magnitude scaled by
    `max_magnitude` (default: this frame's largest magnitude, as in the OpenCV tutorial)."""
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"Expected flow of shape (H, W, 2), got {flow.shape}.")
    if not np.isfinite(flow).all():
        raise ValueError("Optical flow contains NaN or infinite values.")
    cv2 = require_cv2("Colour-coding optical flow (OpenCV)")
    magnitude, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    scale = float(max_magnitude) if max_magnitude else float(magnitude.max())
    hsv = np.zeros(flow.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = np.round(angle * 180.0 / np.pi / 2.0).astype(np.int32) % 180
    hsv[..., 1] = 255
    if scale > 1e-6:
        hsv[..., 2] = np.clip(magnitude / scale * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def compute_flow_image(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    method: str | FlowEstimator = "farneback",
    max_side: int | None = 320,
    max_magnitude: float | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow between two frames at a working resolution of at most `max_side` (Farneback is slow on big frames
    and the image is shrunk to the ViT size anyway). Returns (colour image, raw flow) at that resolution."""
    frame_a = shrink_frame(frame_a, max_side)
    frame_b = shrink_frame(frame_b, max_side)
    estimator = get_flow_estimator(method) if isinstance(method, str) else method
    flow = estimator(frame_a, frame_b, **params) if params else estimator(frame_a, frame_b)
    return flow_to_color(flow, max_magnitude=max_magnitude), flow
