"""What the LLM encoder sees (DESIGN §1.4), written out token by token: the expected `inputs_embeds` is assembled
here from rows of T5's embedding table (prefix ids from the tokenizer), the per-modality MMQA outputs
(`outputs.modality_embeds`) and the hand-computed self-gated fusion, then the embedded prompt.

Rules: frame prefixes ("Frame i: ") go before each frame of a per-frame modality only; audio segments are not
frames and get none. Paper layout: with the fusion [F_i v_i]_i [F_i e_i]_i; without it each supportive modality
after its own prefix. The authors' code: with the fusion, reference_concat (their released scripts)
[F_i v_i]_i [F_1 ... F_T] [e_1 ... e_T] and reference_add [F_i (v_i + e_i)]_i; without the fusion (both)
[F_i v_i d_i ...]_i, then audio with no prefix, then "3D Model: " and the point-cloud tokens.
"""

import pytest

import torch

from reference_math import embed_ids, self_gated_fusion
from tiny_models import NUM_FRAMES, modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model

AUDIO = {"name": "audio", "feature_size": 24}


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


class _Expected:
    """Builds the expected encoder input piece by piece."""

    def __init__(self, model, tokenizer, batch):
        self.table = model.language_model.get_input_embeddings().weight.detach()
        self.tokenizer, self.batch, self.pieces = tokenizer, batch, []

    def text(self, text):
        self.pieces.append(embed_ids(self.table, _ids(self.tokenizer, text), self.batch))

    def tokens(self, tokens):
        self.pieces.append(tokens)

    def frames(self, per_frame):
        """(B, T, Q, H) -> Frame 1: x_1 Frame 2: x_2 ..."""
        for frame in range(per_frame.shape[1]):
            self.text(f"Frame {frame + 1}: ")
            self.tokens(per_frame[:, frame])

    def check(self, prepared, text):
        visual = torch.cat(self.pieces, dim=1)
        prompt = self.table[text["input_ids"]]
        expected = torch.cat([visual, prompt], dim=1)
        assert prepared.inputs_embeds.shape == expected.shape, (prepared.inputs_embeds.shape, expected.shape)
        torch.testing.assert_close(prepared.inputs_embeds, expected, rtol=1e-5, atol=1e-5)
        expected_mask = torch.cat([torch.ones(self.batch, visual.shape[1], dtype=torch.long), text["attention_mask"]], 1)
        assert torch.equal(prepared.attention_mask, expected_mask)


def _run(model, tokenizer):
    randomize_lora_b(model)
    text = text_inputs(tokenizer)
    assert not text["attention_mask"].all()  # a padded prompt: its mask must follow the visual tokens
    with torch.no_grad():
        prepared = model.prepare_language_model_inputs(text["input_ids"], text["attention_mask"],
                                                       **modality_inputs(model.config))
    return prepared, text


def _fused(model, blocks):
    return self_gated_fusion(blocks, model.fusion.projection.weight.detach(), model.fusion.projection.bias.detach())


def _audio_per_frame(audio):
    return audio.mean(dim=1, keepdim=True).repeat(1, NUM_FRAMES, 1, 1)


def test_paper_layout_with_fusion(tokenizer):
    """[F_i v_i]_i [F_i e_i]_i, then a modality outside the fusion after its prefix, then the prompt."""
    model = tiny_crema_model(["video", AUDIO, "depth", "point_cloud"], fusion=["video", "audio", "depth"])
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    expected = _Expected(model, tokenizer, 2)
    expected.frames(embeds["video"])
    expected.frames(_fused(model, [_audio_per_frame(embeds["audio"]), embeds["depth"]]))
    expected.text("3D Model: ")
    expected.tokens(embeds["point_cloud"][:, 0])
    expected.check(prepared, text)


def test_paper_layout_without_fusion_audio_segments_get_no_frame_prefixes(tokenizer):
    """Every modality after its own prefix; depth is per-frame (frame prefixes), audio is not (none)."""
    model = tiny_crema_model(["video", "depth", AUDIO, "point_cloud"])
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    expected = _Expected(model, tokenizer, 2)
    expected.frames(embeds["video"])
    expected.text("Depth: ")
    expected.frames(embeds["depth"])
    expected.text("Audio: ")
    expected.tokens(embeds["audio"].flatten(1, 2))  # segment 1 then segment 2, no "Frame i: " between
    expected.text("3D Model: ")
    expected.tokens(embeds["point_cloud"][:, 0])
    expected.check(prepared, text)


@pytest.mark.parametrize("layout", ["reference_add", "reference"])
def test_reference_add_layout_adds_fused_tokens_to_each_frame(tokenizer, layout):
    model = tiny_crema_model(["video", "flow", "depth"], fusion=["video", "flow", "depth"], token_layout=layout)
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    expected = _Expected(model, tokenizer, 2)
    expected.frames(embeds["video"] + _fused(model, [embeds["flow"], embeds["depth"]]))
    expected.check(prepared, text)


@pytest.mark.parametrize("layout", ["reference_concat", "reference_add"])
def test_reference_layouts_with_fused_audio_and_point_cloud(tokenizer, layout):
    """MUSIC-AVQA / SQA3D-like sets: audio (mean over segments) and a point cloud (repeated) inside the fusion."""
    names = ["video", "audio", "depth", "point_cloud"]
    model = tiny_crema_model(["video", AUDIO, "depth", "point_cloud"], fusion=names, token_layout=layout)
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    blocks = [_audio_per_frame(embeds["audio"]), embeds["depth"], embeds["point_cloud"].repeat(1, NUM_FRAMES, 1, 1)]
    fused = _fused(model, blocks)
    expected = _Expected(model, tokenizer, 2)
    if layout == "reference_add":
        expected.frames(embeds["video"] + fused)
    else:
        expected.frames(embeds["video"])
        for frame in range(NUM_FRAMES):
            expected.text(f"Frame {frame + 1}: ")
        for frame in range(NUM_FRAMES):
            expected.tokens(fused[:, frame])
    expected.check(prepared, text)


@pytest.mark.parametrize("layout", ["reference_concat", "reference_add"])
def test_reference_layouts_without_fusion(tokenizer, layout):
    """[F_i v_i d_i]_i, then audio without any prefix, then "3D Model: " point cloud."""
    model = tiny_crema_model(["video", "depth", AUDIO, "point_cloud"], token_layout=layout)
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    expected = _Expected(model, tokenizer, 2)
    for frame in range(NUM_FRAMES):
        expected.text(f"Frame {frame + 1}: ")
        expected.tokens(embeds["video"][:, frame])
        expected.tokens(embeds["depth"][:, frame])
    expected.tokens(embeds["audio"].flatten(1, 2))
    expected.text("3D Model: ")
    expected.tokens(embeds["point_cloud"][:, 0])
    expected.check(prepared, text)


@pytest.mark.parametrize("layout", ["reference_concat", "reference_add"])
def test_reference_layouts_with_one_frame_use_the_frame_prefix_without_number(tokenizer, layout):
    """DESIGN §1.4: with T = 1 the reference's frame prefix is "Frame: "."""
    model = tiny_crema_model(["video", "depth"], token_layout=layout, num_frames=1)
    prepared, text = _run(model, tokenizer)
    embeds = prepared.modality_embeds
    expected = _Expected(model, tokenizer, 2)
    expected.text("Frame: ")
    expected.tokens(embeds["video"][:, 0])
    expected.tokens(embeds["depth"][:, 0])
    expected.check(prepared, text)


@pytest.mark.parametrize("layout", ["reference_concat", "reference_add"])
def test_reference_layouts_point_cloud_only_input_uses_the_audio_prefix(tokenizer, layout):
    """DESIGN §1.4: in the reference, a point-cloud-only input is preceded by the "Audio: " prefix."""
    model = tiny_crema_model(["point_cloud"], token_layout=layout)
    prepared, text = _run(model, tokenizer)
    expected = _Expected(model, tokenizer, 2)
    expected.text("Audio: ")
    expected.tokens(prepared.modality_embeds["point_cloud"][:, 0])
    expected.check(prepared, text)
