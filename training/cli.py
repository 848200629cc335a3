"""The `crema` command line: one sub-command per job (`params`, `convert-reference`, `extract`)."""

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crema", description="CREMA: multimodal video reasoning on a frozen BLIP-2.")
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="trainable parameters per modality adapter and fusion")
    add_params_arguments(params)
    params.set_defaults(run=run_params)
    convert = commands.add_parser("convert-reference", help="convert the authors' LAVIS checkpoint to PEFT adapters")
    add_convert_arguments(convert)
    convert.set_defaults(run=run_convert)
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
