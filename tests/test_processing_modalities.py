"""Derived visual modalities (optical flow, depth, surface normals) and companion clips (thermal, touch): values,
colour coding and frame alignment with the RGB frames."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from crema_processing import (
    CremaVideoProcessor,
    DepthEstimator,
    compute_flow_image,
    farneback_flow,
    flow_to_color,
    normal_image_from_depth,
    normals_from_depth,
    register_flow_estimator,
    render_depth,
    render_normals,
)
from media_fixtures import (  # noqa: F401  (pytest fixtures)
    frame_level,
    frame_with_index,
    indexed_video,
    level_to_index,
    media_dir,
    moving_texture_video,
    textured_frame,
    tiny_depth_model,
    video_with_audio,
)


SIZE = {"height": 32, "width": 32}


def hue(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 0].astype(int)


class RampDepth:
    """A stand-in depth model: depth grows linearly from left to right (for checkable normals)."""

    def __call__(self, frames):
        return [np.tile(np.linspace(0.0, 1.0, f.shape[1], dtype=np.float32), (f.shape[0], 1)) for f in frames]


# ---------------------------------------------------------------------------------------- optical flow
def test_farneback_sees_rightward_motion_and_colours_it_as_angle_zero():
    flow = farneback_flow(textured_frame(0), textured_frame(1))  # texture moves 2 px to the right
    assert flow[..., 0].mean() == pytest.approx(2.0, abs=0.3)
    assert abs(flow[..., 1].mean()) < 0.3
    image = flow_to_color(flow)
    assert image.dtype == np.uint8 and image.shape == flow.shape[:2] + (3,)
    moving = np.linalg.norm(flow, axis=-1) > 1.0
    h = hue(image)[moving]
    assert np.mean(np.minimum(h, 180 - h)) < 3  # hue 0 (red) = angle 0 = motion to the right
    assert image[..., 0][moving].mean() > 150 and image[..., 2][moving].mean() < 60


@pytest.mark.parametrize("direction, expected_hue", [((1, 0), 0), ((0, 1), 45), ((-1, 0), 90), ((0, -1), 135)])
def test_flow_colour_code_hue_is_direction(direction, expected_hue):
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0], flow[..., 1] = direction
    image = flow_to_color(flow)
    assert np.all(np.abs(hue(image) - expected_hue) <= 1)
    assert cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 2].min() == 255  # full magnitude -> full value


def test_flow_magnitude_sets_brightness_and_nan_is_refused():
    flow = np.zeros((4, 8, 2), np.float32)
    flow[:, 4:, 0] = 2.0
    value = cv2.cvtColor(flow_to_color(flow), cv2.COLOR_RGB2HSV)[..., 2]
    assert value[:, :4].max() == 0 and value[:, 4:].min() == 255
    half = cv2.cvtColor(flow_to_color(flow, max_magnitude=4.0), cv2.COLOR_RGB2HSV)[..., 2]
    assert abs(int(half[0, 5]) - 127) <= 1
    flow[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flow_to_color(flow)


def test_flow_modality_from_video_is_rightward(moving_texture_video):
    processor = CremaVideoProcessor(num_frames=3, size=SIZE)
    rendered = processor.render_clip(str(moving_texture_video), modalities=("video", "flow"))
    assert rendered.frame_indices["flow"] == rendered.frame_indices["video"]
    for image in rendered.images["flow"]:
        bright = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 2] > 100
        h = hue(image)[bright]
        assert bright.mean() > 0.5 and np.mean(np.minimum(h, 180 - h)) < 10
    out = processor(str(moving_texture_video), modalities=("video", "flow"), return_tensors="pt")
    assert out["flow_pixel_values"].shape == (1, 3, 3, 32, 32) and out["flow_pixel_values"].dtype == torch.float32


def test_learned_flow_hook_is_used_by_name(moving_texture_video):
    calls = []

    def leftward(frame_a, frame_b):
        calls.append(frame_a.shape)
        flow = np.zeros(frame_a.shape[:2] + (2,), np.float32)
        flow[..., 0] = -3.0
        return flow

    register_flow_estimator("test_leftward", leftward)
    processor = CremaVideoProcessor(num_frames=2, size=SIZE, flow_method="test_leftward")
    rendered = processor.render_clip(str(moving_texture_video), modalities=("flow",))
    assert len(calls) == 2 and "video" not in rendered.images
    assert np.all(np.abs(hue(rendered.images["flow"][0]) - 90) <= 1)
    with pytest.raises(ValueError, match="Unknown optical-flow method 'raft'.*register_flow_estimator"):
        compute_flow_image(textured_frame(0), textured_frame(1), method="raft")


# ---------------------------------------------------------------------------------------- depth & normals
def test_normals_of_a_tilted_plane():
    depth = np.tile(0.5 * np.arange(10, dtype=np.float32), (6, 1))  # dz/dx = 0.5
    normals = normals_from_depth(depth)
    expected = np.array([-0.5, 0.0, 1.0]) / np.linalg.norm([-0.5, 0.0, 1.0])
    np.testing.assert_allclose(normals.reshape(-1, 3), np.tile(expected, (60, 1)), atol=1e-6)
    flat = render_normals(normals_from_depth(np.ones((4, 4), np.float32)))
    assert flat.dtype == np.uint8 and np.all(flat == np.array([128, 128, 255]))
    image = render_normals(normals)
    np.testing.assert_array_equal(image[0, 0], np.round((expected + 1) / 2 * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        normals_from_depth(np.full((3, 3), np.nan, np.float32))


def test_depth_rendering_grey_and_colormap():
    depth = np.tile(np.linspace(2.0, 10.0, 16, dtype=np.float32), (4, 1))
    grey = render_depth(depth)
    assert grey.shape == (4, 16, 3) and grey[0, 0, 0] == 0 and grey[0, -1, 0] == 255
    assert np.all(grey[..., 0] == grey[..., 1])
    coloured = render_depth(depth, "inferno")
    assert coloured.shape == (4, 16, 3) and not np.all(coloured[..., 0] == coloured[..., 2])
    assert np.all(render_depth(np.full((3, 3), 5.0, np.float32)) == 0)  # constant depth -> black, no NaN


def test_depth_and_normals_from_a_depth_estimator_share_the_rgb_indices(video_with_audio):
    processor = CremaVideoProcessor(num_frames=4, size=SIZE)
    out = processor(
        str(video_with_audio), modalities=("video", "depth", "normal"), depth_estimator=RampDepth(), return_tensors="pt"
    )
    for name in ("video", "depth", "normal"):
        assert out[f"{name}_pixel_values"].shape == (1, 4, 3, 32, 32)
        assert out[f"{name}_frame_indices"].tolist() == [[2, 7, 12, 17]]
    rendered = processor.render_clip(str(video_with_audio), ("depth", "normal"), depth_estimator=RampDepth())
    normal = rendered.images["normal"][0]
    expected = normal_image_from_depth(RampDepth()([frame_with_index(0)])[0])
    np.testing.assert_array_equal(normal, expected)
    assert normal[..., 0].mean() < 128 and abs(int(normal[..., 1].mean()) - 128) <= 1  # faces -x: depth grows to +x


def test_depth_needs_a_model():
    processor = CremaVideoProcessor(num_frames=2, size=SIZE)
    frames = np.stack([frame_with_index(k) for k in range(4)])
    with pytest.raises(ValueError, match="depth_model_name_or_path"):
        processor(frames, modalities=("depth",))
    with pytest.raises(ValueError, match="depth-estimation model"):
        DepthEstimator("")


def test_depth_from_a_transformers_depth_model(tiny_depth_model, video_with_audio):
    estimator = DepthEstimator(tiny_depth_model, batch_size=3)
    frames = [frame_with_index(k) for k in range(4)]
    depths = estimator(frames)
    assert len(depths) == 4 and all(d.shape == (48, 64) and d.dtype == np.float32 for d in depths)
    assert all(np.isfinite(d).all() for d in depths)
    processor = CremaVideoProcessor(num_frames=2, size=SIZE, depth_model_name_or_path=tiny_depth_model)
    out = processor(str(video_with_audio), modalities=("video", "depth", "normal"), return_tensors="pt")
    assert out["depth_pixel_values"].shape == out["normal_pixel_values"].shape == (1, 2, 3, 32, 32)
    assert torch.isfinite(out["depth_pixel_values"]).all() and torch.isfinite(out["normal_pixel_values"]).all()
    assert processor.to_dict()["depth_model_name_or_path"] == tiny_depth_model
    assert "_depth_estimator" not in processor.to_dict()


# ------------------------------------------------------------------------------------- companion clips
def test_companion_clips_are_read_at_the_rgb_frame_positions(tmp_path, video_with_audio, caplog):
    thermal = indexed_video(tmp_path / "thermal.mp4", 20)  # same length: same indices
    touch = tmp_path / "touch"
    touch.mkdir()
    for k in range(10):  # half the frame rate: matched by time position
        Image.fromarray(frame_with_index(k)).save(touch / f"{k:03d}.png")
    processor = CremaVideoProcessor(num_frames=4, size=SIZE)
    with caplog.at_level(logging.WARNING):
        companions = {"thermal": str(thermal), "touch": str(touch)}
        rendered = processor.render_clip(str(video_with_audio), ("video",), companions)
    assert "Companion 'touch'" in caplog.text
    assert rendered.frame_indices["video"] == rendered.frame_indices["thermal"] == [2, 7, 12, 17]
    assert [level_to_index(frame_level(f)) for f in rendered.images["thermal"]] == [2, 7, 12, 17]
    assert rendered.frame_indices["touch"] == [1, 3, 6, 8]  # round(i * 9 / 19)
    assert [level_to_index(frame_level(f)) for f in rendered.images["touch"]] == [1, 3, 6, 8]
    out = processor([str(video_with_audio)], companions={"thermal": [str(thermal)]}, return_tensors="pt")
    assert out["thermal_pixel_values"].shape == out["video_pixel_values"].shape == (1, 4, 3, 32, 32)
    assert torch.equal(out["thermal_frame_indices"], out["video_frame_indices"])


def test_training_sampling_keeps_modalities_aligned(tmp_path, video_with_audio):
    thermal = indexed_video(tmp_path / "thermal.mp4", 20)
    processor = CremaVideoProcessor(num_frames=4, size=SIZE)
    runs = [
        processor(str(video_with_audio), ("video", "flow"), {"thermal": str(thermal)}, training=True, generator=seed)
        for seed in (0, 0, 1)
    ]
    assert runs[0]["video_frame_indices"].tolist() == runs[1]["video_frame_indices"].tolist()
    assert runs[0]["video_frame_indices"].tolist() != runs[2]["video_frame_indices"].tolist()
    for out in runs:
        assert (out["flow_frame_indices"] == out["video_frame_indices"]).all()
        assert (out["thermal_frame_indices"] == out["video_frame_indices"]).all()


def test_companion_batch_size_mismatch(video_with_audio):
    with pytest.raises(ValueError, match="Got 2 'thermal' clip"):
        CremaVideoProcessor(num_frames=2, size=SIZE)(
            [str(video_with_audio)], companions={"thermal": [str(video_with_audio)] * 2}
        )
