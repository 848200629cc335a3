"""Starting the Gradio Space as a user does (`python app.py` in a subprocess) for the tests that talk to it over
HTTP: a free port, waiting until the page answers, and stopping it by its own pid."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

SERVE_TIMEOUT_S = 180  # imports + gradio start on a busy 2-core machine


def free_port() -> int:
    """A port nobody listens on now (the app binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    """Polls the page until it answers 200; fails with the server's log if the app dies or never serves."""
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with status {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"the app did not serve {url} within {SERVE_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def served_space(arguments: list[str], cwd: Path, port: int, log: Path, env: dict[str, str] | None = None
                 ) -> Iterator[str]:
    """`python ARGUMENTS` in `cwd` (offline, the default model), serving on `port`; yields the page's URL."""
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                   "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    environment.pop("CREMA_MODEL", None)  # the default model: crema-tiny from the installed package
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, *arguments], cwd=cwd, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
