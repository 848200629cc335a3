"""The `crema-video-question-answering` pipeline (modeling_crema/pipeline_crema.py), shipped with the model as remote
code: it loads in a clean interpreter from a saved folder, its scores equal the model's own teacher-forced
log-likelihoods (computed here with `log_softmax` over `model(...).logits`), batching changes nothing but the
number of model calls, `modalities=` and `contributions=` match the model called directly, frames come back as
images, bad inputs are one-line errors, and `save_pretrained` ships it. `crema answer` runs through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from clean_env import IMPORT_GUARD, python_without_crema, run_isolated
from crema_processing import CremaProcessor
from crema_training.cli import main
from media_fixtures import media_dir, moving_texture_video, video_with_audio  # noqa: F401  (pytest fixtures)
from modeling_crema import CremaForConditionalGeneration
from modeling_crema.pipeline_crema import TASK, CremaVideoQuestionAnsweringPipeline
from tiny_models import IMAGE_SIZE, NUM_FRAMES, randomize_lora_b, tiny_crema_model

ROOT = Path(__file__).resolve().parents[1]
CREMA_TINY = ROOT / "modeling_crema" / "pretrained" / "crema-tiny"
EXAMPLES = ROOT / "examples"
EXAMPLE = json.loads((EXAMPLES / "example.json").read_text())
MODALITIES = ["video", "flow", "thermal"]
#: The adapters crema-tiny answers the example with: audio comes from the clip's own track.
EXAMPLE_MODALITIES = ["video", "audio", "flow", "thermal"]
QUESTION = "what is the person doing?"
OPTIONS = ["cooking", "dancing", "reading"]


def _example_input() -> dict:
    """crema-tiny's example clip and question (needs thermal to be answered)."""
    return {"video": str(EXAMPLES / EXAMPLE["clip"]), "question": EXAMPLE["question"], "options": EXAMPLE["options"],
            "thermal": str(EXAMPLES / EXAMPLE["thermal"])}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A tiny CREMA (video, flow, thermal, fusion) with non-identity adapters and its processor."""
    model = tiny_crema_model(MODALITIES, fusion=MODALITIES, tokenizer=tokenizer)
    randomize_lora_b(model)
    with torch.no_grad():  # a fusion that lets every supportive modality matter
        model.fusion.projection.weight.normal_(std=0.2)
    return model, CremaProcessor.from_model_config(model.config, tokenizer)


@pytest.fixture(scope="module")
def pipe(tiny):
    model, processor = tiny
    return pipeline(TASK, model=model, processor=processor, device="cpu")


@pytest.fixture(scope="module")
def clips(video_with_audio, moving_texture_video):
    return {"video": str(video_with_audio), "thermal": str(moving_texture_video)}


def _mc(clips, question=QUESTION, options=OPTIONS) -> dict:
    return {"video": clips["video"], "thermal": clips["thermal"], "question": question, "options": list(options)}


def _processed(processor, clips, answer=None, thermal=True, question=QUESTION, options=OPTIONS):
    """The processor's inputs for the tiny model, made here (not by the pipeline)."""
    return dict(processor(videos=clips["video"], question=question, options=options, answer=answer, flow=True,
                          thermal=clips["thermal"] if thermal else None, return_tensors="pt"))


@torch.no_grad()
def _teacher_forced_log_likelihood(model, inputs, **model_kwargs) -> float:
    """Sum over the target tokens of log p(token), from the model's logits."""
    labels = inputs["labels"]
    logits = model(**inputs, **model_kwargs).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != -100
    return float(log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].sum())


# ------------------------------------------------------------------------------ remote code, clean interpreter
def test_clean_interpreter_builds_the_pipeline_from_saved_folders(tmp_path):
    """`pipeline(model=FOLDER, trust_remote_code=True)` where the crema packages were never importable: for the
    shipped crema-tiny and for a folder that `save_pretrained` (+ the processor's) has just written."""
    resaved = tmp_path / "resaved"
    CremaForConditionalGeneration.from_pretrained(CREMA_TINY).save_pretrained(resaved)
    CremaProcessor.from_pretrained(CREMA_TINY).save_pretrained(resaved)
    script = IMPORT_GUARD + (
        "import io, json, sys\n"
        "sys.stdin = io.StringIO('')  # nobody to answer a prompt: an unexpected question fails at once\n"
        "from transformers import pipeline\n"
        f"for folder in ({str(CREMA_TINY)!r}, {str(resaved)!r}):\n"
        "    pipe = pipeline(model=folder, trust_remote_code=True)\n"
        f"    out = pipe({_example_input()!r})\n"
        "    print('RESULT', type(pipe).__module__.split('.')[0], json.dumps(out))\n"
    )
    result = run_isolated(python_without_crema(tmp_path), script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "custom code" not in output and "model of type" not in output, output[-3000:]
    lines = [line.split(" ", 2) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert [module for _, module, _ in lines] == ["transformers_modules"] * 2
    expected = pipeline(model=str(CREMA_TINY), trust_remote_code=True)(_example_input())
    for _, _, text in lines:
        out = json.loads(text)
        assert out["answer"] == EXAMPLE["answer"] == "yes" and out["modalities"] == EXAMPLE_MODALITIES
        assert out["option_scores"] == pytest.approx(expected["option_scores"], abs=1e-5)


def test_named_task_and_answer_question_agree_on_crema_tiny():
    from crema_training.answer import answer_question, load_model_and_processor

    named = pipeline(TASK, model=str(CREMA_TINY), trust_remote_code=True)
    out = named(_example_input(), contributions=True)
    assert (out["answer"], out["option_index"], out["scoring"]) == ("yes", 0, "likelihood")
    assert set(out["contributions"]) == set(EXAMPLE_MODALITIES) - {"video"} and out["contributions"]["thermal"] > 0
    model, processor = load_model_and_processor(CREMA_TINY)
    answer = answer_question(model, processor, _example_input()["video"], EXAMPLE["question"], EXAMPLE["options"],
                             {"thermal": _example_input()["thermal"]}, contributions=True)
    assert answer.option_scores == pytest.approx(out["option_scores"], abs=1e-5)
    assert answer.contributions == pytest.approx(out["contributions"], abs=1e-4)


# ------------------------------------------------------------------------------------------------- scores
def test_likelihood_scores_are_the_models_teacher_forced_log_likelihoods(tiny, pipe, clips):
    model, processor = tiny
    out = pipe(_mc(clips))
    expected = [_teacher_forced_log_likelihood(model, _processed(processor, clips, answer=i))
                for i in range(len(OPTIONS))]
    assert out["option_scores"] == pytest.approx(expected, abs=1e-4)
    best = int(np.argmax(expected))
    assert (out["answer"], out["option_index"], out["scoring"]) == (OPTIONS[best], best, "likelihood")
    assert out["modalities"] == MODALITIES and out["notes"] == []
    assert "contributions" not in out and "modality_frames" not in out


def test_reference_scores_are_the_letter_log_probs_after_option(tiny, pipe, clips, tokenizer):
    model, processor = tiny
    out = pipe(_mc(clips), scoring="reference")
    inputs = _processed(processor, clips)
    inputs.pop("labels", None)
    start = model.config.text_config.decoder_start_token_id
    option = tokenizer("Option", add_special_tokens=False).input_ids
    letters = [tokenizer(letter, add_special_tokens=False).input_ids[0] for letter in "ABC"]
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=torch.tensor([[start, *option]])).logits[0, -1]
    expected = torch.log_softmax(logits.float(), dim=-1)[letters].tolist()
    assert out["option_scores"] == pytest.approx(expected, abs=1e-5)
    assert out["scoring"] == "reference" and out["option_index"] == int(np.argmax(expected))


def test_open_ended_answer_is_the_models_beam_search(tiny, pipe, clips):
    model, processor = tiny
    out = pipe({"video": clips["video"], "thermal": clips["thermal"], "question": QUESTION}, num_beams=2,
               max_new_tokens=3)
    inputs = _processed(processor, clips, options=None)
    generated = model.generate(**inputs, num_beams=2, max_new_tokens=3, length_penalty=-1.0)
    assert out["answer"] == processor.decode_answers(generated)[0]
    assert (out["option_index"], out["option_scores"], out["scoring"]) == (None, [], None)


# ------------------------------------------------------------------------------------------------ batching
def _inputs_for_batching(clips) -> list[dict]:
    """Multiple choice with 3 and 2 options and prompts of different lengths, and an open-ended question."""
    return [
        _mc(clips),
        {"video": clips["video"], "thermal": clips["thermal"], "question": "red or blue?"},
        _mc(clips, question="what is the person doing in the kitchen with the guitar?", options=["yes", "no"]),
    ]


def _counting_model_calls(model, monkeypatch) -> list[int]:
    """Counts the model's calls (each forward and each generate prepares the LLM input once)."""
    calls = []
    original = model.prepare_language_model_inputs

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "prepare_language_model_inputs", counted)
    return calls


def test_batched_call_equals_one_by_one_in_fewer_model_calls(tiny, pipe, clips, monkeypatch):
    model, _ = tiny
    inputs = _inputs_for_batching(clips)
    calls = _counting_model_calls(model, monkeypatch)
    short = {"num_beams": 2, "max_new_tokens": 3}  # open-ended: quick beam search
    one_by_one = [pipe(example, **short) for example in inputs]
    assert len(calls) == 3
    calls.clear()
    batched = pipe(inputs, batch_size=3, **short)
    assert len(calls) == 2  # both multiple-choice examples scored in one call (5 rows), the open one generated
    assert sorted(calls) == [1, 5]
    assert isinstance(batched, list) and len(batched) == len(inputs)
    for single, together in zip(one_by_one, batched):
        assert together["answer"] == single["answer"] and together["option_index"] == single["option_index"]
        assert together["option_scores"] == pytest.approx(single["option_scores"], abs=1e-4)
    # a last batch smaller than batch_size, with contributions
    partial = pipe(inputs, batch_size=2, contributions=True, **short)
    singles = [pipe(example, contributions=True, **short) for example in inputs]
    for single, together in zip(singles, partial):
        assert together["answer"] == single["answer"]
        assert together["contributions"] == pytest.approx(single["contributions"], abs=1e-4)


# --------------------------------------------------------------------------------- modalities, contributions
def test_modalities_subset_equals_the_model_called_with_that_subset(tiny, pipe, clips):
    model, processor = tiny
    subset = ["video", "flow"]
    out = pipe(_mc(clips), modalities=["flow", "video"])
    assert out["modalities"] == subset
    expected = [_teacher_forced_log_likelihood(model, _processed(processor, clips, answer=i, thermal=False),
                                               modalities=subset) for i in range(len(OPTIONS))]
    assert out["option_scores"] == pytest.approx(expected, abs=1e-4)
    full = pipe(_mc(clips))["option_scores"]
    assert not np.allclose(out["option_scores"], full, atol=1e-3)  # thermal mattered when it was there
    assert any('input "thermal" was ignored' in note for note in out["notes"])
    assert any("without thermal" in note and "zeros" in note for note in out["notes"])


def test_contributions_equal_model_modality_contributions(tiny, pipe, clips):
    model, processor = tiny
    out = pipe(_mc(clips), contributions=True)
    inputs = _processed(processor, clips, answer=out["option_index"])  # the chosen option's target as labels
    expected = model.modality_contributions(**inputs)
    assert set(out["contributions"]) == {"flow", "thermal"}
    for name, value in expected.items():
        assert out["contributions"][name] == pytest.approx(float(value[0]), abs=1e-4)
    # with a subset: leave-one-out within it
    subset = pipe(_mc(clips), contributions=True, modalities=["video", "thermal"])
    inputs = {k: v for k, v in _processed(processor, clips, answer=subset["option_index"]).items()
              if not k.startswith("flow_")}
    expected = model.modality_contributions(**inputs, modalities=["video", "thermal"])
    assert list(subset["contributions"]) == ["thermal"]
    assert subset["contributions"]["thermal"] == pytest.approx(float(expected["thermal"][0]), abs=1e-4)
    # open-ended, greedy with 10 new tokens: the model's own default answer is the one scored
    open_ended = pipe({"video": clips["video"], "thermal": clips["thermal"], "question": QUESTION},
                      contributions=True, num_beams=1, max_new_tokens=10)
    expected = model.modality_contributions(**_processed(processor, clips, options=None))
    assert open_ended["contributions"] == pytest.approx({k: float(v[0]) for k, v in expected.items()}, abs=1e-4)


def test_modality_frames_are_the_frames_the_model_got(tiny, pipe, clips):
    model, processor = tiny
    out = pipe(_mc(clips), return_modality_frames=True, modalities=["video", "thermal"])
    frames = out["modality_frames"]
    assert list(frames) == ["video", "thermal"]
    inputs = _processed(processor, clips)
    video_processor = processor.video_processor
    mean = np.asarray(video_processor.image_mean).reshape(3, 1, 1)
    std = np.asarray(video_processor.image_std).reshape(3, 1, 1)
    for name, images in frames.items():
        assert len(images) == NUM_FRAMES
        for t, image in enumerate(images):
            assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
            renormalised = (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
            np.testing.assert_allclose(renormalised, inputs[f"{name}_pixel_values"][0, t].numpy(), atol=0.01)


# ----------------------------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, video_with_audio):
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.mp4"
    text.write_text("this is a text file, not a video\n")
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(Path(video_with_audio).read_bytes()[:2000])
    return {"text": str(text), "truncated": str(truncated)}


@pytest.mark.parametrize("key", ["video", "thermal"])
@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_unreadable_files_are_one_line_value_errors_naming_the_file(pipe, clips, bad_files, key, kind):
    example = {**_mc(clips), key: bad_files[kind]}
    with pytest.raises(ValueError) as info:
        pipe(example)
    message = str(info.value)
    assert "\n" not in message and bad_files[kind] in message and f'input "{key}"' in message, message


def test_bad_modalities_and_inputs_are_refused_with_the_fix(pipe, clips):
    with pytest.raises(ValueError, match=r"no adapter for 'depth' \(its adapters: video, flow, thermal\)"):
        pipe(_mc(clips), modalities=["video", "depth"])
    with pytest.raises(ValueError, match=r"leaves out 'video', the major modality of the model's fusion"):
        pipe(_mc(clips), modalities=["flow", "thermal"])
    with pytest.raises(ValueError, match=r"the model has a 'thermal' adapter: pass its file as input \"thermal\""):
        pipe({"video": clips["video"], "question": QUESTION}, modalities=["video", "thermal"])  # asked for by name
    with pytest.raises(ValueError, match=r"Unknown input key\(s\) 'thermal_clip'"):
        pipe({**_mc(clips), "thermal_clip": clips["thermal"]})
    with pytest.raises(ValueError, match="Unknown multiple-choice scoring 'letters'"):
        pipe(_mc(clips), scoring="letters")
    with pytest.raises(FileNotFoundError, match=r"no such file: .*missing.mp4 \(input \"thermal\"\)"):
        pipe({**_mc(clips), "thermal": "missing.mp4"})
    out = pipe({**_mc(clips), "depth": clips["thermal"]})  # no depth adapter: said, not fatal
    assert any("the model has no 'depth' adapter" in note for note in out["notes"])


def test_a_missing_companion_is_answered_without_and_said(pipe, clips):
    """Without `modalities=`, an adapter whose input is missing is left out (as `modalities=` would leave it out),
    and a note names it and how to give it."""
    without = pipe({"video": clips["video"], "question": QUESTION, "options": list(OPTIONS)})
    explicit = pipe({"video": clips["video"], "question": QUESTION, "options": list(OPTIONS)},
                    modalities=["video", "flow"])
    assert without["modalities"] == ["video", "flow"]
    assert without["option_scores"] == explicit["option_scores"]
    assert any(note.startswith("answered without 'thermal': the model has a 'thermal' adapter: pass its file as "
                               'input "thermal"') for note in without["notes"]), without["notes"]


def test_questions_outside_the_trained_templates_are_noted(pipe, clips):
    """A model that names the questions it was trained on (`config.question_templates`) still answers any question,
    and says when one is outside them or when the options differ from those it learned."""
    config = pipe.model.config
    config.question_templates = [{"question": "What is the {thing} like?", "options": list(OPTIONS), "needs": []}]
    try:
        inside = pipe(_mc(clips, question="what is the red thing  like"))
        reordered = pipe(_mc(clips, question="What is the red thing like?", options=OPTIONS[::-1]))
        outside = pipe(_mc(clips, question="Why is it there?"))
    finally:
        config.question_templates = None
    assert inside["notes"] == []
    assert any("trained with these options in the order" in note for note in reordered["notes"])
    assert any("outside the questions this model was trained on" in note for note in outside["notes"])
    assert outside["answer"] in OPTIONS


# ----------------------------------------------------------------------------------------------------- saving
def test_save_pretrained_ships_the_pipeline(tiny, tmp_path):
    from transformers.pipelines import PIPELINE_REGISTRY, clean_custom_task

    model, _ = tiny
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # what `Pipeline.save_pretrained` writes for a registered pipeline: "module.Class" and the model classes by name
    registered = dict(PIPELINE_REGISTRY.supported_tasks[TASK])
    expected = {**registered, "impl": f"pipeline_crema.{registered['impl'].__name__}",
                "pt": [cls.__name__ for cls in registered["pt"]]}
    assert saved["custom_pipelines"] == {TASK: expected}
    assert registered["impl"] is CremaVideoQuestionAnsweringPipeline
    assert clean_custom_task(dict(saved["custom_pipelines"][TASK]))[0]["pt"] == registered["pt"]
    source = ROOT / "modeling_crema" / "pipeline_crema.py"
    assert (tmp_path / "pipeline_crema.py").read_text() == source.read_text()
    # the shipped model declares it exactly as a save does
    shipped = json.loads((CREMA_TINY / "config.json").read_text())
    assert shipped["custom_pipelines"] == saved["custom_pipelines"]


# ---------------------------------------------------------------------------------------------- crema answer
def test_cli_prints_contributions(capsys):
    argv = ["answer", str(CREMA_TINY), _example_input()["video"], "--question", EXAMPLE["question"],
            "--option", "yes", "--option", "no", "--thermal", _example_input()["thermal"], "--device", "cpu"]
    assert main([*argv, "--contributions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # audio from the clip's track; no depth / normal render given
    assert lines[:2] == ["answer: yes", "modalities used: video, audio, flow, thermal"]
    assert lines[4].startswith("contributions (rise in the answer's negative log-likelihood")
    contributions = {line.split()[-1]: float(line.split()[0]) for line in lines[5:8]}
    assert list(contributions) == ["audio", "flow", "thermal"] and contributions["thermal"] > 0


def test_cli_precomputed_depth_render_replaces_the_depth_model(tokenizer, clips, tmp_path, capsys):
    model = tiny_crema_model(["video", "depth"], tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "crema")
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(tmp_path / "crema")  # no depth model
    argv = ["answer", str(tmp_path / "crema"), clips["video"], "--question", "q", "--option", "a", "--option", "b",
            "--device", "cpu"]
    capsys.readouterr()  # the saves' progress bars
    assert main(argv) == 0  # no depth input: answered without depth, and said with the flags that add it
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "modalities used: video"
    assert any(line.startswith("note: answered without 'depth': the model has a 'depth' adapter, which needs a "
                               "depth-estimation model: pass --depth-model DIR_OR_ID") and "--depth FILE" in line
               for line in out), out
    assert main([*argv, "--depth", clips["thermal"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] in ("answer: a", "answer: b") and lines[1] == "modalities used: video, depth"
    # the same as the pipeline fed the render under "depth"
    pipe = pipeline(TASK, model=model, processor=CremaProcessor.from_pretrained(tmp_path / "crema"), device="cpu")
    out = pipe({"video": clips["video"], "question": "q", "options": ["a", "b"], "depth": clips["thermal"]})
    assert lines[0] == f"answer: {out['answer']}"
