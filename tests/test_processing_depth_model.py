"""Choosing the depth model and the audio feature extractor of a `CremaProcessor`: by name, loaded lazily, saved with
the processor, and giving exactly what the model itself gives."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation, AutoProcessor, Wav2Vec2FeatureExtractor
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from crema_processing import (
    CremaProcessor,
    CremaVideoProcessor,
    DepthEstimator,
    normal_image_from_depth,
    render_depth,
)
from media_fixtures import media_dir, tiny_depth_model, video_with_audio  # noqa: F401  (pytest fixtures)
from tiny_models import IMAGE_SIZE, tiny_crema_config


CONFIG = tiny_crema_config(("video", "depth", "normal"))
SIZE = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
# video_with_audio has 20 frames; 3 uniform segments [0, 6) [6, 13) [13, 20) -> middles 2, 9, 16
INDICES = [2, 9, 16]


def decoded_frames(path, indices):
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return [frames[i] for i in indices]


def expected_depth_and_normals(model_path, frames):
    """Depth straight from the model with its own image processor and post-processing, rendered and normalised."""
    image_processor = AutoImageProcessor.from_pretrained(model_path)
    model = AutoModelForDepthEstimation.from_pretrained(model_path).eval()
    with torch.no_grad():
        outputs = model(**image_processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt"))
    depths = image_processor.post_process_depth_estimation(outputs, target_sizes=[f.shape[:2] for f in frames])
    depths = [d["predicted_depth"].float().numpy() for d in depths]
    blip = BlipImageProcessorPil(size=SIZE)

    def pixels(images):
        return blip(images=[Image.fromarray(i) for i in images], return_tensors="pt")["pixel_values"]

    return pixels([render_depth(d) for d in depths]), pixels([normal_image_from_depth(d) for d in depths])


def test_depth_model_by_name_is_saved_and_matches_the_model(tmp_path, tokenizer, tiny_depth_model, video_with_audio):
    processor = CremaProcessor.from_model_config(CONFIG, tokenizer, depth_model_name_or_path=tiny_depth_model)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["image_processor"]["depth_model_name_or_path"] == tiny_depth_model
    depth, normals = expected_depth_and_normals(tiny_depth_model, decoded_frames(video_with_audio, INDICES))
    for loaded in (CremaProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert loaded.video_processor.depth_model_name_or_path == tiny_depth_model
        out = loaded(videos=str(video_with_audio), depth=True, normal=True, return_frame_indices=True)
        assert out["depth_frame_indices"].tolist() == [INDICES]
        torch.testing.assert_close(out["depth_pixel_values"][0], depth, rtol=0, atol=1e-6)
        torch.testing.assert_close(out["normal_pixel_values"][0], normals, rtol=0, atol=1e-6)


def test_depth_model_is_loaded_only_when_depth_is_asked_for(tmp_path, tokenizer, video_with_audio):
    missing = str(tmp_path / "no-such-depth-model")
    processor = CremaProcessor.from_model_config(CONFIG, tokenizer, depth_model_name_or_path=missing)
    processor.save_pretrained(tmp_path / "saved")
    loaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    out = loaded(videos=str(video_with_audio), question="q?")  # no depth: the model is never loaded
    assert out["video_pixel_values"].shape == (1, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="Could not load the depth-estimation model.*no-such-depth-model"):
        loaded(videos=str(video_with_audio), normal=True)


def test_a_depth_model_name_is_accepted_wherever_an_estimator_is(tokenizer, tiny_depth_model, video_with_audio):
    video = str(video_with_audio)
    depth, _ = expected_depth_and_normals(tiny_depth_model, decoded_frames(video_with_audio, INDICES))
    by_name = CremaVideoProcessor(num_frames=3, size=SIZE, depth_estimator=tiny_depth_model)
    assert by_name.to_dict()["depth_model_name_or_path"] == tiny_depth_model
    plain = CremaVideoProcessor(num_frames=3, size=SIZE)
    processor = CremaProcessor.from_model_config(CONFIG, tokenizer)
    estimator = DepthEstimator(tiny_depth_model)
    results = {
        "constructor": by_name(video, modalities=("depth",), return_tensors="pt"),
        "call": plain(video, modalities=("depth",), depth_estimator=tiny_depth_model, return_tensors="pt"),
        "processor call": processor(videos=video, depth=True, depth_estimator=tiny_depth_model),
        "estimator object": CremaVideoProcessor(num_frames=3, size=SIZE, depth_estimator=estimator)(
            video, modalities=("depth",), return_tensors="pt"
        ),
    }
    for name, out in results.items():
        torch.testing.assert_close(out["depth_pixel_values"][0], depth, rtol=0, atol=1e-6, msg=name)
    # a DepthEstimator given to the constructor is saved by its model name
    assert CremaVideoProcessor(depth_estimator=estimator).to_dict()["depth_model_name_or_path"] == tiny_depth_model
    with pytest.raises(ValueError, match="Two depth models"):
        CremaVideoProcessor(depth_model_name_or_path="a/depth", depth_estimator="b/depth")
    with pytest.raises(ValueError, match="depth_estimator="):
        CremaVideoProcessor(depth_model_name_or_path=estimator)


def test_depth_without_a_model_names_the_option(tokenizer):
    processor = CremaProcessor.from_model_config(CONFIG, tokenizer)
    frames = np.zeros((4, 48, 64, 3), dtype=np.uint8)
    for wanted in ({"depth": True}, {"normal": True}):
        with pytest.raises(ValueError, match="depth_model_name_or_path"):
            processor(videos=frames, **wanted)


def test_audio_feature_extractor_replaces_the_default_and_is_saved(tmp_path, tokenizer):
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=8000, do_normalize=True)
    processor = CremaProcessor.from_model_config(CONFIG, tokenizer, audio_feature_extractor=extractor)
    assert processor.feature_extractor is extractor
    rng = np.random.default_rng(0)
    wave = (np.sin(np.arange(8000) / 8000 * 2 * np.pi * 300) + 0.3 * rng.standard_normal(8000)).astype(np.float32)
    # the model's 2 audio segments: the two halves, each normalised to zero mean and unit variance (Wav2Vec2)
    halves = wave.reshape(2, 4000).astype(np.float64)
    expected = (halves - halves.mean(1, keepdims=True)) / np.sqrt(halves.var(1, keepdims=True) + 1e-7)
    processor.save_pretrained(tmp_path)
    for candidate in (processor, AutoProcessor.from_pretrained(tmp_path)):
        assert type(candidate.feature_extractor) is Wav2Vec2FeatureExtractor
        assert candidate.feature_extractor.sampling_rate == 8000
        values = candidate(audio=wave, sampling_rate=8000, question="q?", return_tensors="np")["audio_input_values"]
        np.testing.assert_allclose(values[0], expected, rtol=0, atol=1e-4)
