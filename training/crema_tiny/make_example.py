"""Pick a held-out CREMA-Synth clip whose question needs thermal (`hot`), copy the clip and its thermal, depth and
normal companions to `examples/`, and write `examples/example.json` (question, options, answer) for the README and
the tests (the README's command gives the thermal companion only: the others are optional):

    python -m crema_training.crema_tiny.make_example --work crema-tiny-work --model modeling_crema/pretrained/crema-tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

#: The companion renders copied beside the clip.
COMPANIONS = ("thermal", "depth", "normal")


def main(argv=None) -> None:
    from ..answer import answer_question, load_model_and_processor
    from ..synth import load_crema_synth

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="crema-tiny-work")
    parser.add_argument("--model", default="modeling_crema/pretrained/crema-tiny")
    parser.add_argument("--synth", default=None, help="the CREMA-Synth folder (default: WORK/synth)")
    parser.add_argument("--out", default="examples")
    parser.add_argument("--question-type", default="hot")
    parser.add_argument("--answer", default="yes", help="only a question with this answer (empty: any)")
    args = parser.parse_args(argv)
    from ..synth.vocabulary import TEMPLATES_BY_NAME

    dataset = load_crema_synth(args.synth or Path(args.work) / "synth")["test"]
    model, processor = load_model_and_processor(args.model)
    for row in dataset:
        if row["question_type"] != args.question_type or (args.answer and row["answer"] != args.answer):
            continue
        options = list(TEMPLATES_BY_NAME[row["question_type"]].options)  # the order crema-tiny was trained on
        answer = answer_question(model, processor, row["video"], row["question"], options,
                                 companions={"thermal": row["thermal"]})  # as the README's command asks it
        if answer.text != row["answer"]:
            continue
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        example = {"clip": f"{row['clip_id']}.mp4"}
        shutil.copyfile(row["video"], out / example["clip"])
        for companion in COMPANIONS:
            example[companion] = f"{row['clip_id']}-{companion}.mp4"
            shutil.copyfile(row[companion], out / example[companion])
        example.update(question=row["question"], options=options, answer=row["answer"],
                       question_type=row["question_type"])
        (out / "example.json").write_text(json.dumps(example, indent=2) + "\n")
        print(json.dumps(example))
        return
    raise SystemExit(f"no {args.question_type!r} question of the test split was answered right")


if __name__ == "__main__":
    main()
