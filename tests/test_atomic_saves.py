"""Saves are atomic: at every instant the folder holds the complete old save or the complete new one (or a state
the next load or save repairs and reports), a save replaces the model's files, and leftovers are cleaned.

Each interrupted save writes *different* content over an earlier save, so a save that wrote in place would leave a
mixture and fail these tests.
"""

import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers.utils import logging

from modeling_crema import CremaForConditionalGeneration
from modeling_crema import saving
from tiny_models import modality_inputs, randomize_lora_b, text_inputs, tiny_crema_model


def _model(seed, fusion=True):
    names = ["video", "depth"]
    model = tiny_crema_model(names, fusion=names if fusion else None, seed=seed)
    randomize_lora_b(model, seed=seed + 10)
    return model


@pytest.fixture(scope="module")
def old_and_new():
    return _model(seed=1), _model(seed=2)


def _logits(model, tokenizer):
    batch = {**modality_inputs(model.config), **text_inputs(tokenizer)}
    return model(**batch).logits


def _loads_as(folder, expected, tokenizer):
    loaded = CremaForConditionalGeneration.from_pretrained(folder).eval()
    return torch.equal(_logits(loaded, tokenizer), _logits(expected, tokenizer))


def _hidden_leftovers(parent):
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


def test_crash_while_writing_keeps_the_complete_old_save(old_and_new, tmp_path, tokenizer, monkeypatch):
    old, new = old_and_new
    target = tmp_path / "crema"
    old.save_pretrained(target)

    def power_cut(*args, **kwargs):  # after the base and the adapters of the new save were written
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(CremaForConditionalGeneration, "save_fusion", power_cut)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(target)
    monkeypatch.undo()
    assert _loads_as(target, old, tokenizer)
    assert not _loads_as(target, new, tokenizer)
    assert _hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("crash_after_renames, expected", [(1, "old"), (2, "new")])
def test_crash_between_renames_is_recovered_by_the_next_load(
    old_and_new, tmp_path, tokenizer, monkeypatch, crash_after_renames, expected, caplog
):
    """Where the one-step swap is unavailable, the fallback renames the complete new save to `.ready-*`, moves the
    old one aside, then renames the new one into place. A crash before the old one moved keeps the old save; a
    crash after it leaves no folder at the target, and the next load completes the new save and says so."""
    old, new = old_and_new
    target = tmp_path / "crema"
    old.save_pretrained(target)
    monkeypatch.setattr(saving, "_exchange_paths", lambda first, second: False)
    real_rename, calls = os.rename, []

    def rename_then_crash(source, destination):
        if os.path.dirname(os.fspath(destination)) == str(tmp_path):  # the swap of the model folder itself
            calls.append((source, destination))
        if len(calls) > crash_after_renames:
            raise KeyboardInterrupt("killed between renames")
        real_rename(source, destination)

    monkeypatch.setattr(saving.os, "rename", rename_then_crash)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(target)
    monkeypatch.undo()
    # after the old save moved aside, nothing is at the target: the instant a plain two-rename swap loses data
    assert target.exists() == (expected == "old")

    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            assert _loads_as(target, old if expected == "old" else new, tokenizer)
    finally:
        logging.disable_propagation()
    assert ("completed it" in caplog.text) == (expected == "new")
    assert _hidden_leftovers(tmp_path) == []


def test_killed_save_leaves_a_staging_folder_that_the_next_save_removes(old_and_new, tmp_path, tokenizer):
    old, new = old_and_new
    target = tmp_path / "crema"
    old.save_pretrained(target)
    # a process killed (no cleanup code runs) while writing its adapters
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import modeling_crema.adapters as adapters
        from tiny_models import tiny_crema_model
        real = adapters.save_file
        def save_then_die(*args, **kwargs):
            real(*args, **kwargs)
            os._exit(9)
        adapters.save_file = save_then_die
        tiny_crema_model(["video", "depth"], fusion=["video", "depth"], seed=2).save_pretrained({str(target)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 9, result.stderr[-2000:]
    leftovers = _hidden_leftovers(tmp_path)
    assert len(leftovers) == 1 and ".saving-" in leftovers[0]
    assert _loads_as(target, old, tokenizer)  # the killed save changed nothing that was saved

    new.save_pretrained(target)
    assert _hidden_leftovers(tmp_path) == []
    assert _loads_as(target, new, tokenizer)


def test_sharded_save_over_a_single_file_save_leaves_no_stale_backbone(tmp_path, tokenizer):
    target = tmp_path / "crema"
    _model(seed=1).save_pretrained(target)
    assert (target / "model.safetensors").exists()
    other_backbone = _model(seed=2)
    other_backbone.save_pretrained(target, max_shard_size="100KB")
    assert not (target / "model.safetensors").exists()
    assert (target / "model.safetensors.index.json").exists()
    assert _loads_as(target, other_backbone, tokenizer)


def test_save_without_fusion_removes_the_old_fusion_and_adapters(tmp_path, tokenizer):
    target = tmp_path / "crema"
    _model(seed=1).save_pretrained(target)
    assert (target / "fusion").is_dir()
    video_only = tiny_crema_model(["video"], seed=3)
    video_only.save_pretrained(target)
    assert not (target / "fusion").exists()
    assert sorted(os.listdir(target / "adapters")) == ["video"]
    assert _loads_as(target, video_only, tokenizer)


def test_files_of_others_in_the_folder_survive_a_re_save(tmp_path, tokenizer):
    """A processor (or tokenizer, or card) saved beside the model is not the model's to delete."""
    target = tmp_path / "crema"
    _model(seed=1).save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "README.md").write_text("my notes")
    before = sorted(os.listdir(target))
    _model(seed=2).save_pretrained(target)
    assert sorted(os.listdir(target)) == before
    assert (target / "README.md").read_text() == "my notes"


def test_saved_folder_has_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        tiny_crema_model(["video"]).save_adapter(tmp_path / "video", "video")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "video").st_mode) == 0o755


def test_adapter_re_save_replaces_the_whole_folder(tmp_path):
    folder = tmp_path / "thermal"
    model = tiny_crema_model(["video", "thermal"])
    model.save_adapter(folder, "thermal")
    (folder / "stale.bin").write_bytes(b"old")
    model.save_adapter(folder, "thermal")
    assert sorted(os.listdir(folder)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
