"""The processor as remote code (`trust_remote_code=True`): it loads from a model folder without prompting or warning
in an interpreter that has never seen the crema packages, and its files import (and process in-memory inputs)
without the optional dependencies PyAV and OpenCV."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from transformers.dynamic_module_utils import get_imports

from clean_env import IMPORT_GUARD, python_without_crema, run_isolated
from crema_processing import CremaProcessor, CremaVideoProcessor
from media_fixtures import media_dir, video_with_audio  # noqa: F401  (pytest fixtures)
from tiny_models import tiny_crema_model


OPTIONAL = {"av", "cv2", "torchcodec"}


def test_auto_processor_from_a_model_folder_loads_silently(tmp_path, tokenizer):
    model = tiny_crema_model(["video"])
    directory = tmp_path / "crema-repo"
    model.save_pretrained(directory)
    CremaProcessor.from_model_config(model.config, tokenizer).save_pretrained(directory)
    script = IMPORT_GUARD + textwrap.dedent(
        f"""
        import io, sys
        sys.stdin = io.StringIO("")  # nobody to answer a prompt: an unexpected question fails at once
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(directory)!r}, trust_remote_code=True)
        print("CLASS", type(processor).__module__, type(processor).__name__)
        print("IDS", processor.tokenizer("Option A: cooking").input_ids)
        """
    )
    result = run_isolated(python_without_crema(tmp_path), script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "custom code" not in output, output[-3000:]
    assert "model of type" not in output, output[-3000:]
    assert "CremaProcessor" in result.stdout and "transformers_modules" in result.stdout
    assert f"IDS {tokenizer('Option A: cooking').input_ids}" in result.stdout


def test_saved_processor_files_import_no_optional_dependency(tmp_path, tokenizer):
    # transformers refuses a Hub repository whose remote-code files import a package that is not installed (it
    # scans every `import` statement outside try blocks); PyAV / OpenCV / torchcodec are only needed for one feature
    CremaProcessor(tokenizer).save_pretrained(tmp_path)
    files = sorted(tmp_path.glob("*.py"))
    names = {file.name for file in files}
    assert {"processing_crema.py", "video_decoding.py", "audio.py", "optional_dependencies.py"} <= names
    for file in files:
        assert not OPTIONAL & set(get_imports(file)), (file.name, get_imports(file))


def test_processor_without_pyav_and_opencv(tmp_path, tokenizer, video_with_audio):
    folder = tmp_path / "proc"
    video_processor = CremaVideoProcessor(num_frames=2, size={"height": 32, "width": 32})
    CremaProcessor(tokenizer, video_processor=video_processor).save_pretrained(folder)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["av"] = None  # `import av` / `import cv2` now raise ImportError, as where they are not installed
        sys.modules["cv2"] = None
        import numpy as np
        from PIL import Image
        from transformers import AutoProcessor
        from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        frames = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
        out = processor(videos=frames, question="q?", return_tensors="np")
        # 2 segments of 5 frames: [0, 2) and [2, 5), middles 0 and 3
        blip = BlipImageProcessorPil(size={{"height": 32, "width": 32}})
        expected = blip(images=[Image.fromarray(frames[i]) for i in (0, 3)], return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(out["video_pixel_values"][0], expected, rtol=0, atol=1e-5)
        wave = np.sin(np.arange(24000) / 16000 * 2 * np.pi * 440).astype(np.float32)
        audio = processor(audio=wave, sampling_rate=16000, question="q?", return_tensors="np")["audio_input_values"]
        print("AUDIO", audio.shape)
        calls = {{
            "video file": lambda: processor(videos={str(video_with_audio)!r}),
            "audio file": lambda: processor(audio={str(video_with_audio)!r}, question="q?"),
            "resampling": lambda: processor(audio=wave, sampling_rate=44100, question="q?"),
            "flow": lambda: processor(videos=frames, flow=True),
        }}
        for name, call in calls.items():
            try:
                call()
                print("NO ERROR", name)
            except ImportError as error:
                print("ERROR", name, "|", error)
        import crema_processing  # the installed package imports too
        print("DONE")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "AUDIO (1, 2, 512, 128)" in lines and lines[-1] == "DONE"
    errors = {line.split(" | ")[0][len("ERROR "):]: line.split(" | ")[1] for line in lines if line.startswith("ERROR")}
    assert set(errors) == {"video file", "audio file", "resampling", "flow"}, result.stdout
    for name in ("video file", "audio file", "resampling"):
        assert "`pip install av`" in errors[name], errors[name]
    assert "`pip install opencv-python-headless`" in errors["flow"], errors["flow"]
