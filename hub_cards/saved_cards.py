"""Cards written by `modeling_crema` saves: `save_pretrained` (model card) and `save_adapter` (adapter card).

`modeling_crema` calls `write_saved_card` inside its atomic save, with the staging folder that becomes the save: the
card is part of the save or of nothing. A README.md the user wrote in the previous save (no generated marker) is
kept: copied into the new save unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil

from .adapter_card import adapter_card
from .files import write_text_atomic
from .marker import CARD_NAME, users_card
from .model_card import model_card

logger = logging.getLogger(__name__)
KINDS = ("model", "adapter")


def write_saved_card(kind: str, folder: str | os.PathLike, previous: str | os.PathLike | None = None,
                     repo_id: str | None = None) -> bool:
    """Writes `folder/README.md` for the `kind` ("model" or "adapter") saved in `folder`; returns whether a card
    was generated (False: the user's README.md of `previous`, the folder being replaced, was kept instead).

    `repo_id`: the repo the save is for (its snippets name it); default the name of `previous` (or `folder`).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = os.fspath(folder)
    destination = os.path.join(folder, CARD_NAME)
    kept = users_card(previous) or users_card(folder)
    if kept is not None:
        if os.path.abspath(kept) != os.path.abspath(destination):
            shutil.copy2(kept, destination)
        logger.info("%s was written by hand (no generated marker): kept, no card generated.", kept)
        return False
    name = repo_id or os.path.basename(os.path.normpath(os.fspath(previous or folder)))
    card = model_card(folder, repo_id=name) if kind == "model" else adapter_card(folder, repo_id=name)
    write_text_atomic(destination, str(card))
    return True
