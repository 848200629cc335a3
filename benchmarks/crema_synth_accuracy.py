"""Accuracy per question type of crema-tiny and its ablations on the held-out CREMA-Synth test split (one-object
clips), printed as a markdown table. Reuses the recipe's work folder (data + frozen pre-trained backbone):

    python -m crema_training.crema_tiny.recipe --work crema-tiny-work        # once
    python benchmarks/crema_synth_accuracy.py --work crema-tiny-work --variants shipped,video,concat,joint,no_exit

Variants: `shipped` (the committed modeling_crema/pretrained/crema-tiny: V,A,F,D,N,H + fusion, sequential, early
exit), `shipped_video_only` (the same model answering with its video adapter only: the others give zeros to the
fusion), `shipped_without_<m>` (the same model with modality m left out), `video` (a CREMA trained with the video
adapter only), `video_audio` (a CREMA trained with the video and audio adapters and their fusion), `concat`
(every modality, no fusion), `joint` (fusion, joint updates), `no_exit` (fusion,
sequential, early exit off), `concat_no_exit` (concat with early exit off: compares the two fusions without the
exits' effect), `fusion_add` and `fusion_add_no_exit` (the fusion in the authors' "reference_add" token layout: the
fused tokens are added to the video tokens, so the LLM sees as many visual tokens as with video only; with and
without early exit), `sequential` (fusion, sequential, early exit: the recipe's CREMA stage again, e.g. with another
`--early-exit-tau` / `--early-exit-start-epoch`). Every trained variant uses the recipe's settings and seed
unless `--reuse-modality-embeddings` (reuse the other modalities' MMQA outputs in each sequential sub-step),
`--no-qformer-dropout` (the frozen Q-Former without dropout while the adapters train), `--no-group-by-clip` (batches
of single questions, each question's clip encoded again), `--epochs`, `--lora-dropout` or
`--seed` (new adapters, training order and dropout drawn from another seed) says otherwise;
`shipped` reads its adapter update counts and exits from the recipe's `WORK/run/adapter_updates.json` and
`early_exit.json`. The JSON output
(`--json`) also holds each trained variant's exit epochs and per-epoch exit indicators (kept with early exit off
too, so what another τ would have done can be read from them). Multiple choice is ranked by the options'
log-likelihood, as `crema answer` does. "LLM visual tokens" is the LLM input length minus the prompt's."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def visual_token_count(model, features, rows, modalities=None) -> int:
    """LLM input length minus the prompt's, for one test question."""
    row = rows[0]
    names = list(model.config.modality_names) if modalities is None else list(modalities)
    inputs = {f"{m}_features": features[row["clip_id"]][m].unsqueeze(0) for m in names}
    input_ids = torch.tensor([row["input_ids"]])
    kwargs = {} if modalities is None else {"modalities": names}
    prepared = model.prepare_language_model_inputs(input_ids, torch.ones_like(input_ids), **inputs, **kwargs)
    return int(prepared.inputs_embeds.shape[1]) - input_ids.shape[1]


#: The variants trained here (the `shipped*` ones read the committed model).
TRAINED_VARIANTS = ("video", "video_audio", "concat", "joint", "no_exit", "concat_no_exit", "fusion_add",
                    "fusion_add_no_exit", "sequential")
#: The modalities of the variants trained with fewer than all of the recipe's.
VARIANT_MODALITIES = {"video": ["video"], "video_audio": ["video", "audio"]}


def check_variant(variant: str, modalities) -> None:
    """Refuses a misspelt variant before any training starts (any unknown name would otherwise train a fusion)."""
    shipped = {"shipped", "shipped_video_only"} | {f"shipped_without_{m}" for m in modalities}
    if variant not in shipped and variant not in TRAINED_VARIANTS:
        raise SystemExit(f"Unknown variant {variant!r}: choose from {sorted(shipped)} and {list(TRAINED_VARIANTS)}.")


def percent(fraction: float) -> str:
    """A table cell: "82.5", not "82" (400 questions give quarter points overall, 50 whole ones per type)."""
    return f"{100 * fraction:.2f}".rstrip("0").rstrip(".")


def exit_summary(state: dict) -> dict:
    """The exit epochs and each epoch's indicators and gradient norms, from an early-exit state."""
    return {key: state[key] for key in ("tau", "start_epoch", "exited", "indicators", "history")}


def main() -> None:
    from crema_processing import CremaProcessor
    from crema_training.crema_tiny.backbone import build_tokenizer
    from crema_training.crema_tiny.crema_stage import build_crema, clip_features, evaluate, train_crema
    from crema_training.crema_tiny.recipe import (CREMA_EPOCHS, EARLY_EXIT_START_EPOCH, EARLY_EXIT_TAU, GROUP_BY_CLIP,
                                                  LORA_DROPOUT, MODALITIES, QFORMER_DROPOUT, REUSE_MODALITY_EMBEDDINGS,
                                                  TARGET_TYPES, rows_of)
    from modeling_crema import CremaForConditionalGeneration

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="crema-tiny-work")
    parser.add_argument("--model", default=str(ROOT / "modeling_crema" / "pretrained" / "crema-tiny"))
    parser.add_argument("--variants", default="shipped,shipped_video_only,video,concat,joint,no_exit")
    parser.add_argument("--epochs", type=int, default=CREMA_EPOCHS, help="as the recipe's --epochs")
    parser.add_argument("--early-exit-start-epoch", type=int, default=EARLY_EXIT_START_EPOCH, help="as the recipe's")
    parser.add_argument("--early-exit-tau", type=float, default=EARLY_EXIT_TAU, help="as the recipe's")
    parser.add_argument("--reuse-modality-embeddings", action=argparse.BooleanOptionalAction,
                        default=REUSE_MODALITY_EMBEDDINGS, help="as the recipe's")
    parser.add_argument("--group-by-clip", action=argparse.BooleanOptionalAction, default=GROUP_BY_CLIP,
                        help="as the recipe's")
    parser.add_argument("--qformer-dropout", action=argparse.BooleanOptionalAction, default=QFORMER_DROPOUT,
                        help="as the recipe's")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw the new adapters and the training order and dropout from this seed (default: the "
                             "recipe's seeds)")
    parser.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT, help="as the recipe's")
    parser.add_argument("--llm-dropout", action=argparse.BooleanOptionalAction, default=False,
                        help="the frozen LLM's dropout while the adapters train (off, as in the recipe)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = torch.load(work / "processed.pt", weights_only=False)  # the recipe's own cache
    tokenizer = build_tokenizer()
    test_rows, train_rows = rows_of(data, "test"), rows_of(data, "train")
    results = {}
    variants = args.variants.split(",")
    for variant in variants:
        check_variant(variant, MODALITIES)
    for variant in variants:
        start = time.time()
        updates = early_exit = None
        if variant.startswith("shipped"):
            model = CremaForConditionalGeneration.from_pretrained(args.model)
            used = None
            if variant == "shipped_video_only":
                used = ["video"]
            elif variant.startswith("shipped_without_"):
                used = [m for m in model.config.modality_names if m != variant.removeprefix("shipped_without_")]
            features = clip_features(model, data["test"][0], model.config.modality_names)
            result = evaluate(model, tokenizer, test_rows, features, modalities=used)
            run = work / "run"  # the recipe's CREMA run, if this work folder made the shipped model
            if variant == "shipped" and (run / "adapter_updates.json").exists():
                updates = json.loads((run / "adapter_updates.json").read_text())
                if (run / "early_exit.json").exists():
                    early_exit = exit_summary(json.loads((run / "early_exit.json").read_text()))
            tokens = visual_token_count(model, features, test_rows, used)
        else:
            modalities = VARIANT_MODALITIES.get(variant, list(MODALITIES))
            model = build_crema(work / "backbone", tokenizer, modalities, fusion=not variant.startswith("concat"),
                                lora_dropout=args.lora_dropout,
                                token_layout="reference_add" if variant.startswith("fusion_add") else "paper",
                                **({} if args.seed is None else {"seed": args.seed}))
            processor = CremaProcessor.from_model_config(model.config, tokenizer)
            train_features = clip_features(model, data["train"][0], modalities)
            schedule = "joint" if variant == "joint" else "sequential"
            trainer = train_crema(model, processor, train_rows, train_features, work / f"bench-{variant}",
                                  epochs=args.epochs, schedule=schedule, early_exit=not variant.endswith("no_exit"),
                                  early_exit_start_epoch=args.early_exit_start_epoch,
                                  early_exit_tau=args.early_exit_tau,
                                  reuse_modality_embeddings=args.reuse_modality_embeddings,
                                  qformer_dropout=args.qformer_dropout, group_by_clip=args.group_by_clip,
                                  llm_dropout=args.llm_dropout,
                                  **({} if args.seed is None else {"seed": args.seed}))
            updates = trainer.adapter_updates
            # the indicators are kept with early exit off too: what any τ would have done can be read from them
            early_exit = exit_summary(trainer.early_exit.state_dict())
            features = clip_features(model, data["test"][0], modalities)
            result = evaluate(model, tokenizer, test_rows, features)
            tokens = visual_token_count(model, features, test_rows)
        results[variant] = {"accuracy": result, "visual_tokens": tokens, "adapter_updates": updates,
                            "early_exit": early_exit}
        print(f"{variant}: {json.dumps(results[variant])} ({time.time() - start:.0f} s)", flush=True)

    columns = list(TARGET_TYPES) + ["all"]
    print("\n| variant | " + " | ".join(columns) + " | LLM visual tokens | adapter updates |")
    print("|---|" + "---|" * (len(columns) + 2))
    for variant, entry in results.items():
        accuracy, updates = entry["accuracy"], entry["adapter_updates"]
        cells = [percent(accuracy[c]) if c in accuracy else "-" for c in columns]
        total = "-" if updates is None else f"{sum(updates.values()):,}"
        print(f"| {variant} | " + " | ".join(cells) + f" | {entry['visual_tokens']} | {total} |")
    print(f"\n{len(test_rows)} held-out questions ({len(data['test'][0])} clips).")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
