"""CREMA-Synth: the written files decode, every answer agrees with the rendered evidence measured independently on
the decoded files (object colour / shape / position in RGB, depth grey level, thermal brightness, normal colours,
beeps counted in the audio track, Farneback flow), the answers that need depth or flow are not predictable from
what RGB shows (object size, object position in the sampled frames), seeds reproduce the data, splits are
disjoint, and the `crema synth` command pieces work."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from crema_processing.audio import CremaAudioFeatureExtractor, load_audio
from crema_processing.frame_sampling import uniform_segment_indices
from crema_processing.optical_flow import compute_flow_image
from crema_processing.processing_crema import CremaProcessor
from crema_processing.video_processing_crema import CremaVideoProcessor
from crema_training.synth import QUESTION_TYPES, generate_crema_synth, load_crema_synth, processor_inputs
from crema_training.synth.cli import add_synth_arguments, run_synth
from crema_training.synth.scene import reference_indices, segment_bounds

SEED = 123
SMALL = {"train": 6, "validation": 3, "test": 3}
FPS, SECONDS, SAMPLED = 8.0, 2.0, 4
NUM_FRAMES = int(FPS * SECONDS)

# Independent colour model of the test: hue (degrees) of each colour name, measured on saturated pixels.
HUES = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 225.0}
WORDS = {"one": 1, "two": 2, "three": 3}


# --------------------------------------------------------------------------------------------- decoding
def decode_video(path: str) -> tuple[np.ndarray, float]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate)


def decode_audio(path: str) -> tuple[np.ndarray, int, int, str]:
    """(samples, sampling rate, channels, codec) of the first audio track, decoded with PyAV directly."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        context = stream.codec_context
        codec, rate, channels = context.name, context.sample_rate, context.channels
        samples = np.concatenate([frame.to_ndarray() for frame in container.decode(stream)], axis=1)
    return samples[0].astype(np.float32), rate, channels, codec


def colour_masks(frame: np.ndarray, min_pixels: int = 4) -> dict[str, np.ndarray]:
    """Saturated pixels grouped by nearest hue: {colour name: mask} for the colours present."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.float32)
    hue, saturated = hsv[..., 0] * 2.0, (hsv[..., 1] > 110) & (hsv[..., 2] > 70)
    names = list(HUES)
    distance = np.stack([np.minimum(abs(hue - h), 360 - abs(hue - h)) for h in HUES.values()])
    nearest = distance.argmin(axis=0)
    masks = {}
    for k, name in enumerate(names):
        mask = saturated & (nearest == k)
        if mask.sum() >= min_pixels:
            masks[name] = mask
    return masks


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def shape_of(mask: np.ndarray) -> str:
    """Fill ratio of the bounding box: square ~1, circle ~pi/4, triangle ~1/2."""
    ys, xs = np.nonzero(mask)
    ratio = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return "square" if ratio > 0.88 else "circle" if ratio > 0.66 else "triangle"


def direction_of(vector: np.ndarray) -> str:
    dx, dy = vector
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def hot_colour(rgb: np.ndarray, thermal: np.ndarray) -> str:
    """The colour (in RGB) of the object under the brightest pixel of the thermal frame."""
    heat = cv2.GaussianBlur(luma(thermal), (3, 3), 0)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    masks = colour_masks(rgb)
    return min(masks, key=lambda name: np.linalg.norm(centroid(masks[name]) - [x, y]))


def count_bursts(samples: np.ndarray, rate: int) -> int:
    """Energy bursts: 10 ms RMS above a third of the peak, bursts closer than 50 ms merged."""
    hop = rate // 100
    rms = np.sqrt(np.mean(samples[: len(samples) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() / 3)
    return 1 + int(np.sum(np.diff(active) > 5)) if active.size else 0


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    dataset = generate_crema_synth(out, SMALL, seed=SEED, fps=FPS, seconds=SECONDS, num_workers=0, progress=False)
    return out, dataset


@pytest.fixture(scope="module")
def rows(synth):
    return [row for split in synth[1].values() for row in split]


@pytest.fixture(scope="module")
def decoded(rows):
    cache: dict[str, np.ndarray] = {}
    for row in rows:
        for name in ("video", "depth", "thermal", "normal"):
            if row[name] not in cache:
                cache[row[name]] = decode_video(row[name])[0]
    return cache


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    """60 clips at 32 px, 8 frames (two per sampled segment), rendered by two worker processes."""
    out = tmp_path_factory.mktemp("synth_stats")
    params = dict(seed=5, image_size=32, fps=4.0, seconds=2.0, progress=False)
    dataset = generate_crema_synth(out, {"train": 60}, num_workers=2, **params)
    return out, dataset["train"], params


def of_type(rows, *types):
    return [row for row in rows if row["question_type"] in types]


# ------------------------------------------------------------------------------------------------ files
def test_files_exist_decode_and_line_up(synth, rows):
    out, dataset = synth
    assert set(dataset) == {"train", "validation", "test"}
    assert (out / "dataset" / "dataset_dict.json").exists() and (out / "synth_config.json").exists()
    clips = {row["clip_id"]: row for row in rows}
    assert len(clips) == sum(SMALL.values())
    for clip_id, row in clips.items():
        for name, folder in (("video", "clips"), ("depth", "depth"), ("thermal", "thermal"), ("normal", "normal")):
            assert Path(row[name]) == (out / folder / f"{clip_id}.mp4").resolve()
            frames, rate = decode_video(row[name])
            assert frames.shape == (NUM_FRAMES, 64, 64, 3) and rate == FPS
        samples, rate, channels, codec = decode_audio(row["video"])
        assert (rate, channels, codec) == (16000, 1, "aac")
        assert abs(len(samples) - SECONDS * 16000) <= 2048  # AAC frames of 1024 samples
        with av.open(row["depth"]) as container:
            assert not container.streams.audio
        # the processor's own audio reader gets the track back
        waveform = load_audio(row["video"])
        assert abs(waveform.size - SECONDS * 16000) <= 2048 and np.abs(waveform).max() > 0.2


def test_rows_are_well_formed(rows):
    assert {row["question_type"] for row in rows} == set(QUESTION_TYPES)
    for row in rows:
        assert row["options"][row["answer_index"]] == row["answer"]
        assert len(set(row["options"])) == len(row["options"]) >= 2
        assert row["id"].startswith(row["clip_id"]) and row["split"] in row["clip_id"]
        assert row["needed_modalities"] and set(row["needed_modalities"]) <= {
            "video", "audio", "flow", "depth", "normal", "thermal"}
        scene = json.loads(row["scene"])
        assert len(scene["objects"]) == row["num_objects"]
    assert len({row["id"] for row in rows}) == len(rows)
    needs = {row["question_type"]: row["needed_modalities"] for row in rows}
    assert needs["motion"] == ["flow"] and needs["hot_color"] == ["video", "thermal"]
    assert needs["beeps"] == ["audio"] and needs["orientation"] == ["normal"] and needs["depth"] == ["depth"]


def test_processor_reads_every_modality(rows, tokenizer):
    processor = CremaProcessor(
        tokenizer,
        video_processor=CremaVideoProcessor(num_frames=SAMPLED, size={"height": 32, "width": 32}),
        feature_extractor=CremaAudioFeatureExtractor(segment_length=64),
    )
    row = of_type(rows, "hot_color")[0]
    inputs = processor(**processor_inputs(row), return_frame_indices=True)
    for name in ("video", "flow", "depth", "thermal", "normal"):
        assert inputs[f"{name}_pixel_values"].shape == (1, SAMPLED, 3, 32, 32)
        assert inputs[f"{name}_frame_indices"][0].tolist() == uniform_segment_indices(NUM_FRAMES, SAMPLED)
    assert inputs["audio_input_values"].shape[:3] == (1, 2, 64)
    assert (inputs["labels"] != -100).any()
    only = processor(**processor_inputs(rows[:2], modalities=["thermal", "flow"]))
    assert "video_pixel_values" not in only and only["thermal_pixel_values"].shape[0] == 2


def test_segment_indices_are_the_processors():
    for frames, segments in ((16, 4), (15, 4), (8, 4), (30, 3), (12, 1), (10, 4)):
        bounds = segment_bounds(frames, segments)
        assert reference_indices(bounds, frames) == uniform_segment_indices(frames, segments)
        assert bounds[0] == 0 and bounds[-1] == frames


# ----------------------------------------------------------------------------- answers vs. evidence
def test_colour_and_shape_answers_match_rgb(rows, decoded):
    checked = 0
    for row in of_type(rows, "color", "shape", "color_of_shape", "shape_of_color"):
        frame = decoded[row["video"]][0]
        masks = colour_masks(frame)
        assert len(masks) == row["num_objects"]
        if row["question_type"] == "color":
            assert list(masks) == [row["answer"]]
        elif row["question_type"] == "shape":
            assert shape_of(next(iter(masks.values()))) == row["answer"]
        elif row["question_type"] == "shape_of_color":
            colour = row["question"].split(" the ")[1].split()[0]
            assert shape_of(masks[colour]) == row["answer"]
        else:
            shape = row["question"].rstrip("?").split()[-1]
            assert shape_of(masks[row["answer"]]) == shape
        checked += 1
    assert checked >= 12


def _target_colour(row, rgb, thermal) -> str:
    if row["question_type"] == "hot_motion":
        return hot_colour(rgb, thermal)
    if row["question_type"] == "color_motion":
        return row["question"].split(" the ")[1].split()[0]
    return next(iter(colour_masks(rgb)))


def test_motion_answers_match_frames_and_farneback_flow(rows, decoded):
    bounds = np.linspace(0, NUM_FRAMES, SAMPLED + 1).astype(int)
    sampled = uniform_segment_indices(NUM_FRAMES, SAMPLED)
    checked = 0
    for row in of_type(rows, "motion", "color_motion", "hot_motion"):
        frames, thermal = decoded[row["video"]], decoded[row["thermal"]]
        colour = _target_colour(row, frames[0], thermal[0])
        for start, stop, index in zip(bounds[:-1], bounds[1:], sampled):
            first, last = colour_masks(frames[start])[colour], colour_masks(frames[stop - 1])[colour]
            shift = centroid(last) - centroid(first)
            assert direction_of(shift) == row["answer"] and np.abs(shift).max() > 3
            # the flow the processor derives at this sampled frame (Farneback with the next frame)
            _, flow = compute_flow_image(frames[index], frames[index + 1])
            mask = colour_masks(frames[index])[colour]
            assert direction_of(flow[mask].mean(axis=0)) == row["answer"]
        checked += 1
    assert checked >= 6


def test_depth_answers_match_depth_render(rows, decoded):
    def distance_at(row, colour):
        """Metres at the object's centre, from the documented render: grey = 255 (1 - (z - 0.5) / 10)."""
        x, y = np.round(centroid(colour_masks(decoded[row["video"]][0])[colour])).astype(int)
        grey = decoded[row["depth"]][0][y, x].mean()
        return 0.5 + 10.0 * (1.0 - grey / 255.0)

    checked = 0
    for row in of_type(rows, "depth", "near_color"):
        colours = list(colour_masks(decoded[row["video"]][0]))
        if row["question_type"] == "depth":
            distance = distance_at(row, colours[0])
            assert (distance < 3.0) == (row["answer"] == "near") and 0.8 < distance < 6.5
        else:
            assert min(colours, key=lambda c: distance_at(row, c)) == row["answer"]
        checked += 1
    assert checked >= 6


def test_thermal_answers_match_heat_render(rows, decoded):
    checked = 0
    for row in of_type(rows, "hot", "hot_color"):
        rgb, thermal = decoded[row["video"]][3], decoded[row["thermal"]][3]
        if row["question_type"] == "hot":
            mask = next(iter(colour_masks(rgb).values()))
            object_heat, background_heat = luma(thermal)[mask].mean(), np.median(luma(thermal)[~mask])
            assert (object_heat - background_heat > 80) == (row["answer"] == "yes")
        else:
            assert hot_colour(rgb, thermal) == row["answer"]
        checked += 1
    assert checked >= 6


def test_orientation_answers_match_normal_render(rows, decoded):
    checked = 0
    for row in of_type(rows, "orientation", "color_orientation"):
        rgb = decoded[row["video"]][0]
        colour = row["question"].split(" the ")[2].split()[0] if row["question_type"] != "orientation" else None
        masks = colour_masks(rgb)
        mask = masks[colour] if colour else next(iter(masks.values()))
        x, y = np.round(centroid(mask)).astype(int)
        normal = decoded[row["normal"]][0][y, x].astype(np.float32) / 255.0 * 2.0 - 1.0  # (x right, y down, z)
        assert normal[2] > 0.3 and direction_of(normal[:2]) == row["answer"]
        background = decoded[row["normal"]][0][0, 0]
        assert abs(int(background[0]) - 128) < 8 and abs(int(background[1]) - 128) < 8 and background[2] > 240
        checked += 1
    assert checked >= 6


def test_audio_answers_match_the_track(rows):
    checked = 0
    for row in of_type(rows, "beeps", "pitch"):
        samples, rate, _, _ = decode_audio(row["video"])
        if row["question_type"] == "beeps":
            assert count_bursts(samples, rate) == WORDS[row["answer"]]
        else:
            frequency = peak_frequency(samples, rate)
            assert (frequency > 800) == (row["answer"] == "high") and 250 < frequency < 2100
        checked += 1
    assert checked == 2 * sum(SMALL.values())


def test_each_track_has_its_own_noise_floor(rows):
    """The noise floor measured between the beeps of the decoded track is the scene's (AAC keeps it within a few %),
    and it differs from clip to clip: a model must not learn one level as part of every beep."""
    floors = {}
    for row in rows:
        scene = json.loads(row["scene"])
        samples, rate, _, _ = decode_audio(row["video"])
        quiet = np.ones(len(samples), bool)
        quiet[: int(0.05 * rate)] = quiet[-int(0.05 * rate):] = False
        for onset, duration in scene["beeps"]:
            quiet[max(0, int((onset - 0.03) * rate)) : int((onset + duration + 0.03) * rate)] = False
        measured = float(samples[quiet].std())
        assert measured == pytest.approx(scene["noise_amplitude"], rel=0.15), row["clip_id"]
        floors[row["clip_id"]] = measured
    assert max(floors.values()) > 4 * min(floors.values()), floors


def test_beep_counter_and_colour_model_are_sound():
    """The test's own measurements on hand-made input: 1-3 tone bursts are counted, colours are told apart."""
    rate = 16000
    for count in (1, 2, 3):
        samples = np.zeros(rate * 2, np.float32)
        for k in range(count):
            start = int((0.2 + 0.5 * k) * rate)
            samples[start : start + 2000] = 0.5 * np.sin(np.arange(2000) * 2 * np.pi * 400 / rate)
        assert count_bursts(samples, rate) == count
    frame = np.full((16, 64, 3), 35, np.uint8)
    for k, rgb in enumerate([(215, 45, 40), (45, 185, 65), (45, 80, 225), (230, 210, 45)]):
        frame[4:12, 16 * k + 4 : 16 * k + 12] = rgb
    assert list(colour_masks(frame)) == ["red", "yellow", "green", "blue"]
    assert [int(centroid(m)[0]) for m in colour_masks(frame).values()] == [7, 55, 23, 39]


# ---------------------------------------------------------------------- no shortcut through RGB
def best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of the best single threshold on `values` (either polarity) for binary `labels` (..., n): a
    threshold sits between two different values, so tied values are never split."""
    order = np.argsort(values, kind="stable")
    ordered, sorted_labels = values[order], labels[..., order].astype(np.float64)
    n = values.size
    positives_below = np.concatenate([np.zeros(labels.shape[:-1] + (1,)), np.cumsum(sorted_labels, -1)], -1)
    negatives_below = np.arange(n + 1) - positives_below
    correct = negatives_below + (positives_below[..., -1:] - positives_below)  # predict positive from k on
    allowed = np.concatenate([[True], ordered[1:] != ordered[:-1], [True]])
    return (np.maximum(correct, n - correct)[..., allowed] / n).max(-1)


def chance_level(values: np.ndarray, labels: np.ndarray, groups: np.ndarray, permutations: int = 1000) -> float:
    """The 99th percentile of the best-threshold accuracy when the labels are shuffled between groups (the samples
    of one object share its label): what a classifier reaches by luck on data where `values` carry no label."""
    rng = np.random.default_rng(0)
    names, index = np.unique(groups, return_inverse=True)
    group_labels = np.array([labels[index == g][0] for g in range(len(names))])
    shuffled = np.stack([rng.permutation(group_labels)[index] for _ in range(permutations)])
    return float(np.percentile(best_threshold_accuracy(values, shuffled), 99))


def test_near_far_is_not_predictable_from_object_size(stats):
    _, split, _ = stats
    areas, near = [], []
    for row in of_type(split, "depth", "near_color"):
        masks = colour_masks(decode_video(row["video"])[0][0], min_pixels=2)
        for colour, mask in masks.items():
            areas.append(mask.sum())
            near.append(row["answer"] in ("near", colour))
    areas, near = np.asarray(areas, np.float64), np.asarray(near)
    assert len(areas) >= 80 and 0.35 < near.mean() < 0.65
    accuracy = best_threshold_accuracy(areas, near)
    luck = chance_level(areas, near, np.arange(len(areas)))
    assert accuracy <= luck < 0.72, f"object size predicts near/far with accuracy {accuracy:.2f} (luck: {luck:.2f})"
    # the statistic has power: labels that follow size are found at once
    assert best_threshold_accuracy(areas, areas > np.median(areas)) == 1.0


def test_motion_is_not_visible_in_the_sampled_rgb_frames(stats):
    """Where the object is in a sampled frame, and how it moves from one sampled frame to the next, does not give
    the direction away; the Farneback flow at the same sampled frames does."""
    _, split, params = stats
    frames_per_clip = int(params["fps"] * params["seconds"])
    sampled = uniform_segment_indices(frames_per_clip, SAMPLED)
    positions, tracks, steps, flows, labels = [], [], [], [], []
    for track, row in enumerate(of_type(split, "motion", "color_motion")):
        frames = decode_video(row["video"])[0]
        colour = _target_colour(row, frames[0], None)
        path = [centroid(colour_masks(frames[i], min_pixels=2)[colour]) for i in sampled]
        for k, index in enumerate(sampled):
            _, flow = compute_flow_image(frames[index], frames[index + 1])
            mask = colour_masks(frames[index], min_pixels=2)[colour]
            flows.append(direction_of(flow[mask].mean(axis=0)))
            positions.append(path[k])
            tracks.append(track)
            labels.append(row["answer"])
            if k:
                steps.append(direction_of(path[k] - path[k - 1]) == row["answer"])
    positions, tracks, labels = np.asarray(positions), np.asarray(tracks), np.asarray(labels)
    assert len(labels) >= 200
    assert np.mean(np.asarray(flows) == labels) > 0.95
    agreement = np.mean(steps)  # 4 directions: 0.25 by chance
    assert agreement < 0.4, f"object displacement between sampled frames matches the motion {agreement:.0%}"
    for axis, (negative, positive) in ((0, ("left", "right")), (1, ("up", "down"))):
        keep = np.isin(labels, (negative, positive))
        values, is_positive = positions[keep, axis], labels[keep] == positive
        accuracy = best_threshold_accuracy(values, is_positive)
        luck = chance_level(values, is_positive, tracks[keep])
        assert accuracy <= luck < 0.75, (
            f"the position in a sampled frame tells {negative} from {positive} with accuracy {accuracy:.2f} "
            f"(luck: {luck:.2f})"
        )


# ------------------------------------------------------------------------ seeds, splits, workers
def _content_hash(row) -> str:
    digest = hashlib.sha256()
    for name in ("video", "depth", "thermal", "normal"):
        digest.update(decode_video(row[name])[0].tobytes())
    digest.update(decode_audio(row["video"])[0].tobytes())
    return digest.hexdigest()


def _row_hash(row) -> str:
    fields = {k: v for k, v in row.items() if k not in ("video", "depth", "thermal", "normal")}
    fields.update({k: Path(row[k]).name for k in ("video", "depth", "thermal", "normal")})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def test_same_seed_same_data_other_seed_other_data(synth, tmp_path):
    _, dataset = synth
    again = generate_crema_synth(tmp_path / "a", {"train": 2}, seed=SEED, fps=FPS, seconds=SECONDS,
                                 num_workers=0, progress=False)["train"]
    first_two = dataset["train"].filter(lambda row: row["clip_id"] in {"train-000000", "train-000001"})
    assert [_row_hash(r) for r in again] == [_row_hash(r) for r in first_two]
    assert _content_hash(again[0]) == _content_hash(first_two[0])
    other = generate_crema_synth(tmp_path / "b", {"train": 1}, seed=SEED + 1, fps=FPS, seconds=SECONDS,
                                 num_workers=0, progress=False)["train"]
    assert _content_hash(other[0]) != _content_hash(again[0])
    assert [_row_hash(r) for r in other] != [_row_hash(r) for r in again if r["clip_id"] == "train-000000"]


def test_worker_processes_give_the_same_data_as_one_process(stats, tmp_path):
    _, split, params = stats  # rendered by two worker processes
    serial = generate_crema_synth(tmp_path, {"train": 2}, num_workers=0, **params)["train"]
    parallel = split.filter(lambda row: row["clip_id"] in {"train-000000", "train-000001"})
    assert [_row_hash(r) for r in serial] == [_row_hash(r) for r in parallel]
    assert _content_hash(serial[-1]) == _content_hash(parallel[-1])


def test_splits_are_disjoint(synth, rows, decoded):
    _, dataset = synth
    seen: dict[str, set] = {}
    for split, data in dataset.items():
        clips = {row["clip_id"] for row in data}
        assert len(clips) == SMALL[split]
        files = {row[name] for row in data for name in ("video", "depth", "thermal", "normal")}
        content = {hashlib.sha256(decoded[row["video"]].tobytes()).hexdigest() for row in data}
        assert len(content) == SMALL[split]
        for other, (other_clips, other_files, other_content) in seen.items():
            assert not clips & other_clips and not files & other_files and not content & other_content
        seen[split] = (clips, files, content)
    # the saved copy keeps paths relative to the output folder
    relative = load_crema_synth(synth[0], absolute_paths=False)["test"][0]
    assert relative["video"] == f"clips/{relative['clip_id']}.mp4"


def test_continuous_motion_moves_across_the_whole_clip(tmp_path):
    data = generate_crema_synth(tmp_path, {"test": 2}, seed=3, motion="continuous", question_types=["motion",
                                "color_motion"], num_workers=0, progress=False)["test"]
    for row in data:
        frames = decode_video(row["video"])[0]
        colour = _target_colour(row, frames[0], None)
        shift = centroid(colour_masks(frames[-1])[colour]) - centroid(colour_masks(frames[0])[colour])
        assert direction_of(shift) == row["answer"] and np.abs(shift).max() > 8


def test_object_radius_sets_the_size_of_the_objects_in_the_decoded_frames(tmp_path):
    """Objects drawn with object_radius=(0.16, 0.2) cover, in the decoded RGB, about the area their shape and radius
    give (circle pi r^2, square (1.7 r)^2, triangle with circumradius 1.3 r), and far more than the default's."""
    def areas(folder, **kwargs):
        data = generate_crema_synth(folder, {"test": 6}, seed=5, question_types=["shape"], num_workers=0,
                                    progress=False, **kwargs)["test"]
        measured, expected = [], []
        for row in data:
            (obj,) = json.loads(row["scene"])["objects"]
            frame = decode_video(row["video"])[0][0]
            measured.append(next(iter(colour_masks(frame).values())).sum())
            r = obj["radius"]
            expected.append({"circle": np.pi * r * r, "square": (1.7 * r) ** 2,
                             "triangle": 3 * np.sqrt(3) / 4 * (1.3 * r) ** 2}[obj["shape"]])
            yield obj["radius"] / 64, measured[-1], expected[-1]

    large = list(areas(tmp_path / "large", object_radius=(0.16, 0.2)))
    assert all(0.16 <= fraction <= 0.2 for fraction, _, _ in large)
    assert all(abs(area - want) <= 0.2 * want for _, area, want in large), large
    default = list(areas(tmp_path / "default"))
    assert all(0.06 <= fraction <= 0.12 for fraction, _, _ in default)
    assert min(area for _, area, _ in large) > max(area for _, area, _ in default)
    config = json.loads((tmp_path / "large" / "synth_config.json").read_text())
    assert config["object_radius"] == [0.16, 0.2]


# ------------------------------------------------------------------------------- API and command line
def test_bad_settings_are_refused_with_the_parameter_named(tmp_path):
    cases = [
        (dict(image_size=33), "image_size"),
        (dict(seconds=0.5), "seconds"),
        (dict(fps=2.0), "fps"),
        (dict(question_types=["colour"]), "question types"),
        (dict(num_clips_per_split={"train": 0}), "nothing to generate"),
        (dict(num_clips_per_split={"a/b": 1}), "Split name"),
        (dict(object_radius=(0.2, 0.1)), "object_radius"),
        (dict(object_radius=(0.1, 0.4)), "object_radius"),
        # two large objects do not fit side by side in one frame
        (dict(object_radius=(0.2, 0.25), question_types=["hot_color"]), "smaller --object-radius"),
    ]
    for kwargs, words in cases:
        kwargs.setdefault("num_clips_per_split", {"train": 1})
        with pytest.raises(ValueError, match=words):
            generate_crema_synth(tmp_path / "x", progress=False, num_workers=0, **kwargs)
    generate_crema_synth(tmp_path / "y", {"train": 1}, question_types=["hot_color"], num_workers=0, progress=False)
    with pytest.raises(ValueError, match="overwrite"):
        generate_crema_synth(tmp_path / "y", {"train": 1}, num_workers=0, progress=False)
    # only two-object templates asked: every clip has two objects
    assert load_crema_synth(tmp_path / "y")["train"][0]["num_objects"] == 2
    # one-object templates and audio ones (asked about any clip): every clip has one object
    generate_crema_synth(tmp_path / "z", {"train": 6}, question_types=["color", "beeps"], num_workers=0,
                         progress=False)
    rows = load_crema_synth(tmp_path / "z")["train"]
    assert set(rows["num_objects"]) == {1} and set(rows["question_type"]) == {"color", "beeps"}


def test_command_line_pieces(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="crema synth")
    add_synth_arguments(parser)
    argv = ["--out", str(tmp_path / "cli"), "--train", "1", "--validation", "1", "--test", "0", "--seed", "4",
            "--image-size", "32", "--fps", "4", "--quiet", "--question-types", "beeps,pitch,color"]
    assert run_synth(parser.parse_args(argv)) == 0
    assert "CREMA-Synth: 2 clips" in capsys.readouterr().out
    dataset = load_crema_synth(tmp_path / "cli")
    assert set(dataset) == {"train", "validation"}  # a split of 0 clips is left out
    assert {row["question_type"] for row in dataset["train"]} <= {"beeps", "pitch", "color"}
    config = json.loads((tmp_path / "cli" / "synth_config.json").read_text())
    assert config["seed"] == 4 and config["image_size"] == 32
    assert run_synth(parser.parse_args(argv)) == 2  # refuses to overwrite
    assert "crema synth: error:" in capsys.readouterr().err
    assert run_synth(parser.parse_args(argv[:-2] + ["--image-size", "30", "--overwrite"])) == 2
    assert run_synth(parser.parse_args(argv + ["--object-radius", "0.3", "0.1", "--overwrite"])) == 2
    assert "object_radius" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--question-types", "smell"])
    # building the parser imports nothing heavy
    code = ("import sys, argparse; from crema_training.synth.cli import add_synth_arguments; "
            "add_synth_arguments(argparse.ArgumentParser()); "
            "print(sorted(m for m in ('numpy', 'av', 'cv2', 'datasets', 'torch') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
