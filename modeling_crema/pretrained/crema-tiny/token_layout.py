"""Where each modality's query embeddings go in front of the prompt (the LLM encoder's input).

Layouts:
- "paper" (DESIGN §1.4, paper eq. 3): with the fusion, [Frame i: major_i]_i then [Frame i: fused_i]_i, so
  2·T·(p+Q) visual tokens whatever the number of modalities; without it, the major modality's frames, then each
  supportive modality after its prefix ("Depth: ", "Audio: ", ...).
- "reference_concat" (the authors' released training scripts, so their checkpoints): with the fusion,
  [Frame i: major_i]_i, then all the frame prefixes again [Frame 1: ... Frame T:] (prefix tokens only), then all
  fused tokens [fused_1 ... fused_T].
- "reference_add" (also accepted as "reference"; the authors' non-concat branch, unused by their released
  scripts): with the fusion, the gated fusion output is *added* to the major modality, [Frame i: major_i +
  fused_i]_i (T·(p+Q) tokens).
Both reference layouts prefix a single frame too ("Frame: ", T = 1); without the fusion, the per-frame
modalities share each frame's prefix,
[Frame i: major_i s1_i s2_i ...]_i, then audio tokens without a prefix, then other modalities after their prefix
("3D Model: "), except a point cloud that is the only input, which the authors' code puts after "Audio: ".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOKEN_LAYOUTS = ("paper", "reference_concat", "reference_add", "reference")


@dataclass
class LayoutParts:
    """Everything a layout arranges; every tensor is already in the LLM's dtype.

    order: the used modalities, major first. embeds: per modality (B, G, Q, H). fused: the gated fusion output
    (B, T, Q, H) or None, and fused_modalities the modalities it consumed. frame_prefixes: embedded "Frame i: "
    (B, p_i, H) per frame (None or missing: no prefix). modality_prefixes: embedded prefix (B, p, H) or None.
    encoders: each modality's encoder kind. per_frame: whether a modality's groups are video frames (frame
    prefixes belong to those only: audio segments are not frames, DESIGN §1.4). point_cloud_only_prefix: embedded
    "Audio: " (or None), the reference layouts' prefix of a point cloud that is the only input.
    """

    order: list[str]
    embeds: dict[str, torch.Tensor]
    fused: torch.Tensor | None
    fused_modalities: list[str]
    frame_prefixes: list[torch.Tensor]
    modality_prefixes: dict[str, torch.Tensor | None]
    encoders: dict[str, str]
    per_frame: dict[str, bool]
    point_cloud_only_prefix: torch.Tensor | None = None

    def frames(
        self, embeds: torch.Tensor, *companions: torch.Tensor, prefixed: bool = True, single: bool = False
    ) -> list[torch.Tensor]:
        """(B, G, Q, H) -> [Frame 1: x_1 c_1 ..., Frame 2: x_2 c_2 ..., ...]; prefixes only when `prefixed` (the
        groups are frames) and G > 1, or also for G = 1 with `single` (the reference's "Frame: ")."""
        groups = embeds.shape[1]
        pieces = []
        for index in range(groups):
            wanted = prefixed and (groups > 1 or single) and index < len(self.frame_prefixes)
            prefix = self.frame_prefixes[index] if wanted else None
            if prefix is not None:
                pieces.append(prefix)
            pieces += [embeds[:, index]] + [companion[:, index] for companion in companions]
        return pieces

    def prefixed(self, name: str, flat: bool = False) -> list[torch.Tensor]:
        prefix = self.modality_prefixes.get(name)
        pieces = [] if prefix is None else [prefix]
        embeds = self.embeds[name]
        return pieces + ([embeds.flatten(1, 2)] if flat else self.frames(embeds, prefixed=self.per_frame[name]))


def paper_layout(parts: LayoutParts) -> list[torch.Tensor]:
    major, *others = parts.order
    pieces = parts.frames(parts.embeds[major], prefixed=parts.per_frame[major])
    if parts.fused is not None:
        pieces += parts.frames(parts.fused, prefixed=parts.per_frame[major])
        others = [name for name in others if name not in parts.fused_modalities]
    for name in others:
        pieces += parts.prefixed(name)
    return pieces


def _reference_without_fusion(parts: LayoutParts) -> tuple[list[torch.Tensor], list[str]]:
    """The reference's per-frame concatenation [Frame i: major_i s1_i ...]_i; returns it and what is left."""
    major, *others = parts.order
    major_embeds = parts.embeds[major]
    if not others and parts.encoders[major] == "point_cloud" and parts.point_cloud_only_prefix is not None:
        # the authors' code names a lone point cloud "Audio: " (DESIGN §1.4)
        return [parts.point_cloud_only_prefix, major_embeds.flatten(1, 2)], []
    if parts.encoders[major] != "vision":
        return parts.prefixed(major, flat=True), others
    frames = major_embeds.shape[1]
    per_frame = [n for n in others if parts.encoders[n] == "vision" and parts.embeds[n].shape[1] == frames]
    pieces = parts.frames(major_embeds, *(parts.embeds[name] for name in per_frame), single=True)
    return pieces, [name for name in others if name not in per_frame]


def _reference_rest(parts: LayoutParts, others: list[str]) -> list[torch.Tensor]:
    pieces = []
    for name in others:
        if parts.encoders[name] == "audio":  # the reference found audio works better without a prefix
            pieces.append(parts.embeds[name].flatten(1, 2))
        else:
            pieces += parts.prefixed(name, flat=True)
    return pieces


def reference_add_layout(parts: LayoutParts) -> list[torch.Tensor]:
    major, *others = parts.order
    if parts.fused is None:
        pieces, others = _reference_without_fusion(parts)
    else:
        pieces = parts.frames(parts.embeds[major] + parts.fused, prefixed=parts.per_frame[major], single=True)
        others = [name for name in others if name not in parts.fused_modalities]
    return pieces + _reference_rest(parts, others)


def reference_concat_layout(parts: LayoutParts) -> list[torch.Tensor]:
    major, *others = parts.order
    if parts.fused is None:
        pieces, others = _reference_without_fusion(parts)
    else:
        prefixed = parts.per_frame[major]
        pieces = parts.frames(parts.embeds[major], prefixed=prefixed, single=True)
        frames = parts.fused.shape[1]
        if prefixed:
            pieces += [prefix for prefix in parts.frame_prefixes[:frames] if prefix is not None]
        pieces += [parts.fused[:, index] for index in range(frames)]
        others = [name for name in others if name not in parts.fused_modalities]
    return pieces + _reference_rest(parts, others)


LAYOUTS = {
    "paper": paper_layout,
    "reference_concat": reference_concat_layout,
    "reference_add": reference_add_layout,
    "reference": reference_add_layout,
}
