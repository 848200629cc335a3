"""`crema extract`: rendered modality frames, safetensors features and a preview from one raw video."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from crema_processing.extract import add_extract_arguments, run_extract
from media_fixtures import media_dir, tiny_depth_model, video_no_audio, video_with_audio  # noqa: F401


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crema extract")
    add_extract_arguments(parser)
    return parser.parse_args(list(argv))


def test_extract_flow_and_audio(tmp_path, video_with_audio):
    out = tmp_path / "out"
    args = parse(str(video_with_audio), "--modalities", "flow,audio", "--out", str(out), "--num-frames", "3",
                 "--image-size", "32", "--audio-segment-length", "64")
    assert run_extract(args) == 0
    tensors = load_file(out / "features.safetensors")
    assert tensors["video_pixel_values"].shape == tensors["flow_pixel_values"].shape == (3, 3, 32, 32)
    assert tensors["video_pixel_values"].dtype == np.float32
    assert tensors["audio_input_values"].shape == (2, 64, 128)
    np.testing.assert_array_equal(tensors["video_frame_indices"], tensors["flow_frame_indices"])
    with safe_open(out / "features.safetensors", "np") as handle:
        metadata = handle.metadata()
    assert metadata["modalities"] == "video,flow,audio" and json.loads(metadata["frame_indices"])["flow"] == [2, 9, 16]
    for name in ("video", "flow"):
        pngs = sorted((out / "frames" / name).glob("*.png"))
        assert [p.name for p in pngs] == ["00_frame000002.png", "01_frame000009.png", "02_frame000016.png"]
        assert Image.open(pngs[0]).size == (64, 48)
    preview = Image.open(out / "preview.png")
    assert preview.size[0] > 3 * 128 and preview.size[1] == 3 * 128  # rows: video, flow, audio
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # no pickles
    assert "files" in json.loads((out / "extract.json").read_text())


def test_depth_without_a_model_says_which_option_to_pass(tmp_path, video_with_audio, capsys):
    status = run_extract(parse(str(video_with_audio), "--modalities", "flow,depth", "--out", str(tmp_path / "o")))
    assert status == 2
    error = capsys.readouterr().err
    assert "'depth' modality needs a depth-estimation model" in error and "--depth-model" in error
    assert not (tmp_path / "o").exists()


def test_extract_depth_and_normals_with_a_depth_model(tmp_path, video_with_audio, tiny_depth_model):
    out = tmp_path / "out"
    args = parse(str(video_with_audio), "--modalities", "depth,normal", "--out", str(out), "--num-frames", "2",
                 "--image-size", "32", "--depth-model", tiny_depth_model, "--no-preview")
    assert run_extract(args) == 0
    tensors = load_file(out / "features.safetensors")
    assert tensors["depth_pixel_values"].shape == tensors["normal_pixel_values"].shape == (2, 3, 32, 32)
    assert len(list((out / "frames" / "normal").glob("*.png"))) == 2 and not (out / "preview.png").exists()


def test_extract_reports_bad_input(tmp_path, video_no_audio, capsys):
    assert run_extract(parse(str(video_no_audio), "--modalities", "audio", "--out", str(tmp_path / "a"))) == 2
    assert "no_audio.mp4' has no audio track" in capsys.readouterr().err
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert run_extract(parse(str(fake), "--out", str(tmp_path / "b"))) == 2
    assert "fake.mp4" in capsys.readouterr().err
    assert run_extract(parse(str(video_no_audio), "--modalities", "thermal", "--out", str(tmp_path / "c"))) == 2
    assert "--thermal PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(str(video_no_audio), "--modalities", "smell", "--out", str(tmp_path / "d"))
