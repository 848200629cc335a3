"""Random scenes of CREMA-Synth: one or two objects whose colour, shape, size, motion, distance, temperature and
surface orientation are drawn independently (so that no modality leaks another's answer), plus the beeps of the
audio track. A scene is plain data; `render.py` turns it into frames and audio."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import vocabulary as V

#: Object size: radius as a fraction of the frame side, drawn uniformly and independently of everything else.
RADIUS_RANGE = (0.06, 0.12)
#: Half extent of every shape in units of its radius (the triangle's circumradius is 1.3 r).
EXTENT = 1.3
#: Motion speed in fractions of the frame side per frame (about 3 px per frame at 64 px).
SPEED_RANGE = (0.045, 0.055)
MOTION_MODES = ("cuts", "continuous")


@dataclass
class SynthObject:
    color: str
    shape: str
    rgb: tuple[int, int, int]
    radius: float  # px
    direction: str
    speed: float  # px per frame
    distance: float  # metres
    temperature: float  # degrees Celsius
    facing: str
    tilt: float  # degrees
    centers: list[tuple[float, float]] = field(default_factory=list)  # (x, y) px per frame

    @property
    def near(self) -> bool:
        return self.distance < V.NEAR_FAR_SPLIT

    @property
    def hot(self) -> bool:
        return self.temperature >= V.HOT_THRESHOLD

    @property
    def normal(self) -> tuple[float, float, float]:
        """Unit surface normal (x right, y down, z towards the camera)."""
        dx, dy = V.DIRECTION_VECTORS[self.facing]
        tilt = np.deg2rad(self.tilt)
        return (float(dx * np.sin(tilt)), float(dy * np.sin(tilt)), float(np.cos(tilt)))


@dataclass
class SynthScene:
    clip_id: str
    image_size: int
    fps: float
    num_frames: int  # frames in the clip
    sampled_frames: int  # frames T the model samples (uniform segments); motion cuts happen between segments
    motion: str
    background_level: int
    texture_seed: int
    objects: list[SynthObject]
    beeps: list[tuple[float, float]]  # (onset, duration) in seconds
    pitch: str
    frequency: float
    amplitude: float
    audio_seed: int
    noise_amplitude: float  # the track's noise floor (standard deviation)
    segment_bounds: list[int]
    reference_frames: list[int]  # per segment, the frame the model samples when evaluating

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict:
        data = asdict(self)
        for obj_data, obj in zip(data["objects"], self.objects):
            obj_data["near"], obj_data["hot"] = obj.near, obj.hot
            obj_data["centers"] = [[round(x, 3), round(y, 3)] for x, y in obj.centers]
        return data


def segment_bounds(num_frames: int, segments: int) -> list[int]:
    """Bounds of the uniform segments the processor samples one frame from (`linspace(0, N, T + 1)` cast to
    int, as `crema_processing.frame_sampling.uniform_segment_indices`)."""
    return [int(b) for b in np.linspace(0, num_frames, segments + 1).astype(int)]


def reference_indices(bounds: list[int], num_frames: int) -> list[int]:
    """The frame of each segment sampled at evaluation (its middle), as `uniform_segment_indices`."""
    indices = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start = min(start, num_frames - 1)
        last = max(start, stop - 1)
        indices.append((start + last) // 2)
    return indices


def _jitter_rgb(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    base = np.asarray(V.COLOR_RGB[color])
    return tuple(int(c) for c in np.clip(base + rng.integers(-V.COLOR_JITTER, V.COLOR_JITTER + 1, 3), 0, 255))


def _pick_distinct(rng: np.random.Generator, values: tuple[str, ...], count: int) -> list[str]:
    return [values[i] for i in rng.choice(len(values), size=count, replace=False)]


def _sample_beeps(rng: np.random.Generator, count: int, seconds: float) -> list[tuple[float, float]]:
    """`count` beeps with random lengths and gaps, placed at random inside [0.1 s, seconds - 0.1 s]."""
    lengths = rng.uniform(*V.BEEP_SECONDS, size=count)
    margin = 0.1
    free = seconds - 2 * margin - lengths.sum() - V.MIN_GAP_SECONDS * (count - 1)
    if free < 0:
        raise ValueError(f"A {seconds:g} s clip is too short for {count} beeps; use at least 1 second.")
    # split the free time into count + 1 random parts (before, between, after the beeps)
    parts = rng.dirichlet(np.ones(count + 1)) * free
    beeps, t = [], margin + parts[0]
    for k in range(count):
        beeps.append((round(float(t), 4), round(float(lengths[k]), 4)))
        t += lengths[k] + V.MIN_GAP_SECONDS + parts[k + 1]
    return beeps


def noise_floor(audio_seed: int) -> float:
    """The track's noise floor, log-uniform in `NOISE_AMPLITUDE_RANGE`. Drawn from a stream of the audio seed's own
    so that taking it leaves every other draw, and so every frame, as it was."""
    low, high = np.log(V.NOISE_AMPLITUDE_RANGE)
    return float(np.exp(np.random.default_rng([audio_seed, 1]).uniform(low, high)))


def _place(
    rng: np.random.Generator, objects: list[SynthObject], scene: SynthScene, tries: int = 400
) -> bool:
    """Positions per frame for every object. In each segment an object's centre at the segment's reference frame
    is uniform in a box that is the same for every direction and both axes, so the position the model sees in a
    sampled frame says nothing about the motion; it moves `speed` px per frame in its direction around it.
    Objects never overlap nor leave the frame. Returns False when no placement was found."""
    size = scene.image_size
    positions: dict[int, list[tuple[float, float]]] = {i: [None] * scene.num_frames for i in range(len(objects))}
    for k, (start, stop) in enumerate(zip(scene.segment_bounds[:-1], scene.segment_bounds[1:])):
        ref = scene.reference_frames[k]
        reach = max(ref - start, stop - 1 - ref)
        frames = np.arange(start, stop)
        for _ in range(tries):
            tracks = []
            for obj in objects:
                margin = EXTENT * obj.radius + 1.0 + obj.speed * reach
                if margin >= size - margin:
                    return False
                center = rng.uniform(margin, size - margin, size=2)
                vx, vy = V.DIRECTION_VECTORS[obj.direction]
                offsets = (frames - ref)[:, None] * obj.speed * np.asarray([vx, vy])[None, :]
                tracks.append(center[None, :] + offsets)
            if len(tracks) == 2:
                gap = np.linalg.norm(tracks[0] - tracks[1], axis=1).min()
                if gap < EXTENT * (objects[0].radius + objects[1].radius) + 2.0:
                    continue
            for i, track in enumerate(tracks):
                for t, (x, y) in zip(frames, track):
                    positions[i][t] = (float(x), float(y))
            break
        else:
            return False
    for i, obj in enumerate(objects):
        obj.centers = positions[i]
    return True


def sample_scene(
    rng: np.random.Generator,
    clip_id: str,
    image_size: int = 64,
    fps: float = 8.0,
    seconds: float = 2.0,
    sampled_frames: int = 4,
    motion: str = "cuts",
    num_objects: int | None = None,
    radius_range: tuple[float, float] = RADIUS_RANGE,
) -> SynthScene:
    """Draw one scene. Two-object scenes have two different colours, shapes, directions and facings, exactly one
    hot object and one near and one far object (so that every two-object question has one answer). Object radii
    are drawn from `radius_range` (fractions of the frame side)."""
    if motion not in MOTION_MODES:
        raise ValueError(f"motion must be one of {MOTION_MODES}, got {motion!r}.")
    num_frames = int(round(seconds * fps))
    segments = sampled_frames if motion == "cuts" else 1
    if num_frames < 2 * segments:
        raise ValueError(
            f"{seconds:g} s at {fps:g} fps gives {num_frames} frames; motion needs at least two frames per sampled "
            f"frame ({2 * sampled_frames} for {sampled_frames} sampled frames): raise fps or seconds."
        )
    bounds = segment_bounds(num_frames, segments)
    references = reference_indices(bounds, num_frames)
    if num_objects is None:
        num_objects = int(rng.integers(1, 3))

    for _ in range(50):
        colors = _pick_distinct(rng, V.COLORS, num_objects)
        shapes = _pick_distinct(rng, V.SHAPES, num_objects) if num_objects > 1 else [V.SHAPES[rng.integers(3)]]
        directions = _pick_distinct(rng, V.DIRECTIONS, num_objects)
        facings = _pick_distinct(rng, V.FACINGS, num_objects)
        if num_objects == 1:
            hot_flags = [bool(rng.integers(2))]
            near_flags = [bool(rng.integers(2))]
        else:
            hot_flags = [bool(f) for f in rng.permutation([True, False])]
            near_flags = [bool(f) for f in rng.permutation([True, False])]
        speed_fraction = rng.uniform(*SPEED_RANGE)
        if motion == "continuous":
            # the whole clip is one segment: slow down enough to stay inside the frame
            reach = max(references[0], num_frames - 1 - references[0])
            speed_fraction = min(speed_fraction, 0.2 / max(reach, 1))
        objects = []
        for i in range(num_objects):
            objects.append(
                SynthObject(
                    color=colors[i],
                    shape=shapes[i],
                    rgb=_jitter_rgb(rng, colors[i]),
                    radius=float(rng.uniform(*radius_range) * image_size),
                    direction=directions[i],
                    speed=float(speed_fraction * image_size),
                    distance=float(rng.uniform(*(V.NEAR_RANGE if near_flags[i] else V.FAR_RANGE))),
                    temperature=float(rng.uniform(*(V.HOT_RANGE if hot_flags[i] else V.WARM_RANGE))),
                    facing=facings[i],
                    tilt=float(rng.uniform(*V.TILT_RANGE)),
                )
            )
        count = int(rng.integers(1, 4))
        pitch = V.PITCHES[int(rng.integers(2))]
        background_level = int(rng.integers(V.BACKGROUND_LEVELS[0], V.BACKGROUND_LEVELS[1] + 1))
        texture_seed = int(rng.integers(2**31))
        beeps = _sample_beeps(rng, count, num_frames / fps)
        frequency = float(rng.uniform(*(V.HIGH_PITCH_HZ if pitch == "high" else V.LOW_PITCH_HZ)))
        amplitude = float(rng.uniform(0.3, 0.6))
        audio_seed = int(rng.integers(2**31))
        scene = SynthScene(
            clip_id=clip_id,
            image_size=image_size,
            fps=float(fps),
            num_frames=num_frames,
            sampled_frames=sampled_frames,
            motion=motion,
            background_level=background_level,
            texture_seed=texture_seed,
            objects=objects,
            beeps=beeps,
            pitch=pitch,
            frequency=frequency,
            amplitude=amplitude,
            audio_seed=audio_seed,
            noise_amplitude=noise_floor(audio_seed),
            segment_bounds=bounds,
            reference_frames=references,
        )
        if _place(rng, objects, scene):
            return scene
    raise ValueError(
        f"Could not place {num_objects} object(s) of radius {radius_range[0]:g}-{radius_range[1]:g} of the frame side "
        f"in {image_size} px frames; use a smaller --object-radius or a larger --image-size (at least 32)."
    )
