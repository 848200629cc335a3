"""Atomic writes for everything `crema_hub_cards` puts on disk (standard library only).

A card, a Space README or a `--local-dir` dry run is either complete or absent: a crash never leaves half a file
or half a folder behind for a user to upload by mistake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8, newlines as given) to `path` through a temporary file renamed over it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_umask()
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def copy_or_link(source: str, destination: str, link: bool) -> None:
    """Hard-links (cheap, for a temporary upload folder) or copies (for a folder a user may edit) one file."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copy2(source, destination)


@contextlib.contextmanager
def new_directory(target: str | os.PathLike) -> Iterator[str]:
    """Yields a hidden staging folder beside `target` that becomes `target` in one rename once the block completes.

    `target` must not exist or be an empty folder: a dry run never overwrites a folder that holds something (it
    could be the model itself). On any error nothing is left behind.
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.lexists(target) and not (os.path.isdir(target) and not os.listdir(target)):
        raise ValueError(f"{target} already exists and is not an empty folder; choose a new folder (or remove it).")
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=parent)
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        os.rename(staging, target)  # replaces an empty folder atomically (POSIX)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
