"""Hub cards (`crema_hub_cards`): the model, adapter and Space cards' YAML metadata parses back to exactly the fields
meant (expected values written here from the model's config and `parameter_report`), evaluation results round-trip
through `model-index`, the Hub's rules are checked offline, saves write cards and keep a user's README.md, and the
remote code saves without the package (no card)."""

from __future__ import annotations

import json
from pathlib import Path
import sys

import pytest
from huggingface_hub import EvalResult, ModelCard, SpaceCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import crema_hub_cards
from crema_hub_cards import (
    adapter_card,
    eval_results_from,
    front_matter,
    is_generated_card,
    model_card,
    space_card,
    write_space_readme,
)
from crema_hub_cards.hub_rules import check_model_metadata, check_space_metadata
from crema_training.metrics import accuracy_summary
from modeling_crema.parameter_report import trainable_parameter_rows
from tiny_models import VISION_WIDTH, tiny_crema_model

BLIP2 = "Salesforce/blip2-flan-t5-xl"
BASE_TAGS = ["crema", "video-question-answering", "multimodal", "peft", "lora"]
PAPER_TAG = "arxiv:2402.05889"


def _meta(path) -> dict:
    return front_matter(path.read_text(encoding="utf-8"))


def _rows(model) -> dict[str, int]:
    return dict(trainable_parameter_rows(model))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny three-modality CREMA with the fusion, saved (with its card)."""
    model = tiny_crema_model(["video", "thermal", "depth"], fusion=["video", "thermal", "depth"])
    folder = tmp_path_factory.mktemp("cards") / "crema"
    model.save_pretrained(folder)
    return model, folder


# ------------------------------------------------------------------------------------------------- model card
def test_save_pretrained_writes_the_model_card(saved):
    model, folder = saved
    config, rows = model.config, _rows(model)
    expected = {
        "library_name": "transformers",
        "pipeline_tag": "video-text-to-text",
        "tags": [*BASE_TAGS, *config.modality_names, PAPER_TAG],
        "crema": {
            "modalities": ["video", "thermal", "depth"],
            "fusion_modalities": config.fusion_modalities,
            "trainable_parameters": {"video": rows["MMQA video"], "thermal": rows["MMQA thermal"],
                                     "depth": rows["MMQA depth"], "fusion": rows["fusion (3 modalities)"],
                                     "total": rows["total trainable"]},
            "frozen_parameters": rows["frozen backbone"],
        },
    }
    card_path = folder / "README.md"
    assert _meta(card_path) == expected
    assert ModelCard.load(card_path).data.to_dict() == expected  # huggingface_hub reads the same metadata
    text = card_path.read_text()
    assert is_generated_card(text)
    assert 'AutoModel.from_pretrained("crema", trust_remote_code=True)' in text
    saved_config = json.loads((folder / "config.json").read_text())
    assert ('pipeline(model="crema", trust_remote_code=True)' in text) == bool(saved_config.get("custom_pipelines"))
    assert f"| MMQA thermal | {rows['MMQA thermal']:,} | `adapters/thermal/` |" in text
    assert not (folder / "adapters" / "thermal" / "README.md").exists()  # the model card covers its adapters


def test_model_card_options_base_model_datasets_license_and_repo(saved):
    _, folder = saved
    card = model_card(folder, repo_id="org/crema-tiny", base_model=BLIP2, license="bsd-3-clause",
                      datasets=["org/crema-synth"])
    meta = front_matter(str(card))
    assert (meta["base_model"], meta["license"], meta["datasets"]) == (BLIP2, "bsd-3-clause", ["org/crema-synth"])
    assert 'AutoModel.from_pretrained("org/crema-tiny", trust_remote_code=True)' in str(card)
    assert "model-index" not in meta


def test_base_model_is_the_blip2_hub_id_the_adapters_record(tmp_path, monkeypatch):
    model = tiny_crema_model(["video", "flow"])
    for name in model.config.modality_names:  # what `from_blip2("Salesforce/...")` records in every adapter config
        model.peft_config[name].base_model_name_or_path = BLIP2
    model.save_pretrained(tmp_path / "hub")
    assert _meta(tmp_path / "hub" / "README.md")["base_model"] == BLIP2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "blip2").mkdir(parents=True)
    for recorded in ("models/blip2", str(tmp_path / "models" / "blip2")):
        # a local BLIP-2 folder (even one named like a repo id) says nothing to a card's reader: left out
        for name in model.config.modality_names:
            model.peft_config[name].base_model_name_or_path = recorded
        model.save_pretrained(tmp_path / "local")
        assert "base_model" not in _meta(tmp_path / "local" / "README.md"), recorded


# ---------------------------------------------------------------------------------------- evaluation results
def _crema_eval_json(path):
    """What `crema eval` writes (`evaluate.evaluate`), with a summary from `accuracy_summary` on four NExT-QA
    questions: CH right, CW wrong, TN right, TP right."""
    records = [{"question_type": t, "correct": {"paper": ok, "strict": ok}, "prediction": "", "answer": ""}
               for t, ok in (("CH", True), ("CW", False), ("TN", True), ("TP", True))]
    result = {"model": "crema", "dataset": {"name": "nextqa", "title": "NExT-QA", "source": "/data/val.csv",
                                            "kind": "annotations", "num_examples": 4, "build": None},
              "settings": {}, "summary": accuracy_summary(records, "nextqa"), "predictions": []}
    path.write_text(json.dumps(result))
    return path


#: By hand from the four questions above: 3 of 4 right; Causal How 1/1, Why 0/1; Temporal P.&N. 2/2.
EXPECTED_NEXTQA = [
    ("accuracy", "Accuracy (paper metric)", 75.0),
    ("exact_match", "Exact match", 75.0),
    ("accuracy", "Accuracy (Causal How)", 100.0),
    ("accuracy", "Accuracy (Causal Why)", 0.0),
    ("accuracy", "Accuracy (Causal Avg.)", 50.0),
    ("accuracy", "Accuracy (Temporal P.&N.)", 100.0),
    ("accuracy", "Accuracy (Temporal Avg.)", 100.0),
]


def test_crema_eval_results_round_trip_through_the_model_index(saved, tmp_path):
    _, folder = saved
    path = _crema_eval_json(tmp_path / "crema-eval-nextqa.json")
    card = model_card(folder, repo_id="org/crema", eval_results=path)
    name, results = model_index_to_eval_results(front_matter(str(card))["model-index"])
    assert name == "crema"
    assert [(r.metric_type, r.metric_name, r.metric_value) for r in results] == EXPECTED_NEXTQA
    assert {(r.task_type, r.dataset_type, r.dataset_name) for r in results} == {
        ("video-text-to-text", "nextqa", "NExT-QA")}
    assert results == eval_results_from(path)  # EvalResult -> YAML -> EvalResult is the identity
    assert ModelCard(str(card)).data.eval_results == results
    assert "| NExT-QA | Accuracy (paper metric) | 75.0 |" in str(card)


def test_plain_metrics_need_their_dataset(saved, tmp_path):
    _, folder = saved
    card = model_card(folder, eval_results={"accuracy": 72.0, "f1": 0.5}, eval_dataset="org/crema-synth")
    _, results = model_index_to_eval_results(front_matter(str(card))["model-index"])
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in results] == [
        ("org/crema-synth", "accuracy", 72.0), ("org/crema-synth", "f1", 0.5)]
    with pytest.raises(ValueError, match="needs the dataset it was measured on.*--eval-dataset"):
        model_card(folder, eval_results={"accuracy": 72.0})
    with pytest.raises(ValueError, match="metric 'accuracy' must be a finite number"):
        eval_results_from({"accuracy": "high"}, dataset="x")
    with pytest.raises(ValueError, match="must be a finite number"):
        eval_results_from({"accuracy": float("nan")}, dataset="x")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: the evaluation results are not valid JSON"):
        eval_results_from(bad)


def test_given_eval_result_objects_are_kept_as_they_are(saved):
    _, folder = saved
    given = [EvalResult(task_type="video-text-to-text", dataset_type="nextqa", dataset_name="NExT-QA",
                        metric_type="accuracy", metric_value=61.5, dataset_split="val")]
    card = model_card(folder, eval_results=given, model_name="crema-xl")
    assert model_index_to_eval_results(front_matter(str(card))["model-index"]) == ("crema-xl", given)


# ----------------------------------------------------------------------------------------------- adapter card
def test_save_adapter_writes_the_adapter_card(tmp_path):
    model = tiny_crema_model(["video", "thermal"])
    model.peft_config["thermal"].base_model_name_or_path = BLIP2
    model.save_adapter(tmp_path / "thermal", "thermal")
    expected = {
        "base_model": BLIP2,
        "library_name": "peft",
        "pipeline_tag": "video-text-to-text",
        "tags": [*BASE_TAGS, "thermal", PAPER_TAG],
        "crema": {"modality": "thermal", "encoder": model.config.modality("thermal")["encoder"],
                  "feature_size": VISION_WIDTH, "lora_rank": model.config.lora_rank,
                  "trainable_parameters": _rows(model)["MMQA thermal"]},
    }
    card_path = tmp_path / "thermal" / "README.md"
    assert _meta(card_path) == expected
    assert ModelCard.load(card_path).data.to_dict() == expected
    text = card_path.read_text()
    assert f'from_blip2("{BLIP2}", modalities=[])' in text
    assert 'model.load_adapter("thermal", adapter_name="thermal")' in text


def test_adapter_card_of_a_crema_model_repo_with_results(tmp_path):
    model = tiny_crema_model(["video", "thermal"])
    model.save_adapter(tmp_path / "thermal", "thermal")
    card = adapter_card(tmp_path / "thermal", repo_id="org/crema-thermal", base_model="org/crema",
                        datasets=["org/thermal-qa"], eval_results={"accuracy": 60.25})
    meta = front_matter(str(card))
    assert (meta["base_model"], meta["datasets"], meta["library_name"]) == ("org/crema", ["org/thermal-qa"], "peft")
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "crema-thermal"
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in results] == [("org/thermal-qa", "accuracy", 60.25)]
    assert 'AutoModel.from_pretrained("org/crema", trust_remote_code=True)' in str(card)
    assert 'model.load_adapter("org/crema-thermal", adapter_name="thermal")' in str(card)


# ------------------------------------------------------------------------------------- the Hub's rules, offline
def test_cards_with_what_the_hub_refuses_are_not_written(saved):
    _, folder = saved
    with pytest.raises(ValueError, match="card field base_model: 'not a repo!' is not a Hub repo id"):
        model_card(folder, base_model="not a repo!")
    with pytest.raises(ValueError, match="card field datasets"):
        model_card(folder, datasets=["a/b/c"])
    with pytest.raises(ValueError, match="pipeline_tag: 'video-question-answering' is not one of the Hub's"):
        check_model_metadata({"library_name": "transformers", "pipeline_tag": "video-question-answering"})
    with pytest.raises(ValueError, match="library_name"):
        check_model_metadata({"library_name": "crema"})


def test_a_card_whose_text_does_not_say_what_was_meant_is_refused():
    from huggingface_hub import ModelCardData

    from crema_hub_cards import checked_card

    meant = ModelCardData(library_name="peft", tags=["crema"])
    checked_card(ModelCard(f"---\n{meant.to_yaml()}\n---\ntext"), meant)
    with pytest.raises(ValueError, match="does not parse back to its metadata"):
        checked_card(ModelCard("---\nlibrary_name: peft\ntags:\n- other\n---\ntext"), meant)
    result = EvalResult(task_type="video-text-to-text", dataset_type="d", dataset_name="D", metric_type="accuracy",
                        metric_value=1.0)
    meant = ModelCardData(library_name="peft", eval_results=[result], model_name="m")
    other = ModelCardData(library_name="peft", model_name="m", eval_results=[
        EvalResult(**{**result.__dict__, "metric_value": 2.0})])
    with pytest.raises(ValueError, match="does not parse back"):
        checked_card(ModelCard(f"---\n{other.to_yaml()}\n---\ntext"), meant)


# ------------------------------------------------------------------------------------------------- Space card
def test_space_card_metadata():
    card = space_card(["org/crema", "org/crema-thermal"], sdk_version="5.9.1", license="bsd-3-clause")
    expected = {
        "title": "CREMA video QA", "sdk": "gradio", "sdk_version": "5.9.1", "app_file": "app.py",
        "license": "bsd-3-clause", "models": ["org/crema", "org/crema-thermal"],
        "tags": ["crema", "video-question-answering"], "emoji": "🎬", "colorFrom": "indigo", "colorTo": "purple",
        "pinned": False, "short_description": "Ask about a clip: video, flow, depth, thermal...",
    }
    assert front_matter(str(card)) == expected
    assert SpaceCard(str(card)).data.to_dict() == expected


def test_the_shipped_space_readme_carries_the_generated_card():
    """spaces_demo/README.md's front matter is what `space_card` writes for crema-tiny's Space (regenerate it with
    `python -m crema_hub_cards space-readme spaces_demo/README.md --model crema-hf/crema-tiny`)."""
    shipped = Path(__file__).resolve().parents[1] / "spaces_demo" / "README.md"
    assert _meta(shipped) == front_matter(str(space_card(["crema-hf/crema-tiny"])))


def test_space_card_sdk_version_defaults_to_gradio_or_the_documented_constant(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # not importable
    assert front_matter(str(space_card(["org/crema"])))["sdk_version"] == crema_hub_cards.DEFAULT_GRADIO_VERSION
    monkeypatch.setitem(sys.modules, "gradio", type(sys)("gradio"))
    sys.modules["gradio"].__version__ = "4.44.1"
    assert front_matter(str(space_card(["org/crema"])))["sdk_version"] == "4.44.1"


@pytest.mark.parametrize("options, message", [
    ({"color_from": "orange"}, "colorFrom"),
    ({"emoji": "ok"}, "emoji"),
    ({"short_description": "x" * 61}, "at most 60 characters"),
    ({"sdk_version": "latest"}, "sdk_version"),
    ({"app_file": "/abs/app.txt"}, "app_file"),
])
def test_space_card_refuses_what_the_spaces_reference_does_not_allow(options, message):
    with pytest.raises(ValueError, match=message):
        space_card(["org/crema"], **{"sdk_version": "5.9.1", **options})
    with pytest.raises(ValueError, match="models"):
        space_card(["not a repo"], sdk_version="5.9.1")
    assert check_space_metadata(front_matter(str(space_card([], sdk_version="5.9.1")))) is None


def test_write_space_readme_rewrites_only_the_front_matter(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("---\ntitle: Old\nsdk: gradio\n---\n\n# My Space\n\nHow to use it.\n")
    write_space_readme(readme, models=["org/crema"], sdk_version="5.9.1")
    text = readme.read_text()
    assert text.endswith("\n# My Space\n\nHow to use it.\n")
    assert front_matter(text)["models"] == ["org/crema"] and front_matter(text)["title"] == "CREMA video QA"
    fresh = tmp_path / "new" / "README.md"
    write_space_readme(fresh, models=["org/crema"], sdk_version="5.9.1")
    assert "# CREMA video QA" in fresh.read_text()


def test_space_readme_command_line(tmp_path, capsys):
    from crema_hub_cards.__main__ import main

    readme = tmp_path / "README.md"
    assert main(["space-readme", str(readme), "--model", "org/crema", "--sdk-version", "5.9.1"]) == 0
    assert front_matter(readme.read_text())["models"] == ["org/crema"]
    before = readme.read_text()
    assert main(["space-readme", str(readme), "--model", "org/crema", "--sdk-version", "5.9.1", "--emoji", "abc"]) == 2
    assert "space-readme: error: Space card field emoji" in capsys.readouterr().err
    assert readme.read_text() == before  # a refused card is not written


# ------------------------------------------------------------------------------------ a user's README is kept
def test_a_users_readme_is_kept_by_model_and_adapter_saves(tmp_path):
    model = tiny_crema_model(["video", "thermal"])
    model.save_pretrained(tmp_path / "crema")
    model.save_adapter(tmp_path / "thermal", "thermal")
    for card in (tmp_path / "crema" / "README.md", tmp_path / "thermal" / "README.md"):
        card.write_text("---\nlicense: mit\n---\n# My own card\n")
    model.save_pretrained(tmp_path / "crema")
    model.save_adapter(tmp_path / "thermal", "thermal")
    for card in (tmp_path / "crema" / "README.md", tmp_path / "thermal" / "README.md"):
        assert card.read_text() == "---\nlicense: mit\n---\n# My own card\n"


def test_a_generated_card_follows_the_model_on_every_save(tmp_path):
    tiny_crema_model(["video", "thermal"]).save_pretrained(tmp_path / "crema")
    assert _meta(tmp_path / "crema" / "README.md")["crema"]["modalities"] == ["video", "thermal"]
    tiny_crema_model(["video"]).save_pretrained(tmp_path / "crema")
    meta = _meta(tmp_path / "crema" / "README.md")
    assert meta["crema"]["modalities"] == ["video"] and "thermal" not in meta["tags"]


def test_card_command_writes_a_card_file_and_refuses_bad_input(saved, tmp_path, capsys):
    from crema_hub_cards.__main__ import main

    _, folder = saved
    out = tmp_path / "card.md"
    assert main(["card", str(folder), "--out", str(out), "--license", "bsd-3-clause"]) == 0
    assert front_matter(out.read_text())["license"] == "bsd-3-clause"
    assert main(["card", str(tmp_path / "missing")]) == 2
    assert "error: no such folder" in capsys.readouterr().err


# ------------------------------------------------------------------- remote code: saves without crema_hub_cards
def test_remote_code_saves_without_the_card_package(saved, tmp_path):
    """The model's remote code may only try to import crema_hub_cards: where it is missing (no crema-hf install),
    saves still work and write no card."""
    from clean_env import IMPORT_GUARD, python_without_crema, run_isolated

    _, folder = saved
    python = python_without_crema(tmp_path)
    script = IMPORT_GUARD + (
        "assert importlib.util.find_spec('crema_hub_cards') is None\n"
        "import os\n"
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "model.save_pretrained('copy')\n"
        "model.save_adapter('thermal', 'thermal')\n"
        "print(sorted(os.listdir('copy/adapters')), os.path.exists('copy/README.md'), sorted(os.listdir('thermal')))\n"
    )
    result = run_isolated(python, script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "['depth', 'thermal', 'video'] False ['adapter_config.json', 'adapter_model.safetensors']")
