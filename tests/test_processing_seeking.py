"""Video decoding by seeking: the frames read by seeking are exactly those of a full sequential decode, reading a few
frames of a long clip decodes about one keyframe interval per frame, and files that cannot be seeked are decoded
sequentially with the same result."""

from __future__ import annotations

import av
import numpy as np
import pytest

from crema_processing import CremaVideoProcessor, VideoFileSource, read_sampled_frames
from media_fixtures import noise_frame, write_gop_video


KEYFRAME_INTERVAL = 25


def all_frames(path) -> list[np.ndarray]:
    """Every frame of the clip, decoded sequentially with PyAV directly (the reference numbering)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture
def decode_counter(monkeypatch):
    """Counts the video frames PyAV hands out through `container.decode` in every container opened from now on."""
    counts = {"frames": 0}
    real_open = av.open

    class CountingContainer:
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._container.close()

        def decode(self, *args, **kwargs):
            for frame in self._container.decode(*args, **kwargs):
                if isinstance(frame, av.VideoFrame):
                    counts["frames"] += 1
                yield frame

    monkeypatch.setattr(av, "open", lambda *args, **kwargs: CountingContainer(real_open(*args, **kwargs)))
    return counts


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """600 frames (24 s at 25 fps), a keyframe every 25 frames, no B-frames."""
    return write_gop_video(tmp_path_factory.mktemp("seek") / "long.mp4", 600, KEYFRAME_INTERVAL)


@pytest.mark.parametrize(
    "name, b_frames",
    [("plain.mp4", 0), ("reordered.mp4", 2), ("reordered.mkv", 2), ("reordered.avi", 2), ("reordered.ts", 2)],
    ids=["mp4", "mp4-b-frames", "mkv-b-frames", "avi-mpeg4-b-frames", "mpegts-b-frames"],
)
def test_seeked_frames_equal_the_sequential_decode(tmp_path, decode_counter, name, b_frames):
    codec = "mpeg4" if name.endswith(".avi") else "libx264"
    path = write_gop_video(tmp_path / name, 120, 10, b_frames=b_frames, codec=codec)
    expected = all_frames(path)
    assert len(expected) == 120
    wanted = [7, 10, 11, 54, 55, 98, 119, 0]
    decode_counter["frames"] = 0
    frames = VideoFileSource(path).read(wanted)
    assert sorted(frames) == sorted(wanted)
    for index in wanted:
        np.testing.assert_array_equal(frames[index], expected[index], err_msg=f"frame {index}")
    assert decode_counter["frames"] < 120  # the frames were reached by seeking, not by decoding the whole clip


def test_sampled_frames_by_seeking_match_the_reference_indices(long_clip):
    expected = all_frames(long_clip)
    sampled = read_sampled_frames(VideoFileSource(long_clip), 4)
    assert sampled.indices == [74, 224, 374, 524]  # middles of the segments [0,150) [150,300) [300,450) [450,600)
    for index, frame in zip(sampled.indices, sampled.frames):
        np.testing.assert_array_equal(frame, expected[index])


def test_reading_four_frames_near_the_end_decodes_few_frames(long_clip, decode_counter):
    wanted = [540, 560, 580, 599]
    frames = VideoFileSource(long_clip).read(wanted)
    seeking = decode_counter["frames"]
    decode_counter["frames"] = 0
    sequential_frames = VideoFileSource(long_clip, seek=False).read(wanted)
    sequential = decode_counter["frames"]
    assert sequential == 600  # the counter sees every decoded frame: sequential decoding goes through the clip
    # each wanted frame costs at most the frames from the keyframe before it
    assert 4 <= seeking <= 4 * KEYFRAME_INTERVAL, seeking
    for index in wanted:
        np.testing.assert_array_equal(frames[index], sequential_frames[index])
    # frame 599 really is the clip's last frame (encoded from noise_frame(599), lossy: compare loosely)
    assert np.abs(frames[599].astype(int) - noise_frame(599).astype(int)).mean() < np.abs(
        frames[599].astype(int) - noise_frame(598).astype(int)
    ).mean()


def test_frames_decoded_in_one_pass_are_not_decoded_again(long_clip, decode_counter):
    # frames 30, 31 and 40 share the keyframe 25: decoding goes on from 31 to 40 instead of seeking back to 25
    VideoFileSource(long_clip).read([30, 31, 40])
    assert decode_counter["frames"] == 40 - 25 + 1


def test_video_processor_output_is_the_same_with_and_without_seeking(long_clip):
    processor = CremaVideoProcessor(num_frames=4, size={"height": 32, "width": 32})
    seeking = processor(VideoFileSource(long_clip), return_tensors="np")
    sequential = processor(VideoFileSource(long_clip, seek=False), return_tensors="np")
    np.testing.assert_array_equal(seeking["video_pixel_values"], sequential["video_pixel_values"])
    np.testing.assert_array_equal(seeking["video_frame_indices"], [[74, 224, 374, 524]])


def test_stream_without_timestamps_is_decoded_sequentially(tmp_path, decode_counter):
    # a raw H.264 elementary stream has no container timestamps: frames cannot be located by seeking
    path = write_gop_video(tmp_path / "raw.h264", 60, 10)
    expected = all_frames(path)
    decode_counter["frames"] = 0
    frames = VideoFileSource(path).read([5, 47])
    assert decode_counter["frames"] == 48  # decoded from the start, up to the last wanted frame
    np.testing.assert_array_equal(frames[5], expected[5])
    np.testing.assert_array_equal(frames[47], expected[47])
