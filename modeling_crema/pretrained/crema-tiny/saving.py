"""Atomic folder saves: at every instant a save's target holds the complete old save or the complete new one.

A save is written into a hidden staging folder next to its target (`.NAME.saving-*`), flushed to disk, and then
swapped with the target in one step (Linux `renameat2(RENAME_EXCHANGE)`). Where that call is unavailable, the
staging folder is first renamed `.NAME.ready-*` (complete), the old target moved to `.NAME.replaced-*`, and the
ready folder renamed into place; a crash between those renames leaves a state that `recover_interrupted_save`
(run by every save and load of that folder) repairs and reports. Leftovers of killed saves are removed by the
next save.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import tempfile
from typing import Callable, Iterator

from transformers.utils import logging

logger = logging.get_logger(__name__)

STAGING_MARK, READY_MARK, REPLACED_MARK = "saving", "ready", "replaced"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange_paths(first: str, second: str) -> bool:
    """Atomically swaps two existing paths (Linux >= 3.15); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    return result == 0


def _leftovers(target: str, mark: str) -> list[str]:
    """Hidden siblings `.NAME.<mark>-*` of `target`, newest first."""
    parent, name = os.path.split(target)
    found = glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.{mark}-*"))
    return sorted((path for path in found if os.path.isdir(path)), key=os.path.getmtime, reverse=True)


def recover_interrupted_save(target: str | os.PathLike) -> None:
    """Repairs what an interrupted save of `target` left behind, and removes its leftovers.

    A missing target with a complete new save (`.ready-*`) gets that save; with only the old one (`.replaced-*`),
    gets the old one back. Staging folders of killed saves (`.saving-*`) are incomplete and are deleted.
    """
    target = os.path.abspath(os.fspath(target))
    if not os.path.isdir(os.path.dirname(target)):
        return
    ready, replaced, staging = (_leftovers(target, mark) for mark in (READY_MARK, REPLACED_MARK, STAGING_MARK))
    if not (ready or replaced or staging):
        return
    try:
        if not os.path.exists(target) and ready:
            os.rename(ready.pop(0), target)
            logger.warning(f"{target}: an interrupted save had finished writing; completed it.")
        elif not os.path.exists(target) and replaced:
            os.rename(replaced.pop(0), target)
            logger.warning(f"{target}: an interrupted save had not finished; restored the previous save.")
        for leftover in ready + replaced + staging:
            shutil.rmtree(leftover, ignore_errors=True)
            logger.info(f"Removed {leftover}, left behind by an interrupted save.")
    except OSError as error:  # e.g. a read-only folder: loading still works from what is there
        logger.warning(f"{target}: could not clean up after an interrupted save ({error}).")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _carry_over(target: str, staging: str, keep: Callable[[str], bool]) -> None:
    """Copies the entries of the old `target` that `keep` accepts and the new save did not write."""
    for name in os.listdir(target):
        source, destination = os.path.join(target, name), os.path.join(staging, name)
        if not keep(name) or os.path.lexists(destination):
            continue
        if os.path.isdir(source):
            shutil.copytree(source, destination, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, destination)


def _swap_in(staging: str, target: str) -> None:
    if not os.path.exists(target):
        os.rename(staging, target)
    elif _exchange_paths(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old save
    else:
        parent, name = os.path.split(target)
        ready = tempfile.mkdtemp(prefix=f".{name}.{READY_MARK}-", dir=parent)
        os.rmdir(ready)
        os.rename(staging, ready)
        replaced = tempfile.mkdtemp(prefix=f".{name}.{REPLACED_MARK}-", dir=parent)
        os.rmdir(replaced)
        os.rename(target, replaced)
        os.rename(ready, target)
        shutil.rmtree(replaced, ignore_errors=True)
    directory = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, keep: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Yields a staging folder; once the block completes, the staging folder replaces `target` in one step.

    The new save replaces the folder's contents: entries of the old folder survive only if `keep(name)` accepts
    them (e.g. a processor saved beside a model) and the new save did not write them. On any error, `target` is
    left exactly as it was.
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    recover_interrupted_save(target)
    staging = tempfile.mkdtemp(prefix=f".{name}.{STAGING_MARK}-", dir=parent)
    os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp's 0700 would become the saved folder's mode
    try:
        yield staging
        if keep is not None and os.path.isdir(target):
            _carry_over(target, staging, keep)
        _fsync_tree(staging)
        _swap_in(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
