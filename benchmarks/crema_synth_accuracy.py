"""Accuracy per question type of crema-tiny variants on the held-out CREMA-Synth test split (one-object clips),
printed as a markdown table. Reuses the recipe's work folder (data + frozen pre-trained backbone):

    python -m crema_training.crema_tiny.recipe --work crema-tiny-work        # once
    python benchmarks/crema_synth_accuracy.py --work crema-tiny-work --variants shipped,video,concat,joint,no_exit

Variants: `shipped` (the committed modeling_crema/pretrained/crema-tiny: V,F,T + fusion, sequential, early exit),
`shipped_video_only` (the same model answering with its video adapter only: the others give zeros to the fusion),
`video` (a CREMA trained with the video adapter only), `concat` (V,F,T without the fusion), `joint` (V,F,T + fusion,
joint updates), `no_exit` (V,F,T + fusion, sequential, early exit off). Multiple choice is ranked by the options'
log-likelihood, as `crema answer` does."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from crema_training.crema_tiny.backbone import build_tokenizer
    from crema_training.crema_tiny.crema_stage import build_crema, clip_features, evaluate, train_crema
    from crema_training.crema_tiny.recipe import MODALITIES, TARGET_TYPES, rows_of
    from crema_processing import CremaProcessor
    from modeling_crema import CremaForConditionalGeneration

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="crema-tiny-work")
    parser.add_argument("--model", default=str(ROOT / "modeling_crema" / "pretrained" / "crema-tiny"))
    parser.add_argument("--variants", default="shipped,shipped_video_only,video")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = torch.load(work / "processed.pt", weights_only=False)
    tokenizer = build_tokenizer()
    test_rows, train_rows = rows_of(data, "test"), rows_of(data, "train")
    results = {}
    for variant in args.variants.split(","):
        start = time.time()
        if variant.startswith("shipped"):
            model = CremaForConditionalGeneration.from_pretrained(args.model)
            used = ["video"] if variant == "shipped_video_only" else None
            features = clip_features(model, data["test"][0], model.config.modality_names)
            results[variant] = evaluate(model, tokenizer, test_rows, features, modalities=used)
        else:
            modalities = ["video"] if variant == "video" else list(MODALITIES)
            model = build_crema(work / "backbone", tokenizer, modalities, fusion=variant != "concat")
            processor = CremaProcessor.from_model_config(model.config, tokenizer)
            train_features = clip_features(model, data["train"][0], modalities)
            schedule = "joint" if variant == "joint" else "sequential"
            train_crema(model, processor, train_rows, train_features, work / f"bench-{variant}", epochs=args.epochs,
                        schedule=schedule, early_exit=variant != "no_exit")
            results[variant] = evaluate(model, tokenizer, test_rows, clip_features(model, data["test"][0], modalities))
        print(f"{variant}: {results[variant]} ({time.time() - start:.0f} s)", flush=True)
    columns = list(TARGET_TYPES) + ["all"]
    print("\n| variant | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for variant, result in results.items():
        print(f"| {variant} | " + " | ".join(f"{100 * result[c]:.0f}" for c in columns) + " |")
    print(f"\n{len(test_rows)} held-out questions ({len(data['test'][0])} clips).")


if __name__ == "__main__":
    main()
