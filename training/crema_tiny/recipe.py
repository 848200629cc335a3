"""The end-to-end crema-tiny recipe, on CPU in minutes:

    python -m crema_training.crema_tiny.recipe --work /tmp/crema-tiny-work --out modeling_crema/pretrained

1. CREMA-Synth (one-object clips, options in the vocabulary's fixed order) is generated into `--work`.
2. A tiny BLIP-2-shaped backbone + word-level tokenizer is built; its ViT is trained alone as a frame classifier of
   the RGB attributes (colour, shape; in a process of its own, beside the audio encoder's training), then frozen
   while the rest is pre-trained on per-rendering QA (RGB, flow, depth, normals, thermal, and the audio track through
   the audio encoder: a tiny AST trained on its own to count beeps and tell their pitch, then frozen); then
   everything is frozen (LLM included).
3. CREMA is built from them with `from_blip2` (video, audio, flow, depth, normal, thermal + self-gated fusion) and
   its adapters are trained with `CremaTrainer` (modality-sequential, adaptive early exit) on cached frozen
   features.
4. The model is saved with its processor to `--out/crema-tiny`, each adapter to `--out/crema-tiny-<modality>`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .backbone import IMAGE_SIZE
from .crema_stage import AUDIO_ENCODER_FOLDER

QUESTION_TYPES = ("color", "shape", "motion", "depth", "hot", "orientation", "beeps", "pitch")
#: RGB, the clip's audio track, the flow derived from the RGB, and the depth / normal / thermal companion renders.
MODALITIES = ("video", "audio", "flow", "depth", "normal", "thermal")
TARGET_TYPES = QUESTION_TYPES
#: Epochs of the CREMA stage: twelve, as batches of whole clips with LoRA dropout generalised best on this CPU (README).
CREMA_EPOCHS = 12
#: Adapters may exit after the 6th epoch (0-indexed 5, the paper's) of 12, at τ 1.4. In the committed run audio,
#: normal and thermal do: 25 % of the adapter updates saved, for 2.5 points against the same run without exits.
EARLY_EXIT_START_EPOCH = 5
#: τ of the exit rule: an adapter exits when its epoch's gradient norm passes τ times the mean of its earlier epochs.
EARLY_EXIT_TAU = 1.4
#: Whether a sequential sub-step reuses the other modalities' MMQA outputs (`reuse_modality_embeddings`). The
#: committed model was trained recomputing them in every sub-step; reusing them made the CREMA stage faster, but over two
#: seeds it scored 92.0 % held out against 95.9 % (README).
REUSE_MODALITY_EMBEDDINGS = False
#: Whether the frozen Q-Former keeps its dropout while the adapters train (`qformer_dropout`), as BLIP-2's does. Off,
#: reusing is exact, but over two seeds it scored 92.0 % too: the fresh dropout of every sub-step helps (README).
QFORMER_DROPOUT = True
#: Whether the CREMA stage's batches hold whole clips (all eight questions of each), each clip's modalities encoded
#: once per sub-step instead of once per question (`clip_column`): the stage runs about twice as fast.
GROUP_BY_CLIP = True
#: Dropout on the input of every MMQA LoRA while the adapters train (the reference's value): without it the CREMA
#: stage overfits the training questions (README).
LORA_DROPOUT = 0.1
#: Epochs of the first stage that trains the ViT alone: shape is learned after about 60 (held out, 98 % at 75).
VISION_EPOCHS = 80
#: The question types of the first stage that trains the ViT alone as a frame classifier (`--vision-epochs`).
VISION_TYPES = ("color", "shape")
#: Epochs of the audio encoder's own training, and the extra rendered tracks it needs besides the clips' (held out:
#: 100 % on beep counts and pitch from epoch 14 on).
AUDIO_EPOCHS = 30
AUDIO_TRACKS = 3000
#: Where the ViT stage's output is kept inside the work folder.
VISION_FOLDER = "vision_encoder"
#: The processed data inside the work folder (every stage's input).
PROCESSED_FILE = "processed.pt"


def log(line: str) -> None:
    """Each stage's progress, flushed at once (stages run for minutes, some in a process of their own)."""
    print(line, flush=True)


def question_templates(types=QUESTION_TYPES) -> list[dict]:
    """The CREMA-Synth templates crema-tiny is trained on, as `CremaConfig.question_templates` stores them."""
    from ..synth.vocabulary import TEMPLATES_BY_NAME

    return [{"question": TEMPLATES_BY_NAME[name].text, "options": list(TEMPLATES_BY_NAME[name].options),
             "needs": list(TEMPLATES_BY_NAME[name].needed_modalities)} for name in types]


def prepare_data(work: Path, train_clips: int, test_clips: int, seed: int = 0,
                 object_radius: tuple[float, float] | None = None, image_size: int = IMAGE_SIZE):
    from ..synth import generate_crema_synth, load_crema_synth
    from .backbone import build_tokenizer
    from .data import make_processor, process_split

    cache = work / PROCESSED_FILE
    if cache.exists():
        return torch.load(cache, weights_only=False)
    synth = work / "synth"
    if (synth / "dataset").is_dir():
        dataset = load_crema_synth(synth)
    else:
        dataset = generate_crema_synth(synth, {"train": train_clips, "test": test_clips}, seed=seed,
                                       question_types=QUESTION_TYPES, shuffle_options=False,
                                       object_radius=object_radius, num_workers=2, overwrite=True)
    processor = make_processor(build_tokenizer(), image_size=image_size)
    train = process_split(dataset["train"], processor)
    test = process_split(dataset["test"], processor)
    # each clip's scene (what it was drawn with): the audio encoder's labels
    scenes = {split: {row["clip_id"]: json.loads(row["scene"]) for row in dataset[split]} for split in ("train", "test")}
    data = {"train": train, "test": test, "scenes": scenes, "synth": str(synth)}
    torch.save(data, cache)
    return data


def pretrain_audio(work: Path, data, epochs: int, tracks: int) -> Path:
    """Trains the audio encoder alone on the train clips' tracks plus `tracks` rendered ones; returns its folder."""
    from .audio_encoder import clip_tracks, pretrain_audio_encoder, rendered_tracks
    from .backbone import build_audio_encoder, build_tokenizer, count_parameters
    from .data import make_processor

    folder = work / "backbone" / AUDIO_ENCODER_FOLDER
    if (folder / "config.json").exists():
        return folder
    scenes = {clip_id: scene for split in ("train", "test") for clip_id, scene in data["scenes"][split].items()}
    extra = rendered_tracks(make_processor(build_tokenizer()), tracks)
    own = clip_tracks(data["train"][0], scenes)
    train = (torch.cat([extra[0], own[0]]), torch.cat([extra[1], own[1]]))
    encoder = build_audio_encoder()
    print(f"audio encoder: {count_parameters(encoder):,} parameters", flush=True)
    accuracy = pretrain_audio_encoder(encoder, train, clip_tracks(data["test"][0], scenes), epochs=epochs, log=log)
    print("audio encoder held-out accuracy:", json.dumps(accuracy), flush=True)
    encoder.save_pretrained(folder)
    return folder


def vision_stage(work: Path, data, epochs: int, image_size: int = IMAGE_SIZE) -> Path:
    """Trains the ViT alone as a colour / shape frame classifier (`pretrain.pretrain_vision_encoder`) and saves it
    to `work/vision_encoder` in one step, so that a rerun (or an interrupted one) resumes after it."""
    from modeling_crema.saving import atomic_directory

    from .backbone import build_backbone, build_tokenizer
    from .pretrain import pretrain_vision_encoder

    folder = work / VISION_FOLDER
    if (folder / "config.json").exists():
        return folder
    blip2 = build_backbone(build_tokenizer(), image_size=image_size)  # seeded: the same start as the QA stage's
    rows = rows_of(data, "train", types=VISION_TYPES)
    pretrain_vision_encoder(blip2, data["train"][0], rows, epochs=epochs, log=log)
    with atomic_directory(folder) as staging:
        blip2.vision_model.save_pretrained(staging)
    return folder


def _vision_stage_process(work: str, epochs: int, image_size: int, threads: int) -> None:
    """`vision_stage` in a process of its own, beside the audio encoder's (both read only the processed data)."""
    torch.set_num_threads(threads)
    work_path = Path(work)
    vision_stage(work_path, torch.load(work_path / PROCESSED_FILE, weights_only=False), epochs, image_size)


def start_vision_stage(work: Path, epochs: int, image_size: int, threads: int):
    """Starts the ViT stage in a spawned process (None when its output exists or the stage is off); `finish_stage`
    waits for it."""
    import multiprocessing

    if not epochs or (work / VISION_FOLDER / "config.json").exists() or (work / "backbone" / "config.json").exists():
        return None
    process = multiprocessing.get_context("spawn").Process(
        target=_vision_stage_process, args=(str(work), epochs, image_size, threads), name="vision-stage")
    process.start()
    return process


def finish_stage(process) -> None:
    if process is None:
        return
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"The {process.name} process failed (exit code {process.exitcode}); its error is above. "
                           "Rerun the recipe: stages whose output exists are skipped.")


def pretrain_backbone(work: Path, data, epochs: int, vision_epochs: int, audio_encoder_folder: Path,
                      freeze_vision: bool = True, image_size: int = IMAGE_SIZE):
    """The ViT stage (unless a process beside the audio encoder's already ran it), then QA pre-training of the rest
    on every rendering, the audio track read through the frozen audio encoder."""
    from transformers import AutoModel, Blip2VisionModel

    from .backbone import build_backbone, build_tokenizer, count_parameters
    from .pretrain import letter_accuracy, pretrain

    folder = work / "backbone"
    tokenizer = build_tokenizer()
    if (folder / "config.json").exists():
        return folder, tokenizer
    blip2 = build_backbone(tokenizer, image_size=image_size)
    print(f"backbone: {count_parameters(blip2):,} parameters", flush=True)
    clips, rows = data["train"][0], rows_of(data, "train")
    if vision_epochs:
        vision_folder = vision_stage(work, data, vision_epochs, image_size)
        blip2.vision_model.load_state_dict(Blip2VisionModel.from_pretrained(vision_folder).state_dict())
        print(f"ViT stage loaded from {vision_folder}", flush=True)
    audio_encoder = AutoModel.from_pretrained(audio_encoder_folder).eval().requires_grad_(False)
    # a ViT without its own stage is left trainable: frozen at random initialisation it would see nothing
    pretrain(blip2, tokenizer, clips, rows, epochs=epochs, freeze_vision=freeze_vision and vision_epochs > 0,
             audio_encoder=audio_encoder, log=log)
    accuracy = letter_accuracy(blip2, tokenizer, *data["test"], audio_encoder=audio_encoder)
    print("backbone held-out accuracy per rendering:", json.dumps(accuracy), flush=True)
    blip2.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def rows_of(data, split: str, types=TARGET_TYPES):
    clips, rows = data[split]
    return [r for r in rows if r["question_type"] in types]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="crema-tiny-work", help="scratch folder (data, backbone, runs)")
    parser.add_argument("--out", default="modeling_crema/pretrained", help="where crema-tiny(-<m>) are saved")
    parser.add_argument("--train-clips", type=int, default=600)
    parser.add_argument("--test-clips", type=int, default=50)
    parser.add_argument("--object-radius", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="CREMA-Synth object radius range, fractions of the frame side (default 0.06 0.12)")
    parser.add_argument("--vision-epochs", type=int, default=VISION_EPOCHS,
                        help=f"first train the ViT alone as a colour / shape frame classifier "
                             f"({VISION_EPOCHS}; 0: off)")
    parser.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the ViT as its own stage left it during the QA pre-training "
                             "(default; off with --vision-epochs 0)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help=f"frame side in pixels ({IMAGE_SIZE})")
    parser.add_argument("--audio-epochs", type=int, default=AUDIO_EPOCHS,
                        help=f"the audio encoder, trained alone to count beeps and tell pitch ({AUDIO_EPOCHS})")
    parser.add_argument("--audio-tracks", type=int, default=AUDIO_TRACKS,
                        help=f"extra rendered tracks for the audio encoder ({AUDIO_TRACKS})")
    parser.add_argument("--pretrain-epochs", type=int, default=24,
                        help="the backbone (all but the ViT by default), on per-rendering QA")
    parser.add_argument("--epochs", type=int, default=CREMA_EPOCHS, help=f"of the CREMA stage ({CREMA_EPOCHS})")
    parser.add_argument("--early-exit-start-epoch", type=int, default=EARLY_EXIT_START_EPOCH,
                        help=f"first (0-indexed) epoch after which an adapter may exit ({EARLY_EXIT_START_EPOCH})")
    parser.add_argument("--early-exit-tau", type=float, default=EARLY_EXIT_TAU,
                        help=f"τ of the early-exit rule ({EARLY_EXIT_TAU})")
    parser.add_argument("--reuse-modality-embeddings", action=argparse.BooleanOptionalAction,
                        default=REUSE_MODALITY_EMBEDDINGS,
                        help="reuse the other modalities' MMQA outputs in each sequential sub-step (faster; off by "
                             "default, as the committed model was trained)")
    parser.add_argument("--qformer-dropout", action=argparse.BooleanOptionalAction, default=QFORMER_DROPOUT,
                        help="the frozen Q-Former's dropout while the adapters train (on by default, as the "
                             "committed model was trained; off, reused MMQA outputs are exact)")
    parser.add_argument("--group-by-clip", action=argparse.BooleanOptionalAction, default=GROUP_BY_CLIP,
                        help="CREMA stage batches of whole clips, each clip encoded once per sub-step (on by default)")
    parser.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT,
                        help=f"dropout on the MMQA LoRA inputs while the adapters train ({LORA_DROPOUT})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes: with 2 (the default) the ViT stage trains beside the audio encoder; "
                             "the results are the same as with 1")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(work, args.train_clips, args.test_clips, object_radius=args.object_radius,
                        image_size=args.image_size)
    print(f"data ready ({time.time() - start:.0f} s)", flush=True)
    # the ViT stage and the audio encoder need only the data: with --jobs 2 they train side by side
    vision_process = None
    if args.jobs > 1:
        vision_process = start_vision_stage(work, args.vision_epochs, args.image_size, args.threads)
    try:
        audio_encoder = pretrain_audio(work, data, args.audio_epochs, args.audio_tracks)
    except BaseException:
        if vision_process is not None:
            vision_process.terminate()
        raise
    print(f"audio encoder ready ({time.time() - start:.0f} s)", flush=True)
    finish_stage(vision_process)
    backbone, tokenizer = pretrain_backbone(work, data, args.pretrain_epochs, args.vision_epochs, audio_encoder,
                                            args.freeze_vision, args.image_size)
    print(f"backbone ready ({time.time() - start:.0f} s)", flush=True)

    from crema_processing import CremaProcessor

    from .crema_stage import build_crema, clip_features, evaluate, train_crema

    model = build_crema(backbone, tokenizer, MODALITIES, lora_dropout=args.lora_dropout)
    processor = CremaProcessor.from_model_config(model.config, tokenizer)
    features = clip_features(model, data["train"][0], MODALITIES)
    test_features = clip_features(model, data["test"][0], MODALITIES)
    trainer = train_crema(model, processor, rows_of(data, "train"), features, work / "run", epochs=args.epochs,
                          early_exit_start_epoch=args.early_exit_start_epoch, early_exit_tau=args.early_exit_tau,
                          reuse_modality_embeddings=args.reuse_modality_embeddings,
                          qformer_dropout=args.qformer_dropout, group_by_clip=args.group_by_clip)
    (work / "run" / "adapter_updates.json").write_text(json.dumps(trainer.adapter_updates) + "\n")
    trainer.early_exit.save(work / "run")  # early_exit.json: τ, exit epochs and each epoch's indicator
    result = evaluate(model, tokenizer, rows_of(data, "test"), test_features)
    print("crema-tiny held-out accuracy:", json.dumps(result), flush=True)
    model.config.question_templates = question_templates()
    target = out / "crema-tiny"
    model.save_pretrained(target)
    processor.save_pretrained(target)
    for m in MODALITIES:
        model.save_adapter(out / f"crema-tiny-{m}", m)
    print(f"saved {target} ({time.time() - start:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
