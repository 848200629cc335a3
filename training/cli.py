"""The `crema` command line: one sub-command per job (`params`, `init`, `answer`, `convert-reference`, `extract`)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from transformers.utils import logging

logger = logging.get_logger(__name__)


def _modality_list(text: str) -> list[str]:
    from modeling_crema.parameter_report import PAPER_LETTERS

    names = [part.strip() for part in text.split(",") if part.strip()]
    return [PAPER_LETTERS.get(name, name) for name in names]


def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--paper", action="store_true", help="the paper's backbone (BLIP-2 Flan-T5-XL), no weights")
    source.add_argument("--config", help="a saved CREMA model folder or Hub id (only its config.json is read)")
    parser.add_argument(
        "--modalities",
        type=_modality_list,
        default=None,
        help="comma-separated modalities (names or the paper's letters V,A,F,D,N,P,T,H), major first",
    )
    fusion = parser.add_mutually_exclusive_group()
    fusion.add_argument("--fusion", dest="use_fusion", action="store_true", default=None, help="force the fusion on")
    fusion.add_argument("--no-fusion", dest="use_fusion", action="store_false", help="plain concatenation")


def run_params(args: argparse.Namespace) -> int:
    from modeling_crema import CremaConfig
    from modeling_crema.parameter_report import build_on_meta, format_parameter_table, paper_config, trainable_parameter_rows

    if args.paper:
        modalities = args.modalities or ["video"]
        config = paper_config(modalities, args.use_fusion)
        title = f"CREMA at the paper's size (BLIP-2 Flan-T5-XL), modalities {', '.join(modalities)}"
    else:
        config = CremaConfig.from_pretrained(args.config)
        if args.modalities:
            config.modalities = [spec for spec in config.modalities if spec["name"] in args.modalities]
        if args.use_fusion is not None:
            config.use_fusion = args.use_fusion
            config.fusion_modalities = config.modality_names if args.use_fusion else None
        title = f"CREMA {args.config}, modalities {', '.join(config.modality_names)}"
    print(format_parameter_table(trainable_parameter_rows(build_on_meta(config)), title=title))
    return 0


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the authors' LAVIS checkpoint (.pth) or a .safetensors state dict")
    parser.add_argument("--out", required=True, help="output folder: adapters/<modality>/ and fusion/")
    parser.add_argument("--modalities", type=_modality_list, default=None, help="order of the modalities (major first)")


def run_convert(args: argparse.Namespace) -> int:
    from modeling_crema.convert_reference_checkpoint import convert_reference_checkpoint

    order = convert_reference_checkpoint(args.checkpoint, args.out, args.modalities)
    print(f"Wrote adapters for {', '.join(order)} to {args.out}/adapters and the fusion (if any) to {args.out}/fusion")
    print("Load them on a CREMA built with token_layout='reference' (the authors' token layout), e.g.\n"
          "  CremaForConditionalGeneration.from_blip2('Salesforce/blip2-flan-t5-xl', modalities=[], "
          "token_layout='reference')")
    return 0


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blip2", required=True, help="a BLIP-2 checkpoint with a T5 LLM (folder or Hub id)")
    parser.add_argument("--modalities", type=_modality_list, default=["video"], help="comma-separated, major first")
    parser.add_argument("--out", required=True, help="output folder (model + processor)")
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--token-layout", choices=("paper", "reference"), default="paper")
    fusion = parser.add_mutually_exclusive_group()
    fusion.add_argument("--fusion", dest="use_fusion", action="store_true", default=None)
    fusion.add_argument("--no-fusion", dest="use_fusion", action="store_false")


def run_init(args: argparse.Namespace) -> int:
    from .answer import build_model_folder

    build_model_folder(
        args.blip2, args.out, args.modalities, args.use_fusion, num_frames=args.num_frames,
        token_layout=args.token_layout,
    )
    print(f"Saved CREMA ({', '.join(args.modalities)}) with its processor to {args.out}")
    return 0


def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved CREMA folder (model + processor) or Hub id")
    parser.add_argument("video", help="the clip (video file or folder of frames)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--option", action="append", dest="options", help="a multiple-choice option (repeat it)")
    parser.add_argument("--audio-file", help="audio for an audio adapter (default: the clip's own track)")
    parser.add_argument("--thermal", help="companion thermal clip")
    parser.add_argument("--touch", help="companion touch clip")
    parser.add_argument("--point-cloud", help="point-cloud features (.pt/.npy, voxels beside them)")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_answer(args: argparse.Namespace) -> int:
    from .answer import answer_question, load_model_and_processor

    model, processor = load_model_and_processor(args.model, args.device)
    companions = {"audio": args.audio_file, "thermal": args.thermal, "touch": args.touch,
                  "point_cloud": args.point_cloud}
    answer = answer_question(
        model, processor, args.video, args.question, args.options, companions,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
    )
    print(f"answer: {answer.text}")
    print(f"modalities used: {', '.join(answer.used_modalities)}")
    if answer.option_log_likelihoods:
        for option, score in zip(args.options, answer.option_log_likelihoods):
            print(f"  log-likelihood {score:9.3f}  {option}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crema", description="CREMA: multimodal video reasoning on a frozen BLIP-2.")
    commands = parser.add_subparsers(dest="command", required=True)
    subcommands = [
        ("params", "trainable parameters per modality adapter and fusion", add_params_arguments, run_params),
        ("init", "build CREMA from a BLIP-2 (T5) checkpoint and save it with its processor", add_init_arguments,
         run_init),
        ("answer", "answer a question about a clip with a saved CREMA model", add_answer_arguments, run_answer),
        ("convert-reference", "convert the authors' LAVIS checkpoint to PEFT adapters", add_convert_arguments,
         run_convert),
    ]
    for name, help_text, add_arguments, run in subcommands:
        subparser = commands.add_parser(name, help=help_text)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    try:
        from crema_processing.extract import add_extract_arguments, run_extract
    except ImportError as error:  # processing extras missing: the other commands still work
        logger.debug(f"`crema extract` unavailable: {error}")
    else:
        extract = commands.add_parser("extract", help="render flow/depth/normal frames and audio features of a video")
        add_extract_arguments(extract)
        extract.set_defaults(run=run_extract)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:  # bad input or a missing file / Hub repo: a message, not a traceback
        print(f"crema {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
