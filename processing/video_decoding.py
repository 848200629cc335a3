"""Frame decoding with bounded memory: video files (PyAV; torchcodec when asked for and installed), image folders
and in-memory arrays behind one small interface, so every visual modality is read the same way."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from transformers.utils import logging

from .frame_sampling import flow_partner_index, sample_frame_indices


logger = logging.get_logger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
REENCODE_HINT = "Re-encode it (e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`) or drop it from the data."
DECODING_BACKENDS = ("pyav", "torchcodec")


class VideoDecodingError(ValueError):
    """A video that cannot be used (unreadable, not a video, no frames). A ValueError so callers can catch it
    like any other bad input."""


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) shrunk so that the longer side is at most `max_side` (aspect ratio kept, never enlarged)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Any single frame (PIL image, HWC/CHW array, grey, RGBA, float in [0, 1]) -> HxWx3 uint8 RGB array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3:
        raise ValueError(f"Expected a frame of shape (H, W, C) or (C, H, W), got shape {array.shape}.")
    if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    elif array.shape[-1] != 3:
        raise ValueError(f"Expected 1, 3 or 4 channels, got a frame of shape {array.shape}.")
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("Frame contains NaN or infinite values.")
        if array.max(initial=0.0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def shrink_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale an HxWx3 uint8 frame so that its longer side is at most `max_side`."""
    height, width = frame.shape[:2]
    new_w, new_h = scaled_size(width, height, max_side)
    if (new_w, new_h) == (width, height):
        return frame
    return np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0))


class FrameSource:
    """A clip that can report its frame count and hand out selected frames as HxWx3 uint8 RGB arrays."""

    name: str = "<frames>"
    fps: float | None = None

    def num_frames(self) -> int:
        raise NotImplementedError

    def read(self, indices: Iterable[int], max_side: int | None = None) -> dict[int, np.ndarray]:
        """Frames at `indices` (missing keys = frames that could not be decoded)."""
        raise NotImplementedError


class VideoFileSource(FrameSource):
    """A video file, decoded sequentially one frame at a time: only the requested frames are converted to RGB
    (already shrunk to `max_side` by the scaler), so memory stays bounded at any resolution or length."""

    def __init__(self, path: str | os.PathLike, backend: str = "pyav"):
        self.path = str(path)
        self.name = self.path
        if backend not in DECODING_BACKENDS:
            raise ValueError(f"Unknown video decoding backend {backend!r}; choose one of {DECODING_BACKENDS}.")
        if backend == "torchcodec" and importlib.util.find_spec("torchcodec") is None:
            raise ImportError("The 'torchcodec' decoding backend was requested but torchcodec is not installed.")
        self.backend = backend
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"Video file not found: '{self.path}'.")
        container = self._open()
        try:
            if not container.streams.video:
                raise VideoDecodingError(
                    f"'{self.path}' has no video stream (an audio file, or a video written with zero frames?). "
                    "Pass a video file with frames, a folder of frames, or an array of frames."
                )
            stream = container.streams.video[0]
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            self._metadata_frames = int(stream.frames or 0)
            self.has_audio = bool(container.streams.audio)
        finally:
            container.close()
        self._count: int | None = None
        self.decoded_frames: int | None = None  # set when decoding ended before the reported frame count

    def _open(self) -> "av.container.InputContainer":
        try:
            return av.open(self.path)
        except av.error.FFmpegError as error:
            raise VideoDecodingError(
                f"Cannot read video '{self.path}': it is not a video or is corrupt/truncated ({error}). {REENCODE_HINT}"
            ) from error

    def num_frames(self) -> int:
        """Frame count from the container metadata, else by demuxing packets (cheap: nothing is decoded)."""
        if self.decoded_frames is not None:
            return self.decoded_frames
        if self._count is None:
            if self._metadata_frames > 0:
                self._count = self._metadata_frames
            else:
                container = self._open()
                try:
                    stream = container.streams.video[0]
                    self._count = sum(1 for packet in container.demux(stream) if packet.size)
                except av.error.FFmpegError as error:
                    raise VideoDecodingError(f"Cannot demux video '{self.path}' ({error}). {REENCODE_HINT}") from error
                finally:
                    container.close()
        return self._count

    def read(self, indices: Iterable[int], max_side: int | None = None) -> dict[int, np.ndarray]:
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return {}
        if self.backend == "torchcodec":
            return self._read_torchcodec(wanted, max_side)
        width, height = scaled_size(self.width, self.height, max_side)
        wanted_set = set(wanted)
        frames: dict[int, np.ndarray] = {}
        position = -1
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                position += 1
                if position in wanted_set:
                    frames[position] = frame.to_ndarray(
                        format="rgb24", width=width, height=height, interpolation="AREA"
                    )
                if position >= wanted[-1]:
                    break
            else:
                self._note_end(position + 1)
        except av.error.FFmpegError as error:
            logger.warning(
                f"Decoding '{self.path}' stopped after {position + 1} frame(s): the file looks truncated or corrupt "
                f"({error})."
            )
            self._note_end(position + 1)
        finally:
            container.close()
        return frames

    def _note_end(self, decoded: int) -> None:
        reported = self._count if self._count is not None else self._metadata_frames
        if decoded < reported or reported == 0:
            self.decoded_frames = decoded

    def _read_torchcodec(self, wanted: list[int], max_side: int | None) -> dict[int, np.ndarray]:
        from torchcodec.decoders import VideoDecoder  # optional backend

        decoder = VideoDecoder(self.path, dimension_order="NHWC")
        total = len(decoder)
        frames = {}
        for index in wanted:
            if index < total:  # one frame at a time keeps memory bounded
                frames[index] = shrink_frame(decoder[index].numpy(), max_side)
        if wanted[-1] >= total:
            self.decoded_frames = total
        return frames


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class ImageFolderSource(FrameSource):
    """A clip stored as one image per frame (a folder, sorted naturally: frame2 before frame10, or a list)."""

    def __init__(self, images: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            self.name = str(folder)
            files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
            self.files = sorted(files, key=_natural_key)
            if not self.files:
                raise ValueError(
                    f"Frame folder '{folder}' contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})."
                )
        else:
            self.files = [Path(p) for p in images]
            self.name = str(self.files[0].parent) if self.files else "<empty image list>"
            if not self.files:
                raise ValueError("Got an empty list of frame images.")

    def num_frames(self) -> int:
        return len(self.files)

    def read(self, indices: Iterable[int], max_side: int | None = None) -> dict[int, np.ndarray]:
        frames = {}
        for index in sorted(set(int(i) for i in indices)):
            if 0 <= index < len(self.files):
                try:
                    with Image.open(self.files[index]) as image:
                        image = image.convert("RGB")
                        if max_side is not None:
                            image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
                        frames[index] = np.asarray(image)
                except OSError as error:
                    raise ValueError(f"Cannot read frame image '{self.files[index]}' ({error}).") from error
        return frames


class ArraySource(FrameSource):
    """Frames already in memory: an (N, H, W, C) / (N, C, H, W) array or tensor, or a list of images/arrays."""

    def __init__(self, frames: Any, name: str = "<frames>", fps: float | None = None):
        if hasattr(frames, "detach"):
            frames = frames.detach().cpu().numpy()
        if isinstance(frames, np.ndarray):
            if frames.ndim == 3:  # a single frame
                frames = frames[None]
            if frames.ndim != 4:
                raise ValueError(f"Expected frames of shape (N, H, W, C), got {frames.shape}.")
            frames = list(frames)
        self.frames = list(frames)
        self.name = name
        self.fps = fps
        if not self.frames:
            raise ValueError(f"{name}: got zero frames.")

    def num_frames(self) -> int:
        return len(self.frames)

    def read(self, indices: Iterable[int], max_side: int | None = None) -> dict[int, np.ndarray]:
        return {
            i: shrink_frame(to_rgb_uint8(self.frames[i]), max_side)
            for i in sorted(set(int(i) for i in indices))
            if 0 <= i < len(self.frames)
        }


def open_frame_source(video: Any, backend: str = "pyav", name: str | None = None) -> FrameSource:
    """Wrap any supported clip input (video path, frame folder, list of image paths, frames array, list of
    frames, or an existing FrameSource) in a FrameSource."""
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            return ImageFolderSource(path)
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.exists():
            return ImageFolderSource([path])
        return VideoFileSource(path, backend=backend)
    if isinstance(video, (list, tuple)) and video and all(isinstance(v, (str, os.PathLike)) for v in video):
        return ImageFolderSource(list(video))
    return ArraySource(video, name=name or "<frames>")


@dataclass
class SampledFrames:
    """The frames picked from one clip: `indices` into the clip, the frames, and (for optical flow) the frame
    pairs (frame at index, its next decoded frame)."""

    indices: list[int]
    frames: list[np.ndarray]
    num_total: int
    source_name: str
    flow_pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def read_sampled_frames(
    source: FrameSource,
    num_frames: int,
    mode: str = "uniform",
    training: bool = False,
    generator: np.random.Generator | int | None = None,
    sample_fps: float | None = None,
    max_side: int | None = None,
    with_flow_pairs: bool = False,
    indices: Sequence[int] | None = None,
) -> SampledFrames:
    """Sample `num_frames` indices (or use the given `indices`), decode only those frames (plus each one's next
    frame when `with_flow_pairs`), and handle clips that turn out shorter than their metadata said (truncated
    files): the indices are re-sampled over the frames that really decode (given `indices` are clamped to
    them), with a warning."""
    for attempt in range(2):
        total = source.num_frames()
        if total <= 0:
            raise VideoDecodingError(f"'{source.name}' contains no decodable video frames. {REENCODE_HINT}")
        if indices is None:
            chosen = sample_frame_indices(
                total, num_frames, mode=mode, training=training, generator=generator,
                video_fps=source.fps, sample_fps=sample_fps, source=source.name,
            )
        else:
            chosen = [min(max(int(i), 0), total - 1) for i in indices]
        pairs = [flow_partner_index(i, total) for i in chosen] if with_flow_pairs else []
        needed = set(chosen) | {j for pair in pairs for j in pair}
        decoded = source.read(needed, max_side=max_side)
        if needed.issubset(decoded):
            return SampledFrames(
                indices=chosen,
                frames=[decoded[i] for i in chosen],
                num_total=total,
                source_name=source.name,
                flow_pairs=[(decoded[a], decoded[b]) for a, b in pairs],
            )
        actual = source.num_frames()
        if actual <= 0:
            raise VideoDecodingError(f"'{source.name}' contains no decodable video frames. {REENCODE_HINT}")
        logger.warning(
            f"'{source.name}' reported {total} frames but only {actual} could be decoded; re-sampling the frame "
            f"indices over the {actual} decodable frames."
        )
    raise VideoDecodingError(f"Could not decode the sampled frames of '{source.name}'. {REENCODE_HINT}")
