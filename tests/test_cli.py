"""The `crema` command line: usage, fast help, option checks, one-line errors."""

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from crema_training import cli
from crema_training.cli import build_parser, main

HEAVY = ("torch", "transformers", "cv2", "numpy", "datasets", "modeling_crema", "crema_processing", "safetensors",
         "huggingface_hub", "peft", "av", "PIL")
HEAVY_CHECK = f"sys.modules and print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))"


def run_module(*args, env=None, cwd=None):
    """`python -m crema_training.cli ...` (works without the `crema` console script on PATH)."""
    return subprocess.run([sys.executable, "-m", "crema_training.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_module_prints_the_paper_table():
    result = run_module("params", "--paper", "--modalities", "video,audio,flow,depth,normal")
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


# ------------------------------------------------------------------------------------ usage, help, version
def test_bare_crema_prints_usage_and_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: crema")
    listed = [line.split()[0] for line in out.splitlines() if line[:4] == "    " and line[4:5] != " "]
    assert listed == ["params", "init", "answer", "convert-reference", "extract", "synth", "train", "dataset", "eval",
                      "push", "push-adapter"]


def test_bare_crema_as_a_process_exits_0():
    result = run_module()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: crema") and "convert-reference" in result.stdout


def test_help_imports_nothing_heavy():
    script = "import sys\nfrom crema_training.cli import build_parser\nbuild_parser()\n" + HEAVY_CHECK
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # `crema --help` and `crema answer --help` as the console script runs them: still nothing heavy at exit
    for args in (["--help"], ["answer", "--help"], []):
        script = (f"import atexit, sys\natexit.register(lambda: {HEAVY_CHECK})\n"
                  f"from crema_training.cli import main\nmain({args!r})")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", args


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"crema {version('crema-hf')}"


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help():
    for name, subparser in _subparsers(build_parser()).items():
        if name in cli.HEAVY_OPTIONS:
            continue
        options = [action for action in subparser._actions]
        assert len(options) > 1, name
        for action in options:
            assert action.help and action.help.strip(), f"crema {name} {action.option_strings or action.dest}"


def test_extract_options_have_help():
    parser = build_parser(load_options=["extract"])
    extract = _subparsers(parser)["extract"]
    assert any(action.dest == "depth_model" for action in extract._actions)
    for action in extract._actions:
        assert action.help and action.help.strip(), f"crema extract {action.option_strings or action.dest}"


def test_extract_options_are_read_when_extract_runs(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.mp4' does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- --modalities
@pytest.mark.parametrize("command", [
    ["params", "--paper"],
    ["init", "--blip2", "any", "--out", "out"],
    ["convert-reference", "ckpt.pth", "--out", "out"],
])
def test_unknown_modalities_are_refused(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--modalities", "V,X"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --modalities: unknown modality 'X'" in err
    for known in ("video", "audio", "flow", "depth", "normal", "point_cloud", "thermal", "touch", "V,A,F,D,N,P,T,H"):
        assert known in err


def test_modality_letters_names_and_duplicates():
    # the paper's Table 4: T touch map, H thermal heatmap
    assert cli.modality_list("V, a,Flow,point_cloud,H,t") == ["video", "audio", "flow", "point_cloud", "thermal", "touch"]
    with pytest.raises(argparse.ArgumentTypeError, match="'video' is listed twice"):
        cli.modality_list("video,V")
    with pytest.raises(argparse.ArgumentTypeError, match="no modality"):
        cli.modality_list(" , ")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown modality 'ir'"):
        cli.modality_list("video,ir")


# ------------------------------------------------------------------------------------------------- errors
def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "broken.pth").write_bytes(b"nope")
    assert main(["convert-reference", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "Could not read reference checkpoint" in capsys.readouterr().err


def test_missing_files_are_reported_without_traceback(tmp_path, capsys):
    assert main(["params", "--config", str(tmp_path / "missing")]) == 2
    assert main(["convert-reference", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"crema params: error: no such folder: {tmp_path / 'missing'}\n" in err
    assert "missing.pth' does not exist" in err


@pytest.mark.parametrize("command, path", [
    (["answer", "./no_such_model", "clip.mp4", "--question", "q"], "./no_such_model"),
    (["init", "--blip2", "./missing", "--out", "out"], "./missing"),
    (["init", "--blip2", "~/missing_blip2", "--out", "out"], "~/missing_blip2"),
    (["params", "--config", "missing_dir"], "missing_dir"),
    (["params", "--config", "a/b/c"], "a/b/c"),
    (["params", "--config", "some_folder/"], "some_folder/"),
])
def test_missing_local_paths_say_no_such_folder(command, path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    assert capsys.readouterr().err == f"crema {command[0]}: error: no such folder: {path}\n"
    assert not (tmp_path / "out").exists()


def test_hub_repo_that_cannot_be_loaded(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = run_module("params", "--config", "someone/crema-model", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "crema params: error: no local folder someone/crema-model, and the Hub repo someone/crema-model could not "
        "be loaded (offline? set HF_HUB_OFFLINE/HF token): "
    )
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_existing_folder_named_like_a_repo_id_is_used(tmp_path, monkeypatch, capsys):
    from tiny_models import tiny_crema_config

    tiny_crema_config(["video", "flow"]).save_pretrained(tmp_path / "someone" / "crema-model")
    monkeypatch.chdir(tmp_path)
    assert main(["params", "--config", "someone/crema-model"]) == 0
    assert "MMQA flow" in capsys.readouterr().out


def test_home_folder_paths_are_expanded(tmp_path, monkeypatch, capsys):
    from tiny_models import tiny_crema_config

    tiny_crema_config(["video", "depth"]).save_pretrained(tmp_path / "saved")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["params", "--config", "~/saved"]) == 0
    assert "MMQA depth" in capsys.readouterr().out


def test_params_modalities_not_in_the_saved_model(tmp_path, capsys):
    from tiny_models import tiny_crema_config

    tiny_crema_config(["video", "depth"]).save_pretrained(tmp_path)
    assert main(["params", "--config", str(tmp_path), "--modalities", "video,audio"]) == 2
    assert "--modalities audio: not in" in capsys.readouterr().err


def test_damaged_config_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "crema", ')
    assert main(["params", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crema params: error: ") and err.count("\n") == 1 and "config.json" in err


@pytest.mark.parametrize("error, expected", [
    (ModuleNotFoundError("No module named 'cv2'", name="cv2"),
     "missing optional package 'cv2': pip install opencv-python-headless"),
    (ModuleNotFoundError("No module named 'torchcodec.decoders'", name="torchcodec.decoders"),
     "missing optional package 'torchcodec': pip install torchcodec"),
    (json.JSONDecodeError("Expecting value", "{", 1), "a JSON file is damaged (Expecting value: line 1 column 2"),
    (OSError("first line\n  second line"), "first line second line"),
    (ValueError("bad input"), "bad input"),
])
def test_user_errors_are_one_line(error, expected, monkeypatch, capsys):
    def failing_run(args):
        raise error

    monkeypatch.setitem(cli.SUBCOMMANDS, "params", (cli.add_params_arguments, failing_run))
    assert main(["params", "--paper"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"crema params: error: {expected}") and err.count("\n") == 1


def test_damaged_safetensors_is_one_line(monkeypatch, capsys):
    from safetensors import SafetensorError

    def failing_run(args):
        raise SafetensorError("Error while deserializing header: HeaderTooLarge")

    monkeypatch.setitem(cli.SUBCOMMANDS, "params", (cli.add_params_arguments, failing_run))
    assert main(["params", "--paper"]) == 2
    assert capsys.readouterr().err == ("crema params: error: a safetensors file is damaged (Error while deserializing "
                                       "header: HeaderTooLarge); save or download it again\n")


def test_bugs_keep_their_traceback(monkeypatch):
    def failing_run(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.SUBCOMMANDS, "params", (cli.add_params_arguments, failing_run))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["params", "--paper"])


def test_unknown_subcommand_exits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
