"""Trainer callbacks of CREMA's training and the early-exit plot (the paper's Fig. 2).

`EarlyExitCallback` closes the early-exit statistics of each finished epoch (averages reduced across ranks, exit
decisions, indicator logged) before the Trainer's epoch-end evaluation and checkpoint. `DatasetEpochCallback` tells
a training dataset with `set_epoch` (e.g. `TrainingExamples`) which epoch starts, on every rank. `EarlyExitPlotCallback`
writes `early_exit.json` and `early_exit.png` into the output folder when training ends.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from .early_exit import EARLY_EXIT_STATE_NAME

EARLY_EXIT_PLOT_NAME = "early_exit.png"


class DatasetEpochCallback(TrainerCallback):
    """Calls `dataset.set_epoch(epoch)` when an epoch begins, before the DataLoader's workers copy the dataset:
    accelerate forwards the epoch to the dataset in a single process only. `state.epoch` counts finished epochs
    (fractional when resuming mid-epoch). Added by `CremaTrainer` when its training dataset has `set_epoch`."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))
        return control


class EarlyExitCallback(TrainerCallback):
    """Runs the trainer's epoch-end early-exit step (every rank calls it at the same point: it reduces across
    ranks). Added by `CremaTrainer` itself."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer._sync_early_exit_epoch()
        return control


class EarlyExitPlotCallback(TrainerCallback):
    """At the end of training, the main process writes the early-exit state and its plot into `output_dir`."""

    def __init__(self, trainer: Any, output_dir: str | None = None):
        self.trainer = trainer
        self.output_dir = output_dir

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            output_dir = self.output_dir or args.output_dir
            self.trainer.early_exit.save(output_dir)
            plot_early_exit(self.trainer.early_exit.state_dict(), os.path.join(output_dir, EARLY_EXIT_PLOT_NAME))
        return control


def plot_early_exit(state: dict[str, Any], path: str | os.PathLike) -> str:
    """Plots the early-exit indicator ḡ_m[j] / (τ · mean(ḡ_m[:j])) per modality over epochs, with the exit threshold
    (indicator 1, i.e. ḡ = τ · mean), the first epoch an exit may happen, and each modality's exit point.
    `state` is `ModalityEarlyExit.state_dict()` (or the content of `early_exit.json`). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=120)
    last_epoch = 0
    for name in state["modalities"]:
        points = [(epoch, value) for epoch, value in enumerate(state["indicators"][name]) if value is not None]
        if not points:
            continue
        epochs, values = zip(*points)
        last_epoch = max(last_epoch, epochs[-1])
        (line,) = axes.plot(epochs, values, marker="o", markersize=3, label=name)
        exited = state["exited"].get(name)
        if exited is not None and exited < len(state["indicators"][name]) and state["indicators"][name][exited] is not None:
            axes.plot([exited], [state["indicators"][name][exited]], marker="*", markersize=14, color=line.get_color(),
                      linestyle="none")
            axes.annotate(f"{name} exits", (exited, state["indicators"][name][exited]), textcoords="offset points",
                          xytext=(6, 6), fontsize=8, color=line.get_color())
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label=f"exit threshold (ḡ = τ·mean, τ = {state['tau']})")
    axes.axvline(state["start_epoch"] - 0.5, color="grey", linestyle=":", linewidth=1, label="exit allowed from here")
    axes.margins(y=0.15)  # room for the exit labels
    axes.set_xlabel("epoch")
    axes.set_ylabel("ḡ[j] / (τ · mean(ḡ[:j]))")
    axes.set_title("Modality-adaptive early exit")
    axes.set_xlim(-0.5, max(last_epoch, state["start_epoch"]) + 0.5)
    axes.legend(fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staging = f"{path}.saving.png"
    figure.savefig(staging)
    pyplot.close(figure)
    os.replace(staging, path)
    return str(path)


__all__ = ["EARLY_EXIT_PLOT_NAME", "EARLY_EXIT_STATE_NAME", "EarlyExitCallback", "EarlyExitPlotCallback",
           "plot_early_exit"]
