"""How crema-tiny's beep counts and pitch depend on the noise floor of a track, on the six clips with a beep track of
`tests/test_crema_tiny_unseen_clips.py` (drawn and encoded there with PyAV: AAC, Opus, FLAC, MP3, PCM at 8-48 kHz),
each written again with every `--floors` noise floor (standard deviation of the white noise under the beeps) and
nothing else changed, once in its own codec and sampling rate and once as 16 kHz PCM (crema-tiny's rate: no codec,
no resampling). Prints a markdown table: right answers out of 6 per floor.

    python benchmarks/crema_tiny_audio_noise_floor.py [--model DIR] [--floors 0.0015 0.003 0.004 0.009]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the unseen clips are drawn by the test's own module
from test_crema_tiny_unseen_clips import AUDIO_QUESTIONS, CLIPS, MODEL  # noqa: E402
from unseen_clips import write_clip  # noqa: E402


def right_answers(model, processor, floor: float, folder: Path, pcm: bool) -> dict[str, int]:
    """Question type -> right answers on the clips with a track, each written with noise floor `floor` (as 16 kHz
    PCM in Matroska with `pcm`)."""
    from crema_training.answer import answer_question

    right = dict.fromkeys(AUDIO_QUESTIONS, 0)
    for index, clip in enumerate(c for c in CLIPS if c.beeps):
        clip = dataclasses.replace(clip, noise=floor, name=f"{clip.name}-floor{floor:g}{'-pcm' if pcm else ''}")
        if pcm:
            clip = dataclasses.replace(clip, audio_codec="pcm_s16le", sampling_rate=16000, suffix=".mkv")
        paths = write_clip(folder, clip, seed=index)
        companions = {name: str(paths[name]) for name in ("thermal", "depth", "normal")}
        for kind, (question, options, truth) in AUDIO_QUESTIONS.items():
            answer = answer_question(model, processor, str(paths["video"]), question, options, companions)
            right[kind] += answer.text == truth(clip)
    return right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0015, 0.003, 0.004, 0.009])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from crema_training.answer import load_model_and_processor

    model, processor = load_model_and_processor(args.model)
    count = sum(1 for clip in CLIPS if clip.beeps)
    columns = [f"{kind} ({where})" for where in ("own codec", "16 kHz PCM") for kind in AUDIO_QUESTIONS]
    print(f"| noise floor | {' | '.join(columns)} |")
    print("|---|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as folder:
        for floor in args.floors:
            cells = [f"{right} / {count}" for pcm in (False, True)
                     for right in right_answers(model, processor, floor, Path(folder), pcm).values()]
            print(f"| {floor:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
