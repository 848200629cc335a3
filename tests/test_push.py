"""Sharing (`crema push`, `crema push-adapter`, `crema_hub_cards.push_model` / `push_adapter`, the model's own
`push_to_hub` / `push_adapter_to_hub`): offline, with `HfApi` replaced by a recorder of what would be uploaded.
A dry run (`--local-dir`) writes exactly that upload; an adapter pushed to a folder loads back bit-exactly; bad input
is one line on stderr with exit status 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from crema_hub_cards import front_matter, push_adapter, push_model
from crema_hub_cards.push import MODEL_OWNED_PATTERNS
from crema_training.cli import main
from modeling_crema.adapters import adapter_state_dict
from tiny_models import randomize_lora_b, tiny_crema_model


class FakeHfApi:
    """Records `create_repo` and `upload_folder` calls and the uploaded folder's files (name -> bytes)."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, {"private": private, "exist_ok": exist_ok,
                                                         "token": self.token, **kwargs}))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, commit_message=None, **kwargs):
        FakeHfApi.calls.append(("upload_folder", repo_id, {"files": files_of(folder_path),
                                                           "commit_message": commit_message, **kwargs}))
        return f"https://huggingface.co/{repo_id}/commit/abc"


@pytest.fixture
def hub(monkeypatch):
    FakeHfApi.calls = []
    monkeypatch.setattr("huggingface_hub.HfApi", FakeHfApi)
    return FakeHfApi


def files_of(folder) -> dict[str, bytes]:
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source():
    """A tiny CREMA whose thermal adapter and fusion are not at their initial values."""
    model = tiny_crema_model(["video", "thermal"], fusion=["video", "thermal"])
    randomize_lora_b(model, seed=4)
    with torch.no_grad():
        model.mmqa["thermal"].modules_to_save["thermal"].query_tokens.weight.add_(0.5)
    return model


@pytest.fixture
def model_dir(tmp_path, source):
    source.save_pretrained(tmp_path / "crema")
    return tmp_path / "crema"


# ------------------------------------------------------------------------------------------------ whole models
def test_push_model_uploads_exactly_what_the_dry_run_writes(hub, model_dir, tmp_path):
    pushed = push_model(model_dir, "org/crema", private=True, token="t")
    (create, repo, options), (upload, upload_repo, upload_options) = hub.calls
    assert (create, repo, options["private"], options["exist_ok"], options["token"]) == (
        "create_repo", "org/crema", True, True, "t")
    assert (upload, upload_repo, upload_options["delete_patterns"]) == ("upload_folder", "org/crema",
                                                                         MODEL_OWNED_PATTERNS)
    uploaded = upload_options["files"]
    assert pushed.url == "https://huggingface.co/org/crema/commit/abc"
    assert sorted(uploaded) == pushed.files
    on_disk = files_of(model_dir)
    assert set(uploaded) == set(on_disk)  # the folder's files, README.md regenerated for the repo
    assert all(uploaded[name] == on_disk[name] for name in on_disk if name != "README.md")
    assert 'AutoModel.from_pretrained("org/crema", trust_remote_code=True)' in uploaded["README.md"].decode()

    dry = push_model(model_dir, "org/crema", local_dir=tmp_path / "out")
    assert dry.local_dir == str(tmp_path / "out") and files_of(tmp_path / "out") == uploaded
    assert len(hub.calls) == 2  # the dry run uploaded nothing


def test_push_cli_uploads_with_the_given_options(hub, model_dir, capsys):
    assert main(["push", str(model_dir), "--repo-id", "org/crema", "--private", "--token", "t",
                 "--commit-message", "v2"]) == 0
    (_, _, created), (_, _, uploaded) = hub.calls
    assert (created["private"], created["token"], uploaded["commit_message"]) == (True, "t", "v2")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == (f"Pushed {len(uploaded['files'])} files to https://huggingface.co/org/crema "
                          "(https://huggingface.co/org/crema/commit/abc):")
    assert main(["push", str(model_dir), "--repo-id", "org/crema"]) == 0
    assert hub.calls[-2][2]["private"] is None  # without --private the Hub's default applies


def test_hidden_leftovers_and_caches_are_not_uploaded(hub, model_dir):
    (model_dir / "adapters" / ".thermal.saving-x1").mkdir()  # left by an interrupted adapter save
    (model_dir / "adapters" / ".thermal.saving-x1" / "adapter_model.safetensors").write_bytes(b"partial")
    (model_dir / ".notes.swp").write_text("editor")
    (model_dir / "__pycache__").mkdir()
    (model_dir / "__pycache__" / "modeling_crema.cpython-311.pyc").write_bytes(b"pyc")
    (model_dir / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    push_model(model_dir, "org/crema")
    files = hub.calls[-1][2]["files"]
    assert ".gitattributes" in files
    assert not [name for name in files if ".saving-" in name or name.endswith((".swp", ".pyc"))]


def test_push_cli_dry_run_with_eval_results(model_dir, tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"accuracy": 71.5}))
    out = tmp_path / "out"
    assert main(["push", str(model_dir), "--repo-id", "org/crema", "--local-dir", str(out), "--eval-results",
                 str(results), "--eval-dataset", "org/crema-synth", "--license", "bsd-3-clause"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Wrote the {len(files_of(out))} files a push to org/crema would upload into {out}:"
    assert "  README.md" in printed and "  adapters/thermal/adapter_model.safetensors" in printed
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "bsd-3-clause"
    assert meta["model-index"][0]["results"][0]["metrics"] == [{"type": "accuracy", "value": 71.5}]
    assert not (model_dir / "README.md").read_text().count("model-index")  # the source folder is untouched


def test_model_push_to_hub_uploads_the_generated_card(hub, source):
    url = source.push_to_hub("org/crema-tiny", token="t")
    assert url.endswith("/commit/abc")
    files = hub.calls[-1][2]["files"]
    assert {"config.json", "model.safetensors", "adapters/thermal/adapter_model.safetensors", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert 'AutoModel.from_pretrained("org/crema-tiny", trust_remote_code=True)' in card
    assert front_matter(card)["crema"]["modalities"] == ["video", "thermal"]


def test_a_users_card_is_uploaded_as_it_is(hub, model_dir, capsys):
    (model_dir / "README.md").write_text("# mine\n")
    push_model(model_dir, "org/crema")
    assert hub.calls[-1][2]["files"]["README.md"] == b"# mine\n"
    assert main(["push", str(model_dir), "--repo-id", "org/crema", "--eval-results", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crema push: error: ") and "README.md is your own card" in err and "--eval-results" in err


# ---------------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("from_model_folder", [True, False], ids=["model-folder", "adapter-folder"])
def test_pushed_adapter_loads_back_bit_exactly(from_model_folder, source, model_dir, tmp_path, capsys):
    if from_model_folder:
        argv = ["push-adapter", str(model_dir), "--modality", "thermal"]
    else:
        source.save_adapter(tmp_path / "thermal", "thermal")
        argv = ["push-adapter", str(tmp_path / "thermal")]
    out = tmp_path / "pushed"
    assert main([*argv, "--repo-id", "org/crema-thermal", "--local-dir", str(out)]) == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert front_matter((out / "README.md").read_text())["library_name"] == "peft"
    target = tiny_crema_model(["video"])  # same frozen backbone (same seed), no thermal adapter
    assert target.load_adapter(str(out)) == "thermal"
    pushed, original = adapter_state_dict(target, "thermal"), adapter_state_dict(source, "thermal")
    assert pushed.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(pushed[key], value), key
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith(("mmqa.", "fusion."))
                and ".lora_" not in k}
    state = target.state_dict()
    for key, value in backbone.items():
        assert torch.equal(state[key], value), key


def test_push_adapter_uploads_the_adapter_and_its_card(hub, model_dir):
    pushed = push_adapter(model_dir, "org/crema-thermal", modality="thermal", base_model="org/crema")
    files = hub.calls[-1][2]["files"]
    assert sorted(files) == pushed.files == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert files[name] == (model_dir / "adapters" / "thermal" / name).read_bytes()
    meta = front_matter(files["README.md"].decode())
    assert (meta["base_model"], meta["crema"]["modality"]) == ("org/crema", "thermal")
    assert "delete_patterns" not in hub.calls[-1][2]


def test_model_push_adapter_to_hub_uploads_the_card(hub, source):
    assert source.push_adapter_to_hub("user/crema-thermal", "thermal", token="t").endswith("/commit/abc")
    files = hub.calls[-1][2]["files"]
    assert sorted(files) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert 'model.load_adapter("user/crema-thermal", adapter_name="thermal")' in files["README.md"].decode()


# ------------------------------------------------------------------------------------------------- bad input
def _damage(folder: Path) -> Path:
    weights = folder / "adapters" / "thermal" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return weights


def _crema_bad(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(model_dir, tmp_path, capsys, hub):
    repo = ["--repo-id", "org/x"]
    missing = tmp_path / "missing"
    assert _crema_bad(["push", str(missing), *repo], capsys) == f"crema push: error: no such folder: {missing}"
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "model_type 'bert', not 'crema'" in _crema_bad(["push", str(other), *repo], capsys)
    assert "neither config.json nor adapter_config.json" in _crema_bad(["push-adapter", str(tmp_path), *repo], capsys)
    assert _crema_bad(["push-adapter", str(model_dir), "--modality", "depth", *repo], capsys) == (
        f"crema push-adapter: error: --modality depth: {model_dir} has no depth adapter (it has video, thermal)")
    assert "name the adapter to push with --modality (it has video, thermal)" in _crema_bad(
        ["push-adapter", str(model_dir), *repo], capsys)
    assert "is not a Hub repo id" in _crema_bad(["push", str(model_dir), "--repo-id", "a b"], capsys)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert "already exists and is not an empty folder" in _crema_bad(
        ["push", str(model_dir), *repo, "--local-dir", str(tmp_path / "full")], capsys)
    assert "no such file" in _crema_bad(["push", str(model_dir), *repo, "--eval-results", str(missing)], capsys)
    assert hub.calls == []  # nothing was created or uploaded


def test_damaged_files_are_named_and_nothing_is_written(model_dir, tmp_path, capsys, hub):
    weights = _damage(model_dir)
    out = tmp_path / "out"
    for argv in (["push", str(model_dir)], ["push-adapter", str(model_dir), "--modality", "thermal"]):
        line = _crema_bad([*argv, "--repo-id", "org/x", "--local-dir", str(out)], capsys)
        assert str(weights) in line and "damaged" in line
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    (model_dir / "config.json").write_text("{broken")
    line = _crema_bad(["push", str(model_dir), "--repo-id", "org/x"], capsys)
    assert str(model_dir / "config.json") in line and "not valid JSON" in line
    assert hub.calls == []


def test_damage_is_found_from_the_header_without_modeling_crema(model_dir, tmp_path, monkeypatch, capsys):
    """Where modeling_crema is not importable, the safetensors header (size, offsets) still tells a truncated file."""
    monkeypatch.setattr("crema_hub_cards.folder_facts._checked_by_modeling_crema", lambda kind, folder: None)
    weights = _damage(model_dir)
    line = _crema_bad(["push", str(model_dir), "--repo-id", "org/x", "--local-dir", str(tmp_path / "out")], capsys)
    assert str(weights) in line and "truncated or damaged" in line


def test_a_bit_flip_is_caught_by_modeling_cremas_checked_reading(source, tmp_path, capsys):
    source.save_adapter(tmp_path / "thermal", "thermal")
    weights = tmp_path / "thermal" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # the header still parses; only the checksum can tell
    weights.write_bytes(bytes(data))
    line = _crema_bad(["push-adapter", str(tmp_path / "thermal"), "--repo-id", "org/x", "--local-dir",
                       str(tmp_path / "out")], capsys)
    assert str(weights) in line and "checksum" in line


def test_modality_must_match_an_adapter_folder(source, tmp_path, capsys):
    source.save_adapter(tmp_path / "thermal", "thermal")
    line = _crema_bad(["push-adapter", str(tmp_path / "thermal"), "--modality", "touch", "--repo-id", "org/x"], capsys)
    assert "holds the thermal adapter" in line and "adapter_name='touch'" in line
