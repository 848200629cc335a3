"""Which frames of a clip the model sees (DESIGN §1.2: T uniform segments, random index per segment when
training, the middle one when evaluating; or a fixed frame rate)."""

from __future__ import annotations

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

SAMPLING_MODES = ("uniform", "fps")


def as_generator(generator: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a numpy Generator or an int seed, so callers can make training-time sampling reproducible."""
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def _repeat_warning(num_total: int, num_frames: int, source: str | None) -> None:
    where = f" '{source}'" if source else ""
    logger.warning(
        f"Video{where} has only {num_total} frame(s), fewer than the {num_frames} frames requested: "
        f"frames are repeated to fill the {num_frames} slots."
    )


def uniform_segment_indices(
    num_total: int,
    num_frames: int,
    training: bool = False,
    generator: np.random.Generator | int | None = None,
    source: str | None = None,
) -> list[int]:
    """Split `[0, num_total)` into `num_frames` equal segments and take one index per segment.

    Same rule as the reference (LAVIS / SeViLA loaders): segment bounds `linspace(0, n, T+1)` cast to int,
    a random index inside each segment when training, its middle when evaluating. With fewer frames than
    segments the indices repeat (and a warning says so).
    """
    if num_total <= 0:
        raise ValueError(f"Cannot sample frames from a clip with {num_total} frames.")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}.")
    if num_total < num_frames:
        _repeat_warning(num_total, num_frames, source)
    bounds = np.linspace(0, num_total, num_frames + 1).astype(int)
    rng = as_generator(generator) if training else None
    indices = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start = min(int(start), num_total - 1)
        last = max(start, int(stop) - 1)
        if rng is not None:
            index = int(rng.integers(start, last + 1))
        else:
            index = (start + last) // 2
        indices.append(min(index, num_total - 1))
    return indices


def fps_indices(
    num_total: int,
    num_frames: int,
    video_fps: float,
    sample_fps: float,
    training: bool = False,
    generator: np.random.Generator | int | None = None,
    source: str | None = None,
) -> list[int]:
    """Take frames at `sample_fps` (the paper decodes NExT-QA at 3 fps, MUSIC-AVQA at 1 fps), then keep exactly
    `num_frames` of them (uniform segments over the fps-sampled frames) so batches stay rectangular."""
    if num_total <= 0:
        raise ValueError(f"Cannot sample frames from a clip with {num_total} frames.")
    if video_fps <= 0 or sample_fps <= 0:
        raise ValueError(f"fps sampling needs positive rates, got video fps {video_fps} and sample fps {sample_fps}.")
    step = video_fps / sample_fps
    candidates = np.arange(0, num_total, step)
    if training:
        rng = as_generator(generator)
        jitter = rng.uniform(0, step, size=len(candidates))
        candidates = np.minimum(candidates + jitter, num_total - 1)
    candidates = np.unique(np.floor(candidates).astype(int))
    if len(candidates) < num_frames:
        _repeat_warning(len(candidates), num_frames, source)
    picks = uniform_segment_indices(len(candidates), num_frames, training=False)
    return [int(candidates[p]) for p in picks]


def sample_frame_indices(
    num_total: int,
    num_frames: int,
    mode: str = "uniform",
    training: bool = False,
    generator: np.random.Generator | int | None = None,
    video_fps: float | None = None,
    sample_fps: float | None = None,
    source: str | None = None,
) -> list[int]:
    """Dispatch to the sampling `mode` ("uniform" segments or "fps"); returns `num_frames` frame indices."""
    if mode == "uniform":
        return uniform_segment_indices(num_total, num_frames, training=training, generator=generator, source=source)
    if mode == "fps":
        if video_fps is None or sample_fps is None:
            raise ValueError("frame sampling mode 'fps' needs both the video's fps and `sample_fps`.")
        return fps_indices(num_total, num_frames, video_fps, sample_fps, training, generator, source)
    raise ValueError(f"Unknown frame sampling mode {mode!r}; choose one of {SAMPLING_MODES}.")


def flow_partner_index(index: int, num_total: int) -> tuple[int, int]:
    """The frame pair used for the optical flow at `index`: (index, index + 1), or (index - 1, index) at the
    last frame; (index, index) for a one-frame clip (zero flow)."""
    if index + 1 < num_total:
        return index, index + 1
    if index - 1 >= 0:
        return index - 1, index
    return index, index


def align_indices(indices: list[int], num_source: int, num_target: int) -> list[int]:
    """Map frame indices of a clip with `num_source` frames onto a companion clip with `num_target` frames
    (same time position), so that thermal/touch frames line up with the RGB frames."""
    if num_source == num_target:
        return list(indices)
    if num_target <= 0:
        raise ValueError("Cannot align frame indices onto an empty companion clip.")
    if num_source <= 1:
        return [0 for _ in indices]
    scale = (num_target - 1) / (num_source - 1)
    return [int(round(i * scale)) for i in indices]
