"""`CremaTrainingArguments`: what a user sets to train CREMA's modality adapters (DESIGN §2).

The defaults are the authors' recipe (paper §3.3, Table 10, and their released code): AdamW (0.9, 0.999), weight
decay 0.05, no gradient clipping, linear warm-up from 1e-8 inside epoch 0 then a cosine stepped once per epoch,
modality-sequential updates with the adaptive early exit from epoch 5 on, the frozen LLM's dropout active and
RandomResizedCrop(scale 0.5-1) on training clips. Every option that changes results against the reference is a
field here, so a run can be matched to it or deliberately differ from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

MODALITY_SCHEDULES = ("sequential", "joint")
LR_SCHEDULES = ("reference", "trainer")


@dataclass
class CremaTrainingArguments(TrainingArguments):
    r"""
    Arguments of [`CremaTrainer`], on top of [`~transformers.TrainingArguments`].

    modalities (`list[str]`, *optional*):
        The modality adapters to train, in the order of the sequential updates (DESIGN §2). Defaults to every
        modality attached to the model, in the model's order. Attached modalities left out still run in the forward
        pass (their adapters stay frozen).
    modality_schedule (`str`, defaults to `"sequential"`):
        `"sequential"`: for every minibatch, for each modality not yet exited, in order: forward with all
        modalities, backward, optimiser step on that modality's adapter and the fusion only. One LR-scheduler step
        per minibatch. `"joint"`: one update of every adapter and the fusion per minibatch (the paper's ablation).
    early_exit (`bool`, defaults to `True`):
        The adaptive early exit: modality m stops training after epoch j when
        ḡ_m[j] > τ · mean(ḡ_m[0..j-1]), ḡ_m[j] being the epoch average of the L2 norm of m's LoRA A/B gradients.
    early_exit_tau (`float`, defaults to 1.4):
        τ (1.4 for MUSIC-AVQA, 1.8 for SQA3D in the reference). Must be > 0.
    early_exit_start_epoch (`int`, defaults to 5):
        The first (0-indexed) epoch whose average may trigger an exit (earlier epochs only build the history).
    stop_when_all_exited (`bool`, defaults to `True`):
        End training once every trained modality has exited (nothing would be updated any more).
    reuse_modality_embeddings (`bool`, defaults to `False`):
        Sequential schedule, faster: inside a minibatch, each modality's MMQA output is computed once without
        gradients and reused by the other modalities' sub-steps until its own adapter is updated (then once more): 16
        Q-Former passes per minibatch instead of 36 with six modalities. The same updates as recomputing them in
        every sub-step, except that the Q-Former's dropout is drawn once per output instead of once per sub-step
        (exactly the same with `qformer_dropout=False`). Off by default, as the reference: on crema-tiny, reusing
        scored lower with the dropout and without it (README).
    qformer_dropout (`bool`, defaults to `True`):
        Keep the dropout of the frozen Q-Former and of the MMQA LoRA active while training, as BLIP-2 and the reference
        do. `False` runs the Q-Former (with its adapters) in eval mode while training: then every MMQA output is a
        function of the adapters alone, so `reuse_modality_embeddings` gives exactly the updates of recomputing.
    clip_column (`str`, *optional*):
        Dataset column naming each row's clip (e.g. `"clip_id"`), for data with several questions per clip. Training
        batches then hold whole clips (`ClipGroupedSampler`: clips shuffled every epoch, each clip's rows together)
        and carry each clip's inputs once (`clip_index`), so a clip's modalities are encoded once per batch and
        sub-step instead of once per question; the Q-Former's dropout is then drawn once per clip. Evaluation batches
        share clips the same way (same results, less work). Rows of one clip must hold the same inputs (cached
        features; not rows whose frames are drawn per row). Off by default: rows are sampled independently, as in
        the reference.
    llm_dropout (`bool`, defaults to `True`):
        Keep the frozen LLM's dropout active while training, as the reference does (its T5 stays in train mode).
        `False` runs it in eval mode (the model's own default).
    random_resized_crop (`bool`, defaults to `True`):
        RandomResizedCrop of every training clip, one crop per clip and modality (independently per modality, the
        same crop for all frames of a clip), as the reference's training processors do. Applies to pixel inputs
        only (cached frozen features cannot be cropped).
    crop_scale (`list[float]`, defaults to `[0.5, 1.0]`):
        Range of the crop area relative to the frame (aspect ratio 3/4 to 4/3, bicubic resize back).
    lr_schedule (`str`, defaults to `"reference"`):
        `"reference"`: linear warm-up from `warmup_start_lr` to `learning_rate` over `warmup_steps` inside epoch 0
        only, then lr(e) = min_lr + (lr - min_lr) · (1 + cos(π e / epochs)) / 2, constant within epoch e.
        `"trainer"`: `lr_scheduler_type` and the Trainer's own schedulers.
    warmup_start_lr (`float`, defaults to 1e-8):
        Learning rate of the first warm-up step (reference schedule).
    min_lr (`float`, defaults to 0.0):
        Floor of the per-epoch cosine (reference schedule; 0 for MUSIC-AVQA, 1e-5 for SQA3D).
    predict_with_generate (`bool`, defaults to `True`):
        Evaluate by generating answers (accuracy per question type) instead of teacher-forced logits.
    generation_num_beams / generation_max_new_tokens / generation_length_penalty:
        Decoding during evaluation (DESIGN §3: 5 beams, 10 new tokens, length penalty -1).
    question_type_column (`str`, defaults to `"question_type"`):
        Dataset column holding each example's question type, for the per-type accuracy.
    """

    # ------------------------------------------------------------------ CREMA's training recipe (DESIGN §2)
    modalities: list[str] | None = field(
        default=None,
        metadata={"help": "Modality adapters to train, in the order of the sequential updates (default: the model's)."},
    )
    modality_schedule: str = field(
        default="sequential",
        metadata={"help": "'sequential' (per-modality updates inside each minibatch) or 'joint' (one update).",
                  "choices": list(MODALITY_SCHEDULES)},
    )
    early_exit: bool = field(default=True, metadata={"help": "Adaptive early exit per modality."})
    early_exit_tau: float = field(default=1.4, metadata={"help": "τ of the early-exit rule (> 0)."})
    early_exit_start_epoch: int = field(
        default=5, metadata={"help": "First 0-indexed epoch whose gradient average may trigger an exit."}
    )
    stop_when_all_exited: bool = field(
        default=True, metadata={"help": "Stop training once every trained modality has exited."}
    )
    reuse_modality_embeddings: bool = field(
        default=False,
        metadata={"help": "Sequential schedule: reuse each modality's MMQA output until its adapter is updated."},
    )
    qformer_dropout: bool = field(
        default=True,
        metadata={"help": "Frozen Q-Former's (and the MMQA LoRA's) dropout active while training (the reference's)."},
    )
    clip_column: str | None = field(
        default=None,
        metadata={"help": "Column naming each row's clip: batches hold whole clips, each encoded once per batch."},
    )
    llm_dropout: bool = field(
        default=True, metadata={"help": "Frozen LLM's dropout active while training (the reference's behaviour)."}
    )
    random_resized_crop: bool = field(
        default=True, metadata={"help": "RandomResizedCrop per clip and modality on training pixels."}
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.5, 1.0], metadata={"help": "Crop area range of RandomResizedCrop."}
    )
    lr_schedule: str = field(
        default="reference",
        metadata={"help": "'reference' (warm-up in epoch 0, cosine per epoch) or 'trainer' (lr_scheduler_type).",
                  "choices": list(LR_SCHEDULES)},
    )
    warmup_start_lr: float = field(default=1e-8, metadata={"help": "First warm-up learning rate (reference)."})
    min_lr: float = field(default=0.0, metadata={"help": "Floor of the per-epoch cosine (reference schedule)."})

    # ------------------------------------------------------------------ evaluation
    predict_with_generate: bool = field(
        default=True, metadata={"help": "Evaluate generated answers (accuracy per question type)."}
    )
    generation_num_beams: int = field(default=5, metadata={"help": "Beams when generating answers in evaluation."})
    generation_max_new_tokens: int = field(default=10, metadata={"help": "New tokens when generating answers."})
    generation_length_penalty: float = field(default=-1.0, metadata={"help": "Length penalty of the beam search."})
    question_type_column: str = field(
        default="question_type", metadata={"help": "Dataset column with each example's question type."}
    )

    # ------------------------------------------------------------------ TrainingArguments defaults, reference values
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(
        default=0.05, metadata={"help": "Weight decay, except 1-D parameters and biases (reference rule)."}
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (0: none, as the reference)."})
    warmup_steps: float = field(default=1000, metadata={"help": "Warm-up steps (inside epoch 0 for 'reference')."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns: CREMA's inputs are `{modality}_{suffix}` keyword arguments, which "
                          "the Trainer's signature-based column filter would drop."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=True,
        metadata={"help": "DDP must tolerate adapters without gradients (other modalities' sub-steps, exited ones)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.modality_schedule not in MODALITY_SCHEDULES:
            raise ValueError(
                f"modality_schedule={self.modality_schedule!r} is not known; use one of {list(MODALITY_SCHEDULES)}."
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is not known; use one of {list(LR_SCHEDULES)}.")
        if not self.early_exit_tau > 0:
            raise ValueError(
                f"early_exit_tau (τ) must be > 0, got {self.early_exit_tau}: a modality exits when its epoch gradient "
                "average exceeds τ times the mean of the earlier epochs (the paper uses 1.4 and 1.8)."
            )
        if self.early_exit_start_epoch < 1:
            raise ValueError(
                f"early_exit_start_epoch must be >= 1, got {self.early_exit_start_epoch}: the exit rule compares an "
                "epoch with the mean of the earlier ones, so epoch 0 has nothing to compare with."
            )
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be two numbers 0 < min <= max <= 1, got {self.crop_scale}.")
        if self.modalities is not None:
            if isinstance(self.modalities, str):
                self.modalities = [name.strip() for name in self.modalities.split(",") if name.strip()]
            if not self.modalities or len(set(self.modalities)) != len(self.modalities):
                raise ValueError(f"modalities must be a non-empty list without repeats, got {self.modalities}.")
        if self.label_names is None:
            self.label_names = ["labels"]
