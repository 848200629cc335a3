"""Inference latency of CREMA as modalities are added (V; V,F; V,F,D; V,F,D,N), concatenation vs the self-gated fusion.

One answer (batch 1) = `model.generate` with greedy decoding of exactly `--answer-tokens` tokens (min = max new
tokens, so every configuration decodes the same length); split into the encoding part (frozen ViT, Q-Former passes,
fusion and LLM input assembly: `prepare_language_model_inputs`, timed inside the same call) and the LLM part (the
rest: T5 encoder over the assembled input + decoding). Runs on a mid-size random backbone (the one
`fusion_vs_concat.py` uses; no download) on CPU by default. Configurations are interleaved within each repeat, so
that a change in the machine's load affects them alike; each figure is the median over the repeats, and also given
as a ratio to V measured in the same run.

One torch thread by default: on a machine shared with other jobs, several threads spend much of a run waiting for
each other (on a loaded 2-core machine, 2 threads were 4-8x slower than 1), which would swamp the differences.

    python benchmarks/inference_latency.py [--repeats 5] [--frames 4] [--prompt-tokens 80] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from modeling_crema.parameter_report import PAPER_LETTERS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling small_backbone module
from small_backbone import small_backbone  # noqa: E402

MODALITY_SETS = [("V",), ("V", "F"), ("V", "F", "D"), ("V", "F", "D", "N")]


def small_config(letters: Sequence[str], fusion: bool, frames: int) -> CremaConfig:
    """The mid-size random backbone of `small_backbone.py`; Flan-T5's prefix lengths (w words -> w + 2 tokens)."""
    names = [PAPER_LETTERS[letter] for letter in letters]
    fusion = fusion and len(names) > 1
    config = CremaConfig(
        **small_backbone(),
        modalities=names, use_fusion=fusion, fusion_modalities=names if fusion else None, num_frames=frames,
        lora_rank=16, lora_dropout=0.1,
    )
    config.frame_prefix_token_ids = [[10 + i, 5, 7, 3] for i in range(frames)]  # "Frame i: " is 4 Flan-T5 tokens
    for spec in config.modalities:
        spec["prefix_token_ids"] = [3] * (len(spec["prefix"].split()) + 2)
    return config


@dataclass
class Timed:
    """One configuration: its model, inputs and the seconds of each repeat (total and encoding part)."""

    letters: tuple[str, ...]
    mode: str
    model: CremaForConditionalGeneration
    inputs: dict
    llm_input_tokens: int = 0
    total: list[float] = field(default_factory=list)
    encoding: list[float] = field(default_factory=list)

    def median(self, which: str) -> float:
        return statistics.median(getattr(self, which))


def prepare_timed(model: CremaForConditionalGeneration, seconds: list[float]) -> Callable:
    """`model.prepare_language_model_inputs`, appending its duration to `seconds` (the encoding part of generate)."""
    prepare = model.prepare_language_model_inputs

    def timed(*args, **kwargs):
        start = time.perf_counter()
        prepared = prepare(*args, **kwargs)
        _synchronize(prepared.inputs_embeds.device)
        seconds.append(time.perf_counter() - start)
        return prepared

    return timed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def latency_rows(
    make_config: Callable[[Sequence[str], bool], CremaConfig],
    modality_sets: Sequence[Sequence[str]] = MODALITY_SETS,
    repeats: int = 5,
    prompt_tokens: int = 80,
    answer_tokens: int = 3,
    device: str = "cpu",
) -> list[Timed]:
    """Builds every configuration, warms each up once, then times `repeats` interleaved rounds of generate."""
    rows = []
    for letters in modality_sets:
        for mode in (["-"] if len(letters) == 1 else ["concat", "fusion"]):
            torch.manual_seed(0)
            config = make_config(letters, mode == "fusion")
            model = CremaForConditionalGeneration(config).to(device).eval()
            size, vocab = config.vision_config.image_size, config.text_config.vocab_size
            inputs = {f"{name}_pixel_values": torch.randn(1, config.num_frames, 3, size, size, device=device)
                      for name in config.modality_names}
            inputs["input_ids"] = torch.randint(2, vocab, (1, prompt_tokens), device=device)
            row = Timed(tuple(letters), mode, model, inputs)
            with torch.no_grad():
                prepared = model.prepare_language_model_inputs(**inputs)
            row.llm_input_tokens = prepared.inputs_embeds.shape[1]
            model.prepare_language_model_inputs = prepare_timed(model, row.encoding)
            rows.append(row)
    generation = dict(max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, do_sample=False, num_beams=1)
    for repeat in range(repeats + 1):  # round 0 warms up
        for row in rows:
            start = time.perf_counter()
            answer = row.model.generate(**row.inputs, **generation)
            _synchronize(answer.device)
            row.total.append(time.perf_counter() - start)
            if repeat == 0:
                row.total.clear()
                row.encoding.clear()
    return rows


def format_table(rows: list[Timed]) -> str:
    """Markdown: median ms per answer (encoding, LLM, total) and the total as a ratio to V."""
    reference = rows[0].median("total")
    lines = [
        "| modalities | mode | LLM input tokens | encoding ms | LLM ms | total ms | vs V |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        total, encoding = row.median("total"), row.median("encoding")
        lines.append(
            f"| {','.join(row.letters)} | {row.mode} | {row.llm_input_tokens} | {1000 * encoding:.0f} | "
            f"{1000 * (total - encoding):.0f} | {1000 * total:.0f} | {total / reference:.2f}x |"
        )
    return "\n".join(lines)


def machine() -> str:
    load = ", load average {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch threads: {torch.get_num_threads()}{load}; torch {torch.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=80)
    parser.add_argument("--answer-tokens", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine, more threads time their waiting)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = latency_rows(lambda letters, fusion: small_config(letters, fusion, args.frames),
                        repeats=args.repeats, prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens,
                        device=args.device)
    print(f"device {args.device} ({machine()}); batch 1, {args.frames} frames of 112 px, prompt {args.prompt_tokens} "
          f"tokens, greedy {args.answer_tokens} answer tokens; median of {args.repeats} interleaved rounds")
    print(format_table(rows))


if __name__ == "__main__":
    main()
