"""A Python that sees this environment's dependencies but not the crema packages (as on a fresh machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def python_without_crema(directory: Path) -> Path:
    """Creates a virtualenv whose only link to this environment is a plain path list of its site-packages.

    `.pth` files in those folders (e.g. the editable-install hooks of crema) are not processed, so neither
    `modeling_crema` nor `crema_processing` is importable there.
    """
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site_packages, "outer_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    return python


def run_isolated(python: Path, script: str, directory: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `script` offline, outside the repository, with a private Hub cache."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(directory / "hf_home"), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [str(python), "-c", script], cwd=directory, env=env, capture_output=True, text=True, timeout=timeout
    )


IMPORT_GUARD = """
import importlib.util
for package in ("modeling_crema", "crema_processing", "crema_training"):
    assert importlib.util.find_spec(package) is None, package + " must not be importable here"
"""
