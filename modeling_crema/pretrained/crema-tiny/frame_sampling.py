"""Which frames of a clip the model sees (DESIGN §1.2: T uniform segments, random index per segment when
training, the middle one when evaluating; or a fixed frame rate; or exactly the reference's indices, DESIGN §3).

Modes of `sample_frame_indices`:

- "uniform" (default): T equal segments of `[0, n)`, the middle frame of each (`(first + last) // 2`).
- "reference": the reference's loader for pre-decoded frame folders (LAVIS `load_frames`): `vlen = n - 1` (one
  frame fewer, kept for the optical flow of the last frame), segment edges `linspace(0, vlen, T + 1)` cast to
  int, index `(x0 + x1) // 2` when evaluating and a random index in `[x0, x1)` when training (`x0` when the
  segment is empty). Its frames sit up to one frame earlier than "uniform"'s and it never picks the last file:
  for n = 10, T = 4 it gives [1, 3, 5, 7] where "uniform" gives [0, 3, 5, 8].
- "reference_video": the reference's loader for video files (LAVIS `load_video`, decord): `vlen = n`, at most
  `n` segments, the same index rule, the last index repeated up to T (n = 10, T = 4: [1, 3, 6, 8]).
- "fps": frames at a fixed rate, then T of them by uniform segments.
"""

from __future__ import annotations

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

SAMPLING_MODES = ("uniform", "reference", "reference_video", "fps")


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

    Segment bounds `linspace(0, n, T+1)` cast to int, a random index inside each segment when training, its
    middle frame `(first + last) // 2` when evaluating. This is not exactly the reference's rule (which takes
    `(x0 + x1) // 2`, and over `n - 1` frames for frame folders): see `reference_segment_indices`. With fewer
    frames than segments the indices repeat (and a warning says so).
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


def reference_segment_indices(
    num_total: int,
    num_frames: int,
    training: bool = False,
    generator: np.random.Generator | int | None = None,
    source: str | None = None,
    video_file: bool = False,
) -> list[int]:
    """The reference's frame indices (LAVIS `load_frames` for frame folders, `load_video` with `video_file=True`).

    Frame folders: `vlen = num_total - 1`; edges `linspace(0, vlen, T + 1).astype(int)`; per segment `(x0, x1)`
    the index `(x0 + x1) // 2` when evaluating, a random index in `[x0, x1)` when training (`x0` when
    `x0 == x1`). Video files: the same over `vlen = num_total` with at most `num_total` segments, the last index
    repeated up to T.
    """
    if num_total <= 0:
        raise ValueError(f"Cannot sample frames from a clip with {num_total} frames.")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}.")
    if num_total < num_frames:
        _repeat_warning(num_total, num_frames, source)
    vlen = num_total if video_file else num_total - 1
    segments = min(num_frames, vlen) if video_file else num_frames
    edges = np.linspace(0, vlen, segments + 1).astype(int)
    rng = as_generator(generator) if training else None
    indices = []
    for x0, x1 in zip(edges[:-1].tolist(), edges[1:].tolist()):
        if rng is None:
            indices.append((x0 + x1) // 2)
        else:
            indices.append(x0 if x0 == x1 else int(rng.integers(x0, x1)))
    indices += [indices[-1]] * (num_frames - len(indices))
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
    """Dispatch to the sampling `mode` ("uniform" segments, "reference" / "reference_video" for the reference's
    indices on frame folders / video files, or "fps"); returns `num_frames` frame indices."""
    if mode == "uniform":
        return uniform_segment_indices(num_total, num_frames, training=training, generator=generator, source=source)
    if mode in ("reference", "reference_video"):
        return reference_segment_indices(
            num_total, num_frames, training=training, generator=generator, source=source,
            video_file=mode == "reference_video",
        )
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
