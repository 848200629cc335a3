"""Pre-training of the tiny backbone, the stand-in for BLIP-2's: everything trains on per-rendering QA (`pretrain`),
optionally after the ViT alone is trained as a per-frame attribute classifier (`pretrain_vision_encoder`), as BLIP-2
starts from an image encoder trained on its own (EVA-CLIP). Each example is one rendering of a one-object clip (RGB
frames -> colour / shape, flow -> direction, depth -> near / far, thermal -> hot, normals -> facing) with its
CREMA-Synth question; the LLM reads `Frame t: <visual tokens of frame t>` for every frame, then the prompt, as
CREMA's video path lays them out. Afterwards the whole backbone is frozen."""

from __future__ import annotations

import random
import time

import torch


def visual_embeds(blip2, tokenizer, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> LLM input embeddings `Frame 1: q(1) ... Frame T: q(T)` of shape (B, L, D)."""
    batch, frames = pixel_values.shape[:2]
    states = blip2.vision_model(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
    queries = blip2.query_tokens.expand(states.shape[0], -1, -1)
    mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
    query_out = blip2.qformer(query_embeds=queries, encoder_hidden_states=states,
                              encoder_attention_mask=mask).last_hidden_state
    tokens = blip2.language_projection(query_out).view(batch, frames, queries.shape[1], -1)
    embed = blip2.language_model.get_input_embeddings()
    parts = []
    for t in range(frames):
        ids = tokenizer(f"Frame {t + 1}: ", add_special_tokens=False).input_ids
        parts.append(embed(torch.tensor(ids, device=states.device)).unsqueeze(0).expand(batch, -1, -1))
        parts.append(tokens[:, t])
    return torch.cat(parts, dim=1)


#: Question types whose answer does not change when the frames are flipped or turned by a multiple of 90 degrees.
ORIENTATION_FREE_TYPES = ("color", "shape")


def dihedral_augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(T, 3, H, W) -> the same frames under one random flip / quarter turn (all frames alike): shapes and colours
    seen in eight poses, so that a few hundred clips teach shape rather than memorise it."""
    turns = int(torch.randint(4, (1,), generator=generator))
    flipped = pixels.flip(-1) if int(torch.randint(2, (1,), generator=generator)) else pixels
    return torch.rot90(flipped, turns, dims=(-2, -1))


def single_rendering_rows(clips, rows) -> list[dict]:
    """The rows whose question needs one rendering that `clips` holds."""
    available = next(iter(clips.values()))
    return [r for r in rows if len(r["needed_modalities"]) == 1 and r["needed_modalities"][0] in available]


def pretrain_vision_encoder(blip2, clips, rows, epochs: int = 20, batch_size: int = 32, lr: float = 1e-3,
                            seed: int = 0, augment: bool = True, log=print) -> list[float]:
    """Trains the ViT alone to classify each frame of each row's rendering (one linear head per question type on its
    mean patch state; the heads are thrown away): through the Q-Former and the LLM alone, the ViT gets too weak a
    signal to learn shape at this size. With `augment`, colour and shape frames are each seen under a random flip /
    quarter turn."""
    examples = single_rendering_rows(clips, rows)
    types = sorted({r["question_type"] for r in examples})
    width = max(len(r["options"]) for r in examples)
    frames = torch.cat([clips[r["clip_id"]][r["needed_modalities"][0]] for r in examples])
    per_clip = frames.shape[0] // len(examples)
    turnable = torch.tensor([r["question_type"] in ORIENTATION_FREE_TYPES for r in examples])
    turnable = turnable.repeat_interleave(per_clip)
    labels = torch.tensor([r["answer_index"] for r in examples]).repeat_interleave(per_clip)
    kinds = torch.tensor([types.index(r["question_type"]) for r in examples]).repeat_interleave(per_clip)
    torch.manual_seed(seed)
    vision = blip2.vision_model
    heads = torch.nn.Linear(vision.config.hidden_size, width * len(types)).to(blip2.device)
    parameters = list(vision.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    vision.train()
    history, start = [], time.time()
    for epoch in range(epochs):
        order = torch.randperm(frames.shape[0], generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i:i + batch_size]
            pixels = torch.stack([
                dihedral_augment(frames[j:j + 1], generator)[0] if augment and turnable[j] else frames[j]
                for j in index.tolist()
            ])
            states = vision(pixel_values=pixels.to(blip2.device)).last_hidden_state[:, 1:].mean(1)
            logits = heads(states).view(len(index), len(types), width)[torch.arange(len(index)), kinds[index]]
            loss = torch.nn.functional.cross_entropy(logits, labels[index].to(blip2.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(order))
        log(f"vision pre-training epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f} ({time.time() - start:.0f} s)")
    return history


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([s + [value] * (width - len(s)) for s in sequences])


def qa_loss(blip2, tokenizer, pixel_values, input_ids: list[list[int]], labels: list[list[int]]):
    visual = visual_embeds(blip2, tokenizer, pixel_values)
    device = pixel_values.device
    ids = _pad(input_ids, tokenizer.pad_token_id).to(device)
    text = blip2.language_model.get_input_embeddings()(ids)
    embeds = torch.cat([visual, text], dim=1)
    mask = torch.cat([torch.ones(visual.shape[:2], dtype=torch.long, device=device),
                      (ids != tokenizer.pad_token_id).long()], 1)
    target = _pad(labels, -100).to(device)
    return blip2.language_model(inputs_embeds=embeds, attention_mask=mask, labels=target)


def pretrain(blip2, tokenizer, clips, rows, epochs: int = 12, batch_size: int = 32, lr: float = 1e-3,
             seed: int = 0, augment: bool = True, freeze_vision: bool = False, log=print) -> list[float]:
    """Train the backbone on per-rendering QA (rows whose question needs one rendering); with `augment`, colour and
    shape examples see their frames under a random flip / quarter turn (`dihedral_augment`). `freeze_vision` keeps
    the ViT as its own stage left it (BLIP-2 trains its Q-Former on a frozen image encoder)."""
    examples = single_rendering_rows(clips, rows)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    blip2.train()
    if freeze_vision:
        blip2.vision_model.eval().requires_grad_(False)
    trainable = [p for p in blip2.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(examples) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history, start = [], time.time()
    for epoch in range(epochs):
        rng.shuffle(examples)
        total, count = 0.0, 0
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            pixels = torch.stack([
                dihedral_augment(clips[r["clip_id"]]["video"], generator)
                if augment and r["question_type"] in ORIENTATION_FREE_TYPES
                else clips[r["clip_id"]][r["needed_modalities"][0]]
                for r in batch
            ])
            pixels = pixels.to(device=blip2.device, dtype=torch.float32)
            loss = qa_loss(blip2, tokenizer, pixels, [r["input_ids"] for r in batch], [r["labels"] for r in batch]).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        history.append(total / count)
        log(f"pre-training epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f} ({time.time() - start:.0f} s)")
    blip2.eval()
    for parameter in blip2.parameters():
        parameter.requires_grad_(False)
    return history


@torch.no_grad()
def letter_accuracy(blip2, tokenizer, clips, rows) -> dict[str, float]:
    """Per question type: does the backbone put the highest probability on the right option letter?"""
    letters = [tokenizer.convert_tokens_to_ids(c) for c in "ABCDE"]
    hits: dict[str, list[int]] = {}
    examples = [r for r in rows if len(r["needed_modalities"]) == 1]
    for i in range(0, len(examples), 64):
        batch = examples[i:i + 64]
        pixels = torch.stack([clips[r["clip_id"]][r["needed_modalities"][0]] for r in batch])
        pixels = pixels.to(device=blip2.device, dtype=torch.float32)
        logits = qa_loss(blip2, tokenizer, pixels, [r["input_ids"] for r in batch], [r["labels"] for r in batch]).logits
        for row, step in zip(batch, logits[:, 1]):
            guess = int(step[letters[:len(row["options"])]].argmax())
            hits.setdefault(row["question_type"], []).append(int(guess == row["answer_index"]))
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
