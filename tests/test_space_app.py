"""The Gradio Space's functions without a browser (spaces_demo/app.py): the example is answered by crema-tiny
through the CREMA pipeline, the contribution chart's data, a bad file as a readable `gr.Error`, the modality
checkboxes from the model's config, and the served app's upload limit and queue."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import httpx
import pytest
from PIL import Image

from served_space import free_port, served_space

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces_demo"
EXAMPLE = json.loads((REPO / "examples" / "example.json").read_text())


@pytest.fixture(scope="module")
def space_app():
    """spaces_demo/app.py as a module (it is a Space's app file, not part of the package)."""
    spec = importlib.util.spec_from_file_location("crema_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(space_app) -> Path:
    return Path(space_app.default_model())


def example_path(name: str) -> str:
    return str(SPACE / "examples" / name)


def find_component(demo: gr.Blocks, elem_id: str):
    matches = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id]
    assert len(matches) == 1, f"one component with elem_id {elem_id!r} expected, found {len(matches)}"
    return matches[0]


def choice_values(component) -> list:
    return [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in component.choices]


# ---------------------------------------------------------------------------------------------- the example
def test_the_space_ships_the_example_clip_unchanged():
    for name in (EXAMPLE["clip"], EXAMPLE["thermal"], EXAMPLE["depth"], EXAMPLE["normal"]):
        assert (SPACE / "examples" / name).read_bytes() == (REPO / "examples" / name).read_bytes()


def test_the_example_is_answered_by_crema_tiny(space_app):
    answer, details, chart, frames = space_app.answer_clip(
        example_path(EXAMPLE["clip"]), EXAMPLE["question"], ", ".join(EXAMPLE["options"]),
        thermal=example_path(EXAMPLE["thermal"]), depth=example_path(EXAMPLE["depth"]),
        normal=example_path(EXAMPLE["normal"]),
    )
    assert answer == EXAMPLE["answer"]
    assert "video, audio, flow, depth, normal, thermal" in details  # the modalities used
    assert "likelihood" in details  # each option's score is shown
    # one bar per supportive modality (the major modality, video, is what the others are left out against)
    assert sorted(chart["modality"]) == ["audio", "depth", "flow", "normal", "thermal"]
    assert all(math.isfinite(value) for value in chart["contribution"])
    captions = [caption for _, caption in frames]
    for name in ("video", "flow", "depth", "normal", "thermal"):
        assert any(caption.startswith(f"{name} ") for caption in captions), captions
    assert all(isinstance(image, Image.Image) and min(image.size) >= 64 for image, _ in frames)


def test_the_shown_answer_is_the_pipelines(space_app):
    """No answer is made up in the UI: an open question shows what the pipeline generates."""
    video, thermal = example_path(EXAMPLE["clip"]), example_path(EXAMPLE["thermal"])
    answer, _, _, _ = space_app.answer_clip(video, "What color is the object?", "", thermal=thermal)
    pipe = space_app.load_pipeline(space_app.default_model())
    expected = pipe({"video": video, "question": "What color is the object?", "thermal": thermal})["answer"]
    assert answer == expected and answer.strip()


# ---------------------------------------------------------------------------------------------- pure helpers
def test_contributions_frame_is_the_chart_data(space_app):
    frame = space_app.contributions_frame({"flow": 1, "thermal": -0.25})
    assert list(frame.columns) == ["modality", "contribution"]
    assert frame.to_dict("records") == [{"modality": "flow", "contribution": 1.0},
                                        {"modality": "thermal", "contribution": -0.25}]
    assert frame["contribution"].dtype == float  # an int value must not turn the axis into categories
    empty = space_app.contributions_frame(None)
    assert len(empty) == 0 and empty["contribution"].dtype == float


def test_options_are_split_on_commas_and_newlines(space_app):
    assert space_app.parse_options("yes, no") == ["yes", "no"]
    assert space_app.parse_options("red\ngreen, blue\n\n") == ["red", "green", "blue"]
    assert space_app.parse_options("  ") is None and space_app.parse_options(None) is None


def test_default_model(space_app, monkeypatch):
    monkeypatch.setenv("CREMA_MODEL", "someone/their-crema")
    assert space_app.default_model() == "someone/their-crema"
    monkeypatch.delenv("CREMA_MODEL")
    packaged = Path(space_app.default_model())
    assert packaged.name == "crema-tiny" and (packaged / "config.json").is_file()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "modeling_crema" else real_find_spec(name, *a))
    assert space_app.default_model() == space_app.DEFAULT_HUB_MODEL  # a deployed Space, without the package


# ------------------------------------------------------------------------------------------------ bad input
def test_a_bad_file_is_one_readable_line(space_app, tmp_path):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_text("this is a text file, not a video\n")
    with pytest.raises(gr.Error) as caught:
        space_app.answer_clip(str(bad), EXAMPLE["question"], "yes, no", thermal=example_path(EXAMPLE["thermal"]))
    message = caught.value.message
    assert "\n" not in message and "Traceback" not in message
    assert bad.name in message and str(tmp_path) not in message  # the file is named, its temp folder is not


def test_missing_inputs_are_refused_before_the_model(space_app):
    with pytest.raises(gr.Error, match="Upload a video"):
        space_app.answer_clip(None, "Is the object hot?")
    with pytest.raises(gr.Error, match="question"):
        space_app.answer_clip(example_path(EXAMPLE["clip"]), "  ")
    with pytest.raises(gr.Error, match="at least one modality"):
        space_app.answer_clip(example_path(EXAMPLE["clip"]), "Is the object hot?", modalities=[])


# -------------------------------------------------------------------------------------- models, checkboxes
def test_modality_checkboxes_come_from_the_config(space_app, tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    names = [spec["name"] for spec in config["modalities"]]
    checkboxes = find_component(space_app.build_demo(str(tiny_dir)), "modalities")
    assert choice_values(checkboxes) == names and checkboxes.value == names


def test_another_model_gets_its_own_checkboxes(space_app, tiny_dir, tmp_path):
    other = tmp_path / "other-crema"
    other.mkdir()
    config = json.loads((tiny_dir / "config.json").read_text())
    config["modalities"] = [spec for spec in config["modalities"] if spec["name"] in ("video", "flow")]
    config["modalities"].append({**config["modalities"][-1], "name": "ir"})
    (other / "config.json").write_text(json.dumps(config))
    assert space_app.modality_choices(str(other)) == ["video", "flow", "ir"]
    update = space_app.switch_model(str(other))
    assert choice_values(update) == ["video", "flow", "ir"] and update.value == ["video", "flow", "ir"]

    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(gr.Error, match="not a CREMA model"):
        space_app.switch_model(str(other))
    with pytest.raises(gr.Error, match="Could not load the model .*: no such folder"):
        space_app.switch_model(str(tmp_path / "nothing-here"))


def test_an_allow_list_limits_the_models(space_app, tiny_dir, tmp_path, monkeypatch):
    """Loading a model runs its repo's code: with $CREMA_SPACE_MODELS set, other models are refused."""
    other = tmp_path / "other-crema"
    shutil.copytree(tiny_dir, other)
    monkeypatch.setenv("CREMA_SPACE_MODELS", "crema-hf/crema-tiny")
    with pytest.raises(gr.Error, match="only serves"):
        space_app.switch_model(str(other))
    shipped = ["video", "audio", "flow", "depth", "normal", "thermal"]
    assert space_app.modality_choices(space_app.default_model()) == shipped
    monkeypatch.delenv("CREMA_SPACE_MODELS")
    assert space_app.modality_choices(str(other)) == shipped


class RecordingPipeline:
    """Stands in for a loaded pipeline to see what the UI passes to it (the answers above use the real one)."""

    def __init__(self):
        self.calls = []

    def __call__(self, inputs, **kwargs):
        self.calls.append((inputs, kwargs))
        return {"answer": "recorded", "option_index": 0, "option_scores": [-0.1, -2.0], "scoring": "likelihood",
                "modalities": kwargs["modalities"] or ["video"], "contributions": {}, "modality_frames": {}, "notes": []}


def test_only_selected_modalities_and_their_files_reach_the_pipeline(space_app, tiny_dir, monkeypatch):
    recorder = RecordingPipeline()
    monkeypatch.setattr(space_app, "_pipelines", OrderedDict({str(tiny_dir): recorder}))
    answer, details, _, _ = space_app.answer_clip(
        example_path(EXAMPLE["clip"]), " Is the object hot? ", "yes\nno", ["video", "flow"], str(tiny_dir),
        thermal=example_path(EXAMPLE["thermal"]),
    )
    inputs, kwargs = recorder.calls[-1]
    assert inputs == {"video": example_path(EXAMPLE["clip"]), "question": "Is the object hot?",
                      "options": ["yes", "no"]}  # no thermal: its adapter is not selected
    assert kwargs["modalities"] == ["video", "flow"] and kwargs["return_modality_frames"] is True
    assert answer == "recorded" and "Not used (adapter not selected): thermal" in details

    space_app.answer_clip(example_path(EXAMPLE["clip"]), "Is it hot?", "", None, str(tiny_dir),
                          thermal=example_path(EXAMPLE["thermal"]))
    inputs, kwargs = recorder.calls[-1]
    assert inputs["thermal"] == example_path(EXAMPLE["thermal"]) and "options" not in inputs
    assert kwargs["modalities"] is None and kwargs["contributions"] is True  # all: the pipeline drops missing ones


class SlowPipeline(RecordingPipeline):
    """Counts how many calls run at once."""

    def __init__(self):
        super().__init__()
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, inputs, **kwargs):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(0.3)
        with self.lock:
            self.running -= 1
        return super().__call__(inputs, **kwargs)


def test_one_model_answers_one_question_at_a_time(space_app, tiny_dir, monkeypatch):
    """The model's adapter routing is state on the shared model: two visitors must not run it at once."""
    slow = SlowPipeline()
    monkeypatch.setattr(space_app, "_pipelines", OrderedDict({str(tiny_dir): slow}))
    ask = lambda: space_app.answer_clip(example_path(EXAMPLE["clip"]), "Is it hot?", "yes, no", None,
                                        str(tiny_dir), thermal=example_path(EXAMPLE["thermal"]))
    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(slow.calls) == 3 and slow.most_at_once == 1


def test_pipelines_are_cached(space_app, tiny_dir):
    assert space_app.load_pipeline(str(tiny_dir)) is space_app.load_pipeline(f" {tiny_dir} ")


# ------------------------------------------------------------------------------------------ queue, serving
def test_the_queue_is_bounded(space_app, tiny_dir):
    demo = space_app.build_demo(str(tiny_dir))
    assert demo._queue.max_size == space_app.QUEUE_SIZE
    assert demo._queue.default_concurrency_limit == space_app.CONCURRENCY_LIMIT


def test_served_from_the_repo_root_with_an_upload_limit(tmp_path):
    """`python spaces_demo/app.py` from the repo root, port from GRADIO_SERVER_PORT: the page is served and an
    upload over the limit is refused by the server (413) before it reaches the model."""
    port = free_port()
    env = {"GRADIO_SERVER_PORT": str(port), "CREMA_SPACE_MAX_FILE_SIZE": "2kb"}
    with served_space(["spaces_demo/app.py"], REPO, port, tmp_path / "app.log", env) as url:
        page = httpx.get(url, timeout=5)
        assert "CREMA" in page.text
        small = httpx.post(url + "gradio_api/upload", files={"files": ("small.mp4", b"0" * 1000)}, timeout=30)
        assert small.status_code == 200, small.text
        big = httpx.post(url + "gradio_api/upload", files={"files": ("big.mp4", b"0" * 5000)}, timeout=30)
        assert big.status_code == 413, big.text
