"""Writing CREMA-Synth clips with PyAV: H.264 (yuv420p) video, optionally with a mono AAC audio track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_CODEC = "aac"
VIDEO_CODEC = "libx264"
#: x264 settings: near-lossless, one thread (identical files for identical input), no scene-cut keyframes.
X264_OPTIONS = {"preset": "ultrafast", "crf": "8", "threads": "1", "sc_threshold": "0"}


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sampling_rate: int = 16000,
) -> Path:
    """Write (N, H, W, 3) uint8 frames as an mp4 at `fps`; with `audio` ((samples,) float32 in [-1, 1]) a mono AAC
    track at `sampling_rate` is added."""
    import av

    path = Path(path)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = dict(X264_OPTIONS)
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream(AUDIO_CODEC, rate=sampling_rate)
            audio_stream.layout = "mono"
            audio_stream.bit_rate = 64000
            audio_stream.options = {"aac_coder": "fast"}  # twice as fast as the default two-loop search
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            chunk = 1024
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            for start in range(0, samples.shape[1], chunk):
                piece = np.ascontiguousarray(samples[:, start : start + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sampling_rate, start, Fraction(1, sampling_rate)
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path
