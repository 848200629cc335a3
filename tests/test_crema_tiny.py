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
    assert lines[1] == "modalities used: video, flow, thermal"  # no depth / normal render given: left out, and said
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
    assert lines[1] == "modalities used: video, flow, depth, normal, thermal"
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
