"""Which README.md files are ours to rewrite: a generated card carries `GENERATED_MARKER`; any other README.md was
written by a user and is never replaced (it is copied into a new save, and uploaded as it is)."""

from __future__ import annotations

import os

CARD_NAME = "README.md"
#: First line of every generated card's body (an HTML comment: invisible on the Hub).
GENERATED_MARKER = "<!-- crema-hub-cards: generated card"
MARKER_LINE = (f"{GENERATED_MARKER}, rewritten whenever this folder is saved or pushed. Delete this line to keep "
               "your own edits. -->")


def is_generated_card(text: str) -> bool:
    return GENERATED_MARKER in text


def users_card(folder: str | os.PathLike | None) -> str | None:
    """The path of `folder/README.md` when it exists and was written by a user (no marker), else None."""
    if folder is None:
        return None
    path = os.path.join(os.fspath(folder), CARD_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as handle:
        return None if is_generated_card(handle.read()) else path
