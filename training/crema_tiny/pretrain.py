"""Pre-training of the tiny backbone, the stand-in for BLIP-2's: everything trains on per-rendering QA (`pretrain`),
optionally after the ViT alone is trained as a per-frame attribute classifier (`pretrain_vision_encoder`), as BLIP-2
starts from an image encoder trained on its own (EVA-CLIP). Each example is one rendering of a one-object clip (RGB
frames -> colour / shape, flow -> direction, depth -> near / far, thermal -> hot, normals -> facing, the audio
track through the frozen audio encoder -> beeps / pitch) with its CREMA-Synth question; the LLM reads
`Frame t: <tokens of frame t>` for every frame (or audio segment), then the prompt, as CREMA's video path lays them
out. Afterwards the whole backbone is frozen."""

from __future__ import annotations

import random
import time

import torch


def visual_embeds(blip2, tokenizer, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> LLM input embeddings `Frame 1: q(1) ... Frame T: q(T)` of shape (B, L, D)."""
    states = blip2.vision_model(pixel_values=pixel_values.flatten(0, 1)).last_hidden_state
    return _frame_tokens(blip2, tokenizer, states, *pixel_values.shape[:2])


def audio_embeds(blip2, audio_encoder, tokenizer, input_values: torch.Tensor) -> torch.Tensor:
    """(B, S, frames, mel bins) fbank segments -> LLM input embeddings, one `Frame s:` per segment: the audio
    encoder's states, normalised as the audio MMQA's input LayerNorm starts (no affine), read by the same
    Q-Former."""
    states = audio_encoder(input_values=input_values.flatten(0, 1)).last_hidden_state
    states = torch.nn.functional.layer_norm(states, states.shape[-1:], eps=blip2.config.vision_config.layer_norm_eps)
    return _frame_tokens(blip2, tokenizer, states, *input_values.shape[:2])


def _frame_tokens(blip2, tokenizer, states: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Encoder states of B x T frames (or segments) -> `Frame 1: q(1) ... Frame T: q(T)` of shape (B, L, D)."""
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


def qa_loss(blip2, tokenizer, visual: torch.Tensor, input_ids: list[list[int]], labels: list[list[int]]):
    """The LLM's loss on the `visual` input embeddings followed by the prompt."""
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


def rendering_groups_loss(blip2, tokenizer, clips, batch: list[dict], audio_encoder=None, generator=None):
    """The mean QA loss of a batch whose rows may need different renderings: the visual ones are encoded together
    by the ViT, the audio ones by the audio encoder; with `generator`, colour and shape frames are seen under a random
    flip / quarter turn. Returns (loss, [(rows, logits) per group])."""
    device = blip2.device
    visual = [r for r in batch if _rendering(r) != "audio"]
    audio = [r for r in batch if _rendering(r) == "audio"]
    loss, groups = 0.0, []
    for group in (visual, audio):
        if not group:
            continue
        if group is audio:
            inputs = torch.stack([clips[r["clip_id"]]["audio"] for r in group]).to(device=device, dtype=torch.float32)
            embeds = audio_embeds(blip2, audio_encoder, tokenizer, inputs)
        else:
            pixels = torch.stack([
                dihedral_augment(clips[r["clip_id"]]["video"], generator)
                if generator is not None and r["question_type"] in ORIENTATION_FREE_TYPES
                else clips[r["clip_id"]][_rendering(r)]
                for r in group
            ]).to(device=device, dtype=torch.float32)
            embeds = visual_embeds(blip2, tokenizer, pixels)
        out = qa_loss(blip2, tokenizer, embeds, [r["input_ids"] for r in group], [r["labels"] for r in group])
        loss = loss + out.loss * (len(group) / len(batch))
        groups.append((group, out.logits))
    return loss, groups


def pretrain(blip2, tokenizer, clips, rows, epochs: int = 12, batch_size: int = 32, lr: float = 1e-3,
             seed: int = 0, augment: bool = True, freeze_vision: bool = False, audio_encoder=None,
             log=print) -> list[float]:
    """Train the backbone on per-rendering QA (rows whose question needs one rendering); with `augment`, colour and
    shape examples see their frames under a random flip / quarter turn (`dihedral_augment`). `freeze_vision` keeps
    the ViT as its own stage left it (BLIP-2 trains its Q-Former on a frozen image encoder). With `audio_encoder`
    (frozen, trained on its own), audio rows are read through it as well."""
    examples = single_rendering_rows(clips, rows)
    if audio_encoder is None:
        examples = [r for r in examples if _rendering(r) != "audio"]
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
            loss, _ = rendering_groups_loss(blip2, tokenizer, clips, batch, audio_encoder,
                                            generator if augment else None)
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
def letter_accuracy(blip2, tokenizer, clips, rows, audio_encoder=None) -> dict[str, float]:
    """Per question type: does the backbone put the highest probability on the right option letter?"""
    letters = [tokenizer.convert_tokens_to_ids(c) for c in "ABCDE"]
    hits: dict[str, list[int]] = {}
    examples = [r for r in rows if len(r["needed_modalities"]) == 1]
    if audio_encoder is None:
        examples = [r for r in examples if _rendering(r) != "audio"]
    for i in range(0, len(examples), 64):
        _, groups = rendering_groups_loss(blip2, tokenizer, clips, examples[i:i + 64], audio_encoder)
        for group, logits in groups:
            for row, step in zip(group, logits[:, 1]):
                guess = int(step[letters[:len(row["options"])]].argmax())
                hits.setdefault(row["question_type"], []).append(int(guess == row["answer_index"]))
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}
