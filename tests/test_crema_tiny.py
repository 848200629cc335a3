"""The committed crema-tiny model: it loads (with and without the crema packages importable), its backbone is
frozen, its separate adapter folders equal the model's adapters, and it answers the example clip's question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clean_env import IMPORT_GUARD, python_without_crema, run_isolated

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "modeling_crema" / "pretrained"
MODEL = PRETRAINED / "crema-tiny"
EXAMPLES = ROOT / "examples"
EXAMPLE = json.loads((EXAMPLES / "example.json").read_text())


@pytest.fixture(scope="module")
def model():
    from modeling_crema import CremaForConditionalGeneration

    return CremaForConditionalGeneration.from_pretrained(MODEL)


def test_loads_with_auto_model_and_backbone_is_frozen(model):
    from transformers import AutoModel

    auto = AutoModel.from_pretrained(MODEL, trust_remote_code=True)
    assert type(auto).__name__ == "CremaForConditionalGeneration"
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    backbone = [name for name, _ in model.named_parameters()
                if name.startswith(("vision_model.", "language_model.")) and ".lora_" not in name]
    assert backbone and not trainable.intersection(backbone)
    for (name, a), (_, b) in zip(model.state_dict().items(), auto.state_dict().items()):
        assert torch.equal(a, b), name


def test_separate_adapter_folders_equal_the_model(model):
    from modeling_crema import CremaForConditionalGeneration

    for m in model.config.modality_names:
        folder = PRETRAINED / f"crema-tiny-{m}"
        assert folder.is_dir(), folder
        other = CremaForConditionalGeneration.from_pretrained(MODEL)
        reference = {k: v.clone() for k, v in other.state_dict().items()}
        with torch.no_grad():  # spoil the adapter, then load it back from its own folder
            for name, p in other.named_parameters():
                if f".{m}." in name or name.endswith(f".{m}"):
                    p.add_(1.0)
        other.load_adapter(str(folder), m)
        state = other.state_dict()
        for key, value in reference.items():
            assert torch.equal(state[key], value), (m, key)


def test_adapters_were_trained_with_the_recipes_lora_dropout(model):
    """The recipe's defaults are the committed model's settings: the one its adapter configs record must agree."""
    from crema_training.crema_tiny.recipe import LORA_DROPOUT

    for m in model.config.modality_names:
        for folder in (MODEL / "adapters" / m, PRETRAINED / f"crema-tiny-{m}"):
            assert json.loads((folder / "adapter_config.json").read_text())["lora_dropout"] == LORA_DROPOUT, folder


def test_loads_without_the_crema_packages(tmp_path):
    python = python_without_crema(tmp_path)
    script = IMPORT_GUARD + (
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(MODEL)!r}, trust_remote_code=True)\n"
        "print(type(model).__name__, sorted(model.config.modality_names))\n"
    )
    result = run_isolated(python, script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CremaForConditionalGeneration" in result.stdout


@pytest.mark.parametrize("named", [True, False], ids=["model-named", "default-model"])
def test_answers_the_example_question(capsys, named):
    """The README's first command: the shipped model (named, or the default when none is named) answers the
    example clip's question, which needs the thermal adapter, correctly."""
    from crema_training.answer import default_model_path
    from crema_training.cli import main

    assert Path(default_model_path()) == MODEL
    argv = ["answer", *([str(MODEL)] if named else []), str(EXAMPLES / EXAMPLE["clip"]), "--question", EXAMPLE["question"],
            *[x for option in EXAMPLE["options"] for x in ("--option", option)], "--device", "cpu"]
    if EXAMPLE.get("thermal"):
        argv += ["--thermal", str(EXAMPLES / EXAMPLE["thermal"])]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].removeprefix("answer: ") == EXAMPLE["answer"]
    # audio from the clip's own track; no depth / normal render given: left out, and said
    assert lines[1] == "modalities used: video, audio, flow, thermal"
    notes = [line for line in lines if line.startswith("note: ")]
    assert any(note.startswith("note: answered without 'depth'") and "--depth FILE" in note for note in notes)
    assert any(note.startswith("note: answered without 'normal'") and "--normal FILE" in note for note in notes)


def test_answers_the_example_with_every_companion(capsys):
    from crema_training.cli import main

    argv = ["answer", str(EXAMPLES / EXAMPLE["clip"]), "--question", EXAMPLE["question"],
            *[x for option in EXAMPLE["options"] for x in ("--option", option)], "--device", "cpu"]
    for name in ("thermal", "depth", "normal"):
        argv += [f"--{name}", str(EXAMPLES / EXAMPLE[name])]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].removeprefix("answer: ") == EXAMPLE["answer"]
    assert lines[1] == "modalities used: video, audio, flow, depth, normal, thermal"
    assert not any(line.startswith("note: ") for line in lines)


def test_questions_outside_crema_synth_are_answered_with_a_note(capsys):
    from crema_training.cli import main

    argv = ["answer", str(EXAMPLES / EXAMPLE["clip"]), "--question", "Is the object made of wood?",
            "--option", "yes", "--option", "no", "--thermal", str(EXAMPLES / EXAMPLE["thermal"]), "--device", "cpu"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] in ("answer: yes", "answer: no")
    assert any("outside the questions this model was trained on" in line for line in lines)


def test_shipped_remote_code_is_the_package_source():
    """The model folder carries its own copy of the code (as a Hub repo does, for `trust_remote_code`); it must be
    today's source. After changing modeling_crema/ or processing/, refresh it with `python -m
    crema_training.crema_tiny.recipe` or by copying the changed files into the folder."""
    for shipped in sorted(MODEL.glob("*.py")):
        source = next(path for path in (ROOT / "modeling_crema" / shipped.name, ROOT / "processing" / shipped.name)
                      if path.exists())
        assert shipped.read_text() == source.read_text(), f"{shipped.name} is stale"


def test_pretraining_augmentation_turns_all_frames_alike():
    """The recipe's colour / shape augmentation: one of the eight flips / quarter turns, the same for every frame
    (a clip's frames must stay one scene), and every pose is drawn."""
    from crema_training.crema_tiny.pretrain import dihedral_augment

    frames = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    poses = [torch.rot90(f, k, dims=(-2, -1)) for f in (frames, frames.flip(-1)) for k in range(4)]
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(64):
        out = dihedral_augment(frames, generator)
        matches = [i for i, pose in enumerate(poses) if torch.equal(out, pose)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_vision_pretraining_teaches_the_vit_alone():
    """The recipe's first stage trains the ViT (and nothing else) until its mean patch state separates what each
    rendering's question asks: here whether the object is red or blue."""
    from crema_training.crema_tiny.backbone import build_backbone, build_tokenizer
    from crema_training.crema_tiny.pretrain import pretrain_vision_encoder

    torch.manual_seed(0)
    blip2 = build_backbone(build_tokenizer(), image_size=32)
    clips, rows = {}, []
    for i in range(32):
        side = i % 2
        frames = torch.rand(2, 3, 32, 32) * 0.1
        frames[:, 2 * side, 8:20, 8:20] += 1.0  # red (channel 0) or blue (channel 2)
        clips[f"c{i}"] = {"video": frames}
        rows.append({"clip_id": f"c{i}", "question_type": "colour", "needed_modalities": ["video"],
                     "options": ["red", "blue"], "answer_index": side})
    rows.append({"clip_id": "c0", "question_type": "color_motion", "needed_modalities": ["video", "flow"],
                 "options": ["a", "b"], "answer_index": 0})  # needs two renderings: not a stage-one example
    others = {name: p.clone() for name, p in blip2.named_parameters() if not name.startswith("vision_model.")}
    before = {name: p.clone() for name, p in blip2.vision_model.named_parameters()}
    history = pretrain_vision_encoder(blip2, clips, rows, epochs=10, batch_size=16, lr=3e-3, log=lambda _: None)
    assert history[-1] < 0.05  # chance is ln 2 = 0.69
    for name, p in blip2.named_parameters():
        if name in others:
            assert torch.equal(p, others[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in blip2.vision_model.named_parameters())


def _bar_clips(count: int, vertical) -> tuple[dict, list]:
    """One-rendering toy clips: a bright 8 x 2 bar on a dark frame, vertical when `vertical(i)` (label 1), else
    horizontal (label 0), in a patch that changes with i."""
    clips, rows = {}, []
    for i in range(count):
        label = int(vertical(i))
        top, left = 8 * (i % 4), 8 * (i // 4 % 4)
        frames = torch.rand(2, 3, 32, 32) * 0.1
        height, width = (8, 2) if label else (2, 8)
        frames[:, :, top + 3:top + 3 + height, left + 3:left + 3 + width] += 1.0
        clips[f"c{i}"] = {"video": frames}
        rows.append({"clip_id": f"c{i}", "question_type": "shape", "needed_modalities": ["video"],
                     "options": ["a", "b"], "answer_index": label})
    return clips, rows


def test_vision_pretraining_sees_colour_and_shape_frames_flipped_and_turned():
    """Whether a bar is vertical or horizontal is learned without augmentation and cannot be learned under random
    flips / quarter turns (a quarter turn makes one the other), so the stage really shows shape frames in the eight
    poses."""
    from crema_training.crema_tiny.backbone import build_backbone, build_tokenizer
    from crema_training.crema_tiny.pretrain import pretrain_vision_encoder

    clips, rows = _bar_clips(32, lambda i: i % 2)
    final = {}
    for augment in (False, True):
        blip2 = build_backbone(build_tokenizer(), image_size=32)
        history = pretrain_vision_encoder(blip2, clips, rows, epochs=30, batch_size=16, lr=3e-3, augment=augment,
                                          log=lambda _: None)
        final[augment] = history[-1]
    assert final[False] < 0.05 and final[True] > 0.5  # chance is ln 2 = 0.69


def test_qa_pretraining_with_a_frozen_vit_trains_everything_else():
    """`freeze_vision` (recipe `--freeze-vision`): the QA stage leaves the ViT exactly as its own stage left it,
    trains the Q-Former, query tokens, projection and LLM, and freezes everything at the end."""
    from crema_training.crema_tiny.backbone import build_backbone, build_tokenizer
    from crema_training.crema_tiny.pretrain import pretrain

    tokenizer = build_tokenizer()
    blip2 = build_backbone(tokenizer, image_size=32)
    clips, rows = _bar_clips(8, lambda i: i % 2)
    for row in rows:
        row["input_ids"] = tokenizer("Question: What shape is the object?").input_ids
        row["labels"] = tokenizer("A" if row["answer_index"] == 0 else "B").input_ids
    before = {name: p.clone() for name, p in blip2.named_parameters()}
    pretrain(blip2, tokenizer, clips, rows, epochs=1, batch_size=4, freeze_vision=True, log=lambda _: None)
    changed = {name for name, p in blip2.named_parameters() if not torch.equal(p, before[name])}
    assert not any(name.startswith("vision_model.") for name in changed)
    for prefix in ("qformer.", "query_tokens", "language_projection.", "language_model."):
        assert any(name.startswith(prefix) for name in changed), prefix
    assert not any(p.requires_grad for p in blip2.parameters())


def test_qa_pretraining_reads_audio_through_the_frozen_audio_encoder():
    """Audio rows join the QA pre-training through the audio encoder (trained on its own first, as in the recipe),
    which stays as its own stage left it; the LLM learns the audio answer (here: a loud band high or low in the
    fbank)."""
    from crema_training.crema_tiny.audio_encoder import pretrain_audio_encoder
    from crema_training.crema_tiny.backbone import (AUDIO_FRAMES, AUDIO_MEL_BINS, build_audio_encoder, build_backbone,
                                                    build_tokenizer)
    from crema_training.crema_tiny.pretrain import letter_accuracy, pretrain

    tokenizer = build_tokenizer()
    blip2 = build_backbone(tokenizer, image_size=32)
    clips, rows = _bar_clips(8, lambda i: i % 2)
    for clip in clips.values():  # every clip has every rendering, as CREMA-Synth's do
        clip["audio"] = torch.zeros(1, AUDIO_FRAMES, AUDIO_MEL_BINS)
    generator = torch.Generator().manual_seed(0)
    for i in range(16):
        fbank = torch.randn(1, AUDIO_FRAMES, AUDIO_MEL_BINS, generator=generator) * 0.1
        fbank[0, 40:80, slice(20, 28) if i % 2 == 0 else slice(2, 10)] += 3.0
        clips[f"a{i}"] = {"video": torch.zeros(2, 3, 32, 32), "audio": fbank}
        rows.append({"clip_id": f"a{i}", "question_type": "pitch", "needed_modalities": ["audio"],
                     "options": ["high", "low"], "answer_index": i % 2})
    encoder = build_audio_encoder()
    tracks = torch.stack([clips[f"a{i}"]["audio"] for i in range(16)])
    pretrain_audio_encoder(encoder, (tracks, torch.tensor([[0, i % 2] for i in range(16)])), epochs=15, batch_size=8,
                           log=lambda _: None)
    for row in rows:
        question = "Is the beep high or low pitched?" if row["question_type"] == "pitch" else "What shape is the object?"
        row["input_ids"] = tokenizer(f"Question: {question}").input_ids
        row["labels"] = tokenizer("Option A" if row["answer_index"] == 0 else "Option B").input_ids
    before = {name: p.clone() for name, p in encoder.named_parameters()}
    assert "pitch" not in letter_accuracy(blip2, tokenizer, clips, rows)  # without the encoder, audio rows are left out
    pretrain(blip2, tokenizer, clips, rows, epochs=10, batch_size=8, lr=3e-3, audio_encoder=encoder,
             log=lambda _: None)
    assert all(torch.equal(p, before[name]) for name, p in encoder.named_parameters())
    assert letter_accuracy(blip2, tokenizer, clips, rows, audio_encoder=encoder)["pitch"] == 1.0


def test_training_dataset_holds_each_rows_clip_features_as_tensors():
    """The CREMA stage's dataset: each row's prompt and target, and its clip's cached features as float32 tensors
    (fixed-shape arrays, so that a batch is formatted in one piece), in the rows' order."""
    from crema_training.crema_tiny.crema_stage import training_dataset

    generator = torch.Generator().manual_seed(0)
    features = {c: {"video": torch.randn(4, 5, 8, generator=generator), "flow": torch.randn(4, 5, 8, generator=generator)}
                for c in ("a", "b")}
    rows = [{"clip_id": c, "input_ids": [3, 4, 1], "labels": [5, k, 1], "question_type": "color"}
            for k, c in enumerate("bab")]
    dataset = training_dataset(rows, features, ["video", "flow"])
    batch = dataset[[0, 1, 2]]
    for m in ("video", "flow"):
        assert batch[f"{m}_features"].dtype == torch.float32
        assert torch.equal(batch[f"{m}_features"], torch.stack([features[r["clip_id"]][m] for r in rows]))
    assert batch["labels"].tolist() == [r["labels"] for r in rows]
    assert dataset.features["video_features"].shape == (4, 5, 8)
    assert batch["clip_id"] == ["b", "a", "b"]  # what `--group-by-clip` batches by


def test_the_recipe_runs_end_to_end_at_toy_size(tmp_path):
    """Every stage of the recipe, wired as the command runs it (6 clips, one or two epochs each): CREMA-Synth with the given
    object size, frames at the given size, the ViT stage (in a process beside the audio encoder's), QA pre-training on the frozen ViT, CREMA training with early
    exit, and the saved folders; with `--jobs 1`, the same weights."""
    import subprocess
    import sys

    from transformers import AutoModel

    def run_recipe(work: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "crema_training.crema_tiny.recipe", "--work", str(work), "--out", str(out),
                   "--train-clips", "6", "--test-clips", "2", "--vision-epochs", "1", "--pretrain-epochs", "1",
                   "--epochs", "2", "--early-exit-start-epoch", "1", "--early-exit-tau", "1.25",
                   "--object-radius", "0.15", "0.2", "--image-size", "40", "--audio-epochs", "1",
                   "--audio-tracks", "8", "--freeze-vision", "--lora-dropout", "0.3", *options]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    work, out = tmp_path / "work", tmp_path / "out"
    result = run_recipe(work, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vision pre-training epoch 1/1" in result.stdout and "pre-training epoch 1/1" in result.stdout
    assert "audio encoder epoch 1/1" in result.stdout
    # the backbone's QA pre-training reads every rendering, the audio track through the frozen audio encoder
    line = next(x for x in result.stdout.splitlines() if x.startswith("backbone held-out accuracy per rendering:"))
    assert {"color", "beeps", "pitch"} <= set(json.loads(line.split(":", 1)[1]))
    assert (work / "vision_encoder" / "config.json").is_file()  # the ViT stage's output: a rerun resumes after it
    config = json.loads((work / "synth" / "synth_config.json").read_text())
    assert config["object_radius"] == [0.15, 0.2] and config["num_clips_per_split"] == {"train": 6, "test": 2}
    updates = json.loads((work / "run" / "adapter_updates.json").read_text())
    assert set(updates) == {"video", "audio", "flow", "depth", "normal", "thermal"} and all(updates.values())
    early_exit = json.loads((work / "run" / "early_exit.json").read_text())
    assert (early_exit["tau"], early_exit["start_epoch"]) == (1.25, 1)
    assert all(len(early_exit["indicators"][m]) == 2 for m in updates)
    model = AutoModel.from_pretrained(out / "crema-tiny", trust_remote_code=True)
    assert model.config.vision_config.image_size == 40
    assert str(work) not in (out / "crema-tiny" / "config.json").read_text()  # no path of this machine is shipped
    encoder = AutoModel.from_pretrained(work / "backbone" / "audio_encoder")  # saved inside the model too
    assert all(torch.equal(p, q) for p, q in zip(model.audio_model.parameters(), encoder.parameters()))
    processor_config = json.loads((out / "crema-tiny" / "processor_config.json").read_text())
    assert processor_config["image_processor"]["size"] == {"height": 40, "width": 40}
    assert processor_config["feature_extractor"]["num_mel_bins"] == 32  # the AST's fbank
    assert [t["question"] for t in model.config.question_templates][:2] == [
        "What colour is the object?", "What shape is the object?"]
    for m in updates:  # each adapter trained with the given LoRA dropout
        assert json.loads((out / f"crema-tiny-{m}" / "adapter_config.json").read_text())["lora_dropout"] == 0.3
    # the ViT stage ran in a process of its own beside the audio encoder (--jobs 2); one after the other in one
    # process (--jobs 1) every stage trains the same weights bit for bit
    from safetensors.torch import load_file

    work_1, out_1 = tmp_path / "work-1", tmp_path / "out-1"
    again = run_recipe(work_1, out_1, "--jobs", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    weight_files = [("work", f"{stage}/model.safetensors") for stage in ("vision_encoder", "backbone/audio_encoder",
                                                                         "backbone")]
    weight_files += [("out", str(f.relative_to(out))) for f in out.glob("crema-tiny*/*.safetensors")]
    assert len(weight_files) == 3 + 1 + 6  # the stages, the model, its six adapters
    for root, name in weight_files:
        beside, alone = load_file(tmp_path / root / name), load_file(tmp_path / f"{root}-1" / name)
        assert beside.keys() == alone.keys() and all(torch.equal(beside[k], alone[k]) for k in alone), name


def test_a_failed_vision_stage_process_stops_the_recipe_and_names_it(tmp_path):
    """The ViT stage's own process (`--jobs 2`) failing, here on a work folder without processed data, is an error
    of the recipe that names the stage, not a silent wait or a missing folder later."""
    from crema_training.crema_tiny.recipe import finish_stage, start_vision_stage

    process = start_vision_stage(tmp_path, epochs=1, image_size=40, threads=1)
    with pytest.raises(RuntimeError, match="vision-stage process failed"):
        finish_stage(process)
    assert not (tmp_path / "vision_encoder").exists()


def test_audio_pretraining_tracks_are_labelled_by_what_they_sound_like():
    """The audio encoder's extra tracks: the AST's input shape, and each beeps / pitch label agrees with the bursts
    counted in its fbank and with the mel band they sit in (each band's noise floor, its median over time, taken off
    first, and the loudness smoothed over 5 frames: the tracks' noise floors differ by up to 32 dB)."""
    from crema_training.crema_tiny.audio_encoder import rendered_tracks
    from crema_training.crema_tiny.backbone import AUDIO_FRAMES, AUDIO_MEL_BINS, build_tokenizer
    from crema_training.crema_tiny.data import make_processor

    inputs, labels = rendered_tracks(make_processor(build_tokenizer()), 12, progress=False)
    assert inputs.shape == (12, 1, AUDIO_FRAMES, AUDIO_MEL_BINS) and torch.isfinite(inputs).all()
    peak_bands = {0: [], 1: []}  # high, low
    for fbank, (beeps, pitch) in zip(inputs, labels.tolist()):
        above_floor = fbank[0] - fbank[0].median(dim=0).values
        energy = torch.nn.functional.avg_pool1d(above_floor.max(dim=1).values[None], 5, stride=1, padding=2)[0]
        loud = energy > (energy.min() + energy.max()) / 2
        bursts = int(loud[0]) + int((loud[1:] & ~loud[:-1]).sum())
        assert bursts == beeps + 1
        peak_bands[pitch].append(int(above_floor[loud].mean(dim=0).argmax()))
    assert peak_bands[0] and peak_bands[1] and min(peak_bands[0]) > max(peak_bands[1])


def test_audio_encoder_stage_trains_the_encoder_alone_then_freezes_it():
    """The audio encoder learns a toy pitch (a loud band low or high in the fbank) and ends frozen; its labels come
    from the clip's scene."""
    from crema_training.crema_tiny.audio_encoder import audio_labels, pretrain_audio_encoder
    from crema_training.crema_tiny.backbone import AUDIO_FRAMES, AUDIO_MEL_BINS, build_audio_encoder

    assert audio_labels({"beeps": [[0.2, 0.1], [0.6, 0.1]], "pitch": "low"}) == (1, 1)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(48, 1, AUDIO_FRAMES, AUDIO_MEL_BINS, generator=generator) * 0.1
    labels = torch.zeros(48, 2, dtype=torch.long)
    labels[:, 1] = torch.arange(48) % 2
    for i in range(48):
        band = slice(20, 28) if labels[i, 1] == 0 else slice(2, 10)
        inputs[i, 0, 40:80, band] += 3.0
    encoder = build_audio_encoder()
    before = [p.clone() for p in encoder.parameters()]
    accuracy = pretrain_audio_encoder(encoder, (inputs[:32], labels[:32]), (inputs[32:], labels[32:]), epochs=15,
                                      batch_size=8, log=lambda _: None)
    assert accuracy["pitch"] == 1.0 and accuracy["beeps"] == 1.0  # every toy track has one beep
    assert any(not torch.equal(p, q) for p, q in zip(encoder.parameters(), before))
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
