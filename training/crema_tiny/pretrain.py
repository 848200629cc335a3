"""Per-rendering QA pre-training of the tiny backbone: the stand-in for BLIP-2's broad pre-training. Each example is
one rendering of a one-object clip (RGB frames -> colour / shape, flow -> direction, depth -> near / far, thermal ->
hot, normals -> facing, the audio track's fbank through the audio encoder -> beeps / pitch) with its CREMA-Synth
question; the LLM reads `Frame t: <visual tokens of frame t>` for every frame (or audio segment), then the prompt,
as CREMA's video path lays them out. Everything (ViT, audio encoder, Q-Former, query tokens, projection, T5)
trains; afterwards the whole backbone is frozen."""

from __future__ import annotations

import random
import time

import torch


def _frame_tokens(blip2, tokenizer, states: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Encoder states of B x T images -> LLM input embeddings `Frame 1: q(1) ... Frame T: q(T)` (B, L, D)."""
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


def visual_embeds(blip2, tokenizer, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> LLM input embeddings `Frame 1: q(1) ... Frame T: q(T)` of shape (B, L, D)."""
    states = blip2.vision_model(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
    return _frame_tokens(blip2, tokenizer, states, *pixel_values.shape[:2])


def audio_embeds(blip2, audio_encoder, tokenizer, input_values: torch.Tensor) -> torch.Tensor:
    """(B, S, frames, mel bins) fbank segments -> LLM input embeddings, one `Frame s:` per segment: the audio
    encoder's states read by the same Q-Former, as the audio MMQA will read them."""
    states = audio_encoder(input_values=input_values.flatten(0, 1)).last_hidden_state
    return _frame_tokens(blip2, tokenizer, states, *input_values.shape[:2])


def rendering_embeds(blip2, audio_encoder, tokenizer, rendering: str, inputs: torch.Tensor) -> torch.Tensor:
    """LLM input embeddings of one rendering's stacked inputs, through the encoder that reads it."""
    if rendering == "audio":
        return audio_embeds(blip2, audio_encoder, tokenizer, inputs)
    return visual_embeds(blip2, tokenizer, inputs)


#: Question types whose answer does not change when the frames are flipped or turned by a multiple of 90 degrees.
ORIENTATION_FREE_TYPES = ("color", "shape")


def dihedral_augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(T, 3, H, W) -> the same frames under one random flip / quarter turn (all frames alike): shapes and colours
    seen in eight poses, so that a few hundred clips teach shape rather than memorise it."""
    turns = int(torch.randint(4, (1,), generator=generator))
    flipped = pixels.flip(-1) if int(torch.randint(2, (1,), generator=generator)) else pixels
    return torch.rot90(flipped, turns, dims=(-2, -1))


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([s + [value] * (width - len(s)) for s in sequences])


def qa_loss(blip2, tokenizer, visual: torch.Tensor, input_ids: list[list[int]], labels: list[list[int]]):
    """The LLM's loss on `visual` input embeddings followed by the prompt."""
    device = visual.device
    ids = _pad(input_ids, tokenizer.pad_token_id).to(device)
    text = blip2.language_model.get_input_embeddings()(ids)
    embeds = torch.cat([visual, text], dim=1)
    mask = torch.cat([torch.ones(visual.shape[:2], dtype=torch.long, device=device),
                      (ids != tokenizer.pad_token_id).long()], 1)
    target = _pad(labels, -100).to(device)
    return blip2.language_model(inputs_embeds=embeds, attention_mask=mask, labels=target)


def _rendering(row: dict) -> str:
    return row["needed_modalities"][0]


def _inputs(clips, rows, rendering: str, device, generator=None) -> torch.Tensor:
    """The stacked inputs of `rendering` for rows; with `generator`, colour and shape frames under a random flip /
    quarter turn."""
    return torch.stack([
        dihedral_augment(clips[r["clip_id"]][rendering], generator)
        if generator is not None and r["question_type"] in ORIENTATION_FREE_TYPES
        else clips[r["clip_id"]][rendering]
        for r in rows
    ]).to(device=device, dtype=torch.float32)


def pretrain(blip2, audio_encoder, tokenizer, clips, rows, epochs: int = 12, batch_size: int = 32, lr: float = 1e-3,
             seed: int = 0, augment: bool = True, extra=None, extra_per_epoch: int = 0, log=print) -> list[float]:
    """Train every backbone and audio-encoder parameter on per-rendering QA (rows whose question needs one
    rendering); with `augment`, colour and shape examples see their frames under a random flip / quarter turn
    (`dihedral_augment`). `extra`: a pool (clips, rows) of which `extra_per_epoch` rows, drawn afresh each epoch,
    join the epoch (the audio pre-training tracks). A batch mixes renderings: each rendering's rows are encoded
    together and the loss is their size-weighted mean."""
    base = [r for r in rows if len(r["needed_modalities"]) == 1 and _rendering(r) in next(iter(clips.values()))]
    extra_clips, extra_rows = extra if extra is not None else ({}, [])
    clips = {**clips, **extra_clips}
    rng = random.Random(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    modules = torch.nn.ModuleList([blip2, audio_encoder])
    modules.train()
    optimizer = torch.optim.AdamW(modules.parameters(), lr=lr, weight_decay=0.01)
    per_epoch = len(base) + min(extra_per_epoch, len(extra_rows))
    steps = epochs * ((per_epoch + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history, start = [], time.time()
    for epoch in range(epochs):
        examples = base + rng.sample(extra_rows, min(extra_per_epoch, len(extra_rows)))
        rng.shuffle(examples)
        total, count = 0.0, 0
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            loss = 0.0
            for rendering in sorted({_rendering(r) for r in batch}):
                group = [r for r in batch if _rendering(r) == rendering]
                inputs = _inputs(clips, group, rendering, blip2.device, generator if augment else None)
                embeds = rendering_embeds(blip2, audio_encoder, tokenizer, rendering, inputs)
                group_loss = qa_loss(blip2, tokenizer, embeds, [r["input_ids"] for r in group],
                                     [r["labels"] for r in group]).loss
                loss = loss + group_loss * (len(group) / len(batch))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        history.append(total / count)
        log(f"pre-training epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f} ({time.time() - start:.0f} s)")
    modules.eval()
    for parameter in modules.parameters():
        parameter.requires_grad_(False)
    return history


@torch.no_grad()
def letter_accuracy(blip2, audio_encoder, tokenizer, clips, rows) -> dict[str, float]:
    """Per question type: does the backbone put the highest probability on the right option letter?"""
    letters = [tokenizer.convert_tokens_to_ids(c) for c in "ABCDE"]
    hits: dict[str, list[int]] = {}
    examples = [r for r in rows if len(r["needed_modalities"]) == 1]
    for rendering in sorted({_rendering(r) for r in examples}):
        group = [r for r in examples if _rendering(r) == rendering]
        for i in range(0, len(group), 64):
            batch = group[i:i + 64]
            embeds = rendering_embeds(blip2, audio_encoder, tokenizer, rendering,
                                      _inputs(clips, batch, rendering, blip2.device))
            logits = qa_loss(blip2, tokenizer, embeds, [r["input_ids"] for r in batch],
                             [r["labels"] for r in batch]).logits
            for row, step in zip(batch, logits[:, 1]):
                guess = int(step[letters[:len(row["options"])]].argmax())
                hits.setdefault(row["question_type"], []).append(int(guess == row["answer_index"]))
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
