"""`crema init` (CREMA from a BLIP-2 folder, saved with its processor) and `crema answer` on a real clip."""

import json
import shutil

import pytest
import torch

from crema_training.answer import answer_question, load_model_and_processor, option_log_likelihoods
from crema_training.cli import main
from media_fixtures import media_dir, tiny_depth_model, video_no_audio, video_with_audio  # noqa: F401  (fixtures)
from tiny_models import randomize_lora_b, tiny_audio_config, tiny_blip2, tiny_tokenizer

OPTIONS = ["cooking", "dancing", "reading"]
ALL_MODALITIES = "video,audio,flow,depth,normal"


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("blip2")
    tiny_blip2().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def audio_encoder_folder(tmp_path_factory):
    """A tiny AST encoder + an `ASTFeatureExtractor` sized like it, saved like a Hub checkpoint."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    path = tmp_path_factory.mktemp("tiny_ast")
    torch.manual_seed(0)
    config = ASTConfig(**tiny_audio_config())
    ASTModel(config).eval().save_pretrained(path)
    # its own normalisation statistics, so the test can tell it from the default extractor
    ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length, mean=-3.5,
                        std=2.5).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, blip2_folder):
    root = tmp_path_factory.mktemp("answer")
    assert main(["init", "--blip2", str(blip2_folder), "--modalities", "video,flow", "--num-frames", "3",
                 "--fusion", "--out", str(root / "crema")]) == 0
    model, processor = load_model_and_processor(root / "crema")
    randomize_lora_b(model)  # stands in for training: the adapters are no longer the identity
    model.save_pretrained(root / "crema")
    return root / "crema"


def test_init_saves_model_and_processor(model_folder):
    model, processor = load_model_and_processor(model_folder)
    assert model.config.modality_names == ["video", "flow"] and model.fusion is not None
    assert processor.video_processor.num_frames == 3
    assert model.config.frame_prefix_token_ids  # prefixes tokenised with the BLIP-2 folder's tokenizer


def test_multiple_choice_ranks_options_by_likelihood(model_folder, video_with_audio):
    model, processor = load_model_and_processor(model_folder)
    answer = answer_question(model, processor, str(video_with_audio), "What is the person doing?", OPTIONS)
    assert answer.used_modalities == ["video", "flow"]
    assert answer.text == OPTIONS[answer.option_index]
    # each option's score is the summed log-probability of its target under ordinary teacher forcing
    inputs = processor(videos=str(video_with_audio), question="What is the person doing?", options=OPTIONS,
                       answer=1, flow=True)
    loss = model(**inputs).loss  # mean over the target tokens of option B
    target_tokens = (inputs["labels"] != -100).sum()
    torch.testing.assert_close(torch.tensor(answer.option_log_likelihoods[1]), -loss * target_tokens, rtol=1e-4, atol=1e-4)
    assert answer.option_index == max(range(3), key=lambda i: answer.option_log_likelihoods[i])
    scores = option_log_likelihoods(model, processor, {k: v for k, v in inputs.items() if k != "labels"}, OPTIONS)
    assert scores.tolist() == pytest.approx(answer.option_log_likelihoods, abs=1e-5)


def test_cli_answer_prints_the_answer(model_folder, video_with_audio, capsys):
    assert main(["answer", str(model_folder), str(video_with_audio), "--question", "What is the person doing?",
                 *[x for option in OPTIONS for x in ("--option", option)], "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    answer = out.splitlines()[0].removeprefix("answer: ")
    assert answer in OPTIONS and "modalities used: video, flow" in out
    assert main(["answer", str(model_folder), str(video_with_audio), "--question", "Which instrument?",
                 "--num-beams", "2", "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("answer: ")


def test_answer_without_a_companion_input_says_so(model_folder, video_with_audio, tmp_path):
    """Companion files are optional: without one, the adapter is left out and a note names the flag; asked for by
    name (`modalities=`), a missing input is an error."""
    model, processor = load_model_and_processor(model_folder)
    model.add_modality("thermal")
    answer = answer_question(model, processor, str(video_with_audio), "What happened?", OPTIONS)
    assert answer.used_modalities == ["video", "flow"]
    assert "answered without 'thermal': the model has a 'thermal' adapter: pass its input file (--thermal PATH)" \
        in answer.notes
    with pytest.raises(ValueError, match=r"'thermal' adapter: pass its input file \(--thermal PATH\)"):
        answer_question(model, processor, str(video_with_audio), "What happened?", modalities=["video", "thermal"])
    with pytest.raises(FileNotFoundError, match=r"no such file: .*missing.mp4 \(--thermal\)"):
        answer_question(model, processor, str(video_with_audio), "What happened?",
                        companions={"thermal": str(tmp_path / "missing.mp4")})


def test_modality_without_a_cli_option_takes_its_clip_from_python(model_folder, video_with_audio):
    model, processor = load_model_and_processor(model_folder)
    model.add_modality("ir")  # any vision modality, fed as a companion clip
    without = answer_question(model, processor, str(video_with_audio), "What happened?", OPTIONS)
    assert without.used_modalities == ["video", "flow"]
    assert any("'ir' adapter, which `crema answer` has no option for" in note for note in without.notes)
    answer = answer_question(model, processor, str(video_with_audio), "What happened?", OPTIONS,
                             companions={"ir": str(video_with_audio)})
    assert answer.used_modalities == ["video", "flow", "ir"] and answer.text in OPTIONS


def test_answer_on_a_device_that_is_not_there(model_folder, video_with_audio, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["answer", str(model_folder), str(video_with_audio), "--question", "q"]
    assert main([*argv, "--device", "cuda:0"]) == 2
    assert capsys.readouterr().err == ("crema answer: error: --device cuda:0: CUDA is not available here; use "
                                       "--device cpu\n")
    lines = _answer_lines([*argv, "--option", "a", "--option", "b"], capsys)  # default: the CPU
    assert lines[0] in ("answer: a", "answer: b")


def test_answer_refuses_a_missing_clip(model_folder, tmp_path, capsys):
    assert main(["answer", str(model_folder), str(tmp_path / "nope.mp4"), "--question", "q", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"crema answer: error: no such file or folder: {tmp_path / 'nope.mp4'} (the clip)\n"
    )


def _copy_without_processor(model_folder, target, keep_tokenizer: bool):
    """The model folder as `model.save_pretrained` alone leaves it (plus, optionally, the tokenizer's files)."""
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"}
    shutil.copytree(model_folder, target, ignore=lambda _, names: [
        n for n in names if n == "processor_config.json" or (not keep_tokenizer and n in tokenizer_files)])
    return target


def test_answer_refuses_a_folder_whose_processor_does_not_match(model_folder, video_with_audio, tmp_path, capsys):
    # a tokenizer but no processor files: AutoProcessor-style loading builds a default 224 px, 4-frame processor
    folder = _copy_without_processor(model_folder, tmp_path / "no_processor", keep_tokenizer=True)
    argv = ["answer", str(folder), str(video_with_audio), "--question", "q", "--option", "a", "--option", "b",
            "--device", "cpu"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "processor makes 4 frames of 224x224 px, but the model reads 3 frames of 32x32 px" in error
    assert "CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(folder)" in error
    assert "Traceback" not in error


def test_answer_refuses_a_folder_without_tokenizer(model_folder, tmp_path):
    folder = _copy_without_processor(model_folder, tmp_path / "bare", keep_tokenizer=False)
    with pytest.raises(ValueError, match=r"holds no tokenizer, so its processor cannot be built .*save the model's "
                                         r"processor with it"):
        load_model_and_processor(folder)


def test_init_hides_progress_bars(blip2_folder, tmp_path, capfd):
    from transformers.utils import logging

    assert logging.is_progress_bar_enabled()
    assert main(["init", "--blip2", str(blip2_folder), "--out", str(tmp_path / "crema")]) == 0
    captured = capfd.readouterr()
    assert captured.out == f"Saved CREMA (video) with its processor to {tmp_path / 'crema'}\n"
    assert "Loading weights" not in captured.err and "Writing model shards" not in captured.err
    assert logging.is_progress_bar_enabled()  # restored for the rest of the process


# ------------------------------------------------------------------------------- every modality, end to end
@pytest.fixture(scope="module")
def full_model_folder(tmp_path_factory, blip2_folder, audio_encoder_folder, tiny_depth_model):
    out = tmp_path_factory.mktemp("full") / "crema"
    assert main(["init", "--blip2", str(blip2_folder), "--audio-encoder", str(audio_encoder_folder),
                 "--depth-model", tiny_depth_model, "--modalities", ALL_MODALITIES, "--num-frames", "3",
                 "--out", str(out)]) == 0
    return out


def _answer_lines(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


def test_init_and_answer_with_every_modality(full_model_folder, tiny_depth_model, video_with_audio, capsys):
    config = json.loads((full_model_folder / "config.json").read_text())
    assert [spec["name"] for spec in config["modalities"]] == ALL_MODALITIES.split(",")
    assert config["audio_config"]["model_type"] == "audio-spectrogram-transformer"
    processor_config = json.loads((full_model_folder / "processor_config.json").read_text())
    assert processor_config["image_processor"]["depth_model_name_or_path"] == tiny_depth_model
    audio = processor_config["feature_extractor"]
    assert (audio["feature_extractor_type"], audio["mean"], audio["std"]) == ("ASTFeatureExtractor", -3.5, 2.5)

    argv = ["answer", str(full_model_folder), str(video_with_audio), "--question", "What is the person doing?",
            "--option", "cooking", "--option", "dancing", "--device", "cpu"]
    first = _answer_lines(argv, capsys)
    assert first[0].removeprefix("answer: ") in ("cooking", "dancing")
    assert first[1] == "modalities used: video, audio, flow, depth, normal"
    assert [line.split()[-1] for line in first[2:]] == ["cooking", "dancing"]
    assert _answer_lines(argv, capsys) == first  # deterministic


def _notes(capsys) -> tuple[list[str], list[str]]:
    """(the printed lines, the note lines without their "note: ")."""
    lines = capsys.readouterr().out.splitlines()
    return lines, [line.removeprefix("note: ") for line in lines if line.startswith("note: ")]


def test_a_clip_without_audio_track_is_answered_without_audio(full_model_folder, video_no_audio, tmp_path, capsys):
    argv = ["answer", str(full_model_folder), str(video_no_audio), "--question", "q", "--device", "cpu"]
    assert main(argv) == 0
    lines, notes = _notes(capsys)
    assert "audio" not in lines[1].removeprefix("modalities used: ").split(", ")
    assert f"answered without 'audio': the model has an 'audio' adapter but {video_no_audio} has no audio track: " \
           "pass --audio-file PATH" in notes
    assert main([*argv, "--audio-file", str(tmp_path / "missing.wav")]) == 2  # a file named but missing: an error
    assert capsys.readouterr().err == f"crema answer: error: no such file: {tmp_path / 'missing.wav'} (--audio-file)\n"


def test_depth_model_missing_at_answer_time(full_model_folder, tiny_depth_model, video_with_audio, tmp_path, capsys):
    from crema_processing import CremaProcessor

    folder = tmp_path / "no_depth_model"
    shutil.copytree(full_model_folder, folder)
    processor = CremaProcessor.from_pretrained(folder)
    processor.video_processor.depth_model_name_or_path = None
    processor.save_pretrained(folder)
    argv = ["answer", str(folder), str(video_with_audio), "--question", "q", "--option", "a", "--option", "b",
            "--device", "cpu"]
    assert main(argv) == 0
    lines, notes = _notes(capsys)
    used = lines[1].removeprefix("modalities used: ").split(", ")
    assert "depth" not in used and "normal" not in used
    assert any(note.startswith("answered without 'depth': the model has a 'depth' adapter, which needs a "
                               "depth-estimation model: pass --depth-model DIR_OR_ID") and "crema init --depth-model"
               in note for note in notes), notes
    lines = _answer_lines([*argv, "--depth-model", tiny_depth_model], capsys)
    assert lines[0] in ("answer: a", "answer: b")
    assert "depth" in lines[1] and "normal" in lines[1]


def test_audio_adapter_without_audio_encoder(blip2_folder, video_with_audio, tmp_path, capsys):
    out = tmp_path / "crema"
    assert main(["init", "--blip2", str(blip2_folder), "--modalities", "V,A", "--out", str(out)]) == 0
    assert "note: the audio adapter takes precomputed BEATs features" in capsys.readouterr().out
    argv = ["answer", str(out), str(video_with_audio), "--question", "q", "--device", "cpu"]
    assert main(argv) == 0
    lines, notes = _notes(capsys)
    assert lines[1] == "modalities used: video"
    assert any(note.startswith("answered without 'audio': the model's 'audio' adapter takes precomputed audio "
                               "features") and "`crema init --audio-encoder DIR_OR_ID`" in note for note in notes)
    assert main([*argv, "--modalities", "video,audio"]) == 2  # asked for by name: an error
    err = capsys.readouterr().err
    assert err.startswith("crema answer: error: the model's 'audio' adapter takes precomputed audio features")
    assert "`crema init --audio-encoder DIR_OR_ID`" in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    (["--modalities", "video,normal"], "the 'normal' modality needs a depth-estimation model: pass --depth-model"),
    (["--modalities", "video", "--audio-encoder", "AST"], "--audio-encoder is only used by the audio modality"),
    (["--modalities", "video,depth", "--depth-model", "AST"],
     "--depth-model AST_PATH is a 'audio-spectrogram-transformer' model, not a depth-estimation model"),
    (["--modalities", "video,audio", "--audio-encoder", "./no_ast"], "no such folder: ./no_ast"),
])
def test_init_refuses_bad_encoders(extra, message, blip2_folder, audio_encoder_folder, tmp_path, capsys):
    extra = [str(audio_encoder_folder) if item == "AST" else item for item in extra]
    message = message.replace("AST_PATH", str(audio_encoder_folder))
    assert main(["init", "--blip2", str(blip2_folder), *extra, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"crema init: error: {message}")
    assert not (tmp_path / "out").exists()


def test_init_needs_a_blip2_with_a_tokenizer(blip2_folder, audio_encoder_folder, tmp_path, capsys):
    assert main(["init", "--blip2", str(audio_encoder_folder), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"crema init: error: --blip2 {audio_encoder_folder} is a "
                                       "'audio-spectrogram-transformer' checkpoint, not BLIP-2 (e.g. "
                                       "Salesforce/blip2-flan-t5-xl)\n")
    no_tokenizer = tmp_path / "blip2"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(blip2_folder / name, no_tokenizer / name)
    assert main(["init", "--blip2", str(no_tokenizer), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"crema init: error: --blip2 {no_tokenizer} has no usable tokenizer")
    assert not (tmp_path / "out").exists()
