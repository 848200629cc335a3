"""The card of one modality adapter (`README.md` of an adapter repo: a plain PEFT folder)."""

from __future__ import annotations

import os
from typing import Sequence

from huggingface_hub import ModelCard

from . import card_text
from .eval_results import EvalInput, eval_results_from
from .folder_facts import AdapterFacts, read_adapter_facts
from .hub_rules import checked_card
from .marker import MARKER_LINE


def _snippet(name: str, modality: str, base_model: str | None, blip2: str | None) -> str:
    if base_model and base_model != blip2:  # a CREMA model repo: its own code loads it
        return card_text.code("python", f'''
from transformers import AutoModel

model = AutoModel.from_pretrained("{base_model}", trust_remote_code=True)
model.load_adapter("{name}", adapter_name="{modality}")  # adds (or hot-swaps) the {modality} adapter
''')
    if blip2:  # the BLIP-2 it was built on: build CREMA from it (needs `pip install crema-hf`)
        return card_text.code("python", f'''
from modeling_crema import CremaForConditionalGeneration

model = CremaForConditionalGeneration.from_blip2("{blip2}", modalities=[])
model.load_adapter("{name}", adapter_name="{modality}")
''')
    return card_text.code("python", f'''
from transformers import AutoModel

model = AutoModel.from_pretrained("path/or/hub-id-of-a-crema-model", trust_remote_code=True)
model.load_adapter("{name}", adapter_name="{modality}")  # adds (or hot-swaps) the {modality} adapter
''')


def _body(facts: AdapterFacts, name: str, base_model: str | None, blip2: str | None, results: list) -> str:
    modality = facts.modality
    about = card_text.table(("", ""), [
        ("modality", modality),
        ("encoder", facts.encoder or "not recorded"),
        ("encoder feature width", facts.feature_size or "not recorded"),
        ("LLM prefix", f"`{facts.prefix}`" if facts.prefix is not None else "not recorded"),
        ("LoRA", f"rank {facts.rank}, alpha {facts.alpha:g}, dropout {facts.dropout:g}, on the Q-Former "
                 "self-attention query and value"),
        ("trainable parameters", card_text.count(facts.parameters)),
        ("fits", f"[{base_model}](https://huggingface.co/{base_model})" if base_model else
         "a CREMA model with the same backbone"),
    ])
    return (
        f"{MARKER_LINE}\n\n# CREMA {modality} adapter\n\n"
        f"One modality adapter of [CREMA]({card_text.PAPER_URL}) (MMQA): LoRA on the frozen Q-Former plus the "
        f"{modality} modality's query tokens, input LayerNorm and projections. It is a plain PEFT folder "
        "(`adapter_config.json` + `adapter_model.safetensors`); the modality's encoder kind, feature width and prefix "
        "travel in the safetensors metadata.\n\n"
        f"{about}\n\n## Use\n\n{_snippet(name, modality, base_model, blip2)}\n"
        "`model.load_adapter` loads every tensor. Plain `PeftModel.from_pretrained` restores the LoRA tensors only, "
        f"not the `mmqa.{modality}` module (PEFT's `modules_to_save` wraps only modules that already exist).\n\n"
        f"{card_text.eval_section(results)}"
    )


def adapter_card(
    adapter: str | os.PathLike | AdapterFacts,
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
    """The card of one adapter folder (or its `AdapterFacts`), checked offline (`hub_rules.checked_card`).

    `base_model`: the Hub id the adapter fits, a CREMA model repo or the BLIP-2 checkpoint (default: the BLIP-2 its
    adapter_config.json records, if it is a Hub id; left out when unknown). `eval_results` as for `model_card`.
    """
    facts = adapter if isinstance(adapter, AdapterFacts) else read_adapter_facts(adapter, check=False)
    name = repo_id or os.path.basename(os.path.normpath(facts.folder))
    blip2 = card_text.hub_id(facts.base_model_name_or_path)
    base_model = base_model or blip2
    results = eval_results_from(eval_results, eval_dataset or (datasets[0] if datasets else None))
    data = card_text.card_data(
        name=name, library_name="peft", modalities=[facts.modality], base_model=base_model, datasets=datasets,
        license=license, extra_tags=tags, results=results, model_name=model_name,
        crema={
            "modality": facts.modality,
            "encoder": facts.encoder,
            "feature_size": facts.feature_size,
            "lora_rank": facts.rank,
            "trainable_parameters": facts.parameters,
        },
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(facts, name, base_model, blip2, results)}")
    return checked_card(card, data)
