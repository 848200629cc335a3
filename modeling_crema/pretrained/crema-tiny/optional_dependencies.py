"""Dependencies that only one feature needs, imported when that feature is used: a processor loaded as remote code
(`trust_remote_code=True`) must import, and work on in-memory inputs, on a machine without them.

They are imported by name through `importlib` on purpose: transformers scans remote-code files for `import`
statements and refuses to load a Hub repository whose imports are not all installed."""

from __future__ import annotations

import importlib
from types import ModuleType


def require_module(module: str, package: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an ImportError that says what needs it and which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{module}` module, which is not installed: `pip install {package}`."
        ) from error


def require_av(purpose: str = "Decoding video and audio files") -> ModuleType:
    """PyAV, for decoding files (video frames, audio tracks) and resampling audio. In-memory frames and waveforms
    already at the feature extractor's sampling rate do not need it."""
    return require_module("av", "av", purpose + " (PyAV)")


def require_cv2(purpose: str) -> ModuleType:
    """OpenCV, for optical flow (Farneback) and coloured depth maps."""
    return require_module("cv2", "opencv-python-headless", purpose)
