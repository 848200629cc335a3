"""crema-tiny on clips that CREMA-Synth did not make: other frame sizes, frame rates, codecs, containers and
backgrounds, steady motion instead of CREMA-Synth's cuts, drawn and encoded here with PyAV (tests/unseen_clips.py).
The answers are checked against what the clips were drawn with."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from unseen_clips import UnseenClip, write_clip

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "modeling_crema" / "pretrained" / "crema-tiny"

CLIPS = (
    UnseenClip("plain-mpeg4", 96, 96, 12, 2.0, "mpeg4", ".mp4", "plain", "red", "circle", "left", True, True, "up"),
    UnseenClip("gradient-vp9", 128, 96, 25, 2.0, "libvpx-vp9", ".webm", "gradient", "blue", "square", "up", False,
               False, "right"),
    UnseenClip("noise-h264", 80, 64, 10, 3.0, "libx264", ".mkv", "noise", "yellow", "circle", "down", True, False,
               "left"),
    UnseenClip("plain-ffv1", 160, 120, 30, 1.5, "ffv1", ".mkv", "gradient", "green", "square", "right", False, True,
               "down"),
    UnseenClip("noise-vp8", 112, 112, 15, 2.0, "libvpx", ".webm", "noise", "green", "triangle", "up", True, True,
               "right"),
    UnseenClip("plain-h264-wide", 144, 80, 24, 2.5, "libx264", ".mp4", "plain", "blue", "circle", "right", True,
               False, "up"),
    UnseenClip("gradient-mpeg4", 72, 96, 20, 2.0, "mpeg4", ".avi", "gradient", "red", "triangle", "down", False, True,
               "left"),
    UnseenClip("noise-ffv1", 64, 48, 6, 3.0, "ffv1", ".mkv", "noise", "yellow", "square", "left", False, False,
               "down"),
)

#: question type -> (question, options in crema-tiny's order, the ground truth of a clip)
QUESTIONS = {
    "color": ("What colour is the object?", ["red", "green", "blue", "yellow"], lambda c: c.color),
    "shape": ("What shape is the object?", ["circle", "square", "triangle"], lambda c: c.shape),
    "motion": ("Which way does the object move?", ["left", "right", "up", "down"], lambda c: c.direction),
    "depth": ("Is the object near the camera or far from it?", ["near", "far"], lambda c: "near" if c.near else "far"),
    "hot": ("Is the object hot?", ["yes", "no"], lambda c: "yes" if c.hot else "no"),
    "orientation": ("Which way does the surface of the object face?", ["up", "down", "left", "right"],
                    lambda c: c.facing),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unseen")
    return {clip.name: write_clip(folder, clip, seed=index) for index, clip in enumerate(CLIPS)}


@pytest.fixture(scope="module")
def answers(written):
    from crema_training.answer import answer_question, load_model_and_processor

    model, processor = load_model_and_processor(MODEL)
    results = {}
    for clip in CLIPS:
        paths = written[clip.name]
        companions = {name: str(paths[name]) for name in ("thermal", "depth", "normal")}
        for kind, (question, options, truth) in QUESTIONS.items():
            answer = answer_question(model, processor, str(paths["video"]), question, options, companions)
            results[clip.name, kind] = (answer.text, truth(clip))
    return results


def test_the_clips_are_what_they_claim(written):
    """Sizes, rates and codecs really differ from CREMA-Synth's (64x64 H.264 at 8 fps)."""
    for clip in CLIPS:
        with av.open(str(written[clip.name]["video"])) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == (clip.width, clip.height)
            assert stream.codec_context.name == {"libvpx-vp9": "vp9", "libvpx": "vp8", "libx264": "h264"}.get(
                clip.codec, clip.codec)
            assert round(float(stream.average_rate)) == clip.fps
            assert sum(1 for _ in container.decode(stream)) == round(clip.fps * clip.seconds)


def _right(answers, kinds) -> tuple[int, int]:
    pairs = [pair for (_, kind), pair in answers.items() if kind in kinds]
    return sum(answer == truth for answer, truth in pairs), len(pairs)


@pytest.mark.parametrize("kind", ["color", "shape"])
def test_colour_and_shape_are_read_from_unseen_clips(answers, kind):
    """From the RGB frames alone, at most one miss in 8 (crema-tiny reads every colour and 7 of 8 shapes)."""
    right, total = _right(answers, (kind,))
    assert right >= total - 1, {key: pair for key, pair in answers.items() if key[1] == kind}


def test_every_supportive_modality_transfers_to_unseen_clips(answers):
    """Motion (from the flow derived from the clip), near / far, heat and surface orientation together, well above
    chance (12 of 32), on renders drawn here (crema-tiny answers 31 of 32)."""
    kinds = ("motion", "depth", "hot", "orientation")
    right, total = _right(answers, kinds)
    assert right >= 27, {key: pair for key, pair in answers.items() if key[1] in kinds}
