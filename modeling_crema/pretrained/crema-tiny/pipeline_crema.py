"""`crema-video-question-answering`: the one inference path of CREMA, as a `transformers` pipeline.

    pipe = pipeline(model="modeling_crema/pretrained/crema-tiny", trust_remote_code=True)
    pipe({"video": "clip.mp4", "question": "Is the object hot?", "options": ["yes", "no"], "thermal": "t.mp4"})
    # {"answer": "yes", "option_index": 0, "option_scores": [...], "scoring": "likelihood",
    #  "modalities": ["video", "flow", "thermal"], "notes": []}

It ships with the model's remote code (a saved model folder has this file and `custom_pipelines` in its
config.json), so it imports nothing but torch, transformers, numpy and PIL: the processor comes as an instance
(loaded from the model folder), never by importing `crema_processing`. `crema answer` runs through it too.

Multiple choice is answered by scoring the options (`scoring=`):

- "likelihood" (default): rank the options by the log-likelihood of their whole target `Option {L}` under the
  model, teacher-forced (`option_log_likelihoods`; robust to whatever the first generated token is);
- "reference": the reference's prediction (DESIGN §3): teacher-force "Option", then take the argmax over the
  option-letter tokens of the scores at the next step, the second answer step (`option_letter_scores`). The
  reference decodes greedily and reads the scores of its second step, which follow "Option" for a model trained
  on these targets; this is what the paper's multiple-choice numbers measure.

Open-ended questions are answered by beam search with DESIGN §3's settings (or a prompt preset's).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence, Sized
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.utils import logging

logger = logging.get_logger(__name__)

TASK = "crema-video-question-answering"
#: How multiple choice is scored (see the module docstring).
SCORING_MODES = ("likelihood", "reference")
#: The option letters of the targets `Option A`, `Option B`, ... (the processor's `prompts.OPTION_LETTERS`; this
#: file ships alone with the model and cannot import the processor's modules).
OPTION_LETTERS = "ABCDEFGHIJ"
#: Modalities the processor derives from the RGB clip itself (unless a precomputed render is given).
DERIVED_FROM_VIDEO = ("flow", "depth", "normal")
#: Companion inputs the pipeline knows by name, whether or not the model has an adapter for them.
KNOWN_COMPANIONS = ("audio", "thermal", "touch", "depth", "normal", "point_cloud", "flow")
#: Keys of an input that are not companion files.
EXAMPLE_KEYS = ("video", "question", "options", "situation")
#: The processor outputs that belong to the prompt (the others are the clip's modality inputs).
PROMPT_KEYS = ("input_ids", "attention_mask")
#: Input tensors padded to the batch's longest prompt (everything else must have the same shape to be batched).
PROMPT_TENSORS = ("input_ids", "attention_mask")
DEPTH_EXAMPLE = "e.g. depth-anything/Depth-Anything-V2-Small-hf or Intel/dpt-hybrid-midas"
AUDIO_ENCODER_EXAMPLE = "e.g. MIT/ast-finetuned-audioset-10-10-0.4593"
#: Errors of the processor that mean an input file cannot be used (decoding, parsing, unpickling).
UNREADABLE_INPUT_ERRORS = (ValueError, RuntimeError, EOFError, pickle.UnpicklingError)


# ------------------------------------------------------------------------------------------ input checks
class InputHints:
    """How a caller passes each input, for the errors about a missing or unreadable one: the pipeline names the
    keys of its input dict; `crema answer` subclasses it to name its command-line flags."""

    def source(self, name: str) -> str:
        """Where input `name` ("video", "thermal", ...) came from, e.g. `input "thermal"`."""
        return f'input "{name}"'

    def missing(self, name: str) -> str:
        """The end of "the model has a 'thermal' adapter..." when that modality's input is missing."""
        return f': pass its file as input "{name}", or answer without it (modalities=[...])'

    def depth_model(self, name: str) -> str:
        """How to give a depth or normal adapter its input when the processor has no depth-estimation model."""
        return (f'pass a precomputed {name} render as input "{name}", or give the processor a depth-estimation model '
                f"(pipe.processor.video_processor.depth_model_name_or_path = DIR_OR_ID, {DEPTH_EXAMPLE})")

    def audio_track(self) -> str:
        """How to give the audio adapter its input when the clip has no audio track."""
        return 'pass an audio file as input "audio"'

    def audio_encoder(self) -> str:
        """How to get a model whose audio adapter reads audio files."""
        return ("build the model with an audio encoder (`from_blip2(..., audio_encoder=DIR_OR_ID)` or `crema init "
                f"--audio-encoder DIR_OR_ID`, {AUDIO_ENCODER_EXAMPLE})")


def missing_input(
    model: Any, processor: Any, video: Any, companions: Mapping[str, Any], name: str, hints: InputHints
) -> str | None:
    """Why adapter `name` cannot get its input from this clip and these companions (a message that names the fix),
    or None when it can. Decodes nothing but the clip's stream list (for its audio track)."""
    clip_is_path = isinstance(video, (str, os.PathLike))
    encoder = model.config.modality(name)["encoder"]
    given = companions.get(name)
    if name == "video":
        return None
    if name in DERIVED_FROM_VIDEO and given is None:
        if name != "flow" and not processor.video_processor.has_depth_estimator:
            return f"the model has a {name!r} adapter, which needs a depth-estimation model: {hints.depth_model(name)}"
        return None
    if name == "audio":
        if encoder != "audio" or model.config.audio_config is None:
            return ("the model's 'audio' adapter takes precomputed audio features (the model has no audio encoder), "
                    f"so it cannot read audio from a file: {hints.audio_encoder()}")
        if given is None and (not clip_is_path or os.path.isdir(video) or not has_audio_stream(video)):
            clip = os.fspath(video) if clip_is_path else "clip"
            return f"the model has an 'audio' adapter but {clip} has no audio track: {hints.audio_track()}"
        if given is None:
            return None
    if given is None:
        return f"the model has a {name!r} adapter{hints.missing(name)}"
    return None


def check_inputs(
    model: Any,
    processor: Any,
    video: Any,
    companions: Mapping[str, Any],
    modalities: Sequence[str] | None = None,
    hints: InputHints | None = None,
) -> None:
    """Refuses what the model's adapters (those in `modalities`, default all) need but the inputs lack, before any
    decoding or model call; `hints` words the fix for the caller (input keys, or `crema answer`'s flags)."""
    hints = hints or InputHints()
    if isinstance(video, (str, os.PathLike)) and not os.path.exists(video):
        raise FileNotFoundError(f"no such file or folder: {os.fspath(video)} ({hints.source('video')})")
    for name in model.config.modality_names:
        if modalities is not None and name not in modalities:
            continue
        reason = missing_input(model, processor, video, companions, name, hints)
        if reason is not None:
            raise ValueError(reason)
        if companions.get(name) is not None:
            require_file(companions[name], hints.source(name))


def available_modalities(
    model: Any, processor: Any, video: Any, companions: Mapping[str, Any], hints: InputHints
) -> tuple[list[str], list[str]]:
    """(the adapters that can get their input, a note per one that cannot): without `modalities=`, a supportive
    modality without its input (no thermal file, no audio track, no depth model or render) is answered without,
    and the note says why and how to add it. The fusion's major modality is never left out."""
    config = model.config
    major = (config.fusion_modalities or config.modality_names)[0]
    used, notes = [], []
    for name in config.modality_names:
        reason = None if name == major else missing_input(model, processor, video, companions, name, hints)
        if reason is None:
            used.append(name)
        else:
            notes.append(f"answered without {name!r}: {reason}")
    return used, notes


def require_file(value: Any, source: str) -> None:
    """A companion given as a path must exist (arrays and waveforms from Python pass through)."""
    if isinstance(value, (str, os.PathLike)) and not os.path.exists(value):
        raise FileNotFoundError(f"no such file: {os.fspath(value)} ({source})")


def _require_module(module: str, package: str, purpose: str) -> ModuleType:
    """An optional dependency, imported by name: transformers refuses remote code whose `import` lines name a
    package that is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the `{module}` module, which is not installed: `pip install {package}`.") \
            from error


def has_audio_stream(path: str | os.PathLike) -> bool:
    """Whether a media file has at least one audio stream (PyAV)."""
    av = _require_module("av", "av", "Reading audio tracks (PyAV)")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as error:
        raise ValueError(f"Cannot read media file '{path}' ({error}).") from error


def processor_arguments(companions: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, Any]:
    """Processor keyword arguments for the used modalities: derived ones from the clip unless a precomputed render
    is given, companion files by name."""
    arguments: dict[str, Any] = {"include_video": "video" in modalities}
    for name in modalities:
        given = companions.get(name)
        if name == "video":
            continue
        if name in DERIVED_FROM_VIDEO and given is None:
            arguments[name] = True
        elif name == "audio":
            arguments["audio"] = True if given is None else given  # a separate file, else the clip's own track
        elif name in ("thermal", "touch", "point_cloud"):
            arguments[name] = given
        else:  # any other visual modality, and precomputed depth / normal / flow renders
            arguments.setdefault("visual", {})[name] = given
    return arguments


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def unreadable_input(error: BaseException, files: Mapping[str, Any], hints: InputHints) -> ValueError:
    """A one-line error naming the input file the processor could not use (or every file, when its message names
    none of them)."""
    message = _one_line(error)
    paths = {key: os.fspath(value) for key, value in files.items() if isinstance(value, (str, os.PathLike))}
    named = [f"{path} ({hints.source(key)})" for key, path in paths.items() if path in message]
    if named:
        return ValueError(f"could not read {named[0]}: {message}")
    listed = ", ".join(f"{path} ({hints.source(key)})" for key, path in paths.items()) or "the in-memory inputs"
    return ValueError(f"could not process {listed}: {message}")


# ------------------------------------------------------------------------------------ trained questions
def _template_pattern(template: str) -> re.Pattern:
    """A question template as a regular expression: `{slot}` matches one or more words; case, spacing and the
    final punctuation are free."""
    parts = re.split(r"\{[^}]*\}", " ".join(template.lower().split()).rstrip("?.! "))
    return re.compile(r"\s*" + r"\w[\w ]*?".join(re.escape(part) for part in parts) + r"\s*[?.!]*\s*")


def matching_template(templates: Sequence[Mapping[str, Any]], question: str) -> Mapping[str, Any] | None:
    """The first template the question is an instance of, or None."""
    text = " ".join(question.lower().split())
    return next((t for t in templates if _template_pattern(t["question"]).fullmatch(text)), None)


def question_notes(config: Any, question: str, options: Sequence[str] | None) -> list[str]:
    """Notes for a question outside the closed set the model was trained on (`config.question_templates`, e.g.
    crema-tiny's CREMA-Synth templates): it is still answered, with the model's best guess."""
    templates = getattr(config, "question_templates", None)
    if not templates:
        return []
    template = matching_template(templates, question)
    if template is None:
        return [f"the question {question!r} is outside the questions this model was trained on (its templates are in "
                "config.question_templates); the answer is its best guess"]
    trained = list(template.get("options") or [])
    if not options or not trained or list(options) == trained:
        return []
    if sorted(options) == sorted(trained):
        return [f"the model was trained with these options in the order {trained}; in another order its answer is "
                "less reliable"]
    return [f"the model was trained to answer this question with the options {trained}; the answer is its best "
            "guess among the options given"]


# ------------------------------------------------------------------------------------------ option scoring
def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _with_modalities(modalities: Sequence[str] | None) -> dict[str, Any]:
    """`modalities=` for the model only when a subset is asked for (None: every adapter, as before)."""
    return {} if modalities is None else {"modalities": list(modalities)}


@torch.no_grad()
def option_log_likelihoods(
    model: Any,
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    options: Sequence[str],
    modalities: Sequence[str] | None = None,
    prompt_preset: str | None = None,
) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities of each target `Option {L}` (one row per option) for one
    example."""
    return batched_option_log_likelihoods(model, processor, inputs, [options], modalities, prompt_preset)[0]


@torch.no_grad()
def batched_option_log_likelihoods(
    model: Any,
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    option_lists: Sequence[Sequence[str]],
    modalities: Sequence[str] | None = None,
    prompt_preset: str | None = None,
) -> list[torch.Tensor]:
    """`option_log_likelihoods` of B examples in one model call: each example's prompt is repeated once per option,
    with the option's target as labels (the examples may have different numbers of options); its clip is encoded once
    (`clip_index`)."""
    rows = [b for b, options in enumerate(option_lists) for _ in options]
    targets = [processor.build_target(index, options, prompt_preset=prompt_preset)
               for options in option_lists for index in range(len(options))]
    labels = processor.tokenizer(targets, padding=True, return_tensors="pt").input_ids
    labels[labels == processor.tokenizer.pad_token_id] = -100
    device = _device(model)
    index = torch.tensor(rows, device=device)
    prompts = {key: inputs[key].to(device).index_select(0, index) for key in PROMPT_KEYS if key in inputs}
    clips = {key: value.to(device) for key, value in inputs.items()
             if key not in PROMPT_KEYS and key not in ("labels", "decoder_input_ids")}
    labels = labels.to(device)
    logits = model(**prompts, **clips, clip_index=index, labels=labels, **_with_modalities(modalities)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    scores = (picked * (labels != -100)).sum(dim=-1).cpu()
    return list(scores.split([len(options) for options in option_lists]))


def option_letter_step(tokenizer: Any, num_options: int) -> tuple[list[int], list[int]]:
    """(the target prefix to teacher-force, the letter token ids): the targets `Option A`, `Option B`, ... share
    their tokens up to the first position where each has its own letter token; with a T5 tokenizer the prefix is
    `["▁Option"]` and the letters `▁A`, `▁B`, ... (ids 71, 272, 205, 309, 262 in Flan-T5's vocabulary, the
    reference's `answer_id`)."""
    targets = [f"Option {OPTION_LETTERS[i]}" for i in range(num_options)]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in targets]
    shortest = min(len(t) for t in ids)
    position = next((i for i in range(shortest) if len({t[i] for t in ids}) > 1), None)
    letters = [t[position] for t in ids] if position is not None else []
    if position is None or len(set(letters)) != num_options or any(t[:position] != ids[0][:position] for t in ids):
        raise ValueError(f"The tokenizer does not give each of the targets {targets} its own letter token.")
    return list(ids[0][:position]), letters


@torch.no_grad()
def option_letter_scores(
    model: Any,
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    num_options: int | Sequence[int],
    modalities: Sequence[str] | None = None,
) -> torch.Tensor:
    """The reference's multiple-choice scores (DESIGN §3): the decoder is teacher-forced with the decoder start
    token and "Option", and the log-probabilities of the option letters A, B, ... at the next step (the second
    answer step) are returned, (B, max options); options beyond an example's count are -inf. The prediction is
    their argmax (the reference takes the argmax of the same step's scores over its `answer_id` tokens).

    `inputs`: the processor's outputs for B examples (labels are ignored). `num_options`: the number of options,
    or one count per example."""
    counts = [int(num_options)] * next(iter(inputs.values())).shape[0] if isinstance(num_options, int) \
        else [int(c) for c in num_options]
    prefix, letters = option_letter_step(processor.tokenizer, max(counts))
    device = _device(model)
    model_inputs = {k: v.to(device) for k, v in inputs.items() if k not in ("labels", "decoder_input_ids")}
    start = model.config.text_config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start, *prefix]] * len(counts), dtype=torch.long, device=device)
    logits = model(**model_inputs, decoder_input_ids=decoder_input_ids, **_with_modalities(modalities)).logits
    scores = torch.log_softmax(logits[:, -1, :].float(), dim=-1)[:, letters].cpu()
    for row, count in enumerate(counts):
        scores[row, count:] = float("-inf")
    return scores


def score_options(
    model: Any,
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    options: Sequence[str],
    scoring: str = "likelihood",
    modalities: Sequence[str] | None = None,
) -> torch.Tensor:
    """One score per option of one example (higher = better): `option_log_likelihoods` for "likelihood",
    `option_letter_scores` for "reference"."""
    if scoring == "likelihood":
        return option_log_likelihoods(model, processor, inputs, options, modalities)
    if scoring == "reference":
        return option_letter_scores(model, processor, inputs, len(options), modalities)[0]
    raise ValueError(f"Unknown multiple-choice scoring {scoring!r}; choose one of {SCORING_MODES}.")


# ------------------------------------------------------------------------------------------------ previews
def pixel_values_to_images(pixel_values: torch.Tensor, video_processor: Any) -> list[Image.Image]:
    """(T, 3, H, W) normalised frames -> T RGB images, undoing the processor's rescale and mean/std: what the model
    got, for previews."""
    array = pixel_values.detach().float().cpu().numpy()
    if getattr(video_processor, "do_normalize", False):
        mean = np.asarray(video_processor.image_mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(video_processor.image_std, dtype=np.float32).reshape(1, -1, 1, 1)
        array = array * std + mean
    if getattr(video_processor, "do_rescale", False):
        array = array / float(video_processor.rescale_factor)
    array = np.clip(np.rint(array), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(frame) for frame in array]  # (H, W, 3) uint8: RGB


# ------------------------------------------------------------------------------------------------ pipeline
class CremaVideoQuestionAnsweringPipeline(Pipeline):
    """Answers a question about a clip with every modality adapter of a CREMA model (or a subset).

    Input: a dict `{"video": PATH, "question": TEXT}`, with optional `"options"` (a list: multiple choice, else
    open-ended), `"situation"` (SQA3D) and companion files by modality name: `"thermal"`, `"touch"`, `"depth"` /
    `"normal"` (precomputed renders, used instead of the depth model), `"audio"` (a separate audio file),
    `"point_cloud"`, or any other adapter's clip. A list of dicts gives a list of answers (`batch_size=` batches
    the model calls).

    Call parameters: `modalities` (a subset of the model's adapters), `contributions` (each supportive modality's
    leave-one-out contribution, `model.modality_contributions`), `return_modality_frames` (the frames each visual
    modality got, as PIL images), `scoring` ("likelihood" or "reference"), `prompt_preset`, `situation`,
    `num_beams`, `max_new_tokens`, and `input_hints` (an `InputHints`: how errors tell the caller to pass an input;
    `crema answer` names its flags).

    Output: `{"answer", "option_index", "option_scores", "scoring", "modalities", "notes"}`, plus
    `"contributions"` and `"modality_frames"` when asked for.
    """

    _load_processor = None  # optional for `pipeline()`, so that a missing one gets the error below
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "build_target"):
            raise ValueError(
                "The CREMA pipeline needs the model's CremaProcessor, and none was found or loaded with the model: "
                "save it beside the model (`processor.save_pretrained(model_folder)`, as `crema init` does) or pass "
                "`processor=` to `pipeline()`."
            )

    # -------------------------------------------------------------------------------------- parameters
    def _sanitize_parameters(
        self,
        modalities: Sequence[str] | str | None = None,
        contributions: bool | None = None,
        return_modality_frames: bool | None = None,
        scoring: str | None = None,
        prompt_preset: str | None = None,
        situation: str | None = None,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        input_hints: InputHints | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Checks the call parameters once per call (not per example) and routes them to the three steps."""
        preprocess: dict[str, Any] = {}
        forward: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if modalities is not None:
            modalities = self._check_modalities(modalities)
            preprocess["modalities"] = modalities  # each example's used modalities travel in its meta
        if scoring is not None:
            if scoring not in SCORING_MODES:
                raise ValueError(f"Unknown multiple-choice scoring {scoring!r}; choose one of {SCORING_MODES}.")
            forward["scoring"] = scoring
        if contributions is not None:
            forward["contributions"] = bool(contributions)
        if return_modality_frames is not None:
            preprocess["return_modality_frames"] = bool(return_modality_frames)
        if prompt_preset is not None:
            preprocess["prompt_preset"] = forward["prompt_preset"] = postprocess["prompt_preset"] = prompt_preset
        if situation is not None:
            preprocess["situation"] = situation
        if num_beams is not None:
            forward["num_beams"] = int(num_beams)
        if max_new_tokens is not None:
            forward["max_new_tokens"] = int(max_new_tokens)
        if input_hints is not None:
            preprocess["input_hints"] = input_hints
        return preprocess, forward, postprocess

    def _check_modalities(self, modalities: Sequence[str] | str) -> list[str]:
        """The requested subset in the model's order; an unknown name or a subset without the fusion's major
        modality is refused."""
        requested = [modalities] if isinstance(modalities, str) else list(modalities)
        config = self.model.config
        adapters = list(config.modality_names)
        unknown = [name for name in requested if name not in adapters]
        if unknown:
            raise ValueError(
                f"modalities={requested}: the model has no adapter for {', '.join(map(repr, unknown))} "
                f"(its adapters: {', '.join(adapters)}); name a subset of those."
            )
        if not requested:
            raise ValueError(f"modalities=[] names no modality; name a subset of the model's adapters: {adapters}.")
        fusion = config.fusion_modalities if config.use_fusion else None
        if fusion and fusion[0] not in requested:
            raise ValueError(
                f"modalities={requested} leaves out {fusion[0]!r}, the major modality of the model's fusion, which "
                f"it cannot answer without; add {fusion[0]!r}."
            )
        return [name for name in adapters if name in requested]

    # -------------------------------------------------------------------------------------- preprocess
    def preprocess(
        self,
        inputs: Mapping[str, Any],
        modalities: Sequence[str] | None = None,
        return_modality_frames: bool = False,
        prompt_preset: str | None = None,
        situation: str | None = None,
        input_hints: InputHints | None = None,
    ) -> dict[str, Any]:
        """Checks one example, then runs the processor on it (clip, derived modalities, companions, prompt)."""
        hints = input_hints or InputHints()
        if not isinstance(inputs, Mapping):
            raise ValueError(
                f'The CREMA pipeline takes a dict such as {{"video": PATH, "question": TEXT, "options": [...]}} (or a '
                f"list of them); got {type(inputs).__name__}."
            )
        adapters = list(self.model.config.modality_names)
        accepted = list(dict.fromkeys([*KNOWN_COMPANIONS, *adapters]))
        unknown = [key for key in inputs if key not in EXAMPLE_KEYS and key not in accepted]
        if unknown:
            raise ValueError(
                f"Unknown input key(s) {', '.join(map(repr, unknown))}: the input takes {', '.join(EXAMPLE_KEYS)} "
                f"and one file per modality ({', '.join(accepted)})."
            )
        video, question, options = inputs.get("video"), inputs.get("question"), inputs.get("options")
        if video is None:
            raise ValueError('The input has no "video": pass {"video": PATH, "question": TEXT, ...}.')
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f'The input needs a "question" (a non-empty string); got {question!r}.')
        if isinstance(options, str) or (options is not None and not all(isinstance(o, str) for o in options)):
            raise ValueError(
                f'"options" must be a list of strings (or absent for an open-ended question); got {options!r}.'
            )
        options = list(options) if options else None

        notes = question_notes(self.model.config, question, options)
        companions: dict[str, Any] = {}
        for key, value in inputs.items():
            if key in EXAMPLE_KEYS or value is None:
                continue
            if key not in adapters:
                notes.append(f'input "{key}" was ignored: the model has no {key!r} adapter (its adapters: '
                             f"{', '.join(adapters)})")
            elif modalities is not None and key not in modalities:
                notes.append(f'input "{key}" was ignored: modalities= leaves {key!r} out')
            else:
                companions[key] = value
        if modalities is None:  # every adapter that can get its input; the others are noted
            used, missing_notes = available_modalities(self.model, self.processor, video, companions, hints)
            notes += missing_notes
        else:  # asked for by name: each must get its input
            used = list(modalities)
        check_inputs(self.model, self.processor, video, companions, used, hints)
        config = self.model.config
        fusion = config.fusion_modalities if config.use_fusion else None
        left_out = [name for name in fusion or () if name not in used]
        if left_out:
            notes.append(f"answered without {', '.join(left_out)}: the fusion gets zeros in their place")
        extra: dict[str, Any] = {}
        if prompt_preset is not None:
            extra["prompt_preset"] = prompt_preset
        situation = inputs.get("situation", situation)
        if situation is not None:
            extra["situation"] = situation
        try:
            processed = self.processor(
                videos=video, question=question, options=options, return_tensors="pt",
                **processor_arguments(companions, used), **extra,
            )
        except UNREADABLE_INPUT_ERRORS as error:
            raise unreadable_input(error, {"video": video, **companions}, hints) from error
        tensors = {key: value for key, value in processed.items() if key != "labels"}
        meta: dict[str, Any] = {"options": options, "modalities": used, "notes": notes}
        if return_modality_frames:
            meta["modality_frames"] = {
                name: pixel_values_to_images(tensors[f"{name}_pixel_values"][0], self.processor.video_processor)
                for name in used
                if self.model.config.modality(name)["encoder"] == "vision" and f"{name}_pixel_values" in tensors
            }
        return {"inputs": tensors, "meta": meta}

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> PipelineIterator:
        """As `Pipeline.get_iterator`, with CREMA's own collation: a batch is the list of its examples, which
        `_forward` stacks (padding the prompts) into one model call per group of same-shaped inputs."""
        if not isinstance(inputs, Sized):
            if num_workers > 1:
                logger.warning("For an iterable input, num_workers > 1 is not supported; using num_workers=1.")
                num_workers = 1
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        if "TOKENIZERS_PARALLELISM" not in os.environ:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_collate_examples)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    # ----------------------------------------------------------------------------------------- forward
    def _forward(
        self,
        model_inputs: dict[str, Any],
        scoring: str = "likelihood",
        contributions: bool = False,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        prompt_preset: str | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Scores the options (multiple choice) or generates (open-ended), one model call per group of examples
        whose inputs stack, then the contributions when asked for."""
        examples = model_inputs["examples"] if "examples" in model_inputs else [model_inputs]
        results = [dict(example["meta"]) for example in examples]
        adapters = list(self.model.config.modality_names)
        for group in _stackable_groups(examples):
            batch = self._stack([examples[i]["inputs"] for i in group])
            option_lists = [examples[i]["meta"]["options"] for i in group]
            used = examples[group[0]]["meta"]["modalities"]  # the same for the whole group
            modalities = None if used == adapters else list(used)
            if option_lists[0]:
                labels = self._score(batch, option_lists, group, results, scoring, modalities, prompt_preset)
            else:
                labels = self._generate(batch, group, results, modalities, num_beams, max_new_tokens, prompt_preset)
            if contributions:
                self._contributions(batch, labels, group, results, modalities)
        return {"results": results}

    def _stack(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One batch from single-example inputs: prompts padded to the longest (the tokenizer's side and pad id),
        everything else concatenated."""
        tokenizer = self.processor.tokenizer
        longest = max(item["input_ids"].shape[1] for item in items)
        left = getattr(tokenizer, "padding_side", "right") == "left"
        batch: dict[str, torch.Tensor] = {}
        for key in items[0]:
            if key in PROMPT_TENSORS:
                fill = tokenizer.pad_token_id if key == "input_ids" else 0
                rows = []
                for item in items:
                    value = item[key]
                    pad = value.new_full((1, longest - value.shape[1]), fill)
                    rows.append(torch.cat([pad, value] if left else [value, pad], dim=1))
                batch[key] = torch.cat(rows)
            else:
                batch[key] = torch.cat([item[key] for item in items])
        return batch

    def _score(
        self,
        batch: dict[str, torch.Tensor],
        option_lists: list[list[str]],
        group: list[int],
        results: list[dict[str, Any]],
        scoring: str,
        modalities: Sequence[str] | None,
        prompt_preset: str | None,
    ) -> torch.Tensor:
        """Multiple choice: each example's option scores and best option; returns the chosen targets as labels."""
        if scoring == "reference":
            counts = [len(options) for options in option_lists]
            letter_scores = option_letter_scores(self.model, self.processor, batch, counts, modalities)
            scores = [letter_scores[row, :count] for row, count in enumerate(counts)]
        else:
            scores = batched_option_log_likelihoods(self.model, self.processor, batch, option_lists, modalities,
                                                    prompt_preset)
        targets = []
        for row, (index, options) in enumerate(zip(group, option_lists)):
            best = int(scores[row].argmax())
            results[index].update(answer=str(options[best]), option_index=best, option_scores=scores[row].tolist(),
                                  scoring=scoring)
            targets.append(self.processor.build_target(best, options, prompt_preset=prompt_preset))
        tokenizer = self.processor.tokenizer
        labels = tokenizer(targets, padding=True, return_tensors="pt").input_ids
        return labels.masked_fill(labels == tokenizer.pad_token_id, -100)

    def _generate(
        self,
        batch: dict[str, torch.Tensor],
        group: list[int],
        results: list[dict[str, Any]],
        modalities: Sequence[str] | None,
        num_beams: int | None,
        max_new_tokens: int | None,
        prompt_preset: str | None,
    ) -> torch.Tensor:
        """Open-ended: beam search with the processor's (preset's) settings; returns the answers as labels."""
        generation = _generation_kwargs(self.processor, prompt_preset)
        if num_beams is not None:
            generation["num_beams"] = num_beams
        if max_new_tokens is not None:
            generation["max_new_tokens"] = max_new_tokens
        generated = self.model.generate(**batch, modalities=None if modalities is None else list(modalities),
                                        **generation)
        for row, index in enumerate(group):
            results[index].update(generated=generated[row], option_index=None, option_scores=[], scoring=None)
        answer = generated[:, 1:]  # without the decoder start token
        return answer.masked_fill(answer == self.model.config.text_config.pad_token_id, -100)

    def _contributions(
        self,
        batch: dict[str, torch.Tensor],
        labels: torch.Tensor,
        group: list[int],
        results: list[dict[str, Any]],
        modalities: Sequence[str] | None,
    ) -> None:
        """`model.modality_contributions` for the answers just given (the chosen option's target, or the generated
        answer): how much each supportive modality's absence raises the answer's negative log-likelihood."""
        device = _device(self.model)
        per_modality = self.model.modality_contributions(
            **{key: value.to(device) for key, value in batch.items()}, labels=labels.to(device),
            **_with_modalities(modalities),
        )
        for row, index in enumerate(group):
            results[index]["contributions"] = {name: float(values[row]) for name, values in per_modality.items()}
            if not per_modality:
                results[index]["notes"] = [*results[index]["notes"],
                                           "no contributions: the answer used no supportive modality to leave out"]

    # ------------------------------------------------------------------------------------- postprocess
    def postprocess(self, model_outputs: dict[str, Any], prompt_preset: str | None = None) -> dict[str, Any]:
        """The answer dict of one example (open-ended answers decoded with the preset's post-processing)."""
        result = model_outputs["results"]
        result = result[0] if isinstance(result, list) else result  # unbatched: a list of one
        if "generated" in result:
            decode = {} if prompt_preset is None else {"prompt_preset": prompt_preset}
            answer = self.processor.decode_answers(result["generated"].unsqueeze(0).cpu(), **decode)[0]
        else:
            answer = result["answer"]
        out: dict[str, Any] = {
            "answer": answer,
            "option_index": result["option_index"],
            "option_scores": [float(score) for score in result["option_scores"]],
            "scoring": result["scoring"],
            "modalities": list(result["modalities"]),
        }
        if "contributions" in result:
            out["contributions"] = result["contributions"]
        if "modality_frames" in result:
            out["modality_frames"] = result["modality_frames"]
        out["notes"] = list(result["notes"])
        return out


# ------------------------------------------------------------------------------------------------- helpers
def _collate_examples(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A batch is the list of its preprocessed examples (`_forward` stacks them)."""
    return {"examples": items}


def _stackable_groups(examples: list[dict[str, Any]]) -> list[list[int]]:
    """Positions of the examples that can share one model call: multiple choice or open-ended, the same modalities,
    and the same shapes for every input but the prompt."""
    groups: dict[tuple, list[int]] = {}
    for position, example in enumerate(examples):
        shapes = tuple(sorted((key, tuple(value.shape[1:])) for key, value in example["inputs"].items()
                              if key not in PROMPT_TENSORS))
        key = (bool(example["meta"]["options"]), tuple(example["meta"]["modalities"]), shapes)
        groups.setdefault(key, []).append(position)
    return list(groups.values())


def _generation_kwargs(processor: Any, prompt_preset: str | None) -> dict[str, Any]:
    """The processor's generation settings for the preset (beam 5, 10 new tokens, length penalty -1 by default)."""
    if hasattr(processor, "generation_kwargs"):
        return dict(processor.generation_kwargs(prompt_preset))
    return {"num_beams": 5, "max_new_tokens": 10, "length_penalty": -1.0}


#: What `pipeline()` loads the model with for this task, and the task's kind (as transformers' own tasks say).
PIPELINE_MODEL_CLASSES = (AutoModel,)
PIPELINE_TYPE = "multimodal"


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """This task as `Pipeline.save_pretrained` writes it into config.json's `custom_pipelines`: the registered
    implementation as `module.Class` of this file, the model classes by name."""
    module = CremaVideoQuestionAnsweringPipeline.__module__.split(".")[-1]
    return {TASK: {"impl": f"{module}.{CremaVideoQuestionAnsweringPipeline.__name__}",
                   "pt": [cls.__name__ for cls in PIPELINE_MODEL_CLASSES], "type": PIPELINE_TYPE}}


def save_pipeline(save_directory: str | os.PathLike) -> None:
    """Adds the pipeline to a saved model folder: this file beside the modeling code and the task in config.json
    (`custom_pipelines`), so that `pipeline(model=folder, trust_remote_code=True)` builds it anywhere."""
    shutil.copyfile(__file__, os.path.join(save_directory, os.path.basename(__file__)))
    config_path = os.path.join(save_directory, "config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["custom_pipelines"] = custom_pipelines_entry()
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")


def register_crema_pipeline() -> None:
    """Registers the task with `PIPELINE_REGISTRY`, so `pipeline("crema-video-question-answering", model=...)`
    works in this process. A remote-code copy loaded where the installed package already registered it leaves
    that registration alone (re-registering would only log an "Overwriting" warning)."""
    if __name__.startswith("transformers_modules") and TASK in PIPELINE_REGISTRY.supported_tasks:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=CremaVideoQuestionAnsweringPipeline, pt_model=PIPELINE_MODEL_CLASSES, type=PIPELINE_TYPE
    )


register_crema_pipeline()
