"""Clips of CREMA-Synth's kind of scene that CREMA-Synth did not make: drawn here with numpy and written with PyAV
directly, at other sizes, frame rates, codecs, containers and backgrounds, with one object moving steadily (no cuts)
and the thermal, depth and normal companions rendered with their documented encodings (inferno heat map, near =
bright grey, RGB = (n + 1) / 2 * 255), and for some an audio track of beeps in another codec, sampling rate or
channel layout. Nothing here imports the CREMA-Synth generator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

#: Flat object colours, deliberately not CREMA-Synth's nominal values.
COLORS = {"red": (235, 35, 30), "green": (30, 200, 80), "blue": (35, 70, 240), "yellow": (240, 225, 30)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: Unit normals (x right, y down, z towards the camera) of a surface tilted 45 degrees towards each facing.
FACINGS = {name: (dx * math.sqrt(0.5), dy * math.sqrt(0.5), math.sqrt(0.5)) for name, (dx, dy) in DIRECTIONS.items()}


@dataclass(frozen=True)
class UnseenClip:
    """One clip's recipe: where and how it is written, and the ground truth of its one object."""

    name: str
    width: int
    height: int
    fps: int
    seconds: float
    codec: str
    suffix: str
    background: str  # "plain", "gradient" or "noise"
    color: str
    shape: str  # "circle", "square" or "triangle"
    direction: str
    hot: bool
    near: bool
    facing: str
    beeps: int = 0  # 0: the clip has no audio track
    pitch: str = "high"  # "high" (1.6 kHz) or "low" (380 Hz)
    audio_codec: str = "aac"
    sampling_rate: int = 44100
    channels: int = 1
    noise: float = 0.003  # the track's noise floor (standard deviation)


#: Beeps of 0.12 s every 0.45 s from 0.2 s: inside the first 2 seconds, which crema-tiny's audio encoder hears.
BEEP_SECONDS, BEEP_PERIOD, FIRST_BEEP = 0.12, 0.45, 0.2
PITCH_HZ = {"high": 1600.0, "low": 380.0}


def _background(clip: UnseenClip, rng: np.random.Generator) -> np.ndarray:
    h, w = clip.height, clip.width
    if clip.background == "plain":
        grey = np.full((h, w), 50.0)
    elif clip.background == "gradient":
        grey = np.linspace(20.0, 70.0, w)[None, :].repeat(h, 0)
    else:
        grey = 40.0 + 8.0 * rng.standard_normal((h, w))
    return np.clip(grey, 0, 255)[..., None].repeat(3, 2)


def _mask(clip: UnseenClip, cx: float, cy: float, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:clip.height, 0:clip.width]
    if clip.shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
    if clip.shape == "triangle":  # equilateral, apex up, centred on its centroid
        apex = cy - 1.2 * radius
        return (ys <= cy + 0.6 * radius) & (np.abs(xs - cx) <= (ys - apex) / np.sqrt(3.0))
    return (np.abs(xs - cx) <= radius * 0.9) & (np.abs(ys - cy) <= radius * 0.9)


def render(clip: UnseenClip, seed: int = 0) -> dict[str, np.ndarray]:
    """{"video", "thermal", "depth", "normal"}: (frames, H, W, 3) uint8 each."""
    rng = np.random.default_rng(seed)
    frames = int(round(clip.fps * clip.seconds))
    side = min(clip.width, clip.height)
    radius = 0.11 * side
    step = 0.035 * side * 8.0 / clip.fps  # the same speed in frame sides per second whatever the frame rate
    dx, dy = DIRECTIONS[clip.direction]
    travel = step * (frames - 1)
    cx0 = clip.width / 2 - dx * travel / 2
    cy0 = clip.height / 2 - dy * travel / 2
    background = _background(clip, rng)
    inferno = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO),
                           cv2.COLOR_BGR2RGB)[:, 0]
    heat_level = 215 if clip.hot else 60  # on the 10-100 degree scale: ~86 degrees vs ~31 degrees
    object_grey = 255 * (1 - ((1.5 if clip.near else 5.0) - 0.5) / 10.0)
    normal_rgb = np.round((np.array(FACINGS[clip.facing]) + 1) / 2 * 255)
    out = {key: np.empty((frames, clip.height, clip.width, 3), np.uint8) for key in ("video", "thermal", "depth",
                                                                                   "normal")}
    depth_background = np.linspace(255 * (1 - 9.5 / 10), 255 * (1 - 7.5 / 10), clip.height)[:, None, None]
    for t in range(frames):
        mask = _mask(clip, cx0 + dx * step * t, cy0 + dy * step * t, radius)
        rgb = background.copy()
        rgb[mask] = COLORS[clip.color]
        heat = np.repeat(inferno[20][None, None], clip.height, 0).repeat(clip.width, 1).astype(np.float64)
        heat[mask] = inferno[heat_level]
        depth = np.broadcast_to(depth_background, (clip.height, clip.width, 3)).copy()
        depth[mask] = object_grey
        normal = np.broadcast_to(np.array([128.0, 128.0, 255.0]), (clip.height, clip.width, 3)).copy()
        normal[mask] = normal_rgb
        for key, image in (("video", rgb), ("thermal", heat), ("depth", depth), ("normal", normal)):
            out[key][t] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return out


def render_audio(clip: UnseenClip, seed: int = 0) -> np.ndarray:
    """(channels, samples) float32: white noise of `clip.noise` and `clip.beeps` sine beeps with 10 ms ramps."""
    rng = np.random.default_rng(seed)
    rate = clip.sampling_rate
    wave = clip.noise * rng.standard_normal(int(clip.seconds * rate))
    length = int(BEEP_SECONDS * rate)
    ramp = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.01 * rate))
    tone = 0.4 * ramp * np.sin(2 * np.pi * PITCH_HZ[clip.pitch] * np.arange(length) / rate)
    for k in range(clip.beeps):
        start = int((FIRST_BEEP + k * BEEP_PERIOD) * rate)
        wave[start:start + length] += tone
    return np.repeat(wave[None].astype(np.float32), clip.channels, axis=0)


def _encode_audio(container, stream, audio: np.ndarray, rate: int) -> None:
    """Encodes (channels, samples) float audio in whatever sample format and frame size the codec takes."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
    chunk = stream.codec_context.frame_size or 1024
    padded = np.zeros((audio.shape[0], -(-audio.shape[1] // chunk) * chunk), np.float32)
    padded[:, :audio.shape[1]] = audio
    for start in range(0, padded.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(padded[:, start:start + chunk]), format="fltp",
                                           layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for converted in resampler.resample(frame):
            for packet in stream.encode(converted):
                container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_video(path: Path, frames: np.ndarray, fps: int, codec: str, audio: np.ndarray | None = None,
                audio_codec: str = "aac", sampling_rate: int = 44100) -> None:
    """Encodes RGB frames with PyAV (yuv420p; the frame size must be even), with `audio` ((channels, samples)
    float32) as a track in `audio_codec` at `sampling_rate`."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream(audio_codec, rate=sampling_rate)
            audio_stream.layout = "mono" if audio.shape[0] == 1 else "stereo"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sampling_rate)


def write_clip(folder: Path, clip: UnseenClip, seed: int = 0) -> dict[str, Path]:
    """Writes the clip (with its audio track when it has beeps) and its companions; returns {"video": path,
    "thermal": path, "depth": ..., "normal": ...}."""
    paths = {}
    for key, frames in render(clip, seed).items():
        path = folder / f"{clip.name}-{key}{clip.suffix}"
        audio = render_audio(clip, seed) if key == "video" and clip.beeps else None
        write_video(path, frames, clip.fps, clip.codec, audio, clip.audio_codec, clip.sampling_rate)
        paths[key] = path
    return paths
