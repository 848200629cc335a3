"""crema-tiny's audio encoder, trained on its own before CREMA sees it, as the paper's BEATs was pre-trained on
AudioSet: a tiny AST learns to count the beeps of a track and tell their pitch (two linear heads on its mean state,
thrown away afterwards), then is frozen. The Q-Former and the LLM never see audio during the backbone's
pre-training: the audio MMQA alone connects the encoder to them, which is the setting CREMA is built for."""

from __future__ import annotations

import time

import torch

#: The two audio question types and their number of answers (one / two / three beeps; high / low).
AUDIO_TARGETS = (("beeps", 3), ("pitch", 2))


def audio_labels(scene: dict) -> tuple[int, int]:
    """(beeps - 1, pitch index) of a CREMA-Synth scene (its `to_dict()` form)."""
    from ..synth import vocabulary as V

    return len(scene["beeps"]) - 1, V.PITCHES.index(scene["pitch"])


def rendered_tracks(processor, count: int, seed: int = 1, progress: bool = True):
    """(inputs (count, S, frames, mel bins), labels (count, 2)) of `count` extra one-object scenes: CREMA-Synth's
    own scene sampler and audio renderer (no AAC round trip), through the processor's audio feature extractor. A
    tiny AST trained from scratch needs these: on 300 clips' tracks alone it stayed at chance; with 3,000 more it
    counts beeps and tells pitch on held-out AAC-decoded clips."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..synth import vocabulary as V
    from ..synth.render import render_audio
    from ..synth.scene import sample_scene

    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for index in tqdm(range(count), desc="audio pre-training tracks", disable=not progress):
        scene = sample_scene(rng, f"audio-pool-{index:05d}", num_objects=1)
        audio = processor(audio=(render_audio(scene), V.AUDIO_SAMPLING_RATE), include_video=False,
                          return_tensors="pt")
        inputs.append(audio["audio_input_values"][0])
        labels.append(audio_labels(scene.to_dict()))
    return torch.stack(inputs), torch.tensor(labels)


def clip_tracks(clips, scenes: dict[str, dict]):
    """(inputs, labels) of processed clips (`data.process_split`'s clips, with "audio") and their scenes."""
    ids = list(clips)
    return torch.stack([clips[c]["audio"] for c in ids]), torch.tensor([audio_labels(scenes[c]) for c in ids])


class _Heads(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, sum(n for _, n in AUDIO_TARGETS))

    def forward(self, encoder, inputs: torch.Tensor) -> list[torch.Tensor]:
        """(B, S, frames, mel bins) -> one logit tensor per target, from the mean state over segments and patches."""
        states = encoder(input_values=inputs.flatten(0, 1)).last_hidden_state.mean(1)
        logits = self.linear(states.unflatten(0, inputs.shape[:2]).mean(1))
        return list(logits.split([n for _, n in AUDIO_TARGETS], dim=-1))


def pretrain_audio_encoder(encoder, train, test=None, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                           seed: int = 0, log=print) -> dict[str, float]:
    """Trains `encoder` on `train` = (inputs, labels) as a beeps / pitch classifier, then freezes it. Returns the
    held-out accuracy per target on `test` (same form) after the last epoch (empty without `test`). The heads are
    drawn from torch's global generator (right after `build_audio_encoder(seed)` in the recipe); `seed` orders the
    batches."""
    inputs, labels = train
    heads = _Heads(encoder.config.hidden_size)
    parameters = list(encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(inputs) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    accuracy, start = {}, time.time()
    for epoch in range(epochs):
        encoder.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i:i + batch_size]
            logits = heads(encoder, inputs[index])
            loss = sum(torch.nn.functional.cross_entropy(z, labels[index, k]) for k, z in enumerate(logits))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        if test is not None:
            accuracy = audio_accuracy(encoder, heads, *test)
        log(f"audio encoder epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}, held-out "
            + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()) + f" ({time.time() - start:.0f} s)")
    encoder.eval().requires_grad_(False)
    return accuracy


@torch.no_grad()
def audio_accuracy(encoder, heads: _Heads, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    encoder.eval()
    logits = heads(encoder, inputs)
    return {name: float((z.argmax(-1) == labels[:, k]).float().mean()) for k, ((name, _), z) in
            enumerate(zip(AUDIO_TARGETS, logits))}
