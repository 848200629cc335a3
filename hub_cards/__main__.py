"""`python -m crema_hub_cards card DIR [--out FILE] ...`: write the card of a saved model or adapter folder to a file
(or print it) without touching the folder. `python -m crema_hub_cards space-readme [README] --model ID ...`: (re)write
the front matter of the Space's README.md, keeping its text. Errors are one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .adapter_card import adapter_card
from .files import write_text_atomic
from .folder_facts import folder_kind
from .model_card import model_card
from .space_card import DEFAULT_EMOJI, DEFAULT_SHORT_DESCRIPTION, DEFAULT_TITLE, write_space_readme


def _card(args: argparse.Namespace) -> str:
    make = model_card if folder_kind(args.folder) == "model" else adapter_card
    text = str(make(args.folder, repo_id=args.repo_id, base_model=args.base_model, license=args.license,
                    datasets=args.datasets, eval_results=args.eval_results, eval_dataset=args.eval_dataset))
    if not args.out:
        return text
    write_text_atomic(args.out, text)
    return f"wrote the card of {args.folder} to {args.out}\n"


def _space_readme(args: argparse.Namespace) -> str:
    write_space_readme(args.readme, models=args.models, datasets=args.datasets, title=args.title, emoji=args.emoji,
                       sdk_version=args.sdk_version, short_description=args.short_description or None,
                       license=args.license)
    return f"wrote the front matter of {args.readme}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crema_hub_cards", description="Hub cards of CREMA.")
    commands = parser.add_subparsers(dest="command", required=True)
    card = commands.add_parser("card", help="the card of a model or adapter folder")
    card.add_argument("folder", help="a CREMA model folder or a modality adapter folder")
    card.add_argument("--out", default=None, help="write the card here (default: print it)")
    card.add_argument("--repo-id", default=None, help="the repo the card is for (default: the folder's name)")
    card.add_argument("--base-model", default=None, help="Hub id of the BLIP-2 (or CREMA model) it is built on")
    card.add_argument("--license", default=None, help="license id, e.g. bsd-3-clause")
    card.add_argument("--dataset", action="append", default=[], dest="datasets", help="Hub id of a training dataset")
    card.add_argument("--eval-results", action="append", default=None, help="crema eval JSON or {metric: value} JSON")
    card.add_argument("--eval-dataset", default=None, help="the dataset a plain {metric: value} file was measured on")
    card.set_defaults(run=_card)
    space = commands.add_parser("space-readme", help="(re)write the front matter of the Space's README.md")
    space.add_argument("readme", nargs="?", default=os.path.join("spaces_demo", "README.md"),
                       help="the README to rewrite (default spaces_demo/README.md)")
    space.add_argument("--model", action="append", default=[], dest="models", help="a Hub model id the app uses")
    space.add_argument("--dataset", action="append", default=[], dest="datasets", help="a Hub dataset id it uses")
    space.add_argument("--title", default=DEFAULT_TITLE, help="the Space's title")
    space.add_argument("--emoji", default=DEFAULT_EMOJI, help="the Space's emoji")
    space.add_argument("--sdk-version", default=None, help="gradio version (default: the installed one)")
    space.add_argument("--short-description", default=DEFAULT_SHORT_DESCRIPTION,
                       help="at most 60 characters ('' leaves it out)")
    space.add_argument("--license", default=None, help="license id, e.g. bsd-3-clause")
    space.set_defaults(run=_space_readme)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(args.run(args))
    except (ValueError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
