"""The Space card: the front matter of `spaces_demo/README.md` (Gradio SDK, `app.py`, the models it uses).

`write_space_readme` rewrites only the YAML block of an existing README and keeps its text, so the Space's own
description (written with the app) survives; run it after changing the models or the Gradio version:

    python -m crema_hub_cards space-readme spaces_demo/README.md --model org/crema --model org/crema-thermal
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from huggingface_hub import SpaceCard, SpaceCardData

from .files import write_text_atomic
from .hub_rules import checked_card, front_matter
from .marker import CARD_NAME

logger = logging.getLogger(__name__)

#: `sdk_version` when gradio is not importable here: the newest gradio on PyPI when this was written. Pass
#: `sdk_version=` to pin the version the app was written for.
DEFAULT_GRADIO_VERSION = "6.31.0"
DEFAULT_TITLE = "CREMA video QA"
DEFAULT_EMOJI = "🎬"
DEFAULT_SHORT_DESCRIPTION = "Ask about a clip: video, flow, depth, thermal..."
DEFAULT_TEXT = (
    "\n# CREMA video QA\n\nUpload a clip, ask a question, and see which modalities the answer used. The app is "
    "`app.py`; the models it loads are listed in the metadata above.\n"
)


def gradio_version() -> str:
    """The installed gradio's version, else `DEFAULT_GRADIO_VERSION`."""
    try:
        import gradio
    except ImportError:
        logger.info("gradio is not importable: sdk_version %s", DEFAULT_GRADIO_VERSION)
        return DEFAULT_GRADIO_VERSION
    return str(gradio.__version__)


def space_card(
    models: Sequence[str],
    *,
    title: str = DEFAULT_TITLE,
    emoji: str = DEFAULT_EMOJI,
    color_from: str = "indigo",
    color_to: str = "purple",
    sdk_version: str | None = None,
    app_file: str = "app.py",
    short_description: str | None = DEFAULT_SHORT_DESCRIPTION,
    datasets: Sequence[str] = (),
    license: str | None = None,
    python_version: str | None = None,
    pinned: bool = False,
    tags: Sequence[str] = ("crema", "video-question-answering"),
    text: str = DEFAULT_TEXT,
) -> SpaceCard:
    """The Space's card (`sdk: gradio`), checked offline against the Spaces configuration reference.

    `models`: the Hub ids the app loads (shown as "models used" on the Space page). `sdk_version`: default the
    installed gradio's version, else `DEFAULT_GRADIO_VERSION`. `text`: the Markdown below the metadata.
    """
    data = SpaceCardData(
        title=title,
        emoji=emoji,
        colorFrom=color_from,
        colorTo=color_to,
        sdk="gradio",
        sdk_version=sdk_version or gradio_version(),
        python_version=python_version,
        app_file=app_file,
        pinned=pinned,
        short_description=short_description,
        license=license,
        models=list(models) or None,
        datasets=list(datasets) or None,
        tags=list(tags) or None,
    )
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n{text if text.startswith(chr(10)) else chr(10) + text}")
    return checked_card(card, data)


def write_space_readme(path: str | os.PathLike = os.path.join("spaces_demo", CARD_NAME), **card_options) -> SpaceCard:
    """(Re)writes the front matter of the Space's README at `path` from `space_card(**card_options)`, keeping the
    README's text below it (or writing `DEFAULT_TEXT` when there is no README yet). Atomic."""
    path = os.fspath(path)
    if "text" not in card_options and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            existing = handle.read()
        try:
            front_matter(existing)
            card_options["text"] = SpaceCard(existing, ignore_metadata_errors=True).text
        except ValueError:  # a README without metadata: all of it is text
            card_options["text"] = "\n" + existing
    card = space_card(**card_options)
    write_text_atomic(path, str(card))
    return card
