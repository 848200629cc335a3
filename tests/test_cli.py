"""The `crema` console script."""

import shutil
import subprocess

import pytest

from crema_training.cli import main


def test_console_script_prints_the_paper_table():
    executable = shutil.which("crema")
    assert executable, "the `crema` console script is not installed (pip install -e .)"
    result = subprocess.run(
        [executable, "params", "--paper", "--modalities", "video,audio,flow,depth,normal"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.rsplit("  ", 1)[0].strip(): line.split()[-1] for line in result.stdout.splitlines()[3:]}
    assert lines["MMQA video"] == "3,961,600"
    assert lines["MMQA audio"] == "5,044,352"
    assert lines["fusion (5 modalities)"] == "16,779,264"
    assert lines["total trainable"] == "37,670,016"


def test_params_letters_and_no_fusion(capsys):
    assert main(["params", "--paper", "--modalities", "V,A"]) == 0
    out = capsys.readouterr().out
    assert "9,005,952" in out and "fusion" not in out


def test_params_from_saved_config(tmp_path, capsys):
    from tiny_models import tiny_crema_config

    tiny_crema_config(["video", "depth"], fusion=["video", "depth"]).save_pretrained(tmp_path)
    assert main(["params", "--config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MMQA depth" in out and "fusion (2 modalities)" in out


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"nope")
    assert main(["convert-reference", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "Could not read reference checkpoint" in capsys.readouterr().err


def test_missing_files_are_reported_without_traceback(tmp_path, capsys):
    assert main(["params", "--config", str(tmp_path / "missing")]) == 2
    assert main(["convert-reference", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "crema params: error:" in err and "missing.pth' does not exist" in err


def test_unknown_subcommand_exits():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
