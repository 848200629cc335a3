"""The benchmark scripts' core functions on tiny models: well-formed tables, counts that add up (no timings)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ASTConfig

from modeling_crema import CremaForConditionalGeneration
from modeling_crema.parameter_report import PAPER_LETTERS
from tiny_models import AUDIO_WIDTH, IMAGE_SIZE, tiny_audio_config, tiny_crema_config

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gflops = load_script("gflops")
training_memory = load_script("training_memory")
inference_latency = load_script("inference_latency")


def tiny_config(letters, fusion: bool):
    names = [PAPER_LETTERS[letter] for letter in letters]
    specs = [{"name": "audio", "encoder": "audio", "feature_size": AUDIO_WIDTH} if name == "audio" else name
             for name in names]
    fusion = fusion and len(names) > 1
    config = tiny_crema_config(specs, names if fusion else None)
    config.frame_prefix_token_ids = [[5 + i, 4] for i in range(config.num_frames)]
    for spec in config.modalities:
        spec["prefix_token_ids"] = [3] * len(spec["prefix"].split())
    return config


def table_rows(table: str, columns: int) -> list[list[str]]:
    lines = table.splitlines()
    assert lines[1] == "|---" * columns + "|"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(row) == columns for row in rows)
    return rows


def test_gflops_rows_fusion_keeps_the_llm_flat_and_concat_grows():
    audio = ASTConfig(**tiny_audio_config())
    sets = [("V",), ("V", "F"), ("V", "F", "D"), ("V", "A", "F", "D")]
    rows = gflops.gflops_rows(tiny_config, sets, prompt_tokens=8, answer_tokens=2, audio_encoder_config=audio,
                              audio_shape=(2, 6, AUDIO_WIDTH))
    assert [(row.modalities, row.mode) for row in rows] == [(("V",), "-")] + [
        (letters, mode) for letters in sets[1:] for mode in ("concat", "fusion")
    ]
    fusion = [row for row in rows if row.mode == "fusion"]
    concat = [row for row in rows if row.mode == "concat"]
    assert len({row.flops["llm"] for row in fusion}) == 1
    assert len({row.llm_input_tokens for row in fusion}) == 1
    assert all(a.flops["llm"] < b.flops["llm"] for a, b in zip(concat, concat[1:]))
    assert all(a.llm_input_tokens < b.llm_input_tokens for a, b in zip(concat, concat[1:]))
    video = rows[0].flops
    assert rows[1].flops["encoders"] == 2 * video["encoders"] > 0  # one ViT pass per visual modality
    assert rows[-1].flops["encoders"] > 3 * video["encoders"]  # + the audio encoder
    assert all(row.flops["fusion"] > 0 for row in fusion) and all(row.flops["fusion"] == 0 for row in concat)
    cells = table_rows(gflops.format_table(rows, paper={}), 11)
    assert [row[:2] for row in cells][:3] == [["V", "-"], ["V,F", "concat"], ["V,F", "fusion"]]


@pytest.mark.parametrize("letters, fusion", [(("V",), False), (("V", "F", "D"), True), (("V", "F", "D"), False)])
def test_gflops_parts_add_up_to_the_whole_model_on_real_tensors(letters, fusion):
    """The parts counted on meta (no masks) = FlopCounterMode around the model's own forward on CPU."""
    config = tiny_config(letters, fusion)
    parts, tokens = gflops.count_answer(config, prompt_tokens=8, answer_tokens=2)
    torch.manual_seed(0)
    # requires_grad_(False) rather than no_grad: FlopCounterMode's module tracker fails on the query tokens'
    # expanded view of a Parameter made under no_grad (requires_grad without grad_fn).
    model = CremaForConditionalGeneration(tiny_config(letters, fusion)).eval().requires_grad_(False)
    # On CPU, SDPA runs a fused kernel that FlopCounterMode does not count; on meta it runs the counted math path.
    model.set_attn_implementation("eager")
    inputs = {f"{name}_pixel_values": torch.randn(1, config.num_frames, 3, IMAGE_SIZE, IMAGE_SIZE)
              for name in config.modality_names}
    with FlopCounterMode(display=False) as counter:
        outputs = model(input_ids=torch.randint(2, 100, (1, 8)), decoder_input_ids=torch.zeros(1, 2, dtype=torch.long),
                        **inputs)
    assert outputs.inputs_embeds.shape[1] == tokens
    assert counter.get_total_flops() == sum(parts.values())


def test_training_memory_count_is_the_same_on_meta_and_cpu():
    config_for = lambda fusion: tiny_config(("V", "F"), fusion)  # noqa: E731
    on_cpu = training_memory.count_rows(config_for, 2, 8, 2, "cpu")
    on_meta = training_memory.count_rows(config_for, 2, 8, 2, "meta")
    assert on_cpu == on_meta
    crema, baseline = on_cpu["CREMA"], on_cpu["full Q-Former FT"]
    assert 0 < crema.gradients < baseline.gradients and crema.optimizer == 2 * crema.gradients
    assert crema.llm_activations == baseline.llm_activations > 0
    assert on_cpu["CREMA, one sequential sub-step"].activations < crema.activations
    assert on_cpu["full Q-Former FT, concat"].llm_activations > baseline.llm_activations
    cells = table_rows(training_memory.format_count_table(on_cpu, 1024**2, "MiB"), 9)
    assert [row[0] for row in cells] == list(training_memory.METHODS)


def test_training_memory_baseline_trains_one_full_qformer_per_modality():
    config = tiny_config(("V", "F"), True)
    model = training_memory.build(config, "full Q-Former FT")
    assert not hasattr(model, "qformer") and set(model.full_qformers) == {"video", "flow"}
    assert all(p.requires_grad for p in model.full_qformers.parameters())
    assert not any("lora_" in name for name, _ in model.named_parameters())
    batch = training_memory.make_batch(config, 2, 8, 2, "cpu")
    training_memory.loss_of(model, batch).backward()
    assert all(p.grad is not None for p in model.full_qformers.parameters() if p.requires_grad)


def test_inference_latency_rows_and_table():
    rows = inference_latency.latency_rows(tiny_config, [("V",), ("V", "F")], repeats=1, prompt_tokens=8,
                                          answer_tokens=2)
    assert [(row.letters, row.mode) for row in rows] == [(("V",), "-"), (("V", "F"), "concat"), (("V", "F"), "fusion")]
    assert all(len(row.total) == len(row.encoding) == 1 and row.total[0] > row.encoding[0] > 0 for row in rows)
    cells = table_rows(inference_latency.format_table(rows), 7)
    assert cells[0][-1] == "1.00x" and all(cell[-1].endswith("x") for cell in cells)
