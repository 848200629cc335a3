"""`crema extract VIDEO --modalities flow,depth,normal,audio --out DIR`: the modalities of one raw video with no
hand-made pipeline (DESIGN §5). Writes the rendered frames (PNG), the model-ready tensors (safetensors, never
pickle) and a preview grid (frames x modalities)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save_file
from tqdm.auto import tqdm
from transformers.utils import logging

from .audio import CremaAudioFeatureExtractor, load_audio
from .depth import DEPTH_COLORMAPS, DEPTH_MODEL_HINT
from .frame_sampling import SAMPLING_MODES
from .video_processing_crema import DERIVED_MODALITIES, CremaVideoProcessor


logger = logging.get_logger(__name__)

EXTRACTABLE = DERIVED_MODALITIES + ("audio", "thermal", "touch")


def _modalities(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in EXTRACTABLE and n != "video"]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown modalities {unknown}; choose from {', '.join(EXTRACTABLE)}")
    return [n for n in names if n != "video"]


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `crema extract`."""
    parser.add_argument("video", help="input video file (or a folder of frames)")
    parser.add_argument(
        "--modalities", type=_modalities, default=["flow"],
        help=f"comma-separated modalities to extract besides the RGB frames: {', '.join(EXTRACTABLE)} (default: flow)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-frames", type=int, default=4, help="frames T sampled by uniform segments (default 4)")
    parser.add_argument("--depth-model", default=None, help="depth-estimation model id or path (for depth, normal)")
    parser.add_argument("--depth-colormap", default="gray", choices=sorted(DEPTH_COLORMAPS),
                        help="colour map of the rendered depth frames (default: gray)")
    parser.add_argument("--image-size", type=int, default=224, help="ViT input size of the saved pixel values")
    parser.add_argument("--sampling", choices=SAMPLING_MODES, default="uniform", help="frame sampling mode")
    parser.add_argument("--fps", type=float, default=None, help="frame rate for --sampling fps")
    parser.add_argument("--max-side", type=int, default=1024, help="decode frames with their long side at most this")
    parser.add_argument("--thermal", default=None, help="companion thermal clip (video or frame folder)")
    parser.add_argument("--touch", default=None, help="companion touch clip (video or frame folder)")
    parser.add_argument("--audio-file", default=None, help="audio source if not the video's own track")
    parser.add_argument("--audio-segments", type=int, default=2, help="audio segments S (default 2)")
    parser.add_argument("--audio-segment-length", type=int, default=512, help="fbank frames per segment (512)")
    parser.add_argument("--no-preview", action="store_true", help="skip the preview image")


def _error(message: str) -> int:
    print(f"crema extract: error: {message}", file=sys.stderr)
    return 2


def run_extract(args: argparse.Namespace) -> int:
    """Run `crema extract`; returns the exit status (2 with a message on bad input)."""
    modalities: list[str] = list(args.modalities)
    needs_depth = [m for m in modalities if m in ("depth", "normal")]
    if needs_depth and not args.depth_model:
        return _error(
            f"the {' and '.join(repr(m) for m in needs_depth)} modality needs a depth-estimation model: pass "
            f"--depth-model ID_OR_PATH ({DEPTH_MODEL_HINT})."
        )
    companions = {}
    for name in ("thermal", "touch"):
        path = getattr(args, name)
        if name in modalities and not path:
            return _error(f"the '{name}' modality is read from a companion clip: pass --{name} PATH.")
        if path:
            companions[name] = path
            if name not in modalities:
                modalities.append(name)
    if args.sampling == "fps" and not args.fps:
        return _error("--sampling fps needs --fps RATE.")
    video = Path(args.video)
    if not video.exists():
        return _error(f"input video '{video}' does not exist.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    processor = CremaVideoProcessor(
        num_frames=args.num_frames,
        frame_sampling=args.sampling,
        sample_fps=args.fps,
        max_decode_side=args.max_side,
        depth_model_name_or_path=args.depth_model,
        depth_colormap=args.depth_colormap,
        size={"height": args.image_size, "width": args.image_size},
    )
    visual = ["video"] + [m for m in modalities if m in DERIVED_MODALITIES]
    steps = ["decode and render frames", "normalise pixel values"]
    steps += ["audio features"] if "audio" in modalities else []
    steps += ["write files"] + ([] if args.no_preview else ["preview"])
    tensors: dict[str, np.ndarray] = {}
    try:
        with tqdm(total=len(steps), desc="crema extract", unit="step") as progress:
            progress.set_postfix_str(steps[0])
            rendered = processor.render_clip(str(video), visual, companions)
            progress.update()

            progress.set_postfix_str(steps[1])
            for name, images in rendered.images.items():
                tensors[f"{name}_pixel_values"] = processor.images_to_pixel_values(images)
                tensors[f"{name}_frame_indices"] = np.asarray(rendered.frame_indices[name], dtype=np.int64)
            progress.update()

            fbank = None
            if "audio" in modalities:
                progress.set_postfix_str("audio features")
                extractor = CremaAudioFeatureExtractor(
                    num_segments=args.audio_segments, segment_length=args.audio_segment_length
                )
                waveform = load_audio(args.audio_file or str(video), sampling_rate=extractor.sampling_rate)
                fbank = extractor(waveform, sampling_rate=extractor.sampling_rate)["input_values"][0]
                tensors["audio_input_values"] = fbank
                progress.update()

            progress.set_postfix_str("write files")
            written = _write_frames(out, rendered)
            metadata = {
                "video": str(video),
                "modalities": ",".join(rendered.images) + (",audio" if fbank is not None else ""),
                "num_frames": str(args.num_frames),
                "num_total_frames": str(rendered.num_total_frames),
                "frame_indices": json.dumps(rendered.frame_indices),
                "image_size": str(args.image_size),
            }
            arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            save_file(arrays, str(out / "features.safetensors"), metadata)
            (out / "extract.json").write_text(json.dumps({**metadata, "files": written}, indent=2) + "\n")
            progress.update()

            if not args.no_preview:
                progress.set_postfix_str("preview")
                preview_grid(rendered.images, fbank).save(out / "preview.png")
                progress.update()
    except (ValueError, FileNotFoundError) as error:
        return _error(str(error))
    print(f"Wrote {len(written)} frame images, features.safetensors" + ("" if args.no_preview else " and preview.png")
          + f" to {out}")
    return 0


def _write_frames(out: Path, rendered: Any) -> list[str]:
    written = []
    for name, images in rendered.images.items():
        folder = out / "frames" / name
        folder.mkdir(parents=True, exist_ok=True)
        for slot, (image, index) in enumerate(zip(images, rendered.frame_indices[name])):
            path = folder / f"{slot:02d}_frame{index:06d}.png"
            Image.fromarray(image).save(path)
            written.append(str(path.relative_to(out)))
    return written


def preview_grid(images: dict[str, list[np.ndarray]], fbank: np.ndarray | None = None, cell: int = 128) -> Image.Image:
    """A grid with one row per modality and one column per frame (plus the audio fbank as a last row)."""
    label_width = 110
    columns = max(len(v) for v in images.values())
    first = next(iter(images.values()))[0]
    cell_w = max(1, round(cell * first.shape[1] / first.shape[0]))
    rows = len(images) + (1 if fbank is not None else 0)
    canvas = Image.new("RGB", (label_width + columns * cell_w, rows * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, frames) in enumerate(images.items()):
        draw.text((6, r * cell + cell // 2 - 6), name, fill="black")
        for c, frame in enumerate(frames):
            thumb = Image.fromarray(frame).resize((cell_w, cell), Image.Resampling.BILINEAR)
            canvas.paste(thumb, (label_width + c * cell_w, r * cell))
    if fbank is not None:
        spectrum = np.concatenate(list(fbank), axis=0).T[::-1]  # (mel, time), low frequencies at the bottom
        low, high = float(spectrum.min()), float(spectrum.max())
        grey = np.zeros_like(spectrum, dtype=np.uint8) if high - low < 1e-12 else (
            (spectrum - low) / (high - low) * 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap(np.ascontiguousarray(grey), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        strip = Image.fromarray(colour).resize((columns * cell_w, cell), Image.Resampling.BILINEAR)
        canvas.paste(strip, (label_width, (rows - 1) * cell))
        draw.text((6, (rows - 1) * cell + cell // 2 - 6), "audio", fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m crema_processing.extract ...`)."""
    parser = argparse.ArgumentParser(prog="crema extract", description=__doc__)
    add_extract_arguments(parser)
    return run_extract(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
