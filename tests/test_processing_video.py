"""Frame decoding, sampling and BLIP-2 normalisation of the visual processor, including bad video inputs."""

from __future__ import annotations

import logging
import tracemalloc

import av
import numpy as np
import pytest
import torch
from PIL import Image

from crema_processing import (
    ArraySource,
    CremaVideoProcessor,
    ImageFolderSource,
    VideoDecodingError,
    open_frame_source,
    read_sampled_frames,
    sample_frame_indices,
)
from crema_processing.frame_sampling import align_indices, flow_partner_index
from media_fixtures import (  # noqa: F401  (pytest fixtures)
    frame_level,
    frame_with_index,
    indexed_video,
    level_to_index,
    media_dir,
    sine,
    video_no_audio,
    video_with_audio,
    write_video,
    write_wav,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil


def decoded_indices(frames):
    return [level_to_index(frame_level(f)) for f in frames]


# ------------------------------------------------------------------------------------------- sampling
def test_uniform_segments_eval_takes_segment_middles():
    assert sample_frame_indices(20, 4) == [2, 7, 12, 17]
    assert sample_frame_indices(8, 4) == [0, 2, 4, 6]


def test_training_sampling_is_seeded_and_stays_in_its_segment():
    bounds = np.linspace(0, 100, 5).astype(int)
    runs = [sample_frame_indices(100, 4, training=True, generator=seed) for seed in range(6)]
    assert sample_frame_indices(100, 4, training=True, generator=3) == runs[3]
    assert len({tuple(r) for r in runs}) > 1
    for run in runs:
        for k, index in enumerate(run):
            assert bounds[k] <= index < bounds[k + 1]


def test_fps_sampling():
    # 10 fps clip of 20 frames sampled at 2 fps -> frames 0, 5, 10, 15
    assert sample_frame_indices(20, 4, mode="fps", video_fps=10, sample_fps=2) == [0, 5, 10, 15]
    with pytest.raises(ValueError, match="sample_fps"):
        sample_frame_indices(20, 4, mode="fps", video_fps=10)


def test_flow_partner_and_alignment_helpers():
    assert flow_partner_index(3, 10) == (3, 4)
    assert flow_partner_index(9, 10) == (8, 9)
    assert flow_partner_index(0, 1) == (0, 0)
    assert align_indices([0, 9, 19], 20, 20) == [0, 9, 19]
    assert align_indices([0, 10, 19], 20, 39) == [0, 20, 38]


# ------------------------------------------------------------------------------------------- decoding
def test_video_file_decoding_returns_the_sampled_frames(video_with_audio):
    source = open_frame_source(video_with_audio)
    assert source.num_frames() == 20 and source.fps == pytest.approx(10)
    assert source.has_audio
    sampled = read_sampled_frames(source, 4, with_flow_pairs=True)
    assert sampled.indices == [2, 7, 12, 17]
    assert decoded_indices(sampled.frames) == [2, 7, 12, 17]
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in sampled.frames)
    assert [decoded_indices(pair) for pair in sampled.flow_pairs] == [[2, 3], [7, 8], [12, 13], [17, 18]]


def test_frame_folder_is_sorted_naturally_and_matches_the_video(tmp_path):
    for k in range(12):
        Image.fromarray(frame_with_index(k)).save(tmp_path / f"frame{k}.png")
    source = open_frame_source(tmp_path)
    assert isinstance(source, ImageFolderSource) and source.num_frames() == 12
    assert [p.name for p in source.files[:3]] == ["frame0.png", "frame1.png", "frame2.png"]
    sampled = read_sampled_frames(source, 3)
    assert decoded_indices(sampled.frames) == sampled.indices == [1, 5, 9]


def test_array_source_accepts_channel_first_and_float_frames():
    frames = np.stack([frame_with_index(k) for k in range(6)]).astype(np.float32) / 255.0
    source = open_frame_source(np.moveaxis(frames, -1, 1))
    assert isinstance(source, ArraySource)
    sampled = read_sampled_frames(source, 2)
    assert sampled.frames[0].dtype == np.uint8 and sampled.frames[0].shape == (48, 64, 3)
    assert decoded_indices(sampled.frames) == sampled.indices


# ----------------------------------------------------------------------------------------- bad inputs
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_frame_source(tmp_path / "nope.mp4")


def test_file_that_is_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(ValueError, match="notes.mp4.*not a video") as info:
        open_frame_source(fake)
    assert "Re-encode" in str(info.value)


def test_audio_file_given_as_video(tmp_path):
    wav = write_wav(tmp_path / "sound.wav", sine(0.2, 16000), 16000)
    with pytest.raises(VideoDecodingError, match="sound.wav.*no video stream"):
        open_frame_source(wav)


def test_corrupt_truncated_video_is_refused_with_its_name(tmp_path, video_no_audio):
    data = video_no_audio.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: unreadable
    with pytest.raises(ValueError, match="broken.mp4.*corrupt/truncated"):
        CremaVideoProcessor(size={"height": 32, "width": 32})(str(broken))


def test_truncated_video_with_index_up_front_uses_the_decodable_frames(tmp_path, caplog):
    path = indexed_video(tmp_path / "faststart.mp4", 20, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    source = open_frame_source(cut)
    assert source.num_frames() == 20  # the metadata still claims 20 frames
    with caplog.at_level(logging.WARNING):
        sampled = read_sampled_frames(source, 4)
    assert "could be decoded" in caplog.text and "cut.mp4" in caplog.text
    assert sampled.num_total < 20 and max(sampled.indices) < sampled.num_total
    assert decoded_indices(sampled.frames) == sampled.indices


def test_video_with_zero_frames(tmp_path):
    path = tmp_path / "empty.avi"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(ValueError, match="empty.avi.*no decodable video frames"):
        read_sampled_frames(open_frame_source(path), 4)
    with pytest.raises(ValueError, match="zero frames"):
        open_frame_source(np.zeros((0, 48, 64, 3), dtype=np.uint8))


def test_fewer_frames_than_requested_repeats_with_a_warning(tmp_path, caplog):
    path = indexed_video(tmp_path / "two.mp4", 2)
    processor = CremaVideoProcessor(num_frames=4, size={"height": 32, "width": 32})
    with caplog.at_level(logging.WARNING):
        out = processor(str(path), return_tensors="pt")
    assert "only 2 frame(s), fewer than the 4 frames requested" in caplog.text and "repeated" in caplog.text
    assert out["video_frame_indices"].tolist() == [[0, 0, 1, 1]]
    pixels = out["video_pixel_values"][0]
    assert torch.equal(pixels[0], pixels[1]) and not torch.equal(pixels[1], pixels[2])


def test_very_large_resolution_is_decoded_with_bounded_memory(tmp_path):
    big = write_video(tmp_path / "big.mp4", [np.full((1500, 2000, 3), 40 * k, np.uint8) for k in range(4)])
    full_frame_bytes = 1500 * 2000 * 3

    def peak_bytes(max_side):
        tracemalloc.start()
        out = CremaVideoProcessor(num_frames=2, max_decode_side=max_side, size={"height": 32, "width": 32})(
            str(big), return_tensors="np"
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert out["video_pixel_values"].shape == (1, 2, 3, 32, 32)
        return peak

    bounded = peak_bytes(512)
    assert bounded < full_frame_bytes / 2, bounded  # no full-resolution frame ever materialised
    assert peak_bytes(None) > full_frame_bytes  # the same measurement does see full-resolution decoding
    frames = read_sampled_frames(open_frame_source(big), 2, max_side=512).frames
    assert frames[0].shape == (384, 512, 3)


# ------------------------------------------------------------------------------------ normalisation
def test_pixel_values_match_blip_image_processor(video_with_audio):
    processor = CremaVideoProcessor(num_frames=4, size={"height": 32, "width": 32})
    out = processor(str(video_with_audio), return_tensors="pt")
    pixels = out["video_pixel_values"]
    assert pixels.shape == (1, 4, 3, 32, 32) and pixels.dtype == torch.float32
    frames = read_sampled_frames(open_frame_source(video_with_audio), 4).frames
    blip = BlipImageProcessorPil(size={"height": 32, "width": 32})
    expected = blip(images=[Image.fromarray(f) for f in frames], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels[0], expected)
    low = (0 - np.array(processor.image_mean)) / np.array(processor.image_std)
    high = (1 - np.array(processor.image_mean)) / np.array(processor.image_std)
    for c in range(3):
        assert low[c] - 1e-5 <= pixels[0, :, c].min() and pixels[0, :, c].max() <= high[c] + 1e-5


def test_batch_of_videos(video_with_audio, video_no_audio):
    out = CremaVideoProcessor(num_frames=3, size={"height": 30, "width": 30})(
        [str(video_with_audio), str(video_no_audio)], return_tensors="pt"
    )
    assert out["video_pixel_values"].shape == (2, 3, 3, 30, 30)
    assert out["video_frame_indices"].shape == (2, 3)


def test_video_processor_save_and_load(tmp_path, video_with_audio):
    processor = CremaVideoProcessor(
        num_frames=3, size={"height": 32, "width": 32}, flow_max_side=64, depth_colormap="inferno", sample_fps=2.0
    )
    processor.save_pretrained(tmp_path)
    loaded = CremaVideoProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.num_frames == 3 and loaded.flow_max_side == 64 and loaded.depth_colormap == "inferno"
    a = processor(str(video_with_audio), return_tensors="pt")["video_pixel_values"]
    b = loaded(str(video_with_audio), return_tensors="pt")["video_pixel_values"]
    assert torch.equal(a, b)
