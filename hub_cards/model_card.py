"""The model card of a CREMA model folder (`README.md` of a model repo)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from huggingface_hub import ModelCard

from . import card_text
from .eval_results import EvalInput, eval_results_from
from .folder_facts import ModelFacts, read_model_facts
from .hub_rules import checked_card
from .marker import MARKER_LINE


def recorded_blip2(facts: ModelFacts) -> str | None:
    """The BLIP-2 Hub id the model was built from, as its adapters record it (`from_blip2` stores it in each
    adapter_config.json); None when unrecorded, a local path, or not the same for every adapter."""
    found = {card_text.hub_id(adapter.base_model_name_or_path) for adapter in facts.adapters.values()}
    return found.pop() if len(found) == 1 and None not in found else None


def _inputs(spec: dict[str, Any], config: dict[str, Any]) -> str:
    name, encoder = spec["name"], spec.get("encoder")
    if encoder == "vision":
        return f"`{name}_pixel_values` (B, T, 3, H, W)"
    if encoder == "audio" and config.get("audio_config"):
        return f"`{name}_input_values` (B, S, ...) for the audio encoder"
    if encoder == "point_cloud":
        return f"`{name}_features` (B, N, D), `{name}_coordinates` (B, N, 3), `{name}_attention_mask` (B, N)"
    return f"`{name}_features` (B, G, N, {spec.get('feature_size')})"


def _backbone(config: dict[str, Any]) -> str:
    vision, qformer, text = (config.get(key) or {} for key in ("vision_config", "qformer_config", "text_config"))
    parts = [
        f"ViT ({vision.get('num_hidden_layers', '?')} layers, width {vision.get('hidden_size', '?')})",
        f"Q-Former ({qformer.get('num_hidden_layers', '?')} layers, width {qformer.get('hidden_size', '?')})",
        f"{text.get('model_type', 'T5')} LLM ({text.get('num_layers', '?')} layers, width {text.get('d_model', '?')})",
    ]
    if config.get("audio_config"):
        parts.append(f"{config['audio_config'].get('model_type', 'audio')} audio encoder")
    return ", ".join(parts)


def _body(facts: ModelFacts, name: str, base_model: str | None, results: list) -> str:
    config, modalities = facts.config, facts.modalities
    fusion = facts.fusion_modalities
    listed = ", ".join(modalities) if modalities else "no modality yet"
    fused = (f" The self-gated fusion compresses the supportive modalities' tokens ({', '.join(fusion[1:])}) into one "
             f"block after the major modality's ({fusion[0]})." if fusion else
             " Without a fusion, every modality adds its own tokens to the LLM input.")
    overview = card_text.table(("", ""), [
        ("modalities (major first)", listed),
        ("fusion", f"self-gated, over {', '.join(fusion)}" if fusion else "none (concatenation)"),
        ("frames per clip", config.get("num_frames", "?")),
        ("query tokens per modality", config.get("num_query_tokens", "?")),
        ("LoRA", ", ".join(f"{m}: rank {a.rank}, alpha {a.alpha:g}" for m, a in facts.adapters.items()) or "-"),
        ("token layout", config.get("token_layout", "paper")),
        ("backbone (frozen)", _backbone(config)),
        ("built from", f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "not recorded"),
    ])
    rows = [(f"MMQA {m}", card_text.count(a.parameters), f"`adapters/{m}/`") for m, a in facts.adapters.items()]
    if fusion:
        rows.append((f"fusion ({len(fusion)} modalities)", card_text.count(facts.fusion_parameters), "`fusion/`"))
    rows.append(("total trainable", card_text.count(facts.trainable_parameters), ""))
    rows.append(("frozen backbone", card_text.count(facts.frozen_parameters), "`model.safetensors`"))
    parameters = card_text.table(("component", "parameters", "folder"), rows, ("---", "---:", "---"))
    inputs = card_text.table(("modality", "encoder", "inputs", "LLM prefix"), [
        (spec["name"], spec.get("encoder"), _inputs(spec, config), f"`{spec.get('prefix', '')}`")
        for spec in config.get("modalities") or []
    ]) if modalities else "This model has no modality adapter yet: add one with `model.add_modality(...)`."
    use = card_text.code("python", f'''
from transformers import AutoModel

# the modeling code ships with the repo: no `pip install crema-hf` needed
model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
''')
    if facts.custom_pipelines:
        use += "\n" + card_text.code("python", f'''
from transformers import pipeline

answerer = pipeline(model="{name}", trust_remote_code=True)  # task: {", ".join(facts.custom_pipelines)}
''')
    use += "\nWith the `crema` package (`pip install crema-hf`), from the command line:\n\n" + card_text.code("bash", f'''
crema answer {name} clip.mp4 --question "What is the person doing?" --option cooking --option dancing
''')
    use += ("\nEach modality is one PEFT adapter in `adapters/<modality>/`: swap one, or add another, without "
            "reloading the backbone:\n\n" + card_text.code("python", '''
model.load_adapter("path/or/hub-id-of-an-adapter", adapter_name="thermal")
'''))
    return (
        f"{MARKER_LINE}\n\n# {name.split('/')[-1]}\n\n"
        f"A [CREMA]({card_text.PAPER_URL}) video-language model: a frozen BLIP-2-style backbone that reads {listed} "
        f"through one PEFT adapter (MMQA: LoRA on the Q-Former plus the modality's query tokens and projections) "
        f"per modality.{fused} Only the adapters{' and the fusion' if fusion else ''} are trained.\n\n"
        f"{overview}\n\n## Inputs\n\n{inputs}\n\n## Trainable parameters\n\n{parameters}\n\n"
        f"## Use\n\n{use}\n{card_text.eval_section(results)}"
    )


def model_card(
    model: str | os.PathLike | ModelFacts,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: EvalInput | Sequence[EvalInput] | None = None,
    eval_dataset: str | None = None,
    model_name: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The card of a saved CREMA model (a folder or its `ModelFacts`), checked offline (`hub_rules.checked_card`).

    `repo_id`: the repo the card is for (used in its snippets; default the folder's name). `base_model`: the BLIP-2
    the model was built from (default: the one its adapters record, if it is a Hub id; left out when unknown).
    `eval_results`: `EvalResult`s, `crema eval` outputs or `{metric: value}` mappings (objects or JSON paths);
    a plain mapping was measured on `eval_dataset` (default: the first of `datasets`).
    """
    facts = model if isinstance(model, ModelFacts) else read_model_facts(model, check=False)
    name = repo_id or os.path.basename(os.path.normpath(facts.folder))
    base_model = base_model or recorded_blip2(facts)
    results = eval_results_from(eval_results, eval_dataset or (datasets[0] if datasets else None))
    data = card_text.card_data(
        name=name, library_name="transformers", modalities=facts.modalities, base_model=base_model,
        datasets=datasets, license=license, extra_tags=tags, results=results, model_name=model_name,
        crema={
            "modalities": facts.modalities,
            "fusion_modalities": facts.fusion_modalities,
            "trainable_parameters": {**{m: a.parameters for m, a in facts.adapters.items()},
                                     "fusion": facts.fusion_parameters, "total": facts.trainable_parameters},
            "frozen_parameters": facts.frozen_parameters,
        },
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(facts, name, base_model, results)}")
    return checked_card(card, data)
