"""Frame decoding with bounded memory: video files (PyAV, seeking to each sampled frame; torchcodec when asked for
and installed), image folders and in-memory arrays behind one small interface, so every visual modality is read the
same way. PyAV is imported only when a file is read."""

from __future__ import annotations

import bisect
import importlib.util
import os
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers.utils import logging

from .frame_sampling import flow_partner_index, sample_frame_indices
from .optional_dependencies import require_av, require_module


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


class _SeekFailed(Exception):
    """Seeking cannot give the exact frames of this file: read it sequentially instead."""


@dataclass
class FrameTable:
    """Where each frame of a video stream is: `timestamps[i]` is the presentation timestamp (stream time_base) of
    frame i in presentation order, `keyframes` the (sorted) indices of the frames a decoder can start from.
    `from_index` says whether it came from the container's index (no I/O, checked while decoding) or from
    demuxing every packet."""

    timestamps: Sequence[int]
    keyframes: Sequence[int]
    from_index: bool

    def __post_init__(self):
        self.timestamps = array("q", self.timestamps)  # 8 bytes per frame
        self.keyframes = array("q", self.keyframes)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame `index` (0 when none is marked)."""
        position = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[position] if position >= 0 else 0

    def index_of(self, timestamp: int | None) -> int | None:
        """The frame with this presentation timestamp, or None."""
        if timestamp is None:
            return None
        position = bisect.bisect_left(self.timestamps, timestamp)
        return position if position < len(self.timestamps) and self.timestamps[position] == timestamp else None


# Frame tables of recently read files, keyed by (path, size, modification time), so that a table built by demuxing
# is built once per file, not once per read (training reads the same clips every epoch). False: the file cannot be
# read by seeking.
_FRAME_TABLES: OrderedDict[tuple[str, int, int], FrameTable | bool] = OrderedDict()
_FRAME_TABLE_CACHE_SIZE = 64
_FRAME_TABLES_LOCK = threading.Lock()


def _cached_table(key: tuple[str, int, int]) -> FrameTable | bool | None:
    with _FRAME_TABLES_LOCK:
        table = _FRAME_TABLES.get(key)
        if table is not None:
            _FRAME_TABLES.move_to_end(key)
        return table


def _cache_table(key: tuple[str, int, int], table: FrameTable | bool) -> None:
    with _FRAME_TABLES_LOCK:
        _FRAME_TABLES[key] = table
        _FRAME_TABLES.move_to_end(key)
        while len(_FRAME_TABLES) > _FRAME_TABLE_CACHE_SIZE:
            _FRAME_TABLES.popitem(last=False)


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV one frame at a time: only the requested frames are converted to RGB (already
    shrunk to `max_side` by the scaler), so memory stays bounded at any resolution or length.

    With `seek=True` (default) each requested frame is reached by seeking to the keyframe before it and decoding
    forward to its exact timestamp, so the cost depends on the number of frames asked for and the keyframe
    interval, not on the clip's length. Frames are identified by presentation timestamp (from the container's
    index, or from demuxing the packets, which decodes nothing), so they are exactly the frames a sequential
    decode numbers the same way. Clips whose requested frames all lie before the second keyframe are decoded from
    the start (seeking would not save anything), and so are files that cannot be seeked (no timestamps, a stream
    that refuses to seek, a truncated file, an index that disagrees with the decoded frames)."""

    def __init__(self, path: str | os.PathLike, backend: str = "pyav", seek: bool = True):
        self.path = str(path)
        self.name = self.path
        if backend not in DECODING_BACKENDS:
            raise ValueError(f"Unknown video decoding backend {backend!r}; choose one of {DECODING_BACKENDS}.")
        if backend == "torchcodec" and importlib.util.find_spec("torchcodec") is None:
            raise ImportError(
                "The 'torchcodec' decoding backend was requested but torchcodec is not installed: "
                "`pip install torchcodec`, or use the default 'pyav' backend."
            )
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
            self._first_gop_length = _first_gop_length(stream, self._metadata_frames)
        finally:
            container.close()
        self._count: int | None = None
        self._seek_disabled = not seek
        self.decoded_frames: int | None = None  # set when decoding ended before the reported frame count

    def _open(self) -> "av.container.InputContainer":
        av = require_av("Decoding video files")
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
                av = require_av("Decoding video files")
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
        size = scaled_size(self.width, self.height, max_side)
        in_first_gop = self._first_gop_length is not None and wanted[-1] < self._first_gop_length
        if not self._seek_disabled and not in_first_gop:
            frames = self._read_seeking(wanted, size)
            if frames is not None:
                return frames
        return self._read_sequential(wanted, size)

    # ------------------------------------------------------------------------------------ sequential decoding
    def _read_sequential(self, wanted: list[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
        """Decode from the first frame up to the last wanted one, numbering frames as they come out."""
        av = require_av("Decoding video files")
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
                    frames[position] = _to_rgb(frame, size)
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

    # --------------------------------------------------------------------------------------------- seeking
    def _read_seeking(self, wanted: list[int], size: tuple[int, int]) -> dict[int, np.ndarray] | None:
        """The wanted frames by seeking to the keyframe before each one, or None when that is not possible (the
        caller then decodes sequentially)."""
        av = require_av("Decoding video files")
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        key = (os.path.realpath(self.path), stat.st_size, stat.st_mtime_ns)
        table = _cached_table(key)
        use_index = True
        while table is not False:
            container = self._open()
            try:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                if table is None:
                    table = (_table_from_index(stream, self._metadata_frames) if use_index else None) or (
                        _table_from_packets(container, stream)
                    )
                    if table is None:
                        logger.debug(f"'{self.path}': no timestamps to locate frames by; decoding sequentially.")
                        break
                    _cache_table(key, table)
                if wanted[-1] >= len(table.timestamps):
                    return None  # past the frames the file holds: the sequential path finds its real length
                return self._decode_at(container, stream, table, wanted, size)
            except _SeekFailed as reason:
                if table.from_index:
                    logger.debug(f"'{self.path}': {reason}; building the frame table from the packets instead.")
                    table, use_index = None, False
                    continue
                logger.debug(f"'{self.path}': {reason}; decoding sequentially.")
                break
            except av.error.FFmpegError as error:  # the file refuses to seek, or a corrupt region
                logger.debug(f"'{self.path}': seeking failed ({error}); decoding sequentially.")
                break
            finally:
                container.close()
        _cache_table(key, False)  # remembered, so later reads of this file go straight to sequential decoding
        self._seek_disabled = True
        return None

    def _decode_at(
        self, container: Any, stream: Any, table: FrameTable, wanted: list[int], size: tuple[int, int]
    ) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each wanted frame (or decode on, when that is no more work) and keep the
        frames whose timestamps are the wanted ones."""
        wanted_set = set(wanted)
        frames: dict[int, np.ndarray] = {}
        next_index = -1  # the frame that decoding on (without seeking) would give next; -1: unknown, seek
        decoder = None
        try:
            for target in wanted:
                if target in frames:
                    continue
                keyframe = table.keyframe_before(target)
                if not keyframe <= next_index <= target:
                    if decoder is not None:
                        decoder.close()
                    decoder = _seek_to(container, stream, table, keyframe, target)
                for frame in decoder:
                    index = table.index_of(frame.pts)
                    if index is None:
                        raise _SeekFailed(f"a decoded frame has timestamp {frame.pts}, which the frame table lacks")
                    next_index = index + 1
                    if index in wanted_set and index not in frames:
                        frames[index] = _to_rgb(frame, size)
                    if index >= target:
                        break
                if target not in frames:
                    raise _SeekFailed(f"frame {target} was not found after seeking")
        finally:
            if decoder is not None:
                decoder.close()
        return frames

    def _read_torchcodec(self, wanted: list[int], max_side: int | None) -> dict[int, np.ndarray]:
        decoders = require_module("torchcodec.decoders", "torchcodec", "The 'torchcodec' decoding backend")
        decoder = decoders.VideoDecoder(self.path, dimension_order="NHWC")
        total = len(decoder)
        frames = {}
        for index in wanted:
            if index < total:  # one frame at a time keeps memory bounded
                frames[index] = shrink_frame(decoder[index].numpy(), max_side)
        if wanted[-1] >= total:
            self.decoded_frames = total
        return frames


def _seek_to(container: Any, stream: Any, table: FrameTable, keyframe: int, target: int, tries: int = 4) -> Any:
    """Seek to `keyframe` and return a decoding iterator whose first frame is at or before `target`. Some
    containers seek by decoding timestamp (AVI with B-frames) or approximately (MPEG-TS), which can land on a later
    keyframe than asked for, or at the end: then the keyframe before is tried, and last the start of the file."""
    for attempt in range(tries + 1):
        if keyframe is None or attempt == tries:
            container.seek(0, backward=True, any_frame=False)  # the start of the file
        else:
            container.seek(int(table.timestamps[keyframe]), stream=stream, backward=True, any_frame=False)
        decoder = container.decode(stream)
        first = next(decoder, None)
        index = table.index_of(first.pts) if first is not None else None
        if index is not None and index <= target:
            return _starting_with(first, decoder)
        decoder.close()
        if (first is not None and index is None) or keyframe is None:
            break  # a frame the table does not know (checked by the caller's fallback), or nothing earlier to try
        keyframe = table.keyframe_before(keyframe - 1) if keyframe > 0 else None
    raise _SeekFailed(f"seeking does not land at or before frame {target}")


def _starting_with(first: Any, decoder: Any) -> Iterator[Any]:
    """`first`, then the rest of `decoder` (closed with this generator)."""
    try:
        yield first
        yield from decoder
    finally:
        decoder.close()


def _to_rgb(frame: Any, size: tuple[int, int]) -> np.ndarray:
    """A decoded PyAV frame -> HxWx3 uint8 RGB at `size` (width, height), scaled while converting."""
    width, height = size
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def _index_entries(stream: Any, metadata_frames: int) -> Any:
    """The container's index of the stream when it has one entry per frame (e.g. an mp4 sample table), else None."""
    try:
        entries = stream.index_entries
        return entries if metadata_frames > 0 and len(entries) == metadata_frames else None
    except AttributeError:  # an older PyAV without `Stream.index_entries`
        return None


def _first_gop_length(stream: Any, metadata_frames: int) -> int | None:
    """Frames before the second keyframe according to the container's index (None when the index does not list
    every frame). The index is in decoding order, and frames decoded before a keyframe are shown before it, so
    seeking cannot skip any frame below this count."""
    entries = _index_entries(stream, metadata_frames)
    if entries is None:
        return None
    for position, entry in enumerate(entries):
        if position > 0 and entry.is_keyframe:
            return position
    return metadata_frames


def _table_from_packets(container: Any, stream: Any) -> FrameTable | None:
    """The frame table by demuxing every packet of the stream (no decoding): frame i is the packet with the i-th
    smallest presentation timestamp. None when packets have no timestamps or share one."""
    timestamps, keyframes = [], []
    for packet in container.demux(stream):
        if not packet.size or packet.is_discard:  # flush packets; packets an edit list drops
            continue
        if packet.pts is None:
            return None  # e.g. a raw elementary stream: frames cannot be located by timestamp
        timestamps.append(int(packet.pts))
        keyframes.append(bool(packet.is_keyframe))
    order = sorted(range(len(timestamps)), key=timestamps.__getitem__)
    ordered = [timestamps[i] for i in order]
    if not ordered or len(set(ordered)) != len(ordered):
        return None
    return FrameTable(ordered, [rank for rank, i in enumerate(order) if keyframes[i]], from_index=False)


def _table_from_index(stream: Any, metadata_frames: int) -> FrameTable | None:
    """The frame table from the container's index, when it has one entry per frame and the stream has no frame
    reordering (so decoding order = presentation order and the index timestamps are the frames' timestamps).
    Checked against the decoded frames' timestamps while reading."""
    if stream.codec_context.has_b_frames:
        return None
    entries = _index_entries(stream, metadata_frames)
    if entries is None:
        return None
    entries = list(entries)
    if any(entry.is_discard for entry in entries):
        return None
    timestamps = [int(entry.timestamp) for entry in entries]
    if any(b <= a for a, b in zip(timestamps, timestamps[1:])):
        return None
    keyframes = [i for i, entry in enumerate(entries) if entry.is_keyframe]
    return FrameTable(timestamps, keyframes, from_index=True)


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
