"""The modality-adaptive early exit (paper §3.3, DESIGN §2), as plain state that a checkpoint can hold.

For every trained modality m, the trainer records after each of m's updates the L2 norm of m's LoRA A/B gradients
(unscaled). At the end of epoch j their average ḡ_m[j] is compared with the mean of m's earlier epoch averages:

    m exits after epoch j   if   j >= start_epoch   and   ḡ_m[j] > τ · mean(ḡ_m[0], ..., ḡ_m[j-1])

An exited modality is no longer updated (it still runs in the forward pass). The indicator
ḡ_m[j] / (τ · mean(ḡ_m[:j])) is kept per epoch (the paper's Fig. 2: an exit happens when it passes 1).

Fixes over the authors' trainer: the average covers the whole epoch (not the last step), sums and counts are
reduced across ranks before deciding (so every rank takes the same decision), and the state is saved with every
checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import torch

EARLY_EXIT_STATE_NAME = "early_exit.json"


class ModalityEarlyExit:
    """Per-modality gradient statistics and exit decisions.

    `record(m, norm)` adds one measurement to the open epoch; `close_epoch(reduce)` turns the open epoch into one
    average per modality, decides the exits and opens the next epoch. `reduce` (optional) sums a float64 tensor
    over all ranks, so that every rank sees the same averages.
    """

    def __init__(self, modalities: list[str], tau: float, start_epoch: int = 5, enabled: bool = True):
        if not tau > 0:
            raise ValueError(f"The early-exit τ must be > 0, got {tau}.")
        self.modalities = list(modalities)
        self.tau = float(tau)
        self.start_epoch = int(start_epoch)
        self.enabled = enabled
        self.epoch = 0  # the open epoch, whose measurements are being summed
        self._running = {name: [0.0, 0] for name in self.modalities}
        self.history: dict[str, list[float | None]] = {name: [] for name in self.modalities}
        self.indicators: dict[str, list[float | None]] = {name: [] for name in self.modalities}
        self.exited: dict[str, int | None] = {name: None for name in self.modalities}

    # ------------------------------------------------------------------------------------------ queries
    def active_modalities(self) -> list[str]:
        """The modalities still trained, in the configured order."""
        return [name for name in self.modalities if self.exited[name] is None]

    @property
    def all_exited(self) -> bool:
        return not self.active_modalities()

    # ------------------------------------------------------------------------------------------ updates
    def record(self, modality: str, gradient_norm: float) -> None:
        """Adds one gradient-norm measurement of `modality` to the open epoch (non-finite ones are skipped: with
        fp16 loss scaling such a step is skipped by the optimiser too)."""
        if modality not in self._running:
            raise ValueError(f"Modality {modality!r} is not tracked by the early exit ({self.modalities}).")
        if math.isfinite(gradient_norm):
            self._running[modality][0] += float(gradient_norm)
            self._running[modality][1] += 1

    def close_epoch(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
        """Ends the open epoch: averages, indicators and exit decisions. Returns what happened, for logging:
        `{"epoch": j, "average": {m: ḡ}, "indicator": {m: I}, "exited": [m, ...]}`."""
        sums = torch.tensor([[self._running[m][0], self._running[m][1]] for m in self.modalities], dtype=torch.float64)
        if reduce is not None and len(self.modalities):
            sums = reduce(sums).to(torch.float64).cpu()
        epoch, newly_exited = self.epoch, []
        averages, indicators = {}, {}
        for row, name in enumerate(self.modalities):
            total, count = float(sums[row, 0]), float(sums[row, 1])
            average = total / count if count > 0 else None
            earlier = [value for value in self.history[name] if value is not None]
            indicator = None
            if average is not None and earlier:
                reference = sum(earlier) / len(earlier)
                indicator = average / (self.tau * reference) if reference > 0 else math.inf
                if (
                    self.enabled
                    and self.exited[name] is None
                    and epoch >= self.start_epoch
                    and average > self.tau * reference
                ):
                    self.exited[name] = epoch
                    newly_exited.append(name)
            self.history[name].append(average)
            self.indicators[name].append(indicator)
            averages[name], indicators[name] = average, indicator
        self.epoch += 1
        self._running = {name: [0.0, 0] for name in self.modalities}
        return {"epoch": epoch, "average": averages, "indicator": indicators, "exited": newly_exited}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities,
            "tau": self.tau,
            "start_epoch": self.start_epoch,
            "enabled": self.enabled,
            "epoch": self.epoch,
            "running": {name: list(value) for name, value in self._running.items()},
            "history": self.history,
            "indicators": self.indicators,
            "exited": self.exited,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a saved state. The modalities must be the same (in the same order); τ, the start epoch and
        `enabled` stay as configured now (a resumed run may change them deliberately)."""
        if list(state["modalities"]) != self.modalities:
            raise ValueError(
                f"The early-exit state was saved for modalities {state['modalities']}, this run trains "
                f"{self.modalities}; resume with the same `modalities` (and their order)."
            )
        self.epoch = int(state["epoch"])
        self._running = {name: [float(state["running"][name][0]), int(state["running"][name][1])]
                         for name in self.modalities}
        self.history = {name: list(state["history"][name]) for name in self.modalities}
        self.indicators = {name: list(state["indicators"][name]) for name in self.modalities}
        self.exited = {name: state["exited"][name] for name in self.modalities}

    def save(self, directory: str | os.PathLike) -> None:
        """Writes `early_exit.json` into `directory` (atomically: written beside it, then renamed)."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, EARLY_EXIT_STATE_NAME)
        staging = f"{path}.saving"
        with open(staging, "w") as handle:
            json.dump(self.state_dict(), handle, indent=2)
            handle.write("\n")
        os.replace(staging, path)

    @staticmethod
    def read(directory: str | os.PathLike) -> dict[str, Any]:
        with open(os.path.join(directory, EARLY_EXIT_STATE_NAME)) as handle:
            return json.load(handle)


__all__ = ["EARLY_EXIT_STATE_NAME", "ModalityEarlyExit"]
