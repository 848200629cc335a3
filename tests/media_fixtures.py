"""Tiny real media files written with PyAV for the processing tests (H.264 video with/without an AAC track, wav,
companion clips). Everything is small (64x48 px, about 1-2 s) so the suite stays fast on 2 cores."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


WIDTH, HEIGHT = 64, 48


def frame_with_index(index: int, width: int = WIDTH, height: int = HEIGHT, bar: bool = True) -> np.ndarray:
    """An RGB frame whose mean grey level encodes `index` (10 * index + 20) so tests can tell which frame was
    decoded, plus a bright vertical bar moving 2 px to the right per frame (for optical flow)."""
    if not 0 <= index <= 23:
        raise ValueError("frame_with_index encodes indices 0-23 only (grey level 20 + 10 k must fit in a byte).")
    level = 20 + 10 * index
    frame = np.full((height, width, 3), level, dtype=np.uint8)
    if bar:
        x = (4 + 2 * index) % (width - 8)
        frame[:, x : x + 6] = 235
    return frame


def textured_frame(index: int, width: int = WIDTH, height: int = HEIGHT, shift: int = 2) -> np.ndarray:
    """A smooth random texture translated `shift` px to the right per frame (rich texture for Farneback)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(height // 4 + 2, width // 4 + 40), dtype=np.uint8)
    from PIL import Image

    big = np.asarray(Image.fromarray(base).resize((base.shape[1] * 4, base.shape[0] * 4), Image.Resampling.BICUBIC))
    start = 80 - shift * index
    crop = big[:height, start : start + width]
    return np.repeat(crop[:, :, None], 3, axis=2).copy()


def write_video(
    path: str | Path,
    frames: list[np.ndarray] | np.ndarray,
    fps: int = 10,
    audio: np.ndarray | None = None,
    audio_rate: int = 44100,
    audio_layout: str = "stereo",
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """Write frames (HxWx3 uint8) as an H.264 mp4, optionally with an AAC track from `audio` (channels, samples)
    float32 in [-1, 1]."""
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        height, width = frames[0].shape[:2]
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=audio_rate)
            audio_stream.layout = audio_layout
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, audio_rate, audio_layout)
    return path


def _encode_audio(container, stream, audio: np.ndarray, rate: int, layout: str) -> None:
    chunk = 1024
    pts = 0
    audio = np.atleast_2d(audio).astype(np.float32)
    for start in range(0, audio.shape[1], chunk):
        piece = np.ascontiguousarray(audio[:, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
        pts += piece.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def sine(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """(channels, samples) float32 sine wave."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def write_wav(path: str | Path, audio: np.ndarray, rate: int, layout: str | None = None) -> Path:
    """Write (channels, samples) float audio as 16-bit PCM wav."""
    path = Path(path)
    audio = np.atleast_2d(audio)
    layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
    pcm = np.clip(np.round(audio.T * 32767), -32768, 32767).astype(np.int16).reshape(1, -1)  # packed s16
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def indexed_video(path: str | Path, num_frames: int = 20, audio: bool = False, **kwargs) -> Path:
    """A clip of `num_frames` frames where frame k has mean level about 20 + 10 k (see `frame_with_index`)."""
    frames = [frame_with_index(k) for k in range(num_frames)]
    sound = sine(num_frames / kwargs.get("fps", 10), 44100, channels=2) if audio else None
    return write_video(path, frames, audio=sound, **kwargs)


def frame_level(frame: np.ndarray) -> float:
    """The background grey level of a decoded frame (median, robust to the moving bar and codec noise)."""
    return float(np.median(frame))


def level_to_index(level: float) -> int:
    return int(round((level - 20) / 10))


def noise_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A random RGB frame, different for every index (so frames from the wrong position never match)."""
    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_gop_video(
    path: str | Path,
    num_frames: int,
    keyframe_interval: int,
    b_frames: int = 0,
    fps: int = 25,
    codec: str = "libx264",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Path:
    """A clip of `noise_frame(k)` frames with a keyframe every `keyframe_interval` frames (x264: exactly, no scene-cut
    keyframes; other encoders may add keyframes at the noise's "scene cuts") and up to `b_frames` consecutive
    B-frames (frame reordering). The container follows the suffix."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = keyframe_interval, b_frames
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": str(keyframe_interval), "keyint_min": str(keyframe_interval),
                              "sc_threshold": "0", "bf": str(b_frames), "crf": "30"}
        for k in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(noise_frame(k, width, height), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------------------- pytest fixtures
@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def video_with_audio(media_dir) -> Path:
    """20 frames (64x48, 10 fps, frame k has level 20 + 10 k) with a 2 s stereo 44.1 kHz AAC track."""
    return indexed_video(media_dir / "with_audio.mp4", 20, audio=True)


@pytest.fixture(scope="session")
def video_no_audio(media_dir) -> Path:
    """The same 20 frames without an audio track."""
    return indexed_video(media_dir / "no_audio.mp4", 20)


@pytest.fixture(scope="session")
def moving_texture_video(media_dir) -> Path:
    """A texture moving 2 px to the right per frame (for optical flow)."""
    return write_video(media_dir / "texture.mp4", [textured_frame(k) for k in range(8)])


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory) -> str:
    """A randomly initialised tiny Depth Anything model + its image processor saved like a Hub checkpoint (the
    depth path loads any `transformers` depth-estimation model; no download in tests)."""
    import torch
    from transformers import AutoModelForDepthEstimation, DepthAnythingConfig, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    path = tmp_path_factory.mktemp("tiny_depth")
    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, patch_size=7,
        image_size=28, out_features=["stage1", "stage2"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16], fusion_hidden_size=8,
        head_hidden_size=8, patch_size=7, reassemble_factors=[2, 1],
    )
    torch.manual_seed(0)
    AutoModelForDepthEstimation.from_config(config).save_pretrained(path)
    image_processor = DPTImageProcessorPil(size={"height": 28, "width": 28}, keep_aspect_ratio=False, ensure_multiple_of=7)
    image_processor.save_pretrained(path)
    return str(path)
