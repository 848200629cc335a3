"""Peak training memory of CREMA vs fully fine-tuning one Q-Former per modality (the paper's baseline), equal batch.

The baseline (the paper's "BLIP-2" rows, Table 14): every modality gets its own trainable copy of the
Q-Former (no LoRA); its query tokens, input LayerNorm and projections train too, as does the fusion; the ViT and the
LLM stay frozen. CREMA: the shared frozen Q-Former with one LoRA per modality (DESIGN §1.1). Both run V,F,D,N with
the self-gated fusion and the same batch, through the model's own LLM input assembly; they differ only in which
Q-Former each modality's pass runs through (both passes without the all-ones encoder mask, which masks nothing).

Two measurements of one training step (forward + backward + AdamW step):
  - count: a deterministic sum of bytes = weights of every module that runs + gradients of the trainable
    parameters + AdamW's two moment buffers (fp32, 2x the trainable parameters) + every tensor autograd saves for
    the backward pass (`torch.autograd.graph.saved_tensors_hooks`, de-duplicated by storage, parameters left out).
    It ignores transient buffers (e.g. the frozen ViT's activations under no_grad, freed layer by layer), so it is
    the steady part of the peak. It also runs at the paper's size on the `meta` device (no memory used).
  - RSS: on a small random backbone on CPU, each configuration in a fresh subprocess: once the model, the batch and
    AdamW's state exist, the peak resident set size is reset (Linux `/proc/self/clear_refs`) and read back (VmHWM)
    after one training step; reported above the RSS of the interpreter with torch imported, before the model was
    built. Eager attention throughout (see `build`).

    python benchmarks/training_memory.py [--batch 4] [--frames 4] [--no-paper-size] [--no-rss]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

from modeling_crema import CremaConfig, CremaForConditionalGeneration
from modeling_crema.adapters import modality_module, route_to_modality
from modeling_crema.parameter_report import PAPER_BACKBONE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling small_backbone module
from small_backbone import small_backbone  # noqa: E402

MODALITIES = ["video", "flow", "depth", "normal"]
#: The comparison is the first two (equal batch, fusion); the others show where the memory goes.
METHODS = ("CREMA", "full Q-Former FT", "CREMA, one sequential sub-step", "full Q-Former FT, concat")
#: The paper's figures (Table 14: NExT-QA, one A6000, batch 4, V,F,D,N; DESIGN §1.5), GiB.
#: Its BLIP-2 baseline has four fully trained Q-Formers and no fusion (Table 3: 432M trainable, 6.12K GFLOPs, the
#: GFLOPs of concatenation in Table 7), so its figure goes with the concat row.
PAPER_BASELINE = "full Q-Former FT, concat"
PAPER_GIB = {"CREMA": 18.6, PAPER_BASELINE: 46.3}
GIB = 1024**3


def small_config(modalities: list[str], frames: int, fusion: bool = True) -> CremaConfig:
    """The mid-size random backbone of `small_backbone.py`, V,F,D,N with the fusion."""
    return with_assumed_prefixes(CremaConfig(
        **small_backbone(),
        modalities=modalities, use_fusion=fusion, fusion_modalities=modalities if fusion else None,
        num_frames=frames, lora_rank=16, lora_dropout=0.1,
    ))


def paper_size_config(modalities: list[str], frames: int, fusion: bool = True) -> CremaConfig:
    """BLIP-2 Flan-T5-XL (DESIGN §1), "Frame i: " taken as 4 tokens and modality prefixes as 3-4 (see gflops.py);
    Flan-T5's special token ids."""
    text_config = {**PAPER_BACKBONE["text_config"], "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
    return with_assumed_prefixes(CremaConfig(
        **{**PAPER_BACKBONE, "num_frames": frames, "text_config": text_config}, modalities=modalities,
        use_fusion=fusion, fusion_modalities=modalities if fusion else None,
    ))


def with_assumed_prefixes(config: CremaConfig) -> CremaConfig:
    """Prefix token ids of Flan-T5's lengths (w words -> w + 2 tokens: "Frame 1: " 4, "Depth: " 3; see gflops.py)."""
    config.frame_prefix_token_ids = [[3] * 4 for _ in range(config.num_frames)]
    for spec in config.modalities:
        spec["prefix_token_ids"] = [3] * (len(spec["prefix"].split()) + 2)
    return config


def build(config: CremaConfig, method: str, device: str = "cpu", llm_dtype: torch.dtype | None = None):
    """CREMA, or the baseline made from it: each modality's pass through its own trainable Q-Former copy.

    Returns the model in train mode. The baseline drops the shared (LoRA) Q-Former, which it does not use.
    """
    with torch.device(device):
        model = CremaForConditionalGeneration(config)
    if llm_dtype is not None:
        model.language_model.to(llm_dtype)
    # A modality-sequential sub-step (DESIGN §2) updates one modality: the others are encoded without gradients.
    with_grad = config.modality_names[:1] if "sequential" in method else config.modality_names
    if method.startswith("CREMA"):
        qformer_for = None
    else:
        base = {key[len("qformer."):]: value for key, value in model.base_state_dict().items()
                if key.startswith("qformer.")}
        copies = nn.ModuleDict()
        for name in config.modality_names:
            with torch.device(device):
                copies[name] = Blip2QFormerModel._from_config(config.qformer_config)
            copies[name].load_state_dict(base)  # BLIP-2's Q-Former weights (a no-op on meta)
        del model.qformer  # its LoRA goes with it; nothing else reads it in the baseline
        model.full_qformers = copies.requires_grad_(True)
        qformer_for = copies.__getitem__
    def encode(name: str, **inputs: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(name in with_grad and torch.is_grad_enabled()):
            return encode_modality(model, name, qformer_for, **inputs)

    model.encode_modality = encode
    # Eager attention everywhere (as the reference's T5): the saved tensors are then the same on every device (a
    # fused SDPA kernel saves less than the attention probabilities, and which one runs depends on the device).
    model.set_attn_implementation("eager")
    return model.train()


def encode_modality(model: CremaForConditionalGeneration, name: str, qformer_for: Callable | None, **inputs):
    """`model.encode_modality` with the Q-Former pass through `qformer_for(name)` (None: the shared Q-Former routed
    to `name`'s LoRA, i.e. CREMA) and without the encoder mask (all ones here; masks do not run on `meta`)."""
    features = model.encode_frozen_features(name, **inputs)
    batch, groups = features.shape[:2]
    adapter = modality_module(model, name)
    states = adapter.prepare_encoder_states(features.flatten(0, 1))
    queries = adapter.query_tokens(batch * groups)
    if qformer_for is None:
        with route_to_modality(model, name):
            output = model.qformer(query_embeds=queries, encoder_hidden_states=states)
    else:
        output = qformer_for(name)(query_embeds=queries, encoder_hidden_states=states)
    embeds = adapter.project_to_language(output.last_hidden_state)
    return embeds.view(batch, groups, *embeds.shape[1:])


def make_batch(config: CremaConfig, batch: int, prompt_tokens: int, answer_tokens: int, device: str) -> dict:
    size, frames, vocab = config.vision_config.image_size, config.num_frames, config.text_config.vocab_size
    inputs = {f"{name}_pixel_values": torch.randn(batch, frames, 3, size, size, device=device)
              for name in config.modality_names}
    inputs["input_ids"] = torch.randint(2, vocab, (batch, prompt_tokens), device=device)
    inputs["labels"] = torch.randint(2, vocab, (batch, answer_tokens), device=device)
    return inputs


def loss_of(model: CremaForConditionalGeneration, batch: dict) -> torch.Tensor:
    """`model(**batch).loss`, spelled out so that on `meta` the T5 runs without its (all-ones) attention mask."""
    inputs = {key: value for key, value in batch.items() if key.endswith("_pixel_values")}
    prepared = model.prepare_language_model_inputs(batch["input_ids"], **inputs)
    mask = None if prepared.inputs_embeds.is_meta else prepared.attention_mask
    return model.language_model(inputs_embeds=prepared.inputs_embeds, attention_mask=mask, labels=batch["labels"]).loss


def storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


@dataclass
class MemoryCount:
    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved for backward before the LLM: MMQA inputs, Q-Former passes, projections, fusion
    llm_activations: int  # saved inside the frozen LLM (needed to reach the projections' gradients)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.llm_activations


def count_training_memory(model: CremaForConditionalGeneration, batch: dict) -> MemoryCount:
    """The deterministic count of one training step (see the module docstring); runs forward + backward."""
    parameters = {storage_key(p): p for p in model.parameters()}
    trainable = [p for p in parameters.values() if p.requires_grad]
    weights = sum(p.nbytes for p in parameters.values()) + sum(b.nbytes for b in model.buffers())
    optimizer = 2 * sum(p.numel() * 4 for p in trainable)  # AdamW exp_avg + exp_avg_sq in fp32
    saved: dict[int, tuple[int, bool]] = {}  # storage -> (bytes, first saved inside the LLM)
    in_llm = [False]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key not in parameters and key not in saved:
            saved[key] = (tensor.untyped_storage().nbytes(), in_llm[0])
        return tensor

    hooks = [
        model.language_model.register_forward_pre_hook(lambda *_: in_llm.__setitem__(0, True)),
        model.language_model.register_forward_hook(lambda *_: in_llm.__setitem__(0, False)),
    ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = loss_of(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    loss.backward()
    gradients = sum(p.grad.nbytes for p in trainable if p.grad is not None)
    llm = sum(size for size, inside in saved.values() if inside)
    return MemoryCount(weights, gradients, optimizer, sum(size for size, _ in saved.values()) - llm, llm)


# ------------------------------------------------------------------------------------------ RSS in a subprocess
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


def measure_rss(method: str, batch: int, frames: int) -> dict:
    """In this (fresh) process: peak RSS of one training step, above the RSS before the model was built."""
    before = _status_kib("VmRSS")
    torch.manual_seed(0)
    config = small_config(MODALITIES, frames, fusion=not method.endswith("concat"))
    model = build(config, method)
    inputs = make_batch(config, batch, 48, 4, "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for parameter in trainable:  # AdamW creates its state on its first step: do that step on zero gradients, so
        parameter.grad = torch.zeros_like(parameter)  # the state is resident in the measured step, as in any later one
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    try:  # hand freed memory back to the OS, so that the reset peak starts from what is in use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    loss_of(model, inputs).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"peak_above_start_kib": _status_kib("VmHWM") - before}


def rss_in_subprocess(method: str, batch: int, frames: int) -> dict:
    """`measure_rss` in a fresh interpreter (nothing allocated earlier in this process counts)."""
    command = [sys.executable, os.path.abspath(__file__), "--measure-rss", method, "--batch", str(batch),
               "--frames", str(frames), "--threads", str(torch.get_num_threads())]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------- tables
def count_rows(config_for: Callable[[bool], CremaConfig], batch: int, prompt_tokens: int, answer_tokens: int,
               device: str, llm_dtype: torch.dtype | None = None, methods: tuple[str, ...] = METHODS
               ) -> dict[str, MemoryCount]:
    """The count of each method; `config_for(fusion)` builds the configuration."""
    rows = {}
    for method in methods:
        torch.manual_seed(0)
        config = config_for(not method.endswith("concat"))
        model = build(config, method, device, llm_dtype)
        rows[method] = count_training_memory(model, make_batch(config, batch, prompt_tokens, answer_tokens, device))
        del model
    return rows


def format_count_table(rows: dict[str, MemoryCount], unit: float, unit_name: str, paper: dict | None = None) -> str:
    """Markdown, one row per method, with its ratio to each full-fine-tuning baseline counted (equal batch)."""
    baselines = [method for method in (METHODS[1], METHODS[3]) if method in rows]
    header = ["method", "weights", "gradients", "AdamW states", "activations before the LLM", "LLM activations",
              f"total ({unit_name})"] + [f"vs {method.replace('Q-Former ', '')}" for method in baselines]
    header += ["paper (GiB)"] if paper else []
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method, count in rows.items():
        cells = [count.weights, count.gradients, count.optimizer, count.activations, count.llm_activations, count.total]
        cells = [f"{value / unit:,.2f}" for value in cells]
        cells += [f"{count.total / rows[baseline].total:.2f}x" for baseline in baselines]
        if paper:
            reference = paper[PAPER_BASELINE]
            cells.append(f"{paper[method]} ({paper[method] / reference:.2f}x)" if method in paper else "")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--no-paper-size", action="store_true", help="skip the count at the paper's size")
    parser.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (memory does not depend on it)")
    parser.add_argument("--measure-rss", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure_rss:
        print(json.dumps(measure_rss(args.measure_rss, args.batch, args.frames)))
        return

    print(f"V,F,D,N, batch {args.batch}, {args.frames} frames; torch {torch.__version__}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads: {args.threads}")
    if not args.no_paper_size:
        rows = count_rows(lambda fusion: paper_size_config(MODALITIES, args.frames, fusion), args.batch, 80, 3, "meta",
                          torch.bfloat16)
        print(f"\nPaper size (BLIP-2 Flan-T5-XL) on meta: ViT and Q-Former fp32, T5 bf16 (as in the reference), "
              f"224 px, prompt 80 + answer 3 tokens; count in GiB")
        print(format_count_table(rows, GIB, "GiB", PAPER_GIB))
    rows = count_rows(lambda fusion: small_config(MODALITIES, args.frames, fusion), args.batch, 48, 4, "cpu",
                      methods=METHODS[:2])
    print(f"\nSmall random backbone on CPU (ViT 256-d x4, Q-Former 256-d x4, T5 512-d x6, 112 px, LoRA rank 16), "
          f"prompt 48 + answer 4 tokens, fp32; count in MiB")
    print(format_count_table(rows, 1024**2, "MiB"))
    if not args.no_rss:
        print("\nSame small backbone, peak RSS of one training step in a fresh process, above the RSS before the "
              "model was built (MiB)")
        print("| method | peak RSS | ratio |\n|---|---|---|")
        measured = {method: rss_in_subprocess(method, args.batch, args.frames) for method in METHODS[:2]}
        baseline = measured[METHODS[1]]["peak_above_start_kib"]
        for method, result in measured.items():
            print(f"| {method} | {result['peak_above_start_kib'] / 1024:,.0f} | "
                  f"{result['peak_above_start_kib'] / baseline:.2f}x |")


if __name__ == "__main__":
    main()
