"""Time to read the T sampled frames of a video file, seeking to each frame vs decoding from the start.

Generates H.264 clips of increasing length once (low resolution, x264's default keyframe interval of 250 frames and
B-frames, so the frame table is built by demuxing the packets), then times `read_sampled_frames(source, T)` (the
processor's path: opening the file, locating and decoding the frames) with `VideoFileSource(seek=True)` (first
read of the file: the frame table is built; and a later read: the table is kept per file) and
`VideoFileSource(seek=False)`. Prints a markdown table. CPU only; no download.

    python benchmarks/video_decode_time.py [--seconds 10 60 600] [--frames 4] [--repeats 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from crema_processing import VideoFileSource, read_sampled_frames, video_decoding


def write_clip(path: Path, seconds: float, fps: int, width: int, height: int, keyframe_interval: int | None) -> int:
    """A moving gradient with a frame counter block (compresses like real footage, unlike noise)."""
    x = np.linspace(0, 4 * np.pi, width, dtype=np.float32)
    y = np.linspace(0, 3 * np.pi, height, dtype=np.float32)[:, None]
    count = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", **({"g": str(keyframe_interval)} if keyframe_interval else {})}
        for k in range(count):
            phase = 0.05 * k
            grey = 127 + 100 * np.sin(x + phase) * np.cos(y - 0.5 * phase)
            frame = np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)
            frame[:8, : 8 * (k % (width // 8))] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


def time_reads(path: Path, frames: int, repeats: int) -> dict[str, float]:
    """Best seconds of `read_sampled_frames` on a fresh source over `repeats`, per way of reading (the best run is
    the least disturbed by other load; the ways take turns in every repeat). "seeking" drops the frame tables that seeking keeps per file
    first, so it includes building the table; "seeking, seen before" does not."""
    ways = {"seeking": True, "seeking, seen before": True, "sequential": False}
    timings: dict[str, list[float]] = {name: [] for name in ways}
    indices: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, seek in ways.items():
            if name == "seeking":
                video_decoding._FRAME_TABLES.clear()
            start = time.perf_counter()
            sampled = read_sampled_frames(VideoFileSource(path, seek=seek), frames)
            timings[name].append(time.perf_counter() - start)
            indices[name] = sampled.indices
    assert indices["seeking"] == indices["sequential"]
    return {name: min(values) for name, values in timings.items()}


def run(args: argparse.Namespace) -> None:
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crema-decode-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seconds in args.seconds:
        path = folder / f"clip_{seconds:g}s_{args.width}x{args.height}.mp4"
        if not path.exists():
            write_clip(path, seconds, args.fps, args.width, args.height, args.keyframe_interval)
        total = VideoFileSource(path).num_frames()
        times = time_reads(path, args.frames, args.repeats)
        rows.append((seconds, total, path.stat().st_size / 2**10, *times.values()))
    keyframes = f"keyframe every {args.keyframe_interval}" if args.keyframe_interval else "x264 default keyframes"
    print(f"Reading {args.frames} sampled frames, H.264 {args.width}x{args.height} at {args.fps} fps ({keyframes}, "
          f"B-frames), best of {args.repeats}:\n")
    print("| clip length | frames | file size | with seeking | with seeking, file seen before | sequential decoding |")
    print("|---|---|---|---|---|---|")
    for seconds, total, size, seeking, cached, sequential in rows:
        print(f"| {seconds:g} s | {total} | {size:.0f} KiB | {seeking * 1000:.0f} ms | {cached * 1000:.0f} ms "
              f"| {sequential * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 600], help="clip lengths")
    parser.add_argument("--frames", type=int, default=4, help="frames sampled per clip (T)")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--keyframe-interval", type=int, default=None, help="x264 `g` (default: x264's 250)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", default=None, help="folder for the generated clips (reused when present)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
