"""`crema init` (CREMA from a BLIP-2 folder, saved with its processor) and `crema answer` on a real clip."""

import pytest
import torch

from crema_training.answer import answer_question, load_model_and_processor, option_log_likelihoods
from crema_training.cli import main
from media_fixtures import media_dir, video_with_audio  # noqa: F401  (pytest fixtures)
from tiny_models import randomize_lora_b, tiny_blip2

OPTIONS = ["cooking", "dancing", "reading"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from tiny_models import tiny_tokenizer

    root = tmp_path_factory.mktemp("answer")
    tiny_blip2().save_pretrained(root / "blip2")
    tiny_tokenizer().save_pretrained(root / "blip2")
    assert main(["init", "--blip2", str(root / "blip2"), "--modalities", "video,flow", "--num-frames", "3",
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


def test_answer_needs_companion_inputs(model_folder, video_with_audio, tmp_path):
    model, processor = load_model_and_processor(model_folder)
    model.add_modality("thermal")
    with pytest.raises(ValueError, match=r"'thermal' adapter: pass its input file \(--thermal\)"):
        answer_question(model, processor, str(video_with_audio), "What happened?")
