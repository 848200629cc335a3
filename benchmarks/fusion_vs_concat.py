"""LLM input length and forward/backward time of CREMA with plain concatenation vs the self-gated fusion.

The paper's efficiency claim (Table 7 / Fig. 1): with the fusion the LLM's input stays 2·T·(p+32) visual tokens
whatever the number of modalities, while concatenation grows with each one. Runs on a mid-size random backbone
(no download) on CPU by default; `--device cuda` where a GPU is available. Prints a table.

    python benchmarks/fusion_vs_concat.py [--repeats 3] [--frames 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from modeling_crema.parameter_report import trainable_parameter_rows

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling small_backbone module
from small_backbone import small_backbone  # noqa: E402

MODALITY_SETS = [["video"], ["video", "flow"], ["video", "flow", "depth"], ["video", "flow", "depth", "normal"]]


def benchmark_config(modalities: list[str], fusion: bool, frames: int) -> CremaConfig:
    return CremaConfig(
        **small_backbone(),
        modalities=modalities, use_fusion=fusion and len(modalities) > 1,
        fusion_modalities=modalities if fusion and len(modalities) > 1 else None,
        num_frames=frames, lora_rank=16, lora_dropout=0.0,
        frame_prefix_token_ids=[[10 + i, 5, 7] for i in range(frames)],  # "Frame i: " is three tokens with T5
    )


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    rows = []
    for modalities in MODALITY_SETS:
        for fusion in (False, True):
            if fusion and len(modalities) == 1:
                continue
            torch.manual_seed(0)
            model = CremaForConditionalGeneration(benchmark_config(modalities, fusion, args.frames)).to(device).train()
            batch = {f"{name}_pixel_values": torch.randn(args.batch, args.frames, 3, 112, 112, device=device)
                     for name in modalities}
            batch["input_ids"] = torch.randint(2, 1000, (args.batch, 48), device=device)
            batch["labels"] = torch.randint(2, 1000, (args.batch, 4), device=device)
            timings = []
            for repeat in range(args.repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                outputs = model(**batch)
                outputs.loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if repeat:  # the first run warms up
                    timings.append(time.perf_counter() - start)
                model.zero_grad(set_to_none=True)
            visual_tokens = outputs.inputs_embeds.shape[1] - batch["input_ids"].shape[1]
            trainable = dict(trainable_parameter_rows(model))["total trainable"]
            rows.append((",".join(m[0].upper() for m in modalities), "fusion" if fusion else "concat",
                         visual_tokens, trainable, 1000 * sorted(timings)[len(timings) // 2]))
    print(f"device {device}, batch {args.batch}, {args.frames} frames, median of {args.repeats} forward+backward")
    print(f"{'modalities':<11}{'mode':<8}{'LLM visual tokens':>18}{'trainable':>12}{'ms / step':>11}")
    for name, mode, tokens, trainable, ms in rows:
        print(f"{name:<11}{mode:<8}{tokens:>18}{trainable:>12,}{ms:>11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
