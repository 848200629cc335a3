"""Reproducing the authors' reference code where it matters for converted checkpoints and paper numbers (DESIGN §3):
per-dataset prompt presets, multiple-choice scoring at the step after "Option", the reference's frame indices and
point-cloud sampling, and depth rendered as ZoeDepth's `colorize` does. Expected values are written out by hand
(prompts, indices) or recomputed here with numpy / the language model called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crema_processing import CremaPointCloudFeatureExtractor, CremaProcessor, CremaVideoProcessor, load_point_cloud
from crema_processing.depth import colorize_depth, remove_zoedepth_padding, render_depth
from crema_processing.frame_sampling import reference_segment_indices, sample_frame_indices, uniform_segment_indices
from crema_processing.prompts import PROMPT_PRESETS, build_prompt, build_target, get_prompt_preset
from crema_training.answer import answer_question, option_letter_scores, option_log_likelihoods
from tiny_models import IMAGE_SIZE, NUM_FRAMES, modality_inputs, randomize_lora_b, tiny_crema_model


# ------------------------------------------------------------------------------------------------ prompt presets
def test_presets_carry_the_reference_generation_settings():
    assert set(PROMPT_PRESETS) == {"nextqa", "perception_test", "music_avqa", "sqa3d", "vggsound", "touchqa",
                                   "thermalqa"}
    for preset in PROMPT_PRESETS.values():
        assert (preset.num_beams, preset.length_penalty, preset.empty_answer) == (5, -1.0, "unanswerable")
        assert preset.max_prompt_tokens == preset.max_answer_tokens == 77
    assert PROMPT_PRESETS["sqa3d"].max_new_tokens == 40 and PROMPT_PRESETS["music_avqa"].max_new_tokens == 10
    assert PROMPT_PRESETS["sqa3d"].generation_kwargs() == {"num_beams": 5, "max_new_tokens": 40, "length_penalty": -1.0}
    words = {name: p.modality_word for name, p in PROMPT_PRESETS.items()}
    assert words == {"nextqa": None, "perception_test": None, "music_avqa": "audio", "sqa3d": "3D Model",
                     "vggsound": "audio", "touchqa": "touch map", "thermalqa": "thermal heatmap"}
    assert get_prompt_preset("Music-AVQA") is get_prompt_preset("avqa") is PROMPT_PRESETS["music_avqa"]
    assert get_prompt_preset("") is None and get_prompt_preset(None) is None
    with pytest.raises(ValueError, match="Unknown prompt preset 'imagenet'"):
        get_prompt_preset("imagenet")


def test_multiple_choice_presets_keep_question_and_options_verbatim():
    options = ["he slipped", "he jumped ", "he ran", "he sat", "he fell asleep"]
    expected = (
        "Question: Why did the boy fall?  Option A: he slipped Option B: he jumped  Option C: he ran Option D: he "
        "sat Option E: he fell asleep Considering the information presented in the frame, select the correct answer "
        "from the options."
    )
    assert build_prompt("nextqa", "Why did the boy fall? ", options) == expected
    assert build_prompt("perception_test", "Why did the boy fall? ", options) == expected
    assert build_target("nextqa", 2, options) == "Option C"
    assert build_target("perception_test", "he sat", options) == "Option D"


def test_music_avqa_preset_processes_the_question_like_the_reference():
    question = "How many Instruments are playing? (in total)!  "
    assert build_prompt("music_avqa", question) == (
        "Question: how many instruments are playing? in total Based on the frames and audio information, answer the "
        "question using a single word or phase."
    )
    assert build_target("music_avqa", "acoustic_guitar") == "acoustic guitar"
    assert build_prompt("vggsound", "What is making the sound?") == (
        "Question: what is making the sound? Based on the frames and audio information, answer the question using a "
        "single word or phase."
    )
    assert build_prompt("touchqa", "What material is the person touching?").endswith(
        "Based on the frames and touch map information, answer the question using a single word or phase.")
    assert build_prompt("thermalqa", "What action might have occurred before this video?") == (
        "Question: what action might have occurred before this video? Based on the frames and thermal heatmap "
        "information, answer the question using a single word or phase."
    )


def test_sqa3d_preset_prepends_the_processed_situation():
    prompt = build_prompt("sqa3d", "What color is the chair to my LEFT?", situation='I am sitting on the "bed"; '
                          "facing the Desk.")
    assert prompt == (
        "i am sitting on the bed facing the desk. Question: what color is the chair to my left? Based on the frames "
        "and 3D Model information, answer the question using a single word or phase."
    )
    assert build_target("sqa3d", "Brown_wood") == "Brown_wood"  # SQA3D answers are used as given
    words = " ".join(f"w{i}" for i in range(60))
    assert build_prompt("sqa3d", words) == (
        "Question: " + " ".join(f"w{i}" for i in range(50)) + " Based on the frames and 3D Model information, answer "
        "the question using a single word or phase."
    )


def test_without_a_preset_the_default_prompts_are_unchanged(tokenizer):
    processor = CremaProcessor(tokenizer)
    assert processor.prompt_preset is None
    assert processor.build_prompt("How many?", modality_word="audio") == (
        "Question: How many? Based on the frames and audio information, answer the question using a single word or "
        "phrase."
    )
    assert processor.build_target("acoustic_guitar") == "acoustic_guitar"
    assert processor.generation_kwargs() == {"num_beams": 5, "max_new_tokens": 10, "length_penalty": -1.0}


def test_processor_preset_is_saved_and_can_be_overridden_per_call(tokenizer, tmp_path):
    processor = CremaProcessor(tokenizer, prompt_preset="music_avqa")
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["prompt_preset"] == "music_avqa"
    loaded = CremaProcessor.from_pretrained(tmp_path)
    assert loaded.prompt_preset == "music_avqa"

    expected = ("Question: which is louder? Based on the frames and audio information, answer the question using a "
                "single word or phase.")
    out = loaded(question="Which is LOUDER?", answer="acoustic_guitar", return_tensors="np")
    assert out["input_ids"][0].tolist() == tokenizer(expected).input_ids
    assert out["labels"][0].tolist() == tokenizer("acoustic guitar").input_ids
    # a per-call preset replaces the saved one; "" means the default prompts
    sqa = loaded(question="Where?", situation="I stand.", prompt_preset="sqa3d", return_tensors="np")
    assert tokenizer.decode(sqa["input_ids"][0], skip_special_tokens=True) == tokenizer.decode(tokenizer(
        "i stand. Question: where? Based on the frames and 3D Model information, answer the question using a single "
        "word or phase.").input_ids, skip_special_tokens=True)
    plain = loaded(question="Where?", modality_word="audio", prompt_preset="", return_tensors="np")
    assert plain["input_ids"][0].tolist() == tokenizer(
        "Question: Where? Based on the frames and audio information, answer the question using a single word or "
        "phrase.").input_ids
    assert loaded.decode_answers(["", "violin"]) == ["unanswerable", "violin"]
    assert loaded.generation_kwargs("sqa3d")["max_new_tokens"] == 40
    with pytest.raises(ValueError, match="Unknown prompt preset"):
        CremaProcessor(tokenizer, prompt_preset="imagenet")


def test_preset_truncates_prompt_and_answer_to_77_tokens(tokenizer):
    long_text = " ".join(["guitar"] * 120)
    processor = CremaProcessor(tokenizer)
    multiple_choice = processor(question=long_text, options=["piano", "violin"], prompt_preset="nextqa")
    assert multiple_choice["input_ids"].shape == (1, 77)
    assert multiple_choice["input_ids"][0, -1] == tokenizer.eos_token_id  # truncated like the reference's tokenizer
    assert processor(question=long_text, options=["piano", "violin"])["input_ids"].shape[1] > 77
    open_ended = processor(question="What is it?", answer=long_text, prompt_preset="vggsound")
    assert open_ended["labels"].shape == (1, 77)
    assert processor(question="What is it?", answer=long_text)["labels"].shape[1] > 77
    # open-ended questions are first cut to 50 words by the reference's question processor
    expected = tokenizer(build_prompt("music_avqa", long_text)).input_ids
    assert len(expected) < 77 and expected.count(tokenizer.convert_tokens_to_ids("guitar")) == 50
    assert processor(question=long_text, prompt_preset="music_avqa")["input_ids"][0].tolist() == expected


# ------------------------------------------------------------------------------------------------ MC scoring
OPTIONS = ["cooking", "dancing", "reading", "running", "sleeping"]


def _mc_inputs(model, tokenizer, batch: int = 2):
    prompt = build_prompt("nextqa", "what is the person doing?", OPTIONS)
    encoded = tokenizer([prompt] * batch, return_tensors="pt")
    inputs = modality_inputs(model.config, batch=batch, seed=3)
    inputs.update(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask)
    return inputs


def _letter_scores_by_hand(model, tokenizer, inputs, step: int):
    """The T5 LM called directly on the prepared encoder input, decoder fed [start, "Option"][: step + 1]."""
    prepared = model.prepare_language_model_inputs(**inputs)
    start = model.config.text_config.decoder_start_token_id
    option = tokenizer("Option", add_special_tokens=False).input_ids
    letters = [tokenizer(letter, add_special_tokens=False).input_ids[0] for letter in "ABCDE"]
    decoder = torch.tensor([[start, *option][: step + 1]] * inputs["input_ids"].shape[0])
    with torch.no_grad():
        logits = model.language_model(inputs_embeds=prepared.inputs_embeds, attention_mask=prepared.attention_mask,
                                      decoder_input_ids=decoder).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)[:, letters]


def test_reference_scoring_reads_the_letters_at_the_step_after_option(tokenizer):
    model = tiny_crema_model(("video",), tokenizer=tokenizer)
    randomize_lora_b(model)
    processor = CremaProcessor(tokenizer)
    inputs = _mc_inputs(model, tokenizer)
    scores = option_letter_scores(model, processor, inputs, len(OPTIONS))
    expected = _letter_scores_by_hand(model, tokenizer, inputs, step=1)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    assert scores.argmax(-1).tolist() == expected.argmax(-1).tolist()
    # not the first answer step's scores (the check above would not tell them apart otherwise)
    first_step = _letter_scores_by_hand(model, tokenizer, inputs, step=0)
    assert not torch.allclose(scores, first_step, atol=1e-3)
    # fewer options for one example: its missing letters are never chosen
    limited = option_letter_scores(model, processor, inputs, [5, 2])
    assert torch.isinf(limited[1, 2:]).all() and torch.equal(limited[0], scores[0])


def test_answer_question_offers_both_scorings(tokenizer):
    model = tiny_crema_model(("video",), tokenizer=tokenizer)
    randomize_lora_b(model)
    processor = CremaProcessor(
        tokenizer, video_processor=CremaVideoProcessor(num_frames=NUM_FRAMES,
                                                       size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        prompt_preset="nextqa",
    )
    frames = np.random.default_rng(0).integers(0, 255, (6, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    inputs = processor(videos=frames, question="what is the person doing?", options=OPTIONS, return_tensors="pt")

    reference = answer_question(model, processor, frames, "what is the person doing?", OPTIONS, scoring="reference")
    letters = _letter_scores_by_hand(model, tokenizer, dict(inputs), step=1)[0]
    assert reference.scoring == "reference" and reference.option_index == int(letters.argmax())
    assert reference.text == OPTIONS[reference.option_index] and reference.option_log_likelihoods == []
    torch.testing.assert_close(torch.tensor(reference.option_scores), letters, rtol=1e-5, atol=1e-5)

    likelihood = answer_question(model, processor, frames, "what is the person doing?", OPTIONS)
    whole = option_log_likelihoods(model, processor, dict(inputs), OPTIONS)
    assert likelihood.scoring == "likelihood" and likelihood.option_index == int(whole.argmax())
    assert likelihood.option_scores == pytest.approx(whole.tolist(), abs=1e-5)
    assert likelihood.option_log_likelihoods == likelihood.option_scores
    with pytest.raises(ValueError, match="Unknown multiple-choice scoring 'letters'"):
        answer_question(model, processor, frames, "q?", OPTIONS, scoring="letters")


def test_answer_question_open_ended_uses_the_presets_prompt_and_generation(tokenizer, monkeypatch):
    model = tiny_crema_model(("video",), tokenizer=tokenizer)
    processor = CremaProcessor(tokenizer, video_processor=CremaVideoProcessor(
        num_frames=NUM_FRAMES, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}))
    frames = np.random.default_rng(0).integers(0, 255, (6, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    seen = {}

    def generate(**kwargs):
        seen.update(kwargs)
        return torch.tensor([[0, 1]])  # decoder start + EOS: an empty answer

    monkeypatch.setattr(model, "generate", generate)
    answer = answer_question(model, processor, frames, "Which way?", prompt_preset="sqa3d", situation="I stand.")
    assert answer.text == "unanswerable"
    assert {k: seen[k] for k in ("num_beams", "max_new_tokens", "length_penalty")} == \
        {"num_beams": 5, "max_new_tokens": 40, "length_penalty": -1.0}
    assert seen["input_ids"][0].tolist() == tokenizer(
        "i stand. Question: which way? Based on the frames and 3D Model information, answer the question using a "
        "single word or phase.").input_ids
    answer_question(model, processor, frames, "Which way?", num_beams=2, max_new_tokens=3)
    assert (seen["num_beams"], seen["max_new_tokens"], seen["length_penalty"]) == (2, 3, -1.0)


# ------------------------------------------------------------------------------------------------ frame indices
# (n files, T) -> indices, worked out by hand from the reference's `load_frames`: vlen = n - 1,
# edges = int(linspace(0, vlen, T + 1)), index = (x0 + x1) // 2
REFERENCE_FOLDER_INDICES = {
    (1, 4): [0, 0, 0, 0],      # vlen 0: edges 0 0 0 0 0
    (3, 4): [0, 0, 1, 1],      # vlen 2: edges 0 0 1 1 2
    (4, 4): [0, 0, 1, 2],      # vlen 3: edges 0 0 1 2 3
    (5, 4): [0, 1, 2, 3],      # vlen 4: edges 0 1 2 3 4
    (10, 4): [1, 3, 5, 7],     # vlen 9: edges 0 2 4 6 9
    (17, 4): [2, 6, 10, 14],   # vlen 16: edges 0 4 8 12 16
    (60, 4): [7, 21, 36, 51],  # vlen 59: edges 0 14 29 44 59
    (10, 3): [1, 4, 7],        # vlen 9: edges 0 3 6 9
}
# the same clips with this package's "uniform" mode (edges over [0, n), middle of [x0, x1 - 1])
UNIFORM_INDICES = {(10, 4): [0, 3, 5, 8], (17, 4): [1, 5, 9, 14], (60, 4): [7, 22, 37, 52]}
# the reference's `load_video` (decord, video files): vlen = n, at most n segments, last index repeated
REFERENCE_VIDEO_INDICES = {(3, 4): [0, 1, 2, 2], (5, 4): [0, 1, 2, 4], (10, 4): [1, 3, 6, 8], (60, 4): [7, 22, 37, 52]}


@pytest.mark.parametrize("clip", sorted(REFERENCE_FOLDER_INDICES))
def test_reference_frame_indices_on_frame_folders(clip):
    assert sample_frame_indices(*clip, mode="reference") == REFERENCE_FOLDER_INDICES[clip]


def test_reference_indices_differ_from_uniform_by_the_off_by_one():
    for clip, indices in UNIFORM_INDICES.items():
        assert uniform_segment_indices(*clip) == indices != REFERENCE_FOLDER_INDICES[clip]
    for clip, indices in REFERENCE_VIDEO_INDICES.items():
        assert sample_frame_indices(*clip, mode="reference_video") == indices


def test_reference_training_indices_are_random_within_each_segment():
    # n = 10, T = 4: edges 0 2 4 6 9 -> segments [0, 2) [2, 4) [4, 6) [6, 9)
    seen = [set() for _ in range(4)]
    for seed in range(200):
        indices = reference_segment_indices(10, 4, training=True, generator=seed)
        for k, index in enumerate(indices):
            seen[k].add(index)
    assert seen == [{0, 1}, {2, 3}, {4, 5}, {6, 7, 8}]
    assert reference_segment_indices(10, 4, training=True, generator=5) == \
        reference_segment_indices(10, 4, training=True, generator=5)
    # empty segments (x0 == x1) give x0: n = 3, T = 4 -> edges 0 0 1 1 2
    assert {tuple(reference_segment_indices(3, 4, training=True, generator=s)) for s in range(50)} == {(0, 0, 1, 1)}


def test_reference_sampling_through_the_processor_on_a_frame_folder(tmp_path, tokenizer):
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(10):
        Image.fromarray(np.full((16, 16, 3), 20 * k, dtype=np.uint8)).save(folder / f"{k:06d}.jpg", quality=100)
    video = CremaVideoProcessor(num_frames=4, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                frame_sampling="reference")
    processor = CremaProcessor(tokenizer, video_processor=video)
    out = processor(videos=str(folder), return_frame_indices=True, return_tensors="np")
    assert out["video_frame_indices"][0].tolist() == [1, 3, 5, 7]
    uniform = CremaProcessor(tokenizer, video_processor=CremaVideoProcessor(
        num_frames=4, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}))
    assert uniform(videos=str(folder), return_frame_indices=True)["video_frame_indices"][0].tolist() == [0, 3, 5, 8]


# ------------------------------------------------------------------------------------------------ point clouds
def _scene(points: int, dim: int = 6):
    features = np.arange(points * dim, dtype=np.float32).reshape(points, dim) + 1
    coordinates = np.stack([np.arange(points) % 256, np.arange(points) % 7, np.full(points, 3)], axis=1)
    return features, coordinates


def test_reference_point_sampling_keeps_the_first_points_and_does_not_mask_padding():
    extractor = CremaPointCloudFeatureExtractor(num_points=8, sampling="reference")
    features, coordinates = _scene(20)
    for training in (False, True):
        out = extractor((features, coordinates), training=training, generator=3)
        np.testing.assert_array_equal(out["features"][0], features[:8])
        np.testing.assert_array_equal(out["coordinates"][0], coordinates[:8])
        assert out["attention_mask"][0].tolist() == [1] * 8
    small, small_coordinates = _scene(5)
    padded = extractor((small, small_coordinates))
    np.testing.assert_array_equal(padded["features"][0, :5], small)
    assert not padded["features"][0, 5:].any() and not padded["coordinates"][0, 5:].any()
    assert padded["attention_mask"][0].tolist() == [1] * 8  # padding attended, as in the reference
    # the default keeps masking padding and samples a random subset
    default = CremaPointCloudFeatureExtractor(num_points=8)
    assert default((small, small_coordinates))["attention_mask"][0].tolist() == [1] * 5 + [0] * 3
    assert not np.array_equal(default((features, coordinates))["features"][0], features[:8])
    # per-call override, and the mode is saved with the extractor
    assert extractor((small, small_coordinates), sampling="random")["attention_mask"][0].tolist() == [1] * 5 + [0] * 3
    assert CremaPointCloudFeatureExtractor(**extractor.to_dict()).sampling == "reference"
    with pytest.raises(ValueError, match="Unknown point sampling"):
        CremaPointCloudFeatureExtractor(sampling="fps")


def test_voxels_are_found_in_the_reference_sibling_folder(tmp_path):
    features, coordinates = _scene(12)
    feature_folder = tmp_path / "voxelized_features_sam_nonzero_preprocess"
    voxel_folder = tmp_path / "voxelized_voxels_sam_nonzero_preprocess"
    feature_folder.mkdir()
    voxel_folder.mkdir()
    torch.save(torch.from_numpy(features), feature_folder / "scene0000_00.pt")
    np.save(voxel_folder / "scene0000_00.npy", coordinates)
    loaded_features, loaded_coordinates = load_point_cloud(feature_folder / "scene0000_00.pt")
    np.testing.assert_array_equal(loaded_features, features)
    np.testing.assert_array_equal(loaded_coordinates, coordinates)
    out = CremaPointCloudFeatureExtractor(num_points=16, sampling="reference")(str(feature_folder / "scene0000_00.pt"))
    np.testing.assert_array_equal(out["coordinates"][0, :12], coordinates)


# ------------------------------------------------------------------------------------------------ depth images
def _zoedepth_colorize_by_hand(depth: np.ndarray) -> np.ndarray:
    """ZoeDepth's colorize(depth, cmap="gray_r") re-derived: 2nd/85th percentiles of the valid pixels, x = (d - p2)
    / (p85 - p2), matplotlib's lookup (index int(256 x), 1.0 -> 255, below 0 -> 0, above -> 255) into its gray_r
    bytes table (1 - linspace(0, 1, 256)) * 255 truncated; -99 pixels grey 128; RGB channels equal."""
    valid = depth != -99
    low, high = np.percentile(depth[valid], 2), np.percentile(depth[valid], 85)
    x = (depth - low) / (high - low)
    index = np.where(x == 1.0, 255, np.floor(x * 256))
    index = np.clip(index, 0, 255).astype(int)
    table = ((1 - np.linspace(0, 1, 256)) * 255).astype(np.uint8)
    grey = np.where(valid, table[index], 128).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


def test_zoedepth_colorize_percentiles_and_reversed_grey():
    depth = np.array([
        [0.5, 1.0, 1.5, 2.0, 2.5],
        [3.0, 3.5, 4.0, 4.5, 5.0],
        [6.0, 7.0, 8.0, 9.0, 10.0],
        [12.0, 15.0, -99, 20.0, 40.0],
    ])
    image = colorize_depth(depth)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, _zoedepth_colorize_by_hand(depth))
    assert image[0, 0, 0] == 255 and image[3, 4, 0] == 0  # near = bright, beyond the 85th percentile = black
    assert image[3, 2].tolist() == [128, 128, 128]  # the invalid value -99
    assert image[1, 2, 0] > image[2, 2, 0]  # nearer is brighter
    np.testing.assert_array_equal(render_depth(depth.astype(np.float32), "zoedepth"),
                                  _zoedepth_colorize_by_hand(depth.astype(np.float32)))
    assert not np.array_equal(render_depth(depth, "gray"), image)  # min-max grey stays the default
    assert (colorize_depth(np.full((2, 3), 4.0)) == 255).all()  # constant map: all zeros -> white


def test_zoedepth_colorize_matches_matplotlib():
    matplotlib = pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        depth = (rng.random((31, 47)) * 8 + 0.2).astype(dtype)
        valid = depth[depth != -99]
        x = (depth - np.percentile(valid, 2)) / (np.percentile(valid, 85) - np.percentile(valid, 2))
        expected = matplotlib.colormaps["gray_r"](x, bytes=True)[..., :3]
        np.testing.assert_array_equal(colorize_depth(depth), expected)


def test_zoedepth_rendering_through_the_video_processor():
    frames = np.random.default_rng(1).integers(0, 255, (4, 12, 10, 3), dtype=np.uint8)

    def depth_of(batch):  # a stand-in depth model: depth from the frame's pixel values
        return [f[:, :, 0].astype(np.float32) / 10 + 0.5 for f in batch]

    video = CremaVideoProcessor(num_frames=2, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                depth_colormap="zoedepth")
    rendered = video.render_clip(frames, modalities=("depth",), depth_estimator=depth_of)
    indices = rendered.frame_indices["depth"]
    for image, index in zip(rendered.images["depth"], indices):
        np.testing.assert_array_equal(image, _zoedepth_colorize_by_hand(depth_of([frames[index]])[0]))


def test_zoedepth_padding_is_cut_from_the_prediction():
    # source 8 x 18: ZoeDepth pads int(sqrt(8 / 2) * 3) = 6 rows and int(sqrt(18 / 2) * 3) = 9 columns per side
    prediction = torch.arange(20 * 36, dtype=torch.float32).reshape(20, 36)
    cropped = remove_zoedepth_padding(prediction, (8, 18))
    assert cropped.shape == (8, 18)
    torch.testing.assert_close(cropped, prediction[6:14, 9:27])


class _StubDepthModel(torch.nn.Module):
    """Depth = the red channel times a ramp along the width (not mirror-symmetric), at the input's size."""

    def __init__(self, model_type: str):
        super().__init__()
        self.config = type("Config", (), {"model_type": model_type})()

    def forward(self, pixel_values):
        ramp = torch.arange(1, pixel_values.shape[-1] + 1, dtype=torch.float32)
        return type("Output", (), {"predicted_depth": pixel_values[:, 0] * ramp})()


class _StubImageProcessor:
    do_pad = True

    def __call__(self, images, return_tensors="pt"):
        return {"pixel_values": torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1).float() for i in images])}


@pytest.mark.parametrize("model_type, flips", [("zoedepth", True), ("dpt", False)])
def test_zoedepth_estimator_averages_with_the_flipped_image_and_cuts_the_padding(monkeypatch, model_type, flips):
    import transformers

    from crema_processing import DepthEstimator

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", lambda *a, **k: _StubImageProcessor())
    monkeypatch.setattr(transformers.AutoModelForDepthEstimation, "from_pretrained",
                        lambda *a, **k: _StubDepthModel(model_type))
    estimator = DepthEstimator("stub")
    assert (estimator.flip_average, estimator.removes_padding) == (flips, flips)
    frame = np.random.default_rng(2).integers(0, 255, (8, 18, 3), dtype=np.uint8)
    red = torch.from_numpy(frame[:, :, 0]).float()
    ramp = torch.arange(1, 19, dtype=torch.float32)
    # flip average: (red * ramp + flip(flip(red) * ramp)) / 2 = red * (ramp + reversed ramp) / 2 = red * 9.5
    expected = red * 9.5 if flips else red * ramp
    predicted = estimator._predict({"pixel_values": red[None, None].repeat(1, 3, 1, 1)})[0]
    torch.testing.assert_close(predicted, expected)
    depth = estimator([frame])[0]
    assert depth.shape == (8, 18)
    if not flips:  # same size, no padding to cut: the prediction itself
        np.testing.assert_allclose(depth, expected.numpy(), rtol=1e-5, atol=1e-3)
    else:  # the 8 x 18 prediction resized to the padded 20 x 36 source, then the 6-row / 9-column border cut
        padded = torch.nn.functional.interpolate(expected[None, None], size=(20, 36), mode="bicubic",
                                                 align_corners=False)[0, 0]
        np.testing.assert_allclose(depth, padded[6:14, 9:27].numpy(), rtol=1e-5, atol=1e-3)
