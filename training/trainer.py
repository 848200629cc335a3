"""`CremaTrainer`: `transformers.Trainer` for CREMA's modality adapters (paper §3.3, DESIGN §2 and §6).

Where things happen:
  - the modality-sequential step: `training_step` -> `_sequential_step` (one forward/backward per modality not yet
    exited, an optimiser sub-step after each but the last; the Trainer does the last step and the one
    LR-scheduler step of the minibatch);
  - the adaptive early exit: `early_exit.py` (the rule and its state), fed by `_record_gradient_norms`, closed at
    every epoch end by `EarlyExitCallback` (`callbacks.py`);
  - the reference's optimiser groups and LR schedule: `create_optimizer`, `create_scheduler`;
  - checkpoints: `_save` / `_save_checkpoint` / `_load_from_checkpoint` (every adapter as a PEFT folder, the fusion,
    the early-exit state; the Trainer's own optimizer/scheduler/RNG/trainer state files beside them).

Every override says why it exists. Mixed precision and DDP come from the Trainer and accelerate unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalPrediction, rotate_checkpoints
from transformers.utils import logging

from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from crema_processing.feature_cache import TEXT_KEYS, CremaDataCollator
from modeling_crema.adapters import ADAPTER_WEIGHTS_NAME, PEFT_KEY_PREFIX, adapter_state_dict
from modeling_crema.fusion import FUSION_WEIGHTS_NAME
from modeling_crema.modeling_crema import ADAPTERS_FOLDER, FUSION_FOLDER, is_trainable_parameter_name, modality_input_suffix

from .arguments import CremaTrainingArguments
from .callbacks import DatasetEpochCallback, EarlyExitCallback
from .clip_sampler import ClipGroupedSampler
from .data_collator import QUESTION_TYPE_IDS, CremaTrainingCollator, random_resized_crop
from .early_exit import ModalityEarlyExit

logger = logging.get_logger(__name__)

#: Written last into every checkpoint folder: a checkpoint without it was interrupted while saving.
CHECKPOINT_MARKER = "crema_checkpoint.json"
TRAINING_ARGS_JSON = "training_args.json"
#: Inputs that carry a modality's encoder input (the others, e.g. masks, only accompany one).
_ENCODER_INPUTS = ("pixel_values", "input_values", "features")


class CremaTrainer(Trainer):
    """Trains the MMQA adapters and the fusion of a `CremaForConditionalGeneration` (the backbone stays frozen).

    Takes the `Trainer` arguments; `args` must be a `CremaTrainingArguments`. Defaults: `data_collator` =
    `CremaTrainingCollator` (pixels or cached frozen features), `compute_metrics` = exact-match answer accuracy,
    overall and per question type (when `processing_class` can decode). Bad input (a modality the model or the
    dataset lacks, an empty dataset, ...) raises one `ValueError` here, before anything runs.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: CremaTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ):
        # Why: CREMA-specific validation and defaults must happen before the Trainer wraps anything.
        if args is None:
            args = CremaTrainingArguments(output_dir="crema_trainer_output")
        if not isinstance(args, CremaTrainingArguments):
            raise ValueError(
                f"CremaTrainer needs `CremaTrainingArguments`, got {type(args).__name__}; build them with "
                "`CremaTrainingArguments(output_dir=..., ...)`."
            )
        if model is None or not hasattr(model, "mmqa") or not hasattr(model.config, "modality_names"):
            raise ValueError(
                "CremaTrainer trains a `CremaForConditionalGeneration` (pass it as `model=`; `model_init` is not "
                f"supported); got {type(model).__name__}."
            )
        self.trained_modalities = _resolve_trained_modalities(model, args.modalities)
        for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            _check_dataset(dataset, name, model.config.modality_names, needs_labels=name == "train_dataset")
        if args.clip_column is not None and train_dataset is not None and args.clip_column not in _dataset_keys(
                train_dataset):
            raise ValueError(
                f"clip_column={args.clip_column!r} is not a column of the train_dataset (columns: "
                f"{_dataset_keys(train_dataset)}); name the column that identifies each row's clip, or leave it unset."
            )

        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if data_collator is None:
            pad = getattr(tokenizer, "pad_token_id", None)
            if pad is None:
                pad = model.config.text_config.pad_token_id or 0
            data_collator = CremaTrainingCollator(pad_token_id=pad, question_type_column=args.question_type_column)
        question_types = _question_types([train_dataset, eval_dataset], args.question_type_column)
        if isinstance(data_collator, CremaTrainingCollator) and data_collator.question_types is None and question_types:
            data_collator.question_types = question_types
        if isinstance(data_collator, CremaDataCollator) and data_collator.clip_column is None:
            data_collator.clip_column = args.clip_column
        if compute_metrics is None and hasattr(tokenizer, "batch_decode"):
            compute_metrics = AnswerAccuracy(tokenizer, getattr(data_collator, "question_types", None))

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            **kwargs,
        )
        if (self.is_deepspeed_enabled or self.is_fsdp_enabled) and (
            args.modality_schedule == "sequential" or args.early_exit
        ):
            raise ValueError(
                "DeepSpeed and FSDP step every parameter of their flat/sharded buffers, so neither the sequential "
                "schedule (one modality per sub-step) nor the early exit (frozen exited adapters) holds there. Run "
                "them under DDP (`accelerate launch` without a DeepSpeed/FSDP config), or set "
                "`modality_schedule='joint'` and `early_exit=False`."
            )
        self.early_exit = self._new_early_exit()
        self._adapter_parameters, self._fusion_parameters = _parameters_by_owner(model)
        self._steps_per_epoch: int | None = None
        self._num_epochs: int | None = None
        self._pending_batches: list[dict[str, Any]] = []
        self._micro_step = 0
        self._saving_checkpoint = False
        self._warned_no_crop = False
        self._trained_before = False
        #: The modality whose sub-step is running (None in the joint schedule); callbacks may read it.
        self.current_modality: str | None = None
        self.add_callback(EarlyExitCallback(self))
        if hasattr(train_dataset, "set_epoch"):
            self.add_callback(DatasetEpochCallback(train_dataset))

    def _new_early_exit(self) -> ModalityEarlyExit:
        return ModalityEarlyExit(
            self.trained_modalities, self.args.early_exit_tau, self.args.early_exit_start_epoch, self.args.early_exit
        )

    # ------------------------------------------------------------------------------------------ training loop
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Why: `resume_from_checkpoint=True` must pick the newest *complete* checkpoint (one whose save finished),
        and a second run on the same trainer must start with a fresh early-exit state."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(
                    f"No complete checkpoint found in {self.args.output_dir} to resume from (a checkpoint is "
                    f"complete once its {CHECKPOINT_MARKER} is written); train without `resume_from_checkpoint`."
                )
        if not resume_from_checkpoint and self._trained_before:  # a new run on this trainer starts afresh
            self.early_exit = self._new_early_exit()
        self._trained_before = True
        self._pending_batches, self._micro_step = [], 0
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _get_train_sampler(self, train_dataset=None):
        """Why: with `clip_column`, batches must hold whole clips for each clip to be encoded once per batch."""
        if self.args.clip_column is None:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ClipGroupedSampler(list(dataset[self.args.clip_column]), seed=seed)

    def set_initial_training_values(self, args, dataloader):
        """Why: the reference's LR schedule and the early exit are per epoch; keep the epoch length (in optimiser
        steps) and the number of epochs the Trainer derived."""
        values = super().set_initial_training_values(args, dataloader)
        self._num_epochs, self._steps_per_epoch = int(values[0]), int(values[1])
        return values

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        """Why: the modality schedule lives here (DESIGN §6). Sequential: for each modality not yet exited, in order,
        forward with all modalities and backward with only that modality's adapter + the fusion trainable, then an
        optimiser sub-step, except for the last modality, whose step the Trainer takes (with the minibatch's single
        LR-scheduler step). With gradient accumulation the micro-batches of one optimiser step are held back and
        each modality accumulates over all of them before its sub-step. Joint: one backward for every modality
        still training."""
        inputs = dict(inputs)
        inputs.pop(QUESTION_TYPE_IDS, None)
        self._sync_early_exit_epoch()
        micro_step = self._micro_step
        self._micro_step = 0 if self.accelerator.sync_gradients else self._micro_step + 1
        if self.args.modality_schedule == "joint":
            return self._joint_step(model, inputs, micro_step, num_items_in_batch)
        self._pending_batches.append(inputs)
        if not self.accelerator.sync_gradients:
            return torch.zeros((), device=self.args.device)  # counted when its accumulation group is complete
        batches, self._pending_batches = self._pending_batches, []
        return self._sequential_step(model, batches, num_items_in_batch)

    def _sequential_step(self, model: nn.Module, batches: list[dict[str, Any]], num_items_in_batch) -> torch.Tensor:
        active = self.early_exit.active_modalities()
        if not active:
            return self._loss_without_update(model, batches)
        model.train()  # the reused MMQA outputs below are computed before the Trainer's own `model.train()`
        # Frozen encoders run once per minibatch: every sub-step reuses their (pre-LayerNorm) features.
        batches = [self._augment(batch, index, encode_frozen=True) for index, batch in enumerate(batches)]
        # Per micro-batch, the MMQA outputs still valid (their adapter not updated since): see `_with_reused_embeds`.
        reusable = [{} for _ in batches] if self.args.reuse_modality_embeddings else None
        total = torch.zeros((), device=self.args.device)
        with self._language_model_dropout(model), self._qformer_dropout(model):
            for position, modality in enumerate(active):
                self.current_modality = modality
                with self._only_trainable(modality):
                    for index, batch in enumerate(batches):
                        last = index == len(batches) - 1
                        sync = contextlib.nullcontext() if last else self.accelerator.no_sync(model)
                        inputs = dict(batch) if reusable is None else self._with_reused_embeds(
                            batch, reusable[index], modality)
                        with sync:
                            total = total + super().training_step(model, inputs, num_items_in_batch)
                self._record_gradient_norms([modality])
                if position < len(active) - 1:
                    self._optimizer_substep(model)
                for outputs in reusable or []:
                    outputs.pop(modality, None)  # its adapter moved: recomputed when next needed
        return total / len(active)

    def _with_reused_embeds(self, batch: dict[str, Any], reusable: dict[str, torch.Tensor], current: str) -> dict[str, Any]:
        """The batch with every modality but `current` given as its MMQA output (`{m}_mmqa_embeds`), computed without
        gradients on first use and kept in `reusable`: those modalities receive no gradient in this sub-step, and
        their adapters only change at their own sub-step, so recomputing them in every sub-step only repeats work."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        inputs = {}
        per_modality: dict[str, dict[str, Any]] = {}
        for key, value in batch.items():
            suffix = modality_input_suffix(key)
            name = None if suffix is None else key[: -len(suffix) - 1]
            if name is None or name == current:
                inputs[key] = value
            else:
                per_modality.setdefault(name, {})[key] = value
        for name, modality_inputs in per_modality.items():
            if name not in reusable:
                with torch.no_grad(), self.compute_loss_context_manager():
                    reusable[name] = unwrapped.encode_modality(name, **modality_inputs)
            inputs[f"{name}_mmqa_embeds"] = reusable[name]
        return inputs

    def _joint_step(self, model: nn.Module, inputs: dict[str, Any], micro_step: int, num_items_in_batch) -> torch.Tensor:
        self.current_modality = None
        active = self.early_exit.active_modalities()
        if not active:
            return self._loss_without_update(model, [inputs])
        inputs = self._augment(inputs, micro_step, encode_frozen=False)
        with self._language_model_dropout(model), self._qformer_dropout(model), self._only_trainable(*active):
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._record_gradient_norms(active)
        return loss

    def _optimizer_substep(self, model: nn.Module) -> None:
        """One optimiser step inside a minibatch (sequential schedule), as the Trainer takes its own, without the
        LR-scheduler step. Only parameters with gradients (this modality's adapter and the fusion) move."""
        if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
            self._clip_grad_norm(model)
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        self.optimizer.step()
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        model.zero_grad()

    def _loss_without_update(self, model: nn.Module, batches: list[dict[str, Any]]) -> torch.Tensor:
        """Every trained modality has exited: nothing is updated; the loss is still reported."""
        losses = []
        with torch.no_grad(), self.compute_loss_context_manager():
            for batch in batches:
                losses.append(self.compute_loss(model, self._prepare_inputs(dict(batch))).detach())
        # Scaled as the Trainer sums micro-batch losses: one mean over the accumulation group per optimiser step.
        return torch.stack(losses).sum() / self.current_gradient_accumulation_steps

    def _augment(self, inputs: dict[str, Any], micro_step: int, encode_frozen: bool) -> dict[str, Any]:
        """RandomResizedCrop of the training clips (when enabled) with a generator seeded from (seed, global step,
        rank, micro-batch), so a resumed run draws the same crops; optionally replaces pixel/audio inputs by the
        frozen encoders' features (computed once, reused by every sub-step)."""
        inputs = self._prepare_inputs(dict(inputs))
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.args.random_resized_crop:
            seed = np.random.SeedSequence([self.args.seed, self.state.global_step, self.args.process_index, micro_step])
            generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
            cropped = False
            for name in unwrapped.config.modality_names:  # fixed order: the same draws on every run
                key = f"{name}_pixel_values"
                if key in inputs:
                    inputs[key] = random_resized_crop(inputs[key], generator, self.args.crop_scale)
                    cropped = True
            if not cropped and not self._warned_no_crop:
                logger.warning("random_resized_crop is on but the batches hold no pixels (cached frozen features "
                               "cannot be cropped): training without the crop augmentation.")
                self._warned_no_crop = True
        if encode_frozen:
            for name in unwrapped.config.modality_names:
                for suffix in ("pixel_values", "input_values"):
                    key = f"{name}_{suffix}"
                    if key in inputs:
                        with torch.no_grad(), self.accelerator.autocast():
                            inputs[f"{name}_features"] = unwrapped.encode_frozen_features(name, **{key: inputs.pop(key)})
        return inputs

    @contextlib.contextmanager
    def _only_trainable(self, *modalities: str):
        """Inside the block only these modalities' adapters and the fusion require gradients: the others (later
        sub-steps, exited or untrained modalities) run their Q-Former passes without building a graph and receive
        no gradient (not a zero one: the optimiser then leaves them, and their moments, untouched)."""
        keep = {id(parameter) for name in modalities for _, parameter in self._adapter_parameters.get(name, [])}
        keep |= {id(parameter) for _, parameter in self._fusion_parameters}
        frozen = []
        for parameters in [*self._adapter_parameters.values(), self._fusion_parameters]:
            for _, parameter in parameters:
                if id(parameter) not in keep and parameter.requires_grad:
                    parameter.requires_grad_(False)
                    frozen.append(parameter)
        try:
            yield
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)

    def _language_model_dropout(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """`llm_dropout=True` (the reference): the frozen LLM runs in train mode (dropout active) inside the block,
        though the model's own `train()` keeps it in eval mode (its invariant again afterwards)."""
        if not self.args.llm_dropout:
            return contextlib.nullcontext()
        language_model = self.accelerator.unwrap_model(model).language_model
        return _mode_at_each_forward(language_model, training=True, afterwards=False)

    def _qformer_dropout(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """`qformer_dropout=False`: the Q-Former and its LoRA run in eval mode (no dropout) inside the block, though the
        Trainer puts the model in train mode before each step (the model's mode again afterwards)."""
        if self.args.qformer_dropout:
            return contextlib.nullcontext()
        qformer = self.accelerator.unwrap_model(model).qformer
        return _mode_at_each_forward(qformer, training=False, afterwards=model.training)

    # ------------------------------------------------------------------------------------------ early exit
    def _record_gradient_norms(self, modalities: list[str]) -> None:
        """L2 norm of each modality's LoRA A/B gradients (all layers together), unscaled, into the open epoch."""
        scaler = getattr(self.accelerator, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        for name in modalities:
            grads = [parameter.grad.detach().float() for key, parameter in self._adapter_parameters.get(name, [])
                     if _is_lora_weight(key) and parameter.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                self.early_exit.record(name, float(norm) / scale)

    def _sync_early_exit_epoch(self) -> None:
        """Closes every finished epoch whose statistics are still open: at each epoch end (through
        `EarlyExitCallback`) and, after a resume from a checkpoint saved at an epoch's last step, at the next step."""
        if self._steps_per_epoch is None:
            return
        current_epoch = self.state.global_step // self._steps_per_epoch
        while self.early_exit.epoch < current_epoch:
            self._close_early_exit_epoch()

    def _close_early_exit_epoch(self) -> None:
        def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
            return self.accelerator.reduce(tensor.to(self.args.device), reduction="sum")

        # Reduced across ranks: the same averages, hence the same decisions, on every rank.
        result = self.early_exit.close_epoch(sum_over_ranks if self.accelerator.num_processes > 1 else None)
        logs = {}
        for name in self.early_exit.modalities:
            if result["average"][name] is not None:
                logs[f"early_exit/{name}/grad_norm"] = result["average"][name]
            if result["indicator"][name] is not None and math.isfinite(result["indicator"][name]):
                logs[f"early_exit/{name}/indicator"] = result["indicator"][name]
            logs[f"early_exit/{name}/exited"] = float(self.early_exit.exited[name] is not None)
        self.log(logs)
        for name in result["exited"]:
            logger.info(f"Early exit: modality {name!r} stops training after epoch {result['epoch']} "
                        f"(indicator {result['indicator'][name]:.3f} > 1).")
        if self.args.early_exit and self.early_exit.all_exited:
            scaler = getattr(self.accelerator, "scaler", None)
            if self.args.stop_when_all_exited:
                logger.info("Every trained modality has exited: training stops.")
                self.control.should_training_stop = True
            elif scaler is not None and scaler.is_enabled():
                # fp16 loss scaling cannot take an optimiser step without any gradient (GradScaler refuses it)
                logger.warning("Every trained modality has exited; with fp16 loss scaling no further (empty) steps "
                               "can run, so training stops despite stop_when_all_exited=False.")
                self.control.should_training_stop = True

    # ------------------------------------------------------------------------------------------ optimiser
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Why: one AdamW with a parameter group per modality adapter and one for the fusion (each split into
        decayed / not decayed by the reference's rule: no decay for 1-D parameters and biases; query tokens are
        decayed), so each sub-step's parameters are a group of their own."""
        if self.is_fsdp_enabled:
            return super().create_optimizer(model)
        if self.optimizer is None:
            groups = []
            for name in self.trained_modalities:
                groups += _decay_groups(self._adapter_parameters[name], self.args.weight_decay, name)
            groups += _decay_groups(self._fusion_parameters, self.args.weight_decay, "fusion")
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """Why: `lr_schedule='reference'` is the authors' schedule (DESIGN §2): linear warm-up from
        `warmup_start_lr` over `warmup_steps` inside epoch 0 only, then a cosine stepped once per epoch."""
        if self.args.lr_schedule != "reference":
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            schedule = ReferenceLRSchedule(
                peak_lr=self.args.learning_rate,
                warmup_start_lr=self.args.warmup_start_lr,
                warmup_steps=self.args.get_warmup_steps(num_training_steps),
                min_lr=self.args.min_lr,
                steps_per_epoch=self._steps_per_epoch or num_training_steps,
                num_epochs=self._num_epochs or 1,
            )
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, schedule)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------------------------------ evaluation
    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        """Why: CREMA answers by generation (beam search, DESIGN §3) and its outputs hold non-tensor fields; the
        question type of each example travels with the labels for the per-type accuracy."""
        inputs = dict(inputs)
        question_types = inputs.pop(QUESTION_TYPE_IDS, None)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss, outputs = None, None
        with torch.no_grad():
            if labels is not None or not self.args.predict_with_generate:
                with self.compute_loss_context_manager():
                    if labels is not None:
                        loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                        loss = loss.detach().mean()
                    else:
                        outputs = model(**inputs)
            if prediction_loss_only:
                return loss, None, None
            if self.args.predict_with_generate:
                generate_inputs = {key: value for key, value in inputs.items() if key != "labels"}
                options = {"num_beams": self.args.generation_num_beams,
                           "max_new_tokens": self.args.generation_max_new_tokens}
                if self.args.generation_num_beams > 1:
                    options["length_penalty"] = self.args.generation_length_penalty
                with self.accelerator.autocast():
                    predictions = self.accelerator.unwrap_model(model).generate(**generate_inputs, **options)
            else:
                predictions = outputs.logits.detach()
        if labels is None:
            return loss, predictions, None
        if question_types is None:
            question_types = torch.full((labels.shape[0],), -1, dtype=torch.long)
        return loss, predictions, (labels, question_types.to(labels.device))

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Why: a checkpoint holds every adapter (a PEFT folder each), the fusion and the early-exit state, not the
        frozen backbone (the base model restores it); the final save is the model's own `save_pretrained` folder
        (base + `adapters/<m>/` + `fusion/`). Training arguments go to JSON (no pickle)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model)
        os.makedirs(output_dir, exist_ok=True)
        if self._saving_checkpoint:
            for name in model.config.modality_names:
                model.save_adapter(os.path.join(output_dir, ADAPTERS_FOLDER, name), name, card=False)
            if model.fusion is not None:
                model.save_fusion(os.path.join(output_dir, FUSION_FOLDER))
            self.early_exit.save(output_dir)
        else:
            model.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        _write_json_atomically(os.path.join(output_dir, TRAINING_ARGS_JSON), json.loads(self.args.to_json_string()))

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """Why: a checkpoint counts only once complete: after every rank wrote its files, the main process writes
        `crema_checkpoint.json` last; resuming refuses a folder without it, and old checkpoints are rotated out
        only after it exists (never leaving an incomplete newest checkpoint alone)."""
        limit = self.args.save_total_limit
        self._saving_checkpoint, self.args.save_total_limit = True, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint, self.args.save_total_limit = False, limit
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            unwrapped = self.accelerator.unwrap_model(self.model)
            _write_json_atomically(os.path.join(folder, CHECKPOINT_MARKER), {
                "modalities": unwrapped.config.modality_names,
                "trained_modalities": self.trained_modalities,
                "fusion_modalities": unwrapped.fusion.modalities if unwrapped.fusion is not None else None,
                "modality_schedule": self.args.modality_schedule,
                "global_step": self.state.global_step,
            })
            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Why: a CREMA checkpoint is adapters + fusion + early-exit state, not one state dict. They are copied into
        the live model's tensors in place (so anything holding them stays valid), after checking the checkpoint was
        written for the same modalities."""
        self._load_crema_checkpoint(resume_from_checkpoint, model, restore_early_exit=True)

    def _load_best_model(self) -> None:
        """Why: the best checkpoint holds adapters and the fusion, not a state dict."""
        self._load_crema_checkpoint(self.state.best_model_checkpoint, None, restore_early_exit=False)

    def _load_crema_checkpoint(self, folder: str, model: nn.Module | None, restore_early_exit: bool) -> None:
        marker = os.path.join(folder, CHECKPOINT_MARKER)
        if not os.path.isfile(marker):
            previous = last_complete_checkpoint(os.path.dirname(os.path.abspath(folder)))
            raise ValueError(
                f"{folder} is not a complete CREMA checkpoint (no {CHECKPOINT_MARKER}: its save was interrupted, or "
                f"CremaTrainer did not write it). Resume from a complete one"
                + (f", e.g. {previous}." if previous else ", or start a new run.")
            )
        with open(marker) as handle:
            saved = json.load(handle)
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        fusion = model.fusion.modalities if model.fusion is not None else None
        if saved["modalities"] != model.config.modality_names or saved.get("fusion_modalities") != fusion:
            raise ValueError(
                f"Checkpoint {folder} was saved for modalities {saved['modalities']} (fusion "
                f"{saved.get('fusion_modalities')}), but this model has {model.config.modality_names} (fusion "
                f"{fusion}). Resume with a model built for the same modalities in the same order, or start a new run."
            )
        if restore_early_exit and saved["trained_modalities"] != self.trained_modalities:
            raise ValueError(
                f"Checkpoint {folder} trained modalities {saved['trained_modalities']}, this run trains "
                f"{self.trained_modalities}; resume with the same `modalities` (and order), or start a new run."
            )
        # Read and check every file before touching the model, then copy into the live tensors.
        adapters = {name: _read_checked(os.path.join(folder, ADAPTERS_FOLDER, name, ADAPTER_WEIGHTS_NAME),
                                        adapter_state_dict(model, name))
                    for name in model.config.modality_names}
        fusion_tensors = None
        if model.fusion is not None:
            fusion_tensors = _read_checked(os.path.join(folder, FUSION_FOLDER, FUSION_WEIGHTS_NAME),
                                           model.fusion.state_dict())
        for name, tensors in adapters.items():
            unprefixed = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in tensors.items()}
            set_peft_model_state_dict(model, unprefixed, adapter_name=name)
        if fusion_tensors is not None:
            model.fusion.load_state_dict(fusion_tensors)
        if restore_early_exit:
            self.early_exit.load_state_dict(ModalityEarlyExit.read(folder))


# --------------------------------------------------------------------------------------------------- schedule
@dataclass
class ReferenceLRSchedule:
    """LR multiplier of the authors' `LinearWarmupCosineLRScheduler` at optimiser step `step` (0-indexed):
    epoch 0: min(peak, start + (peak - start) · step / warmup_steps); epoch e >= 1: min_lr + (peak - min_lr) ·
    (1 + cos(π e / num_epochs)) / 2, constant within the epoch. Returned relative to `peak_lr` (for `LambdaLR`)."""

    peak_lr: float
    warmup_start_lr: float
    warmup_steps: int
    min_lr: float
    steps_per_epoch: int
    num_epochs: int

    def learning_rate(self, step: int) -> float:
        epoch = step // max(1, self.steps_per_epoch)
        if epoch == 0:
            progress = step / max(self.warmup_steps, 1)
            return min(self.peak_lr, self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * progress)
        cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, self.num_epochs)))
        return (self.peak_lr - self.min_lr) * cosine + self.min_lr

    def __call__(self, step: int) -> float:
        return self.learning_rate(step) / self.peak_lr if self.peak_lr else 0.0


# --------------------------------------------------------------------------------------------------- metrics
class AnswerAccuracy:
    """Exact-match accuracy of generated answers (lower-cased, whitespace-normalised), overall and per question
    type: `{"accuracy": ..., "accuracy_<type>": ...}`. An empty answer counts as "unanswerable" (DESIGN §3)."""

    def __init__(self, tokenizer: Any, question_types: list[str] | None = None):
        self.tokenizer = tokenizer
        self.question_types = question_types

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        predictions, labels = prediction.predictions, prediction.label_ids
        types = None
        if isinstance(labels, (tuple, list)):
            labels, types = labels
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        predictions = np.asarray(predictions)
        if predictions.ndim == 3:  # logits (predict_with_generate=False)
            predictions = predictions.argmax(-1)
        pad = self.tokenizer.pad_token_id or 0
        predicted = self.tokenizer.batch_decode(np.where(predictions < 0, pad, predictions), skip_special_tokens=True)
        expected = self.tokenizer.batch_decode(np.where(np.asarray(labels) < 0, pad, labels), skip_special_tokens=True)
        correct = np.array([_normalize_answer(p) == _normalize_answer(e) for p, e in zip(predicted, expected)])
        metrics = {"accuracy": float(correct.mean()) if len(correct) else 0.0}
        if types is not None and self.question_types:
            types = np.asarray(types)
            for index, name in enumerate(self.question_types):
                selected = types == index
                if selected.any():
                    key = "accuracy_" + re.sub(r"\s+", "_", name)
                    metrics[key] = float(correct[selected].mean())
        return metrics


def _normalize_answer(text: str) -> str:
    return " ".join(text.lower().split()) or "unanswerable"


# --------------------------------------------------------------------------------------------------- helpers
def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest `checkpoint-<step>` folder under `folder` whose save completed (it holds `crema_checkpoint.json`)."""
    if not os.path.isdir(folder):
        return None
    steps = []
    for name in os.listdir(folder):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isfile(os.path.join(folder, name, CHECKPOINT_MARKER)):
            steps.append((int(match.group(1)), name))
    return os.path.join(folder, max(steps)[1]) if steps else None


def _read_checked(path: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, refused (one ValueError naming the file) unless their keys and shapes are
    exactly those of the live module."""
    try:
        tensors = load_file(path)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"Cannot read checkpoint file {path} ({error}); resume from another checkpoint.") from None
    problems = sorted(set(expected) ^ set(tensors)) or [
        key for key in expected if tuple(tensors[key].shape) != tuple(expected[key].shape)
    ]
    if problems:
        raise ValueError(f"Checkpoint file {path} does not fit this model (keys or shapes differ: {problems[:4]}); "
                         "resume with the model it was trained with.")
    return tensors


@contextlib.contextmanager
def _mode_at_each_forward(module: nn.Module, training: bool, afterwards: bool):
    """Sets `module`'s train / eval mode at each of its forwards inside the block (a forward pre-hook: whatever set
    the mode before the forward is overruled), and `afterwards` once the block ends."""
    def set_mode(hooked: nn.Module, args: Any) -> None:  # returns None: the forward's arguments stay as they are
        hooked.train(training)

    handle = module.register_forward_pre_hook(set_mode)
    try:
        yield
    finally:
        handle.remove()
        module.train(afterwards)


def _write_json_atomically(path: str, content: Any) -> None:
    staging = f"{path}.saving"
    with open(staging, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(staging, path)


def _owner(name: str) -> str | None:
    """The modality a trainable parameter belongs to (`...lora_A.<m>...`, `mmqa.<m>...`), None for the fusion."""
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part.startswith("lora_"):
            return parts[index + 1]
    if parts[0] == "mmqa":
        return parts[1]
    return None


def _is_lora_weight(name: str) -> bool:
    parts = name.split(".")
    return "lora_A" in parts or "lora_B" in parts


def _parameters_by_owner(model: nn.Module):
    adapters: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in model.config.modality_names}
    fusion: list[tuple[str, nn.Parameter]] = []
    for name, parameter in model.named_parameters():
        if not is_trainable_parameter_name(name):
            continue
        if name.startswith("fusion."):
            fusion.append((name, parameter))
        else:
            adapters.setdefault(_owner(name), []).append((name, parameter))
    return adapters, fusion


def _decay_groups(named_parameters, weight_decay: float, group: str) -> list[dict[str, Any]]:
    """The reference's rule: no weight decay for parameters with fewer than 2 dimensions and biases (its `ln`/`bn`
    name rule only ever matches 1-D LayerNorm weights)."""
    decay, no_decay = [], []
    for name, parameter in named_parameters:
        (no_decay if parameter.ndim < 2 or name.endswith("bias") else decay).append(parameter)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "name": group})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": f"{group}/no_decay"})
    return groups


def _resolve_trained_modalities(model: nn.Module, requested: list[str] | None) -> list[str]:
    attached = list(model.config.modality_names)
    if not attached:
        raise ValueError("The model has no modality adapters to train; add one with `model.add_modality('video')`.")
    if requested is None:
        return attached
    unknown = [name for name in requested if name not in attached]
    if unknown:
        raise ValueError(
            f"`modalities` names {unknown}, which this model has no adapter for (attached: {attached}). Add them "
            f"with `model.add_modality(...)` / `model.load_adapter(...)`, or remove them from `modalities`."
        )
    return list(requested)


def _dataset_keys(dataset: Any) -> list[str]:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, (list, tuple)):
        return list(names)
    return list(dataset[0].keys())


def _check_dataset(dataset: Any, what: str, modalities: list[str], needs_labels: bool) -> None:
    """One clear error for a dataset that cannot train this model: empty, unsized, or without inputs for one of
    the model's modalities (or with inputs for a modality the model lacks)."""
    if dataset is None:
        return
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            _check_dataset(value, f"{what}[{key!r}]", modalities, needs_labels)
        return
    try:
        size = len(dataset)
    except TypeError:
        raise ValueError(
            f"The {what} has no length (an iterable dataset?): CREMA's early exit and LR schedule are per epoch, so "
            "training needs a map-style dataset (e.g. `datasets.Dataset`)."
        ) from None
    if size == 0:
        raise ValueError(f"The {what} is empty: give it at least one example (check the split and any filtering).")
    keys = _dataset_keys(dataset)
    text_needed = ["input_ids"] + (["labels"] if needs_labels else [])
    missing_text = [key for key in text_needed if key not in keys]
    if missing_text:
        raise ValueError(
            f"The {what} has no {missing_text} column (columns: {keys}); tokenise the prompts and answers first "
            "(e.g. with CremaProcessor)."
        )
    provided = {}
    for key in keys:
        suffix = modality_input_suffix(key)
        if suffix in _ENCODER_INPUTS and key not in TEXT_KEYS:
            provided.setdefault(key[: -len(suffix) - 1], []).append(key)
    unknown = sorted(set(provided) - set(modalities))
    if unknown:
        raise ValueError(
            f"The {what} has inputs for modalities {unknown} ({[k for m in unknown for k in provided[m]]}), which the "
            f"model has no adapter for (model modalities: {modalities}). Add the adapters or drop those columns."
        )
    missing = [name for name in modalities if name not in provided]
    if missing:
        raise ValueError(
            f"The {what} has no inputs for modalities {missing} of the model (expected e.g. `{missing[0]}_pixel_values`"
            f" or cached `{missing[0]}_features`; columns: {keys}). Process them with CremaProcessor / "
            "`cache_frozen_features`, or remove those modalities from the model."
        )


def _question_types(datasets: list[Any], column: str) -> list[str] | None:
    found: set[str] = set()
    pending = list(datasets)
    while pending:
        dataset = pending.pop()
        if dataset is None:
            continue
        if isinstance(dataset, dict):
            pending.extend(dataset.values())
            continue
        names = getattr(dataset, "column_names", None)
        if isinstance(names, (list, tuple)) and column in names:
            found.update(str(value) for value in dataset[column])
        elif getattr(dataset, "question_types", None):
            found.update(str(value) for value in dataset.question_types)
    return sorted(found) or None
