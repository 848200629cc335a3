"""Names of the well-known modalities, with no dependencies (the `crema` command line checks `--modalities`
against them without importing torch or transformers)."""

from __future__ import annotations

#: LLM-side prefix text of the well-known modalities (the paper's "modality prefix tokens").
DEFAULT_MODALITY_PREFIXES = {
    "video": "Video: ",
    "audio": "Audio: ",
    "flow": "Optical Flow: ",
    "depth": "Depth: ",
    "normal": "Surface Normal: ",
    "point_cloud": "3D Model: ",
    "thermal": "Thermal: ",
    "touch": "Touch: ",
}

#: The well-known modality names, in the paper's order.
KNOWN_MODALITIES = tuple(DEFAULT_MODALITY_PREFIXES)

#: The paper's one-letter modality names (Tables 1-4; Table 4: "T: Touch map, H: thermal Heatmap").
PAPER_LETTERS = {
    "V": "video", "A": "audio", "F": "flow", "D": "depth", "N": "normal", "P": "point_cloud", "T": "touch",
    "H": "thermal",
}

__all__ = ["DEFAULT_MODALITY_PREFIXES", "KNOWN_MODALITIES", "PAPER_LETTERS"]
