"""Answering one question about one clip with a saved CREMA model (`crema init`, `crema answer`).

`answer_question` runs the model's pipeline, `crema-video-question-answering`
(`modeling_crema.pipeline_crema`, shipped with the model as remote code): one inference path for `crema answer`,
Python and `pipeline(model=..., trust_remote_code=True)`. The option-scoring functions live there and are
re-exported here (`option_log_likelihoods`, `option_letter_scores`, ...); see that module for the two ways
multiple choice is scored ("likelihood" and "reference").

The checks run before any decoding or model call, and here their messages name the command-line flags
(`--audio-file`, `--depth-model`, `crema init --audio-encoder`, ...): this module is what `crema init` and
`crema answer` run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from transformers.utils import logging

from modeling_crema.pipeline_crema import (  # noqa: F401  (re-exported: evaluate.py and tests import them here)
    AUDIO_ENCODER_EXAMPLE,
    DEPTH_EXAMPLE,
    DERIVED_FROM_VIDEO,
    SCORING_MODES,
    CremaVideoQuestionAnsweringPipeline,
    InputHints,
    batched_option_log_likelihoods,
    check_inputs,
    option_letter_scores,
    option_letter_step,
    option_log_likelihoods,
    score_options,
)

logger = logging.get_logger(__name__)

#: Modalities read from a companion file, with the `crema answer` flag that passes it.
COMPANION_FLAGS = {"audio": "--audio-file", "thermal": "--thermal", "touch": "--touch", "point_cloud": "--point-cloud",
                   "depth": "--depth", "normal": "--normal"}
#: Why a Hub repo may fail to load, appended to Hub errors.
HUB_HINT = "offline? set HF_HUB_OFFLINE/HF token"


@dataclass
class Answer:
    """An answer: its text, the modalities used and, for multiple choice, the chosen option, the scoring mode and
    each option's score (`option_scores`: whole-target log-likelihoods for "likelihood", letter log-probabilities
    at the step after "Option" for "reference"; `option_log_likelihoods` is filled for "likelihood" only).
    `contributions`: each supportive modality's leave-one-out contribution, when asked for; `notes`: the
    pipeline's notes (e.g. an input that was ignored)."""

    text: str
    used_modalities: list[str]
    option_index: int | None = None
    option_log_likelihoods: list[float] = field(default_factory=list)
    option_scores: list[float] = field(default_factory=list)
    scoring: str | None = None
    contributions: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class CommandLineHints(InputHints):
    """The pipeline's input errors, worded with `crema answer`'s flags."""

    def source(self, name: str) -> str:
        return "the clip" if name == "video" else COMPANION_FLAGS.get(name, f"companions[{name!r}]")

    def missing(self, name: str) -> str:
        flag = COMPANION_FLAGS.get(name)
        if flag is None:  # a modality added from Python: its clip comes from Python too
            return (", which `crema answer` has no option for; call crema_training.answer.answer_question(..., "
                    f"companions={{{name!r}: CLIP}}) from Python")
        return f": pass its input file ({flag} PATH)"

    def depth_model(self, name: str) -> str:
        return (f"pass --depth-model DIR_OR_ID ({DEPTH_EXAMPLE}), or build the model with `crema init --depth-model`; "
                f"or pass a precomputed {name} render with --{name} FILE")

    def audio_track(self) -> str:
        return "pass --audio-file PATH"

    def audio_encoder(self) -> str:
        return f"build the model with `crema init --audio-encoder DIR_OR_ID` ({AUDIO_ENCODER_EXAMPLE})"


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
    """crema-tiny, the small CREMA (video, audio, flow, depth, normal, thermal) trained on CREMA-Synth and shipped
    with the package."""
    from importlib.resources import files

    return str(files("modeling_crema") / "pretrained" / "crema-tiny")


def check_processor_matches(processor, config) -> None:
    """Refuses a processor whose frames the model cannot read (e.g. the default 224 px one that a folder without a
    saved processor yields), before any clip is decoded."""
    video = processor.video_processor
    size = (video.size["height"], video.size["width"])
    expected = (config.vision_config.image_size, config.vision_config.image_size)
    if video.num_frames != config.num_frames or size != expected:
        raise ValueError(
            f"The model folder's processor makes {video.num_frames} frames of {size[0]}x{size[1]} px, but the model "
            f"reads {config.num_frames} frames of {expected[0]}x{expected[1]} px: save a matching processor with the "
            "model, `CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(folder)`."
        )


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
        try:
            processor = CremaProcessor.from_pretrained(source)
        except ValueError as error:
            if "tokenizer" not in str(error):
                raise
            # no tokenizer files: transformers fails to build one ("Couldn't instantiate the backend tokenizer")
            raise ValueError(
                f"{source} holds no tokenizer, so its processor cannot be built ({short_cause(error)}): save the "
                "model's processor with it, `CremaProcessor.from_model_config(model.config, tokenizer)"
                ".save_pretrained(folder)`."
            ) from None
    check_processor_matches(processor, model.config)
    if depth_model is not None:
        processor.video_processor.depth_model_name_or_path = depth_model_reference(depth_model)
    return model.to(device).eval(), processor


def check_answer_inputs(model, processor, video: Any, companions: dict[str, Any]) -> None:
    """Refuses what the model's adapters need but the inputs lack, before any decoding or model call; the
    messages name the `crema answer` / `crema init` flag that fixes it. A precomputed depth or normal render
    (`--depth FILE`, `--normal FILE`) replaces the depth model for that modality."""
    check_inputs(model, processor, video, companions, hints=CommandLineHints())


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
    modalities: Sequence[str] | None = None,
    contributions: bool = False,
) -> Answer:
    """Answer one question about one clip with every modality the model has an adapter for (or `modalities`),
    through the model's pipeline (`CremaVideoQuestionAnsweringPipeline`).

    Multiple choice is scored with `scoring` ("likelihood" or "reference"); open-ended questions use beam search
    (`num_beams` 5, `max_new_tokens` 10 and length penalty -1 unless the prompt preset says otherwise, e.g. 40 new
    tokens for "sqa3d"). `prompt_preset` (a name of `PROMPT_PRESETS`) builds the prompt as the reference did for
    that dataset; `situation` is SQA3D's situation text. `companions` maps a modality to its file (thermal, touch,
    depth/normal renders, audio, point_cloud, or any other adapter's clip). `contributions`: also each supportive
    modality's leave-one-out contribution (`model.modality_contributions`)."""
    pipe = CremaVideoQuestionAnsweringPipeline(model=model, processor=processor, device=model.device)
    example = {name: value for name, value in (companions or {}).items() if value is not None}
    example.update(video=video, question=question, options=list(options) if options else None)
    parameters = {"num_beams": num_beams, "max_new_tokens": max_new_tokens, "prompt_preset": prompt_preset,
                  "situation": situation, "modalities": modalities}
    out = pipe(example, scoring=scoring, contributions=contributions, input_hints=CommandLineHints(),
               **{key: value for key, value in parameters.items() if value is not None})
    likelihoods = out["option_scores"] if out["scoring"] == "likelihood" else []
    return Answer(out["answer"], out["modalities"], out["option_index"], likelihoods, out["option_scores"],
                  out["scoring"], out.get("contributions", {}), out["notes"])
