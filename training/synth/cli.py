"""`crema synth --out DIR --train N --validation N --test N --seed S`: generate CREMA-Synth. Importing this module
loads nothing heavy (no numpy, PyAV or datasets): those are imported when the command runs."""

from __future__ import annotations

import argparse
import sys

from ..cli_types import non_negative_int
from .vocabulary import QUESTION_TYPES


def _question_types(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in QUESTION_TYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown question types {unknown}; choose from {', '.join(QUESTION_TYPES)}")
    return names


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `crema synth`."""
    parser.add_argument("--out", required=True, help="output folder (clips/, depth/, thermal/, normal/, dataset/)")
    parser.add_argument("--train", type=non_negative_int, default=1000, help="training clips (default 1000)")
    parser.add_argument("--validation", type=non_negative_int, default=100, help="validation clips (default 100)")
    parser.add_argument("--test", type=non_negative_int, default=100, help="test clips (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same data (0)")
    parser.add_argument("--image-size", type=int, default=64, help="frame side in pixels, even, >= 32 (default 64)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second (default 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds, >= 1 (default 2)")
    parser.add_argument("--num-frames", type=int, default=4,
                        help="frames T the model samples per clip; motion cuts between their segments (default 4)")
    parser.add_argument("--motion", choices=("cuts", "continuous"), default="cuts",
                        help="cuts: objects jump between sampled segments so only optical flow shows the motion "
                             "(default); continuous: one steady motion, visible in RGB too")
    parser.add_argument("--question-types", type=_question_types, default=None,
                        help=f"comma-separated subset of: {', '.join(QUESTION_TYPES)} (default: all); clips get the "
                             "object counts these types need")
    parser.add_argument("--questions-per-clip", type=int, default=None,
                        help="ask this many applicable question types per clip (default: all)")
    parser.add_argument("--object-radius", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="object radius range as fractions of the frame side (default 0.06 0.12)")
    parser.add_argument("--no-shuffle-options", action="store_true", help="keep the options in vocabulary order")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPUs, up to 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier CREMA-Synth output in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_synth(args: argparse.Namespace) -> int:
    """Run `crema synth`; returns the exit status (2 with a one-line message for settings it cannot honour)."""
    import time

    from .generate import generate_crema_synth

    start = time.perf_counter()
    splits = {"train": args.train, "validation": args.validation, "test": args.test}
    try:
        dataset = generate_crema_synth(
            args.out, splits, seed=args.seed, image_size=args.image_size, fps=args.fps, seconds=args.seconds,
            sampled_frames=args.num_frames, motion=args.motion, question_types=args.question_types,
            questions_per_clip=args.questions_per_clip, shuffle_options=not args.no_shuffle_options,
            object_radius=args.object_radius,
            num_workers=args.workers, overwrite=args.overwrite, progress=not args.quiet,
        )
    except ValueError as error:
        print(f"crema synth: error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    clips = sum(splits.values())
    rows = ", ".join(f"{split} {len(data)}" for split, data in dataset.items())
    print(f"CREMA-Synth: {clips} clips, questions: {rows} ({seconds:.1f} s) -> {args.out}")
    print(f"load it with crema_training.synth.load_crema_synth({str(args.out)!r})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crema synth", description="generate the CREMA-Synth video-QA data")
    add_synth_arguments(parser)
    return run_synth(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
