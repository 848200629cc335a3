"""The `crema` command line: one sub-command per job (`params`, `init`, `answer`, `convert-reference`, `extract`).

Building the parser imports nothing heavy (no torch, transformers, numpy, cv2 or crema package): `crema --help`
answers at once, and each command imports what it needs when it runs. The options of `crema extract` live with
its code in `crema_processing.extract`; they are read only when that command is asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Iterator, Sequence

from .cli_types import positive_int

#: (name, one-line help) of each sub-command, in the order `crema --help` lists them.
COMMANDS = (
    ("params", "trainable parameters per modality adapter and fusion (the paper's size or a saved model)"),
    ("init", "build CREMA from a BLIP-2 (T5) checkpoint and save it with its processor"),
    ("answer", "answer a question about a clip with a saved CREMA model"),
    ("convert-reference", "convert the authors' LAVIS checkpoint to PEFT adapters"),
    ("extract", "render flow/depth/normal frames and audio features of a video"),
    ("synth", "generate CREMA-Synth: clips with audio, depth/thermal/normal renders and questions that need them"),
    ("train", "train the modality adapters and the fusion from a YAML config (`crema train CONFIG.yaml --key value`)"),
    ("dataset", "build one of the paper's benchmarks from its official files as a split of a saved DatasetDict"),
    ("eval", "accuracy of a saved model on a benchmark, per question type as in the paper's tables (resumable)"),
    ("push", "upload a saved CREMA model folder with its model card to the Hub (or write the upload to --local-dir)"),
    ("push-adapter", "upload one modality adapter with its card to its own Hub repo (or to --local-dir)"),
)
#: pip package of the optional modules whose absence is reported by name.
PIP_NAMES = {"cv2": "opencv-python-headless", "av": "av", "PIL": "pillow", "torchcodec": "torchcodec",
             "datasets": "datasets", "peft": "peft", "safetensors": "safetensors", "tqdm": "tqdm"}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crema-hf")
    except PackageNotFoundError:
        return "unknown (not installed)"


def modality_list(text: str) -> list[str]:
    """`--modalities`: comma-separated names or the paper's letters (case-insensitive), major first; anything
    else is refused with the known ones listed."""
    # a dependency-free table, but importing it loads the `modeling_crema` package: done when parsing, not when
    # building the parser (the command that parses it imports the package anyway)
    from modeling_crema.modality_names import KNOWN_MODALITIES, PAPER_LETTERS

    letters = {letter.lower(): name for letter, name in PAPER_LETTERS.items()}
    names: list[str] = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name = letters.get(part.lower()) if len(part) == 1 else part.lower()
        if name not in KNOWN_MODALITIES:
            known_letters = ",".join(PAPER_LETTERS)
            raise argparse.ArgumentTypeError(
                f"unknown modality {part!r}; known: {', '.join(KNOWN_MODALITIES)} "
                f"(or the paper's letters {known_letters})"
            )
        if name in names:
            raise argparse.ArgumentTypeError(f"modality {name!r} is listed twice in {text!r}")
        names.append(name)
    if not names:
        raise argparse.ArgumentTypeError("no modality given")
    return names


# ------------------------------------------------------------------------------------------------- params
def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--paper", action="store_true", help="the paper's backbone (BLIP-2 Flan-T5-XL), no weights")
    source.add_argument("--config", help="a saved CREMA model folder or Hub id (only its config.json is read)")
    parser.add_argument(
        "--modalities",
        type=modality_list,
        default=None,
        help="comma-separated modalities (names or the paper's letters V,A,F,D,N,P,T,H), major first; with "
        "--config, the saved model's modalities to count",
    )
    fusion = parser.add_mutually_exclusive_group()
    fusion.add_argument("--fusion", dest="use_fusion", action="store_true", default=None,
                        help="force the fusion on (default: on from three modalities, as in the paper)")
    fusion.add_argument("--no-fusion", dest="use_fusion", action="store_false", help="plain concatenation")


def run_params(args: argparse.Namespace) -> int:
    from modeling_crema import CremaConfig
    from modeling_crema.parameter_report import build_on_meta, format_parameter_table, paper_config, trainable_parameter_rows

    from .answer import hub_errors, local_or_hub

    if args.paper:
        modalities = args.modalities or ["video"]
        config = paper_config(modalities, args.use_fusion)
        title = f"CREMA at the paper's size (BLIP-2 Flan-T5-XL), modalities {', '.join(modalities)}"
    else:
        source, is_local = local_or_hub(args.config)
        with hub_errors(source, is_local):
            config = CremaConfig.from_pretrained(source)
        if args.modalities:
            missing = [name for name in args.modalities if name not in config.modality_names]
            if missing:
                has = ", ".join(config.modality_names)
                raise ValueError(f"--modalities {','.join(missing)}: not in {args.config} (it has {has})")
            config.modalities = [spec for spec in config.modalities if spec["name"] in args.modalities]
        if args.use_fusion is not None:
            config.use_fusion = args.use_fusion
            config.fusion_modalities = config.modality_names if args.use_fusion else None
        title = f"CREMA {args.config}, modalities {', '.join(config.modality_names)}"
    print(format_parameter_table(trainable_parameter_rows(build_on_meta(config)), title=title))
    return 0


# -------------------------------------------------------------------------------------- convert-reference
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the authors' LAVIS checkpoint (.pth) or a .safetensors state dict")
    parser.add_argument("--out", required=True, help="output folder: adapters/<modality>/ and fusion/")
    parser.add_argument("--modalities", type=modality_list, default=None,
                        help="the training modality order, major first (default: the order the checkpoint's saved "
                        "config records; required when it records none)")


def run_convert(args: argparse.Namespace) -> int:
    from modeling_crema.convert_reference_checkpoint import convert_reference_checkpoint

    order = convert_reference_checkpoint(args.checkpoint, args.out, args.modalities)
    print(f"Wrote adapters for {', '.join(order)} to {args.out}/adapters and the fusion (if any) to {args.out}/fusion")
    print("Load them on a CREMA built with token_layout='reference_concat' (the layout the authors' released "
          "scripts trained with), e.g.\n"
          "  CremaForConditionalGeneration.from_blip2('Salesforce/blip2-flan-t5-xl', modalities=[], "
          "token_layout='reference_concat')")
    return 0


# --------------------------------------------------------------------------------------------------- init
def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blip2", required=True,
                        help="a BLIP-2 checkpoint with a T5 LLM and its tokenizer (folder or Hub id)")
    parser.add_argument("--modalities", type=modality_list, default=["video"],
                        help="comma-separated modalities (names or the paper's letters), major first (default: video)")
    parser.add_argument("--out", required=True, help="output folder (model + processor)")
    parser.add_argument("--audio-encoder", default=None,
                        help="a transformers audio encoder for the audio modality (folder or Hub id, e.g. "
                        "MIT/ast-finetuned-audioset-10-10-0.4593), saved with the model; without it the audio "
                        "adapter takes precomputed BEATs features, which `crema answer` cannot compute")
    parser.add_argument("--depth-model", default=None,
                        help="a transformers depth-estimation model (folder or Hub id, e.g. "
                        "depth-anything/Depth-Anything-V2-Small-hf); needed by the depth and normal modalities")
    parser.add_argument("--num-frames", type=positive_int, default=4, help="frames T per clip (default 4)")
    parser.add_argument("--token-layout", choices=("paper", "reference_concat", "reference_add"), default="paper",
                        help="where the modality tokens go in the LLM input: 'paper' (default), 'reference_concat' "
                        "(the authors' released scripts: for their converted checkpoints) or 'reference_add'")
    fusion = parser.add_mutually_exclusive_group()
    fusion.add_argument("--fusion", dest="use_fusion", action="store_true", default=None,
                        help="fuse the modalities (default: from three modalities on, as in the paper)")
    fusion.add_argument("--no-fusion", dest="use_fusion", action="store_false", help="plain concatenation")


def run_init(args: argparse.Namespace) -> int:
    from .answer import build_model_folder

    model = build_model_folder(
        args.blip2, args.out, args.modalities, args.use_fusion, audio_encoder=args.audio_encoder,
        depth_model=args.depth_model, num_frames=args.num_frames, token_layout=args.token_layout,
    )
    print(f"Saved CREMA ({', '.join(model.config.modality_names)}) with its processor to {args.out}")
    if "audio" in model.config.modality_names and model.config.audio_config is None:
        print("note: the audio adapter takes precomputed BEATs features; for `crema answer` to read audio from "
              "files, build it with --audio-encoder DIR_OR_ID")
    return 0


# ------------------------------------------------------------------------------------------------- answer
def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="[MODEL]",
                        help="a saved CREMA folder (model + processor, see `crema init`) or Hub id; leave it out to "
                        "use crema-tiny, the default model shipped with the package")
    parser.add_argument("video", nargs="?", default=None, help="the clip (video file or folder of frames)")
    parser.add_argument("--question", required=True, help="the question about the clip")
    parser.add_argument("--option", action="append", dest="options",
                        help="a multiple-choice option (repeat it); without options the answer is generated")
    parser.add_argument("--audio-file", help="audio for an audio adapter (default: the clip's own track)")
    parser.add_argument("--depth-model", default=None,
                        help="depth-estimation model (folder or Hub id) for depth/normal adapters, instead of the "
                        "one saved with the processor")
    parser.add_argument("--thermal", help="companion thermal clip (for a thermal adapter)")
    parser.add_argument("--touch", help="companion touch clip (for a touch adapter)")
    parser.add_argument("--point-cloud", help="point-cloud features (.pt/.npy, voxels beside them)")
    parser.add_argument("--depth", metavar="FILE",
                        help="precomputed depth render (a clip or frames folder) for a depth adapter, used instead of "
                        "a depth-estimation model")
    parser.add_argument("--normal", metavar="FILE",
                        help="precomputed surface-normal render for a normal adapter, used instead of a "
                        "depth-estimation model")
    parser.add_argument("--num-beams", type=positive_int, default=None, help="beams for open-ended answers (default 5)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="longest open-ended answer in tokens (default 10; 40 with --prompt-preset sqa3d)")
    parser.add_argument("--scoring", choices=("likelihood", "reference"), default="likelihood",
                        help="multiple choice: rank whole targets 'Option {L}' by log-likelihood (default), or as the "
                        "reference code: the best option letter at the step after 'Option'")
    # written out: importing crema_processing for PROMPT_PRESETS would load transformers and slow --help
    parser.add_argument("--prompt-preset", default=None,
                        choices=("nextqa", "perception_test", "music_avqa", "sqa3d", "vggsound", "touchqa", "thermalqa"),
                        help="build the prompt as the reference code did for this dataset (default: the saved "
                        "processor's)")
    parser.add_argument("--situation", default=None, help="SQA3D's situation text, prepended to the prompt")
    parser.add_argument("--modalities", type=modality_list, default=None,
                        help="answer with exactly these adapters (names or letters; default: every adapter whose input "
                        "is there, the others left out with a note)")
    parser.add_argument("--contributions", action="store_true",
                        help="also print how much each supportive modality contributed (the rise in the answer's "
                        "negative log-likelihood when it is left out; one extra model call per modality)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available, else cpu)")


def run_answer(args: argparse.Namespace) -> int:
    import torch

    from .answer import answer_question, default_model_path, load_model_and_processor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    if args.video is None:  # `crema answer CLIP ...`: the default model
        args.model, args.video = default_model_path(), args.model
    model, processor = load_model_and_processor(args.model, device, depth_model=args.depth_model)
    companions = {"audio": args.audio_file, "thermal": args.thermal, "touch": args.touch,
                  "point_cloud": args.point_cloud, "depth": args.depth, "normal": args.normal}
    answer = answer_question(
        model, processor, args.video, args.question, args.options, companions,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
        scoring=args.scoring, prompt_preset=args.prompt_preset, situation=args.situation,
        modalities=args.modalities, contributions=args.contributions,
    )
    print(f"answer: {answer.text}")
    print(f"modalities used: {', '.join(answer.used_modalities)}")
    if answer.option_scores:
        label = "log-likelihood" if answer.scoring == "likelihood" else "letter log-prob"
        for option, score in zip(args.options, answer.option_scores):
            print(f"  {label} {score:9.3f}  {option}")
    if answer.contributions:
        print("contributions (rise in the answer's negative log-likelihood without the modality):")
        for name, value in answer.contributions.items():
            print(f"  {value:+9.3f}  {name}")
    for note in answer.notes:
        print(f"note: {note}")
    return 0


# ------------------------------------------------------------------------------------------------ extract
def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    from crema_processing.extract import add_extract_arguments as add_arguments

    add_arguments(parser)


def run_extract(args: argparse.Namespace) -> int:
    from crema_processing.extract import run_extract as run

    return run(args)


# ------------------------------------------------------------------------------------------------- parser
# ----------------------------------------------------------------------------------------------------- synth
def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    from .synth.cli import add_synth_arguments as add_arguments  # standard library only

    add_arguments(parser)


def run_synth(args: argparse.Namespace) -> int:
    from .synth.cli import run_synth as run

    return run(args)


# ----------------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("train_argv", nargs=argparse.REMAINDER, metavar="CONFIG.yaml [--key value ...]",
                        help="a training config (see training/configs/) and overrides; `crema train --help` lists "
                        "every key")


def run_train(args: argparse.Namespace) -> int:
    from .train_cli import main as train  # parses the config with trl.TrlParser

    return train(args.train_argv)


# --------------------------------------------------------------------------------------------------- dataset
def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    from .dataset_cli import add_dataset_arguments as add_arguments  # standard library only

    add_arguments(parser)


def run_dataset(args: argparse.Namespace) -> int:
    from .dataset_cli import run_dataset as run

    return run(args)


# ------------------------------------------------------------------------------------------------------ eval
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import add_eval_arguments as add_arguments  # standard library only

    add_arguments(parser)


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval as run

    return run(args)


# ---------------------------------------------------------------------------------------- push, push-adapter
def _add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo-id", required=True, help="the Hub repo to push to, e.g. org/crema")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    parser.add_argument("--token", default=None, help="Hub token (default: the one `hf auth login` stored)")
    parser.add_argument("--local-dir", metavar="OUT", default=None,
                        help="write exactly what would be uploaded into OUT (a new or empty folder) instead of "
                        "uploading it")
    parser.add_argument("--eval-results", metavar="FILE.json", action="append", default=None,
                        help="evaluation results for the card: the JSON `crema eval` writes, or {metric: value} "
                        "(repeat for several benchmarks)")
    parser.add_argument("--eval-dataset", default=None,
                        help="the dataset a plain {metric: value} file was measured on (default: the first --dataset)")
    parser.add_argument("--dataset", action="append", default=[], dest="datasets",
                        help="Hub id of a dataset it was trained on (repeat for several)")
    parser.add_argument("--base-model", default=None,
                        help="Hub id it is built on, for the card's base_model (default: the BLIP-2 recorded in its "
                        "adapters, when it is a Hub id)")
    parser.add_argument("--license", default=None, help="license id for the card, e.g. bsd-3-clause")
    parser.add_argument("--commit-message", default=None, help="the commit message")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="a CREMA model folder (written by save_pretrained)")
    _add_sharing_arguments(parser)


def add_push_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR",
                        help="a modality adapter folder, or a CREMA model folder (its adapters/<modality>/ is pushed)")
    parser.add_argument("--modality", default=None,
                        help="the adapter to push (needed with a model folder; checked against an adapter folder)")
    _add_sharing_arguments(parser)


def _sharing_options(args: argparse.Namespace) -> dict:
    return dict(private=True if args.private else None, token=args.token, local_dir=args.local_dir,
                eval_results=args.eval_results, eval_dataset=args.eval_dataset, datasets=args.datasets,
                base_model=args.base_model, license=args.license, commit_message=args.commit_message)


def _report(pushed) -> int:
    if pushed.local_dir:
        print(f"Wrote the {len(pushed.files)} files a push to {pushed.repo_id} would upload into {pushed.local_dir}:")
    else:
        print(f"Pushed {len(pushed.files)} files to https://huggingface.co/{pushed.repo_id} ({pushed.url}):")
    for name in pushed.files:
        print(f"  {name}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from crema_hub_cards import push_model

    return _report(push_model(args.model, args.repo_id, **_sharing_options(args)))


def run_push_adapter(args: argparse.Namespace) -> int:
    from crema_hub_cards import push_adapter

    return _report(push_adapter(args.folder, args.repo_id, modality=args.modality, **_sharing_options(args)))


SUBCOMMANDS = {
    "params": (add_params_arguments, run_params),
    "init": (add_init_arguments, run_init),
    "answer": (add_answer_arguments, run_answer),
    "convert-reference": (add_convert_arguments, run_convert),
    "extract": (add_extract_arguments, run_extract),
    "synth": (add_synth_arguments, run_synth),
    "train": (add_train_arguments, run_train),
    "dataset": (add_dataset_arguments, run_dataset),
    "eval": (add_eval_arguments, run_eval),
    "push": (add_push_arguments, run_push),
    "push-adapter": (add_push_adapter_arguments, run_push_adapter),
}
#: Sub-commands whose options are defined in modules with heavy imports: read only when that command runs.
HEAVY_OPTIONS = ("extract",)


def build_parser(load_options: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The `crema` parser. The options of the commands in `HEAVY_OPTIONS` are added only when named in
    `load_options` (`main` names the command being run); otherwise they appear in `crema --help` by name only."""
    parser = argparse.ArgumentParser(
        prog="crema",
        description="CREMA: multimodal video reasoning on a frozen BLIP-2 (one PEFT adapter per modality).",
        epilog="Run `crema COMMAND --help` for the options of a command. Errors are one line on stderr, exit status 2.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, help_text in COMMANDS:
        add_arguments, run = SUBCOMMANDS[name]
        subparser = commands.add_parser(name, help=help_text, description=help_text)
        if name not in HEAVY_OPTIONS or name in load_options:
            add_arguments(subparser)
        subparser.set_defaults(run=run)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bars and only errors from `transformers` while a command runs (restored
    after, for callers of `main` in the same process)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def error_message(error: BaseException) -> str | None:
    """One line for the errors a user can fix (bad input, missing or damaged files, missing packages, the Hub);
    None for anything else (a bug: its traceback is kept)."""
    import json

    safetensors = sys.modules.get("safetensors")
    if isinstance(error, ModuleNotFoundError) and error.name:
        root = error.name.split(".")[0]
        message = f"missing optional package {root!r}: pip install {PIP_NAMES.get(root, root)}"
    elif isinstance(error, ImportError):
        message = f"{error} (a package is missing or too old{': ' + error.name if error.name else ''})"
    elif isinstance(error, json.JSONDecodeError):
        message = f"a JSON file is damaged ({error}); save or download it again"
    elif safetensors is not None and isinstance(error, getattr(safetensors, "SafetensorError", ())):
        message = f"a safetensors file is damaged ({error}); save or download it again"
    elif isinstance(error, (ValueError, OSError)):
        message = str(error) or type(error).__name__
    else:
        return None
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """`crema [COMMAND] ...`; returns the exit status (0, or 2 after a one-line error on stderr). Without a
    command it prints the usage and the list of commands and returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    if command == "train":  # everything after it, --help included, goes to the training config parser
        return run_train(argparse.Namespace(train_argv=argv[argv.index("train") + 1:]))
    try:
        parser = build_parser(load_options=[command] if command in HEAVY_OPTIONS else [])
    except ImportError as error:  # the command's own module needs a package that is not installed
        print(f"crema {command}: error: {error_message(error)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with quiet_transformers():
            return args.run(args)
    except KeyboardInterrupt:
        print(f"crema {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = error_message(error)
        if message is None:
            raise
        print(f"crema {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
