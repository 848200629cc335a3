"""Training step time of CremaTrainer: modality-sequential vs joint updates, reused vs recomputed MMQA outputs in
the sequential schedule, and cached frozen features vs pixels.

The sequential schedule (DESIGN §2) runs one forward/backward per modality in every minibatch (the frozen encoders
once per minibatch, shared by the sub-steps); the joint one a single forward/backward. In a sequential sub-step the
other modalities' MMQA outputs are either reused (`reuse_modality_embeddings`: each computed once, and again after its
own adapter's update) or recomputed in every sub-step (the default). Cached features (`cache_frozen_features`)
skip the frozen ViT altogether. All six variants are measured in one run on the same random backbone (no download)
and data, so the ratios compare like with like. CPU by default; `--size blip2` builds BLIP-2 Flan-T5-XL's shapes
(ViT-g, 12-layer Q-Former, T5-XL; random weights, built on the device: for a GPU).

    python benchmarks/training_step_time.py [--steps 4] [--batch 2] [--frames 4] [--modalities video,flow,depth]
        [--size mid|blip2] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import datasets
import numpy as np
import torch
from transformers import Blip2QFormerConfig, Blip2VisionConfig, T5Config, TrainerCallback

from crema_processing.feature_cache import cache_frozen_features
from crema_training.arguments import CremaTrainingArguments
from crema_training.trainer import CremaTrainer
from modeling_crema import CremaConfig, CremaForConditionalGeneration

#: Backbone shapes: a mid-size one that a CPU trains in seconds, and BLIP-2 Flan-T5-XL's (Salesforce/blip2-flan-t5-xl).
SIZES = {
    "mid": dict(
        vision=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                    image_size=112, patch_size=14),
        qformer=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
        text=dict(vocab_size=1000, d_model=512, d_kv=64, d_ff=1024, num_layers=6, num_heads=8),
        query_tokens=32, lora_rank=16,
    ),
    "blip2": dict(
        vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                    image_size=224, patch_size=14),
        qformer=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        text=dict(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
                  feed_forward_proj="gated-gelu"),
        query_tokens=32, lora_rank=64,
    ),
}


def benchmark_model(modalities: list[str], frames: int, size: str = "mid") -> CremaForConditionalGeneration:
    torch.manual_seed(0)
    shapes = SIZES[size]
    config = CremaConfig(
        vision_config=Blip2VisionConfig(**shapes["vision"]).to_dict(),
        qformer_config=Blip2QFormerConfig(**shapes["qformer"],
                                          encoder_hidden_size=shapes["vision"]["hidden_size"]).to_dict(),
        text_config=T5Config(**shapes["text"], decoder_start_token_id=0, pad_token_id=0, eos_token_id=1).to_dict(),
        modalities=modalities, use_fusion=len(modalities) > 1,
        fusion_modalities=modalities if len(modalities) > 1 else None,
        num_frames=frames, num_query_tokens=shapes["query_tokens"], lora_rank=shapes["lora_rank"], lora_dropout=0.0,
        frame_prefix_token_ids=[[10 + i, 5, 7] for i in range(frames)],
    )
    return CremaForConditionalGeneration(config)


def benchmark_dataset(modalities: list[str], frames: int, size: int, image_size: int) -> datasets.Dataset:
    generator = np.random.default_rng(0)
    rows = {"input_ids": [list(generator.integers(2, 1000, 48)) for _ in range(size)],
            "labels": [list(generator.integers(2, 1000, 4)) for _ in range(size)]}
    for name in modalities:
        rows[f"{name}_pixel_values"] = [generator.standard_normal((frames, 3, image_size, image_size), np.float32)
                                        for _ in range(size)]
    return datasets.Dataset.from_dict(rows)


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step (data loading excluded)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def time_variant(schedule: str, reuse: bool, dataset, modalities, args, output_dir: str) -> float:
    with torch.device(args.device):  # a BLIP-2-size model is initialised where it trains
        model = benchmark_model(modalities, args.frames, args.size)
    training_args = CremaTrainingArguments(
        output_dir=output_dir, modality_schedule=schedule, reuse_modality_embeddings=reuse,
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + 1, early_exit=False, learning_rate=1e-4, lr_schedule="trainer", warmup_steps=0,
        save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
        use_cpu=args.device == "cpu", dataloader_pin_memory=False,
        # the reference's options stay on: the frozen LLM's dropout, the crop of training clips (pixels only)
        llm_dropout=True, random_resized_crop=True,
    )
    trainer = CremaTrainer(model=model, args=training_args, train_dataset=dataset)
    timer = StepTimer(torch.device(args.device))
    trainer.add_callback(timer)
    trainer.train()
    measured = timer.times[1:]  # the first step warms up
    del trainer, model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return 1000 * sorted(measured)[len(measured) // 2]


#: (label, schedule, reuse of MMQA outputs)
SCHEDULES = (("sequential, reused", "sequential", True), ("sequential, recomputed", "sequential", False),
             ("joint", "joint", False))


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads) if args.threads else None
    modalities = [name.strip() for name in args.modalities.split(",") if name.strip()]
    size = args.batch * (args.steps + 1)
    pixels = benchmark_dataset(modalities, args.frames, size, SIZES[args.size]["vision"]["image_size"])
    with torch.no_grad(), torch.device(args.device):
        encoder_model = benchmark_model(modalities, args.frames, args.size)
        cached = cache_frozen_features(pixels, encoder_model, batch_size=args.batch, keep_in_memory=True)
        del encoder_model
    pixels, cached = pixels.with_format("torch"), cached.with_format("torch")
    timings = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for label, schedule, reuse in SCHEDULES:
            for source, dataset in (("pixels", pixels), ("cached features", cached)):
                timings[label, source] = time_variant(schedule, reuse, dataset, modalities, args, output_dir)
    print(f"{args.size} backbone on {args.device}, modalities {','.join(modalities)} (+ fusion), batch {args.batch}, "
          f"{args.frames} frames of {SIZES[args.size]['vision']['image_size']} px, median of {args.steps} optimiser "
          "steps")
    print(f"{'schedule':<25}{'inputs':<17}{'ms / step':>10}")
    for (label, source), ms in timings.items():
        print(f"{label:<25}{source:<17}{ms:>10.0f}")
    for source in ("pixels", "cached features"):
        recomputed, reused = timings["sequential, recomputed", source], timings["sequential, reused", source]
        print(f"sequential recomputed / reused ({source}): {recomputed / reused:.2f}x")
        print(f"sequential (reused) / joint ({source}): {reused / timings['joint', source]:.2f}x")
    for label, _, _ in SCHEDULES:
        ratio = timings[label, "pixels"] / timings[label, "cached features"]
        print(f"pixels / cached features ({label}): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--modalities", default="video,flow,depth")
    parser.add_argument("--size", choices=sorted(SIZES), default="mid", help="backbone shapes (blip2: for a GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
