"""Surface normals from a depth map by finite differences (DESIGN §5: normals from depth), rendered as an RGB
image with the usual (n + 1) / 2 * 255 encoding."""

from __future__ import annotations

import numpy as np

from .depth import normalize_depth


def normals_from_depth(depth: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Unit normals n = normalize(-s * dz/dx, -s * dz/dy, 1) of an HxW depth map (central differences, pixel
    units; x to the right, y downwards). Returns HxWx3 float32 in [-1, 1]."""
    if depth.ndim != 2:
        raise ValueError(f"Expected a depth map of shape (H, W), got {depth.shape}.")
    if not np.isfinite(depth).all():
        raise ValueError("Depth map contains NaN or infinite values; cannot compute surface normals.")
    depth = depth.astype(np.float64)
    dz_dy, dz_dx = np.gradient(depth) if min(depth.shape) > 1 else (np.zeros_like(depth), np.zeros_like(depth))
    normals = np.stack([-scale * dz_dx, -scale * dz_dy, np.ones_like(depth)], axis=-1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return normals.astype(np.float32)


def render_normals(normals: np.ndarray) -> np.ndarray:
    """HxWx3 unit normals -> HxWx3 uint8 RGB image, (n + 1) / 2 * 255."""
    return np.clip(np.round((normals + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)


def normal_image_from_depth(depth: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Depth map of any units -> rendered normal image. The depth is min-max scaled to [0, 1] and its range is
    taken to span the image's longer side times `strength`, so the result does not depend on the depth model's
    units or the frame resolution."""
    relative = normalize_depth(depth)
    return render_normals(normals_from_depth(relative, scale=strength * max(depth.shape)))
