"""`crema dataset`: a benchmark built from its official files and saved as a split of a DatasetDict folder, which
`crema train` and `crema eval` read; splits added one at a time, atomically."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from crema_training.benchmark_datasets import build_benchmark
from crema_training.cli import main
from test_benchmark_datasets import touch_files

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
NEXTQA_CSV = FIXTURES / "nextqa" / "val.csv"
CLIPS = ("1025/4010069381.mp4", "1025/4882821564.mp4", "0031/2834146886.mp4", "0031/6329077812.mp4")


def build(out, media, *extra):
    return main(["dataset", "nextqa", "--annotations", str(NEXTQA_CSV), "--media-root", str(media), "--out", str(out),
                 *extra])


def test_splits_are_added_one_at_a_time_and_hold_the_builders_rows(tmp_path, capsys):
    media = touch_files(tmp_path / "NExTVideo", *CLIPS)
    out = tmp_path / "nextqa"
    assert build(out, media) == 0
    assert "saved 4 nextqa questions as split 'train'" in capsys.readouterr().out
    assert build(out, media, "--as-split", "test") == 0
    assert "(splits: train, test)" in capsys.readouterr().out
    saved = datasets.load_from_disk(str(out))
    expected = build_benchmark("nextqa", NEXTQA_CSV, media_root=media)
    assert sorted(saved) == ["test", "train"]
    for split in ("train", "test"):
        assert saved[split].to_list() == expected.to_list()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nextqa.")]  # no staging leftovers


def test_an_existing_split_is_kept_unless_overwrite(tmp_path, capsys):
    media = touch_files(tmp_path / "NExTVideo", *CLIPS)
    out = tmp_path / "nextqa"
    assert build(out, media) == 0
    fewer = touch_files(tmp_path / "Fewer", *CLIPS[:2])
    assert build(out, fewer) == 2
    assert "already has the split 'train' (4 questions): pass --overwrite" in capsys.readouterr().err
    assert len(datasets.load_from_disk(str(out))["train"]) == 4
    assert build(out, fewer, "--overwrite") == 0
    output = capsys.readouterr().out
    assert "(skipped 2 whose media files are missing" in output  # missing media: counted and reported
    assert "saved 2 nextqa questions" in output
    assert datasets.load_from_disk(str(out))["train"]["id"] == ["4010069381_6", "4882821564_1"]


def test_an_interrupted_save_leaves_the_folder_as_it_was(tmp_path, monkeypatch, capsys):
    media = touch_files(tmp_path / "NExTVideo", *CLIPS)
    out = tmp_path / "nextqa"
    assert build(out, media) == 0
    real_save = datasets.DatasetDict.save_to_disk

    def save_then_fail(self, path, **kwargs):
        real_save(self, path, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_then_fail)
    assert build(out, media, "--as-split", "test") == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert list(datasets.load_from_disk(str(out))) == ["train"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nextqa.")]


def test_bad_targets_and_files_are_one_clear_error(tmp_path, capsys):
    media = touch_files(tmp_path / "NExTVideo", *CLIPS[:3])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    assert build(other, media) == 2
    assert "is not a DatasetDict saved with save_to_disk" in capsys.readouterr().err
    assert (other / "readme.txt").read_text() == "mine"

    assert build(tmp_path / "out", media, "--on-missing", "error") == 2
    assert "val.csv, line 5" in capsys.readouterr().err
    assert build(tmp_path / "out", media, "--root", "thermal=x") == 2
    assert "--root thermal: nextqa reads" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
