"""Rendering a `SynthScene`: RGB frames, the depth / thermal / surface-normal companion renders (same frames, same
object positions) and the mono 16 kHz audio track. Shapes are anti-aliased by supersampling their bounding box."""

from __future__ import annotations

import numpy as np

from . import vocabulary as V
from .scene import EXTENT, SynthScene

SUPERSAMPLING = 4


def shape_coverage(shape: str, cx: float, cy: float, radius: float, size: int) -> tuple[slice, slice, np.ndarray]:
    """Fraction of each pixel covered by the shape (pixel (i, j) spans [j, j+1) x [i, i+1)), on the shape's
    bounding box: returns (rows, cols, coverage)."""
    reach = EXTENT * radius + 1.0
    x0, x1 = max(0, int(np.floor(cx - reach))), min(size, int(np.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(np.floor(cy - reach))), min(size, int(np.ceil(cy + reach)) + 1)
    s = SUPERSAMPLING
    xs = x0 + (np.arange((x1 - x0) * s) + 0.5) / s - cx
    ys = y0 + (np.arange((y1 - y0) * s) + 0.5) / s - cy
    dx, dy = np.meshgrid(xs, ys)
    if shape == "circle":
        inside = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        half = 0.85 * radius
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif shape == "triangle":
        # equilateral, pointing up, circumradius 1.3 r, centred on its centroid
        big = EXTENT * radius
        bottom = dy <= big / 2
        # the two slanted sides through the apex (0, -big) and the base corners (+-big*sqrt(3)/2, big/2)
        slope = np.sqrt(3.0)
        inside = bottom & (dy >= -big + slope * np.abs(dx))
    else:
        raise ValueError(f"Unknown shape {shape!r}; known: {V.SHAPES}.")
    coverage = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), coverage.astype(np.float32)


def _smooth_noise(seed: int, size: int, cells: int = 6) -> np.ndarray:
    """A smooth static texture in [-1, 1] (random values on a coarse grid, bilinearly upsampled)."""
    rng = np.random.default_rng(seed)
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    coords = np.linspace(0, cells, size)
    i0 = np.minimum(np.floor(coords).astype(int), cells - 1)
    f = coords - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return (rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]).astype(np.float32)


def _blend(canvas: np.ndarray, rows: slice, cols: slice, coverage: np.ndarray, value: np.ndarray | float) -> None:
    patch = canvas[rows, cols]
    alpha = coverage[..., None] if patch.ndim == 3 else coverage
    canvas[rows, cols] = patch * (1 - alpha) + np.asarray(value, dtype=np.float32) * alpha


def _inferno_lut() -> np.ndarray:
    """OpenCV's inferno colour map as a (256, 3) RGB table."""
    import cv2

    levels = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)[:, 0]


def render_frames(scene: SynthScene) -> dict[str, np.ndarray]:
    """All frames of every visual render, (N, H, W, 3) uint8 each: "video" (RGB), "depth", "thermal", "normal"."""
    size, n = scene.image_size, scene.num_frames
    texture = _smooth_noise(scene.texture_seed, size)
    rgb_background = np.repeat((scene.background_level + V.BACKGROUND_TEXTURE * texture)[..., None], 3, axis=2)

    rows = (np.arange(size, dtype=np.float32) + 0.5) / size
    far, near = V.BACKGROUND_DEPTH_RANGE[1], V.BACKGROUND_DEPTH_RANGE[0]
    depth_background = np.repeat((far + (near - far) * rows)[:, None], size, axis=1)  # top far, bottom nearer

    ambient = np.mean(V.AMBIENT_RANGE) + (V.AMBIENT_RANGE[1] - V.AMBIENT_RANGE[0]) / 2 * _smooth_noise(
        scene.texture_seed + 1, size
    )
    normal_background = np.zeros((size, size, 3), np.float32)
    normal_background[..., 2] = 1.0

    inferno = _inferno_lut()
    out = {m: np.empty((n, size, size, 3), np.uint8) for m in ("video", "depth", "thermal", "normal")}
    for t in range(n):
        rgb, depth = rgb_background.copy(), depth_background.copy()
        heat, normals = ambient.copy(), normal_background.copy()
        for obj in scene.objects:
            cx, cy = obj.centers[t]
            rows, cols, coverage = shape_coverage(obj.shape, cx, cy, obj.radius, size)
            _blend(rgb, rows, cols, coverage, np.asarray(obj.rgb, np.float32))
            _blend(depth, rows, cols, coverage, obj.distance)
            _blend(heat, rows, cols, coverage, obj.temperature)
            _blend(normals, rows, cols, coverage, np.asarray(obj.normal, np.float32))
        out["video"][t] = np.clip(np.round(rgb), 0, 255)
        grey = np.clip(np.round(255.0 * (1.0 - (depth - V.DEPTH_MIN) / V.DEPTH_SPAN)), 0, 255).astype(np.uint8)
        out["depth"][t] = grey[..., None]
        level = (heat - V.THERMAL_MIN) / (V.THERMAL_MAX - V.THERMAL_MIN)
        level = np.clip(np.round(255.0 * level), 0, 255).astype(np.uint8)
        out["thermal"][t] = inferno[level]
        # blended normals are renormalised before the (n + 1) / 2 * 255 encoding
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        out["normal"][t] = np.clip(np.round((normals + 1.0) / 2.0 * 255.0), 0, 255)
    return out


def render_audio(scene: SynthScene, sampling_rate: int = V.AUDIO_SAMPLING_RATE) -> np.ndarray:
    """The clip's mono track, float32 in [-1, 1], as long as the video: the scene's noise floor (white noise) plus
    the beeps (a pure tone at the scene's frequency with 5 ms fades)."""
    total = int(round(scene.num_frames / scene.fps * sampling_rate))
    rng = np.random.default_rng(scene.audio_seed)
    audio = (scene.noise_amplitude * rng.standard_normal(total)).astype(np.float32)
    fade = int(0.005 * sampling_rate)
    for onset, duration in scene.beeps:
        start, length = int(round(onset * sampling_rate)), int(round(duration * sampling_rate))
        t = np.arange(length) / sampling_rate
        envelope = np.ones(length, np.float32)
        envelope[:fade] = np.linspace(0, 1, fade, dtype=np.float32)
        envelope[-fade:] = np.linspace(1, 0, fade, dtype=np.float32)
        tone = scene.amplitude * envelope * np.sin(2 * np.pi * scene.frequency * t)
        audio[start : start + length] += tone[: max(0, total - start)].astype(np.float32)
    return np.clip(audio, -1.0, 1.0)
