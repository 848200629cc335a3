"""Answering one question about one clip with a saved CREMA model (`crema init`, `crema answer`).

Multiple choice is answered by scoring the options in one of two ways (`scoring=`):

- "likelihood" (default): rank the options by the log-likelihood of their whole target `Option {L}` under the
  model, teacher-forced (`option_log_likelihoods`; robust to whatever the first generated token is);
- "reference": the reference's prediction (DESIGN §3): teacher-force "Option", then take the argmax over the
  option-letter tokens of the scores at the next step, the second answer step (`option_letter_scores`). The
  reference decodes greedily and reads the scores of its second step, which follow "Option" for a model trained
  on these targets; this is what the paper's multiple-choice numbers measure.

Open-ended questions are answered by beam search with DESIGN §3's settings (or a prompt preset's).

The checks here run before any decoding or model call, and their messages name the command-line flags
(`--audio-file`, `--depth-model`, `crema init --audio-encoder`, ...): this module is what `crema init` and
`crema answer` run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Modalities the processor derives from the RGB clip itself.
DERIVED_FROM_VIDEO = ("flow", "depth", "normal")
#: Modalities read from a companion file, with the `crema answer` flag that passes it.
COMPANION_FLAGS = {"audio": "--audio-file", "thermal": "--thermal", "touch": "--touch", "point_cloud": "--point-cloud"}
#: Why a Hub repo may fail to load, appended to Hub errors.
HUB_HINT = "offline? set HF_HUB_OFFLINE/HF token"
DEPTH_EXAMPLE = "e.g. depth-anything/Depth-Anything-V2-Small-hf or Intel/dpt-hybrid-midas"
AUDIO_ENCODER_EXAMPLE = "e.g. MIT/ast-finetuned-audioset-10-10-0.4593"


#: How multiple choice is scored (see the module docstring).
SCORING_MODES = ("likelihood", "reference")


@dataclass
class Answer:
    """An answer: its text, the modalities used and, for multiple choice, the chosen option, the scoring mode and
    each option's score (`option_scores`: whole-target log-likelihoods for "likelihood", letter log-probabilities
    at the step after "Option" for "reference"; `option_log_likelihoods` is filled for "likelihood" only)."""

    text: str
    used_modalities: list[str]
    option_index: int | None = None
    option_log_likelihoods: list[float] = field(default_factory=list)
    option_scores: list[float] = field(default_factory=list)
    scoring: str | None = None


# ------------------------------------------------------------------------------------- folders and Hub ids
def could_be_hub_repo_id(text: str) -> bool:
    """Whether `text` can name a Hub repo: `namespace/name` (every checkpoint the command line reads lives under
    a namespace, e.g. Salesforce/blip2-flan-t5-xl), not path-like, and accepted by `validate_repo_id`."""
    if text.startswith((".", "/", "~")) or text.endswith("/") or text.count("/") != 1:
        return False
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except ValueError:  # HFValidationError
        return False
    return True


def local_or_hub(name_or_path: str | os.PathLike) -> tuple[str, bool]:
    """(source, is_local): an existing local path (`~` expanded), else a Hub repo id. A string that cannot be a
    Hub repo id and does not exist raises `FileNotFoundError("no such folder: ...")`."""
    text = os.fspath(name_or_path)
    expanded = os.path.expanduser(text)
    if os.path.exists(expanded):
        return expanded, True
    if not could_be_hub_repo_id(text):
        raise FileNotFoundError(f"no such folder: {text}")
    return text, False


def short_cause(error: BaseException) -> str:
    """The first line of an error message (Hub errors run to several lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def hub_errors(source: str, is_local: bool) -> Iterator[None]:
    """Rewords a failure to load a Hub repo (no network, no token, no such repo) that is not a local folder."""
    if is_local:
        yield
        return
    try:
        yield
    except OSError as error:
        raise OSError(
            f"no local folder {source}, and the Hub repo {source} could not be loaded ({HUB_HINT}): "
            f"{short_cause(error)}"
        ) from error


def load_config(name_or_path: str | os.PathLike, flag: str | None = None):
    """`AutoConfig` of a local folder or Hub repo, with the errors above (`flag` names the option it came from)."""
    from transformers import AutoConfig

    source, is_local = local_or_hub(name_or_path)
    with hub_errors(source, is_local):
        try:
            return AutoConfig.from_pretrained(source), source, is_local
        except ValueError as error:  # no or unknown model_type
            where = f"{flag} {source}" if flag else source
            raise ValueError(f"{where}: not a transformers checkpoint ({short_cause(error)})") from None


# ------------------------------------------------------------------------------------------------ crema init
def build_model_folder(
    blip2_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    modalities: Sequence[str],
    use_fusion: bool | None = None,
    audio_encoder: str | os.PathLike | None = None,
    depth_model: str | os.PathLike | None = None,
    **config_kwargs: Any,
):
    """CREMA from a BLIP-2 (T5) checkpoint + its processor, saved together (untrained adapters: a starting point
    for training, or a base to load trained adapters onto). Returns the model.

    `audio_encoder`: a `transformers` audio encoder (folder or Hub id, e.g. AST) for an "audio" modality, saved
    with the model (its feature extractor, when the checkpoint has one, becomes the processor's); without it
    the audio adapter takes precomputed BEATs features. `depth_model`: the depth-estimation model the processor
    renders depth and normals with (saved by name in the processor config; a local folder as an absolute path).
    """
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    from crema_processing import CremaProcessor
    from modeling_crema import CremaForConditionalGeneration
    from modeling_crema.modeling_crema import tokenizer_is_usable

    modalities = list(modalities)
    needs_depth = [name for name in modalities if name in ("depth", "normal")]
    if needs_depth and depth_model is None:
        subject = " and ".join(repr(name) for name in needs_depth)
        verb = "modalities need" if len(needs_depth) > 1 else "modality needs"
        raise ValueError(
            f"the {subject} {verb} a depth-estimation model: pass --depth-model DIR_OR_ID ({DEPTH_EXAMPLE})"
        )
    if depth_model is not None and not needs_depth:
        raise ValueError("--depth-model is only used by the depth and normal modalities; add one to --modalities")
    if audio_encoder is not None and "audio" not in modalities:
        raise ValueError("--audio-encoder is only used by the audio modality; add audio to --modalities")

    blip2_config, blip2_source, blip2_local = load_config(blip2_name_or_path, "--blip2")
    if blip2_config.model_type != "blip-2":
        raise ValueError(
            f"--blip2 {blip2_source} is a {blip2_config.model_type!r} checkpoint, not BLIP-2 "
            "(e.g. Salesforce/blip2-flan-t5-xl)"
        )
    with hub_errors(blip2_source, blip2_local):
        blip2 = Blip2ForConditionalGeneration.from_pretrained(blip2_source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(blip2_source)
            cause = "its tokenizer is empty"
        except (OSError, ValueError, TypeError) as error:
            tokenizer, cause = None, short_cause(error)
    if not tokenizer_is_usable(tokenizer):  # the prompts and frame prefixes need the LLM's tokenizer
        raise ValueError(
            f"--blip2 {blip2_source} has no usable tokenizer ({cause}); save the LLM's tokenizer into that folder"
        )

    extra_model_kwargs: dict[str, Any] = {}
    processor_kwargs: dict[str, Any] = {}
    if audio_encoder is not None:
        audio_config, audio_source, audio_local = load_config(audio_encoder, "--audio-encoder")
        extra_model_kwargs["audio_encoder"] = audio_source
        feature_extractor = _audio_feature_extractor(audio_source, audio_local)
        if feature_extractor is not None:
            processor_kwargs["audio_feature_extractor"] = feature_extractor
    if depth_model is not None:
        processor_kwargs["depth_model_name_or_path"] = depth_model_reference(depth_model)

    use_fusion = len(modalities) >= 3 if use_fusion is None else use_fusion
    model = CremaForConditionalGeneration.from_blip2(
        blip2,
        modalities=modalities,
        tokenizer=tokenizer,
        use_fusion=use_fusion,
        fusion_modalities=modalities if use_fusion and len(modalities) > 1 else None,
        **extra_model_kwargs,
        **config_kwargs,
    )
    model.save_pretrained(output_dir)
    CremaProcessor.from_model_config(model.config, tokenizer, **processor_kwargs).save_pretrained(output_dir)
    return model


def depth_model_reference(depth_model: str | os.PathLike) -> str:
    """What the processor config stores for `--depth-model`: an absolute path for a local folder (so the saved
    model works from any directory), else the Hub id; refused unless it is a depth-estimation model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    config, source, is_local = load_config(depth_model, "--depth-model")
    if config.model_type not in MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES:
        raise ValueError(
            f"--depth-model {source} is a {config.model_type!r} model, not a depth-estimation model ({DEPTH_EXAMPLE})"
        )
    return os.path.abspath(source) if is_local else source


def _audio_feature_extractor(source: str, is_local: bool):
    """The audio encoder checkpoint's own feature extractor (`preprocessor_config.json`), or None."""
    from transformers import AutoFeatureExtractor

    if is_local and not os.path.isfile(os.path.join(source, "preprocessor_config.json")):
        return None
    try:
        return AutoFeatureExtractor.from_pretrained(source)
    except OSError:
        if is_local:
            raise
        return None  # a Hub checkpoint without a preprocessor config


# ---------------------------------------------------------------------------------------------- crema answer
def default_model_path() -> str:
    """crema-tiny, the small CREMA (video, flow, thermal) trained on CREMA-Synth and shipped with the package."""
    from importlib.resources import files

    return str(files("modeling_crema") / "pretrained" / "crema-tiny")


def load_model_and_processor(
    model_name_or_path: str | os.PathLike, device: str = "cpu", depth_model: str | os.PathLike | None = None
):
    """A saved CREMA model (eval mode, on `device`) and its processor. `depth_model` replaces the processor's
    depth-estimation model (for depth and normal adapters)."""
    from crema_processing import CremaProcessor
    from modeling_crema import CremaForConditionalGeneration

    source, is_local = local_or_hub(model_name_or_path)
    with hub_errors(source, is_local):
        model = CremaForConditionalGeneration.from_pretrained(source)
        processor = CremaProcessor.from_pretrained(source)
    if depth_model is not None:
        processor.video_processor.depth_model_name_or_path = depth_model_reference(depth_model)
    return model.to(device).eval(), processor


def check_answer_inputs(model, processor, video: Any, companions: dict[str, Any]) -> None:
    """Refuses what the model's adapters need but the inputs lack, before any decoding or model call; the
    messages name the `crema answer` / `crema init` flag that fixes it."""
    from crema_processing import has_audio_stream

    clip_is_path = isinstance(video, (str, os.PathLike))
    if clip_is_path and not os.path.exists(video):
        raise FileNotFoundError(f"no such file or folder: {os.fspath(video)} (the clip)")
    for spec in model.config.modalities:
        name, encoder = spec["name"], spec["encoder"]
        if name == "video" or name == "flow":
            continue
        if name in ("depth", "normal"):
            if not processor.video_processor.has_depth_estimator:
                raise ValueError(
                    f"the model has a {name!r} adapter, which needs a depth-estimation model: pass --depth-model "
                    f"DIR_OR_ID ({DEPTH_EXAMPLE}), or build the model with `crema init --depth-model`"
                )
            continue
        if name == "audio":
            if encoder != "audio" or model.config.audio_config is None:
                raise ValueError(
                    "the model's 'audio' adapter takes precomputed audio features (the model has no audio encoder), "
                    "so it cannot read audio from a file: build the model with `crema init --audio-encoder DIR_OR_ID` "
                    f"({AUDIO_ENCODER_EXAMPLE})"
                )
            audio = companions.get("audio")
            if audio is not None:
                _require_file(audio, "--audio-file")
            elif not clip_is_path or os.path.isdir(video) or not has_audio_stream(video):
                clip = os.fspath(video) if clip_is_path else "clip"
                raise ValueError(
                    f"the model has an 'audio' adapter but {clip} has no audio track: pass --audio-file PATH"
                )
            continue
        flag = COMPANION_FLAGS.get(name)
        if flag is None:  # a modality added from Python: its clip comes from Python too
            if companions.get(name) is None:
                raise ValueError(
                    f"the model has a {name!r} adapter, which `crema answer` has no option for; call "
                    f"crema_training.answer.answer_question(..., companions={{{name!r}: CLIP}}) from Python"
                )
            continue
        if companions.get(name) is None:
            raise ValueError(f"the model has a {name!r} adapter: pass its input file ({flag} PATH)")
        _require_file(companions[name], flag)


def _require_file(value: Any, flag: str) -> None:
    """A companion given as a path must exist (arrays and waveforms from Python pass through)."""
    if isinstance(value, (str, os.PathLike)) and not os.path.exists(value):
        raise FileNotFoundError(f"no such file: {os.fspath(value)} ({flag})")


def modality_arguments(model, companions: dict[str, Any]) -> dict[str, Any]:
    """Processor keyword arguments for every modality the model has an adapter for."""
    arguments: dict[str, Any] = {}
    for name in model.config.modality_names:
        if name == "video":
            continue
        if name in DERIVED_FROM_VIDEO:
            arguments[name] = True
        elif name == "audio":
            audio = companions.get("audio")
            arguments["audio"] = True if audio is None else audio  # a separate file, else the clip's own track
        elif name in ("thermal", "touch", "point_cloud"):
            arguments[name] = companions[name]
        else:
            arguments.setdefault("visual", {})[name] = companions[name]
    return arguments


@torch.no_grad()
def option_log_likelihoods(model, processor, inputs: dict[str, torch.Tensor], options: Sequence[str]) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities of each target `Option {L}` (one row per option)."""
    targets = [processor.build_target(index, options) for index in range(len(options))]
    labels = processor.tokenizer(targets, padding=True, return_tensors="pt").input_ids
    labels[labels == processor.tokenizer.pad_token_id] = -100
    repeated = {key: value.expand(len(options), *value.shape[1:]) for key, value in inputs.items() if key != "labels"}
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in repeated.items()}, labels=labels.to(device)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels.to(device) != -100
    picked = log_probs.gather(-1, labels.clamp(min=0).to(device).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1).cpu()


def option_letter_step(tokenizer, num_options: int) -> tuple[list[int], list[int]]:
    """(the target prefix to teacher-force, the letter token ids): the targets `Option A`, `Option B`, ... share
    their tokens up to the first position where each has its own letter token; with a T5 tokenizer the prefix is
    `["▁Option"]` and the letters `▁A`, `▁B`, ... (ids 71, 272, 205, 309, 262 in Flan-T5's vocabulary, the
    reference's `answer_id`)."""
    from crema_processing.prompts import OPTION_LETTERS

    targets = [f"Option {OPTION_LETTERS[i]}" for i in range(num_options)]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in targets]
    shortest = min(len(t) for t in ids)
    position = next((i for i in range(shortest) if len({t[i] for t in ids}) > 1), None)
    letters = [t[position] for t in ids] if position is not None else []
    if position is None or len(set(letters)) != num_options or any(t[:position] != ids[0][:position] for t in ids):
        raise ValueError(f"The tokenizer does not give each of the targets {targets} its own letter token.")
    return list(ids[0][:position]), letters


@torch.no_grad()
def option_letter_scores(model, processor, inputs: dict[str, torch.Tensor], num_options: int | Sequence[int]):
    """The reference's multiple-choice scores (DESIGN §3): the decoder is teacher-forced with the decoder start
    token and "Option", and the log-probabilities of the option letters A, B, ... at the next step (the second
    answer step) are returned, (B, max options); options beyond an example's count are -inf. The prediction is
    their argmax (the reference takes the argmax of the same step's scores over its `answer_id` tokens).

    `inputs`: the processor's outputs for B examples (labels are ignored). `num_options`: the number of options,
    or one count per example."""
    counts = [int(num_options)] * next(iter(inputs.values())).shape[0] if isinstance(num_options, int) \
        else [int(c) for c in num_options]
    prefix, letters = option_letter_step(processor.tokenizer, max(counts))
    device = next(model.parameters()).device
    model_inputs = {k: v.to(device) for k, v in inputs.items() if k not in ("labels", "decoder_input_ids")}
    start = model.config.text_config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start, *prefix]] * len(counts), dtype=torch.long, device=device)
    logits = model(**model_inputs, decoder_input_ids=decoder_input_ids).logits[:, -1, :].float()
    scores = torch.log_softmax(logits, dim=-1)[:, letters].cpu()
    for row, count in enumerate(counts):
        scores[row, count:] = float("-inf")
    return scores


def score_options(
    model, processor, inputs: dict[str, torch.Tensor], options: Sequence[str], scoring: str = "likelihood"
) -> torch.Tensor:
    """One score per option of one example (higher = better): `option_log_likelihoods` for "likelihood",
    `option_letter_scores` for "reference"."""
    if scoring == "likelihood":
        return option_log_likelihoods(model, processor, inputs, options)
    if scoring == "reference":
        return option_letter_scores(model, processor, inputs, len(options))[0]
    raise ValueError(f"Unknown multiple-choice scoring {scoring!r}; choose one of {SCORING_MODES}.")


@torch.no_grad()
def answer_question(
    model,
    processor,
    video: Any,
    question: str,
    options: Sequence[str] | None = None,
    companions: dict[str, Any] | None = None,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    scoring: str = "likelihood",
    prompt_preset: str | None = None,
    situation: str | None = None,
) -> Answer:
    """Answer one question about one clip with every modality the model has an adapter for.

    Multiple choice is scored with `scoring` ("likelihood" or "reference", see the module docstring); open-ended
    questions use beam search (`num_beams` 5, `max_new_tokens` 10 and length penalty -1 unless the prompt preset
    says otherwise, e.g. 40 new tokens for "sqa3d"). `prompt_preset` (a name of `PROMPT_PRESETS`) builds the
    prompt as the reference did for that dataset; `situation` is SQA3D's situation text."""
    if scoring not in SCORING_MODES:
        raise ValueError(f"Unknown multiple-choice scoring {scoring!r}; choose one of {SCORING_MODES}.")
    companions = {name: value for name, value in (companions or {}).items() if value is not None}
    check_answer_inputs(model, processor, video, companions)
    extra = {} if prompt_preset is None else {"prompt_preset": prompt_preset}
    if situation is not None:
        extra["situation"] = situation
    inputs = processor(
        videos=video, question=question, options=options, **modality_arguments(model, companions),
        return_tensors="pt", **extra,
    )
    inputs = {key: value for key, value in inputs.items() if key != "labels"}
    used = list(model.config.modality_names)
    if options:
        scores = score_options(model, processor, inputs, options, scoring)
        best = int(scores.argmax())
        likelihoods = scores.tolist() if scoring == "likelihood" else []
        return Answer(str(options[best]), used, best, likelihoods, scores.tolist(), scoring)
    generation = _generation_kwargs(processor, prompt_preset)
    if num_beams is not None:
        generation["num_beams"] = num_beams
    if max_new_tokens is not None:
        generation["max_new_tokens"] = max_new_tokens
    device = next(model.parameters()).device
    generated = model.generate(**{k: v.to(device) for k, v in inputs.items()}, **generation)
    decode = {} if prompt_preset is None else {"prompt_preset": prompt_preset}
    return Answer(processor.decode_answers(generated.cpu(), **decode)[0], used)


def _generation_kwargs(processor, prompt_preset: str | None) -> dict[str, Any]:
    """The processor's generation settings for the preset (beam 5, 10 new tokens, length penalty -1 by default)."""
    if hasattr(processor, "generation_kwargs"):
        return dict(processor.generation_kwargs(prompt_preset))
    return {"num_beams": 5, "max_new_tokens": 10, "length_penalty": -1.0}
