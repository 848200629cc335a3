"""`CremaProcessor`: prompts and targets of DESIGN §3, answer decoding, save/load (also through AutoProcessor and as
remote code), bad input, and the tiny model fed straight from processor outputs and from cached features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor, AutoProcessor

from crema_processing import (
    CremaAudioFeatureExtractor,
    CremaDataCollator,
    CremaPointCloudFeatureExtractor,
    CremaProcessor,
    CremaVideoProcessor,
    FrozenFeatureCacher,
    build_multiple_choice_prompt,
    build_open_ended_prompt,
    cache_frozen_features,
    parse_option_letter,
    post_process_answer,
)
from media_fixtures import media_dir, sine, video_no_audio, video_with_audio  # noqa: F401
from tiny_models import IMAGE_SIZE, NUM_FRAMES, VISION_WIDTH, tiny_crema_model


OPTIONS = ["cooking", "dancing", "reading"]
QUESTION = "what is the person doing?"


@pytest.fixture
def processor(tokenizer):
    return CremaProcessor(
        tokenizer,
        video_processor=CremaVideoProcessor(num_frames=NUM_FRAMES, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        feature_extractor=ASTFeatureExtractor(num_mel_bins=32, max_length=64),
        point_cloud_feature_extractor=CremaPointCloudFeatureExtractor(num_points=16, feature_size=VISION_WIDTH),
    )


def scene(points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((points, VISION_WIDTH)).astype(np.float32), rng.integers(0, 256, (points, 3))


# ------------------------------------------------------------------------------------------------ prompts
def test_prompts_are_the_papers():
    assert build_multiple_choice_prompt("Why did the boy fall?", ["he slipped", "he jumped"]) == (
        "Question: Why did the boy fall? Option A: he slipped Option B: he jumped Considering the information "
        "presented in the frame, select the correct answer from the options."
    )
    assert build_open_ended_prompt("How many instruments are playing?", "audio") == (
        "Question: How many instruments are playing? Based on the frames and audio information, answer the "
        "question using a single word or phrase."
    )
    assert build_open_ended_prompt("What color is the chair?", "3D Model", situation="I am facing the door") == (
        "I am facing the door. Question: What color is the chair? Based on the frames and 3D Model information, "
        "answer the question using a single word or phrase."
    )


@pytest.mark.parametrize(
    "inputs, word",
    [({"audio": True}, "audio"), ({"point_cloud": True}, "3D Model"), ({"touch": True}, "touch map"),
     ({"thermal": True}, "thermal heatmap")],
)
def test_open_ended_modality_word_follows_the_inputs(processor, tokenizer, inputs, word):
    assert processor.build_prompt("q?", modalities=list(inputs)) == (
        f"Question: q? Based on the frames and {word} information, answer the question using a single word or phrase."
    )


def test_multiple_choice_text_labels_and_answer_forms(processor, tokenizer):
    out = processor(question=[QUESTION] * 3, options=[OPTIONS] * 3, answer=[1, "B", "dancing"])
    prompt = tokenizer.decode(out["input_ids"][0], skip_special_tokens=True)
    assert prompt.replace(" :", ":") == build_multiple_choice_prompt(QUESTION, OPTIONS)
    target = tokenizer("Option B", return_tensors="pt").input_ids[0]
    assert all(torch.equal(row, target) for row in out["labels"])
    assert out["input_ids"].dtype == torch.long and out["attention_mask"].shape == out["input_ids"].shape
    with pytest.raises(ValueError, match="neither an option index"):
        processor(question=QUESTION, options=OPTIONS, answer="swimming")


def test_labels_padding_is_minus_100(processor, tokenizer):
    out = processor(question=["q?", "q?"], answer=["guitar", "two guitar piano"])
    assert out["labels"].shape == (2, 4)
    assert out["labels"][0].tolist()[2:] == [-100, -100]
    assert out["labels"][1, -1].item() == tokenizer.eos_token_id
    verbatim = processor(text="Question: red or blue?", answer="blue")
    assert verbatim["input_ids"][0].tolist() == tokenizer("Question: red or blue?").input_ids


def test_decoding_answers(processor, tokenizer):
    assert post_process_answer("Option B", OPTIONS) == "dancing"
    assert post_process_answer("  ", OPTIONS) == "unanswerable"
    assert post_process_answer("", None) == "unanswerable"
    assert post_process_answer("piano ", None) == "piano"
    assert parse_option_letter("(c)") == "C" and parse_option_letter("Option E", 3) is None
    ids = tokenizer(["Option C", "guitar", ""], padding=True, return_tensors="pt").input_ids
    assert processor.decode_answers(ids[:1], options=[OPTIONS]) == ["reading"]
    assert processor.decode_answers(ids[1:]) == ["guitar", "unanswerable"]
    assert processor.decode_answers(["Option A", "violin"], options=[OPTIONS, None]) == ["cooking", "violin"]
    letters = processor.option_letter_token_ids(3)
    assert letters == tokenizer.convert_tokens_to_ids(["A", "B", "C"])
    assert processor(question="q?", options=OPTIONS, answer="C")["labels"][0, 1].item() == letters[2]


# ----------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_and_auto_processor(tmp_path, tokenizer, video_with_audio):
    processor = CremaProcessor(
        tokenizer,
        video_processor=CremaVideoProcessor(num_frames=3, size={"height": 32, "width": 32}, flow_max_side=64),
        feature_extractor=CremaAudioFeatureExtractor(feature_size=32, segment_length=64, num_segments=3),
        point_cloud_feature_extractor=CremaPointCloudFeatureExtractor(num_points=100),
        modality_key_map={"normal": "norm"},
        prompt_modality_word="audio",
    )
    processor.save_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "processor_config.json").read_text())
    assert config["processor_class"] == "CremaProcessor"
    assert config["auto_map"]["AutoProcessor"] == "processing_crema.CremaProcessor"
    assert (tmp_path / "a" / "processing_crema.py").exists() and (tmp_path / "a" / "audio.py").exists()
    for loaded in (CremaProcessor.from_pretrained(tmp_path / "a"), AutoProcessor.from_pretrained(tmp_path / "a")):
        assert type(loaded) is CremaProcessor
        assert loaded.to_dict() == processor.to_dict()
        assert loaded.video_processor.flow_max_side == 64 and loaded.feature_extractor.num_segments == 3
        assert loaded.point_cloud_feature_extractor.num_points == 100
        assert loaded.modality_key_map == {"normal": "norm"} and loaded.prompt_modality_word == "audio"
        assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
        loaded.save_pretrained(tmp_path / "b")
        assert (tmp_path / "b" / "processor_config.json").read_text() == (
            tmp_path / "a" / "processor_config.json"
        ).read_text()
    call = dict(videos=str(video_with_audio), question="q?", answer="guitar", audio=True, return_tensors="pt")
    first, second = processor(**call), AutoProcessor.from_pretrained(tmp_path / "a")(**call)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_pass_through_audio_extractor_survives_save_load(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.feature_extractor, ASTFeatureExtractor)
    assert loaded.feature_extractor.max_length == 64


def test_remote_code_loading_in_a_fresh_interpreter(tmp_path, tokenizer):
    CremaProcessor(tokenizer, video_processor=CremaVideoProcessor(num_frames=2)).save_pretrained(tmp_path / "proc")
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "proc")!r}, trust_remote_code=True)
        assert "crema_processing" not in sys.modules, "the installed package must not be needed"
        frames = np.random.default_rng(0).integers(0, 255, (5, 48, 64, 3), dtype=np.uint8)
        out = processor(videos=frames, question="q?", return_tensors="np")
        print(type(processor).__module__, out["video_pixel_values"].shape)
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if "cremapath" not in p)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transformers_modules" in result.stdout and "(1, 2, 3, 224, 224)" in result.stdout


# ---------------------------------------------------------------------------------------------- bad input
def test_audio_asked_for_a_video_without_audio(processor, video_no_audio):
    with pytest.raises(ValueError, match="no_audio.mp4' has no audio track"):
        processor(videos=str(video_no_audio), question="q?", audio=True)
    out = processor(videos=str(video_no_audio), question="q?")  # without audio it works
    assert "audio_input_values" not in out and out["video_pixel_values"].shape[1] == NUM_FRAMES


def test_raw_waveforms_need_their_rate_and_are_resampled(processor):
    stereo = sine(1.0, 44100, channels=2)
    out = processor(question="q?", audio=stereo, sampling_rate=44100)
    assert out["audio_input_values"].shape == (1, 2, 64, 32)
    same = processor(question="q?", audio=(stereo, 44100))
    assert torch.equal(out["audio_input_values"], same["audio_input_values"])
    with pytest.raises(ValueError, match="sampling rate"):
        processor(question="q?", audio=stereo)
    with pytest.raises(ValueError, match="audio.*NaN"):
        processor(question="q?", audio=np.full(16000, np.nan, np.float32), sampling_rate=16000)


def test_batch_size_mismatches_are_reported(processor, video_with_audio):
    with pytest.raises(ValueError, match="Got 1 question"):
        processor(videos=[str(video_with_audio)] * 2, question="q?")
    with pytest.raises(ValueError, match="Got 3 option lists"):
        processor(question=["a?", "b?"], options=[OPTIONS] * 3)
    with pytest.raises(ValueError, match="without a `question`"):
        processor(videos=str(video_with_audio), answer="x")
    with pytest.raises(TypeError, match="Unexpected arguments"):
        processor(question="q?", image="x")


def test_nan_point_cloud_names_the_modality(processor):
    features, coordinates = scene(10)
    features[0, 0] = np.nan
    with pytest.raises(ValueError, match="point_cloud.*NaN"):
        processor(question="q?", point_cloud=(features, coordinates))


def test_modality_key_map_renames_outputs(tokenizer, video_with_audio):
    processor = CremaProcessor(
        tokenizer, video_processor=CremaVideoProcessor(num_frames=2, size={"height": 32, "width": 32}),
        modality_key_map={"video": "rgb", "flow": "optical_flow"},
    )
    out = processor(videos=str(video_with_audio), question="q?", flow=True, return_frame_indices=True)
    assert {"rgb_pixel_values", "optical_flow_pixel_values", "rgb_frame_indices"} <= set(out)
    assert "video_pixel_values" not in out and "input_ids" in out


# ------------------------------------------------------------------------------------------ the model
def test_processor_outputs_feed_the_model(tokenizer, processor, video_with_audio):
    model = tiny_crema_model(
        modalities=["video", "flow", "audio", "point_cloud"], fusion=["video", "flow", "audio", "point_cloud"],
        with_audio_encoder=True,
    )
    inputs = processor(
        videos=[str(video_with_audio)] * 2,
        question=[QUESTION, "which instrument?"],
        options=[OPTIONS, None],
        answer=[2, "guitar"],
        flow=True,
        audio=True,
        point_cloud=[scene(10), scene(30, seed=1)],
    )
    assert set(inputs) == {
        "video_pixel_values", "flow_pixel_values", "audio_input_values", "point_cloud_features",
        "point_cloud_coordinates", "point_cloud_attention_mask", "input_ids", "attention_mask", "labels",
    }
    assert inputs["video_pixel_values"].shape == (2, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert inputs["point_cloud_attention_mask"].sum(dim=1).tolist() == [10, 16]
    output = model(**inputs)
    assert torch.isfinite(output.loss)
    generated = model.generate(**inputs, max_new_tokens=3)
    answers = processor.decode_answers(generated, options=[OPTIONS, None])
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)


def test_processor_from_model_config_matches_the_model(tokenizer, video_with_audio):
    model = tiny_crema_model(modalities=["video", "audio"], with_audio_encoder=True, max_points=32)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    assert processor.video_processor.num_frames == NUM_FRAMES and processor.video_processor.size.height == IMAGE_SIZE
    assert isinstance(processor.feature_extractor, ASTFeatureExtractor)
    assert processor.feature_extractor.max_length == 64 and processor.point_cloud_feature_extractor.num_points == 32
    inputs = processor(videos=str(video_with_audio), question="which instrument?", answer="guitar", audio=True)
    assert inputs["audio_input_values"].shape == (1, model.config.num_audio_segments, 64, 32)
    assert torch.isfinite(model(**inputs).loss)


def test_cached_features_give_the_same_outputs_as_pixels(tokenizer, processor, video_with_audio):
    from datasets import Dataset

    model = tiny_crema_model(
        modalities=["video", "flow", "audio"], fusion=["video", "flow", "audio"], with_audio_encoder=True
    )
    raw = processor(
        videos=[str(video_with_audio)] * 3,
        question=["q one?", "q two?", "q three?"],
        answer=["guitar", "piano", "two"],
        flow=True, audio=True, training=True, generator=0,
    )
    with torch.no_grad():
        expected = model(**raw).logits
    rows = {key: [value[i].numpy() for i in range(3)] for key, value in raw.items()}
    dataset = Dataset.from_dict(rows)

    cached = cache_frozen_features(dataset, model, batch_size=2)
    assert {"video_features", "flow_features", "audio_features"} <= set(cached.column_names)
    assert not {"video_pixel_values", "flow_pixel_values", "audio_input_values"} & set(cached.column_names)
    collator = CremaDataCollator.from_tokenizer(tokenizer)
    batch = collator([cached[i] for i in range(3)])
    assert batch["video_features"].shape[:2] == (3, NUM_FRAMES) and batch["video_features"].dtype == torch.float32
    with torch.no_grad():
        pre_layernorm = model.encode_frozen_features("video", video_pixel_values=raw["video_pixel_values"])
        assert pre_layernorm.abs().mean() > 0.1
        torch.testing.assert_close(batch["video_features"], pre_layernorm)
        torch.testing.assert_close(model(**batch).logits, expected, rtol=1e-4, atol=1e-5)
        other = dict(batch, video_features=batch["video_features"].flip(0))  # the features do matter
        assert not torch.allclose(model(**other).logits, expected, rtol=1e-4, atol=1e-5)

    half = cache_frozen_features(dataset.select([0]), model, modalities=["flow"], storage_dtype="float16")
    assert "float16" in str(half.features["flow_features"])
    assert "video_pixel_values" in half.column_names  # only the named modality was encoded

    one_by_one = dataset.map(FrozenFeatureCacher(model, modalities=["video"]), batched=False)
    assert "video_pixel_values" in one_by_one.column_names and "flow_features" not in one_by_one.column_names
    torch.testing.assert_close(torch.tensor(np.asarray(one_by_one[1]["video_features"], np.float32)), pre_layernorm[1])


def test_collator_refuses_nan_features_and_ragged_shapes(tokenizer):
    collator = CremaDataCollator.from_tokenizer(tokenizer)
    good = {"input_ids": [5, 1], "video_features": np.zeros((2, 3, 4), np.float32)}
    bad = {"input_ids": [5, 6, 1], "video_features": np.full((2, 3, 4), np.nan, np.float32)}
    with pytest.raises(ValueError, match="Modality 'video'.*NaN"):
        collator([good, bad])
    ragged = {"input_ids": [5], "video_features": np.zeros((1, 3, 4), np.float32)}
    with pytest.raises(ValueError, match="Modality 'video'.*different shapes"):
        collator([good, ragged])
    rows = [{**good, "labels": [3, 4, 1], "extra": "dropped"}, {**good, "input_ids": [7, 8, 9, 1], "labels": [3, 1]}]
    rows[0]["attention_mask"], rows[1]["attention_mask"] = [1, 1], [1, 1, 1, 1]
    batch = collator(rows)
    assert batch["input_ids"].tolist() == [[5, 1, 0, 0], [7, 8, 9, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[3, 4, 1], [3, 1, -100]]
    assert "extra" not in batch and batch["video_features"].shape == (2, 2, 3, 4)


def test_encoder_nan_output_is_refused():
    class NanModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def encode_frozen_features(self, modality, **inputs):
            return torch.full((1, 2, 3, 4), float("nan"))

    with pytest.raises(ValueError, match="Modality 'depth'.*NaN"):
        FrozenFeatureCacher(NanModel())({"depth_pixel_values": np.zeros((2, 3, 8, 8), np.float32)})
