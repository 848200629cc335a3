"""CREMA training, evaluation and the `crema` command line.

`from crema_training import CremaTrainer, CremaTrainingArguments` works; the heavy modules are imported only
when those names are used, so the command line starts fast.
"""

from __future__ import annotations

from typing import Any

_LAZY_EXPORTS = {
    "CremaTrainer": ".trainer",
    "CremaTrainingArguments": ".arguments",
    "ModalityEarlyExit": ".early_exit",
    "CremaTrainingCollator": ".data_collator",
    "ClipGroupedSampler": ".clip_sampler",
}

__all__ = list(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY_EXPORTS[name], __name__), name)
