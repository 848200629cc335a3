"""Sharing: a CREMA model folder or one modality adapter, with its card, to a Hub repo or to a local folder.

What is uploaded is staged first, as a folder: the source folder's files (hidden entries such as leftovers of
interrupted saves, `.git` and `__pycache__` excepted) plus `README.md`, the generated card (or the user's own card,
kept as it is). `local_dir=` writes exactly that folder instead of uploading it, for inspection. The upload itself is
`HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`; pushing a model also deletes, on the Hub, the files of
an earlier push that the model owns (weights, `adapters/`, `fusion/`) and that this push no longer has.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .adapter_card import adapter_card
from .eval_results import EvalInput
from .files import copy_or_link, new_directory, write_text_atomic
from .folder_facts import ADAPTERS_FOLDER, folder_kind, read_adapter_facts, read_model_facts
from .marker import CARD_NAME, users_card
from .model_card import model_card

logger = logging.getLogger(__name__)

#: Files of a model repo that a model push owns: removed from the Hub when the pushed folder no longer has them.
MODEL_OWNED_PATTERNS = ["adapters/*", "fusion/*", "model.safetensors", "model-*.safetensors",
                        "model.safetensors.index.json"]


@dataclass(frozen=True)
class Pushed:
    """What a push did: the repo, the files (relative paths, sorted), and the commit URL or the local folder."""

    repo_id: str
    files: list[str]
    url: str | None = None
    local_dir: str | None = None


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"--repo-id {repo_id!r} is not a Hub repo id such as 'org/crema' ({error})") from None


def source_files(folder: str) -> dict[str, str]:
    """Relative path -> path of every file of `folder` that is part of the upload (README.md is handled apart)."""
    files = {}
    for root, directories, names in os.walk(folder):
        directories[:] = sorted(d for d in directories if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(root, name), folder)
            if relative == CARD_NAME or (name.startswith(".") and relative != ".gitattributes"):
                continue
            files[relative.replace(os.sep, "/")] = os.path.join(root, name)
    return files


def _card(source: str, make_card: Callable[[], ModelCard], card_options: dict[str, Any]) -> tuple[str | None, str | None]:
    """(generated card text, None) or (None, the user's README.md) for the folder `source`."""
    user = users_card(source)
    if user is None:
        return str(make_card()), None
    given = [flag for flag, value in card_options.items() if value]
    if given:
        raise ValueError(f"{user} is your own card (it has no generated marker), so {', '.join(given)} cannot be added "
                         "to it: edit its metadata yourself (huggingface_hub.metadata_update), or delete it to let crema "
                         "generate the card.")
    logger.info("%s was written by hand: uploaded as it is.", user)
    return None, user


def _stage(files: dict[str, str], card: tuple[str | None, str | None], destination: str, link: bool) -> list[str]:
    for relative, path in files.items():
        copy_or_link(path, os.path.join(destination, relative), link)
    text, user = card
    if user is not None:
        shutil.copy2(user, os.path.join(destination, CARD_NAME))
    else:
        write_text_atomic(os.path.join(destination, CARD_NAME), text)
    return sorted([*files, CARD_NAME])


def _options(base_model, license, datasets, eval_results) -> dict[str, Any]:
    return {"--base-model": base_model, "--license": license, "--dataset": list(datasets or ()),
            "--eval-results": eval_results}


def stage_model(model_dir: str | os.PathLike, destination: str, *, repo_id: str, base_model: str | None = None,
                license: str | None = None, datasets: Sequence[str] = (),
                eval_results: EvalInput | Sequence[EvalInput] | None = None, eval_dataset: str | None = None,
                link: bool = False) -> list[str]:
    """Writes what a push of the model folder uploads into `destination`; returns the files (relative paths)."""
    model_dir = os.fspath(model_dir)
    facts = read_model_facts(model_dir, check=True)
    card = _card(model_dir, lambda: model_card(facts, repo_id=repo_id, base_model=base_model, license=license,
                                               datasets=datasets, eval_results=eval_results,
                                               eval_dataset=eval_dataset),
                 _options(base_model, license, datasets, eval_results))
    return _stage(source_files(model_dir), card, destination, link)


def adapter_folder_of(source: str | os.PathLike, modality: str | None) -> str:
    """The adapter folder to push: `source` itself (an adapter folder), or `source/adapters/<modality>` (a model)."""
    source = os.fspath(source)
    if folder_kind(source) == "adapter":
        return source
    names = [spec["name"] for spec in read_model_facts(source, check=False).config.get("modalities") or []]
    has = ", ".join(names) or "none"
    if not modality:
        raise ValueError(f"{source} is a CREMA model folder: name the adapter to push with --modality (it has {has})")
    if modality not in names:
        raise ValueError(f"--modality {modality}: {source} has no {modality} adapter (it has {has})")
    return os.path.join(source, ADAPTERS_FOLDER, modality)


def stage_adapter(source: str | os.PathLike, destination: str, *, repo_id: str, modality: str | None = None,
                  base_model: str | None = None, license: str | None = None, datasets: Sequence[str] = (),
                  eval_results: EvalInput | Sequence[EvalInput] | None = None, eval_dataset: str | None = None,
                  link: bool = False) -> list[str]:
    """Writes what a push of one adapter uploads into `destination`; returns the files (relative paths)."""
    folder = adapter_folder_of(source, modality)
    facts = read_adapter_facts(folder, check=True)
    if modality and modality != facts.modality:
        raise ValueError(f"--modality {modality}: {folder} holds the {facts.modality} adapter. To publish it under "
                         f"another name, load it with model.load_adapter(path, adapter_name={modality!r}) and save it "
                         f"with model.save_adapter(dir, {modality!r}).")
    card = _card(folder, lambda: adapter_card(facts, repo_id=repo_id, base_model=base_model, license=license,
                                              datasets=datasets, eval_results=eval_results,
                                              eval_dataset=eval_dataset),
                 _options(base_model, license, datasets, eval_results))
    return _stage(source_files(folder), card, destination, link)


def upload(folder: str, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
           commit_message: str, delete_patterns: list[str] | None = None) -> str:
    """`HfApi.create_repo(exist_ok=True)` then `HfApi.upload_folder`; returns the commit URL."""
    import huggingface_hub  # looked up at call time: tests replace `huggingface_hub.HfApi`

    api = huggingface_hub.HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    kwargs = {"delete_patterns": delete_patterns} if delete_patterns else {}
    return str(api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, **kwargs))


def _push(stage: Callable[[str, bool], list[str]], repo_id: str, local_dir: str | os.PathLike | None,
          private: bool | None, token: str | bool | None, commit_message: str,
          delete_patterns: list[str] | None) -> Pushed:
    check_repo_id(repo_id)
    if local_dir is not None:
        with new_directory(local_dir) as staging:
            files = stage(staging, False)
        return Pushed(repo_id, files, local_dir=os.path.abspath(os.fspath(local_dir)))
    with tempfile.TemporaryDirectory(prefix="crema-push-") as temporary:
        staging = os.path.join(temporary, repo_id.split("/")[-1])
        files = stage(staging, True)
        url = upload(staging, repo_id, private=private, token=token, commit_message=commit_message,
                     delete_patterns=delete_patterns)
    return Pushed(repo_id, files, url=url)


def push_model(model_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None,
               token: str | bool | None = None, eval_results: EvalInput | Sequence[EvalInput] | None = None,
               eval_dataset: str | None = None, base_model: str | None = None, license: str | None = None,
               datasets: Sequence[str] = (), local_dir: str | os.PathLike | None = None,
               commit_message: str | None = None) -> Pushed:
    """Uploads a saved CREMA model folder with its model card to `repo_id` (or writes that upload into
    `local_dir`, which must not exist or be empty). See `model_card` for the card options."""
    return _push(
        lambda staging, link: stage_model(model_dir, staging, repo_id=repo_id, base_model=base_model, license=license,
                                          datasets=datasets, eval_results=eval_results, eval_dataset=eval_dataset,
                                          link=link),
        repo_id, local_dir, private, token, commit_message or "Upload CREMA model, modality adapters and card",
        MODEL_OWNED_PATTERNS,
    )


def push_adapter(source: str | os.PathLike, repo_id: str, *, modality: str | None = None, private: bool | None = None,
                 token: str | bool | None = None, eval_results: EvalInput | Sequence[EvalInput] | None = None,
                 eval_dataset: str | None = None, base_model: str | None = None, license: str | None = None,
                 datasets: Sequence[str] = (), local_dir: str | os.PathLike | None = None,
                 commit_message: str | None = None) -> Pushed:
    """Uploads one modality adapter with its card to `repo_id` (or writes that upload into `local_dir`).

    `source`: an adapter folder, or a CREMA model folder whose `adapters/<modality>/` is taken (`modality` needed).
    """
    return _push(
        lambda staging, link: stage_adapter(source, staging, repo_id=repo_id, modality=modality, base_model=base_model,
                                            license=license, datasets=datasets, eval_results=eval_results,
                                            eval_dataset=eval_dataset, link=link),
        repo_id, local_dir, private, token,
        commit_message or f"Upload CREMA {modality or 'modality'} adapter and card", None,
    )
