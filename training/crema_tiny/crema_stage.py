"""From the frozen pre-trained backbone to crema-tiny: CREMA with one adapter per modality, trained with
`CremaTrainer` (modality-sequential updates, adaptive early exit) on cached frozen features; and the held-out
evaluation (multiple choice ranked by option log-likelihood, as `crema answer` does)."""

from __future__ import annotations

import numpy as np
import torch

from .backbone import NUM_AUDIO_SEGMENTS, NUM_FRAMES
from .data import input_key

#: Where the recipe saves the audio encoder, inside the backbone folder.
AUDIO_ENCODER_FOLDER = "audio_encoder"


def build_crema(backbone_folder, tokenizer, modalities, fusion: bool = True, seed: int = 0, lora_dropout: float = 0.0,
                token_layout: str = "paper"):
    """CREMA on the frozen backbone (and its audio encoder when "audio" is a modality); the new adapters' random
    parts (LoRA A, the fusion) are drawn from `seed`, so a variant starts from the same adapters whatever ran before
    it in the process. `token_layout` places the fused tokens (see `modeling_crema/token_layout.py`)."""
    from pathlib import Path

    from modeling_crema import CremaForConditionalGeneration

    audio_encoder = str(Path(backbone_folder) / AUDIO_ENCODER_FOLDER) if "audio" in modalities else None
    torch.manual_seed(seed)
    return CremaForConditionalGeneration.from_blip2(
        str(backbone_folder), modalities=list(modalities), tokenizer=tokenizer, num_frames=NUM_FRAMES,
        audio_encoder=audio_encoder, num_audio_segments=NUM_AUDIO_SEGMENTS,
        fusion_modalities=list(modalities) if fusion and len(modalities) > 1 else None,
        use_fusion=bool(fusion and len(modalities) > 1), lora_rank=8, lora_dropout=lora_dropout,
        token_layout=token_layout,
    )


@torch.no_grad()
def clip_features(model, clips, modalities, batch_size: int = 64):
    """clip_id -> {m: (G, N, D) frozen encoder states: pre-LayerNorm ViT states of T frames, or AST states of S
    audio segments}."""
    ids = list(clips)
    out = {cid: {} for cid in ids}
    for m in modalities:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            inputs = torch.stack([clips[c][m] for c in chunk])
            feats = model.encode_frozen_features(m, **{input_key(m): inputs})
            for c, f in zip(chunk, feats):
                out[c][m] = f.clone()
    return out


def training_dataset(rows, features, modalities):
    """The rows with their clips' cached features, as fixed-shape float32 arrays: formatted as torch tensors in one
    piece (as nested lists, tensorising them element by element took 40 % of a training step)."""
    from datasets import Array3D, Dataset, Features, Sequence, Value

    data = {"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
            "question_type": [r["question_type"] for r in rows], "clip_id": [r["clip_id"] for r in rows]}
    types = {"input_ids": Sequence(Value("int64")), "labels": Sequence(Value("int64")),
             "question_type": Value("string"), "clip_id": Value("string")}
    for m in modalities:
        data[f"{m}_features"] = np.stack([features[r["clip_id"]][m].numpy() for r in rows])
        types[f"{m}_features"] = Array3D(shape=data[f"{m}_features"].shape[1:], dtype="float32")
    return Dataset.from_dict(data, features=Features(types)).with_format("torch")


def adapter_update_counter():
    """A callback that counts each adapter's optimiser updates (what adaptive early exit saves): one per sub-step of
    the modality being updated (sequential), one per active modality per step (joint). Set `.trainer` after building
    the trainer; the counts are in `.counts`."""
    from collections import Counter

    from transformers import TrainerCallback

    class AdapterUpdateCounter(TrainerCallback):
        def __init__(self):
            self.trainer, self.counts = None, Counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            current = self.trainer.current_modality
            self.counts.update([current] if current else self.trainer.early_exit.active_modalities())

    return AdapterUpdateCounter()


def train_crema(model, processor, rows, features, output_dir, epochs: int = 10, batch_size: int = 32,
                lr: float = 1e-3, schedule: str = "sequential", early_exit: bool = True, seed: int = 42,
                use_cpu: bool = True, early_exit_start_epoch: int = 5,
                early_exit_tau: float = 1.4, reuse_modality_embeddings: bool = False,
                qformer_dropout: bool = True, group_by_clip: bool = False, llm_dropout: bool = False):
    """Trains the adapters and the fusion; returns the trainer (`trainer.adapter_updates`: updates per adapter;
    `trainer.early_exit`: the exit epochs and the per-epoch indicators). `group_by_clip`: batches of whole clips
    (all questions of a clip), each clip encoded once per sub-step (the trainer's `clip_column`)."""
    from ..arguments import CremaTrainingArguments
    from ..trainer import CremaTrainer

    modalities = list(model.config.modality_names)
    args = CremaTrainingArguments(
        output_dir=str(output_dir), modalities=modalities, modality_schedule=schedule,
        reuse_modality_embeddings=reuse_modality_embeddings, qformer_dropout=qformer_dropout, early_exit=early_exit,
        clip_column="clip_id" if group_by_clip else None,
        early_exit_tau=early_exit_tau, early_exit_start_epoch=early_exit_start_epoch, per_device_train_batch_size=batch_size,
        num_train_epochs=epochs, learning_rate=lr, warmup_steps=10, random_resized_crop=False, llm_dropout=llm_dropout,
        save_strategy="no", eval_strategy="no", report_to=[], logging_steps=50, use_cpu=use_cpu, seed=seed,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    model.train()
    counter = adapter_update_counter()
    trainer = CremaTrainer(model=model, args=args, train_dataset=training_dataset(rows, features, modalities),
                           processing_class=processor, callbacks=[counter])
    counter.trainer = trainer
    trainer.train()
    trainer.adapter_updates = dict(counter.counts)
    model.eval()
    return trainer


@torch.no_grad()
def evaluate(model, tokenizer, rows, features, modalities=None, batch_size: int = 64) -> dict[str, float]:
    """Accuracy per question type: each option's target `Option {L}` scored by its summed log-likelihood."""
    from crema_processing.prompts import multiple_choice_target

    used = list(model.config.modality_names) if modalities is None else list(modalities)
    expanded = [(r, k) for r in rows for k in range(len(r["options"]))]
    scores = []
    for i in range(0, len(expanded), batch_size):
        chunk = expanded[i:i + batch_size]
        ids = [r["input_ids"] for r, _ in chunk]
        width = max(map(len, ids))
        input_ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in ids])
        targets = tokenizer([multiple_choice_target(k, r["options"]) for r, k in chunk], padding=True,
                            return_tensors="pt").input_ids
        labels = targets.masked_fill(targets == tokenizer.pad_token_id, -100)
        inputs = {f"{m}_features": torch.stack([features[r["clip_id"]][m] for r, _ in chunk]) for m in used}
        kwargs = {} if modalities is None else {"modalities": used}
        logits = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                       labels=labels, **inputs, **kwargs).logits
        logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        scores += (logp * (labels != -100)).sum(-1).tolist()
    hits: dict[str, list[int]] = {}
    position = 0
    for r in rows:
        n = len(r["options"])
        guess = int(np.argmax(scores[position:position + n]))
        position += n
        hits.setdefault(r["question_type"], []).append(int(guess == r["answer_index"]))
    result = {k: sum(v) / len(v) for k, v in sorted(hits.items())}
    result["all"] = sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    return result
