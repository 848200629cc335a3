"""`crema eval`: the paper's metrics and strict exact match (hand-computed examples), per question type in the
paper's table layout; end to end on a tiny saved model, batched and resumable."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import crema_training.evaluate as evaluate_module
from crema_processing import CremaProcessor
from crema_training.benchmark_datasets import build_benchmark
from crema_training.evaluate import add_eval_arguments, predictions_path, prepare_batch, plan_inputs, run_eval
from crema_training.metrics import (
    accuracy_summary,
    exact_match,
    format_table,
    music_avqa_paper_correct,
    score,
    sqa3d_paper_correct,
)
from media_fixtures import frame_with_index, indexed_video
from tiny_models import tiny_crema_model, tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
NEXTQA_CSV = FIXTURES / "nextqa" / "val.csv"
#: hand-copied from the fixture: id -> (type, options, answer index)
NEXTQA_GOLD = {
    "4010069381_6": ("CH", ["roll the handle", "tap their feet", "strum the string", "hit with sticks",
                            "pat with hand"], 0),
    "4882821564_1": ("CW", ["share with the girl", "approach lady sitting there", "unwrap it",
                            "playing with toy train", "gesture something"], 2),
    "2834146886_8": ("TN", ["drink again", "shake its body", "smells the black dog", "wagging tail",
                            "touch lady in blue stripes"], 2),
    "6329077812_7": ("TP", ["touch the baby again", "turn away", "adjusts the baby in grey", "smiling",
                            "take napkin"], 4),
}


# ------------------------------------------------------------------------------------------------ metrics
def test_music_avqa_paper_metric_is_the_references_lenient_match():
    assert music_avqa_paper_correct("2", "two")  # digits become words
    assert music_avqa_paper_correct("guitar", "acoustic_guitar")  # substring, `_` read as a space
    assert music_avqa_paper_correct("yes", "yes")
    assert not music_avqa_paper_correct("acoustic guitar", "guitar")
    assert not music_avqa_paper_correct("11", "eleven")  # only 1-10 are mapped
    assert not music_avqa_paper_correct("", "yes") and not music_avqa_paper_correct("  ", "no")  # empty: unanswerable
    assert not exact_match("guitar", "acoustic_guitar", underscores_as_spaces=True)
    assert exact_match("Acoustic Guitar.", "acoustic_guitar", underscores_as_spaces=True)
    assert score("music_avqa", "2", "two") == {"paper": True, "strict": False}
    assert score("music_avqa", "acoustic_guitar", "acoustic_guitar") == {"paper": True, "strict": True}


def test_sqa3d_paper_metric_is_the_references_lenient_match():
    assert sqa3d_paper_correct("The chair, on the LEFT", "left")  # commas dropped, lower-cased, last word
    assert sqa3d_paper_correct("2", "two")
    assert sqa3d_paper_correct("red", "dark red")  # multi-word answer: the whole prediction, as a substring
    assert sqa3d_paper_correct("it is dark red", "red")  # one-word answer: the prediction's last word
    assert not sqa3d_paper_correct("red chair", "red")
    assert sqa3d_paper_correct("re", "red") and not sqa3d_paper_correct("reddish", "red")  # substring leniency
    assert sqa3d_paper_correct("left\nand more", "left")  # first line only
    assert not sqa3d_paper_correct("left", "right") and not sqa3d_paper_correct("", "no")
    assert score("sqa3d", "on the left", "left") == {"paper": True, "strict": False}


def test_multiple_choice_and_exact_match_scores():
    assert score("nextqa", "anything", "take napkin", prediction_index=4, answer_index=4) == {"paper": True,
                                                                                              "strict": True}
    assert score("nextqa", "take napkin", "take napkin", prediction_index=3, answer_index=4) == {"paper": False,
                                                                                                 "strict": False}
    assert score("vggsound", " People  Marching. ", "people marching") == {"paper": True, "strict": True}
    assert score("vggsound", "people", "people marching") == {"paper": False, "strict": False}
    assert score("touchqa", "", "unanswerable") == {"paper": True, "strict": True}


def _records(dataset, rows):
    return [{"question_type": t, "prediction": p, "answer": a, "correct": score(dataset, p, a, pi, ai)}
            for t, p, a, pi, ai in rows]


def test_nextqa_summary_in_the_layout_of_table_3():
    records = _records("nextqa", [
        ("CH", "", "", 0, 0), ("CW", "", "", 1, 0), ("CW", "", "", 2, 2), ("TN", "", "", 1, 1), ("TP", "", "", 0, 3),
        ("TC", "", "", 4, 4), ("DL", "", "", 2, 2), ("DO", "", "", 0, 1),
    ])
    summary = accuracy_summary(records, "nextqa")
    columns = {(c["group"], c["label"]): (c["total"], c["strict_correct"]) for c in summary["columns"]}
    assert columns == {
        ("Causal", "How"): (1, 1), ("Causal", "Why"): (2, 1), ("Causal", "Avg."): (3, 2),
        ("Temporal", "P.&N."): (2, 1), ("Temporal", "Pre."): (1, 1), ("Temporal", "Avg."): (3, 2),
        ("Descriptive", "Cnt."): (0, 0), ("Descriptive", "Loc."): (1, 1), ("Descriptive", "Otr."): (1, 0),
        ("Descriptive", "Avg."): (2, 1), ("", "Avg."): (8, 5),
    }
    assert [c["label"] for c in summary["columns"]] == ["How", "Why", "Avg.", "P.&N.", "Pre.", "Avg.", "Cnt.", "Loc.",
                                                        "Otr.", "Avg.", "Avg."]
    assert summary["strict_accuracy"] == pytest.approx(62.5) and summary["paper_accuracy"] == pytest.approx(62.5)
    assert summary["columns"][6]["strict_accuracy"] is None  # no counting question: "-" in the table
    table = format_table(summary, "NExT-QA").splitlines()
    assert table[0] == "NExT-QA (8 questions)"
    assert table[1].split() == ["Causal", "Temporal", "Descriptive"]
    assert table[2].split() == ["How", "Why", "Avg.", "P.&N.", "Pre.", "Avg.", "Cnt.", "Loc.", "Otr.", "Avg.", "Avg."]
    assert table[4].split() == ["exact", "match", "100.0", "50.0", "66.7", "50.0", "100.0", "66.7", "-", "100.0",
                                "0.0", "50.0", "62.5"]


def test_music_avqa_summary_reports_both_metrics_per_column():
    records = _records("music_avqa", [
        ("Audio/Counting", "2", "two", None, -1), ("Audio/Counting", "two", "two", None, -1),
        ("Audio-Visual/Temporal", "guitar", "acoustic_guitar", None, -1),
        ("Audio-Visual/Existential", "no", "yes", None, -1),
    ])
    summary = accuracy_summary(records, "music_avqa")
    columns = {(c["group"], c["label"]): (c["total"], c["paper_correct"], c["strict_correct"])
               for c in summary["columns"]}
    assert columns[("Audio", "Cnt.")] == (2, 2, 1)
    assert columns[("Audio", "Avg.")] == (2, 2, 1)
    assert columns[("Audio-Visual", "Tem.")] == (1, 1, 0)
    assert columns[("Audio-Visual", "Avg.")] == (2, 1, 0)
    assert columns[("", "Avg.")] == (4, 3, 1)
    assert summary["per_question_type"]["Audio/Counting"] == {
        "total": 2, "paper_correct": 2, "paper_accuracy": 100.0, "strict_correct": 1, "strict_accuracy": 50.0}


def test_vggsound_in_vocabulary_accuracy_excludes_out_of_vocabulary_answers():
    records = _records("vggsound", [
        ("all", "dog barking", "dog barking", None, -1), ("all", "dog barking", "cat purring", None, -1),
        ("all", "a loud noise", "cat purring", None, -1), ("all", "cat purring", "cat purring", None, -1),
    ])
    summary = accuracy_summary(records, "vggsound")
    assert (summary["total"], summary["strict_correct"]) == (4, 2)
    assert summary["in_vocabulary"]["total"] == 3 and summary["in_vocabulary"]["strict_correct"] == 2
    assert "in-vocabulary answers only: 66.7 (3 of 4 predictions" in format_table(summary, "VGGSound")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "crema-video"
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video"], tokenizer=tokenizer)
    model.save_pretrained(folder)
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nextqa_videos(tmp_path_factory):
    """The fixture's clips in NExT-QA's layout (sub-folders from map_vid_vidorID.json)."""
    root = tmp_path_factory.mktemp("NExTVideo")
    for offset, relative in enumerate(["1025/4010069381", "1025/4882821564", "0031/2834146886", "0031/6329077812"]):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        frames = [frame_with_index(k + 3 * offset) for k in range(6)]
        from media_fixtures import write_video

        write_video(root / f"{relative}.mp4", frames)
    return root


def eval_args(*argv):
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def nextqa_args(model, videos, out, *extra):
    return eval_args(model, "nextqa", "--annotations", NEXTQA_CSV, "--media-root", videos, "--out", out,
                     "--batch-size", 2, "--device", "cpu", *extra)


@pytest.fixture(scope="module")
def nextqa_reference(video_model, nextqa_videos, tmp_path_factory):
    """One uninterrupted run over the 4-row NExT-QA fixture (batches of 2): its results JSON."""
    out = tmp_path_factory.mktemp("reference") / "nextqa.json"
    assert run_eval(nextqa_args(video_model, nextqa_videos, out)) == 0
    return out


def test_eval_multiple_choice_counts_match_its_own_predictions(nextqa_reference):
    result = json.loads(nextqa_reference.read_text())
    predictions = result["predictions"]
    assert [p["id"] for p in predictions] == list(NEXTQA_GOLD)
    counts: dict[str, list[int]] = {}
    for prediction in predictions:
        question_type, options, answer_index = NEXTQA_GOLD[prediction["id"]]
        assert prediction["question_type"] == question_type and prediction["answer_index"] == answer_index
        assert prediction["prediction"] == options[prediction["prediction_index"]]
        right = int(prediction["prediction_index"] == answer_index)
        counts.setdefault(question_type, [0, 0])
        counts[question_type][0] += 1
        counts[question_type][1] += right
    summary = result["summary"]
    for question_type, (total, right) in counts.items():
        entry = summary["per_question_type"][question_type]
        assert (entry["total"], entry["strict_correct"], entry["paper_correct"]) == (total, right, right)
    pooled = {c["label"]: (c["total"], c["strict_correct"]) for c in summary["columns"] if c["group"] == "Temporal"}
    assert pooled["P.&N."] == (2, counts["TN"][1] + counts["TP"][1])  # TN and TP pooled, as in Table 3
    assert summary["total"] == 4 and summary["strict_correct"] == sum(r for _, r in counts.values())
    assert result["settings"] == {"num_beams": 5, "max_new_tokens": 10, "mc_scoring": "letter",
                                  "prompt_preset": "dataset"}


def test_multiple_choice_answer_is_the_best_letter_after_option(video_model, nextqa_videos, nextqa_reference):
    """The reference's prediction (DESIGN §3): argmax over the letter tokens at the step after 'Option'."""
    from crema_training.answer import load_model_and_processor

    chosen = {p["id"]: p["prediction_index"] for p in json.loads(nextqa_reference.read_text())["predictions"]}
    model, processor = load_model_and_processor(video_model)
    tokenizer = processor.tokenizer
    letters = [tokenizer.convert_tokens_to_ids(letter) for letter in "ABCDE"]
    video = {"4010069381_6": "1025/4010069381", "6329077812_7": "0031/6329077812"}
    for example_id, relative in video.items():
        _, options, _ = NEXTQA_GOLD[example_id]
        question = {"4010069381_6": "how do the two man play the instrument",
                    "6329077812_7": "what did the lady do before wipping the baby s mouth"}[example_id]
        inputs = processor(videos=str(nextqa_videos / f"{relative}.mp4"), question=question, options=options)
        labels = torch.tensor([[tokenizer.convert_tokens_to_ids("Option"), letters[0]]])
        with torch.no_grad():
            logits = model(**inputs, labels=labels).logits[0, 1]
        assert chosen[example_id] == int(logits[letters].argmax())


def test_interrupted_eval_resumes_without_redoing_done_rows(video_model, nextqa_videos, nextqa_reference, tmp_path,
                                                            monkeypatch):
    reference = json.loads(nextqa_reference.read_text())

    real = evaluate_module.predict_prepared
    calls: list[list[str]] = []

    def crash_on_second_batch(model, processor, prepared, settings):
        ids = [row["id"] for group in prepared for row in group.rows]
        calls.append(ids)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(model, processor, prepared, settings)

    out = tmp_path / "resumed.json"
    monkeypatch.setattr(evaluate_module, "predict_prepared", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_eval(nextqa_args(video_model, nextqa_videos, out))
    assert not out.exists()  # the summary is written only at the end
    logged = [json.loads(line) for line in Path(predictions_path(out)).read_text().splitlines()]
    assert [record["id"] for record in logged[1:]] == ["4010069381_6", "4882821564_1"]

    calls.clear()
    monkeypatch.setattr(evaluate_module, "predict_prepared", _recorder(real, calls))
    assert run_eval(nextqa_args(video_model, nextqa_videos, out)) == 0
    assert calls == [["2834146886_8", "6329077812_7"]]  # only the rows not done before
    assert json.loads(out.read_text()) == reference

    calls.clear()  # a third run finds everything done and answers nothing
    assert run_eval(nextqa_args(video_model, nextqa_videos, out)) == 0
    assert calls == [] and json.loads(out.read_text()) == reference


def _recorder(real, calls):
    def record(model, processor, prepared, settings):
        calls.append([row["id"] for group in prepared for row in group.rows])
        return real(model, processor, prepared, settings)

    return record


def test_a_cut_off_last_line_is_dropped_and_redone(video_model, nextqa_videos, nextqa_reference, tmp_path,
                                                   monkeypatch, capsys):
    reference = json.loads(nextqa_reference.read_text())
    out = tmp_path / "nextqa.json"
    log = Path(predictions_path(out))
    lines = Path(predictions_path(nextqa_reference)).read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:4]) + lines[4][:25])  # killed while writing the last record
    calls: list[list[str]] = []
    monkeypatch.setattr(evaluate_module, "predict_prepared", _recorder(evaluate_module.predict_prepared, calls))
    assert run_eval(nextqa_args(video_model, nextqa_videos, out)) == 0
    assert calls == [["6329077812_7"]]
    assert json.loads(out.read_text()) == reference
    assert len(log.read_text().splitlines()) == 5
    printed = capsys.readouterr().out
    assert "P.&N." in printed and f"wrote {out}" in printed


def test_resuming_with_other_settings_is_refused(video_model, nextqa_videos, tmp_path):
    out = tmp_path / "nextqa.json"
    assert run_eval(nextqa_args(video_model, nextqa_videos, out, "--limit", 2)) == 0
    with pytest.raises(ValueError, match=r"holds predictions of another run \(settings: .*pass --overwrite"):
        run_eval(nextqa_args(video_model, nextqa_videos, out, "--mc-scoring", "likelihood"))
    with pytest.raises(ValueError, match=r"'prompt_preset': 'dataset'.* there, .*'prompt_preset': 'none'.* now"):
        run_eval(nextqa_args(video_model, nextqa_videos, out, "--prompt-preset", "none", "--limit", 2))
    assert run_eval(nextqa_args(video_model, nextqa_videos, out, "--mc-scoring", "likelihood", "--overwrite")) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["mc_scoring"] == "likelihood" and len(result["predictions"]) == 4


@pytest.fixture(scope="module")
def sqa3d_media(tmp_path_factory):
    """Point clouds in the 3D-LLM layout (sibling features / voxels folders) and scene clips (a video, frames)."""
    root = tmp_path_factory.mktemp("scannet")
    features, voxels = root / "voxelized_features_sam_nonzero_preprocess", root / "voxelized_voxels_sam_nonzero_preprocess"
    features.mkdir()
    voxels.mkdir()
    generator = np.random.default_rng(0)
    for scene, points in (("scene0000_00", 30), ("scene0011_00", 12)):
        torch.save(torch.from_numpy(generator.normal(size=(points, 48)).astype(np.float32)), features / f"{scene}.pt")
        np.save(voxels / f"{scene}.npy", generator.integers(0, 256, size=(points, 3)))
    videos = root / "videos"
    videos.mkdir()
    indexed_video(videos / "scene0000_00.mp4", 6)
    from PIL import Image

    (videos / "scene0011_00").mkdir()
    for k in range(5):
        Image.fromarray(frame_with_index(k + 5)).save(videos / "scene0011_00" / f"{k + 1:05d}.png")
    return root


def test_eval_open_ended_on_a_saved_dataset_folder(sqa3d_media, tmp_path, capsys):
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "point_cloud"], tokenizer=tokenizer, max_points=64)
    folder = tmp_path / "crema-vp"
    model.save_pretrained(folder)
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(folder)
    data = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json", media_root=sqa3d_media,
                           video_root=sqa3d_media / "videos")
    data.save_to_disk(tmp_path / "sqa3d-test")
    out = tmp_path / "sqa3d.json"
    assert run_eval(eval_args(folder, tmp_path / "sqa3d-test", "--out", out, "--batch-size", 3, "--num-beams", 2,
                              "--max-new-tokens", 3)) == 0
    result = json.loads(out.read_text())
    assert result["settings"] == {"num_beams": 2, "max_new_tokens": 3, "mc_scoring": "letter",
                                  "prompt_preset": "dataset"}
    assert result["dataset"]["kind"] == "saved"
    predictions = result["predictions"]
    assert [p["answer"] for p in predictions] == ["brown", "no", "two", "left", "yes"]
    totals = {t: result["summary"]["per_question_type"][t]["total"] for t in result["summary"]["per_question_type"]}
    assert totals == {"What": 1, "Is": 1, "How": 1, "Which": 1, "Other": 1}
    for prediction in predictions:
        assert prediction["prediction_index"] is None and prediction["prediction"].strip()
        strict = " ".join(prediction["prediction"].lower().split()).rstrip(".") == prediction["answer"]
        assert prediction["correct"]["strict"] == strict
        entry = result["summary"]["per_question_type"][prediction["question_type"]]
        assert (entry["strict_correct"], entry["paper_correct"]) == (int(strict), int(prediction["correct"]["paper"]))
    assert result["summary"]["paper_correct"] == sum(p["correct"]["paper"] for p in predictions)
    assert "Others" in capsys.readouterr().out
    assert run_eval(eval_args(folder, tmp_path / "sqa3d-test", "--out", tmp_path / "one.json", "--limit", 1,
                              "--num-beams", 1)) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["settings"]["max_new_tokens"] == 40 and len(one["predictions"]) == 1  # SQA3D's default: 40 tokens


def test_prompts_of_a_batch_follow_the_benchmarks_preset_or_the_paper(sqa3d_media):
    """By default each row's preset: the reference's text for SQA3D (situation and question lower-cased with
    `.!"()*#:;~` removed, "phase"); `--prompt-preset none`: the paper's Table 11 prompts."""
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "point_cloud"], tokenizer=tokenizer, max_points=64)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    data = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json", media_root=sqa3d_media,
                           video_root=sqa3d_media / "videos")
    expected = {
        "dataset": [
            "i am sitting on the bed facing the desk. Question: what color is the chair to my left? Based on the "
            "frames and 3D Model information, answer the question using a single word or phase.",
            "i am washing my hands. Question: am i facing the mirror? Based on the frames and 3D Model information, "
            "answer the question using a single word or phase.",
        ],
        "none": [
            "I am sitting on the bed facing the desk. Question: What color is the chair to my left? Based on the "
            "frames and 3D Model information, answer the question using a single word or phrase.",
            "I am washing my hands. Question: Am I facing the mirror? Based on the frames and 3D Model information, "
            "answer the question using a single word or phrase.",
        ],
    }
    for mode, prompts in expected.items():
        plan = plan_inputs(model, processor, data, prompt_preset=mode)
        prepared = prepare_batch(processor, plan, [data[0], data[4]])
        assert len(prepared) == 1 and prepared[0].positions == [0, 1]
        encoded = tokenizer(prompts, padding=True, return_tensors="pt")
        assert torch.equal(prepared[0].inputs["input_ids"], encoded.input_ids), mode
    inputs = prepared[0].inputs
    assert inputs["point_cloud_attention_mask"].sum(dim=1).tolist() == [30, 12]  # the two scenes' points
    assert tuple(inputs["video_pixel_values"].shape[:2]) == (2, model.config.num_frames)


def test_audio_comes_from_the_clips_for_an_audio_encoder(tmp_path):
    """MUSIC-AVQA: the audio column (the videos themselves) feeds the audio encoder; the prompt says "audio"."""
    for video_id in ("00006835", "00007108"):
        indexed_video(tmp_path / f"{video_id}.mp4", 6, audio=True)
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "audio"], tokenizer=tokenizer, with_audio_encoder=True)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    data = build_benchmark("music_avqa", FIXTURES / "music_avqa" / "avqa-test.json", media_root=tmp_path)
    plan = plan_inputs(model, processor, data)
    assert plan.audio == "column"
    inputs = prepare_batch(processor, plan, [data[1], data[2]])[0].inputs
    assert inputs["audio_input_values"].shape[:2] == (2, model.config.num_audio_segments)
    direct = processor(audio=str(tmp_path / "00007108.mp4"), question="x")["audio_input_values"][0]
    torch.testing.assert_close(inputs["audio_input_values"][1], direct)
    encoded = tokenizer(["Question: is the cello more rhythmic than the piano? Based on the frames and audio "
                         "information, answer the question using a single word or phase."]).input_ids[0]
    assert inputs["input_ids"][0, : len(encoded)].tolist() == encoded


def test_missing_inputs_for_an_adapter_are_one_clear_error(nextqa_videos):
    tokenizer = tiny_tokenizer()
    model = tiny_crema_model(["video", "thermal"], tokenizer=tokenizer)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    data = build_benchmark("nextqa", NEXTQA_CSV, media_root=nextqa_videos)
    with pytest.raises(ValueError, match="the model has a 'thermal' adapter but the dataset has no 'thermal' for "
                                         "question 4010069381_6: build the dataset with --media-root"):
        plan_inputs(model, processor, data)
    model = tiny_crema_model(["video", "audio"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="takes precomputed audio features .*`crema init --audio-encoder DIR_OR_ID`"):
        plan_inputs(model, processor, data)


def test_bad_dataset_arguments(video_model, tmp_path):
    with pytest.raises(ValueError, match="kinetics: neither a benchmark .*nextqa, music_avqa.* nor a folder saved"):
        run_eval(eval_args(video_model, "kinetics"))
    with pytest.raises(ValueError, match="nextqa: pass its annotation file with --annotations FILE"):
        run_eval(eval_args(video_model, "nextqa"))
    with pytest.raises(ValueError, match="--question is only used by vggsound, touchqa, thermalqa"):
        run_eval(eval_args(video_model, "nextqa", "--annotations", NEXTQA_CSV, "--question", "why?"))
    with pytest.raises(ValueError, match="--root audio: nextqa reads video, flow, depth, normal"):
        run_eval(eval_args(video_model, "nextqa", "--annotations", NEXTQA_CSV, "--root", "audio=/x"))
    with pytest.raises(ValueError, match=r"nextqa: no questions: .*skipped 4 whose media files are missing"):
        run_eval(eval_args(video_model, "nextqa", "--annotations", NEXTQA_CSV, "--media-root", tmp_path))
    build_benchmark("nextqa", NEXTQA_CSV).remove_columns(["question_type"]).save_to_disk(tmp_path / "bad")
    with pytest.raises(ValueError, match="not a benchmark dataset \\(no column\\(s\\) question_type\\)"):
        run_eval(eval_args(video_model, tmp_path / "bad"))


def test_cli_parser_module_imports_no_heavy_package():
    code = ("import sys, argparse, crema_training.evaluate as e; p = argparse.ArgumentParser(); "
            "e.add_eval_arguments(p); p.parse_args(['m', 'nextqa', '--root', 'flow=/f', '--batch-size', '4']); "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
