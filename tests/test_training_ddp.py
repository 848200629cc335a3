"""CremaTrainer under `accelerate launch` (DDP): two CPU processes (gloo) end with identical adapters, fusion and
early-exit decisions, and every rank trained on its own shard of the data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent

SCRIPT = r'''
import json, os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from safetensors.torch import save_file
from test_training_trainer import all_adapter_tensors, build_dataset, build_model, training_args
from tiny_models import tiny_tokenizer
from crema_training.trainer import CremaTrainer

tokenizer = tiny_tokenizer()
model = build_model(("video", "depth"), tokenizer=tokenizer)
out = {out!r}
args = training_args(__import__("pathlib").Path(out), output_dir=os.path.join(out, "run"), per_device_train_batch_size=1,
                     gradient_accumulation_steps=2, num_train_epochs=3, early_exit_start_epoch=1,
                     early_exit_tau={tau}, stop_when_all_exited=False, llm_dropout=True,
                     train_sampling_strategy="random", save_strategy="epoch")
trainer = CremaTrainer(model=model, args=args, train_dataset=build_dataset(model, tokenizer, size=4),
                       eval_dataset=build_dataset(model, tokenizer, size=4, seed=3), processing_class=tokenizer)
seen = []  # a fingerprint (pixel sum) of each example this rank trained on, in order
original = trainer.training_step
def training_step(model_, inputs, num_items_in_batch=None):
    seen.append(float(inputs["video_pixel_values"].sum()))
    return original(model_, inputs, num_items_in_batch)
trainer.training_step = training_step
trainer.train()
metrics = trainer.evaluate()
rank = trainer.args.process_index
save_file({{k.replace(":", "__"): v.contiguous() for k, v in all_adapter_tensors(model).items()}},
          os.path.join(out, f"rank{{rank}}.safetensors"))
with open(os.path.join(out, f"rank{{rank}}.json"), "w") as handle:
    json.dump({{"early_exit": trainer.early_exit.state_dict(), "seen": seen, "metrics": metrics,
               "world_size": trainer.args.world_size, "steps": trainer.state.global_step}}, handle)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_gives_identical_adapters_and_exit_decisions(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(tmp_path), tau=1e-3))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # accelerate's `--cpu` multi-process launch goes through mpirun; its DDP launcher (torch.distributed.run) runs
    # the two processes on CPU with gloo when no GPU is visible.
    env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(script)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    tensors = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1)]
    # 4 examples / 2 ranks / batch 1 / accumulation 2: one optimiser step per epoch
    assert all(info["world_size"] == 2 and info["steps"] == 3 for info in ranks)
    # each epoch, each rank trains on its own half of the four examples
    for epoch in range(3):
        halves = [set(info["seen"][2 * epoch: 2 * epoch + 2]) for info in ranks]
        assert len(halves[0] | halves[1]) == 4
    assert tensors[0].keys() == tensors[1].keys()
    assert all(torch.equal(tensors[0][key], tensors[1][key]) for key in tensors[0])
    assert ranks[0]["early_exit"] == ranks[1]["early_exit"]
    # τ = 1e-3 makes every modality exit after the first epoch that may decide (epoch 1), on both ranks alike
    assert ranks[0]["early_exit"]["exited"] == {"video": 1, "depth": 1}
    # checkpoints written under DDP are complete; evaluation gathers answers and question types from both ranks
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert all((tmp_path / "run" / f"checkpoint-{step}" / "crema_checkpoint.json").is_file() for step in (1, 2, 3))
    scores = [{k: v for k, v in info["metrics"].items() if "accuracy" in k or "loss" in k} for info in ranks]
    assert scores[0] == scores[1]
    assert {"eval_loss", "eval_accuracy", "eval_accuracy_color", "eval_accuracy_count"} <= set(scores[0])
