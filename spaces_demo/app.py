"""CREMA Gradio Space: ask a question about a clip and see which modalities the answer leaned on.

Inference goes through the CREMA pipeline only (`transformers.pipeline(model=..., trust_remote_code=True)`, the
same path as `crema answer`), so the Space shows exactly what the command line would answer. The UI logic lives
in small functions (`answer_clip`, `contributions_frame`, `modality_choices`, ...) that the tests call without a
browser; `build_demo()` only wires them to components.

Run: `python spaces_demo/app.py [--port 7860] [--model DIR_OR_HUB_ID]` (from the repo root or from inside
spaces_demo/; `GRADIO_SERVER_PORT` works too). Default model: `$CREMA_MODEL`, else crema-tiny shipped with the
installed `modeling_crema` package, else the Hub repo `DEFAULT_HUB_MODEL` (what a deployed Space loads).
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import pandas as pd
from PIL import Image

logger = logging.getLogger("crema_space")

#: The Hub repo a deployed Space loads when neither $CREMA_MODEL nor the `modeling_crema` package is there:
#: crema-tiny pushed with its remote code (`model.push_to_hub("crema-hf/crema-tiny")`).
DEFAULT_HUB_MODEL = "crema-hf/crema-tiny"
APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
EXAMPLE_VIDEO = EXAMPLES_DIR / "test-000001.mp4"
#: The example's companion renders (the example needs thermal; depth and normal are there for their adapters).
EXAMPLE_COMPANIONS = {name: EXAMPLES_DIR / f"test-000001-{name}.mp4" for name in ("thermal", "depth", "normal")}
EXAMPLE_THERMAL = EXAMPLE_COMPANIONS["thermal"]
EXAMPLE_QUESTION = "Is the object hot?"
EXAMPLE_OPTIONS = "yes, no"

#: Companion files the pipeline accepts besides the clip, with the label of their upload box. Flow (and, with a
#: depth model, depth and normals) are derived from the clip when no file is given.
COMPANION_LABELS = {
    "thermal": "Thermal clip",
    "depth": "Depth clip (else derived from the clip, with a depth model)",
    "normal": "Surface-normal clip (else derived from the clip, with a depth model)",
    "audio": "Audio file (else the clip's own track)",
    "touch": "Touch clip",
    "point_cloud": "Point cloud",
}
#: A CPU Space has 2 cores: two answers at a time, and a bounded waiting line instead of an ever-growing one.
CONCURRENCY_LIMIT = int(os.environ.get("CREMA_SPACE_CONCURRENCY", "2"))
QUEUE_SIZE = int(os.environ.get("CREMA_SPACE_QUEUE_SIZE", "16"))
#: Uploads beyond this are refused by the server before they reach the model (short clips are all CREMA reads).
MAX_FILE_SIZE = os.environ.get("CREMA_SPACE_MAX_FILE_SIZE", "50mb")
#: Loaded pipelines kept in memory (switching back to a model is then instant).
PIPELINE_CACHE_SIZE = 3
#: Preview frames are tiny (crema-tiny reads 64 px): enlarged, without smoothing, so they can be seen.
PREVIEW_SIDE = 160


# ------------------------------------------------------------------------------------------------- models
def default_model() -> str:
    """$CREMA_MODEL, else the packaged crema-tiny (when `modeling_crema` is installed), else the Hub repo."""
    if os.environ.get("CREMA_MODEL"):
        return os.environ["CREMA_MODEL"]
    if importlib.util.find_spec("modeling_crema") is not None:
        try:
            from crema_training.answer import default_model_path
        except ImportError:  # modeling_crema alone (without the training package): same folder
            from importlib.resources import files

            return str(files("modeling_crema") / "pretrained" / "crema-tiny")
        return default_model_path()
    return DEFAULT_HUB_MODEL


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an error (Hub and loading errors run to several lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _allowed_models() -> set[str] | None:
    """$CREMA_SPACE_MODELS (comma-separated): when set, the only models the textbox may load. Loading a model runs
    its repo's code (trust_remote_code), so a public Space should set it."""
    names = {name.strip() for name in os.environ.get("CREMA_SPACE_MODELS", "").split(",") if name.strip()}
    return names | {default_model()} if names else None


def read_model_config(model: str) -> dict[str, Any]:
    """The model's config.json as plain JSON, read without running any of its code, so that a folder or repo that
    is not a CREMA model is refused before `trust_remote_code` would execute what it ships."""
    model = model.strip()
    if not model:
        raise gr.Error("Enter a model: a local folder or a Hub id such as " + DEFAULT_HUB_MODEL)
    allowed = _allowed_models()
    if allowed is not None and model not in allowed:
        raise gr.Error(html.escape(f"This Space only serves: {', '.join(sorted(allowed))}"))
    local = Path(model).expanduser()
    try:
        if local.exists():
            path = local / "config.json"
            if not path.is_file():
                raise OSError(f"{model} has no config.json")
        elif model.startswith(("/", ".", "~")) or model.count("/") != 1:  # a path, not a namespace/name Hub id
            raise OSError(f"no such folder: {model}")
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, "config.json"))
        config = json.loads(path.read_text())
    except Exception as error:  # missing folder or repo, offline, no access, damaged JSON: one line either way
        raise gr.Error(html.escape(f"Could not load the model {model}: {_one_line(error)}")) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "crema":
        raise gr.Error(html.escape(f"{model} is not a CREMA model (model_type {model_type!r})"))
    return config


def modality_choices(model: str) -> list[str]:
    """The model's modality adapters in the config's order (major modality first): the checkbox choices."""
    config = read_model_config(model)
    return [spec["name"] for spec in config.get("modalities", [])]


def _make_pipeline(model: str):
    """The one inference path: the model's own CREMA pipeline (its remote code), as `crema answer` uses it."""
    from transformers import pipeline

    return pipeline(model=model, trust_remote_code=True)


_pipelines: OrderedDict[str, Any] = OrderedDict()
_pipelines_lock = threading.Lock()
#: One call at a time per model: CREMA routes its Q-Former's LoRA to one modality at a time by setting state on
#: the shared model (`route_to_modality`), so two threads answering with the same model would mix adapters.
_call_locks: dict[str, threading.Lock] = {}


def model_call_lock(model: str) -> threading.Lock:
    """The lock that serialises answers of one loaded model (different models still answer in parallel)."""
    with _pipelines_lock:
        return _call_locks.setdefault(model.strip(), threading.Lock())


def load_pipeline(model: str):
    """The CREMA pipeline of `model`, loaded once and kept (LRU, `PIPELINE_CACHE_SIZE` models); one load at a
    time, so two visitors asking at once do not load the same model twice."""
    model = model.strip()
    with _pipelines_lock:
        if model in _pipelines:
            _pipelines.move_to_end(model)
            return _pipelines[model]
        read_model_config(model)  # refuses non-CREMA folders before their code runs
        try:
            pipe = _make_pipeline(model)
        except Exception as error:  # any loading failure (missing files, remote code, no pipeline) is one line
            logger.exception("loading %s failed", model)
            raise gr.Error(html.escape(f"Could not load the model {model}: {_one_line(error)}")) from None
        _pipelines[model] = pipe
        while len(_pipelines) > PIPELINE_CACHE_SIZE:
            _pipelines.popitem(last=False)
        return pipe


# ----------------------------------------------------------------------------------------- inputs, outputs
def parse_options(text: str | None) -> list[str] | None:
    """Options from a textbox, separated by newlines or commas; None (an open question) when there are none."""
    if not text:
        return None
    options = [part.strip() for line in text.splitlines() for part in line.split(",")]
    options = [option for option in options if option]
    return options or None


def contributions_frame(contributions: dict[str, float] | None) -> pd.DataFrame:
    """The bar chart's data: one row per supportive modality, how much the answer's negative log-likelihood rises
    without it (positive = it supported the answer)."""
    contributions = contributions or {}
    return pd.DataFrame({  # typed columns: an empty or all-integer frame must still plot as numbers
        "modality": pd.Series(list(contributions), dtype=str),
        "contribution": pd.Series([float(value) for value in contributions.values()], dtype=float),
    })


def gallery_items(modality_frames: dict[str, Sequence[Image.Image]] | None) -> list[tuple[Image.Image, str]]:
    """(enlarged frame, caption) for each frame of each modality the model read, modality by modality."""
    items = []
    for name, frames in (modality_frames or {}).items():
        for index, frame in enumerate(frames):
            image = frame.convert("RGB")
            scale = max(1, PREVIEW_SIDE // max(image.size))
            if scale > 1:
                image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
            items.append((image, f"{name} · frame {index + 1}"))
    return items


def _score_lines(result: dict[str, Any], options: Sequence[str] | None) -> list[str]:
    """The details under the answer: modalities used, each option's score, the pipeline's notes."""
    lines = [f"- **Modalities used:** {', '.join(result.get('modalities') or []) or 'none reported'}"]
    scores = result.get("option_scores") or []
    if options and scores:
        chosen = result.get("option_index")
        scored = ", ".join(
            f"{'**' if i == chosen else ''}{html.escape(option)} {score:.3f}{'**' if i == chosen else ''}"
            for i, (option, score) in enumerate(zip(options, scores))
        )
        lines.append(f"- **Option scores** ({result.get('scoring') or 'score'}, higher is better): {scored}")
    lines += [f"- {html.escape(str(note))}" for note in result.get("notes") or []]
    return lines


def _readable(error: BaseException, uploads: dict[str, str]) -> str:
    """One line for the page: the pipeline's message, with upload temp paths shortened to the file's name."""
    message = _one_line(error)
    for path in uploads.values():
        message = message.replace(path, Path(path).name)
    return html.escape(message)


def answer_clip(
    video: str | None,
    question: str,
    options_text: str | None = "",
    modalities: Sequence[str] | None = None,
    model: str | None = None,
    thermal: str | None = None,
    depth: str | None = None,
    normal: str | None = None,
    audio: str | None = None,
    touch: str | None = None,
    point_cloud: str | None = None,
) -> tuple[str, str, pd.DataFrame, list[tuple[Image.Image, str]]]:
    """Answers with the CREMA pipeline: (answer, details markdown, contributions frame, gallery items).

    Files for modalities that are not selected are not passed (the details say so). With every adapter selected, one
    whose file is missing is left out (the pipeline's note says so); a selected subset must have its files. A bad
    file or a missing input raises `gr.Error` with the pipeline's one-line message, which the page shows."""
    model = (model or "").strip() or default_model()
    if not video:
        raise gr.Error("Upload a video clip first.")
    if not question or not question.strip():
        raise gr.Error("Type a question about the clip.")
    available = modality_choices(model)
    selected = [name for name in (modalities if modalities is not None else available) if name in available]
    if not selected:
        raise gr.Error("Pick at least one modality adapter.")
    files = {"thermal": thermal, "depth": depth, "normal": normal, "audio": audio, "touch": touch,
             "point_cloud": point_cloud}
    companions = {name: path for name, path in files.items() if path and name in selected}
    ignored = sorted(name for name, path in files.items() if path and name not in selected)
    options = parse_options(options_text)

    pipe = load_pipeline(model)
    inputs: dict[str, Any] = {"video": video, "question": question.strip(), **companions}
    if options:
        inputs["options"] = options
    try:
        with model_call_lock(model):
            # every adapter ticked: the pipeline leaves out those whose file is missing, and says so in its notes
            subset = None if selected == available else selected
            result = pipe(inputs, modalities=subset, contributions=len(selected) > 1, return_modality_frames=True)
    except (ValueError, OSError) as error:  # a bad or missing file, an input the model cannot read
        message = _readable(error, {"video": video, **companions})
        logger.warning("refused: %s", message)
        raise gr.Error(message, print_exception=False) from None

    details = _score_lines(result, options)
    if ignored:
        details.append(f"- Not used (adapter not selected): {', '.join(ignored)} file")
    return (
        str(result["answer"]),
        "\n".join(details),
        contributions_frame(result.get("contributions")),
        gallery_items(result.get("modality_frames")),
    )


def switch_model(model: str) -> gr.CheckboxGroup:
    """New checkboxes for another model's adapters (all selected); the pipeline loads on the first question."""
    choices = modality_choices(model)
    return gr.CheckboxGroup(choices=choices, value=choices)


# --------------------------------------------------------------------------------------------------- page
def build_demo(model: str | None = None) -> gr.Blocks:
    """The page: inputs on the left, answer, contribution chart and modality frames on the right."""
    model = model or default_model()
    try:
        choices = modality_choices(model)
        load_note = ""
    except gr.Error as error:  # e.g. the Hub default while offline: the page still opens and says why
        choices, load_note = [], f"**Model not available:** {error.message}"

    with gr.Blocks(title="CREMA: video-language QA with modality adapters", analytics_enabled=False) as demo:
        gr.Markdown(
            "# CREMA\nAsk a question about a clip. Each modality (optical flow, thermal, depth, audio, ...) is read "
            "by its own adapter; the chart shows how much each supportive modality mattered for the answer "
            "(the rise of the answer's negative log-likelihood when it is left out)."
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(value=str(EXAMPLE_VIDEO), label="Video clip", sources=["upload"], height=280,
                                 elem_id="video-input")
                question = gr.Textbox(value=EXAMPLE_QUESTION, label="Question", elem_id="question")
                options = gr.Textbox(value=EXAMPLE_OPTIONS, label="Options (comma- or newline-separated; "
                                     "empty for an open question)", elem_id="options")
                with gr.Row():
                    modalities = gr.CheckboxGroup(choices=choices, value=choices, label="Modality adapters to use",
                                                  elem_id="modalities")
                    model_box = gr.Textbox(value=model, label="Model path or Hub id (a CREMA model; Enter loads "
                                           "its adapters)", elem_id="model")
                ask = gr.Button("Answer", variant="primary", elem_id="ask")
                with gr.Accordion("Extra modality files", open=True):
                    with gr.Row():
                        companions = {
                            name: gr.File(value=str(EXAMPLE_COMPANIONS[name]) if name in EXAMPLE_COMPANIONS else None,
                                          label=label,
                                          height=110, min_width=200, elem_id=f"{name}-input")
                            for name, label in COMPANION_LABELS.items()
                        }
            with gr.Column():
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                details = gr.Markdown(load_note, elem_id="details")
                chart = gr.BarPlot(value=contributions_frame({}), x="modality", y="contribution",
                                   title="Contribution of each supportive modality", elem_id="contributions",
                                   y_title="NLL rise without it")
                gallery = gr.Gallery(label="Frames the model read (per modality)", columns=4, height="auto",
                                     object_fit="contain", elem_id="frames")
        gr.Examples(
            examples=[[str(EXAMPLE_VIDEO), *map(str, EXAMPLE_COMPANIONS.values()), EXAMPLE_QUESTION, EXAMPLE_OPTIONS]],
            inputs=[video, *(companions[name] for name in EXAMPLE_COMPANIONS), question, options],
            cache_examples=False,
        )
        ask.click(
            answer_clip,
            inputs=[video, question, options, modalities, model_box, *companions.values()],
            outputs=[answer, details, chart, gallery],
        )
        model_box.submit(switch_model, inputs=[model_box], outputs=[modalities])
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def main(argv: Sequence[str] | None = None) -> None:
    """Serves the page; the port comes from --port, else $GRADIO_SERVER_PORT, else Gradio's 7860."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", default=None, help="address (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: $CREMA_MODEL or crema-tiny)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    demo = build_demo(args.model)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE,
                allowed_paths=[str(EXAMPLES_DIR)])


if __name__ == "__main__":
    main()
