"""Atomic folder writes: a save is staged next to its target and swapped in only once complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[str]:
    """Yields a staging folder; on success it replaces `target`, on error `target` is left as it was.

    Files already in `target` that the new save does not write are kept (a model folder may hold adapter
    subfolders saved earlier).
    """
    target = os.path.abspath(os.fspath(target))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
    try:
        yield staging
        if os.path.isdir(target):
            for name in os.listdir(target):
                if not os.path.exists(os.path.join(staging, name)):
                    source = os.path.join(target, name)
                    if os.path.isdir(source):
                        shutil.copytree(source, os.path.join(staging, name))
                    else:
                        shutil.copy2(source, os.path.join(staging, name))
            previous = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.previous-", dir=parent)
            os.rmdir(previous)
            os.replace(target, previous)
            os.replace(staging, target)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
