"""`CremaProcessor`: one call from raw clips, audio, point clouds and a question to the exact inputs of
`CremaForConditionalGeneration` (DESIGN §1.2, §3, §6), and generated ids back to answers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, AutoTokenizer, BatchFeature, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.processing_utils import ProcessorMixin
from transformers.utils import CONFIG_NAME, TensorType, cached_file, logging

from .audio import CremaAudioFeatureExtractor, extract_audio_features, load_audio, resample_waveform
from .point_cloud import CremaPointCloudFeatureExtractor, _is_single_scene
from .prompts import (
    OPTION_LETTERS,
    PromptPreset,
    build_multiple_choice_prompt,
    build_open_ended_prompt,
    get_prompt_preset,
    infer_modality_word,
    multiple_choice_target,
    post_process_answer,
)
from .video_processing_crema import DERIVED_MODALITIES, CremaVideoProcessor, _is_single_clip


logger = logging.get_logger(__name__)

# Our own sub-processor classes, so loading does not depend on Auto-class registration (works as remote code too).
_LOCAL_SUBPROCESSOR_CLASSES = {
    cls.__name__: cls for cls in (CremaVideoProcessor, CremaAudioFeatureExtractor, CremaPointCloudFeatureExtractor)
}


class CremaProcessor(ProcessorMixin):
    r"""Bundles the tokenizer and the per-modality processors of CREMA.

    Args:
        image_processor ([`CremaVideoProcessor`]): frames, flow, depth, normals and companion visual clips (also
            reachable as `processor.video_processor`). It is held under the `image_processor` attribute because
            `ProcessorMixin` can only type-check video processors when torchvision is installed.
        feature_extractor: audio features per segment: [`CremaAudioFeatureExtractor`] (BEATs fbank), or any
            `transformers` audio feature extractor (AST, Whisper, CLAP, ...) called on each segment (pass-through).
        point_cloud_feature_extractor ([`CremaPointCloudFeatureExtractor`]): fixed-size point clouds + mask.
        tokenizer: the T5 tokenizer of the frozen LLM.
        modality_key_map (`dict[str, str]`, *optional*): renames modalities in the output keys, e.g.
            `{"normal": "norm"}` when the model's adapters use other names.
        prompt_modality_word (`str`, *optional*): the dataset's open-ended prompt word (e.g. "audio"); by default it
            is inferred from the supportive modalities present.
        num_audio_segments (`int`, *optional*): segments per clip for pass-through audio extractors (the
            `CremaAudioFeatureExtractor` has its own `num_segments`).
        max_prompt_length / max_answer_length (`int`, *optional*): truncation of prompt / answer tokens.
        prompt_preset (`str`, *optional*): a per-dataset prompt preset of `PROMPT_PRESETS` ("nextqa",
            "perception_test", "music_avqa", "sqa3d", "vggsound", "touchqa", "thermalqa"): the reference's prompt
            text, question processing, target normalisation and 77-token truncation for that dataset (DESIGN §3).
            Saved with the processor; `prompt_preset=` in a call overrides it. None: the default prompts.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        image_processor: CremaVideoProcessor | None = None,
        feature_extractor: Any = None,
        point_cloud_feature_extractor: CremaPointCloudFeatureExtractor | None = None,
        modality_key_map: dict[str, str] | None = None,
        prompt_modality_word: str | None = None,
        num_audio_segments: int = 2,
        max_prompt_length: int | None = None,
        max_answer_length: int | None = None,
        prompt_preset: str | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ):
        if tokenizer is None:
            raise ValueError("CremaProcessor needs the tokenizer of the model's language model.")
        if "video_processor" in kwargs:  # accepted alias of `image_processor`
            if image_processor is not None:
                raise TypeError("Pass either `image_processor` or its alias `video_processor`, not both.")
            image_processor = kwargs.pop("video_processor")
        self.modality_key_map = dict(modality_key_map or {})
        self.prompt_modality_word = prompt_modality_word
        self.num_audio_segments = num_audio_segments
        self.max_prompt_length = max_prompt_length
        self.max_answer_length = max_answer_length
        preset = get_prompt_preset(prompt_preset)
        self.prompt_preset = preset.name if preset is not None else None
        super().__init__(
            tokenizer=tokenizer,
            image_processor=image_processor if image_processor is not None else CremaVideoProcessor(),
            feature_extractor=feature_extractor if feature_extractor is not None else CremaAudioFeatureExtractor(),
            point_cloud_feature_extractor=point_cloud_feature_extractor
            if point_cloud_feature_extractor is not None
            else CremaPointCloudFeatureExtractor(),
            chat_template=chat_template,
            **kwargs,
        )

    @classmethod
    def from_model_config(
        cls,
        config: Any,
        tokenizer: Any,
        depth_model_name_or_path: str | os.PathLike | None = None,
        audio_feature_extractor: Any = None,
        **kwargs: Any,
    ) -> "CremaProcessor":
        """A processor whose shapes match a `CremaConfig`: `num_frames` frames at `vision_config.image_size`,
        `num_audio_segments` audio segments, `max_points` points.

        Args:
            config: the model's `CremaConfig`.
            tokenizer: the tokenizer of the model's language model.
            depth_model_name_or_path (`str`, *optional*): a `transformers` depth-estimation model (Hub id or local
                folder) for the depth and normal modalities. Loaded on first use, saved with the processor.
            audio_feature_extractor (*optional*): the audio feature extractor, e.g.
                `AutoFeatureExtractor.from_pretrained(audio_encoder_path)` (any `transformers` audio feature
                extractor, applied per segment). By default an `ASTFeatureExtractor` sized like `audio_config` when
                the model has an AST audio encoder, else the BEATs fbank (`CremaAudioFeatureExtractor`).
            kwargs: passed to `CremaProcessor` (e.g. `modality_key_map`, `prompt_modality_word`).
        """
        size = config.vision_config.image_size
        video_processor = CremaVideoProcessor(
            num_frames=config.num_frames,
            size={"height": size, "width": size},
            depth_model_name_or_path=depth_model_name_or_path,
        )
        audio_config = getattr(config, "audio_config", None)
        segments = getattr(config, "num_audio_segments", 2)
        if audio_feature_extractor is not None:
            audio = audio_feature_extractor
        elif audio_config is not None and getattr(audio_config, "model_type", None) == "audio-spectrogram-transformer":
            from transformers import ASTFeatureExtractor

            audio = ASTFeatureExtractor(num_mel_bins=audio_config.num_mel_bins, max_length=audio_config.max_length)
        else:
            audio = CremaAudioFeatureExtractor(num_segments=segments)
        points = CremaPointCloudFeatureExtractor(num_points=getattr(config, "max_points", 5000))
        kwargs.setdefault("num_audio_segments", segments)
        return cls(tokenizer, image_processor=video_processor, feature_extractor=audio,
                   point_cloud_feature_extractor=points, **kwargs)

    @property
    def video_processor(self) -> CremaVideoProcessor:
        """The visual-modality processor (stored as `image_processor`)."""
        return self.image_processor

    # ---------------------------------------------------------------------------------------- loading
    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Tokenizer through AutoTokenizer; the other sub-processors rebuilt from `processor_config.json` with our
        own classes (or a `transformers` audio feature extractor class, for pass-through audio)."""
        processor_dict = processor_dict or {}
        subfolder = kwargs.pop("subfolder", "")
        args = []
        for attribute in cls.get_attributes():
            if attribute == "tokenizer":
                args.append(_load_tokenizer(pretrained_model_name_or_path, subfolder, **kwargs))
                continue
            config = dict(processor_dict.get(attribute) or {})
            class_name = None
            for type_key in ("video_processor_type", "image_processor_type", "feature_extractor_type"):
                class_name = config.pop(type_key, None) or class_name
            config.pop("processor_class", None)
            if class_name is None:
                args.append(None)  # falls back to the default in __init__
                continue
            sub_class = _LOCAL_SUBPROCESSOR_CLASSES.get(class_name)
            if sub_class is None:
                import transformers

                sub_class = getattr(transformers, class_name, None)
                if sub_class is None:
                    raise ValueError(f"Unknown {attribute} class {class_name!r} in the processor config.")
            args.append(sub_class(**config))
        return args

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict[str, Any], **kwargs: Any):
        # keep the saved `auto_map`, so a loaded processor serialises exactly like the one that was saved
        result = super().from_args_and_dict(args, processor_dict, **kwargs)
        processor = result[0] if isinstance(result, tuple) else result
        if processor_dict.get("auto_map") is not None:
            processor.auto_map = processor_dict["auto_map"]
        return result

    # ----------------------------------------------------------------------------------------- prompts
    def get_prompt_preset(self, prompt_preset: str | PromptPreset | None = None) -> PromptPreset | None:
        """The preset in effect: `prompt_preset` when given ("" for none), else the processor's `prompt_preset`."""
        return get_prompt_preset(self.prompt_preset if prompt_preset is None else prompt_preset)

    def build_prompt(
        self,
        question: str,
        options: Sequence[str] | None = None,
        modality_word: str | None = None,
        situation: str | None = None,
        modalities: Sequence[str] = (),
        prompt_preset: str | PromptPreset | None = None,
    ) -> str:
        """The DESIGN §3 prompt: multiple choice when `options` are given, else open-ended with the modality word
        (`modality_word`, else the preset's, else the processor's `prompt_modality_word`, else inferred from
        `modalities`). With a prompt preset (`prompt_preset=` or the processor's) the text is the reference's for
        that dataset (see `PromptPreset`)."""
        preset = self.get_prompt_preset(prompt_preset)
        if preset is not None:
            word = None if options else (
                modality_word or preset.modality_word or self.prompt_modality_word or infer_modality_word(modalities)
            )
            return preset.build_prompt(question, options, situation, word)
        if options:
            return build_multiple_choice_prompt(question, options)
        word = modality_word or self.prompt_modality_word or infer_modality_word(modalities)
        return build_open_ended_prompt(question, word, situation)

    def build_target(
        self, answer: int | str, options: Sequence[str] | None = None, prompt_preset: str | PromptPreset | None = None
    ) -> str:
        """`Option {L}` for multiple choice (answer given as index, letter or option text), else the answer (with the
        preset's answer normalisation, e.g. MUSIC-AVQA's `_` -> space)."""
        preset = self.get_prompt_preset(prompt_preset)
        if preset is not None:
            return preset.build_target(answer, options)
        if options:
            return multiple_choice_target(answer, options)
        return str(answer).strip()

    def generation_kwargs(self, prompt_preset: str | PromptPreset | None = None) -> dict[str, Any]:
        """`generate` arguments for open-ended answers: the preset's (beam 5, length penalty -1, 10 new tokens, 40
        for SQA3D), or those defaults without a preset."""
        preset = self.get_prompt_preset(prompt_preset)
        return (preset or PromptPreset("default")).generation_kwargs()

    # -------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        videos: Any = None,
        question: str | Sequence[str] | None = None,
        options: Sequence[str] | Sequence[Sequence[str]] | None = None,
        answer: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        flow: bool = False,
        depth: bool = False,
        normal: bool = False,
        include_video: bool = True,
        thermal: Any = None,
        touch: Any = None,
        visual: Mapping[str, Any] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        point_cloud: Any = None,
        situation: str | Sequence[str] | None = None,
        modality_word: str | None = None,
        prompt_preset: str | PromptPreset | None = None,
        training: bool = False,
        generator: np.random.Generator | int | None = None,
        num_frames: int | None = None,
        depth_estimator: Any = None,
        return_frame_indices: bool = False,
        padding: bool | str = "longest",
        return_tensors: str | TensorType | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        r"""Prepare one example or a batch for `CremaForConditionalGeneration`.

        Args:
            videos: the RGB clip(s): a video path, a folder of frames, a frames array (T, H, W, C), or a list of
                these for a batch. Produces `video_pixel_values` unless `include_video=False`.
            question / options / answer: text of each example (a str or a list). With `options` (a list of
                strings, or one list per example) the multiple-choice prompt and target `Option {L}` are built;
                `answer` may then be the option index, its letter, or its text. Without options: open-ended.
            text: ready-made prompt(s), used verbatim instead of `question`/`options`.
            flow / depth / normal: derive these visual modalities from `videos` (depth and normals need the
                video processor's `depth_model_name_or_path`, or `depth_estimator=`: a model id or path, a
                `DepthEstimator`, or a callable frames -> depth maps).
            thermal / touch: companion clips (same forms as `videos`), read at the RGB frames' time positions.
            visual: more companion visual modalities by name, e.g. `{"ir": path}` or a precomputed `{"depth": path}`.
            audio: `True` (each video's own audio track), an audio/video file path, a waveform array (with
                `sampling_rate`), a `(waveform, sampling_rate)` pair, or a list of these. Any sample rate or
                channel count is resampled to the feature extractor's rate and downmixed to mono.
            point_cloud: a features path (voxels beside it), a `(features, coordinates)` pair or dict, or a list.
            situation: SQA3D situation text, prepended to open-ended prompts.
            modality_word: overrides the open-ended prompt's modality word.
            prompt_preset: a per-dataset preset name of `PROMPT_PRESETS` for this call (overrides the processor's
                `prompt_preset`; "" for none): the reference's prompt, target and truncation for that dataset.
            training: random frame index per segment / random point subsampling (seed it with `generator`).
            return_frame_indices: also return `{m}_frame_indices` (B, T) (not a model input; for inspection).

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `labels` (when `answer` is given, padding -100),
            and per modality `{m}_pixel_values` (B, T, 3, H, W), `{m}_input_values` (B, S, frames, mel), or
            `{m}_features` (B, N, D) + `{m}_coordinates` (B, N, 3) + `{m}_attention_mask` (B, N).
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments for CremaProcessor: {sorted(kwargs)}.")
        batch_size = _infer_batch_size(videos, question, text, audio, point_cloud)
        data: dict[str, Any] = {}
        present: list[str] = []

        # ----- visual modalities
        companions = {name: clip for name, clip in (("thermal", thermal), ("touch", touch)) if clip is not None}
        companions.update(visual or {})
        derived = [name for name, wanted in zip(DERIVED_MODALITIES, (flow, depth, normal)) if wanted]
        visual_modalities = (["video"] if include_video and videos is not None else []) + derived
        if visual_modalities or companions:
            visual_out = self.image_processor(
                videos,
                modalities=visual_modalities,
                companions=companions,
                training=training,
                generator=generator,
                num_frames=num_frames,
                depth_estimator=depth_estimator,
                return_tensors=None,
            )
            for key, value in visual_out.items():
                if key.endswith("_frame_indices") and not return_frame_indices:
                    continue
                data[key] = value
            present += [k[: -len("_pixel_values")] for k in visual_out if k.endswith("_pixel_values")]
            _check_batch(data, batch_size)

        # ----- audio
        if audio is not None and audio is not False:
            data["audio_input_values"] = self._audio_features(audio, videos, sampling_rate, batch_size)
            present.append("audio")

        # ----- point clouds
        if point_cloud is not None:
            clouds = self.point_cloud_feature_extractor(point_cloud, training=training, generator=generator)
            for key, value in clouds.items():
                data[f"point_cloud_{key}"] = value
            present.append("point_cloud")

        # ----- text
        if text is not None or question is not None:
            text_inputs = self._text_inputs(
                batch_size, question, options, answer, text, situation, modality_word, present, padding,
                self.get_prompt_preset(prompt_preset),
            )
            data.update(text_inputs)
        elif answer is not None:
            raise ValueError("`answer` was given without a `question` (or `text`) to build the prompt from.")

        for key, value in data.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"Input `{key}` contains NaN or infinite values.")
        data = {self._rename(key): value for key, value in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def _rename(self, key: str) -> str:
        for name, new_name in self.modality_key_map.items():
            if key.startswith(name + "_") and key[len(name) + 1 :] in _MODALITY_SUFFIXES:
                return f"{new_name}_{key[len(name) + 1:]}"
        return key

    def _audio_features(self, audio: Any, videos: Any, sampling_rate: int | None, batch_size: int) -> np.ndarray:
        """Decode/resample every clip's audio and featurize it to (B, S, ...)."""
        target_rate = getattr(self.feature_extractor, "sampling_rate", 16000)
        if audio is True:
            if videos is None:
                raise ValueError("`audio=True` takes the audio track of `videos`, but no video was given.")
            clips = [videos] if _is_single_clip(videos) else list(videos)
            if not all(isinstance(c, (str, os.PathLike)) for c in clips):
                raise ValueError("`audio=True` needs video file paths; pass the waveforms via `audio=` instead.")
            items: list[Any] = clips
        elif isinstance(audio, (str, os.PathLike)) or _is_single_waveform(audio):
            items = [audio]
        else:
            items = list(audio)
        if len(items) != batch_size:
            raise ValueError(f"Got {len(items)} audio input(s) for a batch of {batch_size}.")
        waveforms = []
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                waveforms.append(load_audio(item, sampling_rate=target_rate))
                continue
            if isinstance(item, tuple) and len(item) == 2 and np.isscalar(item[1]):
                item, rate = item
            else:
                rate = sampling_rate
            if rate is None:
                raise ValueError(
                    "A raw audio waveform needs its sampling rate: pass `sampling_rate=` or `(waveform, rate)` pairs."
                )
            waveform = resample_waveform(np.asarray(item, dtype=np.float32), int(rate), target_rate)
            if waveform.size == 0 or not np.isfinite(waveform).all():
                raise ValueError("Modality 'audio': the waveform is empty or contains NaN/infinite values.")
            waveforms.append(waveform)
        return extract_audio_features(waveforms, target_rate, self.feature_extractor, self.num_audio_segments)

    def _text_inputs(
        self, batch_size, question, options, answer, text, situation, modality_word, present, padding, preset=None
    ):
        questions = _as_list(question, batch_size, "question") if question is not None else [None] * batch_size
        option_lists = _as_option_lists(options, batch_size)
        situations = _as_list(situation, batch_size, "situation") if situation is not None else [None] * batch_size
        if text is not None:
            prompts = _as_list(text, batch_size, "text")
        else:
            prompts = [
                self.build_prompt(q, o, modality_word, s, present, prompt_preset=preset or "")
                for q, o, s in zip(questions, option_lists, situations)
            ]
        max_prompt_length = self.max_prompt_length
        max_answer_length = self.max_answer_length
        if preset is not None:
            max_prompt_length = preset.max_prompt_tokens if max_prompt_length is None else max_prompt_length
            max_answer_length = preset.max_answer_tokens if max_answer_length is None else max_answer_length
        encoded = self.tokenizer(
            prompts,
            padding=padding,
            truncation=max_prompt_length is not None,
            max_length=max_prompt_length,
            return_tensors="np",
        )
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if answer is not None:
            answers = _as_list(answer, batch_size, "answer")
            targets = [self.build_target(a, o, prompt_preset=preset or "") for a, o in zip(answers, option_lists)]
            labels = self.tokenizer(
                targets,
                padding=padding,
                truncation=max_answer_length is not None,
                max_length=max_answer_length,
                return_tensors="np",
            )["input_ids"].astype(np.int64)
            labels[labels == self.tokenizer.pad_token_id] = -100
            out["labels"] = labels
        return out

    # ------------------------------------------------------------------------------------------ decoding
    def decode_answers(
        self,
        sequences: torch.Tensor | Sequence[Sequence[int]] | Sequence[str],
        options: Sequence[str] | Sequence[Sequence[str]] | None = None,
        prompt_preset: str | PromptPreset | None = None,
    ) -> list[str]:
        """Generated ids (or texts) -> answers: `Option B` -> the text of option B for multiple choice; the
        stripped text for open-ended; empty output -> "unanswerable" (the preset's `empty_answer`)."""
        if len(sequences) and isinstance(sequences[0], str):
            texts = list(sequences)
        else:
            texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        option_lists = _as_option_lists(options, len(texts))
        preset = self.get_prompt_preset(prompt_preset)
        if preset is not None:
            return [preset.post_process(t, o) for t, o in zip(texts, option_lists)]
        return [post_process_answer(t, o) for t, o in zip(texts, option_lists)]

    def option_letter_token_ids(self, num_options: int = 5) -> list[int]:
        """Token id of each option letter (A, B, ...), for scoring multiple choice by the letter logits."""
        ids = []
        for letter in OPTION_LETTERS[:num_options]:
            tokens = self.tokenizer(letter, add_special_tokens=False).input_ids
            if len(tokens) != 1:
                raise ValueError(f"Option letter {letter!r} is not a single token for this tokenizer: {tokens}.")
            ids.append(tokens[0])
        return ids


_MODALITY_SUFFIXES = ("pixel_values", "input_values", "features", "coordinates", "attention_mask", "frame_indices")


def _is_single_waveform(value: Any) -> bool:
    if isinstance(value, tuple) and len(value) == 2 and np.isscalar(value[1]):
        return True
    if hasattr(value, "ndim"):
        return value.ndim == 1 or (value.ndim == 2 and min(value.shape) <= 8)
    return False


def _as_list(value: Any, batch_size: int, name: str) -> list[Any]:
    values = [value] if isinstance(value, (str, int)) or value is None else list(value)
    if len(values) != batch_size:
        raise ValueError(f"Got {len(values)} {name}(s) for a batch of {batch_size}.")
    return values


def _as_option_lists(options: Any, batch_size: int) -> list[Sequence[str] | None]:
    if options is None:
        return [None] * batch_size
    options = list(options)
    if options and all(isinstance(o, str) for o in options):
        return [options] * batch_size
    if len(options) != batch_size:
        raise ValueError(f"Got {len(options)} option lists for a batch of {batch_size}.")
    return [list(o) if o is not None else None for o in options]


def _infer_batch_size(videos: Any, question: Any, text: Any, audio: Any, point_cloud: Any) -> int:
    """The batch size from the first batched input (a single example when nothing is a list)."""
    if videos is not None:
        return 1 if _is_single_clip(videos) else len(videos)
    for value in (question, text):
        if value is not None:
            return 1 if isinstance(value, str) else len(value)
    if audio is not None and audio is not True:
        return 1 if isinstance(audio, (str, os.PathLike)) or _is_single_waveform(audio) else len(audio)
    if point_cloud is not None:
        return 1 if _is_single_scene(point_cloud) else len(point_cloud)
    return 1


def _check_batch(data: dict[str, Any], batch_size: int) -> None:
    for key, value in data.items():
        if len(value) != batch_size:
            raise ValueError(f"`{key}` has {len(value)} rows for a batch of {batch_size}.")


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")


def _load_tokenizer(pretrained_model_name_or_path: Any, subfolder: str = "", **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained`, without building the folder's model config when its model type is custom.

    AutoTokenizer first loads the model config of the folder. A CREMA model folder's `config.json` has
    `model_type: crema`, which only its own (remote) code can build: without `trust_remote_code` AutoTokenizer would
    ask whether to run that code (waiting 15 s for an answer), then fall back to a blank config with a warning
    about "a model of type ``". The tokenizer class comes from `tokenizer_config.json` anyway, and the model-type
    specific tokenizer fixes of AutoTokenizer only concern built-in model types, so for a model type transformers
    does not know, a blank config (carrying the config's `tokenizer_class`, if any) is passed instead.
    `trust_remote_code` is forwarded, for tokenizers that are custom code themselves."""
    if kwargs.get("config") is None:
        config_dict = _model_config_dict(pretrained_model_name_or_path, subfolder, kwargs)
        model_type = (config_dict or {}).get("model_type")
        if model_type and model_type not in CONFIG_MAPPING:
            blank = {"tokenizer_class": config_dict["tokenizer_class"]} if config_dict.get("tokenizer_class") else {}
            kwargs["config"] = PreTrainedConfig(**blank)
    return AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)


def _model_config_dict(pretrained_model_name_or_path: Any, subfolder: str, kwargs: dict[str, Any]) -> dict | None:
    """The folder's `config.json` as a dict, or None when there is none (a processor-only folder)."""
    hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if kwargs.get(key) is not None}
    path = cached_file(
        pretrained_model_name_or_path,
        CONFIG_NAME,
        subfolder=subfolder,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError:
            return None
    return config if isinstance(config, dict) else None


def register_crema_processor(config_class: Any = None) -> None:
    """Make `AutoProcessor.from_pretrained(dir)` find `CremaProcessor` in this session (the saved
    `processor_config.json` also carries an `auto_map` for `trust_remote_code=True` loading elsewhere). With
    `CremaConfig` (used automatically when `modeling_crema` is already imported) it is also found from a model
    folder whose `config.json` says `model_type: crema`."""
    if config_class is None and "modeling_crema" in sys.modules:
        config_class = getattr(sys.modules["modeling_crema"], "CremaConfig", None)
    AutoProcessor.register("crema", CremaProcessor, exist_ok=True)
    if config_class is not None:
        AutoProcessor.register(config_class, CremaProcessor, exist_ok=True)


CremaProcessor.register_for_auto_class("AutoProcessor")
if not __name__.startswith("transformers_modules"):  # a remote-code copy must not shadow the installed class
    register_crema_processor()
