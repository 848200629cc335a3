"""CREMA: a frozen BLIP-2 (ViT + Q-Former + T5) that reads any number of modalities through per-modality MMQA adapters.

Data flow for one clip (DESIGN §1):
  modality m inputs -> frozen encoder (pre-LayerNorm states) -> MMQA_m input LayerNorm (+ projection)
  -> frozen Q-Former routed to LoRA_m, with m's own query tokens -> MMQA_m language projection -> (B, G, Q, H)
  -> major modality and the self-gated fusion of the supportive ones (or their plain concatenation), laid out
  with frame/modality prefixes (`token_layout.py`) -> ++ prompt embeddings -> frozen T5 -> answer.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from peft import LoraConfig
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, AutoModelForSeq2SeqLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2VisionModel
from transformers.utils import ModelOutput, logging

from .adapters import (
    adapter_fit_problem,
    adapter_state_dict,
    checkpoint_with_routing,
    expected_adapter_shapes,
    inject_modality_adapter,
    load_adapter_state_dict,
    modality_lora_config,
    modality_module,
    read_adapter_folder,
    remove_modality_adapter,
    route_to_modality,
    write_adapter_folder,
)
from .configuration_crema import CremaConfig, make_modality_spec
from .fusion import SelfGatedFusion, read_fusion_folder, write_fusion_folder
from .mmqa import ModalityQueryAdapter, QueryTokens, kaiming_uniform_, sinusoidal_point_embedding
from .modality_names import DEFAULT_MODALITY_PREFIXES
from .saving import atomic_directory, recover_interrupted_save
from .token_layout import LAYOUTS, LayoutParts

logger = logging.get_logger(__name__)

ADAPTERS_FOLDER = "adapters"
FUSION_FOLDER = "fusion"
#: Per-modality input keys are `{modality}_{suffix}`.
MODALITY_INPUT_SUFFIXES = (
    "pixel_values", "input_values", "features", "attention_mask", "coordinates", "mmqa_embeds"
)
#: Extra keyword arguments that `forward` passes on to the language model.
LANGUAGE_MODEL_KWARGS = ("output_attentions", "output_hidden_states", "use_cache", "past_key_values", "encoder_outputs")


@dataclass
class CremaForConditionalGenerationOutput(ModelOutput):
    """
    loss: seq2seq cross-entropy on the answer tokens (when `labels` are given).
    logits: (B, answer_length, vocab) scores of the language model.
    modality_embeds: per modality, its MMQA output in LLM space, (B, G, num_query_tokens, text_hidden) (one per
        prompt, also with `clip_index`).
    inputs_embeds / attention_mask: what the language-model encoder saw (visual tokens then the prompt).
    used_modalities: the modalities that contributed, in order.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    modality_embeds: dict[str, torch.Tensor] | None = None
    inputs_embeds: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    used_modalities: list[str] | None = None
    language_model_outputs: Any = None


class CremaPreTrainedModel(PreTrainedModel):
    config: CremaConfig
    config_class = CremaConfig
    base_model_prefix = "crema"
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _keep_in_fp32_modules = ["query_tokens", "qformer", "mmqa"]
    _no_split_modules = ["Blip2Attention", "Blip2QFormerMultiHeadAttention", "Blip2EncoderLayer", "T5Block"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        # Zero queries would reach the Q-Former LayerNorm (eps 1e-12) as constant rows: start them random.
        if isinstance(module, CremaForConditionalGeneration):
            init.normal_(module.query_tokens, mean=0.0, std=std)
        elif isinstance(module, QueryTokens):
            init.normal_(module.weight, mean=0.0, std=std)


class CremaForConditionalGeneration(CremaPreTrainedModel, GenerationMixin):
    """Frozen BLIP-2 backbone + one MMQA PEFT adapter per modality + the self-gated fusion.

    Only the MMQA adapters (`lora_*` in the Q-Former and `mmqa.<m>`) and `fusion` are trainable.
    """

    _auto_class = "AutoModelForImageTextToText"
    accepts_loss_kwargs = False

    def __init__(self, config: CremaConfig):
        super().__init__(config)
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        self.audio_model = AutoModel.from_config(config.audio_config) if config.audio_config is not None else None
        # BLIP-2's own query tokens and language projection: every new modality's MMQA starts as a copy of them.
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.d_model)
        self.language_model = AutoModelForSeq2SeqLM.from_config(config.text_config)
        self.mmqa = nn.ModuleDict()
        self.fusion: SelfGatedFusion | None = None
        self.prefix_tokenizer = None  # the LLM's tokenizer, when known: tokenises prefixes of new modalities
        self.post_init()

        requested, fusion_modalities = config.modalities, config.fusion_modalities
        config.modalities, config.fusion_modalities = [], None
        for spec in requested:
            self.add_modality(**spec)
        if config.use_fusion and fusion_modalities:
            self.set_fusion(fusion_modalities)
        self._update_trainable_parameters()

    # ----------------------------------------------------------------------------------------- backbone plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_encoder(self, modality: str | None = None):
        return self.language_model.get_encoder() if modality is None else super().get_encoder(modality=modality)

    def train(self, mode: bool = True) -> "CremaForConditionalGeneration":
        """Frozen encoders and the LLM always run in eval mode (no dropout), as at inference."""
        super().train(mode)
        for frozen in (self.vision_model, self.audio_model, self.language_model):
            if frozen is not None:
                frozen.eval()
        return self

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=checkpoint, **kwargs):
        """Activation checkpointing; Q-Former layers recompute under the same modality routing as their forward."""
        if enable:
            gradient_checkpointing_func = checkpoint_with_routing(self, gradient_checkpointing_func)
        super()._set_gradient_checkpointing(
            enable=enable, gradient_checkpointing_func=gradient_checkpointing_func, **kwargs
        )

    def _update_trainable_parameters(self) -> None:
        """Freezes everything except LoRA weights, the trainable MMQA copies and the fusion."""
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(is_trainable_parameter_name(name))

    def print_trainable_parameters(self) -> None:
        """Trainable parameters per modality adapter and fusion (as PEFT models print them)."""
        from .parameter_report import format_parameter_table, trainable_parameter_rows

        print(format_parameter_table(trainable_parameter_rows(self)))

    # ----------------------------------------------------------------------------------------- modality adapters
    def add_modality(
        self,
        name: str,
        encoder: str | None = None,
        feature_size: int | None = None,
        prefix: str | None = None,
        prefix_token_ids: list[int] | None = None,
        lora_config: LoraConfig | None = None,
        layer_norm_eps: float | None = None,
    ) -> None:
        """Attaches a new MMQA adapter for modality `name`, initialised from BLIP-2's queries and projection.

        The frozen backbone is untouched; the adapter is one PEFT adapter named `name`.
        """
        if name in self.mmqa:
            raise ValueError(f"Modality {name!r} already has an adapter; `remove_modality({name!r})` first.")
        spec = make_modality_spec(name, encoder, feature_size, prefix, prefix_token_ids, layer_norm_eps)
        if spec["feature_size"] is None:
            spec["feature_size"] = self.config.default_feature_size(spec["encoder"])
        if not spec["prefix_token_ids"]:
            spec["prefix_token_ids"] = self._tokenize_prefix(spec["prefix"])
        self._check_encoder_width(spec)
        self.mmqa[name] = self._new_query_adapter(
            spec["feature_size"], copy_vision_layernorm=spec["encoder"] == "vision", layer_norm_eps=layer_norm_eps
        )
        lora_config = lora_config or modality_lora_config(
            name,
            self.config.lora_rank,
            self.config.lora_alpha,
            self.config.lora_dropout,
            base_model_name_or_path=self.config.name_or_path or None,
        )
        inject_modality_adapter(self, lora_config, name)
        self.config.modalities = self.config.modalities + [spec]
        self._update_trainable_parameters()
        self.train(self.training)  # new modules follow the model's mode (no dropout in an eval-mode model)

    def _check_encoder_width(self, spec: dict) -> None:
        if spec["encoder"] == "audio" and self.audio_model is not None:
            if spec["feature_size"] != self.config.audio_config.hidden_size:
                raise ValueError(
                    f"Modality {spec['name']!r}: feature_size {spec['feature_size']} differs from the audio "
                    f"encoder's width {self.config.audio_config.hidden_size}."
                )

    def build_query_adapter(self, feature_size: int, layer_norm_eps: float | None = None) -> ModalityQueryAdapter:
        """A bare MMQA module (queries, LayerNorm, projections) for features of width `feature_size`."""
        config = self.config
        return ModalityQueryAdapter(
            feature_size=feature_size,
            encoder_hidden_size=config.vision_config.hidden_size,
            qformer_hidden_size=config.qformer_config.hidden_size,
            text_hidden_size=config.text_config.d_model,
            num_query_tokens=config.num_query_tokens,
            layer_norm_eps=config.vision_config.layer_norm_eps if layer_norm_eps is None else layer_norm_eps,
        )

    def _new_query_adapter(
        self, feature_size: int, copy_vision_layernorm: bool = True, layer_norm_eps: float | None = None
    ) -> ModalityQueryAdapter:
        adapter = self.build_query_adapter(feature_size, layer_norm_eps).to(device=self.query_tokens.device)
        with torch.no_grad():
            adapter.query_tokens.weight.copy_(self.query_tokens)
            adapter.language_projection.load_state_dict(self.language_projection.state_dict())
            # Visual modalities start from the ViT's post-LayerNorm (LAVIS `ln_vision`); others from ones/zeros.
            if copy_vision_layernorm:
                adapter.input_layernorm.load_state_dict(self.vision_model.post_layernorm.state_dict())
            if adapter.input_projection is not None:
                kaiming_uniform_(adapter.input_projection)
        return adapter

    def remove_modality(self, name: str) -> None:
        """Detaches modality `name` (its LoRA, queries and projections); the backbone is untouched."""
        self.config.modality(name)
        remove_modality_adapter(self, name)
        self.config.modalities = [spec for spec in self.config.modalities if spec["name"] != name]

    def save_adapter(self, save_directory: str | os.PathLike, modality: str, card: bool = True) -> None:
        """Writes modality `modality` as a plain PEFT adapter folder (atomically), with its Hub card (README.md) when
        `card` and `crema_hub_cards` is importable; a README.md the user wrote there is kept."""
        spec = self.config.modality(modality)
        finish = (lambda staging: _write_hub_card("adapter", staging, save_directory)) if card else None
        write_adapter_folder(save_directory, self.peft_config[modality], adapter_state_dict(self, modality), spec,
                             finish=finish)

    def load_adapter(
        self,
        pretrained_model_name_or_path: str | os.PathLike,
        adapter_name: str | None = None,
        subfolder: str | None = None,
        **hub_kwargs: Any,
    ) -> str:
        """Loads a modality adapter from a folder or Hub repo; replaces a loaded one of the same name (hot swap).

        Everything is read and checked before the model is touched; any problem is one `ValueError` naming the
        folder, and the model stays exactly as it was. Returns the modality name. The backbone is never reloaded.
        """
        folder = read_adapter_folder(pretrained_model_name_or_path, subfolder, **hub_kwargs)
        name = adapter_name or folder.saved_modality or os.path.basename(
            os.path.normpath(str(subfolder or pretrained_model_name_or_path))
        )
        saved_spec = {key: value for key, value in (folder.spec or {}).items() if key != "name"}
        try:
            spec = make_modality_spec(name, **saved_spec)
        except ValueError as error:
            raise ValueError(f"{folder.location}: {error}") from None
        tensors = folder.renamed(name)
        if spec["feature_size"] is None:
            spec["feature_size"] = _infer_feature_size(tensors, self.config.default_feature_size(spec["encoder"]))
        lora_config = copy.deepcopy(folder.lora_config)
        lora_config.modules_to_save = [f"mmqa.{name}"]
        try:
            self._check_encoder_width(spec)
            problem = adapter_fit_problem(
                expected_adapter_shapes(self, name, lora_config, spec["feature_size"]), tensors
            )
            if problem:
                raise ValueError(f"Adapter for modality {name!r} does not fit this model: {problem}.")
        except ValueError as error:
            raise ValueError(f"{folder.location}: {error}") from None
        if not spec["prefix_token_ids"]:  # e.g. made without a tokenizer, or converted: tokenise its prefix text
            spec["prefix_token_ids"] = self._tokenize_prefix(spec["prefix"])
        with self._restored_on_failure(name):
            position = self.config.modality_names.index(name) if name in self.mmqa else None
            if position is not None:
                self.remove_modality(name)
            spec.pop("name")
            self.add_modality(name, lora_config=lora_config, **spec)
            load_adapter_state_dict(self, name, tensors)
            if position is not None:  # a swapped adapter keeps its place (the first modality is the major one)
                self._move_modality(name, position)
        return name

    @contextlib.contextmanager
    def _restored_on_failure(self, name: str) -> Iterator[None]:
        """Puts modality `name` back exactly as it was (spec, tensors, PEFT config, position) if the block fails."""
        modalities = copy.deepcopy(self.config.modalities)
        previous = None
        if name in self.mmqa:
            previous = (adapter_state_dict(self, name), self.peft_config[name])
        try:
            yield
        except BaseException:
            if name in self.mmqa:
                remove_modality_adapter(self, name)
            if previous is not None:
                tensors, lora_config = previous
                old_spec = next(spec for spec in modalities if spec["name"] == name)
                self.config.modalities = [spec for spec in modalities if spec["name"] != name]
                self.add_modality(lora_config=lora_config, **old_spec)
                load_adapter_state_dict(self, name, tensors)
            self.config.modalities = modalities
            self._update_trainable_parameters()
            raise
        self._update_trainable_parameters()

    def _move_modality(self, name: str, position: int) -> None:
        specs = [spec for spec in self.config.modalities if spec["name"] != name]
        specs.insert(position, self.config.modality(name))
        self.config.modalities = specs

    def push_adapter_to_hub(
        self,
        repo_id: str,
        modality: str,
        private: bool | None = None,
        token: str | bool | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Pushes one modality adapter to its own Hub repo; returns the commit URL."""
        import tempfile

        with tempfile.TemporaryDirectory() as staging:
            folder = os.path.join(staging, modality)
            self.save_adapter(folder, modality)
            _write_hub_card("adapter", folder, folder, repo_id)  # the card's snippets name the repo
            return self._upload_folder(
                folder, repo_id, commit_message or f"Upload CREMA {modality} adapter", private=private, token=token
            )

    # ----------------------------------------------------------------------------------------------------- fusion
    def set_fusion(self, modalities: list[str] | None) -> None:
        """Builds a fresh self-gated fusion over `modalities` (major first); `None` switches to plain concat."""
        if not modalities:
            self.fusion, self.config.fusion_modalities, self.config.use_fusion = None, None, False
            return
        for name in modalities:
            self.config.modality(name)
        self.fusion = SelfGatedFusion(self.config.text_config.d_model, list(modalities)).to(self.query_tokens.device)
        self.config.fusion_modalities, self.config.use_fusion = list(modalities), True
        self._update_trainable_parameters()
        self.train(self.training)

    def save_fusion(self, save_directory: str | os.PathLike) -> None:
        if self.fusion is None:
            raise ValueError("This model has no fusion module (plain concatenation); nothing to save.")
        write_fusion_folder(save_directory, self.fusion.modalities, self.fusion.hidden_size, self.fusion.state_dict())

    def load_fusion(self, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **hub_kwargs):
        """Loads a fusion module; its modalities must all have adapters on this model.

        The folder is read and checked first; on any problem the current fusion stays as it was.
        """
        saved = read_fusion_folder(pretrained_model_name_or_path, subfolder, **hub_kwargs)
        missing = [name for name in saved.modalities if name not in self.mmqa]
        if missing:
            raise ValueError(
                f"{saved.location}: the fusion was trained on modalities {saved.modalities}, but this model has no "
                f"adapter for {missing}; load those adapters first."
            )
        width = self.config.text_config.d_model
        if saved.hidden_size != width:
            raise ValueError(f"{saved.location}: the fusion was saved for LLM width {saved.hidden_size}, this model's "
                             f"is {width}.")
        previous = (self.fusion, self.config.fusion_modalities, self.config.use_fusion)
        try:
            self.set_fusion(saved.modalities)
            self.fusion.load_state_dict(saved.tensors)
        except BaseException:
            self.fusion, self.config.fusion_modalities, self.config.use_fusion = previous
            self._update_trainable_parameters()
            raise

    def set_prefix_tokens(self, tokenizer) -> None:
        """Stores the token ids of the frame prefixes ("Frame 1: ", ...) and of each modality's prefix.

        The tokenizer is kept (not saved) so that modalities added or loaded later get their prefixes tokenised
        too. An empty tokenizer (e.g. what `AutoTokenizer` returns for a folder without tokenizer files) is
        refused with a warning: the prefixes stay as they are.
        """
        if not tokenizer_is_usable(tokenizer):
            logger.warning_once(
                "The tokenizer given for CREMA's frame and modality prefixes is empty (a folder without tokenizer "
                "files?); the prefixes stay empty. Pass the LLM's tokenizer: `model.set_prefix_tokens(tokenizer)`."
            )
            return
        self.prefix_tokenizer = tokenizer
        template = self.config.frame_prefix_template
        if self.config.num_frames == 1 and self.config.token_layout.startswith("reference"):
            template = "Frame: "  # the authors' code names a single frame without a number
        self.config.frame_prefix_token_ids = [self._tokenize_prefix(template.format(i=i + 1))
                                              for i in range(self.config.num_frames)]
        for spec in self.config.modalities:
            spec["prefix_token_ids"] = self._tokenize_prefix(spec["prefix"])
        self.config.point_cloud_only_prefix_token_ids = self._tokenize_prefix(DEFAULT_MODALITY_PREFIXES["audio"])

    def _tokenize_prefix(self, text: str) -> list[int]:
        """Token ids of a prefix text, or [] (no prefix) when the model has no tokenizer."""
        tokenizer = getattr(self, "prefix_tokenizer", None)
        if tokenizer is None or not text:
            return []
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    # ---------------------------------------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode_frozen_features(self, modality: str, **inputs: torch.Tensor) -> torch.Tensor:
        """Runs only the frozen encoder of `modality`: (B, G, N, D) pre-LayerNorm states (what feature caches hold).

        Takes `{m}_pixel_values` (B, T, 3, H, W) for visual modalities, `{m}_input_values` (B, S, ...) for audio,
        or returns validated `{m}_features` as they are.
        """
        spec = self.config.modality(modality)
        features = inputs.get(f"{modality}_features")
        if features is not None:
            return self._check_features(spec, features)
        if spec["encoder"] == "vision":
            pixel_values = _require(inputs, modality, "pixel_values", "(B, T, 3, H, W) frames")
            return self._encode_frames(spec, pixel_values)
        if spec["encoder"] == "audio" and self.audio_model is not None:
            input_values = _require(inputs, modality, "input_values", "(B, S, ...) per-segment audio inputs")
            return self._encode_audio(spec, input_values)
        hint = ""
        if spec["encoder"] == "audio":
            hint = (" (e.g. BEATs outputs), or build the model with an audio encoder to feed it "
                    f"`{modality}_input_values`: `from_blip2(..., audio_encoder=\"MIT/ast-finetuned-audioset-10-10-0.4593\")`")
        raise ValueError(
            f"Modality {modality!r} (encoder {spec['encoder']!r}) has no encoder in this model: pass precomputed "
            f"`{modality}_features` of shape (B, N, {spec['feature_size']}) or (B, G, N, {spec['feature_size']})"
            f"{hint}."
        )

    def _encode_frames(self, spec: dict, pixel_values: torch.Tensor) -> torch.Tensor:
        name, size = spec["name"], self.config.vision_config.image_size
        check_finite(name, "pixel_values", pixel_values)
        if pixel_values.ndim != 5 or pixel_values.shape[2] != 3 or tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"Modality {name!r}: `{name}_pixel_values` must have shape (B, T, 3, {size}, {size}); "
                f"got {tuple(pixel_values.shape)}. Use the CREMA processor to sample and resize frames."
            )
        batch, frames = pixel_values.shape[:2]
        embeddings = self.vision_model.embeddings(pixel_values.flatten(0, 1).to(self.vision_model.dtype))
        # The ViT's states before `post_layernorm`: each MMQA applies its own LayerNorm (DESIGN §1.1).
        states = self.vision_model.encoder(inputs_embeds=embeddings).last_hidden_state
        return states.view(batch, frames, *states.shape[1:])

    def _encode_audio(self, spec: dict, input_values: torch.Tensor) -> torch.Tensor:
        name = spec["name"]
        check_finite(name, "input_values", input_values)
        if input_values.ndim < 3:
            raise ValueError(
                f"Modality {name!r}: `{name}_input_values` must be (B, S, ...) with S audio segments; "
                f"got {tuple(input_values.shape)}."
            )
        batch, segments = input_values.shape[:2]
        main_input = self.audio_model.main_input_name
        states = self.audio_model(**{main_input: input_values.flatten(0, 1).to(self.audio_model.dtype)}).last_hidden_state
        return states.view(batch, segments, *states.shape[1:])

    def _check_features(self, spec: dict, features: torch.Tensor) -> torch.Tensor:
        name, width = spec["name"], spec["feature_size"]
        check_finite(name, "features", features)
        if features.ndim == 3:
            features = features.unsqueeze(1)
        if features.ndim != 4 or features.shape[-1] != width:
            raise ValueError(
                f"Modality {name!r}: `{name}_features` must be (B, N, {width}) or (B, G, N, {width}) "
                f"(feature width {width}); got {tuple(features.shape)}."
            )
        return features

    def encode_modality(self, modality: str, **inputs: torch.Tensor) -> torch.Tensor:
        """One modality through its MMQA: (B, G, num_query_tokens, text_hidden) LLM-space query embeddings.
        `{m}_mmqa_embeds` (this output, computed earlier with the same weights) is returned as it is, checked: the
        sequential trainer reuses a modality's output while other modalities' adapters train."""
        spec = self.config.modality(modality)
        if inputs.get(f"{modality}_mmqa_embeds") is not None:
            return self._check_mmqa_embeds(modality, inputs)
        features = self.encode_frozen_features(modality, **inputs)
        batch, groups, tokens, _ = features.shape
        if spec["encoder"] == "vision" and groups != self.config.num_frames:
            raise ValueError(
                f"Modality {modality!r}: expected {self.config.num_frames} frames (config.num_frames), got {groups}."
            )
        adapter = modality_module(self, modality)
        position_embedding = None
        if spec["encoder"] == "point_cloud":
            position_embedding = self._point_position_embedding(modality, inputs, batch, tokens)
            position_embedding = position_embedding.unsqueeze(1).expand(batch, groups, tokens, -1).flatten(0, 1)
        states = adapter.prepare_encoder_states(
            features.flatten(0, 1), position_embedding, normalize=spec["encoder"] != "point_cloud"
        )
        encoder_mask = self._encoder_mask(modality, inputs.get(f"{modality}_attention_mask"), batch, groups, tokens)
        with route_to_modality(self, modality):
            query_output = self.qformer(
                query_embeds=adapter.query_tokens(batch * groups),
                encoder_hidden_states=states,
                encoder_attention_mask=None if encoder_mask is None else encoder_mask.to(states.device),
            ).last_hidden_state
        embeds = adapter.project_to_language(query_output)
        return embeds.view(batch, groups, *embeds.shape[1:])

    def _check_mmqa_embeds(self, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = inputs[f"{modality}_mmqa_embeds"]
        others = sorted(key for key in inputs if not key.endswith("_mmqa_embeds"))
        if others:
            raise ValueError(
                f"Modality {modality!r}: `{modality}_mmqa_embeds` (its MMQA output) replaces its other inputs; got "
                f"{others} too. Pass either the MMQA output or the inputs it is computed from."
            )
        width = self.config.text_config.hidden_size
        if embeds.dim() != 4 or tuple(embeds.shape[2:]) != (self.config.num_query_tokens, width):
            raise ValueError(
                f"Modality {modality!r}: `{modality}_mmqa_embeds` must be (B, G, {self.config.num_query_tokens}, "
                f"{width}) (batch, frames or segments, query tokens, LLM width), as `encode_modality` returns it; "
                f"got {tuple(embeds.shape)}."
            )
        check_finite(modality, "mmqa_embeds", embeds)
        return embeds

    def _point_position_embedding(self, modality: str, inputs: dict, batch: int, points: int) -> torch.Tensor:
        """0.01 x the sinusoidal embedding of each point's voxel coordinates: (B, N, encoder width)."""
        coordinates = _require(inputs, modality, "coordinates", f"(B, {points}, 3) voxel coordinates")
        if coordinates.shape != (batch, points, 3):
            raise ValueError(
                f"Modality {modality!r}: `{modality}_coordinates` must be ({batch}, {points}, 3); "
                f"got {tuple(coordinates.shape)}."
            )
        grid = self.config.point_grid_size
        if coordinates.is_floating_point() and not coordinates.is_meta and coordinates.numel():
            if not bool(torch.isfinite(coordinates).all()) or not bool((coordinates == coordinates.round()).all()):
                raise ValueError(
                    f"Modality {modality!r}: `{modality}_coordinates` must be integer voxel indices in [0, {grid}); "
                    "got NaN/inf or fractional values. Voxelise the points first (e.g. with the CREMA processor)."
                )
        if coordinates.numel() and not coordinates.is_meta and (coordinates.min() < 0 or coordinates.max() >= grid):
            raise ValueError(
                f"Modality {modality!r}: voxel coordinates must lie in [0, {grid}) (config.point_grid_size); "
                f"got values in [{int(coordinates.min())}, {int(coordinates.max())}]. Voxelise the points first."
            )
        width = self.config.vision_config.hidden_size
        return self.config.point_position_scale * sinusoidal_point_embedding(coordinates, width)

    @staticmethod
    def _encoder_mask(
        modality: str, mask: torch.Tensor | None, batch: int, groups: int, tokens: int
    ) -> torch.Tensor | None:
        """(B*G, N) mask of the encoder states, or None when every token counts (also what works on `meta`)."""
        if mask is None:
            return None
        if mask.ndim == 2:
            mask = mask.unsqueeze(1).expand(batch, groups, mask.shape[-1])
        if mask.shape != (batch, groups, tokens):
            raise ValueError(
                f"Modality {modality!r}: `{modality}_attention_mask` must be ({batch}, {tokens}) or "
                f"({batch}, {groups}, {tokens}); got {tuple(mask.shape)}."
            )
        if not mask.is_meta and not bool((mask != 0).any(dim=-1).all()):
            empty = sorted({int(i) for i in (mask != 0).any(dim=-1).logical_not().nonzero()[:, 0]})
            raise ValueError(
                f"Modality {modality!r}: `{modality}_attention_mask` masks out every token of example(s) {empty}: "
                f"there is nothing to attend to. Drop the modality for those examples (`modalities=`) or fix the "
                "input (e.g. an empty point cloud)."
            )
        return mask.reshape(batch * groups, tokens).long()

    # --------------------------------------------------------------------------------------- LLM input assembly
    def split_modality_inputs(self, kwargs: dict[str, Any]) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """Separates `{modality}_{suffix}` inputs (grouped per modality) from everything else."""
        per_modality: dict[str, dict[str, torch.Tensor]] = {}
        rest = {}
        for key, value in kwargs.items():
            suffix = modality_input_suffix(key)
            if suffix is None:
                rest[key] = value
                continue
            name = key[: -len(suffix) - 1]
            if name not in self.mmqa:
                raise ValueError(
                    f"Input `{key}` is for modality {name!r}, which has no adapter on this model (attached: "
                    f"{self.config.modality_names}). Add it with `model.add_modality({name!r})` or "
                    f"`model.load_adapter(path, adapter_name={name!r})`, or drop the input."
                )
            if value is not None:
                per_modality.setdefault(name, {})[key] = value
        return per_modality, rest

    def _resolve_modalities(self, modality_inputs: dict[str, dict], modalities: list[str] | None) -> list[str]:
        attached = self.config.modality_names
        if not attached:
            raise ValueError("This model has no modality adapters; add one with `model.add_modality('video')`.")
        if modalities is None:
            missing = [name for name in attached if name not in modality_inputs]
            if missing:
                raise ValueError(
                    f"Missing inputs for modalities {missing} (this model uses {attached}). Pass e.g. "
                    f"`{missing[0]}_pixel_values` / `{missing[0]}_features`, or answer with a subset by naming it: "
                    f"`modalities={[n for n in attached if n not in missing]}`."
                )
            return attached
        for name in modalities:
            self.config.modality(name)
            if name not in modality_inputs:
                raise ValueError(f"Modality {name!r} was requested in `modalities` but no input was given for it.")
        ignored = sorted(set(modality_inputs) - set(modalities))
        if ignored:
            logger.warning(f"Inputs for {ignored} are ignored: `modalities` asks for {modalities} only.")
        return [name for name in attached if name in modalities]

    def _is_per_frame(self, name: str, groups: int) -> bool:
        """Whether a modality's groups are the clip's frames (vision, or precomputed features with T groups)."""
        encoder = self.config.modality(name)["encoder"]
        return encoder == "vision" or (encoder == "features" and groups == self.config.num_frames)

    @staticmethod
    def _embed_prefix(ids: list[int], batch: int, embed: nn.Module) -> torch.Tensor | None:
        if not ids:
            return None
        return embed(torch.tensor(ids, device=embed.weight.device)).unsqueeze(0).expand(batch, -1, -1)

    def _fuse(self, modality_embeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The self-gated fusion of the supportive modalities, aligned to the major modality's frames."""
        major = self.fusion.modalities[0]
        if major not in modality_embeds:
            raise ValueError(f"The fusion needs its major modality {major!r}; no input was given for it.")
        frames = modality_embeds[major].shape[1]
        supportive = [
            self._align_to_frames(name, modality_embeds[name], frames)
            if name in modality_embeds
            else torch.zeros_like(modality_embeds[major])  # an absent supportive modality contributes zeros
            for name in self.fusion.supportive_modalities
        ]
        return self.fusion([s.to(self.fusion.projection.weight.dtype) for s in supportive])

    def _align_to_frames(self, name: str, embeds: torch.Tensor, frames: int) -> torch.Tensor:
        """Supportive modality (B, G, Q, H) -> (B, T, Q, H): audio averaged over segments, static ones repeated."""
        groups = embeds.shape[1]
        if self.config.modality(name)["encoder"] == "audio" and groups > 1:
            embeds, groups = embeds.mean(dim=1, keepdim=True), 1
        if groups == frames:
            return embeds
        if groups == 1:
            return embeds.expand(-1, frames, -1, -1)
        raise ValueError(f"Modality {name!r} has {groups} frames but the major modality has {frames}.")

    @staticmethod
    def _check_clip_index(clip_index: torch.Tensor, batch: int, modality: str, clips: int) -> torch.Tensor:
        if clip_index.dim() != 1 or clip_index.shape[0] != batch or clip_index.is_floating_point():
            raise ValueError(
                f"`clip_index` must be integers of shape ({batch},), one per prompt (the row of the modality inputs "
                f"it asks about); got {clip_index.dtype} of shape {tuple(clip_index.shape)}."
            )
        if batch and not clip_index.is_meta and (int(clip_index.min()) < 0 or int(clip_index.max()) >= clips):
            raise ValueError(
                f"`clip_index` holds values in [{int(clip_index.min())}, {int(clip_index.max())}] but modality "
                f"{modality!r} has {clips} input rows: each value must lie in [0, {clips})."
            )
        return clip_index.long()

    def prepare_language_model_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        modalities: list[str] | None = None,
        clip_index: torch.LongTensor | None = None,
        **kwargs: torch.Tensor,
    ) -> CremaForConditionalGenerationOutput:
        """Encodes every used modality and builds the LLM encoder input: visual tokens, then the prompt. With
        `clip_index`, each modality is encoded once per clip and every prompt reads its clip's output."""
        modality_inputs, rest = self.split_modality_inputs(kwargs)
        if rest:
            raise ValueError(f"Unexpected inputs {sorted(rest)}; modality inputs are `{{modality}}_{{suffix}}` "
                             f"with suffix in {MODALITY_INPUT_SUFFIXES}.")
        if input_ids is None:
            raise ValueError("`input_ids` (the tokenised prompt) is required.")
        used = self._resolve_modalities(modality_inputs, modalities)
        batch = input_ids.shape[0]
        modality_embeds = {}
        for name in used:
            embeds = self.encode_modality(name, **modality_inputs[name])
            if clip_index is not None:
                embeds = embeds[self._check_clip_index(clip_index, batch, name, embeds.shape[0])]
            elif embeds.shape[0] != batch:
                raise ValueError(
                    f"Modality {name!r} has batch size {embeds.shape[0]}, the prompt has {batch}. Give one input "
                    "row per prompt, or `clip_index` (which row each prompt asks about) when prompts share clips."
                )
            modality_embeds[name] = embeds

        embed = self.get_input_embeddings()
        prompt_embeds = embed(input_ids)
        dtype = prompt_embeds.dtype
        fused, fused_modalities = None, []
        if self.fusion is not None:
            fused, fused_modalities = self._fuse(modality_embeds), self.fusion.modalities
            used = [fused_modalities[0]] + [name for name in used if name != fused_modalities[0]]
        parts = LayoutParts(
            order=used,
            embeds={name: value.to(dtype) for name, value in modality_embeds.items()},
            fused=None if fused is None else fused.to(dtype),
            fused_modalities=fused_modalities,
            frame_prefixes=[self._embed_prefix(ids, batch, embed) for ids in self.config.frame_prefix_token_ids],
            modality_prefixes={
                name: self._embed_prefix(self.config.modality(name)["prefix_token_ids"], batch, embed) for name in used
            },
            encoders={name: self.config.modality(name)["encoder"] for name in used},
            point_cloud_only_prefix=self._embed_prefix(self.config.point_cloud_only_prefix_token_ids, batch, embed),
            per_frame={name: self._is_per_frame(name, modality_embeds[name].shape[1]) for name in used},
        )
        pieces = LAYOUTS[self.config.token_layout](parts)
        visual = torch.cat(pieces, dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        visual_mask = torch.ones(visual.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        return CremaForConditionalGenerationOutput(
            modality_embeds=modality_embeds,
            inputs_embeds=torch.cat([visual, prompt_embeds], dim=1),
            attention_mask=torch.cat([visual_mask, attention_mask], dim=1),
            used_modalities=used,
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        modalities: list[str] | None = None,
        clip_index: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CremaForConditionalGenerationOutput:
        r"""
        input_ids / attention_mask: (B, L) tokenised prompt for the T5 encoder.
        labels: (B, A) answer token ids, padding set to -100. Without labels or `decoder_input_ids`, the logits
            are those of the first answer token (decoder start only).
        modalities: optional subset of the attached modalities to answer with (others absent, fusion gets zeros).
        **kwargs: per-modality inputs `{m}_pixel_values` (B, T, 3, H, W), `{m}_input_values` (B, S, ...),
            `{m}_features` (B, [G,] N, D), `{m}_attention_mask`, `{m}_coordinates` (B, N, 3), or the modality's
            MMQA output `{m}_mmqa_embeds` (B, G, num_query_tokens, text_hidden) computed earlier.
        clip_index: optional (B,) row of the modality inputs each prompt asks about, when several questions share
            a clip: the modality inputs then hold one row per clip (C rows), each encoded once (MMQA dropout included)
            and read by all of its prompts. `CremaDataCollator(clip_column=...)` builds such batches.
        """
        language_kwargs = {key: kwargs.pop(key) for key in LANGUAGE_MODEL_KWARGS if key in kwargs}
        prepared = self.prepare_language_model_inputs(input_ids, attention_mask, modalities, clip_index, **kwargs)
        if labels is None and decoder_input_ids is None and "encoder_outputs" not in language_kwargs:
            # No answer given: score the first answer step (e.g. the option letter of a multiple-choice question).
            start = self.config.text_config.decoder_start_token_id
            decoder_input_ids = torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device)
        outputs = self.language_model(
            inputs_embeds=prepared.inputs_embeds,
            attention_mask=prepared.attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            labels=labels,
            return_dict=True,
            **language_kwargs,
        )
        prepared.loss, prepared.logits, prepared.language_model_outputs = outputs.loss, outputs.logits, outputs
        return prepared

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        modalities: list[str] | None = None,
        clip_index: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Answers with the frozen LLM's `generate` (beam search etc. via its generation kwargs)."""
        kwargs.pop("labels", None)
        modality_inputs = {key: kwargs.pop(key) for key in list(kwargs) if modality_input_suffix(key) is not None}
        prepared = self.prepare_language_model_inputs(input_ids, attention_mask, modalities, clip_index,
                                                      **modality_inputs)
        return self.language_model.generate(
            inputs_embeds=prepared.inputs_embeds, attention_mask=prepared.attention_mask, **kwargs
        )

    @torch.no_grad()
    def modality_contributions(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        modalities: list[str] | None = None,
        clip_index: torch.LongTensor | None = None,
        **kwargs: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Which modality mattered, by leave-one-out: per supportive modality, how much the answer's negative
        log-likelihood (per example, summed over answer tokens) rises when that modality is left out.

        Positive = the modality supported the answer. Without `labels`, the model's own greedy answer is scored.
        `modalities`: answer with this subset (as in `forward`) and leave each of its supportive modalities out.
        """
        if labels is None:
            answer = self.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10,
                                   modalities=modalities, clip_index=clip_index, **kwargs)
            labels = answer[:, 1:].masked_fill(answer[:, 1:] == self.config.text_config.pad_token_id, -100)
        modality_inputs, _ = self.split_modality_inputs(kwargs)
        used = self._resolve_modalities(modality_inputs, modalities)
        major = self.fusion.modalities[0] if self.fusion is not None else used[0]

        def answer_nll(modalities: list[str]) -> torch.Tensor:
            inputs = {key: value for name in modalities for key, value in modality_inputs[name].items()}
            logits = self(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                          modalities=modalities, clip_index=clip_index, **inputs).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return -(picked * (labels != -100)).sum(dim=-1)

        full = answer_nll(used)
        return {name: answer_nll([m for m in used if m != name]) - full for name in used if name != major}

    # ------------------------------------------------------------------------------------------ save / load
    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen backbone's weights under their original names (no LoRA, MMQA or fusion keys)."""
        state = {}
        for key, value in self.state_dict().items():
            if key.startswith(("mmqa.", "fusion.")) or any(part.startswith("lora_") for part in key.split(".")):
                continue
            state[key.replace(".base_layer.", ".")] = value
        return state

    def save_pretrained(self, save_directory: str | os.PathLike, save_adapters: bool = True, **kwargs: Any) -> None:
        """Saves the base (without adapter keys, with remote code) and, by default, every adapter and the fusion.

        Layout: `config.json`, `model.safetensors`, the modeling code, `adapters/<modality>/` (plain PEFT
        folders) and `fusion/`. `from_pretrained` reads them back in the same order. The save is atomic and
        replaces the model's files (stale shards, adapters or fusion of an earlier save are gone); files that
        belong to others, such as a processor or tokenizer saved in the same folder, are kept.
        """
        if kwargs.pop("state_dict", None) is not None:
            raise ValueError("CREMA saves its own base state dict; adapters go to their own folders.")
        push_to_hub = kwargs.pop("push_to_hub", False)
        hub_options = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "token", "create_pr")
                       if key in kwargs}
        full_config = self.config
        self.config = full_config if save_adapters else full_config.without_modalities()
        try:
            with atomic_directory(save_directory, keep=is_kept_beside_model) as staging:
                super().save_pretrained(staging, state_dict=self.base_state_dict(), **kwargs)
                _add_auto_model_to_auto_map(os.path.join(staging, "config.json"))
                _add_pipeline(staging)
                if save_adapters:
                    for name in full_config.modality_names:
                        self.save_adapter(os.path.join(staging, ADAPTERS_FOLDER, name), name, card=False)
                    if self.fusion is not None:
                        self.save_fusion(os.path.join(staging, FUSION_FOLDER))
                _write_hub_card("model", staging, save_directory, hub_options.get("repo_id"))
        finally:
            self.config = full_config
        if push_to_hub:  # only once everything, adapters included, is on disk
            self._upload_folder(save_directory, **hub_options)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: str | bool | None = None, create_pr: bool = False, **save_kwargs: Any) -> str:
        """Saves the model (card included) into a temporary folder and uploads it; returns the commit URL.
        (transformers' own `push_to_hub` would replace the model card with a generic one.)"""
        import tempfile

        with tempfile.TemporaryDirectory() as staging:
            folder = os.path.join(staging, "model")
            self.save_pretrained(folder, repo_id=repo_id, **save_kwargs)
            return self._upload_folder(folder, repo_id, commit_message, private=private, token=token,
                                       create_pr=create_pr)

    @staticmethod
    def _upload_folder(folder, repo_id=None, commit_message=None, private=None, token=None, create_pr=False) -> str:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id or os.path.basename(os.path.normpath(folder)), private=private,
                                  exist_ok=True).repo_id
        return str(api.upload_folder(repo_id=repo_id, folder_path=str(folder), create_pr=create_pr,
                                     commit_message=commit_message or "Upload CREMA model and modality adapters"))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: CremaConfig | None = None,
        load_adapters: bool = True,
        **kwargs: Any,
    ) -> "CremaForConditionalGeneration":
        """Loads the base, then each adapter listed in the config from `adapters/<m>/`, then `fusion/`."""
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision")
            if key in kwargs
        }
        subfolder = kwargs.get("subfolder", "")
        recover_interrupted_save(os.path.join(pretrained_model_name_or_path, subfolder))  # no-op without leftovers
        if not isinstance(config, CremaConfig):
            config = CremaConfig.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **hub_kwargs)
        model = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config.without_modalities(), **kwargs
        )
        model.config.use_fusion = config.use_fusion
        model.prefix_tokenizer = _tokenizer_saved_in(os.path.join(os.fspath(pretrained_model_name_or_path), subfolder))
        if load_adapters:
            for spec in config.modalities:
                model.load_adapter(
                    pretrained_model_name_or_path,
                    adapter_name=spec["name"],
                    subfolder=os.path.join(subfolder, ADAPTERS_FOLDER, spec["name"]).lstrip("/"),
                    **hub_kwargs,
                )
                model.config.modality(spec["name"])["prefix_token_ids"] = spec["prefix_token_ids"]
            if config.use_fusion and config.fusion_modalities:
                model.load_fusion(pretrained_model_name_or_path, os.path.join(subfolder, FUSION_FOLDER).lstrip("/"), **hub_kwargs)
        return model

    @classmethod
    def from_blip2(cls, blip2_model_or_path, modalities=("video",), tokenizer=None, audio_encoder=None, **config_kwargs):
        """Builds CREMA (eval mode) from a `Blip2ForConditionalGeneration` (instance, local path or Hub id) with a
        T5 LLM. `tokenizer`: the LLM's tokenizer for the frame/modality prefixes (read from the BLIP-2 folder when
        there is one; an instance without it warns). `audio_encoder`: any `transformers` audio encoder (instance,
        folder or Hub id, e.g. "MIT/ast-finetuned-audioset-10-10-0.4593"), saved with the model; without it,
        audio modalities take precomputed features of width `audio_feature_size` (768: BEATs)."""
        from .convert_blip2 import crema_from_blip2

        return crema_from_blip2(cls, blip2_model_or_path, modalities=modalities, tokenizer=tokenizer,
                                audio_encoder=audio_encoder, **config_kwargs)


# --------------------------------------------------------------------------------------------------- helpers
#: What a model save owns in its folder; anything else there (processor, tokenizer, card) survives a re-save.
MODEL_SAVE_NAMES = {ADAPTERS_FOLDER, FUSION_FOLDER, "config.json", "generation_config.json"}
MODEL_WEIGHT_PREFIXES = ("model.safetensors", "model-", "pytorch_model", "tf_model", "flax_model")


def is_kept_beside_model(name: str) -> bool:
    """Whether an entry of a model folder is kept when the model is saved again (it is not the model's)."""
    return name not in MODEL_SAVE_NAMES and not name.startswith(MODEL_WEIGHT_PREFIXES)


def is_trainable_parameter_name(name: str) -> bool:
    """LoRA weights, the trainable copies of `mmqa.<m>` and the fusion train; everything else is frozen."""
    parts = name.split(".")
    if any(part.startswith("lora_") for part in parts):
        return True
    if name.startswith("mmqa."):
        return "modules_to_save" in parts
    return name.startswith("fusion.")


def tokenizer_is_usable(tokenizer: Any) -> bool:
    """False for None and for the empty tokenizer `AutoTokenizer` builds from a folder without tokenizer files."""
    if tokenizer is None:
        return False
    try:
        return len(tokenizer) > 0 and bool(tokenizer("Frame 1: ", add_special_tokens=False).input_ids)
    except Exception:  # a tokenizer without a vocabulary raises on use
        return False


def _tokenizer_saved_in(folder: str):
    """The tokenizer saved beside a local model (e.g. by its processor), else None: used for prefixes of adapters
    loaded later."""
    if not any(os.path.isfile(os.path.join(folder, name)) for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer, PreTrainedConfig

    try:
        # a blank config: AutoTokenizer would otherwise build this folder's `crema` config, which without the
        # installed package (remote code) means asking the user whether to run the code (the class comes from
        # tokenizer_config.json anyway)
        tokenizer = AutoTokenizer.from_pretrained(folder, config=PreTrainedConfig())
    except (OSError, ValueError, TypeError):
        return None
    return tokenizer if tokenizer_is_usable(tokenizer) else None


def modality_input_suffix(key: str) -> str | None:
    """The suffix of a `{modality}_{suffix}` input key, or None for any other keyword (e.g. generation kwargs)."""
    if key.startswith("decoder_"):
        return None
    return next((suffix for suffix in MODALITY_INPUT_SUFFIXES if key.endswith("_" + suffix)), None)


def _require(inputs: dict[str, torch.Tensor], modality: str, suffix: str, what: str) -> torch.Tensor:
    value = inputs.get(f"{modality}_{suffix}")
    if value is None:
        given = sorted(inputs) or "nothing"
        raise ValueError(f"Modality {modality!r} needs `{modality}_{suffix}` {what}; got {given}.")
    return value


#: Largest magnitude accepted per input kind: normalised pixels are O(1) and encoder states O(100); beyond these
#: limits an input is corrupt (e.g. unnormalised or garbage memory) and would make the loss NaN.
MAX_INPUT_MAGNITUDE = {"pixel_values": 1e3, "input_values": 1e5, "features": 1e5}


def check_finite(modality: str, what: str, tensor: torch.Tensor) -> None:
    """Refuses NaN/inf and absurd magnitudes (see `MAX_INPUT_MAGNITUDE`) with the input named."""
    if not tensor.is_floating_point() or tensor.is_meta or not tensor.numel():
        return
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(
            f"Modality {modality!r}: `{modality}_{what}` contains NaN or inf values; fix the input or its "
            "preprocessing (e.g. a corrupt frame or feature file)."
        )
    limit, largest = MAX_INPUT_MAGNITUDE.get(what), float(tensor.detach().abs().max())
    if limit is not None and largest > limit:
        raise ValueError(
            f"Modality {modality!r}: `{modality}_{what}` holds values up to {largest:.3g} (more than {limit:g}); "
            "inputs must be normalised as the CREMA processor produces them (e.g. pixel values after CLIP "
            "mean/std normalisation)."
        )


def _infer_feature_size(tensors: dict[str, torch.Tensor], default: int) -> int:
    for key, value in tensors.items():
        if key.endswith("input_projection.weight"):
            return value.shape[1]
    return default


def _write_hub_card(kind: str, staging: str, target: str | os.PathLike, repo_id: str | None = None) -> None:
    """Writes the Hub card (README.md) of the model or adapter saved in `staging` (which replaces `target`) with
    `crema_hub_cards`; that package is not part of the remote code, so without it no card is written. A README.md
    the user wrote in `target` is kept."""
    try:
        import crema_hub_cards
    except ImportError:
        logger.info("crema_hub_cards is not importable (install crema-hf): no Hub card (README.md) written.")
        return
    crema_hub_cards.write_saved_card(kind, staging, previous=os.fspath(target), repo_id=repo_id)


def _add_auto_model_to_auto_map(config_path: str) -> None:
    """`register_for_auto_class` records a single Auto class; `AutoModel` should resolve to CREMA as well."""
    with open(config_path) as handle:
        config = json.load(handle)
    auto_map = config.get("auto_map")
    if auto_map and "AutoModelForImageTextToText" in auto_map:
        auto_map.setdefault("AutoModel", auto_map["AutoModelForImageTextToText"])
        with open(config_path, "w") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.write("\n")


def _add_pipeline(folder: str) -> None:
    """The `crema-video-question-answering` pipeline ships with the model: its file and config.json's
    `custom_pipelines`, so that `pipeline(model=folder, trust_remote_code=True)` works without this package."""
    from .pipeline_crema import save_pipeline

    save_pipeline(folder)
