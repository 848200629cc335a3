"""Training order for datasets with several questions per clip (`CremaTrainingArguments.clip_column`): each clip's
rows side by side, so a batch holds whole clips and the collator passes each clip's inputs once (`clip_index`)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch


class ClipGroupedSampler(torch.utils.data.Sampler[int]):
    """Row indices, clip by clip: the clips in a random order, each clip's rows shuffled and kept together. The order
    depends only on (`seed`, epoch), so a resumed run sees the batches an uninterrupted one would."""

    def __init__(self, clip_ids: Sequence[Hashable], seed: int = 0):
        groups: dict[Hashable, list[int]] = {}
        for index, clip in enumerate(clip_ids):
            groups.setdefault(clip, []).append(index)
        self.groups = list(groups.values())
        self.num_rows = len(clip_ids)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (through accelerate) at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        for clip in torch.randperm(len(self.groups), generator=generator).tolist():
            group = self.groups[clip]
            for position in torch.randperm(len(group), generator=generator).tolist():
                yield group[position]
